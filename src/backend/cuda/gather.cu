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

/* The same for rows of whole 4-pixel words with x 16-byte aligned: a thread per word (a
 * 4-byte load, a float4 store), so a batch is spread over ~100 blocks instead of a block a
 * row chaining byte loads. */
static __global__ void gather_images4(float *x, const uint8_t *images, const uint32_t *order,
                                      const anvil_hyper *h, int64_t b, int64_t k, int32_t *y, const int32_t *labels)
{
    anvil_pdl_wait();
    int64_t start = h->data_cursor, words = k / 4;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < b * words;
         t += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = t / words, w = t - row * words;
        uint32_t at = order[start + row];
        uchar4 p = reinterpret_cast<const uchar4 *>(images + (int64_t)at * k)[w];
        reinterpret_cast<float4 *>(x + row * k)[w] =
            make_float4(p.x / 255.0f, p.y / 255.0f, p.z / 255.0f, p.w / 255.0f);
        if (y && w == 0)
            y[row] = labels[at];
    }
}

/* ANVIL_GATHER_WORDS=0: always the block-a-row kernel (for A/B runs); read once. */
static bool words_enabled(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ANVIL_GATHER_WORDS");
        on = !(e && strcmp(e, "0") == 0);
    }
    return on != 0;
}

/* Launches the gather of b rows of k pixels into x (with their labels into y when y). */
static cudaError_t launch_images(anvil_cuda_ctx *c, const anvil_exec *ex, const anvil_data *d, float *x, int64_t b,
                                 int64_t k, int32_t *y)
{
    const anvil_hyper *h = (const anvil_hyper *)ex->hyper;
    if (words_enabled() && k % 4 == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)d->images & 3) == 0)
        return anvil_cuda_launch(gather_images4, anvil_cuda_blocks(b * (k / 4), ANVIL_CUDA_THREADS),
                                 ANVIL_CUDA_THREADS, 0, c->stream, x, d->images, d->order, h, b, k, y,
                                 (const int32_t *)(y ? d->labels : NULL));
    return anvil_cuda_launch(gather_images, (unsigned int)(b < 65535 ? b : 65535), ANVIL_CUDA_THREADS, 0, c->stream, x,
                             d->images, d->order, h, b, k, y, (const int32_t *)(y ? d->labels : NULL));
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
        ANVIL_CUDA_CHECK(launch_images(c, ex, d, (float *)im->out, b, d->sample_elems, (int32_t *)lb->out), "gather");
        c->gather_pair_done = true;
        return anvil_cuda_launched(c, "gather");
    }
    if (s->node->ia[0] == 1) {
        ANVIL_CUDA_CHECK(anvil_cuda_launch(gather_labels, anvil_cuda_blocks(b, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS,
                                           0, c->stream, (int32_t *)s->out, d->labels, d->order,
                                           (const anvil_hyper *)ex->hyper, b),
                         "gather");
    } else {
        ANVIL_CUDA_CHECK(launch_images(c, ex, d, (float *)s->out, b, d->sample_elems, (int32_t *)NULL), "gather");
    }
    return anvil_cuda_launched(c, "gather");
}
