/* pool.c — 2-D max / average / adaptive average pooling and their backward ops
 * (graph/ops/pool.c has the shapes).  Each (n, c) plane is one work item, computed by one
 * thread in a fixed order, so the backward scatter-adds never race and the results do
 * not depend on the thread count. */
#include "backend/cpu/cpu.h"

typedef struct {
    int64_t planes, H, W, OH, OW;
    int kh, kw, sh, sw, ph, pw;
    bool adaptive;
} pool_geom;

static pool_geom geom(const anvil_node *x, const anvil_node *y, const anvil_node *n)
{
    pool_geom p;
    p.planes = x->shape[0] * x->shape[1];
    p.H = x->shape[2], p.W = x->shape[3], p.OH = y->shape[2], p.OW = y->shape[3];
    p.adaptive = n->op == OP_ADAPTIVE_AVGPOOL2D || n->op == OP_ADAPTIVE_AVGPOOL2D_BWD;
    const int *a = n->ia;
    p.kh = a[0], p.kw = a[1], p.sh = a[2], p.sw = a[3], p.ph = a[4], p.pw = a[5];
    return p;
}

/* Window of output (i, j), clipped to the input: rows [h0, h1), columns [w0, w1); *div
 * is what torch divides an average by (the unclipped size for avg_pool2d, whose
 * padding counts; the window's own size for the adaptive op). */
static void window(const pool_geom *p, int64_t i, int64_t j, int64_t *h0, int64_t *h1,
                   int64_t *w0, int64_t *w1, double *div)
{
    if (p->adaptive) {
        *h0 = i * p->H / p->OH, *h1 = ((i + 1) * p->H + p->OH - 1) / p->OH;
        *w0 = j * p->W / p->OW, *w1 = ((j + 1) * p->W + p->OW - 1) / p->OW;
        *div = (double)((*h1 - *h0) * (*w1 - *w0));
        return;
    }
    int64_t hs = i * p->sh - p->ph, ws = j * p->sw - p->pw;
    int64_t he = cpu_min64(hs + p->kh, p->H + p->ph), we = cpu_min64(ws + p->kw, p->W + p->pw);
    *div = (double)((he - hs) * (we - ws));
    *h0 = hs < 0 ? 0 : hs, *w0 = ws < 0 ? 0 : ws;
    *h1 = cpu_min64(he, p->H), *w1 = cpu_min64(we, p->W);
}

/* Index in the plane of the window's max: the first in scan order, or the last NaN
 * (torch's CPU rule: take v when v > max or v is NaN). */
static int64_t argmax(const pool_geom *p, const float *x, int64_t i, int64_t j)
{
    int64_t h0, h1, w0, w1;
    double div;
    window(p, i, j, &h0, &h1, &w0, &w1, &div);
    int64_t best = h0 * p->W + w0;
    float m = -INFINITY;
    for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++) {
            float v = x[h * p->W + w];
            if (v > m || isnan(v)) {
                m = v;
                best = h * p->W + w;
            }
        }
    return best;
}

/* A max pool whose windows all lie inside the input (no padding). */
static bool inside(const pool_geom *p)
{
    return !p->adaptive && p->ph == 0 && p->pw == 0 && (p->OH - 1) * p->sh + p->kh <= p->H &&
           (p->OW - 1) * p->sw + p->kw <= p->W;
}

/* The 2x2 stride-2 pool (a CNN's usual one) a row of windows at a time, with selects
 * instead of branches: on real data each comparison is a coin toss, and the mispredicted
 * branches of argmax() cost more than the arithmetic (cnn on the CPU: 47 -> 39 ms a
 * step).  The rule is argmax's (take v when v > max or v is NaN, in scan order),
 * starting from the window's first value. */
static bool is_2x2(const pool_geom *p)
{
    return inside(p) && p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2;
}

