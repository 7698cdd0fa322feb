/* loss.cu — cross-entropy (class indices or probabilities, label smoothing) and the
 * pointwise losses, the mean over the batch as torch's reduction="mean", and their
 * gradients; the CPU kernels' formulas (src/backend/cpu/loss.c).  A loss is a scalar in
 * device memory, summed deterministically in double: a fixed grid (a function of the
 * size only) writes per-block partials to the context's scratch, one block adds them in
 * order.  A label outside [0, C) cannot fail mid-graph: it sets ANVIL_CUDA_ERR_LABEL in
 * the error word (reported by the next sync or download) and its row counts as zero. */
#include "backend/cuda/cuda_internal.h"

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
    const float *x;    /* logits [N, C] */
    const void *t;     /* int32 [N] or float [N, C] */
    int64_t N, C;
    float eps;
    int probs;
} ce_args;

static void ce_setup(const anvil_step *s, int xi, ce_args *k)
{
    const anvil_node *x = s->in_node[xi];
    k->C = x->ndim >= 1 ? x->shape[x->ndim - 1] : 1;
    k->N = k->C ? anvil_node_numel(x) / k->C : 0;
    k->x = (const float *)s->in[xi];
    k->t = s->in[xi + 1];
    k->eps = s->node->fa[0];
    k->probs = s->node->ia[0] != 0;
}

/* The warp's log-sum-exp of a row (every lane gets it). */
static __device__ double warp_lse(const float *row, int64_t C)
{
    int lane = threadIdx.x & 31;
    float m = -INFINITY;
    for (int64_t c = lane; c < C; c += 32)
        m = fmaxf(m, row[c]);
    m = anvil_cuda_warp_max(m);
    double sum = 0.0;
    for (int64_t c = lane; c < C; c += 32)
        sum += exp((double)row[c] - m);
    sum = anvil_cuda_warp_sum(sum);
    return m + log(sum);
}

/* The same by one thread, for short rows (C <= CE_SHORT_ROW), where a warp per row
 * would leave most lanes idle and chain 10 shuffles per row. */
#define CE_SHORT_ROW 32
static __device__ double thread_lse(const float *row, int64_t C)
{
    float m = -INFINITY;
    for (int64_t c = 0; c < C; c++)
        m = fmaxf(m, row[c]);
    double sum = 0.0;
    for (int64_t c = 0; c < C; c++)
        sum += exp((double)row[c] - m);
    return m + log(sum);
}

#define CE_WARPS 8
#define CE_ROWS_PER_BLOCK 256

static unsigned int ce_blocks(int64_t N)
{
    int64_t b = (N + CE_ROWS_PER_BLOCK - 1) / CE_ROWS_PER_BLOCK;
    if (b < 1)
        b = 1;
    if (b > ANVIL_CUDA_MAX_PARTIALS)
        b = ANVIL_CUDA_MAX_PARTIALS;
    return (unsigned int)b;
}

/* partials[block] = the sum of the per-row losses of the block's contiguous rows; each
 * warp takes every CE_WARPS-th row, then the warps' sums are added in order. */
static __global__ void ce_partials(ce_args k, double *partials, float *out, unsigned int *err)
{
    __shared__ double sh[CE_WARPS];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t per = (k.N + gridDim.x - 1) / gridDim.x;
    int64_t lo = (int64_t)blockIdx.x * per, hi = lo + per < k.N ? lo + per : k.N;
    double acc = 0.0;
    for (int64_t n = lo + warp; n < hi; n += CE_WARPS) {
        const float *row = k.x + n * k.C;
        double lse = warp_lse(row, k.C);
        double l = 0.0;
        if (k.probs) {
            const float *t = (const float *)k.t + n * k.C;
            double part = 0.0;
            for (int64_t c = lane; c < k.C; c += 32)
                part += (t[c] * (1.0 - (double)k.eps) + (double)k.eps / k.C) * (lse - row[c]);
            l = anvil_cuda_warp_sum(part);
        } else {
            int32_t y = ((const int32_t *)k.t)[n];
            if (y < 0 || y >= k.C) {
                if (lane == 0)
                    anvil_cuda_flag_error(err, ANVIL_CUDA_ERR_LABEL);
                continue;
            }
            l = (1.0 - (double)k.eps) * (lse - row[y]);
            if (k.eps != 0.0f) {
                double sx = 0.0;
                for (int64_t c = lane; c < k.C; c += 32)
                    sx += row[c];
                sx = anvil_cuda_warp_sum(sx);
                l += (double)k.eps * (lse - sx / k.C);
            }
        }
        acc += l;
    }
    if (lane == 0)
        sh[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < CE_WARPS; w++)
            t += sh[w];
        if (gridDim.x == 1) /* one block: the mean directly, no second pass */
            out[0] = (float)(t / (double)k.N);
        else
            partials[blockIdx.x] = t;
    }
}

