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

template <int KIND>
static __global__ void act_kernel(const float *x, float *o, int64_t n, float p)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        o[i] = act_f<KIND>(x[i], p);
}

template <int KIND>
static __global__ void act_bwd_kernel(const float *dy, const float *x, float *o, int64_t n, float p)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        o[i] = act_df<KIND>(dy[i], x[i], p);
}

template <int KIND>
static void launch(cudaStream_t st, bool bwd, const anvil_step *s, int64_t n)
{
    unsigned int blocks = anvil_cuda_blocks(n, ANVIL_CUDA_THREADS);
    float p = s->node->fa[0];
    if (bwd)
        act_bwd_kernel<KIND><<<blocks, ANVIL_CUDA_THREADS, 0, st>>>(
            (const float *)s->in[0], (const float *)s->in[1], (float *)s->out, n, p);
    else
        act_kernel<KIND><<<blocks, ANVIL_CUDA_THREADS, 0, st>>>((const float *)s->in[0],
                                                                (float *)s->out, n, p);
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
