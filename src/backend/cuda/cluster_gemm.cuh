/* cluster_gemm.cuh — split-K fp32 products over a thread-block cluster (sm_90), for the
 * 128-row products of a training step with a long sum (the mlp's 784->512 and 512->512
 * layers, the cnn's 3136->128 layer), where a plain tiling keeps 4-16 SMs busy and a
 * split-K with partials in global memory pays a second pass or a last-block round trip.
 *
 * A cluster of cs blocks computes one 32 x 32 output tile: block r sums its own K range,
 * operands streamed into shared memory by a 3-stage cp.async ring; inside a block 4 groups
 * of 64 threads split each stage's K again (4 x 4 outputs per thread).  The partial tiles
 * stay in shared memory: each block then adds one slice of the tile over the cluster's
 * blocks through distributed shared memory, in rank order (the result is a function of
 * the shapes and the plan only: the same on every run), and applies the epilogue of
 * simt_gemm.cuh (beta, bias, ReLU or GELU, ReLU-backward mask).  No workspace, counters
 * or second kernel.
 *
 * Operands as simt_gemm.cuh describes them (column-major, cuBLAS's op(A), op(B)); 16-byte
 * copies need aligned pointers, leading dimensions and K (anvil_cluster_fits). */
#ifndef ANVIL_CLUSTER_GEMM_CUH
#define ANVIL_CLUSTER_GEMM_CUH

#include "simt_gemm.cuh"

#include <cooperative_groups.h>

#define ANVIL_CLUSTER_BKS 32   /* K per pipeline stage */
#define ANVIL_CLUSTER_STAGES 3 /* ring depth: two stages in flight while one is multiplied */
#define ANVIL_CLUSTER_MAX 8    /* the portable cluster size */

/* The tile: BM x BN outputs per block, TM x TN per thread, KG thread groups splitting each
 * stage's K; 256 threads.  Measured on the H200 (bench/simt_gemm.cu, docs/benchmarks.md)
 * against 64x64 (8x8 per thread), 64x32 and 32x64 tiles with 1-8 blocks per cluster: this
 * shape with 2 blocks per cluster was the fastest for every 128-row product tried, and
 * clusters of 8 large tiles paid several µs more than clusters of 2. */
#define ANVIL_CLUSTER_BM 32
#define ANVIL_CLUSTER_BN 32
#define ANVIL_CLUSTER_TM 4
#define ANVIL_CLUSTER_TN 4
#define ANVIL_CLUSTER_KG 4

static __device__ __forceinline__ void anvil_cluster_cp16(float *dst, const float *src, bool valid)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}

/* One operand's stage: rows (i of A, j of B) x BKS values of K.  K-contiguous operands keep
 * their layout, [row][BKS + 4] (the pad puts a quarter-warp's rows on distinct banks);
 * row-contiguous ones keep theirs, [BKS][R + 4].  Each thread reads 4 rows. */
