/* vec.cu — the CUDA backend's vector operations (backend.h, anvil_vec_op), on the
 * backend's stream.  Element-wise ops use round-to-nearest intrinsics (an explicit
 * __fmaf_rn for AXPY, as torch's add_ and the CPU's fmaf) so nvcc fuses nothing else:
 * given the same inputs they agree with the CPU backend bit for bit.  Reductions are
 * deterministic: a fixed grid for a given n, each block summing a contiguous range in
 * double (a fixed shuffle tree) into the reduction scratch, then one block adding the
 * partials in order — no atomics.  Dots and sums thus differ from the CPU's only in the
 * order of double additions. */
#include "backend/cuda/cuda_internal.h"

/* The op's coefficient (backend.h), read on the device: no host round trip. */
static __device__ __forceinline__ float coef(double alpha, const float *ca, const float *cb)
{
    float a = (float)alpha;
    if (!ca)
        return a;
    float d = cb ? __fsub_rn(ca[0], cb[0]) : ca[0];
    return __fmul_rn(a, d);
}

static __global__ void scale_kernel(const float *x, float *y, int64_t n, double alpha,
                                    const float *ca, const float *cb)
{
    float c = coef(alpha, ca, cb);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fmul_rn(x[i], c);
}

static __global__ void axpy_kernel(const float *x, float *y, int64_t n, double alpha,
                                   const float *ca, const float *cb)
{
    float c = coef(alpha, ca, cb);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fmaf_rn(c, x[i], y[i]);
}

/* Pass 1 of a dot (y given) or an abs sum (y NULL): partials[block] in double. */
static __global__ void sum_partials(const float *x, const float *y, int64_t n, double *partials)
{
    double v = y ? anvil_cuda_split_partial<double>(n, [=](int64_t i) { return (double)x[i] * (double)y[i]; })
                 : anvil_cuda_split_partial<double>(n, [=](int64_t i) { return (double)fabsf(x[i]); });
    if (threadIdx.x == 0)
        partials[blockIdx.x] = v;
}

/* Pass 2: out[0] = (float)sum(partials) in order, then times the coefficient when ca. */
static __global__ void sum_finish(const double *partials, int np, float *out, double alpha,
                                  const float *ca, const float *cb)
{
    __shared__ double sh[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < np; i += blockDim.x)
        acc += partials[i];
    acc = anvil_cuda_block_sum(acc, sh);
    if (threadIdx.x == 0) {
        float r = (float)acc;
        out[0] = ca ? __fmul_rn(r, coef(alpha, ca, cb)) : r;
    }
}

/* max that lets a NaN through (fmaxf would drop it; torch's max keeps it) */
static __device__ __forceinline__ float nan_max(float m, float v)
{
    return (v > m || v != v) ? v : m;
}

static __device__ float block_nan_max(float v, float *shared)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? shared[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1)
        t = nan_max(t, __shfl_xor_sync(0xffffffffu, t, o));
    return t;
}

/* Pass 1 of abs max (grid = split blocks): partials[block]; pass 2 with np = gridDim of
 * pass 1 and x = the partials (every value already >= 0 or NaN). */
static __global__ void abs_max_kernel(const float *x, int64_t n, float *out)
{
    __shared__ float sh[32];
    int64_t per = (n + gridDim.x - 1) / gridDim.x;
    int64_t lo = (int64_t)blockIdx.x * per, hi = lo + per < n ? lo + per : n;
    float m = 0.0f;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        m = nan_max(m, fabsf(x[i]));
    m = block_nan_max(m, sh);
    if (threadIdx.x == 0)
        out[blockIdx.x] = m;
}

static __global__ void rdiv_kernel(const float *x, float *out, double alpha, const float *ca,
                                   const float *cb)
{
    out[0] = __fdiv_rn(coef(alpha, ca, cb), x[0]);
}

extern "C" anvil_status anvil_cuda_vec(anvil_backend *be, const anvil_vec_op *op)
{
    ANVIL_TRY(anvil_vec_check(be, op));
    anvil_cuda_ctx *c = (anvil_cuda_ctx *)be->ctx;
    int64_t n = op->n;
    unsigned int T = ANVIL_CUDA_THREADS;
    switch (op->kind) {
    case ANVIL_VEC_COPY:
        if (n == 0 || op->x == op->y)
            return ANVIL_OK;
        ANVIL_CUDA_CHECK(cudaMemcpyAsync(op->y, op->x, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice,
                                         c->stream),
                         "vec copy: cudaMemcpyAsync (device to device)");
        return anvil_cuda_launched(c, "vec copy");
    case ANVIL_VEC_SCALE:
        if (n == 0)
            return ANVIL_OK;
        scale_kernel<<<anvil_cuda_blocks(n, T), T, 0, c->stream>>>(op->x, op->y, n, op->alpha, op->ca, op->cb);
        return anvil_cuda_launched(c, "vec scale");
    case ANVIL_VEC_AXPY:
        if (n == 0)
            return ANVIL_OK;
        axpy_kernel<<<anvil_cuda_blocks(n, T), T, 0, c->stream>>>(op->x, op->y, n, op->alpha, op->ca, op->cb);
        return anvil_cuda_launched(c, "vec axpy");
    case ANVIL_VEC_DOT:
    case ANVIL_VEC_ABS_SUM: {
        unsigned int nb = anvil_cuda_split_blocks(n);
        double *partials = (double *)c->scratch; /* ANVIL_CUDA_MAX_PARTIALS doubles fit */
        bool dot = op->kind == ANVIL_VEC_DOT;
        sum_partials<<<nb, ANVIL_CUDA_SPLIT_THREADS, 0, c->stream>>>(op->x, dot ? op->y : NULL, n, partials);
        ANVIL_TRY(anvil_cuda_launched(c, dot ? "vec dot" : "vec abs_sum"));
        sum_finish<<<1, 1024, 0, c->stream>>>(partials, (int)nb, op->out, op->alpha, dot ? op->ca : NULL,
                                             dot ? op->cb : NULL);
        return anvil_cuda_launched(c, dot ? "vec dot" : "vec abs_sum");
    }
    case ANVIL_VEC_ABS_MAX: {
        unsigned int nb = anvil_cuda_split_blocks(n);
        float *partials = c->scratch;
        abs_max_kernel<<<nb, ANVIL_CUDA_SPLIT_THREADS, 0, c->stream>>>(op->x, n, partials);
        ANVIL_TRY(anvil_cuda_launched(c, "vec abs_max"));
        abs_max_kernel<<<1, 1024, 0, c->stream>>>(partials, (int64_t)nb, op->out);
        return anvil_cuda_launched(c, "vec abs_max");
    }
    case ANVIL_VEC_RDIV:
        rdiv_kernel<<<1, 1, 0, c->stream>>>(op->x, op->out, op->alpha, op->ca, op->cb);
        return anvil_cuda_launched(c, "vec rdiv");
    default:
        break;
    }
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "vec: unknown op kind %d", (int)op->kind);
}
