/* norm.c — batch norm and layer norm, forward and backward, and the running-statistics
 * update.  Batch norm views x as [N, C, S] and threads over channels; layer norm views it
 * as [R, D] (D = the normalized dims) and threads over rows (dx) or column blocks
 * (dweight, dbias).  Every sum runs in double in a fixed order, whatever the thread
 * count.  Batch norm's statistics come from one sweep over x (the moments node) and one
 * over x and dy (the backward coefficients); layer norm recomputes them per kernel. */
#include "backend/cpu/cpu.h"

#include <stdlib.h>

/* ---- batch norm */

typedef struct {
    int64_t N, C, S, M; /* M = N * S values per channel */
} bn_shape;

static bn_shape bn_shape_of(const anvil_node *x)
{
    bn_shape b;
    b.N = x->shape[0];
    b.C = x->shape[1];
    b.S = cpu_prod(x->shape, 2, x->ndim);
    b.M = b.N * b.S;
    return b;
}

/* Biased batch mean and variance of channel c (two passes, double). */
static void bn_moments(const float *x, bn_shape b, int64_t c, double *mean, double *var)
{
    double s = 0.0;
    for (int64_t n = 0; n < b.N; n++)
        s += cpu_sum_serial(x + (n * b.C + c) * b.S, b.S);
    double m = s / (double)b.M, q = 0.0;
    for (int64_t n = 0; n < b.N; n++) {
        const float *p = x + (n * b.C + c) * b.S;
        for (int64_t j = 0; j < b.S; j++) {
            double d = (double)p[j] - m;
            q += d * d;
        }
    }
    *mean = m;
    *var = q / (double)b.M;
}

/* Mean and 1/sqrt(var + eps) of channel c: the batch's in training, else the running
 * statistics'. */
static void bn_stats(const anvil_step *s, const float *x, bn_shape b, int64_t c, double *mean, double *invstd)
{
    double var;
    if (s->node->ia[0]) {
        bn_moments(x, b, c, mean, &var);
    } else {
        /* BATCHNORM: in (x, rm, rv, ...); BATCHNORM_BWD_COEF: in (dy, x, rm, rv, ...) */
        *mean = ((const float *)s->in[s->node->op == OP_BATCHNORM ? 1 : 2])[c];
        var = ((const float *)s->in[s->node->op == OP_BATCHNORM ? 2 : 3])[c];
    }
    *invstd = 1.0 / sqrt(var + (double)s->node->fa[0]);
}

static anvil_status bn_check_batch(const anvil_step *s, bn_shape b)
{
    if (s->node->ia[0] && b.M <= 1)
        return anvil_fail(ANVIL_ERR_SHAPE, "batchnorm: expected more than 1 value per channel when training, "
                          "got %lld", (long long)b.M);
    return ANVIL_OK;
}

/* in (x) -> [C, 4] {mean, 1/sqrt(var + eps), unbiased var, 0}; nothing in evaluation */
anvil_status anvil_cpu_batchnorm_moments(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    if (!s->node->ia[0])
        return ANVIL_OK;
    bn_shape b = bn_shape_of(s->in_node[0]);
    ANVIL_TRY(bn_check_batch(s, b));
    const float *x = (const float *)s->in[0];
    float *mo = (float *)s->out;
    double eps = (double)s->node->fa[0];
#pragma omp parallel for if (b.M * b.C >= CPU_PAR_MIN) schedule(static)
    for (int64_t c = 0; c < b.C; c++) {
        double mean, var;
        bn_moments(x, b, c, &mean, &var);
        float *r = mo + c * ANVIL_BN_MOMENTS_COLS;
        r[0] = (float)mean;
        r[1] = (float)(1.0 / sqrt(var + eps));
        r[2] = (float)(var * (double)b.M / (double)(b.M - 1));
        r[3] = 0.0f;
    }
    return ANVIL_OK;
}