template <int R, bool KC>
struct anvil_cluster_operand {
    static constexpr int BKS = ANVIL_CLUSTER_BKS, NT = 256;
    static constexpr int FLOATS = KC ? R * (BKS + 4) : BKS * (R + 4);
    static constexpr int V = R * BKS / 4; /* float4s per stage */
    static_assert(V % NT == 0, "whole float4s per thread");
    /* Copies rows [r0, r0 + R) x K [k0, k0 + BKS) of a matrix with rows < rows, K < ke, into
     * s; the element (row, k) sits at p[row * ld + k] (KC) or p[row + k * ld]. */
    static __device__ __forceinline__ void stage(float *s, const float *p, int ld, int r0, int rows, int k0, int ke,
                                                 int tid)
    {
#pragma unroll
        for (int it = 0; it < V / NT; it++) {
            const int v = tid + it * NT;
            int row, k;
            float *d;
            if (KC) {
                row = v / (BKS / 4);
                k = (v % (BKS / 4)) * 4;
                d = s + row * (BKS + 4) + k;
            } else {
                row = (v % (R / 4)) * 4;
                k = v / (R / 4);
                d = s + k * (R + 4) + row;
            }
            int gr = r0 + row, gk = k0 + k;
            bool ok = gr < rows && gk < ke;
            const float *src = ok ? (KC ? p + (int64_t)gr * ld + gk : p + gr + (int64_t)gk * ld) : p;
            anvil_cluster_cp16(d, src, ok);
        }
    }
    /* Row x (< 4) of thread t.  KC: t + x R/4 (a quarter-warp's rows are consecutive, on
     * distinct banks); otherwise 4t + x (consecutive threads' float4s adjacent). */
    static __device__ __forceinline__ int row(int t, int x) { return KC ? t + x * (R / 4) : 4 * t + x; }
    /* The thread's 4 rows' values at K kk..kk+3: v[x][q]. */
    static __device__ __forceinline__ void read(const float *s, int t, int kk, float v[4][4])
    {
        if (KC) {
#pragma unroll
            for (int x = 0; x < 4; x++) {
                float4 f = *reinterpret_cast<const float4 *>(s + row(t, x) * (BKS + 4) + kk);
                v[x][0] = f.x, v[x][1] = f.y, v[x][2] = f.z, v[x][3] = f.w;
            }
        } else {
#pragma unroll
            for (int q = 0; q < 4; q++) {
                float4 f = *reinterpret_cast<const float4 *>(s + (kk + q) * (R + 4) + 4 * t);
                v[0][q] = f.x, v[1][q] = f.y, v[2][q] = f.z, v[3][q] = f.w;
            }
        }
    }
};

template <int BM, int BN, int TM, int TN, int KG>
struct anvil_cluster_shape {
    static constexpr int NT = (BM / TM) * (BN / TN) * KG;
    static_assert(NT == 256, "256 threads per block");
    static_assert(ANVIL_CLUSTER_BKS % (4 * KG) == 0, "whole 4-deep steps per group");
};

/* Shared memory: the ring, then (reusing it) the KG partial tiles. */
template <int BM, int BN, int TM, int TN, int KG, bool AKC, bool BKC>
static size_t anvil_cluster_smem_bytes()
{
    size_t ring = (size_t)ANVIL_CLUSTER_STAGES *
                  (anvil_cluster_operand<BM, AKC>::FLOATS + anvil_cluster_operand<BN, BKC>::FLOATS);
    size_t red = (size_t)KG * BM * BN;
    return (ring > red ? ring : red) * sizeof(float);
}

/* Grid (tiles along m, tiles along n, cs), clusters of (1, 1, cs); kc: K per block, a
 * multiple of 4. */
template <int BM, int BN, int TM, int TN, int KG, bool AKC, bool BKC>
static __global__ void __launch_bounds__(256) anvil_cluster_gemm_kernel(anvil_simt_gemm g, int kc)
{
    namespace cg = cooperative_groups;
    static_assert(TM == 4 && TN == 4, "4 x 4 outputs per thread");
    typedef anvil_cluster_operand<BM, AKC> OA;
    typedef anvil_cluster_operand<BN, BKC> OB;
    constexpr int NT = anvil_cluster_shape<BM, BN, TM, TN, KG>::NT, BKS = ANVIL_CLUSTER_BKS;
    constexpr int S = ANVIL_CLUSTER_STAGES, KPG = BKS / KG; /* K per group per stage */
    extern __shared__ __align__(16) float smem[];
    float *ring_a = smem, *ring_b = smem + S * OA::FLOATS;

    /* launched with programmatic stream serialization (pdl): nothing is read before the
     * kernel ahead has finished (a no-op otherwise) */
    anvil_pdl_gemm_wait();
    const int tid = threadIdx.x, grp = tid / (NT / KG), lt = tid % (NT / KG);
    const int tx = lt % (BM / TM), ty = lt / (BM / TM);
    const int i0 = blockIdx.x * BM, j0 = blockIdx.y * BN;
    const int kb = blockIdx.z * kc, ke = min(g.k, kb + kc);
    const int steps = kb < ke ? (ke - kb + BKS - 1) / BKS : 0;

    auto issue = [&](int st) {
        if (st < steps) {
            int k0 = kb + st * BKS;
            OA::stage(ring_a + (st % S) * OA::FLOATS, g.A, g.lda, i0, g.m, k0, ke, tid);
            OB::stage(ring_b + (st % S) * OB::FLOATS, g.B, g.ldb, j0, g.n, k0, ke, tid);
        }
        asm volatile("cp.async.commit_group;\n" ::);
    };

    float acc[TM][TN];
#pragma unroll
    for (int x = 0; x < TM; x++)
#pragma unroll
        for (int y = 0; y < TN; y++)
            acc[x][y] = 0.0f;

#pragma unroll
    for (int st = 0; st < S - 1; st++)
        issue(st);
    for (int st = 0; st < steps; st++) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 2));
        __syncthreads(); /* stage st landed for everyone; stage st - 1's slot is free */
        issue(st + S - 1);
        const float *sa = ring_a + (st % S) * OA::FLOATS, *sb = ring_b + (st % S) * OB::FLOATS;
