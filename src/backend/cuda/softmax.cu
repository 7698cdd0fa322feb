/* softmax.cu — softmax and log_softmax over one dim of any rank, and their gradients.
 * The tensor is viewed as [outer, D, inner]; a line is D elements at stride inner.
 * Contiguous lines (inner == 1) go one warp per line (a block per line when D is long);
 * strided lines one thread per line, which keeps loads coalesced across the inner dim.
 * Max-subtracted; sums accumulate in double; out may alias in[0] (each element is read
 * before the same thread writes it). */
#include "backend/cuda/cuda_internal.h"

typedef struct {
    int64_t outer, D, inner;
} sm_shape;

static anvil_status sm_shape_of(const anvil_step *s, const char *op, sm_shape *sh)
{
    const anvil_node *x = s->in_node[s->node->n_in - 1];
    int dim = s->node->ia[0];
    if (x->ndim == 0) {
        sh->outer = sh->D = sh->inner = 1;
        return ANVIL_OK;
    }
    if (dim < 0)
        dim += x->ndim;
    if (dim < 0 || dim >= x->ndim)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: dim %d out of range for %d dims", op,
                          s->node->ia[0], x->ndim);
    sh->outer = 1;
    for (int d = 0; d < dim; d++)
        sh->outer *= x->shape[d];
    sh->D = x->shape[dim];
    sh->inner = 1;
    for (int d = dim + 1; d < x->ndim; d++)
        sh->inner *= x->shape[d];
    return ANVIL_OK;
}

/* Reductions over a group of G threads: a warp (G = 32) or the whole block. */
template <int G>
struct group {
    static __device__ __forceinline__ float max(float v, float *sh)
    {
        if (G == 32)
            return anvil_cuda_warp_max(v);
        return anvil_cuda_block_max(v, sh);
    }
    static __device__ __forceinline__ double sum(double v, double *sh)
    {
        if (G == 32)
            return anvil_cuda_warp_sum(v);
        return anvil_cuda_block_sum(v, sh);
    }
    static __device__ __forceinline__ int rank() { return G == 32 ? (threadIdx.x & 31) : threadIdx.x; }
    static __device__ __forceinline__ int64_t first_line()
    {
        return G == 32 ? (int64_t)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5) : blockIdx.x;
    }
    static __device__ __forceinline__ int64_t line_stride()
    {
        return G == 32 ? (int64_t)gridDim.x * (blockDim.x / 32) : gridDim.x;
    }
    static __device__ __forceinline__ int size() { return G == 32 ? 32 : blockDim.x; }
};

template <int G, bool LOG>
static __global__ void softmax_rows(const float *x, float *y, int64_t rows, int64_t D)
{
    __shared__ float shf[32];
    __shared__ double shd[32];
    typedef group<G> grp;
    for (int64_t r = grp::first_line(); r < rows; r += grp::line_stride()) {
        const float *xl = x + r * D;
        float *yl = y + r * D;
        float m = -INFINITY;
        for (int64_t d = grp::rank(); d < D; d += grp::size())
            m = fmaxf(m, xl[d]);
        m = grp::max(m, shf);
        double sum = 0.0;
        for (int64_t d = grp::rank(); d < D; d += grp::size())
            sum += (double)expf(xl[d] - m);
        sum = grp::sum(sum, shd);
        if (LOG) {
            float lse = (float)log(sum);
            for (int64_t d = grp::rank(); d < D; d += grp::size())
                yl[d] = (xl[d] - m) - lse;
        } else {
            float inv = (float)(1.0 / sum);
            for (int64_t d = grp::rank(); d < D; d += grp::size())
                yl[d] = expf(xl[d] - m) * inv;
        }
    }
}

template <bool LOG>
static __global__ void softmax_lines(const float *x, float *y, int64_t outer, int64_t D,
                                     int64_t inner)
{
    int64_t nl = outer * inner;
    for (int64_t l = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; l < nl;
         l += (int64_t)gridDim.x * blockDim.x) {
        int64_t base = (l / inner) * D * inner + (l % inner);
        const float *xl = x + base;
        float *yl = y + base;
        float m = -INFINITY;
        for (int64_t d = 0; d < D; d++)
            m = fmaxf(m, xl[d * inner]);
        double sum = 0.0;
        for (int64_t d = 0; d < D; d++)
            sum += (double)expf(xl[d * inner] - m);
        if (LOG) {
            float lse = (float)log(sum);
            for (int64_t d = 0; d < D; d++)
                yl[d * inner] = (xl[d * inner] - m) - lse;
        } else {
            float inv = (float)(1.0 / sum);
            for (int64_t d = 0; d < D; d++)
                yl[d * inner] = expf(xl[d * inner] - m) * inv;
        }
    }
}

/* softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - exp(y) sum(dy). */
template <int G, bool LOG>
static __global__ void softmax_bwd_rows(const float *dy, const float *y, float *dx, int64_t rows,
                                        int64_t D)
{
    __shared__ double shd[32];
    typedef group<G> grp;
    for (int64_t r = grp::first_line(); r < rows; r += grp::line_stride()) {
        const float *gl = dy + r * D, *yl = y + r * D;
        float *ol = dx + r * D;
        double acc = 0.0;
        for (int64_t d = grp::rank(); d < D; d += grp::size())
            acc += LOG ? (double)gl[d] : (double)gl[d] * yl[d];
        float sg = (float)grp::sum(acc, shd);
        for (int64_t d = grp::rank(); d < D; d += grp::size())
            ol[d] = LOG ? gl[d] - expf(yl[d]) * sg : yl[d] * (gl[d] - sg);
    }
}

template <bool LOG>
static __global__ void softmax_bwd_lines(const float *dy, const float *y, float *dx, int64_t outer,
                                         int64_t D, int64_t inner)
{
    int64_t nl = outer * inner;
    for (int64_t l = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; l < nl;
         l += (int64_t)gridDim.x * blockDim.x) {
        int64_t base = (l / inner) * D * inner + (l % inner);
        const float *gl = dy + base, *yl = y + base;
        float *ol = dx + base;
        double acc = 0.0;
        for (int64_t d = 0; d < D; d++)
            acc += LOG ? (double)gl[d * inner] : (double)gl[d * inner] * yl[d * inner];
        float sg = (float)acc;
        for (int64_t d = 0; d < D; d++)
            ol[d * inner] = LOG ? gl[d * inner] - expf(yl[d * inner]) * sg
                                : yl[d * inner] * (gl[d * inner] - sg);
    }
}

#define LONG_ROW 2048 /* from this length a line gets a block instead of a warp */

template <bool LOG>
static anvil_status sm_fwd(const anvil_exec *ex, const anvil_step *s)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const char *name = LOG ? "log_softmax" : "softmax";
    sm_shape sh = {0, 0, 0};
    ANVIL_TRY(sm_shape_of(s, name, &sh));
    if (sh.outer * sh.D * sh.inner == 0)
        return ANVIL_OK;
    const float *x = (const float *)s->in[0];
    float *y = (float *)s->out;
    if (sh.inner == 1 && sh.D >= LONG_ROW)
        softmax_rows<256, LOG><<<anvil_cuda_blocks(sh.outer, 1, 65535u * 4), 256, 0, c->stream>>>(
            x, y, sh.outer, sh.D);
    else if (sh.inner == 1)
        softmax_rows<32, LOG><<<anvil_cuda_blocks(sh.outer, 8, 65535u * 4), 256, 0, c->stream>>>(
            x, y, sh.outer, sh.D);
    else
        softmax_lines<LOG><<<anvil_cuda_blocks(sh.outer * sh.inner, ANVIL_CUDA_THREADS),
                             ANVIL_CUDA_THREADS, 0, c->stream>>>(x, y, sh.outer, sh.D, sh.inner);
    return anvil_cuda_launched(c, name);
}

template <bool LOG>
static anvil_status sm_bwd(const anvil_exec *ex, const anvil_step *s)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const char *name = LOG ? "log_softmax_bwd" : "softmax_bwd";
    sm_shape sh = {0, 0, 0};
    ANVIL_TRY(sm_shape_of(s, name, &sh));
    if (sh.outer * sh.D * sh.inner == 0)
        return ANVIL_OK;
    const float *dy = (const float *)s->in[0], *y = (const float *)s->in[1];
    float *dx = (float *)s->out;
    if (sh.inner == 1 && sh.D >= LONG_ROW)
        softmax_bwd_rows<256, LOG><<<anvil_cuda_blocks(sh.outer, 1, 65535u * 4), 256, 0, c->stream>>>(
            dy, y, dx, sh.outer, sh.D);
    else if (sh.inner == 1)
        softmax_bwd_rows<32, LOG><<<anvil_cuda_blocks(sh.outer, 8, 65535u * 4), 256, 0, c->stream>>>(
            dy, y, dx, sh.outer, sh.D);
    else
        softmax_bwd_lines<LOG><<<anvil_cuda_blocks(sh.outer * sh.inner, ANVIL_CUDA_THREADS),
                                 ANVIL_CUDA_THREADS, 0, c->stream>>>(dy, y, dx, sh.outer, sh.D,
                                                                    sh.inner);
    return anvil_cuda_launched(c, name);
}

ANVIL_CUDA_KERNEL(softmax) { return sm_fwd<false>(ex, s); }
ANVIL_CUDA_KERNEL(log_softmax) { return sm_fwd<true>(ex, s); }
ANVIL_CUDA_KERNEL(softmax_bwd) { return sm_bwd<false>(ex, s); }
ANVIL_CUDA_KERNEL(log_softmax_bwd) { return sm_bwd<true>(ex, s); }
