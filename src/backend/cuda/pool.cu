/* pool.cu — 2-D max / average / adaptive average pooling and their backward ops, as
 * plain kernels that match the CPU backend's (backend/cpu/pool.c) bit for bit:
 *  - the same windows (avg_pool2d divides by the unclipped window, padding counted;
 *    adaptive windows [floor(i*H/oh), ceil((i+1)*H/oh)));
 *  - max: the first maximum in scan order, or the last NaN (take v when v > max or v is
 *    NaN), recomputed from x in the backward op;
 *  - averages summed in double in scan order, then divided in double;
 *  - the backward ops are gathers, one thread per input element, with no atomics: each
 *    element adds the contributions of the windows that cover it in the CPU's order
 *    (window row, then column), starting from 0 — the CPU's scatter-add order per element.
 * One thread per output (forward) or input (backward) element, grid-stride loops. */
#include "backend/cuda/cuda_internal.h"

typedef struct {
    int64_t planes, H, W, OH, OW;
    int kh, kw, sh, sw, ph, pw;
    bool adaptive;
} pool_geom;

static pool_geom geom_of(const anvil_node *x, const anvil_node *y, const anvil_node *n)
{
    pool_geom p;
    p.planes = x->shape[0] * x->shape[1];
    p.H = x->shape[2], p.W = x->shape[3], p.OH = y->shape[2], p.OW = y->shape[3];
    p.adaptive = n->op == OP_ADAPTIVE_AVGPOOL2D || n->op == OP_ADAPTIVE_AVGPOOL2D_BWD;
    const int *a = n->ia;
    p.kh = a[0], p.kw = a[1], p.sh = a[2], p.sw = a[3], p.ph = a[4], p.pw = a[5];
    return p;
}

static __device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }
static __device__ __forceinline__ int64_t imax64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Window of output (i, j) clipped to the input, rows [h0, h1), columns [w0, w1); *div as
 * the CPU's. */
static __device__ void window(const pool_geom &p, int64_t i, int64_t j, int64_t *h0, int64_t *h1,
                              int64_t *w0, int64_t *w1, double *div)
{
    if (p.adaptive) {
        *h0 = i * p.H / p.OH, *h1 = ((i + 1) * p.H + p.OH - 1) / p.OH;
        *w0 = j * p.W / p.OW, *w1 = ((j + 1) * p.W + p.OW - 1) / p.OW;
        *div = (double)((*h1 - *h0) * (*w1 - *w0));
        return;
    }
    int64_t hs = i * p.sh - p.ph, ws = j * p.sw - p.pw;
    int64_t he = imin64(hs + p.kh, p.H + p.ph), we = imin64(ws + p.kw, p.W + p.pw);
    *div = (double)((he - hs) * (we - ws));
    *h0 = hs < 0 ? 0 : hs, *w0 = ws < 0 ? 0 : ws;
    *h1 = imin64(he, p.H), *w1 = imin64(we, p.W);
}

/* Index in the plane of window (i, j)'s max (the CPU's argmax). */
static __device__ int64_t argmax(const pool_geom &p, const float *xp, int64_t i, int64_t j)
{
    int64_t h0, h1, w0, w1;
    double div;
    window(p, i, j, &h0, &h1, &w0, &w1, &div);
    int64_t best = h0 * p.W + w0;
    float m = -INFINITY;
    for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++) {
            float v = xp[h * p.W + w];
            if (v > m || isnan(v)) {
                m = v;
                best = h * p.W + w;
            }
        }
    return best;
}

/* Output rows [*lo, *hi] whose windows may cover input row h (a superset, one either
 * side; the caller checks each window exactly). */
