/* conv.c — 2-D convolution through im2col + OpenBLAS sgemm (graph/ops/conv.c has the
 * shapes).  Forward and backward-data are independent per sample, so samples go to
 * threads; backward-filter sums over samples in fixed chunks (set by N alone) whose
 * partials are added in order, so every result is the same whatever the thread count.
 *
 * The column buffers (and backward-filter's partial sums) live in the step's planned
 * workspace (anvil_cpu_workspace sizes it when the program is planned), so a training
 * step allocates nothing; should the thread count have grown since, a kernel falls back
 * to a malloc'd buffer. */
#include "backend/cpu/cpu.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Backward-filter partial sums: at most this many, fixed by the batch size. */
#define CONV_DW_CHUNKS 8

typedef struct {
    int64_t N, C, H, W;      /* input */
    int64_t O, kh, kw;       /* weight [O, C/G, kh, kw] */
    int64_t OH, OW;          /* output */
    int64_t G, cg, og;       /* groups, input and output channels per group */
    int64_t K, P;            /* column rows (cg*kh*kw) and columns (OH*OW) */
    int sh, sw, ph, pw, dh, dw;
    bool direct;             /* 1x1, stride 1, no padding: the input is its own column */
} conv_geom;

static conv_geom geom(const anvil_node *x, const anvil_node *w, const anvil_node *y, const int *ia)
{
    conv_geom c;
    c.N = x->shape[0], c.C = x->shape[1], c.H = x->shape[2], c.W = x->shape[3];
    c.O = w->shape[0], c.cg = w->shape[1], c.kh = w->shape[2], c.kw = w->shape[3];
    c.OH = y->shape[2], c.OW = y->shape[3];
    c.G = c.C / c.cg, c.og = c.O / c.G;
    c.K = c.cg * c.kh * c.kw, c.P = c.OH * c.OW;
    c.sh = ia[0], c.sw = ia[1], c.ph = ia[2], c.pw = ia[3], c.dh = ia[4], c.dw = ia[5];
    c.direct = c.kh == 1 && c.kw == 1 && c.sh == 1 && c.sw == 1 && c.ph == 0 && c.pw == 0;
    return c;
}

/* Output range [lo, hi) of ow whose input column ow*s - p + k*d lies in [0, W). */
static void valid_range(int64_t n_out, int64_t n_in, int s, int p, int64_t off, int64_t *lo,
                        int64_t *hi)
{
    /* in = o*s + off - p >= 0  <=>  o >= ceil((p - off) / s) */
    int64_t a = p - off;
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    int64_t b = n_in - 1 + p - off; /* o*s <= b */
    *hi = b < 0 ? 0 : cpu_min64(n_out, b / s + 1);
    if (*lo > *hi)
        *lo = *hi;
}

/* col [K, P] from one sample's group of channels x [cg, H, W]. */
static void im2col(const conv_geom *c, const float *x, float *col)
{
    for (int64_t ch = 0; ch < c->cg; ch++)
        for (int64_t ki = 0; ki < c->kh; ki++)
            for (int64_t kj = 0; kj < c->kw; kj++) {
                float *row = col + ((ch * c->kh + ki) * c->kw + kj) * c->P;
                int64_t lo, hi;
                valid_range(c->OW, c->W, c->sw, c->pw, kj * c->dw, &lo, &hi);
                for (int64_t oh = 0; oh < c->OH; oh++) {
                    float *r = row + oh * c->OW;
                    int64_t ih = oh * c->sh - c->ph + ki * c->dh;
                    if (ih < 0 || ih >= c->H) {
                        memset(r, 0, (size_t)c->OW * sizeof(float));
                        continue;
                    }
                    const float *xr = x + (ch * c->H + ih) * c->W;
                    int64_t off = kj * c->dw - c->pw; /* iw = ow*sw + off */
                    for (int64_t ow = 0; ow < lo; ow++)
                        r[ow] = 0.0f;
                    if (c->sw == 1) /* a contiguous run: the common case, a plain copy */
                        memcpy(r + lo, xr + lo + off, (size_t)(hi - lo) * sizeof(float));
                    else
                        for (int64_t ow = lo; ow < hi; ow++)
                            r[ow] = xr[ow * c->sw + off];
                    for (int64_t ow = hi; ow < c->OW; ow++)
                        r[ow] = 0.0f;
                }
            }
}

/* d[i] += a[i]: stride 1, no overlap, so it vectorizes */
static void add_run(float *restrict d, const float *restrict a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        d[i] += a[i];
}

