/* copy.cu — data movement: copy and fill. */
#include "backend/cuda/cuda_internal.h"

static int64_t numel_of(const anvil_node *n)
{
    return n->ndim < 0 ? 0 : anvil_node_numel(n);
}

ANVIL_CUDA_KERNEL(copy)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    size_t bytes = (size_t)numel_of(s->node) * anvil_dtype_size(s->node->dtype);
    if (s->out == s->in[0] || bytes == 0)
        return ANVIL_OK;
    ANVIL_CUDA_CHECK(cudaMemcpyAsync(s->out, s->in[0], bytes, cudaMemcpyDeviceToDevice, c->stream),
                     "copy: cudaMemcpyAsync (device to device)");
    return ANVIL_OK;
}

template <typename T>
static __global__ void fill_kernel(T *o, int64_t n, T v)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        o[i] = v;
}

ANVIL_CUDA_KERNEL(fill)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t n = numel_of(s->node);
    if (n == 0)
        return ANVIL_OK;
    float v = s->node->fa[0];
    unsigned int blocks = anvil_cuda_blocks(n, ANVIL_CUDA_THREADS);
    switch (s->node->dtype) {
    case ANVIL_F32:
        fill_kernel<float><<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>((float *)s->out, n, v);
        break;
    case ANVIL_I32:
        fill_kernel<int32_t><<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>((int32_t *)s->out, n,
                                                                           (int32_t)v);
        break;
    default:
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "fill: dtype %s not supported on CUDA",
                          anvil_dtype_name(s->node->dtype));
    }
    return anvil_cuda_launched(c, "fill");
}