static __device__ void cover_range(const pool_geom &p, bool rows, int64_t h, int64_t *lo, int64_t *hi)
{
    int64_t n_in = rows ? p.H : p.W, n_out = rows ? p.OH : p.OW;
    if (p.adaptive) {
        /* window i covers h iff floor(h*n_out/n_in) <= i <= ceil((h+1)*n_out/n_in) - 1 */
        *lo = h * n_out / n_in - 1;
        *hi = ((h + 1) * n_out + n_in - 1) / n_in;
    } else {
        int k = rows ? p.kh : p.kw, s = rows ? p.sh : p.sw, pad = rows ? p.ph : p.pw;
        /* i*s - pad <= h < i*s - pad + k  <=>  (h + pad - k) / s < i <= (h + pad) / s */
        int64_t a = h + pad - k + 1;
        *lo = (a <= 0 ? 0 : a / s) - 1; /* floor(a/s) <= ceil(a/s) */
        *hi = (h + pad) / s;
    }
    *lo = imax64(*lo, 0);
    *hi = imin64(*hi, n_out - 1);
}

static __global__ void maxpool_fwd_kernel(pool_geom p, const float *x, float *y)
{
    int64_t n = p.planes * p.OH * p.OW;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < n;
         o += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = o % p.OW, i = (o / p.OW) % p.OH, pl = o / (p.OW * p.OH);
        const float *xp = x + pl * p.H * p.W;
        y[o] = xp[argmax(p, xp, i, j)];
    }
}

static __global__ void maxpool_bwd_kernel(pool_geom p, const float *dy, const float *x, float *dx, bool relu)
{
    int64_t n = p.planes * p.H * p.W;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t w = e % p.W, h = (e / p.W) % p.H, pl = e / (p.W * p.H);
        const float *xp = x + pl * p.H * p.W;
        const float *dyp = dy + pl * p.OH * p.OW;
        int64_t me = h * p.W + w, ilo, ihi, jlo, jhi;
        cover_range(p, true, h, &ilo, &ihi);
        cover_range(p, false, w, &jlo, &jhi);
        float acc = 0.0f;
        for (int64_t i = ilo; i <= ihi; i++)
            for (int64_t j = jlo; j <= jhi; j++) {
                int64_t h0, h1, w0, w1;
                double div;
                window(p, i, j, &h0, &h1, &w0, &w1, &div);
                if (h < h0 || h >= h1 || w < w0 || w >= w1)
                    continue;
                if (argmax(p, xp, i, j) == me && (!relu || xp[me] > 0.0f))
                    acc += dyp[i * p.OW + j];
            }
        dx[e] = acc;
    }
}

/* Non-overlapping windows (stride >= kernel): every input element is in at most one
 * window, so each window writes its dy to its own argmax, into a zeroed dx: a quarter of
 * the work of the gather above for the usual 2x2 pooling, and no write conflicts. */
static __global__ void maxpool_bwd_scatter(pool_geom p, const float *dy, const float *x, float *dx, bool relu)
{
    int64_t n = p.planes * p.OH * p.OW;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < n;
         o += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = o % p.OW, i = (o / p.OW) % p.OH, pl = o / (p.OW * p.OH);
        const float *xp = x + pl * p.H * p.W;
        int64_t a = argmax(p, xp, i, j);
        if (!relu || xp[a] > 0.0f)
            dx[pl * p.H * p.W + a] = dy[o];
    }
}

/* 2x2 windows at stride 2 without padding whose windows tile the plane exactly (H, W
 * even): the common max-pool.  One thread per output reads its window as two float2
 * rows; 32-bit indices.  The general kernels above spend most of their time in 64-bit
 * index arithmetic on this case.  The scan order and NaN rule are argmax()'s. */
static bool pool2x2_tiles(const pool_geom &p)
{
    return !p.adaptive && p.kh == 2 && p.kw == 2 && p.sh == 2 && p.sw == 2 && p.ph == 0 && p.pw == 0 &&
           p.H == 2 * p.OH && p.W == 2 * p.OW && p.planes * p.H * p.W < ((int64_t)1 << 31);
}