/* The adjoint of im2col: dx [cg, H, W] += scatter of col [K, P], in a fixed order. */
static void col2im(const conv_geom *c, const float *col, float *dx)
{
    for (int64_t ch = 0; ch < c->cg; ch++)
        for (int64_t ki = 0; ki < c->kh; ki++)
            for (int64_t kj = 0; kj < c->kw; kj++) {
                const float *row = col + ((ch * c->kh + ki) * c->kw + kj) * c->P;
                int64_t lo, hi;
                valid_range(c->OW, c->W, c->sw, c->pw, kj * c->dw, &lo, &hi);
                for (int64_t oh = 0; oh < c->OH; oh++) {
                    int64_t ih = oh * c->sh - c->ph + ki * c->dh;
                    if (ih < 0 || ih >= c->H)
                        continue;
                    const float *r = row + oh * c->OW;
                    float *xr = dx + (ch * c->H + ih) * c->W;
                    int64_t off = kj * c->dw - c->pw;
                    if (c->sw == 1)
                        add_run(xr + lo + off, r + lo, hi - lo);
                    else
                        for (int64_t ow = lo; ow < hi; ow++)
                            xr[ow * c->sw + off] += r[ow];
                }
            }
}

/* Threads for a per-sample loop: parallel only when there is enough work. */
static int conv_threads(const conv_geom *c, int64_t items)
{
    double macs = (double)c->N * (double)c->O * (double)c->K * (double)c->P;
    if (items < 2 || macs < (double)CPU_PAR_MIN)
        return 1;
    int t = omp_get_max_threads();
    return (int)cpu_min64(t, items);
}

/* Floats of the column buffers for nt threads (none for a direct 1x1 convolution). */
static size_t col_floats(const conv_geom *c, int nt)
{
    return c->direct ? 0 : (size_t)nt * (size_t)(c->K * c->P);
}

/* n floats of scratch: the step's planned workspace when it holds them, else malloc'd
 * (*owned, for the caller to free). */
static float *scratch(const anvil_step *s, size_t n, float **owned)
{
    *owned = NULL;
    if (n == 0)
        return NULL;
    if (s->ws && s->ws_bytes >= n * sizeof(float))
        return s->ws;
    *owned = malloc(n * sizeof(float));
    if (!*owned)
        anvil_fail(ANVIL_ERR_OOM, "%s: no memory for %zu floats of scratch", anvil_op_name(s->node->op), n);
    return *owned;
}

/* What each kernel below takes from scratch(), for the planner. */
size_t anvil_cpu_conv_workspace(const anvil_graph *g, const anvil_node *n)
{
    const anvil_node *in0 = &g->nodes[n->in[0]], *in1 = &g->nodes[n->in[1]];
    switch (n->op) {
    case OP_CONV2D: {
        conv_geom c = geom(in0, in1, n, n->ia);
        return col_floats(&c, conv_threads(&c, c.N)) * sizeof(float);
    }
    case OP_CONV2D_BWD_DATA: {
        conv_geom c = geom(n, in1, in0, n->ia);
        return col_floats(&c, conv_threads(&c, c.N)) * sizeof(float);
    }
    case OP_CONV2D_BWD_FILTER: {
        conv_geom c = geom(in1, n, in0, n->ia);
        int64_t nch = cpu_min64(c.N, CONV_DW_CHUNKS);
        size_t part = nch > 1 ? (size_t)((nch - 1) * c.O * c.K) : 0;
        return (col_floats(&c, conv_threads(&c, nch)) + part) * sizeof(float);
    }
    default:
        return 0;
    }
}

/* y = conv(x, w) + b */
anvil_status anvil_cpu_conv2d(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    conv_geom c = geom(s->in_node[0], s->in_node[1], s->node, s->node->ia);
    const float *x = s->in[0], *w = s->in[1];
    const float *bias = s->node->n_in >= 3 ? (const float *)s->in[2] : NULL;
    float *y = s->out;
    if (c.N == 0)
        return ANVIL_OK;
    int nt = conv_threads(&c, c.N);
    float *owned, *cols = scratch(s, col_floats(&c, nt), &owned);
    if (!c.direct && !cols)
        return ANVIL_ERR_OOM;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < c.N; n++) {
        float *col = c.direct ? NULL : cols + (size_t)omp_get_thread_num() * (size_t)(c.K * c.P);
        float *yn = y + n * c.O * c.P;
        for (int64_t o = 0; o < c.O; o++)
            for (int64_t p = 0; p < c.P; p++)
                yn[o * c.P + p] = bias ? bias[o] : 0.0f;
        for (int64_t g = 0; g < c.G; g++) {
            const float *xg = x + (n * c.C + g * c.cg) * c.H * c.W;
            if (!c.direct)
                im2col(&c, xg, col);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)c.og, (blasint)c.P,
                        (blasint)c.K, 1.0f, w + g * c.og * c.K, (blasint)c.K,
                        c.direct ? xg : col, (blasint)c.P, 1.0f, yn + g * c.og * c.P, (blasint)c.P);
        }
        if (s->node->ia[6] == 1) /* fused relu epilogue (graph/fuse.c) */
            for (int64_t i = 0; i < c.O * c.P; i++)
                yn[i] = yn[i] > 0.0f ? yn[i] : 0.0f;
    }
    free(owned);
    return ANVIL_OK;
}

