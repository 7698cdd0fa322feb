/* vec.c — the CPU backend's vector operations (backend.h, anvil_vec_op).  Deterministic:
 * sums and maxima run over chunks fixed by n alone (cpu_det_sum), whatever the thread
 * count; dots and sums accumulate in double and round once.  Every float operation is a
 * plain float32 one (ISO C mode: no contraction), and AXPY is an explicit fmaf, as
 * torch's add_(x, alpha=c) and the CUDA backend's __fmaf_rn compute it. */
#include "backend/cpu/cpu.h"

static inline float coef(const anvil_vec_op *op)
{
    float a = (float)op->alpha;
    if (!op->ca)
        return a;
    float d = op->cb ? op->ca[0] - op->cb[0] : op->ca[0];
    return a * d;
}

typedef struct {
    const float *x, *y;
} pair;

static double dot_range(const void *ctx, int64_t b, int64_t e)
{
    const pair *p = ctx;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = b;
    for (; i + 4 <= e; i += 4) {
        s0 += (double)p->x[i] * p->y[i];
        s1 += (double)p->x[i + 1] * p->y[i + 1];
        s2 += (double)p->x[i + 2] * p->y[i + 2];
        s3 += (double)p->x[i + 3] * p->y[i + 3];
    }
    for (; i < e; i++)
        s0 += (double)p->x[i] * p->y[i];
    return (s0 + s1) + (s2 + s3);
}

static double abs_sum_range(const void *ctx, int64_t b, int64_t e)
{
    const float *x = ctx;
    double s0 = 0, s1 = 0;
    int64_t i = b;
    for (; i + 2 <= e; i += 2) {
        s0 += fabsf(x[i]);
        s1 += fabsf(x[i + 1]);
    }
    for (; i < e; i++)
        s0 += fabsf(x[i]);
    return s0 + s1;
}

/* max |x| that lets a NaN through (fmaxf would drop it; torch's max keeps it). */
static inline float nan_max(float m, float v)
{
    return (v > m || v != v) ? v : m;
}

static float abs_max(const float *x, int64_t n)
{
    if (n <= 0)
        return 0.0f;
    int64_t chunk = (n + CPU_MAX_CHUNKS - 1) / CPU_MAX_CHUNKS;
    if (chunk < 4096)
        chunk = 4096;
    int64_t nc = (n + chunk - 1) / chunk;
    float part[CPU_MAX_CHUNKS];
#pragma omp parallel for if (n >= CPU_PAR_MIN && nc > 1) schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        float m = 0.0f;
        for (int64_t i = c * chunk, e = cpu_min64(n, (c + 1) * chunk); i < e; i++)
            m = nan_max(m, fabsf(x[i]));
        part[c] = m;
    }
    float m = 0.0f;
    for (int64_t c = 0; c < nc; c++)
        m = nan_max(m, part[c]);
    return m;
}

anvil_status anvil_cpu_vec(anvil_backend *be, const anvil_vec_op *op)
{
    ANVIL_TRY(anvil_vec_check(be, op));
    int64_t n = op->n;
    const float *x = op->x;
    float *y = op->y;
    bool par = n >= CPU_PAR_MIN;
    switch (op->kind) {
    case ANVIL_VEC_COPY:
        if (n > 0 && x != y)
            memmove(y, x, (size_t)n * sizeof *y);
        break;
    case ANVIL_VEC_SCALE: {
        float c = coef(op);
#pragma omp parallel for if (par) schedule(static)
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * c;
        break;
    }
    case ANVIL_VEC_AXPY: {
        float c = coef(op);
#pragma omp parallel for if (par) schedule(static)
        for (int64_t i = 0; i < n; i++)
            y[i] = fmaf(c, x[i], y[i]);
        break;
    }
    case ANVIL_VEC_DOT: {
        pair p = {x, y};
        float r = (float)cpu_det_sum(n, 4096, par, dot_range, &p);
        op->out[0] = op->ca ? r * coef(op) : r;
        break;
    }
    case ANVIL_VEC_ABS_MAX:
        op->out[0] = abs_max(x, n);
        break;
    case ANVIL_VEC_ABS_SUM:
        op->out[0] = (float)cpu_det_sum(n, 4096, par, abs_sum_range, x);
        break;
    case ANVIL_VEC_RDIV:
        op->out[0] = coef(op) / x[0];
        break;
    default:
        break;
    }
    be->counters.host_kernel_launches++;
    return ANVIL_OK;
}
