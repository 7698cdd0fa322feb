/* gather.cu — the next batch of the resident dataset, gathered on the device in this
 * epoch's order: images uint8 -> float32 pixel/255, labels int32.  The cursor is read
 * from device memory, so the captured graph serves every batch of the epoch. */
#include "backend/cuda/cuda_internal.h"

/* A block per row (looping over rows when there are more than blocks), its threads
 * along the row: no per-element index division.  With y, the same rows' labels too (the
 * capture pairs the two gathers so that the loss gradient, on the step's critical chain,
 * needs nothing from another stream). */
static __global__ void gather_images(float *x, const uint8_t *images, const uint32_t *order,
                                     const anvil_hyper *h, int64_t b, int64_t k, int32_t *y, const int32_t *labels)
{
    anvil_pdl_wait();
    int64_t start = h->data_cursor;
    for (int64_t row = blockIdx.x; row < b; row += gridDim.x) {
        uint32_t at = order[start + row];
        const uint8_t *src = images + (int64_t)at * k;
        float *dst = x + row * k;
        for (int64_t col = threadIdx.x; col < k; col += blockDim.x)
            dst[col] = (float)src[col] / 255.0f;
        if (y && threadIdx.x == 0)
            y[row] = labels[at];
    }
}

static __global__ void gather_labels(int32_t *y, const int32_t *labels, const uint32_t *order,
                                     const anvil_hyper *h, int64_t b)
{
    anvil_pdl_wait();
    int64_t start = h->data_cursor;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < b; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = labels[order[start + i]];
}

ANVIL_CUDA_KERNEL(gather)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_data *d = ex->data;
    if (!d)
        return anvil_fail(ANVIL_ERR_STATE, "gather: no resident dataset attached");
    int64_t b = s->node->shape[0];
    if (b == 0)
        return ANVIL_OK;
    if (c->gather_pair[0] && (s == c->gather_pair[0] || s == c->gather_pair[1])) {
        if (c->gather_pair_done) /* the other of the pair launched both */
            return ANVIL_OK;
        const anvil_step *im = c->gather_pair[0], *lb = c->gather_pair[1];
        ANVIL_CUDA_CHECK(anvil_cuda_launch(gather_images, (unsigned int)(b < 65535 ? b : 65535), ANVIL_CUDA_THREADS, 0,
                                           c->stream, (float *)im->out, d->images, d->order,
                                           (const anvil_hyper *)ex->hyper, b, d->sample_elems, (int32_t *)lb->out,
                                           d->labels),
                         "gather");
        c->gather_pair_done = true;
        return anvil_cuda_launched(c, "gather");
    }
    if (s->node->ia[0] == 1) {
        ANVIL_CUDA_CHECK(anvil_cuda_launch(gather_labels, anvil_cuda_blocks(b, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS,
                                           0, c->stream, (int32_t *)s->out, d->labels, d->order,
                                           (const anvil_hyper *)ex->hyper, b),
                         "gather");
    } else {
        int64_t k = d->sample_elems;
        ANVIL_CUDA_CHECK(anvil_cuda_launch(gather_images, (unsigned int)(b < 65535 ? b : 65535), ANVIL_CUDA_THREADS, 0,
                                           c->stream, (float *)s->out, d->images, d->order,
                                           (const anvil_hyper *)ex->hyper, b, k, (int32_t *)NULL,
                                           (const int32_t *)NULL),
                         "gather");
    }
    return anvil_cuda_launched(c, "gather");
}