/* dx = col2im(w^T dy), per sample and group */
anvil_status anvil_cpu_conv2d_bwd_data(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    conv_geom c = geom(s->node, s->in_node[1], s->in_node[0], s->node->ia);
    const float *dy = s->in[0], *w = s->in[1];
    float *dx = s->out;
    if (c.N == 0)
        return ANVIL_OK;
    int nt = conv_threads(&c, c.N);
    float *owned, *cols = scratch(s, col_floats(&c, nt), &owned);
    if (!c.direct && !cols)
        return ANVIL_ERR_OOM;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < c.N; n++) {
        float *col = c.direct ? NULL : cols + (size_t)omp_get_thread_num() * (size_t)(c.K * c.P);
        float *dxn = dx + n * c.C * c.H * c.W;
        if (!c.direct)
            memset(dxn, 0, (size_t)(c.C * c.H * c.W) * sizeof(float));
        for (int64_t g = 0; g < c.G; g++) {
            float *dst = c.direct ? dxn + g * c.cg * c.P : col;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)c.K, (blasint)c.P,
                        (blasint)c.og, 1.0f, w + g * c.og * c.K, (blasint)c.K,
                        dy + (n * c.O + g * c.og) * c.P, (blasint)c.P, 0.0f, dst, (blasint)c.P);
            if (!c.direct)
                col2im(&c, col, dxn + g * c.cg * c.H * c.W);
        }
    }
    free(owned);
    return ANVIL_OK;
}

/* dw = sum over samples of dy_n im2col(x_n)^T, in fixed sample chunks. */
anvil_status anvil_cpu_conv2d_bwd_filter(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    conv_geom c = geom(s->in_node[1], s->node, s->in_node[0], s->node->ia);
    const float *dy = s->in[0], *x = s->in[1];
    float *dw = s->out;
    int64_t wn = c.O * c.K;
    if (c.N == 0) {
        memset(dw, 0, (size_t)wn * sizeof(float));
        return ANVIL_OK;
    }
    int64_t nch = cpu_min64(c.N, CONV_DW_CHUNKS);
    int nt = conv_threads(&c, nch);
    size_t ncol = col_floats(&c, nt), npart = nch > 1 ? (size_t)((nch - 1) * wn) : 0;
    float *owned, *buf = scratch(s, ncol + npart, &owned);
    if (ncol + npart > 0 && !buf)
        return ANVIL_ERR_OOM;
    float *cols = ncol ? buf : NULL, *part = npart ? buf + ncol : NULL;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t ch = 0; ch < nch; ch++) {
        float *col = c.direct ? NULL : cols + (size_t)omp_get_thread_num() * (size_t)(c.K * c.P);
        float *acc = ch == 0 ? dw : part + (ch - 1) * wn;
        int64_t n0 = ch * c.N / nch, n1 = (ch + 1) * c.N / nch;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t g = 0; g < c.G; g++) {
                const float *xg = x + (n * c.C + g * c.cg) * c.H * c.W;
                if (!c.direct)
                    im2col(&c, xg, col);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)c.og, (blasint)c.K,
                            (blasint)c.P, 1.0f, dy + (n * c.O + g * c.og) * c.P, (blasint)c.P,
                            c.direct ? xg : col, (blasint)c.P, n == n0 ? 0.0f : 1.0f,
                            acc + g * c.og * c.K, (blasint)c.K);
            }
    }
    for (int64_t ch = 1; ch < nch; ch++) {
        const float *p = part + (ch - 1) * wn;
        for (int64_t i = 0; i < wn; i++)
            dw[i] += p[i];
    }
    free(owned);
    return ANVIL_OK;
}
