/* chansum.cu — per-channel sums over an NC(S) tensor, the reduction under batch norm's
 * statistics and gradients and a convolution's bias gradient: for each channel c of
 * x [N, C, S] (S = the product of the dims after C; 1 for [N, C]), in double,
 *   sums[c] = { sum x, sum x^2, sum dy, sum dy x }   (the ones asked for; others 0).
 * Deterministic and parallel: a fixed grid (a function of the shape only) of blocks, one
 * per (channel, slice of the batch), each adding its slice with a fixed block tree into
 * the lane's scratch; then one thread per channel adds the slices in order.  One sweep
 * reads x and dy once: moments come from raw sums (var = E[x^2] - mean^2 in double, which
 * for float data loses nothing a float result keeps unless |mean| / std > ~1e4). */
#include "backend/cuda/cuda_internal.h"

#define CS_THREADS 256
#define CS_TARGET_BLOCKS 1024     /* enough blocks to fill an H100/H200 several times */
#define CS_MIN_PER_BLOCK 4096     /* values per block below which slicing does not pay */

typedef struct {
    double sx, sxx, sd, sdx;
} chan_acc;

static __device__ __forceinline__ void chan_add(chan_acc &a, float xv, float gv, int what)
{
    if (what & ANVIL_CHAN_X) {
        double v = (double)xv;
        a.sx += v;
        a.sxx += v * v;
        if (what & ANVIL_CHAN_DY) {
            double g = (double)gv;
            a.sd += g;
            a.sdx += g * v;
        }
    } else {
        a.sd += (double)gv;
    }
}

/* V values per load: 4 (float4) when a plane's length S is a multiple of 4 and the
 * tensors are 16-byte aligned, which keeps enough bytes in flight to stream at HBM
 * speed (one float per load left the sweep at about half of it). */
template <typename I, int V>
static __global__ void chan_partials(const float *__restrict__ x, const float *__restrict__ dy, I N, I C, I S,
                                     I P, int what, double *part)
{
    __shared__ double sh[32];
    I SV = S / V; /* vectors per (n, c) plane */
    for (I c = blockIdx.y; c < C; c += gridDim.y) {
        I p = blockIdx.x;
        I n0 = N * p / P, n1 = N * (p + 1) / P, cnt = (n1 - n0) * SV;
        chan_acc a = {0.0, 0.0, 0.0, 0.0};
#pragma unroll 4
        for (I i = threadIdx.x; i < cnt; i += blockDim.x) {
            I q = i / SV;
            I o = ((n0 + q) * C + c) * SV + (i - q * SV);
            if (V == 4) {
                float4 xv = make_float4(0.f, 0.f, 0.f, 0.f), gv = xv;
                if (what & ANVIL_CHAN_X)
                    xv = reinterpret_cast<const float4 *>(x)[o];
                if (what & ANVIL_CHAN_DY)
                    gv = reinterpret_cast<const float4 *>(dy)[o];
                chan_add(a, xv.x, gv.x, what);
                chan_add(a, xv.y, gv.y, what);
                chan_add(a, xv.z, gv.z, what);
                chan_add(a, xv.w, gv.w, what);
            } else {
                chan_add(a, (what & ANVIL_CHAN_X) ? x[o] : 0.0f, (what & ANVIL_CHAN_DY) ? dy[o] : 0.0f, what);
            }
        }
        double *q = part + ((size_t)c * P + p) * 4;
        if (what & ANVIL_CHAN_X) {
            a.sx = anvil_cuda_block_sum(a.sx, sh);
            a.sxx = anvil_cuda_block_sum(a.sxx, sh);
        }
        if (what & ANVIL_CHAN_DY)
            a.sd = anvil_cuda_block_sum(a.sd, sh);
        if ((what & ANVIL_CHAN_X) && (what & ANVIL_CHAN_DY))
            a.sdx = anvil_cuda_block_sum(a.sdx, sh);
        if (threadIdx.x == 0) {
            q[0] = a.sx;
            q[1] = a.sxx;
            q[2] = a.sd;
            q[3] = a.sdx;
        }
    }
}

template <typename I>
static void launch_partials(cudaStream_t st, dim3 grid, const float *x, const float *dy, I N, I C, I S, I P,
                            int what, double *part)
{
    bool vec = S % 4 == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)dy & 15) == 0;
    if (vec)
        chan_partials<I, 4><<<grid, CS_THREADS, 0, st>>>(x, dy, N, C, S, P, what, part);
    else
        chan_partials<I, 1><<<grid, CS_THREADS, 0, st>>>(x, dy, N, C, S, P, what, part);
}

/* sums[c * 4 + k] = the slices' partials in order */
static __global__ void chan_finish(const double *part, int64_t C, int64_t P, double *sums)
{
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < C * 4; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = e >> 2, k = e & 3;
        double acc = 0.0;
        for (int64_t p = 0; p < P; p++)
            acc += part[(c * P + p) * 4 + k];
        sums[e] = acc;
    }
}

extern "C" anvil_status anvil_cuda_chan_sums(anvil_cuda_ctx *c, const float *x, const float *dy, int64_t N,
                                             int64_t C, int64_t S, int what, const char *op, double **sums)
{
    size_t cap = ANVIL_CUDA_SCRATCH_FLOATS / 2; /* doubles */
    if ((size_t)C * 10 > cap) /* the slices' partials, the sums, and room for 4 floats per channel after them */
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "%s: %lld channels exceed the CUDA reduction scratch (%zu)", op,
                          (long long)C, cap / 10);
    int64_t P = (CS_TARGET_BLOCKS + C - 1) / C;
    int64_t by_size = N * S / CS_MIN_PER_BLOCK;
    if (P > by_size)
        P = by_size;
    if (P > N)
        P = N;
    if ((size_t)(C * (P + 1) * 4 + C * 2) > cap)
        P = (int64_t)((cap - 2 * (size_t)C) / 4 / (size_t)C) - 1;
    if (P < 1)
        P = 1;
    double *part = (double *)c->scratch, *out = part + C * P * 4;
    dim3 grid((unsigned int)P, (unsigned int)(C < 65535 ? C : 65535));
    if (N * C * S < ((int64_t)1 << 31))
        launch_partials<uint32_t>(c->stream, grid, x, dy, (uint32_t)N, (uint32_t)C, (uint32_t)S, (uint32_t)P, what,
                                  part);
    else
        launch_partials<uint64_t>(c->stream, grid, x, dy, (uint64_t)N, (uint64_t)C, (uint64_t)S, (uint64_t)P, what,
                                  part);
    ANVIL_TRY(anvil_cuda_launched(c, op));
    chan_finish<<<anvil_cuda_blocks(C * 4, CS_THREADS), CS_THREADS, 0, c->stream>>>(part, C, P, out);
    ANVIL_TRY(anvil_cuda_launched(c, op));
    *sums = out;
    return ANVIL_OK;
}
