/* softmax.c — softmax and log_softmax over one dim of any rank, and their gradients.
 * The tensor is viewed as [outer, D, inner]; each (outer, inner) pair is one line of D
 * elements at stride inner.  Max-subtracted; sums in double.  out may alias in[0]: each
 * line reads its input before writing it. */
#include "backend/cpu/cpu.h"

typedef struct {
    int64_t outer, D, inner;
} sm_shape;

static anvil_status sm_shape_of(const anvil_step *s, const char *op, sm_shape *sh)
{
    const anvil_node *x = s->in_node[0];
    int dim = s->node->ia[0];
    if (x->ndim == 0) { /* a scalar is one line of one element */
        sh->outer = sh->D = sh->inner = 1;
        return ANVIL_OK;
    }
    if (dim < 0)
        dim += x->ndim;
    if (dim < 0 || dim >= x->ndim)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: dim %d out of range for %d dims", op,
                          s->node->ia[0], x->ndim);
    sh->outer = cpu_prod(x->shape, 0, dim);
    sh->D = x->shape[dim];
    sh->inner = cpu_prod(x->shape, dim + 1, x->ndim);
    return ANVIL_OK;
}

/* Runs the body once per line l, with base (its first element), st (its stride) and D. */
#define SM_LINES(sh, ...)                                                                 \
    do {                                                                                   \
        int64_t nl_ = (sh).outer * (sh).inner, st = (sh).inner, D = (sh).D;                \
        _Pragma("omp parallel for if (nl_ * D >= CPU_PAR_MIN_HEAVY) schedule(static)")          \
        for (int64_t l = 0; l < nl_; l++) {                                                \
            int64_t base = (l / st) * D * st + (l % st);                                   \
            __VA_ARGS__                                                                    \
        }                                                                                  \
    } while (0)

static anvil_status softmax_fwd(const anvil_step *s, bool logsm)
{
    sm_shape sh = {0, 0, 0};
    ANVIL_TRY(sm_shape_of(s, logsm ? "log_softmax" : "softmax", &sh));
    const float *x = (const float *)s->in[0];
    float *y = (float *)s->out;
    SM_LINES(sh, {
        const float *xl = x + base;
        float *yl = y + base;
        float m = -INFINITY;
        for (int64_t d = 0; d < D; d++)
            m = xl[d * st] > m ? xl[d * st] : m;
        double sum = 0.0;
        if (logsm) {
            for (int64_t d = 0; d < D; d++)
                sum += expf(xl[d * st] - m);
            float lse = (float)log(sum);
            for (int64_t d = 0; d < D; d++)
                yl[d * st] = (xl[d * st] - m) - lse;
        } else {
            for (int64_t d = 0; d < D; d++) {
                float e = expf(xl[d * st] - m);
                yl[d * st] = e;
                sum += e;
            }
            float inv = (float)(1.0 / sum);
            for (int64_t d = 0; d < D; d++)
                yl[d * st] *= inv;
        }
    });
    return ANVIL_OK;
}

anvil_status anvil_cpu_softmax(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    return softmax_fwd(s, false);
}

anvil_status anvil_cpu_log_softmax(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    return softmax_fwd(s, true);
}

/* in (dy, y): softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - exp(y) sum(dy). */
static anvil_status softmax_bwd(const anvil_step *s, bool logsm)
{
    sm_shape sh = {0, 0, 0};
    ANVIL_TRY(sm_shape_of(s, logsm ? "log_softmax_bwd" : "softmax_bwd", &sh));
    const float *dy = (const float *)s->in[0], *y = (const float *)s->in[1];
    float *dx = (float *)s->out;
    SM_LINES(sh, {
        const float *gl = dy + base, *yl = y + base;
        float *ol = dx + base;
        double acc = 0.0;
        if (logsm) {
            for (int64_t d = 0; d < D; d++)
                acc += gl[d * st];
            float sg = (float)acc;
            for (int64_t d = 0; d < D; d++)
                ol[d * st] = gl[d * st] - expf(yl[d * st]) * sg;
        } else {
            for (int64_t d = 0; d < D; d++)
                acc += (double)gl[d * st] * yl[d * st];
            float sg = (float)acc;
            for (int64_t d = 0; d < D; d++)
                ol[d * st] = yl[d * st] * (gl[d * st] - sg);
        }
    });
    return ANVIL_OK;
}

anvil_status anvil_cpu_softmax_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    return softmax_bwd(s, false);
}

anvil_status anvil_cpu_log_softmax_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    return softmax_bwd(s, true);
}