/* window (o's) values in scan order and the index (0..3) of its max */
static __device__ __forceinline__ int pool2x2_load(const float *x, uint32_t o, uint32_t OW, float v[4],
                                                   uint32_t *top)
{
    uint32_t r = o / OW, j = o - r * OW; /* r = plane * OH + i: the window's top row is 2r */
    *top = 2 * r * (2 * OW) + 2 * j;
    float2 a = *reinterpret_cast<const float2 *>(x + *top), b = *reinterpret_cast<const float2 *>(x + *top + 2 * OW);
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
    int best = 0;
    float m = -INFINITY;
    for (int k = 0; k < 4; k++)
        if (v[k] > m || isnan(v[k])) {
            m = v[k];
            best = k;
        }
    return best;
}

static __global__ void maxpool2x2_fwd(const float *__restrict__ x, float *y, uint32_t n, uint32_t OW)
{
    for (uint32_t o = blockIdx.x * blockDim.x + threadIdx.x; o < n; o += gridDim.x * blockDim.x) {
        float v[4];
        uint32_t top;
        y[o] = v[pool2x2_load(x, o, OW, v, &top)];
    }
}

/* dx's window: dy at the max, 0 elsewhere (the windows tile dx, so no memset); with relu
 * (the fused ReLU backward) 0 there too unless the max is > 0 */
static __global__ void maxpool2x2_bwd(const float *__restrict__ dy, const float *__restrict__ x, float *dx, uint32_t n,
                                      uint32_t OW, bool relu)
{
    for (uint32_t o = blockIdx.x * blockDim.x + threadIdx.x; o < n; o += gridDim.x * blockDim.x) {
        float v[4], g = dy[o];
        uint32_t top;
        int k = pool2x2_load(x, o, OW, v, &top);
        if (relu && !(v[k] > 0.0f))
            k = 4;
        *reinterpret_cast<float2 *>(dx + top) = make_float2(k == 0 ? g : 0.0f, k == 1 ? g : 0.0f);
        *reinterpret_cast<float2 *>(dx + top + 2 * OW) = make_float2(k == 2 ? g : 0.0f, k == 3 ? g : 0.0f);
    }
}

/* avg_pool2d and adaptive_avg_pool2d */
static __global__ void avgpool_fwd_kernel(pool_geom p, const float *x, float *y)
{
    int64_t n = p.planes * p.OH * p.OW;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < n;
         o += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = o % p.OW, i = (o / p.OW) % p.OH, pl = o / (p.OW * p.OH);
        const float *xp = x + pl * p.H * p.W;
        int64_t h0, h1, w0, w1;
        double div, acc = 0.0;
        window(p, i, j, &h0, &h1, &w0, &w1, &div);
        for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++)
                acc += (double)xp[h * p.W + w];
        y[o] = (float)(acc / div);
    }
}

static __global__ void avgpool_bwd_kernel(pool_geom p, const float *dy, float *dx)
{
    int64_t n = p.planes * p.H * p.W;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t w = e % p.W, h = (e / p.W) % p.H, pl = e / (p.W * p.H);
        const float *dyp = dy + pl * p.OH * p.OW;
        int64_t ilo, ihi, jlo, jhi;
        cover_range(p, true, h, &ilo, &ihi);
        cover_range(p, false, w, &jlo, &jhi);
        float acc = 0.0f;
        for (int64_t i = ilo; i <= ihi; i++)
            for (int64_t j = jlo; j <= jhi; j++) {
                int64_t h0, h1, w0, w1;
                double div;
                window(p, i, j, &h0, &h1, &w0, &w1, &div);
                if (h < h0 || h >= h1 || w < w0 || w >= w1)
                    continue;
                acc += (float)((double)dyp[i * p.OW + j] / div);
            }
        dx[e] = acc;
    }
}

static int64_t numel4(const anvil_node *n)
{
    return n->shape[0] * n->shape[1] * n->shape[2] * n->shape[3];
}