static void max2x2_row(const float *restrict r0, const float *restrict r1, float *restrict y, int64_t OW)
{
    for (int64_t j = 0; j < OW; j++) {
        float m = r0[2 * j], v = r0[2 * j + 1];
        m = (v > m) | (v != v) ? v : m;
        v = r1[2 * j];
        m = (v > m) | (v != v) ? v : m;
        v = r1[2 * j + 1];
        m = (v > m) | (v != v) ? v : m;
        y[j] = m;
    }
}

/* dy to each window's argmax, the other three get 0 (+ 0.0f: the general path adds
 * onto zeros, which turns -0 into +0).  Two branch-free loops that the compiler
 * vectorizes: the argmax of each window (selects, as max2x2_row), then the stores; a
 * compare-and-branch version mispredicted on every other window of real data. */
#define MAX2X2_CHUNK 256

/* g when c, else 0 (as a bit mask: no branch), + 0.0f */
static inline float keep_if(float g, int32_t c)
{
    uint32_t u;
    memcpy(&u, &g, sizeof u);
    u &= (uint32_t)0 - (uint32_t)c;
    memcpy(&g, &u, sizeof g);
    return g + 0.0f;
}

static void max2x2_row_bwd(const float *restrict r0, const float *restrict r1, const float *restrict dy,
                           float *restrict d0, float *restrict d1, int64_t OW, int32_t relu)
{
    int32_t k[MAX2X2_CHUNK];
    for (int64_t j0 = 0; j0 < OW; j0 += MAX2X2_CHUNK) {
        int64_t n = OW - j0 < MAX2X2_CHUNK ? OW - j0 : MAX2X2_CHUNK;
        const float *a = r0 + 2 * j0, *b = r1 + 2 * j0;
        for (int64_t j = 0; j < n; j++) {
            float m = a[2 * j], v = a[2 * j + 1];
            int32_t t = (v > m) | (v != v), kk = t;
            m = t ? v : m;
            v = b[2 * j];
            t = (v > m) | (v != v);
            m = t ? v : m;
            kk = t ? 2 : kk;
            v = b[2 * j + 1];
            t = (v > m) | (v != v);
            m = t ? v : m;
            kk = t ? 3 : kk;
            k[j] = relu & !(m > 0.0f) ? 4 : kk; /* 4: masked, no position gets dy */
        }
        const float *g = dy + j0;
        float *o0 = d0 + 2 * j0, *o1 = d1 + 2 * j0;
        for (int64_t j = 0; j < n; j++) {
            o0[2 * j] = keep_if(g[j], k[j] == 0);
            o0[2 * j + 1] = keep_if(g[j], k[j] == 1);
            o1[2 * j] = keep_if(g[j], k[j] == 2);
            o1[2 * j + 1] = keep_if(g[j], k[j] == 3);
        }
    }
}

static bool par(const pool_geom *p)
{
    return p->planes > 1 && p->planes * p->H * p->W >= CPU_PAR_MIN;
}

anvil_status anvil_cpu_maxpool2d(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    pool_geom p = geom(s->in_node[0], s->node, s->node);
    const float *x = s->in[0];
    float *y = s->out;
    bool two = is_2x2(&p);
#pragma omp parallel for if (par(&p)) schedule(static)
    for (int64_t pl = 0; pl < p.planes; pl++) {
        const float *xp = x + pl * p.H * p.W;
        for (int64_t i = 0; i < p.OH; i++) {
            float *yr = y + (pl * p.OH + i) * p.OW;
            if (two) {
                max2x2_row(xp + 2 * i * p.W, xp + (2 * i + 1) * p.W, yr, p.OW);
                continue;
            }
            for (int64_t j = 0; j < p.OW; j++)
                yr[j] = xp[argmax(&p, xp, i, j)];
        }
    }
    return ANVIL_OK;
}

/* in (dy, x): dy goes to each window's argmax, recomputed from x; with ia[6] (fused ReLU
 * backward, graph/fuse.c) only where x there is > 0. */
