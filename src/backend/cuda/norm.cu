/* norm.cu — batch norm and layer norm, forward and backward, and the running-statistics
 * update, matching the CPU kernels (backend/cpu/norm.c) within float rounding:
 *  - batch norm views x as [N, C, S]; one block per channel (grid-stride over channels)
 *    sums its M = N * S values in double with fixed-order block reductions (two passes:
 *    the mean, then the centred squares), the biased variance for normalizing;
 *  - layer norm views x as [R, D]; one warp per row (a block per row when D is long);
 *    the affine gradients go one thread per column over the rows in order, each block's
 *    warps recomputing the row statistics of 8 rows at a time into shared memory;
 *  - batchnorm_stats updates running_mean / running_var in place, one block per channel;
 *    the count is incremented by a second one-thread kernel after the first has read it,
 *    so that the momentum NAN factor 1 / (count + 1) is the CPU's 1 / (count after +1).
 * No atomics; the elementwise float arithmetic follows the CPU's expression order with
 * __fmul_rn / __fadd_rn (no FMA contraction).  Statistics are recomputed from x by each
 * kernel rather than stored, as on the CPU. */
#include "backend/cuda/cuda_internal.h"

/* ------------------------------------------------------------------ batch norm */

typedef struct {
    int64_t N, C, S, M; /* M = N * S values per channel */
} bn_shape;

static bn_shape bn_shape_of(const anvil_node *x)
{
    bn_shape b;
    b.N = x->shape[0];
    b.C = x->shape[1];
    b.S = 1;
    for (int d = 2; d < x->ndim; d++)
        b.S *= x->shape[d];
    b.M = b.N * b.S;
    return b;
}

static anvil_status bn_check_batch(bool training, bn_shape b)
{
    if (training && b.M <= 1)
        return anvil_fail(ANVIL_ERR_SHAPE, "batchnorm: expected more than 1 value per channel when training, "
                          "got %lld", (long long)b.M);
    return ANVIL_OK;
}

#define BN_THREADS 256
#define BN_MAX_GRID 65535u

/* Offset of value i (in [0, M)) of channel c. */
static __device__ __forceinline__ int64_t bn_off(const bn_shape &b, int64_t c, int64_t i)
{
    if (b.S == 1)
        return i * b.C + c;
    int64_t n = i / b.S, j = i - n * b.S;
    return (n * b.C + c) * b.S + j;
}

/* Biased batch mean and variance of channel c, every thread of the block gets them. */
static __device__ void bn_moments(const float *x, const bn_shape &b, int64_t c, double *sh, double *mean,
                                  double *var)
{
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < b.M; i += blockDim.x)
        s += (double)x[bn_off(b, c, i)];
    double m = anvil_cuda_block_sum(s, sh) / (double)b.M;
    double q = 0.0;
    for (int64_t i = threadIdx.x; i < b.M; i += blockDim.x) {
        double d = (double)x[bn_off(b, c, i)] - m;
        q += d * d;
    }
    *mean = m;
    *var = anvil_cuda_block_sum(q, sh) / (double)b.M;
}

/* Mean and 1/sqrt(var + eps) of channel c: the batch's when training, else the running
 * statistics'. */
static __device__ void bn_stats(const float *x, const bn_shape &b, int64_t c, bool training, const float *rm,
                                const float *rv, double eps, double *sh, double *mean, double *invstd)
{
    double var;
    if (training) {
        bn_moments(x, b, c, sh, mean, &var);
    } else {
        *mean = rm[c];
        var = rv[c];
    }
    *invstd = 1.0 / sqrt(var + eps);
}

static __global__ void bn_fwd_kernel(const float *x, const float *rm, const float *rv, const float *w,
                                     const float *bias, float *y, bn_shape b, bool training, double eps)
{
    __shared__ double sh[32];
    for (int64_t c = blockIdx.x; c < b.C; c += gridDim.x) {
        double mean, invstd;
        bn_stats(x, b, c, training, rm, rv, eps, sh, &mean, &invstd);
        float m = (float)mean, a = __fmul_rn((float)invstd, w ? w[c] : 1.0f), shift = bias ? bias[c] : 0.0f;
        for (int64_t i = threadIdx.x; i < b.M; i += blockDim.x) {
            int64_t o = bn_off(b, c, i);
            y[o] = __fadd_rn(__fmul_rn(__fsub_rn(x[o], m), a), shift);
        }
    }
}