#pragma unroll
        for (int u = 0; u < KPG; u += 4) {
            const int kk = grp * KPG + u;
            float a[TM][4], b[TN][4];
            OA::read(sa, tx, kk, a);
            OB::read(sb, ty, kk, b);
#pragma unroll
            for (int q = 0; q < 4; q++)
#pragma unroll
                for (int y = 0; y < TN; y++)
#pragma unroll
                    for (int x = 0; x < TM; x++)
                        acc[x][y] = fmaf(a[x][q], b[y][q], acc[x][y]);
        }
    }
    anvil_pdl_gemm_done();
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads(); /* the ring is free: it becomes the partial tiles, [KG][BN][BM] */

    float *red = smem;
#pragma unroll
    for (int y = 0; y < TN; y++)
#pragma unroll
        for (int x = 0; x < TM; x++)
            red[grp * BM * BN + OB::row(ty, y) * BM + OA::row(tx, x)] = acc[x][y];
    if (KG > 1) { /* the groups' sums, in group order */
        __syncthreads();
        for (int e = 4 * tid; e < BM * BN; e += 4 * NT) {
            float4 v = *reinterpret_cast<const float4 *>(red + e);
#pragma unroll
            for (int q = 1; q < KG; q++) {
                const float4 p = *reinterpret_cast<const float4 *>(red + q * BM * BN + e);
                v.x += p.x, v.y += p.y, v.z += p.z, v.w += p.w;
            }
            *reinterpret_cast<float4 *>(red + e) = v;
        }
    }
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync(); /* every block's partial tile is complete and visible to the cluster */

    /* Block r adds columns [r BN/cs, (r+1) BN/cs) of the tile over the cluster, in rank
     * order; all of a thread's remote loads are issued before the first addition. */
    const int cs = (int)cluster.num_blocks(), r = (int)cluster.block_rank();
    const int per = BM * BN / cs;
    for (int e = r * per + 4 * tid; e < (r + 1) * per; e += 4 * NT) {
        float4 p[ANVIL_CLUSTER_MAX];
#pragma unroll
        for (int q = 0; q < ANVIL_CLUSTER_MAX; q++)
            if (q < cs)
                p[q] = *reinterpret_cast<const float4 *>(cluster.map_shared_rank(red, q) + e);
        float4 v = p[0];
#pragma unroll
        for (int q = 1; q < ANVIL_CLUSTER_MAX; q++)
            if (q < cs)
                v.x += p[q].x, v.y += p[q].y, v.z += p[q].z, v.w += p[q].w;
        int i = i0 + e % BM, j = j0 + e / BM;
        if (j < g.n) {
            anvil_simt_finish(g, i, j, v.x);
            anvil_simt_finish(g, i + 1, j, v.y);
            anvil_simt_finish(g, i + 2, j, v.z);
            anvil_simt_finish(g, i + 3, j, v.w);
        }
    }
    /* The other blocks may still be reading this one's tile; no memory ordering is needed
     * past this point, so the arrive is relaxed (no fence). */
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::);
    asm volatile("barrier.cluster.wait.aligned;\n" ::);
}