anvil_status anvil_cpu_maxpool2d_bwd(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    pool_geom p = geom(s->node, s->in_node[0], s->node);
    const int32_t relu = s->node->ia[6] != 0;
    const float *dy = s->in[0], *x = s->in[1];
    float *dx = s->out;
    bool two = is_2x2(&p);
#pragma omp parallel for if (par(&p)) schedule(static)
    for (int64_t pl = 0; pl < p.planes; pl++) {
        const float *xp = x + pl * p.H * p.W;
        float *dxp = dx + pl * p.H * p.W;
        memset(dxp, 0, (size_t)(p.H * p.W) * sizeof(float));
        if (two) {
            for (int64_t i = 0; i < p.OH; i++)
                max2x2_row_bwd(xp + 2 * i * p.W, xp + (2 * i + 1) * p.W, dy + (pl * p.OH + i) * p.OW,
                               dxp + 2 * i * p.W, dxp + (2 * i + 1) * p.W, p.OW, relu);
            continue;
        }
        for (int64_t i = 0; i < p.OH; i++)
            for (int64_t j = 0; j < p.OW; j++) {
                int64_t a = argmax(&p, xp, i, j);
                if (!relu || xp[a] > 0.0f)
                    dxp[a] += dy[(pl * p.OH + i) * p.OW + j];
            }
    }
    return ANVIL_OK;
}

/* avg_pool2d and adaptive_avg_pool2d (sums in double). */
static anvil_status avg_fwd(const anvil_step *s)
{
    pool_geom p = geom(s->in_node[0], s->node, s->node);
    const float *x = s->in[0];
    float *y = s->out;
#pragma omp parallel for if (par(&p)) schedule(static)
    for (int64_t pl = 0; pl < p.planes; pl++) {
        const float *xp = x + pl * p.H * p.W;
        for (int64_t i = 0; i < p.OH; i++)
            for (int64_t j = 0; j < p.OW; j++) {
                int64_t h0, h1, w0, w1;
                double div, acc = 0.0;
                window(&p, i, j, &h0, &h1, &w0, &w1, &div);
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++)
                        acc += xp[h * p.W + w];
                y[(pl * p.OH + i) * p.OW + j] = (float)(acc / div);
            }
    }
    return ANVIL_OK;
}

/* in (dy): each window's dy / divisor added to its inputs. */
static anvil_status avg_bwd(const anvil_step *s)
{
    pool_geom p = geom(s->node, s->in_node[0], s->node);
    const float *dy = s->in[0];
    float *dx = s->out;
#pragma omp parallel for if (par(&p)) schedule(static)
    for (int64_t pl = 0; pl < p.planes; pl++) {
        float *dxp = dx + pl * p.H * p.W;
        memset(dxp, 0, (size_t)(p.H * p.W) * sizeof(float));
        for (int64_t i = 0; i < p.OH; i++)
            for (int64_t j = 0; j < p.OW; j++) {
                int64_t h0, h1, w0, w1;
                double div;
                window(&p, i, j, &h0, &h1, &w0, &w1, &div);
                float g = (float)(dy[(pl * p.OH + i) * p.OW + j] / div);
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++)
                        dxp[h * p.W + w] += g;
            }
    }
    return ANVIL_OK;
}

anvil_status anvil_cpu_avgpool2d(const anvil_exec *ex, const anvil_step *s) { (void)ex; return avg_fwd(s); }
anvil_status anvil_cpu_avgpool2d_bwd(const anvil_exec *ex, const anvil_step *s) { (void)ex; return avg_bwd(s); }
anvil_status anvil_cpu_adaptive_avgpool2d(const anvil_exec *ex, const anvil_step *s) { (void)ex; return avg_fwd(s); }
anvil_status anvil_cpu_adaptive_avgpool2d_bwd(const anvil_exec *ex, const anvil_step *s) { (void)ex; return avg_bwd(s); }
