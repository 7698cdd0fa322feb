/* concat.cu — joining along a dim and taking a range of one, as strided 2-D copies
 * (cudaMemcpy2DAsync: rows of the [outer, dim*inner] view), recorded into the graph. */
#include "backend/cuda/cuda_internal.h"

static int64_t prod(const int64_t *s, int lo, int hi)
{
    int64_t p = 1;
    for (int i = lo; i < hi; i++)
        p *= s[i];
    return p;
}

ANVIL_CUDA_KERNEL(concat)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *y = s->node;
    int d = y->ia[0];
    size_t es = anvil_dtype_size(y->dtype);
    int64_t outer = prod(y->shape, 0, d), inner = prod(y->shape, d + 1, y->ndim);
    size_t row = (size_t)(y->shape[d] * inner) * es, at = 0;
    for (int i = 0; i < y->n_in; i++) {
        size_t part = (size_t)(s->in_node[i]->shape[d] * inner) * es;
        if (part && outer)
            ANVIL_CUDA_CHECK(cudaMemcpy2DAsync((char *)s->out + at, row, s->in[i], part, part, (size_t)outer,
                                               cudaMemcpyDeviceToDevice, c->stream),
                             "concat: cudaMemcpy2DAsync");
        at += part;
    }
    return ANVIL_OK;
}

ANVIL_CUDA_KERNEL(slice)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *y = s->node, *x = s->in_node[0];
    int d = y->ia[0];
    size_t es = anvil_dtype_size(y->dtype);
    int64_t outer = prod(x->shape, 0, d), inner = prod(x->shape, d + 1, x->ndim);
    size_t xrow = (size_t)(x->shape[d] * inner) * es, yrow = (size_t)(y->shape[d] * inner) * es;
    size_t from = (size_t)((int64_t)y->ia[1] * inner) * es;
    if (yrow && outer)
        ANVIL_CUDA_CHECK(cudaMemcpy2DAsync(s->out, yrow, (const char *)s->in[0] + from, xrow, yrow, (size_t)outer,
                                           cudaMemcpyDeviceToDevice, c->stream),
                         "slice: cudaMemcpy2DAsync");
    return ANVIL_OK;
}