/* Whether g can take this path: no row sum, 16-byte aligned operands, K and the
 * contiguous extents in whole float4s. */
static inline bool anvil_cluster_fits(const anvil_simt_gemm *g)
{
    bool akc = g->ta, bkc = !g->tb;
    return !g->rowsum && g->k > 0 && g->k % 4 == 0 && ((uintptr_t)g->A & 15) == 0 &&
           ((uintptr_t)g->B & 15) == 0 && g->lda % 4 == 0 && g->ldb % 4 == 0 && (akc || g->m % 4 == 0) &&
           (bkc || g->n % 4 == 0);
}

/* Blocks per cluster from the shape alone (so a product is computed the same way every
 * time on a given GPU): the largest power of two <= 8 whose blocks fit one wave and leave
 * each block at least 32 of K; 0 when not even 2 do (the product is not one for this
 * path: enough tiles already, or too short a sum) and for sums over more than 4096 terms
 * (a convolution's 288 x 64 weight gradient over 25088 positions took 63 µs here against
 * cuBLASLt's 46: its deeper split wins there). */
static inline int anvil_cluster_choose(int m, int n, int k, int sm_count)
{
    if (k > 4096)
        return 0;
    int64_t tiles = (int64_t)((m + ANVIL_CLUSTER_BM - 1) / ANVIL_CLUSTER_BM) *
                    ((n + ANVIL_CLUSTER_BN - 1) / ANVIL_CLUSTER_BN);
    int cs = 1;
    while (cs < ANVIL_CLUSTER_MAX && tiles * cs * 2 <= sm_count && (int64_t)k >= (int64_t)cs * 2 * 32)
        cs *= 2;
    return cs >= 2 ? cs : 0;
}

template <int BM, int BN, int TM, int TN, int KG, bool AKC, bool BKC>
static cudaError_t anvil_cluster_launch_t(const anvil_simt_gemm *g, int cs, cudaStream_t st, bool pdl)
{
    auto kern = anvil_cluster_gemm_kernel<BM, BN, TM, TN, KG, AKC, BKC>;
    const size_t smem = anvil_cluster_smem_bytes<BM, BN, TM, TN, KG, AKC, BKC>();
    static unsigned long long attr_set = 0; /* per instantiation, a bit per device */
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess)
        return e;
    unsigned long long bit = dev < 64 ? 1ull << dev : 0;
    if (!(attr_set & bit)) {
        e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return e;
        attr_set |= bit;
    }
    int kc = (g->k + cs - 1) / cs;
    kc = (kc + 3) / 4 * 4;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((g->m + BM - 1) / BM), (unsigned)((g->n + BN - 1) / BN), (unsigned)cs);
    cfg.blockDim = dim3(256, 1, 1);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = (unsigned)cs;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 2 : 1;
    return cudaLaunchKernelEx(&cfg, kern, *g, kc);
}

/* Launches g (anvil_cluster_fits) as clusters of cs (1, 2, 4 or 8) blocks on st; pdl: with
 * programmatic stream serialization (the kernel waits for the one ahead before reading). */
static inline cudaError_t anvil_cluster_launch(const anvil_simt_gemm *g, int cs, cudaStream_t st, bool pdl = false)
{
#define ANVIL_CLUSTER_L(akc, bkc)                                                                           \
    anvil_cluster_launch_t<ANVIL_CLUSTER_BM, ANVIL_CLUSTER_BN, ANVIL_CLUSTER_TM, ANVIL_CLUSTER_TN, ANVIL_CLUSTER_KG, \
                           akc, bkc>(g, cs, st, pdl)
    bool akc = g->ta, bkc = !g->tb;
    if (akc && bkc)
        return ANVIL_CLUSTER_L(true, true);
    if (akc)
        return ANVIL_CLUSTER_L(true, false);
    if (bkc)
        return ANVIL_CLUSTER_L(false, true);
    return ANVIL_CLUSTER_L(false, false);
#undef ANVIL_CLUSTER_L
}

#endif
