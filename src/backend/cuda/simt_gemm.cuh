/* simt_gemm.cuh — Anvil's own fp32 matrix product for the small shapes of a training step
 * (a batch of 128 rows, a few hundred features), where cuBLASLt's fp32 kernels keep only a
 * few SMs busy: small tiles, the K dimension split over up to 16 blocks per tile, and the
 * split partial sums added in a fixed order (so results are the same on every run) by the
 * last block of each tile to finish, which also applies the epilogue.  Same operands and
 * epilogue as matmul.cu's cuBLASLt path; column-major like cuBLAS:
 *
 *   D[m,n] = act(op(A)[m,k] op(B)[k,n] + beta D + bias[m]) (* (mask > 0))
 *   (and, with rowsum, an extra output rowsum[j] = sum_k op(B)[k,j])
 *
 * Self-contained (CUDA runtime only) so that bench/simt_gemm.cu times the same code. */
#ifndef ANVIL_SIMT_GEMM_CUH
#define ANVIL_SIMT_GEMM_CUH

#include <cuda_runtime.h>
#include "pdl.cuh"
#include <stdint.h>

#define ANVIL_SIMT_THREADS 256
#define ANVIL_SIMT_BK 16
#define ANVIL_SIMT_MAX_SPLITS 16
#ifndef ANVIL_SIMT_COUNTERS
#define ANVIL_SIMT_COUNTERS 4096 /* tile counters per stream (each back to 0 after a product) */
#endif

typedef struct {
    bool ta, tb;            /* op(A) = A^T, op(B) = B^T */
    int m, n, k;
    const float *A;
    int lda;
    const float *B;
    int ldb;
    float *D;
    int ldd;
    float beta;             /* D = ... + beta D (0: D is not read) */
    const float *bias;      /* [m] or NULL */
    int act;                /* 0 none, 1 relu, 2 gelu (tanh approximation) */
    const float *mask;      /* [m,n] with ld ldd, or NULL: D = 0 where mask <= 0 (ReLU backward) */
    float *rowsum;          /* [n] or NULL: sum over k of op(B)[k, j] (a bias gradient) */
} anvil_simt_gemm;

/* Tile shapes: BM x BN outputs per block, TM x TN per thread. */
enum { ANVIL_SIMT_64x64, ANVIL_SIMT_32x64, ANVIL_SIMT_64x32, ANVIL_SIMT_32x32, ANVIL_SIMT_128x64, ANVIL_SIMT_NCFG };

typedef struct {
    int cfg, splits;
} anvil_simt_plan;

static __device__ __forceinline__ float anvil_simt_act(float v, int act)
{
    if (act == 1)
        return v > 0.0f ? v : 0.0f;
    if (act == 2)
        return 0.5f * v * (1.0f + tanhf(0.79788456080286535588f * (v + 0.044715f * v * v * v)));
    return v;
}

/* The epilogue, for output (i, j) with sum v. */
static __device__ __forceinline__ void anvil_simt_finish(const anvil_simt_gemm &g, int i, int j, float v)
{
    if (i < g.m) {
        int64_t o = i + (int64_t)j * g.ldd;
        if (g.beta != 0.0f)
            v += g.beta * g.D[o];
        if (g.bias)
            v += g.bias[i];
        v = anvil_simt_act(v, g.act);
        if (g.mask && !(g.mask[o] > 0.0f))
            v = 0.0f;
        g.D[o] = v;
    } else if (i == g.m && g.rowsum) {
        g.rowsum[j] = v;
    }
}

/* Where a block's operand tiles come from.  A source fills the thread's RA values of the
 * A tile (BK x BM, As[kk][i]) and RB of the B tile (BK x BN, Bs[kk][j]) for the K range
 * [k0, k0 + BK) clipped to ke, zeros outside; prepare() runs once per thread first.
 * dense_src: matrices in memory, op(A) op(B) as cuBLAS describes them, and a row of ones
 * at i == m when rowsum is asked for.  The thread-to-element map follows the operand's
 * contiguous index, so that a warp's loads are coalesced. */
