/* norm.cu — batch norm and layer norm, forward and backward, and the running-statistics
 * update, matching the CPU kernels (backend/cpu/norm.c) within float rounding:
 *  - batch norm views x as [N, C, S]; the per-channel sums of x, x^2 (moments) and of x,
 *    x^2, dy, dy x (backward coefficients) come from one deterministic parallel sweep
 *    each (chansum.cu); a thread per channel turns them into the node's float table,
 *    and one elementwise pass applies it (forward and dx);
 *  - layer norm views x as [R, D]; one warp per row (a block per row when D is long);
 *    the affine gradients go one thread per column over the rows in order, each block's
 *    warps recomputing the row statistics of 8 rows at a time into shared memory;
 *  - batchnorm_stats updates running_mean / running_var in place from the moments, a
 *    thread per channel; the count is incremented by a second one-thread kernel after
 *    the first has read it, so that the momentum NAN factor 1 / (count + 1) is the CPU's
 *    1 / (count after +1).
 * No atomics; the elementwise float arithmetic follows the CPU's expression order with
 * __fmul_rn / __fadd_rn (no FMA contraction). */
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
#define BN_CHAN_THREADS 128

/* Mean and 1/sqrt(var + eps) of channel c: from the channel sums (anvil_cuda_chan_sums)
 * of the batch, or the running statistics. */
static __device__ void bn_mean_invstd(const double *sums, const bn_shape &b, int64_t c, bool training,
                                      const float *rm, const float *rv, double eps, double *mean, double *invstd)
{
    double var;
    if (training) {
        *mean = sums[c * 4] / (double)b.M;
        var = sums[c * 4 + 1] / (double)b.M - *mean * *mean;
        var = var > 0.0 ? var : 0.0;
    } else {
        *mean = rm[c];
        var = rv[c];
    }
    *invstd = 1.0 / sqrt(var + eps);
}

/* the moments table: {mean, invstd, unbiased var, 0} per channel */
static __global__ void bn_moments_kernel(const double *sums, float4 *mo, bn_shape b, double eps)
{
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < b.C; c += (int64_t)gridDim.x * blockDim.x) {
        double mean, invstd;
        bn_mean_invstd(sums, b, c, true, NULL, NULL, eps, &mean, &invstd);
        double var = sums[c * 4 + 1] / (double)b.M - mean * mean;
        var = var > 0.0 ? var : 0.0;
        mo[c] = make_float4((float)mean, (float)invstd, (float)(var * (double)b.M / (double)(b.M - 1)), 0.0f);
    }
}

/* The forward's per-channel float coefficients {m, a, k0 (the bias), 0}: y = (x - m) a + k0,
 * from the moments (training) or the running statistics. */
static __global__ void bn_fwd_coef_kernel(const float4 *mo, const float *rm, const float *rv, const float *w,
                                          const float *bias, float4 *coef, int64_t C, double eps)
{
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x) {
        float m, is;
        if (mo) {
            m = mo[c].x;
            is = mo[c].y;
        } else {
            m = rm[c];
            is = (float)(1.0 / sqrt((double)rv[c] + eps));
        }
        coef[c] = make_float4(m, __fmul_rn(is, w ? w[c] : 1.0f), bias ? bias[c] : 0.0f, 0.0f);
    }
}

/* The backward's table {m, a, k0, k1, dweight, dbias, 0, 0} (two float4 per channel):
 * dx = a ((dy - k0) - (x - m) k1), k0 = k1 = 0 in evaluation; as the CPU's. */
static __global__ void bn_bwd_coef_kernel(const double *sums, const float *rm, const float *rv, const float *w,
                                          float4 *co, bn_shape b, bool training, double eps)
{
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < b.C; c += (int64_t)gridDim.x * blockDim.x) {
        double mean, invstd;
        bn_mean_invstd(sums, b, c, training, rm, rv, eps, &mean, &invstd);
        double wc = w ? (double)w[c] : 1.0, sdy = sums[c * 4 + 2];
        double sdyx = sums[c * 4 + 3] - mean * sdy; /* sum dy (x - mean) */
        float4 k = make_float4((float)mean, (float)(wc * invstd), 0.0f, 0.0f);
        if (training) {
            k.z = (float)(sdy / (double)b.M);
            k.w = (float)(invstd * invstd * sdyx / (double)b.M);
        }
        co[2 * c] = k;
        co[2 * c + 1] = make_float4((float)(sdyx * invstd), (float)sdy, 0.0f, 0.0f);
    }
}

static __device__ __forceinline__ float bn_apply1(float x, float dy, float4 k, int mode)
{
    if (mode == 0) /* forward */
        return __fadd_rn(__fmul_rn(__fsub_rn(x, k.x), k.y), k.z);
    if (mode == 1) /* backward, batch statistics */
        return __fmul_rn(k.y, __fsub_rn(__fsub_rn(dy, k.z), __fmul_rn(__fsub_rn(x, k.x), k.w)));
    return __fmul_rn(k.y, dy); /* backward, running statistics */
}