/* ce_partials with a thread per row (short rows): block b sums rows b*256 + t, then
 * every gridDim*256-th row after, in a fixed tree. */
#define CE_ROW_THREADS 256
static __global__ void ce_partials_short(ce_args k, double *partials, float *out, unsigned int *err)
{
    __shared__ double sh[32];
    double acc = 0.0;
    for (int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; n < k.N; n += (int64_t)gridDim.x * blockDim.x) {
        const float *row = k.x + n * k.C;
        double lse = thread_lse(row, k.C), l = 0.0;
        if (k.probs) {
            const float *t = (const float *)k.t + n * k.C;
            for (int64_t c = 0; c < k.C; c++)
                l += (t[c] * (1.0 - (double)k.eps) + (double)k.eps / k.C) * (lse - row[c]);
        } else {
            int32_t y = ((const int32_t *)k.t)[n];
            if (y < 0 || y >= k.C) {
                anvil_cuda_flag_error(err, ANVIL_CUDA_ERR_LABEL);
                continue;
            }
            l = (1.0 - (double)k.eps) * (lse - row[y]);
            if (k.eps != 0.0f) {
                double sx = 0.0;
                for (int64_t c = 0; c < k.C; c++)
                    sx += row[c];
                l += (double)k.eps * (lse - sx / k.C);
            }
        }
        acc += l;
    }
    acc = anvil_cuda_block_sum(acc, sh);
    if (threadIdx.x == 0) {
        if (gridDim.x == 1)
            out[0] = (float)(acc / (double)k.N);
        else
            partials[blockIdx.x] = acc;
    }
}

ANVIL_CUDA_KERNEL(cross_entropy)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    ce_args k;
    ce_setup(s, 0, &k);
    bool short_rows = k.C <= CE_SHORT_ROW;
    unsigned int nb = short_rows ? anvil_cuda_blocks(k.N, CE_ROW_THREADS, ANVIL_CUDA_MAX_PARTIALS) : ce_blocks(k.N);
    double *partials = (double *)c->scratch;
    if (short_rows)
        ce_partials_short<<<nb, CE_ROW_THREADS, 0, c->stream>>>(k, partials, (float *)s->out, c->err_dev);
    else
        ce_partials<<<nb, CE_WARPS * 32, 0, c->stream>>>(k, partials, (float *)s->out, c->err_dev);
    ANVIL_TRY(anvil_cuda_launched(c, "cross_entropy"));
    if (nb == 1)
        return ANVIL_OK;
    anvil_cuda_finish_sum<double, float><<<1, 256, 0, c->stream>>>(partials, (int)nb, (double)k.N,
                                                                   (float *)s->out);
    return anvil_cuda_launched(c, "cross_entropy");
}

/* dlogits = dloss / N * (softmax * sum(t') - t'), t' = t (1 - eps) + eps / C (class
 * indices: sum(t') = 1).  One warp per row. */