template <int BM, int BN, bool TA, bool TB>
struct anvil_simt_dense_src {
    static constexpr int BK = ANVIL_SIMT_BK, NT = ANVIL_SIMT_THREADS, RA = BK * BM / NT, RB = BK * BN / NT;
    const float *A, *B;
    int lda, ldb, m, n, ones_row;
    __device__ void prepare(int, int, int) {}
    __device__ void a_at(int tid, int r, int *i, int *kk) const
    {
        if (TA) { /* A(i,kk) = A[kk + i lda]: contiguous along kk */
            *kk = tid % BK;
            *i = tid / BK + r * (NT / BK);
        } else { /* A(i,kk) = A[i + kk lda]: contiguous along i */
            *i = tid % BM;
            *kk = tid / BM + r * (NT / BM);
        }
    }
    __device__ void b_at(int tid, int r, int *kk, int *j) const
    {
        if (TB) { /* B(kk,j) = B[j + kk ldb]: contiguous along j */
            *j = tid % BN;
            *kk = tid / BN + r * (NT / BN);
        } else { /* B(kk,j) = B[kk + j ldb]: contiguous along kk */
            *kk = tid % BK;
            *j = tid / BK + r * (NT / BK);
        }
    }
    __device__ void load(int tid, int i0, int j0, int k0, int ke, float *ra, float *rb) const
    {
#pragma unroll
        for (int r = 0; r < RA; r++) {
            int i, kk;
            a_at(tid, r, &i, &kk);
            int gi = i0 + i, gk = k0 + kk;
            float v = 0.0f;
            if (gk < ke && gi < m)
                v = TA ? A[(int64_t)gi * lda + gk] : A[gi + (int64_t)gk * lda];
            else if (gk < ke && gi == m && ones_row)
                v = 1.0f;
            ra[r] = v;
        }
#pragma unroll
        for (int r = 0; r < RB; r++) {
            int kk, j;
            b_at(tid, r, &kk, &j);
            int gj = j0 + j, gk = k0 + kk;
            rb[r] = gk < ke && gj < n ? (TB ? B[gj + (int64_t)gk * ldb] : B[gk + (int64_t)gj * ldb]) : 0.0f;
        }
    }
    __device__ void finish(const anvil_simt_gemm &g, int i, int j, float v) const { anvil_simt_finish(g, i, j, v); }
};

/* conv_wgrad_src: a convolution's weight gradient as an implicit product, nothing staged.
 * For x [N,C,H,W], dy [N,O,OH,OW], w [O,C,kh,kw] (ungrouped): the column-major result
 * [C*kh*kw, O] (row-major dW [O, C*kh*kw]) = A B with A(tap, pos) = x at the tap's input
 * position for output position pos = (n, oh, ow), B(pos, o) = dy[n, o, oh, ow]; K = N*OH*OW.
 * Both are contiguous along the positions, so the K index is the fast one; a thread's
 * taps and channels are fixed, so their offsets are computed once (prepare). */
template <int BM, int BN>
struct anvil_simt_conv_wgrad_src {
    static constexpr int BK = ANVIL_SIMT_BK, NT = ANVIL_SIMT_THREADS, RA = BK * BM / NT, RB = BK * BN / NT;
    const float *x, *dy;
    int C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw;
    int xoff[RA], hoff[RA], woff[RA]; /* per tap; xoff < 0: past the last tap */
    int yoff[RB];                     /* per output channel; < 0: past the last */
    __device__ void prepare(int tid, int i0, int j0)
    {
        const int taps = C * kh * kw;
#pragma unroll
        for (int r = 0; r < RA; r++) {
            int t = i0 + tid / BK + r * (NT / BK);
            int c = t / (kh * kw), q = t - c * (kh * kw), ki = q / kw, kj = q - ki * kw;
            xoff[r] = t < taps ? c * H * W : -1;
            hoff[r] = ki * dh - ph;
            woff[r] = kj * dw - pw;
        }
#pragma unroll
        for (int r = 0; r < RB; r++) {
            int o = j0 + tid / BK + r * (NT / BK);
            yoff[r] = o < O ? o * OH * OW : -1;
        }
    }
    __device__ void a_at(int tid, int r, int *i, int *kk) const
    {
        *kk = tid % BK;
        *i = tid / BK + r * (NT / BK);
    }
    __device__ void b_at(int tid, int r, int *kk, int *j) const
    {
        *kk = tid % BK;
        *j = tid / BK + r * (NT / BK);
    }
    __device__ void load(int tid, int, int, int k0, int ke, float *ra, float *rb) const
    {
        int pos = k0 + tid % BK, hw = OH * OW;
        bool in = pos < ke;
        int n = in ? pos / hw : 0, p = pos - n * hw, oh = p / OW, ow = p - oh * OW;
        const float *xn = x + (int64_t)n * C * H * W;
        const float *dyn = dy + (int64_t)n * O * hw + p;
#pragma unroll
        for (int r = 0; r < RA; r++) {
            int h = oh * sh + hoff[r], w = ow * sw + woff[r];
            ra[r] = in && xoff[r] >= 0 && h >= 0 && h < H && w >= 0 && w < W ? xn[xoff[r] + h * W + w] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < RB; r++)
            rb[r] = in && yoff[r] >= 0 ? dyn[yoff[r]] : 0.0f;
    }
    __device__ void finish(const anvil_simt_gemm &g, int i, int j, float v) const { anvil_simt_finish(g, i, j, v); }
};