/* The elementwise pass over [N, C, S]: I is the index type (32-bit when it fits); V
 * values per load (4 when S is a multiple of 4 and the tensors are 16-byte aligned);
 * channel c's coefficients at coef[c * cs]. */
template <typename I, int V>
static __global__ void bn_apply_kernel(const float *__restrict__ x, const float *__restrict__ dy,
                                       const float4 *__restrict__ coef, int cs, float *out, I C, I S, I total, int mode)
{
    I SV = S / V, tv = total / V;
#pragma unroll 2
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < tv; i += (I)gridDim.x * blockDim.x) {
        float4 k = coef[((i / SV) % C) * cs];
        if (V == 4) {
            float4 xv = mode == 2 ? make_float4(0.f, 0.f, 0.f, 0.f) : reinterpret_cast<const float4 *>(x)[i];
            float4 gv = mode == 0 ? make_float4(0.f, 0.f, 0.f, 0.f) : reinterpret_cast<const float4 *>(dy)[i];
            float4 r;
            r.x = bn_apply1(xv.x, gv.x, k, mode);
            r.y = bn_apply1(xv.y, gv.y, k, mode);
            r.z = bn_apply1(xv.z, gv.z, k, mode);
            r.w = bn_apply1(xv.w, gv.w, k, mode);
            reinterpret_cast<float4 *>(out)[i] = r;
        } else {
            out[i] = bn_apply1(mode == 2 ? 0.0f : x[i], mode == 0 ? 0.0f : dy[i], k, mode);
        }
    }
}

static anvil_status bn_apply(anvil_cuda_ctx *c, bn_shape b, const float *x, const float *dy, const float4 *coef,
                             int cs, float *out, int mode, const char *op)
{
    int64_t total = b.N * b.C * b.S;
    bool vec = b.S % 4 == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)dy & 15) == 0 && ((uintptr_t)out & 15) == 0;
    unsigned int nb = anvil_cuda_blocks(vec ? total / 4 : total, BN_THREADS, 65535u * 16);
    if (total < ((int64_t)1 << 31) && vec)
        bn_apply_kernel<uint32_t, 4><<<nb, BN_THREADS, 0, c->stream>>>(x, dy, coef, cs, out, (uint32_t)b.C,
                                                                       (uint32_t)b.S, (uint32_t)total, mode);
    else if (total < ((int64_t)1 << 31))
        bn_apply_kernel<uint32_t, 1><<<nb, BN_THREADS, 0, c->stream>>>(x, dy, coef, cs, out, (uint32_t)b.C,
                                                                       (uint32_t)b.S, (uint32_t)total, mode);
    else
        bn_apply_kernel<uint64_t, 1><<<nb, BN_THREADS, 0, c->stream>>>(x, dy, coef, cs, out, (uint64_t)b.C,
                                                                       (uint64_t)b.S, (uint64_t)total, mode);
    return anvil_cuda_launched(c, op);
}

/* in (x) -> [C, 4] moments; nothing in evaluation (no reader looks at them) */
ANVIL_CUDA_KERNEL(batchnorm_moments)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    if (!s->node->ia[0])
        return ANVIL_OK;
    bn_shape b = bn_shape_of(s->in_node[0]);
    ANVIL_TRY(bn_check_batch(true, b));
    double *sums;
    ANVIL_TRY(anvil_cuda_chan_sums(c, (const float *)s->in[0], NULL, b.N, b.C, b.S, ANVIL_CHAN_X, "batchnorm",
                                   &sums));
    bn_moments_kernel<<<anvil_cuda_blocks(b.C, BN_CHAN_THREADS), BN_CHAN_THREADS, 0, c->stream>>>(
        sums, (float4 *)s->out, b, (double)s->node->fa[0]);
    return anvil_cuda_launched(c, "batchnorm (moments)");
}

/* in (x, running_mean, running_var[, weight][, bias], moments) */
ANVIL_CUDA_KERNEL(batchnorm)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[0]);
    bool training = nd->ia[0] != 0;
    ANVIL_TRY(bn_check_batch(training, b));
    if (b.N * b.C * b.S == 0)
        return ANVIL_OK;
    if ((size_t)b.C * sizeof(float4) > ANVIL_CUDA_SCRATCH_FLOATS * sizeof(float))
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "batchnorm: %lld channels exceed the CUDA reduction scratch",
                          (long long)b.C);
    const float *w = nd->ia[1] ? (const float *)s->in[3] : NULL;
    const float *bias = nd->ia[2] ? (const float *)s->in[3 + nd->ia[1]] : NULL;
    float4 *coef = (float4 *)c->scratch;
    bn_fwd_coef_kernel<<<anvil_cuda_blocks(b.C, BN_CHAN_THREADS), BN_CHAN_THREADS, 0, c->stream>>>(
        training ? (const float4 *)s->in[nd->n_in - 1] : NULL, (const float *)s->in[1], (const float *)s->in[2], w,
        bias, coef, b.C, (double)nd->fa[0]);
    ANVIL_TRY(anvil_cuda_launched(c, "batchnorm"));
    return bn_apply(c, b, (const float *)s->in[0], NULL, coef, 1, (float *)s->out, 0, "batchnorm");
}

