/* activation.cu — pointwise activations (PyTorch formulas) and their backward ops, which
 * recompute f'(x) from x: act_bwd in (dy, x) gives dy * f'(x).  relu'(0) = 0. */
#include "backend/cuda/cuda_internal.h"

#define K_SQRT1_2 0.70710678118654752440f
#define K_1_SQRT_2PI 0.39894228040143267794f /* 1 / sqrt(2 pi) */
#define K_BETA 0.79788456080286535588f       /* sqrt(2 / pi) */
#define K_KAPPA 0.044715f

static __device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

template <int KIND>
static __device__ __forceinline__ float act_f(float x, float p)
{
    switch (KIND) {
    case ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ACT_LEAKY_RELU: return x > 0.0f ? x : x * p;
    case ACT_ELU: return x > 0.0f ? x : p * expm1f(x);
    case ACT_SIGMOID: return sigmoidf_(x);
    case ACT_TANH: return tanhf(x);
    case ACT_SILU: return x / (1.0f + expf(-x));
    case ACT_GELU: return x * 0.5f * (1.0f + erff(x * K_SQRT1_2));
    default: { /* ACT_GELU_TANH */
        float inner = K_BETA * (x + K_KAPPA * x * x * x);
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    }
}

/* dy * f'(x) */
template <int KIND>
static __device__ __forceinline__ float act_df(float dy, float x, float p)
{
    switch (KIND) {
    case ACT_RELU: return x > 0.0f ? dy : 0.0f;
    case ACT_LEAKY_RELU: return x > 0.0f ? dy : dy * p;
    case ACT_ELU: return x > 0.0f ? dy : dy * p * expf(x);
    case ACT_SIGMOID: {
        float s = sigmoidf_(x);
        return dy * (s * (1.0f - s));
    }
    case ACT_TANH: {
        float t = tanhf(x);
        return dy * (1.0f - t * t);
    }
    case ACT_SILU: {
        float s = sigmoidf_(x);
        return dy * (s * (1.0f + x * (1.0f - s)));
    }
    case ACT_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * K_SQRT1_2));
        float pdf = expf(-0.5f * x * x) * K_1_SQRT_2PI;
        return dy * (cdf + x * pdf);
    }
    default: { /* ACT_GELU_TANH */
        float x2 = x * x;
        float inner = K_BETA * (x + K_KAPPA * x2 * x);
        float t = tanhf(inner);
        float left = 0.5f * x, right = 1.0f + t;
        float dleft = 0.5f * right;
        float dright = left * (1.0f - t * t) * K_BETA * (1.0f + 3.0f * K_KAPPA * x2);
        return dy * (dleft + dright);
    }
    }
}

/* V = 4: four values per load for the 16-byte-aligned part (these passes are
 * memory-bound, and one float per load left them at about half the bandwidth on large
 * tensors); V = 1 (unaligned buffers): everything goes through the one-by-one loop. */
template <int KIND, int V>
static __global__ void act_kernel(const float *x, float *o, int64_t n, float p)
{
    int64_t n4 = V == 4 ? n / 4 : 0, stride = (int64_t)gridDim.x * blockDim.x;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (int64_t i = t; i < n4; i += stride) {
        float4 v = reinterpret_cast<const float4 *>(x)[i], r;
        r.x = act_f<KIND>(v.x, p);
        r.y = act_f<KIND>(v.y, p);
        r.z = act_f<KIND>(v.z, p);
        r.w = act_f<KIND>(v.w, p);
        reinterpret_cast<float4 *>(o)[i] = r;
    }
    for (int64_t i = n4 * 4 + t; i < n; i += stride)
        o[i] = act_f<KIND>(x[i], p);
}

template <int KIND, int V>
static __global__ void act_bwd_kernel(const float *dy, const float *x, float *o, int64_t n, float p)
{
    int64_t n4 = V == 4 ? n / 4 : 0, stride = (int64_t)gridDim.x * blockDim.x;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (int64_t i = t; i < n4; i += stride) {
        float4 g = reinterpret_cast<const float4 *>(dy)[i], v = reinterpret_cast<const float4 *>(x)[i], r;
        r.x = act_df<KIND>(g.x, v.x, p);
        r.y = act_df<KIND>(g.y, v.y, p);
        r.z = act_df<KIND>(g.z, v.z, p);
        r.w = act_df<KIND>(g.w, v.w, p);
        reinterpret_cast<float4 *>(o)[i] = r;
    }
    for (int64_t i = n4 * 4 + t; i < n; i += stride)
        o[i] = act_df<KIND>(dy[i], x[i], p);
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

template <int KIND>
static void launch(cudaStream_t st, bool bwd, const anvil_step *s, int64_t n)
{
    float p = s->node->fa[0];
    const float *a = (const float *)s->in[0], *b = bwd ? (const float *)s->in[1] : NULL;
    float *o = (float *)s->out;
    bool vec = aligned16(a) && aligned16(b) && aligned16(o);
    unsigned int blocks = anvil_cuda_blocks(vec ? (n + 3) / 4 : n, ANVIL_CUDA_THREADS);
    if (bwd && vec)
        act_bwd_kernel<KIND, 4><<<blocks, ANVIL_CUDA_THREADS, 0, st>>>(a, b, o, n, p);
    else if (bwd)
        act_bwd_kernel<KIND, 1><<<blocks, ANVIL_CUDA_THREADS, 0, st>>>(a, b, o, n, p);
    else if (vec)
        act_kernel<KIND, 4><<<blocks, ANVIL_CUDA_THREADS, 0, st>>>(a, o, n, p);
    else
        act_kernel<KIND, 1><<<blocks, ANVIL_CUDA_THREADS, 0, st>>>(a, o, n, p);
}

static anvil_status act_run(const anvil_exec *ex, const anvil_step *s, bool bwd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t n = anvil_node_numel(s->node);
    const char *name = bwd ? "act_bwd" : "act";
    if (n == 0)
        return ANVIL_OK;
    switch (s->node->ia[0]) {
    case ACT_RELU: launch<ACT_RELU>(c->stream, bwd, s, n); break;
    case ACT_LEAKY_RELU: launch<ACT_LEAKY_RELU>(c->stream, bwd, s, n); break;
    case ACT_ELU: launch<ACT_ELU>(c->stream, bwd, s, n); break;
    case ACT_SIGMOID: launch<ACT_SIGMOID>(c->stream, bwd, s, n); break;
    case ACT_TANH: launch<ACT_TANH>(c->stream, bwd, s, n); break;
    case ACT_SILU: launch<ACT_SILU>(c->stream, bwd, s, n); break;
    case ACT_GELU: launch<ACT_GELU>(c->stream, bwd, s, n); break;
    case ACT_GELU_TANH: launch<ACT_GELU_TANH>(c->stream, bwd, s, n); break;
    default:
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: unknown activation kind %d", name, s->node->ia[0]);
    }
    return anvil_cuda_launched(c, name);
}

ANVIL_CUDA_KERNEL(act) { return act_run(ex, s, false); }
ANVIL_CUDA_KERNEL(act_bwd) { return act_run(ex, s, true); }