/* One block: the tile (blockIdx.x over m, blockIdx.y over n) of split blockIdx.z.  With
 * several splits, each parks its partial tile in ws ([split][tile][thread][TM*TN]); with
 * counters the tile's last block adds them in split order and finishes; without, the
 * separate anvil_simt_reduce_kernel does (for many splits, where one block per tile would
 * read too much). */
template <int BM, int BN, int TM, int TN, class Src>
static __global__ void __launch_bounds__(ANVIL_SIMT_THREADS)
    anvil_simt_gemm_kernel(Src src, anvil_simt_gemm g, int kchunk, float *ws, unsigned int *counters)
{
    constexpr int BK = ANVIL_SIMT_BK, NT = ANVIL_SIMT_THREADS, RA = Src::RA, RB = Src::RB;
    static_assert((BM / TM) * (BN / TN) == NT, "one micro-tile per thread");
    static_assert(RA >= 1 && RB >= 1, "tile too small");
    __shared__ __align__(16) float As[2][BK][BM + 4];
    __shared__ __align__(16) float Bs[2][BK][BN + 4];
    __shared__ bool last_block;

    /* launched with programmatic stream serialization (pdl): nothing is read before the
     * kernel ahead has finished (a no-op otherwise) */
    anvil_pdl_gemm_wait();
    const int tid = threadIdx.x, tx = tid % (BM / TM), ty = tid / (BM / TM);
    const int i0 = blockIdx.x * BM, j0 = blockIdx.y * BN;
    const int kb = blockIdx.z * kchunk, ke = min(g.k, kb + kchunk);
    src.prepare(tid, i0, j0);

    float ra[RA], rb[RB];
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < RA; r++) {
            int i, kk;
            src.a_at(tid, r, &i, &kk);
            As[buf][kk][i] = ra[r];
        }
#pragma unroll
        for (int r = 0; r < RB; r++) {
            int kk, j;
            src.b_at(tid, r, &kk, &j);
            Bs[buf][kk][j] = rb[r];
        }
    };

    float acc[TM][TN];
#pragma unroll
    for (int a = 0; a < TM; a++)