/* Per channel: sum(dy) and sum(dy * (x - mean)) (block totals). */
static __device__ void bn_dy_sums(const float *dy, const float *x, const bn_shape &b, int64_t c, double mean,
                                  double *sh, double *sdy, double *sdyx)
{
    double s1 = 0.0, s2 = 0.0;
    for (int64_t i = threadIdx.x; i < b.M; i += blockDim.x) {
        int64_t o = bn_off(b, c, i);
        s1 += (double)dy[o];
        s2 += (double)dy[o] * ((double)x[o] - mean);
    }
    *sdy = anvil_cuda_block_sum(s1, sh);
    *sdyx = anvil_cuda_block_sum(s2, sh);
}

static __global__ void bn_bwd_kernel(const float *dy, const float *x, const float *rm, const float *rv,
                                     const float *w, float *dx, bn_shape b, bool training, double eps)
{
    __shared__ double sh[32];
    for (int64_t c = blockIdx.x; c < b.C; c += gridDim.x) {
        double mean, invstd, sdy = 0.0, sdyx = 0.0;
        bn_stats(x, b, c, training, rm, rv, eps, sh, &mean, &invstd);
        if (training)
            bn_dy_sums(dy, x, b, c, mean, sh, &sdy, &sdyx);
        double wc = w ? (double)w[c] : 1.0;
        float a = (float)(wc * invstd);
        float k0 = (float)(sdy / (double)b.M), k1 = (float)(invstd * invstd * sdyx / (double)b.M);
        float m = (float)mean;
        for (int64_t i = threadIdx.x; i < b.M; i += blockDim.x) {
            int64_t o = bn_off(b, c, i);
            float g = dy[o];
            dx[o] = training ? __fmul_rn(a, __fsub_rn(__fsub_rn(g, k0), __fmul_rn(__fsub_rn(x[o], m), k1)))
                             : __fmul_rn(a, g);
        }
    }
}

/* out[c] = dbias ? sum(dy) : sum(dy (x - mean)) invstd. */
static __global__ void bn_bwd_affine_kernel(const float *dy, const float *x, const float *rm, const float *rv,
                                            float *out, bn_shape b, bool training, bool dbias, double eps)
{
    __shared__ double sh[32];
    for (int64_t c = blockIdx.x; c < b.C; c += gridDim.x) {
        double mean = 0.0, invstd = 1.0, sdy, sdyx;
        if (!dbias)
            bn_stats(x, b, c, training, rm, rv, eps, sh, &mean, &invstd);
        bn_dy_sums(dy, x, b, c, mean, sh, &sdy, &sdyx);
        if (threadIdx.x == 0)
            out[c] = (float)(dbias ? sdy : sdyx * invstd);
    }
}

/* running = (1 - m) running + m batch (unbiased variance); m = momentum, or for momentum
 * NAN with a count, 1 / (count + 1): the count as it will be after this step's increment
 * (bn_count_kernel, launched after this kernel, performs it). */
static __global__ void bn_stats_kernel(const float *x, float *rm, float *rv, const long long *nbt, bn_shape b,
                                       double momentum)
{
    __shared__ double sh[32];
    double m = momentum;
    if (nbt && isnan(m))
        m = 1.0 / (double)(*nbt + 1);
    float mf = (float)m, keep = __fsub_rn(1.0f, mf);
    for (int64_t c = blockIdx.x; c < b.C; c += gridDim.x) {
        double mean, var;
        bn_moments(x, b, c, sh, &mean, &var);
        if (threadIdx.x == 0) {
            float unbiased = (float)(var * (double)b.M / (double)(b.M - 1));
            rm[c] = __fadd_rn(__fmul_rn(keep, rm[c]), __fmul_rn(mf, (float)mean));
            rv[c] = __fadd_rn(__fmul_rn(keep, rv[c]), __fmul_rn(mf, unbiased));
        }
    }
}

static __global__ void bn_count_kernel(long long *nbt)
{
    if (threadIdx.x == 0 && blockIdx.x == 0)
        *nbt += 1;
}