/* Forward: x = in[0], y = the node. */
static anvil_status pool_fwd(const anvil_exec *ex, const anvil_step *s, bool max, const char *name)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    pool_geom p = geom_of(s->in_node[0], s->node, s->node);
    int64_t n = numel4(s->node);
    if (n == 0)
        return ANVIL_OK;
    unsigned int blocks = anvil_cuda_blocks(n, ANVIL_CUDA_THREADS);
    if (max && pool2x2_tiles(p) && ((uintptr_t)s->in[0] & 7) == 0)
        maxpool2x2_fwd<<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>((const float *)s->in[0], (float *)s->out,
                                                                    (uint32_t)n, (uint32_t)p.OW);
    else if (max)
        maxpool_fwd_kernel<<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>(p, (const float *)s->in[0],
                                                                       (float *)s->out);
    else
        avgpool_fwd_kernel<<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>(p, (const float *)s->in[0],
                                                                       (float *)s->out);
    return anvil_cuda_launched(c, name);
}

/* Backward: dy = in[0] (the output's shape), [x = in[1]], dx = the node (x's shape). */
static anvil_status pool_bwd(const anvil_exec *ex, const anvil_step *s, bool max, const char *name)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    pool_geom p = geom_of(s->node, s->in_node[0], s->node);
    bool relu = max && s->node->ia[6] != 0; /* the fused ReLU backward (graph/fuse.c) */
    int64_t n = numel4(s->node);
    if (n == 0)
        return ANVIL_OK;
    unsigned int blocks = anvil_cuda_blocks(n, ANVIL_CUDA_THREADS);
    if (max && pool2x2_tiles(p) && ((uintptr_t)s->in[1] & 7) == 0 && ((uintptr_t)s->out & 7) == 0) {
        int64_t on = p.planes * p.OH * p.OW;
        maxpool2x2_bwd<<<anvil_cuda_blocks(on, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
            (const float *)s->in[0], (const float *)s->in[1], (float *)s->out, (uint32_t)on, (uint32_t)p.OW, relu);
    } else if (max && p.sh >= p.kh && p.sw >= p.kw) {
        ANVIL_CUDA_CHECK(cudaMemsetAsync(s->out, 0, (size_t)n * sizeof(float), c->stream),
                         "maxpool2d_bwd: cudaMemsetAsync");
        int64_t on = p.planes * p.OH * p.OW;
        maxpool_bwd_scatter<<<anvil_cuda_blocks(on, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
            p, (const float *)s->in[0], (const float *)s->in[1], (float *)s->out, relu);
    } else if (max)
        maxpool_bwd_kernel<<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>(
            p, (const float *)s->in[0], (const float *)s->in[1], (float *)s->out, relu);
    else
        avgpool_bwd_kernel<<<blocks, ANVIL_CUDA_THREADS, 0, c->stream>>>(p, (const float *)s->in[0],
                                                                       (float *)s->out);
    return anvil_cuda_launched(c, name);
}

ANVIL_CUDA_KERNEL(maxpool2d) { return pool_fwd(ex, s, true, "maxpool2d"); }
ANVIL_CUDA_KERNEL(maxpool2d_bwd) { return pool_bwd(ex, s, true, "maxpool2d_bwd"); }
ANVIL_CUDA_KERNEL(avgpool2d) { return pool_fwd(ex, s, false, "avgpool2d"); }
ANVIL_CUDA_KERNEL(avgpool2d_bwd) { return pool_bwd(ex, s, false, "avgpool2d_bwd"); }
ANVIL_CUDA_KERNEL(adaptive_avgpool2d) { return pool_fwd(ex, s, false, "adaptive_avgpool2d"); }
ANVIL_CUDA_KERNEL(adaptive_avgpool2d_bwd) { return pool_bwd(ex, s, false, "adaptive_avgpool2d_bwd"); }