static __global__ void ce_bwd_kernel(ce_args k, const float *dloss, float *dx, unsigned int *err)
{
    int lane = threadIdx.x & 31;
    int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    float g = (float)((double)dloss[0] / (double)k.N);
    float onem = (float)(1.0 - (double)k.eps), unif = (float)((double)k.eps / (double)k.C);
    for (int64_t n = (int64_t)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5); n < k.N;
         n += warps) {
        const float *row = k.x + n * k.C;
        float *o = dx + n * k.C;
        float lse = (float)warp_lse(row, k.C);
        if (k.probs) {
            const float *t = (const float *)k.t + n * k.C;
            double ts = 0.0;
            for (int64_t c = lane; c < k.C; c += 32)
                ts += t[c] * onem + unif;
            float tsum = (float)anvil_cuda_warp_sum(ts);
            for (int64_t c = lane; c < k.C; c += 32) {
                float tc = t[c] * onem + unif;
                o[c] = g * (expf(row[c] - lse) * tsum - tc);
            }
        } else {
            int32_t y = ((const int32_t *)k.t)[n];
            bool bad = y < 0 || y >= k.C;
            if (bad && lane == 0)
                anvil_cuda_flag_error(err, ANVIL_CUDA_ERR_LABEL);
            for (int64_t c = lane; c < k.C; c += 32) {
                float tc = (c == y ? onem : 0.0f) + unif;
                o[c] = bad ? 0.0f : g * (expf(row[c] - lse) - tc);
            }
        }
    }
}

/* The sum over a row's G-lane group (lane c holds term c; lanes >= C hold 0), taken in
 * the CPU's order, class 0 first, by every lane of the group. */
template <int G>
static __device__ __forceinline__ double group_sum_in_order(double v, int base)
{
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < G; j++)
        s += __shfl_sync(0xffffffffu, v, base + j);
    return s;
}

/* ce_bwd_kernel for short rows (C <= G <= 32): a group of G lanes per row, one class per
 * lane, so a row's exponentials are computed side by side (a thread per row chained C
 * double exp()s: ~1 µs of latency for a 10-class batch).  The sums keep the CPU's order. */
template <int G>
static __global__ void ce_bwd_group(ce_args k, const float *dloss, float *dx, unsigned int *err)
{
    anvil_pdl_wait();
    int64_t n = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / G;
    int c = (int)(threadIdx.x & (G - 1)), base = (int)(threadIdx.x & 31) & ~(G - 1);
    bool in = n < k.N && c < k.C; /* every lane stays for the shuffles */
    float x = in ? k.x[n * k.C + c] : -INFINITY;
    float m = x;
#pragma unroll
    for (int o = G / 2; o > 0; o /= 2)
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    double e = in ? exp((double)x - m) : 0.0;
    float lse = (float)(m + log(group_sum_in_order<G>(e, base)));
    float g = (float)((double)dloss[0] / (double)k.N);
    float onem = (float)(1.0 - (double)k.eps), unif = (float)((double)k.eps / (double)k.C);
    if (k.probs) {
        float tc = in ? ((const float *)k.t)[n * k.C + c] * onem + unif : 0.0f;
        float tsum = (float)group_sum_in_order<G>(in ? (double)tc : 0.0, base);
        if (in)
            dx[n * k.C + c] = g * (expf(x - lse) * tsum - tc);
    } else if (in) {
        int32_t y = ((const int32_t *)k.t)[n];
        bool bad = y < 0 || y >= k.C;
        if (bad && c == 0)
            anvil_cuda_flag_error(err, ANVIL_CUDA_ERR_LABEL);
        float tc = (c == y ? onem : 0.0f) + unif;
        dx[n * k.C + c] = bad ? 0.0f : g * (expf(x - lse) - tc);
    }
}