/* in (x, running_mean, running_var[, weight][, bias], moments) */
anvil_status anvil_cpu_batchnorm(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[0]);
    ANVIL_TRY(bn_check_batch(s, b));
    const float *x = (const float *)s->in[0];
    const float *w = nd->ia[1] ? (const float *)s->in[3] : NULL;
    const float *bias = nd->ia[2] ? (const float *)s->in[3 + nd->ia[1]] : NULL;
    const float *mo = (const float *)s->in[nd->n_in - 1];
    float *y = (float *)s->out;
#pragma omp parallel for if (b.M * b.C >= CPU_PAR_MIN) schedule(static)
    for (int64_t c = 0; c < b.C; c++) {
        float m, is;
        if (nd->ia[0]) {
            m = mo[c * ANVIL_BN_MOMENTS_COLS];
            is = mo[c * ANVIL_BN_MOMENTS_COLS + 1];
        } else {
            double mean, invstd;
            bn_stats(s, x, b, c, &mean, &invstd);
            m = (float)mean;
            is = (float)invstd;
        }
        float a = is * (w ? w[c] : 1.0f), sh = bias ? bias[c] : 0.0f;
        for (int64_t n = 0; n < b.N; n++) {
            const float *p = x + (n * b.C + c) * b.S;
            float *q = y + (n * b.C + c) * b.S;
            for (int64_t j = 0; j < b.S; j++)
                q[j] = (p[j] - m) * a + sh;
        }
    }
    return ANVIL_OK;
}

/* Per channel: sum(dy) and sum(dy * (x - mean)). */
static void bn_dy_sums(const float *dy, const float *x, bn_shape b, int64_t c, double mean, double *sdy,
                       double *sdyx)
{
    double s1 = 0.0, s2 = 0.0;
    for (int64_t n = 0; n < b.N; n++) {
        const float *g = dy + (n * b.C + c) * b.S, *p = x + (n * b.C + c) * b.S;
        for (int64_t j = 0; j < b.S; j++) {
            s1 += g[j];
            s2 += (double)g[j] * ((double)p[j] - mean);
        }
    }
    *sdy = s1;
    *sdyx = s2;
}

/* in (dy, x, running_mean, running_var[, weight]) -> [C, 8] {m, a, k0, k1, dweight, dbias,
 * 0, 0}.  Training: the gradient through the batch statistics, dx = w invstd (dy -
 * mean(dy) - xhat mean(dy xhat)) = a (dy - k0 - (x - m) k1); evaluation: dx = a dy. */
anvil_status anvil_cpu_batchnorm_bwd_coef(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[1]);
    ANVIL_TRY(bn_check_batch(s, b));
    const float *dy = (const float *)s->in[0], *x = (const float *)s->in[1];
    const float *w = nd->ia[1] ? (const float *)s->in[4] : NULL;
    float *co = (float *)s->out;
    bool training = nd->ia[0] != 0;
#pragma omp parallel for if (b.M * b.C >= CPU_PAR_MIN) schedule(static)
    for (int64_t c = 0; c < b.C; c++) {
        double mean, invstd, sdy, sdyx;
        bn_stats(s, x, b, c, &mean, &invstd);
        bn_dy_sums(dy, x, b, c, mean, &sdy, &sdyx);
        double wc = w ? w[c] : 1.0;
        float *r = co + c * ANVIL_BN_COEF_COLS;
        r[0] = (float)mean;
        r[1] = (float)(wc * invstd);
        r[2] = training ? (float)(sdy / (double)b.M) : 0.0f;
        r[3] = training ? (float)(invstd * invstd * sdyx / (double)b.M) : 0.0f;
        r[4] = (float)(sdyx * invstd);
        r[5] = (float)sdy;
        r[6] = r[7] = 0.0f;
    }
    return ANVIL_OK;
}

