/* elementwise.cu — add, sub, mul, div with NumPy broadcasting, and scale.  out may alias
 * in[0] (in place): each output element is written after its inputs are read. */
#include "backend/cuda/cuda_internal.h"

enum { EW_ADD, EW_SUB, EW_MUL, EW_DIV };

template <int OP>
static __device__ __forceinline__ float ew_apply(float x, float y)
{
    if (OP == EW_ADD)
        return x + y;
    if (OP == EW_SUB)
        return x - y;
    if (OP == EW_MUL)
        return x * y;
    return x / y;
}

/* Equal shapes, 16-byte aligned: four elements per thread, the tail one by one. */
template <int OP>
static __global__ void ew_same4(const float *__restrict__ a, const float *__restrict__ b,
                                float *o, int64_t n)
{
    int64_t n4 = n / 4;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 x = reinterpret_cast<const float4 *>(a)[i];
        float4 y = reinterpret_cast<const float4 *>(b)[i];
        float4 r;
        r.x = ew_apply<OP>(x.x, y.x);
        r.y = ew_apply<OP>(x.y, y.y);
        r.z = ew_apply<OP>(x.z, y.z);
        r.w = ew_apply<OP>(x.w, y.w);
        reinterpret_cast<float4 *>(o)[i] = r;
    }
    for (int64_t i = n4 * 4 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        o[i] = ew_apply<OP>(a[i], b[i]);
}

template <int OP>
static __global__ void ew_same(const float *a, const float *b, float *o, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        o[i] = ew_apply<OP>(a[i], b[i]);
}

/* b is one value (a scalar or all-ones shape). */
template <int OP>
static __global__ void ew_scalar_b(const float *a, const float *b, float *o, int64_t n)
{
    float y = b[0];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        o[i] = ew_apply<OP>(a[i], y);
}

template <int OP>
static __global__ void ew_bcast(const float *a, const float *b, float *o, int64_t n,
                                anvil_cuda_bcast bc)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t oa, ob;
        anvil_cuda_bcast_offsets(bc, i, &oa, &ob);
        o[i] = ew_apply<OP>(a[oa], b[ob]);
    }
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

template <int OP>
static anvil_status ew_run(const anvil_exec *ex, const anvil_step *s, const char *name)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *out = s->node, *na = s->in_node[0], *nb = s->in_node[1];
    int64_t n = anvil_node_numel(out);
    if (n == 0)
        return ANVIL_OK;
    const float *a = (const float *)s->in[0], *b = (const float *)s->in[1];
    float *o = (float *)s->out;
    int64_t an = anvil_node_numel(na), bn = anvil_node_numel(nb);
    unsigned int blocks = anvil_cuda_blocks(n, ANVIL_CUDA_THREADS);
    if (an == n && bn == n) {
        /* equal element counts under broadcasting means equal shapes (up to ones) */
        if (aligned16(a) && aligned16(b) && aligned16(o))
            ew_same4<OP><<<anvil_cuda_blocks((n + 3) / 4, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0,
                           c->stream>>>(a, b, o, n);
        else
            ew_same<OP><<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>(a, b, o, n);
    } else if (an == n && bn == 1) {
        ew_scalar_b<OP><<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>(a, b, o, n);
    } else {
        anvil_cuda_bcast bc;
        memset(&bc, 0, sizeof bc);
        bc.ndim = out->ndim;
        for (int d = 0; d < out->ndim; d++)
            bc.shape[d] = out->shape[d];
        anvil_cuda_bcast_strides(na->ndim, na->shape, out->ndim, out->shape, bc.sa);
        anvil_cuda_bcast_strides(nb->ndim, nb->shape, out->ndim, out->shape, bc.sb);
        ew_bcast<OP><<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>(a, b, o, n, bc);
    }
    return anvil_cuda_launched(c, name);
}

ANVIL_CUDA_KERNEL(add) { return ew_run<EW_ADD>(ex, s, "add"); }
ANVIL_CUDA_KERNEL(sub) { return ew_run<EW_SUB>(ex, s, "sub"); }
ANVIL_CUDA_KERNEL(mul) { return ew_run<EW_MUL>(ex, s, "mul"); }
ANVIL_CUDA_KERNEL(div) { return ew_run<EW_DIV>(ex, s, "div"); }

static __global__ void scale_kernel(const float *x, float *o, int64_t n, float f)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        o[i] = x[i] * f;
}

ANVIL_CUDA_KERNEL(scale)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t n = anvil_node_numel(s->node);
    if (n == 0)
        return ANVIL_OK;
    scale_kernel<<<anvil_cuda_blocks(n, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (float *)s->out, n, s->node->fa[0]);
    return anvil_cuda_launched(c, "scale");
}