ANVIL_CUDA_KERNEL(cross_entropy_bwd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    ce_args k;
    ce_setup(s, 1, &k);
    if (k.N * k.C == 0)
        return ANVIL_OK;
    int64_t lanes = k.C <= 8 ? 8 : k.C <= 16 ? 16 : 32, blocks = (k.N * lanes + 127) / 128;
    if (k.C <= CE_SHORT_ROW && blocks <= INT_MAX) { /* a lane per class */
        void (*kern)(ce_args, const float *, float *, unsigned int *) =
            lanes == 8 ? ce_bwd_group<8> : lanes == 16 ? ce_bwd_group<16> : ce_bwd_group<32>;
        ANVIL_CUDA_CHECK(anvil_cuda_launch(kern, (unsigned int)blocks, 128, 0, c->stream, k, (const float *)s->in[0],
                                           (float *)s->out, c->err_dev),
                         "cross_entropy_bwd");
        return anvil_cuda_launched(c, "cross_entropy_bwd");
    }
    ce_bwd_kernel<<<anvil_cuda_blocks(k.N, 8, 65535u * 4), 256, 0, c->stream>>>(
        k, (const float *)s->in[0], (float *)s->out, c->err_dev);
    return anvil_cuda_launched(c, "cross_entropy_bwd");
}

/* ---------------------------------------------------------------- pointwise losses */

static __device__ __forceinline__ float signf_(float d) { return (float)((d > 0.0f) - (d < 0.0f)); }

static __device__ __forceinline__ float pw_elem(int kind, float a, float x, float t)
{
    float d = x - t, ad = fabsf(d);
    switch (kind) {
    case PW_MSE: return d * d;
    case PW_L1: return ad;
    case PW_BCE:
        return -(t * fmaxf(logf(x), -100.0f) + (1.0f - t) * fmaxf(logf(1.0f - x), -100.0f));
    case PW_BCE_LOGITS: return fmaxf(x, 0.0f) - x * t + log1pf(expf(-fabsf(x)));
    case PW_HUBER: return ad <= a ? 0.5f * d * d : a * (ad - 0.5f * a);
    case PW_SMOOTH_L1:
        if (a == 0.0f)
            return ad;
        return ad < a ? 0.5f * d * d / a : ad - 0.5f * a;
    }
    return NAN;
}

static __device__ __forceinline__ float pw_grad(int kind, float a, float x, float t)
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

static anvil_status pw_check(int kind, const char *op)
{
    if (kind < PW_MSE || kind > PW_SMOOTH_L1)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: unknown loss kind %d", op, kind);
    return ANVIL_OK;
}

static __global__ void pw_partials(const float *x, const float *t, int64_t n, int kind, float a,
                                   double *partials)
{
    double v = anvil_cuda_split_partial<double>(n, [=](int64_t i) { return pw_elem(kind, a, x[i], t[i]); });
    if (threadIdx.x == 0)
        partials[blockIdx.x] = v;
}

ANVIL_CUDA_KERNEL(pw_loss)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int kind = s->node->ia[0];
    ANVIL_TRY(pw_check(kind, "pw_loss"));
    int64_t n = anvil_node_numel(s->in_node[0]);
    unsigned int nb = anvil_cuda_split_blocks(n);
    double *partials = (double *)c->scratch;
    pw_partials<<<nb, ANVIL_CUDA_SPLIT_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (const float *)s->in[1], n, kind, s->node->fa[0], partials);
    ANVIL_TRY(anvil_cuda_launched(c, "pw_loss"));
    anvil_cuda_finish_sum<double, float><<<1, 256, 0, c->stream>>>(partials, (int)nb, (double)n,
                                                                   (float *)s->out);
    return anvil_cuda_launched(c, "pw_loss");
}

/* in (dloss, x, t): dx = dloss / numel * dl/dx.  out may alias x. */
static __global__ void pw_bwd_kernel(const float *dloss, const float *x, const float *t, float *dx,
                                     int64_t n, int kind, float a)
{
    float g = (float)((double)dloss[0] / (double)n);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dx[i] = g * pw_grad(kind, a, x[i], t[i]);
}

ANVIL_CUDA_KERNEL(pw_loss_bwd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int kind = s->node->ia[0];
    ANVIL_TRY(pw_check(kind, "pw_loss_bwd"));
    int64_t n = anvil_node_numel(s->node);
    if (n == 0)
        return ANVIL_OK;
    pw_bwd_kernel<<<anvil_cuda_blocks(n, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (const float *)s->in[1], (const float *)s->in[2], (float *)s->out,
        n, kind, s->node->fa[0]);
    return anvil_cuda_launched(c, "pw_loss_bwd");
}