static unsigned int bn_grid(int64_t C)
{
    return (unsigned int)(C < 1 ? 1 : C > (int64_t)BN_MAX_GRID ? BN_MAX_GRID : C);
}

/* in (x, running_mean, running_var[, weight][, bias]) */
ANVIL_CUDA_KERNEL(batchnorm)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[0]);
    bool training = nd->ia[0] != 0;
    ANVIL_TRY(bn_check_batch(training, b));
    if (b.N * b.C * b.S == 0)
        return ANVIL_OK;
    const float *w = nd->ia[1] ? (const float *)s->in[3] : NULL;
    const float *bias = nd->ia[2] ? (const float *)s->in[3 + nd->ia[1]] : NULL;
    bn_fwd_kernel<<<bn_grid(b.C), BN_THREADS, 0, c->stream>>>((const float *)s->in[0], (const float *)s->in[1],
                                                              (const float *)s->in[2], w, bias, (float *)s->out,
                                                              b, training, (double)nd->fa[0]);
    return anvil_cuda_launched(c, "batchnorm");
}

/* in (dy, x, running_mean, running_var[, weight]) -> dx */
ANVIL_CUDA_KERNEL(batchnorm_bwd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[1]);
    bool training = nd->ia[0] != 0;
    ANVIL_TRY(bn_check_batch(training, b));
    if (b.N * b.C * b.S == 0)
        return ANVIL_OK;
    const float *w = nd->ia[1] ? (const float *)s->in[4] : NULL;
    bn_bwd_kernel<<<bn_grid(b.C), BN_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (const float *)s->in[1], (const float *)s->in[2], (const float *)s->in[3], w,
        (float *)s->out, b, training, (double)nd->fa[0]);
    return anvil_cuda_launched(c, "batchnorm_bwd");
}

/* in (dy, x, running_mean, running_var) -> [C]: ia[3] 0 dweight, 1 dbias */
ANVIL_CUDA_KERNEL(batchnorm_bwd_affine)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[1]);
    bool training = nd->ia[0] != 0;
    ANVIL_TRY(bn_check_batch(training, b));
    if (b.C <= 0)
        return ANVIL_OK;
    bn_bwd_affine_kernel<<<bn_grid(b.C), BN_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (const float *)s->in[1], (const float *)s->in[2], (const float *)s->in[3],
        (float *)s->out, b, training, nd->ia[3] != 0, (double)nd->fa[0]);
    return anvil_cuda_launched(c, "batchnorm_bwd_affine");
}

/* in (x, running_mean, running_var[, num_batches_tracked]): an effect, in place */
ANVIL_CUDA_KERNEL(batchnorm_stats)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[0]);
    ANVIL_TRY(bn_check_batch(true, b));
    long long *nbt = nd->n_in == 4 ? (long long *)s->in[3] : NULL;
    if (b.C > 0) {
        bn_stats_kernel<<<bn_grid(b.C), BN_THREADS, 0, c->stream>>>(
            (const float *)s->in[0], (float *)s->in[1], (float *)s->in[2], nbt, b, (double)nd->fa[1]);
        ANVIL_TRY(anvil_cuda_launched(c, "batchnorm_stats"));
    }
    if (nbt) {
        bn_count_kernel<<<1, 32, 0, c->stream>>>(nbt);
        ANVIL_TRY(anvil_cuda_launched(c, "batchnorm_stats (count)"));
    }
    return ANVIL_OK;
}

/* ------------------------------------------------------------------ layer norm: [R, D] */

static void ln_shape(const anvil_node *x, int k, int64_t *R, int64_t *D)
{
    int64_t r = 1, d = 1;
    for (int i = 0; i < x->ndim - k; i++)
        r *= x->shape[i];
    for (int i = x->ndim - k; i < x->ndim; i++)
        d *= x->shape[i];
    *R = r;
    *D = d;
}