#pragma unroll
        for (int b = 0; b < TN; b++)
            acc[a][b] = 0.0f;

    int buf = 0;
    if (kb < ke) {
        src.load(tid, i0, j0, kb, ke, ra, rb);
        store(0);
        __syncthreads();
    }
    for (int k0 = kb; k0 < ke; k0 += BK) {
        bool more = k0 + BK < ke;
        if (more)
            src.load(tid, i0, j0, k0 + BK, ke, ra, rb); /* in flight while this tile is multiplied */
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float a[TM], b[TN];
#pragma unroll
            for (int x = 0; x < TM; x++)
                a[x] = As[buf][kk][tx * TM + x];
#pragma unroll
            for (int y = 0; y < TN; y++)
                b[y] = Bs[buf][kk][ty * TN + y];
#pragma unroll
            for (int x = 0; x < TM; x++)
#pragma unroll
                for (int y = 0; y < TN; y++)
                    acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
        }
        if (more) {
            store(buf ^ 1);
            __syncthreads();
            buf ^= 1;
        }
    }

    anvil_pdl_gemm_done();
    if (gridDim.z > 1) {
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        const int64_t tiles = (int64_t)gridDim.x * gridDim.y;
        float *part = ws + ((int64_t)blockIdx.z * tiles + tile) * (BM * BN) + tid * (TM * TN);
#pragma unroll
        for (int x = 0; x < TM; x++)
#pragma unroll
            for (int y = 0; y < TN; y++)
                part[x * TN + y] = acc[x][y];
        if (!counters)
            return; /* anvil_simt_reduce_kernel finishes */
        __threadfence();
        __syncthreads();
        if (tid == 0)
            last_block = atomicAdd(&counters[tile], 1u) == gridDim.z - 1;
        __syncthreads();
        if (!last_block)
            return;
        __threadfence();
#pragma unroll
        for (int x = 0; x < TM; x++)
#pragma unroll
            for (int y = 0; y < TN; y++)
                acc[x][y] = 0.0f;
        for (int z = 0; z < (int)gridDim.z; z++) {
            const float *pz = ws + ((int64_t)z * tiles + tile) * (BM * BN) + tid * (TM * TN);
#pragma unroll
            for (int x = 0; x < TM; x++)
#pragma unroll
                for (int y = 0; y < TN; y++)
                    acc[x][y] += __ldcg(pz + x * TN + y);
        }
        if (tid == 0)
            counters[tile] = 0; /* ready for the next product (graph replays) */
    }

#pragma unroll
    for (int y = 0; y < TN; y++) {
        int j = j0 + ty * TN + y;
        if (j >= g.n)
            continue;
#pragma unroll
        for (int x = 0; x < TM; x++)
            src.finish(g, i0 + tx * TM + x, j, acc[x][y]);
    }
}

/* The split partials of anvil_simt_gemm_kernel (launched without counters) added by one
 * warp per output: lane l adds splits l, l + 32, ... in order, then the warp's fixed
 * shuffle tree; then the epilogue.  A function of the shapes only, so deterministic. */
template <int BM, int BN, int TM, int TN>
static __global__ void anvil_simt_reduce_kernel(anvil_simt_gemm g, int splits, int gx, int gy, const float *ws)
{
    const int mrows = g.rowsum ? g.m + 1 : g.m, lane = threadIdx.x & 31;
    const int64_t total = (int64_t)mrows * g.n, tiles = (int64_t)gx * gy;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t e = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); e < total; e += warps) {
        int i = (int)(e % mrows), j = (int)(e / mrows);
        int bx = i / BM, by = j / BN, li = i - bx * BM, lj = j - by * BN;
        int tid = (lj / TN) * (BM / TM) + li / TM;
        const float *p = ws + ((int64_t)by * gx + bx) * (BM * BN) + tid * (TM * TN) + (li % TM) * TN + lj % TN;
        float v = 0.0f;
        for (int z = lane; z < splits; z += 32)
            v += p[(int64_t)z * tiles * (BM * BN)];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0)
            anvil_simt_finish(g, i, j, v);
    }
}

static inline void anvil_simt_tile(int cfg, int *bm, int *bn)
{
    static const int t[ANVIL_SIMT_NCFG][2] = {{64, 64}, {32, 64}, {64, 32}, {32, 32}, {128, 64}};
    *bm = t[cfg][0];
    *bn = t[cfg][1];
}

/* Bytes of split partials a plan needs. */
static inline size_t anvil_simt_ws_bytes(const anvil_simt_gemm *g, anvil_simt_plan p)
{
    int bm, bn;
    anvil_simt_tile(p.cfg, &bm, &bn);
    int mrows = g->rowsum ? g->m + 1 : g->m;
    size_t tiles = (size_t)((mrows + bm - 1) / bm) * (size_t)((g->n + bn - 1) / bn);
    return p.splits > 1 ? tiles * (size_t)p.splits * (size_t)(bm * bn) * sizeof(float) : 0;
}

/* The plan Anvil uses: a tile shape and split count from the shape alone (so a product is
 * computed the same way every time on a given GPU), aiming at about two blocks per SM with
 * at least 32 of K and at most 8 splits.  Tuned on the H200 with bench/simt_gemm.cu. */