/* in (dy, x, coef) -> dx */
anvil_status anvil_cpu_batchnorm_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    bn_shape b = bn_shape_of(s->in_node[1]);
    const float *dy = (const float *)s->in[0], *x = (const float *)s->in[1], *co = (const float *)s->in[2];
    float *dx = (float *)s->out;
    bool training = s->node->ia[0] != 0;
#pragma omp parallel for if (b.M * b.C >= CPU_PAR_MIN) schedule(static)
    for (int64_t c = 0; c < b.C; c++) {
        const float *r = co + c * ANVIL_BN_COEF_COLS;
        float m = r[0], a = r[1], k0 = r[2], k1 = r[3];
        for (int64_t n = 0; n < b.N; n++) {
            const float *g = dy + (n * b.C + c) * b.S, *p = x + (n * b.C + c) * b.S;
            float *o = dx + (n * b.C + c) * b.S;
            for (int64_t j = 0; j < b.S; j++)
                o[j] = training ? a * (g[j] - k0 - (p[j] - m) * k1) : a * g[j];
        }
    }
    return ANVIL_OK;
}

/* in (coef) -> [C]: ia[3] 0 dweight = sum(dy xhat), 1 dbias = sum(dy) */
anvil_status anvil_cpu_batchnorm_bwd_affine(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const float *co = (const float *)s->in[0];
    float *out = (float *)s->out;
    int64_t C = s->node->shape[0], k = 4 + (s->node->ia[3] != 0);
    for (int64_t c = 0; c < C; c++)
        out[c] = co[c * ANVIL_BN_COEF_COLS + k];
    return ANVIL_OK;
}

/* in (moments, running_mean, running_var[, num_batches_tracked]); an effect: running =
 * (1-m) running + m batch, the variance unbiased (as torch); momentum NAN: m = 1 /
 * num_batches_tracked (a cumulative average, torch's momentum=None). */
anvil_status anvil_cpu_batchnorm_stats(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const float *mo = (const float *)s->in[0];
    int64_t C = s->in_node[0]->shape[0];
    float *rm = (float *)s->in[1], *rv = (float *)s->in[2];
    double m = s->node->fa[1];
    if (s->node->n_in == 4) {
        int64_t *nbt = (int64_t *)s->in[3];
        *nbt += 1;
        if (isnan(m))
            m = 1.0 / (double)*nbt;
    }
    float mf = (float)m;
    for (int64_t c = 0; c < C; c++) {
        const float *r = mo + c * ANVIL_BN_MOMENTS_COLS;
        rm[c] = (1.0f - mf) * rm[c] + mf * r[0];
        rv[c] = (1.0f - mf) * rv[c] + mf * r[2];
    }
    return ANVIL_OK;
}

/* ---- layer norm: x viewed as [R, D] */

static void ln_shape(const anvil_node *x, int k, int64_t *R, int64_t *D)
{
    *D = cpu_prod(x->shape, x->ndim - k, x->ndim);
    *R = cpu_prod(x->shape, 0, x->ndim - k);
}

static void ln_row_stats(const float *x, int64_t D, double eps, double *mean, double *invstd)
{
    double m = cpu_sum_serial(x, D) / (double)D, q = 0.0;
    for (int64_t j = 0; j < D; j++) {
        double d = (double)x[j] - m;
        q += d * d;
    }
    *mean = m;
    *invstd = 1.0 / sqrt(q / (double)D + eps);
}

/* in (x[, weight][, bias]) */
anvil_status anvil_cpu_layernorm(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *nd = s->node;
    int64_t R, D;
    ln_shape(s->in_node[0], nd->ia[0], &R, &D);
    const float *x = (const float *)s->in[0];
    const float *w = nd->ia[1] ? (const float *)s->in[1] : NULL;
    const float *bias = nd->ia[2] ? (const float *)s->in[1 + nd->ia[1]] : NULL;
    float *y = (float *)s->out;
#pragma omp parallel for if (R * D >= CPU_PAR_MIN) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        double mean, invstd;
        ln_row_stats(x + r * D, D, nd->fa[0], &mean, &invstd);
        const float *p = x + r * D;
        float *q = y + r * D, m = (float)mean, a = (float)invstd;
        for (int64_t j = 0; j < D; j++)
            q[j] = (p[j] - m) * a * (w ? w[j] : 1.0f) + (bias ? bias[j] : 0.0f);
    }
    return ANVIL_OK;
}