/* A group of G threads per row: a warp (G = 32) or the whole block. */
template <int G>
struct ln_group {
    static __device__ __forceinline__ double sum(double v, double *sh)
    {
        if (G == 32)
            return anvil_cuda_warp_sum(v);
        return anvil_cuda_block_sum(v, sh);
    }
    static __device__ __forceinline__ int rank() { return G == 32 ? (threadIdx.x & 31) : threadIdx.x; }
    static __device__ __forceinline__ int64_t first_row()
    {
        return G == 32 ? (int64_t)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5) : blockIdx.x;
    }
    static __device__ __forceinline__ int64_t row_stride()
    {
        return G == 32 ? (int64_t)gridDim.x * (blockDim.x / 32) : gridDim.x;
    }
    static __device__ __forceinline__ int size() { return G == 32 ? 32 : blockDim.x; }
};

/* Mean and 1/sqrt(var + eps) of a row (biased variance), every thread of the group gets
 * them. */
template <int G>
static __device__ void ln_row_stats(const float *x, int64_t D, double eps, double *sh, double *mean,
                                    double *invstd)
{
    typedef ln_group<G> grp;
    double s = 0.0;
    for (int64_t j = grp::rank(); j < D; j += grp::size())
        s += (double)x[j];
    double m = grp::sum(s, sh) / (double)D, q = 0.0;
    for (int64_t j = grp::rank(); j < D; j += grp::size()) {
        double d = (double)x[j] - m;
        q += d * d;
    }
    q = grp::sum(q, sh);
    *mean = m;
    *invstd = 1.0 / sqrt(q / (double)D + eps);
}

template <int G>
static __global__ void ln_fwd_kernel(const float *x, const float *w, const float *bias, float *y, int64_t R,
                                     int64_t D, double eps)
{
    __shared__ double sh[32];
    typedef ln_group<G> grp;
    for (int64_t r = grp::first_row(); r < R; r += grp::row_stride()) {
        const float *p = x + r * D;
        float *q = y + r * D;
        double mean, invstd;
        ln_row_stats<G>(p, D, eps, sh, &mean, &invstd);
        float m = (float)mean, a = (float)invstd;
        for (int64_t j = grp::rank(); j < D; j += grp::size())
            q[j] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(p[j], m), a), w ? w[j] : 1.0f), bias ? bias[j] : 0.0f);
    }
}

/* dx = invstd (g - mean(g) - xhat mean(g xhat)), g = dy w. */
template <int G>
static __global__ void ln_bwd_kernel(const float *dy, const float *x, const float *w, float *dx, int64_t R,
                                     int64_t D, double eps)
{
    __shared__ double sh[32];
    typedef ln_group<G> grp;
    for (int64_t r = grp::first_row(); r < R; r += grp::row_stride()) {
        const float *p = x + r * D, *g = dy + r * D;
        float *o = dx + r * D;
        double mean, invstd, sg = 0.0, sgx = 0.0;
        ln_row_stats<G>(p, D, eps, sh, &mean, &invstd);
        for (int64_t j = grp::rank(); j < D; j += grp::size()) {
            double gj = (double)g[j] * (w ? (double)w[j] : 1.0);
            sg += gj;
            sgx += gj * ((double)p[j] - mean) * invstd;
        }
        sg = grp::sum(sg, sh);
        sgx = grp::sum(sgx, sh);
        float a = (float)invstd, k0 = (float)(sg / (double)D), k1 = (float)(sgx / (double)D), m = (float)mean;
        for (int64_t j = grp::rank(); j < D; j += grp::size()) {
            float xhat = __fmul_rn(__fsub_rn(p[j], m), a);
            float gw = w ? __fmul_rn(g[j], w[j]) : g[j];
            o[j] = __fmul_rn(a, __fsub_rn(__fsub_rn(gw, k0), __fmul_rn(xhat, k1)));
        }
    }
}

#define LN_AFF_THREADS 256
#define LN_AFF_ROWS (LN_AFF_THREADS / 32) /* rows whose statistics a block computes at once */

/* One thread per column (a block per LN_AFF_THREADS columns), summing over the rows in
 * order: dbias = sum(dy), dweight = sum(dy xhat).  For dweight each block's warps first
 * compute the statistics of the next LN_AFF_ROWS rows (a warp per row) into shared
 * memory. */
