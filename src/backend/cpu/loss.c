/* loss.c — cross-entropy (class indices or probabilities, label smoothing) and the
 * pointwise losses, each the mean over the batch as torch's reduction="mean", with
 * their gradients.  Losses accumulate in double over fixed chunks (deterministic). */
#include "backend/cpu/cpu.h"

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
    const float *x;   /* logits [N, C] */
    const void *t;    /* int32 [N] or float [N, C] */
    int64_t C;
    double eps;
    bool probs;
} ce_ctx;

/* log(sum(exp(row))), max-subtracted, in double. */
static double ce_lse(const float *row, int64_t C)
{
    float m = -INFINITY;
    for (int64_t c = 0; c < C; c++)
        m = row[c] > m ? row[c] : m;
    double sum = 0.0;
    for (int64_t c = 0; c < C; c++)
        sum += exp((double)row[c] - m);
    return m + log(sum);
}

static double ce_rows(const void *vc, int64_t b, int64_t e)
{
    const ce_ctx *k = (const ce_ctx *)vc;
    int64_t C = k->C;
    double acc = 0.0;
    for (int64_t n = b; n < e; n++) {
        const float *row = k->x + n * C;
        double lse = ce_lse(row, C);
        if (k->probs) {
            /* -sum_c t'_c log p_c with t' = t (1 - eps) + eps / C */
            const float *t = (const float *)k->t + n * C;
            double l = 0.0;
            for (int64_t c = 0; c < C; c++)
                l += (t[c] * (1.0 - k->eps) + k->eps / C) * (lse - row[c]);
            acc += l;
        } else {
            int32_t y = ((const int32_t *)k->t)[n];
            double l = (1.0 - k->eps) * (lse - row[y]);
            if (k->eps != 0.0) { /* eps * mean_c(-log p_c) */
                double sx = 0.0;
                for (int64_t c = 0; c < C; c++)
                    sx += row[c];
                l += k->eps * (lse - sx / C);
            }
            acc += l;
        }
    }
    return acc;
}

/* Class indices must lie in [0, C): checked before any work (a kernel cannot fail
 * half-way through a parallel loop). */
static anvil_status ce_check_labels(const int32_t *y, int64_t N, int64_t C, const char *op)
{
    for (int64_t n = 0; n < N; n++)
        if (y[n] < 0 || y[n] >= C)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: label %d outside [0, %lld) at row %lld",
                              op, (int)y[n], (long long)C, (long long)n);
    return ANVIL_OK;
}

static void ce_setup(const anvil_step *s, int xi, ce_ctx *k, int64_t *N)
{
    const anvil_node *x = s->in_node[xi];
    k->C = x->ndim >= 1 ? x->shape[x->ndim - 1] : 1;
    *N = k->C ? cpu_numel(x) / k->C : 0;
    k->x = (const float *)s->in[xi];
    k->t = s->in[xi + 1];
    k->eps = s->node->fa[0];
    k->probs = s->node->ia[0] != 0;
}

anvil_status anvil_cpu_cross_entropy(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    ce_ctx k;
    int64_t N;
    ce_setup(s, 0, &k, &N);
    if (!k.probs)
        ANVIL_TRY(ce_check_labels((const int32_t *)k.t, N, k.C, "cross_entropy"));
    int64_t min_rows = k.C ? 4096 / k.C + 1 : 4096;
    double sum = cpu_det_sum(N, min_rows, N * k.C >= CPU_PAR_MIN_HEAVY, ce_rows, &k);
    *(float *)s->out = (float)(sum / (double)N);
    return ANVIL_OK;
}

/* in (dloss, logits, target): dlogits = dloss / N * (softmax * sum(t') - t').  sum(t')
 * is 1 for class indices (and for normalized probabilities); keeping it makes the
 * gradient exact for unnormalized targets too, as autograd's is. */
anvil_status anvil_cpu_cross_entropy_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    ce_ctx k;
    int64_t N;
    ce_setup(s, 1, &k, &N);
    if (!k.probs)
        ANVIL_TRY(ce_check_labels((const int32_t *)k.t, N, k.C, "cross_entropy_bwd"));
    int64_t C = k.C;
    float g = (float)((double)*(const float *)s->in[0] / (double)N);
    float onem = (float)(1.0 - k.eps), unif = (float)(k.eps / (double)C);
    float *dx = (float *)s->out;