/* in (dy, x, running_mean, running_var[, weight]) -> [C, 8] */
ANVIL_CUDA_KERNEL(batchnorm_bwd_coef)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    bn_shape b = bn_shape_of(s->in_node[1]);
    bool training = nd->ia[0] != 0;
    ANVIL_TRY(bn_check_batch(training, b));
    if (b.C <= 0)
        return ANVIL_OK;
    if (b.N * b.S == 0) {
        ANVIL_CUDA_CHECK(cudaMemsetAsync(s->out, 0, (size_t)b.C * ANVIL_BN_COEF_COLS * sizeof(float), c->stream),
                         "batchnorm_bwd_coef: cudaMemsetAsync");
        return ANVIL_OK;
    }
    double *sums;
    ANVIL_TRY(anvil_cuda_chan_sums(c, (const float *)s->in[1], (const float *)s->in[0], b.N, b.C, b.S,
                                   ANVIL_CHAN_X | ANVIL_CHAN_DY, "batchnorm_bwd", &sums));
    bn_bwd_coef_kernel<<<anvil_cuda_blocks(b.C, BN_CHAN_THREADS), BN_CHAN_THREADS, 0, c->stream>>>(
        sums, (const float *)s->in[2], (const float *)s->in[3], nd->ia[1] ? (const float *)s->in[4] : NULL,
        (float4 *)s->out, b, training, (double)nd->fa[0]);
    return anvil_cuda_launched(c, "batchnorm_bwd (coefficients)");
}

/* in (dy, x, coef) -> dx */
ANVIL_CUDA_KERNEL(batchnorm_bwd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    bn_shape b = bn_shape_of(s->in_node[1]);
    if (b.N * b.C * b.S == 0)
        return ANVIL_OK;
    return bn_apply(c, b, (const float *)s->in[1], (const float *)s->in[0], (const float4 *)s->in[2], 2,
                    (float *)s->out, s->node->ia[0] ? 1 : 2, "batchnorm_bwd");
}

/* column 4 (dweight) or 5 (dbias) of the coefficients */
static __global__ void bn_column_kernel(const float *co, float *out, int64_t C, int k)
{
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x)
        out[c] = co[c * ANVIL_BN_COEF_COLS + k];
}

/* in (coef) -> [C]: ia[3] 0 dweight, 1 dbias */
ANVIL_CUDA_KERNEL(batchnorm_bwd_affine)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t C = s->node->shape[0];
    if (C <= 0)
        return ANVIL_OK;
    bn_column_kernel<<<anvil_cuda_blocks(C, BN_CHAN_THREADS), BN_CHAN_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (float *)s->out, C, 4 + (s->node->ia[3] != 0));
    return anvil_cuda_launched(c, "batchnorm_bwd_affine");
}

/* running = (1 - m) running + m batch (unbiased variance); m = momentum, or for momentum
 * NAN with a count, 1 / (count + 1): the count as it will be after this step's increment
 * (bn_count_kernel, launched after this kernel, performs it). */
static __global__ void bn_stats_kernel(const float4 *mo, float *rm, float *rv, const long long *nbt, int64_t C,
                                       double momentum)
{
    double m = momentum;
    if (nbt && isnan(m))
        m = 1.0 / (double)(*nbt + 1);
    float mf = (float)m, keep = __fsub_rn(1.0f, mf);
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x) {
        float4 k = mo[c];
        rm[c] = __fadd_rn(__fmul_rn(keep, rm[c]), __fmul_rn(mf, k.x));
        rv[c] = __fadd_rn(__fmul_rn(keep, rv[c]), __fmul_rn(mf, k.z));
    }
}

static __global__ void bn_count_kernel(long long *nbt)
{
    if (threadIdx.x == 0 && blockIdx.x == 0)
        *nbt += 1;
}

/* in (moments, running_mean, running_var[, num_batches_tracked]): an effect, in place */
ANVIL_CUDA_KERNEL(batchnorm_stats)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    int64_t C = s->in_node[0]->shape[0];
    long long *nbt = nd->n_in == 4 ? (long long *)s->in[3] : NULL;
    if (C > 0) {
        bn_stats_kernel<<<anvil_cuda_blocks(C, BN_CHAN_THREADS), BN_CHAN_THREADS, 0, c->stream>>>(
            (const float4 *)s->in[0], (float *)s->in[1], (float *)s->in[2], nbt, C, (double)nd->fa[1]);
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