static __global__ void ln_bwd_affine_kernel(const float *dy, const float *x, float *out, int64_t R, int64_t D,
                                            bool dbias, double eps)
{
    __shared__ double st_mean[LN_AFF_ROWS], st_inv[LN_AFF_ROWS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int64_t j0 = (int64_t)blockIdx.x * blockDim.x; j0 < D; j0 += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = j0 + threadIdx.x;
        double acc = 0.0;
        if (dbias) {
            if (j < D)
                for (int64_t r = 0; r < R; r++)
                    acc += (double)dy[r * D + j];
        } else {
            for (int64_t r0 = 0; r0 < R; r0 += LN_AFF_ROWS) {
                __syncthreads(); /* the previous rows' statistics are no longer read */
                if (r0 + warp < R) {
                    double mean, invstd;
                    ln_row_stats<32>(x + (r0 + warp) * D, D, eps, NULL, &mean, &invstd);
                    if (lane == 0) {
                        st_mean[warp] = mean;
                        st_inv[warp] = invstd;
                    }
                }
                __syncthreads();
                int64_t r1 = R - r0 < LN_AFF_ROWS ? R - r0 : LN_AFF_ROWS;
                if (j < D)
                    for (int64_t k = 0; k < r1; k++) {
                        int64_t o = (r0 + k) * D + j;
                        acc += (double)dy[o] * (((double)x[o] - st_mean[k]) * st_inv[k]);
                    }
            }
        }
        if (j < D)
            out[j] = (float)acc;
    }
}

#define LN_LONG_ROW 1024 /* from this length a row gets a block instead of a warp */

/* in (x[, weight][, bias]) */
ANVIL_CUDA_KERNEL(layernorm)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    int64_t R, D;
    ln_shape(s->in_node[0], nd->ia[0], &R, &D);
    if (R * D == 0)
        return ANVIL_OK;
    const float *x = (const float *)s->in[0];
    const float *w = nd->ia[1] ? (const float *)s->in[1] : NULL;
    const float *bias = nd->ia[2] ? (const float *)s->in[1 + nd->ia[1]] : NULL;
    float *y = (float *)s->out;
    double eps = nd->fa[0];
    if (D >= LN_LONG_ROW)
        ln_fwd_kernel<256><<<anvil_cuda_blocks(R, 1, 65535u * 4), 256, 0, c->stream>>>(x, w, bias, y, R, D, eps);
    else
        ln_fwd_kernel<32><<<anvil_cuda_blocks(R, 8, 65535u * 4), 256, 0, c->stream>>>(x, w, bias, y, R, D, eps);
    return anvil_cuda_launched(c, "layernorm");
}

/* in (dy, x[, weight]) -> dx */
ANVIL_CUDA_KERNEL(layernorm_bwd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    int64_t R, D;
    ln_shape(s->in_node[1], nd->ia[0], &R, &D);
    if (R * D == 0)
        return ANVIL_OK;
    const float *dy = (const float *)s->in[0], *x = (const float *)s->in[1];
    const float *w = nd->ia[1] ? (const float *)s->in[2] : NULL;
    float *dx = (float *)s->out;
    double eps = nd->fa[0];
    if (D >= LN_LONG_ROW)
        ln_bwd_kernel<256><<<anvil_cuda_blocks(R, 1, 65535u * 4), 256, 0, c->stream>>>(dy, x, w, dx, R, D, eps);
    else
        ln_bwd_kernel<32><<<anvil_cuda_blocks(R, 8, 65535u * 4), 256, 0, c->stream>>>(dy, x, w, dx, R, D, eps);
    return anvil_cuda_launched(c, "layernorm_bwd");
}

/* in (dy, x) -> the normalized shape: ia[3] 0 dweight, 1 dbias */
ANVIL_CUDA_KERNEL(layernorm_bwd_affine)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    int64_t R, D;
    ln_shape(s->in_node[1], nd->ia[0], &R, &D);
    if (D == 0)
        return ANVIL_OK;
    ln_bwd_affine_kernel<<<anvil_cuda_blocks(D, LN_AFF_THREADS, 65535u), LN_AFF_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (const float *)s->in[1], (float *)s->out, R, D, nd->ia[3] != 0,
        (double)nd->fa[0]);
    return anvil_cuda_launched(c, "layernorm_bwd_affine");
}