#pragma omp parallel for if (N * C >= CPU_PAR_MIN_HEAVY) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *row = k.x + n * C;
        float lse = (float)ce_lse(row, C);
        float *o = dx + n * C;
        if (k.probs) {
            const float *t = (const float *)k.t + n * C;
            double ts = 0.0;
            for (int64_t c = 0; c < C; c++)
                ts += t[c] * onem + unif;
            float tsum = (float)ts;
            for (int64_t c = 0; c < C; c++) {
                float tc = t[c] * onem + unif;
                o[c] = g * (expf(row[c] - lse) * tsum - tc);
            }
        } else {
            int32_t y = ((const int32_t *)k.t)[n];
            for (int64_t c = 0; c < C; c++) {
                float tc = (c == y ? onem : 0.0f) + unif;
                o[c] = g * (expf(row[c] - lse) - tc);
            }
        }
    }
    return ANVIL_OK;
}

/* ---------------------------------------------------------------- pointwise losses */

typedef struct {
    const float *x, *t;
    int kind;
    float a; /* huber delta / smooth-L1 beta */
} pw_ctx;

static inline float signf_(float d) { return (float)((d > 0.0f) - (d < 0.0f)); }

static inline float pw_elem(int kind, float a, float x, float t)
{
    float d = x - t, ad = fabsf(d);
    switch (kind) {
    case PW_MSE: return d * d;
    case PW_L1: return ad;
    case PW_BCE: /* torch clamps each log at -100 so that x = 0 or 1 stays finite */
        return -(t * fmaxf(logf(x), -100.0f) + (1.0f - t) * fmaxf(logf(1.0f - x), -100.0f));
    case PW_BCE_LOGITS: return fmaxf(x, 0.0f) - x * t + log1pf(expf(-fabsf(x)));
    case PW_HUBER: return ad <= a ? 0.5f * d * d : a * (ad - 0.5f * a);
    case PW_SMOOTH_L1:
        if (a == 0.0f) /* torch: beta 0 is L1 */
            return ad;
        return ad < a ? 0.5f * d * d / a : ad - 0.5f * a;
    }
    return NAN;
}

static double pw_range(const void *vc, int64_t b, int64_t e)
{
    const pw_ctx *k = (const pw_ctx *)vc;
    double acc = 0.0;
    for (int64_t i = b; i < e; i++)
        acc += pw_elem(k->kind, k->a, k->x[i], k->t[i]);
    return acc;
}

static anvil_status pw_check(int kind, const char *op)
{
    if (kind < PW_MSE || kind > PW_SMOOTH_L1)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: unknown loss kind %d", op, kind);
    return ANVIL_OK;
}

anvil_status anvil_cpu_pw_loss(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    pw_ctx k = {(const float *)s->in[0], (const float *)s->in[1], s->node->ia[0],
                s->node->fa[0]};
    ANVIL_TRY(pw_check(k.kind, "pw_loss"));
    int64_t n = cpu_numel(s->in_node[0]);
    double sum = cpu_det_sum(n, 4096, n >= CPU_PAR_MIN_HEAVY, pw_range, &k);
    *(float *)s->out = (float)(sum / (double)n);
    return ANVIL_OK;
}

static inline float pw_grad(int kind, float a, float x, float t)
{
    float d = x - t, ad = fabsf(d);
    switch (kind) {
    case PW_MSE: return 2.0f * d;
    case PW_L1: return signf_(d);
    case PW_BCE: return d / fmaxf(x * (1.0f - x), 1e-12f);
    case PW_BCE_LOGITS: return 1.0f / (1.0f + expf(-x)) - t;
    case PW_HUBER: return ad <= a ? d : a * signf_(d);
    case PW_SMOOTH_L1: return ad < a ? d / a : signf_(d);
    }
    return NAN;
}

/* in (dloss, x, t): dx = dloss / numel * dloss_i/dx_i.  out may alias x. */
anvil_status anvil_cpu_pw_loss_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    int kind = s->node->ia[0];
    ANVIL_TRY(pw_check(kind, "pw_loss_bwd"));
    float a = s->node->fa[0];
    int64_t n = cpu_numel(s->node);
    const float *x = (const float *)s->in[1], *t = (const float *)s->in[2];
    float *dx = (float *)s->out;
    float g = (float)((double)*(const float *)s->in[0] / (double)n);
#pragma omp parallel for if (n >= CPU_PAR_MIN_HEAVY) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = g * pw_grad(kind, a, x[i], t[i]);
    return ANVIL_OK;
}
