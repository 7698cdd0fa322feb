/* activation.c — pointwise activations and their gradients, PyTorch's formulas and its
 * conventions at the kinks (relu'(0) = 0, leaky_relu'(0) = slope, elu'(0) = alpha). */
#include "backend/cpu/cpu.h"

#define K_SQRT1_2 0.70710678118654752440f   /* 1/sqrt(2) */
#define K_INV_SQRT_2PI 0.39894228040143267794f

/* One loop per kind with the formula inline (a switch per element would block
 * vectorization).  out may alias x. */
#define ACT_LOOP(EXPR)                                                        \
    {                                                                         \
        _Pragma("omp parallel for if (n >= CPU_PAR_MIN_HEAVY) schedule(static)")   \
        for (int64_t i = 0; i < n; i++) {                                     \
            float v = x[i];                                                   \
            o[i] = (EXPR);                                                    \
        }                                                                     \
    }

anvil_status anvil_cpu_act(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    int64_t n = cpu_numel(s->node);
    const float *x = (const float *)s->in[0];
    float *o = (float *)s->out, a = s->node->fa[0];
    switch ((anvil_act_kind)s->node->ia[0]) {
    case ACT_RELU: ACT_LOOP(v > 0.0f ? v : 0.0f) break;
    case ACT_LEAKY_RELU: ACT_LOOP(v > 0.0f ? v : v * a) break;
    /* expm1 keeps its accuracy near 0, where exp(x) - 1 cancels. */
    case ACT_ELU: ACT_LOOP(v > 0.0f ? v : a * expm1f(v)) break;
    case ACT_SIGMOID: ACT_LOOP(1.0f / (1.0f + expf(-v))) break;
    case ACT_TANH: ACT_LOOP(tanhf(v)) break;
    case ACT_SILU: ACT_LOOP(v / (1.0f + expf(-v))) break;
    case ACT_GELU: ACT_LOOP(v * 0.5f * (1.0f + erff(v * K_SQRT1_2))) break;
    case ACT_GELU_TANH: ACT_LOOP(cpu_gelu_tanh(v)) break;
    default:
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "act: unknown activation kind %d",
                          s->node->ia[0]);
    }
    return ANVIL_OK;
}

/* dx = dy * f'(x); in (dy, x).  out may alias dy. */
#define ACT_BWD_LOOP(EXPR)                                                    \
    {                                                                         \
        _Pragma("omp parallel for if (n >= CPU_PAR_MIN_HEAVY) schedule(static)")   \
        for (int64_t i = 0; i < n; i++) {                                     \
            float g = dy[i], v = x[i];                                        \
            o[i] = (EXPR);                                                    \
        }                                                                     \
    }

static inline float sigmoidf_(float v) { return 1.0f / (1.0f + expf(-v)); }

static inline float silu_grad(float v)
{
    float sg = sigmoidf_(v);
    return sg * (1.0f + v * (1.0f - sg));
}

static inline float gelu_grad(float v)
{
    float cdf = 0.5f * (1.0f + erff(v * K_SQRT1_2));
    float pdf = expf(-0.5f * v * v) * K_INV_SQRT_2PI;
    return cdf + v * pdf;
}

static inline float gelu_tanh_grad(float v)
{
    float x2 = v * v;
    float t = tanhf(K_GELU_BETA * (v + K_GELU_KAPPA * x2 * v));
    float left = 0.5f * v, right = 1.0f + t;
    return 0.5f * right + left * (1.0f - t * t) * K_GELU_BETA * (1.0f + 3.0f * K_GELU_KAPPA * x2);
}

anvil_status anvil_cpu_act_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    int64_t n = cpu_numel(s->node);
    const float *dy = (const float *)s->in[0], *x = (const float *)s->in[1];
    float *o = (float *)s->out, a = s->node->fa[0];
    switch ((anvil_act_kind)s->node->ia[0]) {
    case ACT_RELU: ACT_BWD_LOOP(v > 0.0f ? g : 0.0f) break;
    case ACT_LEAKY_RELU: ACT_BWD_LOOP(v > 0.0f ? g : g * a) break;
    case ACT_ELU: ACT_BWD_LOOP(v > 0.0f ? g : g * a * expf(v)) break;
    case ACT_SIGMOID: ACT_BWD_LOOP(g * (sigmoidf_(v) * (1.0f - sigmoidf_(v)))) break;
    case ACT_TANH: ACT_BWD_LOOP(g * (1.0f - tanhf(v) * tanhf(v))) break;
    case ACT_SILU: ACT_BWD_LOOP(g * silu_grad(v)) break;
    case ACT_GELU: ACT_BWD_LOOP(g * gelu_grad(v)) break;
    case ACT_GELU_TANH: ACT_BWD_LOOP(g * gelu_tanh_grad(v)) break;
    default:
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "act_bwd: unknown activation kind %d",
                          s->node->ia[0]);
    }
    return ANVIL_OK;
}