static inline anvil_simt_plan anvil_simt_choose(int m, int n, int k, int sm_count)
{
    anvil_simt_plan p;
    int64_t t64 = (int64_t)((m + 63) / 64) * ((n + 63) / 64);
    p.cfg = t64 >= sm_count ? ANVIL_SIMT_64x64 : (t64 * 4 <= sm_count ? ANVIL_SIMT_32x32 : ANVIL_SIMT_64x64);
    int bm, bn;
    anvil_simt_tile(p.cfg, &bm, &bn);
    int64_t tiles = (int64_t)((m + bm - 1) / bm) * ((n + bn - 1) / bn);
    int64_t want = (2 * (int64_t)sm_count + tiles - 1) / tiles;
    int64_t kmax = (k + 31) / 32;
    if (want > kmax)
        want = kmax;
    if (want > 8)
        want = 8;
    p.splits = want < 1 ? 1 : (int)want;
    return p;
}

template <int BM, int BN, int TM, int TN, class Src>
static cudaError_t anvil_simt_launch_src(const Src &src, const anvil_simt_gemm *g, int splits, float *ws,
                                         unsigned int *counters, cudaStream_t st, bool pdl)
{
    int mrows = g->rowsum ? g->m + 1 : g->m;
    dim3 grid((unsigned)((mrows + BM - 1) / BM), (unsigned)((g->n + BN - 1) / BN), (unsigned)splits);
    int chunk = (g->k + splits - 1) / splits;
    chunk = (chunk + ANVIL_SIMT_BK - 1) / ANVIL_SIMT_BK * ANVIL_SIMT_BK;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(ANVIL_SIMT_THREADS, 1, 1);
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, anvil_simt_gemm_kernel<BM, BN, TM, TN, Src>, src, *g, chunk, ws, counters);
    if (e != cudaSuccess)
        return e;
    if (splits > 1 && !counters) {
        int64_t total = (int64_t)mrows * g->n, blocks = (total * 32 + 255) / 256;
        anvil_simt_reduce_kernel<BM, BN, TM, TN><<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
            *g, splits, (int)grid.x, (int)grid.y, ws);
    }
    return cudaGetLastError();
}

template <int BM, int BN, int TM, int TN>
static cudaError_t anvil_simt_launch_t(const anvil_simt_gemm *g, int splits, float *ws, unsigned int *counters,
                                       cudaStream_t st, bool pdl)
{
#define ANVIL_SIMT_DENSE(ta, tb)                                                                          \
    anvil_simt_launch_src<BM, BN, TM, TN>(                                                                \
        anvil_simt_dense_src<BM, BN, ta, tb>{g->A, g->B, g->lda, g->ldb, g->m, g->n, g->rowsum != NULL}, g, \
        splits, ws, counters, st, pdl)
    if (!g->ta && !g->tb)
        return ANVIL_SIMT_DENSE(false, false);
    if (!g->ta && g->tb)
        return ANVIL_SIMT_DENSE(false, true);
    if (g->ta && !g->tb)
        return ANVIL_SIMT_DENSE(true, false);
    return ANVIL_SIMT_DENSE(true, true);
#undef ANVIL_SIMT_DENSE
}

/* Launches g with plan p on st.  ws: at least anvil_simt_ws_bytes(g, p) bytes; counters:
 * ANVIL_SIMT_COUNTERS zeros, not used concurrently by another product.  The caller checks
 * that the tile count fits the counters and that p.splits <= ANVIL_SIMT_MAX_SPLITS.  pdl:
 * with programmatic stream serialization (the kernel waits for the one ahead first). */
static inline cudaError_t anvil_simt_launch(const anvil_simt_gemm *g, anvil_simt_plan p, float *ws,
                                            unsigned int *counters, cudaStream_t st, bool pdl = false)
{
    switch (p.cfg) {
    case ANVIL_SIMT_64x64: return anvil_simt_launch_t<64, 64, 4, 4>(g, p.splits, ws, counters, st, pdl);
    case ANVIL_SIMT_32x64: return anvil_simt_launch_t<32, 64, 2, 4>(g, p.splits, ws, counters, st, pdl);
    case ANVIL_SIMT_64x32: return anvil_simt_launch_t<64, 32, 4, 2>(g, p.splits, ws, counters, st, pdl);
    case ANVIL_SIMT_32x32: return anvil_simt_launch_t<32, 32, 2, 2>(g, p.splits, ws, counters, st, pdl);
    default: return anvil_simt_launch_t<128, 64, 8, 4>(g, p.splits, ws, counters, st, pdl);
    }
}

#endif