/* in (dy, x[, weight]) -> dx = invstd (g - mean(g) - xhat mean(g xhat)), g = dy w. */
anvil_status anvil_cpu_layernorm_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *nd = s->node;
    int64_t R, D;
    ln_shape(s->in_node[1], nd->ia[0], &R, &D);
    const float *dy = (const float *)s->in[0], *x = (const float *)s->in[1];
    const float *w = nd->ia[1] ? (const float *)s->in[2] : NULL;
    float *dx = (float *)s->out;
#pragma omp parallel for if (R * D >= CPU_PAR_MIN) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *p = x + r * D, *g = dy + r * D;
        float *o = dx + r * D;
        double mean, invstd, sg = 0.0, sgx = 0.0;
        ln_row_stats(p, D, nd->fa[0], &mean, &invstd);
        for (int64_t j = 0; j < D; j++) {
            double gj = (double)g[j] * (w ? w[j] : 1.0);
            sg += gj;
            sgx += gj * ((double)p[j] - mean) * invstd;
        }
        float a = (float)invstd, k0 = (float)(sg / (double)D), k1 = (float)(sgx / (double)D), m = (float)mean;
        for (int64_t j = 0; j < D; j++) {
            float xhat = (p[j] - m) * a;
            o[j] = a * (g[j] * (w ? w[j] : 1.0f) - k0 - xhat * k1);
        }
    }
    return ANVIL_OK;
}

#define LN_COLS 256 /* columns per work item of the affine gradients */

/* in (dy, x) -> the normalized shape: ia[3] 0 dweight = sum over rows of dy xhat, 1 dbias
 * = sum of dy.  Row statistics first (threaded over rows), then column blocks, each
 * summing its columns over the rows in order. */
anvil_status anvil_cpu_layernorm_bwd_affine(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *nd = s->node;
    int64_t R, D;
    ln_shape(s->in_node[1], nd->ia[0], &R, &D);
    const float *dy = (const float *)s->in[0], *x = (const float *)s->in[1];
    float *out = (float *)s->out;
    bool dbias = nd->ia[3] != 0;
    double *st = NULL;
    if (!dbias) {
        st = malloc((size_t)(R > 0 ? R : 1) * 2 * sizeof *st);
        if (!st)
            return anvil_fail(ANVIL_ERR_OOM, "layernorm backward: no memory for %lld row statistics", (long long)R);
#pragma omp parallel for if (R * D >= CPU_PAR_MIN) schedule(static)
        for (int64_t r = 0; r < R; r++)
            ln_row_stats(x + r * D, D, nd->fa[0], &st[2 * r], &st[2 * r + 1]);
    }
    int64_t nb = (D + LN_COLS - 1) / LN_COLS;
#pragma omp parallel for if (R * D >= CPU_PAR_MIN) schedule(static)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t j0 = blk * LN_COLS, j1 = cpu_min64(D, j0 + LN_COLS);
        double acc[LN_COLS] = {0};
        for (int64_t r = 0; r < R; r++) {
            const float *g = dy + r * D, *p = x + r * D;
            if (dbias) {
                for (int64_t j = j0; j < j1; j++)
                    acc[j - j0] += g[j];
            } else {
                double m = st[2 * r], a = st[2 * r + 1];
                for (int64_t j = j0; j < j1; j++)
                    acc[j - j0] += (double)g[j] * (((double)p[j] - m) * a);
            }
        }
        for (int64_t j = j0; j < j1; j++)
            out[j] = (float)acc[j - j0];
    }
    free(st);
    return ANVIL_OK;
}
