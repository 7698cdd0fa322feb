/* conv_tiles.cu — the backward passes of 3x3 "same" convolutions (stride 1, padding 1,
 * undilated, ungrouped) with few channels, in register tiles (conv_tiles.h says when
 * conv.cu calls them).  On the cnn's second layer (32 -> 64 channels, 14x14, batch 128;
 * H200) they replace cuDNN's data gradient (42 µs) and Anvil's implicit-product weight
 * gradient, whose two lanes run side by side after the pool's backward: step 0.2535 ->
 * 0.2417 ms.
 *
 * Data gradient: dx = the forward convolution of dy with each kernel rotated by 180
 * degrees and the channel roles swapped (dy's O channels in, x's C out).  A block takes one
 * sample, a band of R rows and OB of the C output channels; each thread owns PW
 * consecutive positions of one row x 8 channels (PW*8 sums in registers).  Everything a
 * block reads is staged in shared memory once, before the sums are live: the band's dy
 * rows with a zero border (no bounds tests in the inner loop) and the weights as
 * [channel][tap][OB] (two 16-byte loads give a thread its 8 channels' weight).  Per input
 * channel and kernel row a thread loads PW+2 values and 6 float4 weights for 24*PW
 * multiply-adds; KS groups of threads take disjoint ranges of the input channels (more
 * warps for the same registers per sum) and their sums are added in group order in the
 * epilogue, which goes through shared memory so that dx's stores are coalesced.
 *
 * The same kernel as the layer's forward (weights unrotated, bias and ReLU in the
 * epilogue) took 46 µs where cuDNN's forward and the bias+ReLU pass take 37.5 + 5.3, and
 * made the step 12 µs slower: the forward stays on cuDNN.
 *
 * Weight gradient: a block takes whole samples; each thread owns 8 output channels x the
 * 9 taps of one input channel (72 sums) over a range of rows, with dy staged transposed
 * ([position][channel]: a warp of 32 input channels reads its 8 dy values as two
 * broadcast float4s) and x with a zero border, the 3x3 window slid along each row (3 new
 * inputs per position).  Row ranges of a block are added in range order, the blocks'
 * partials by conv.cu's ordered sum: deterministic, a function of the shapes only.
 *
 * ANVIL_CONV_TILES: a bit mask of the passes that use them (1 data gradient, 2 weight
 * gradient; default 3, 0 none, for A/B measurements); ANVIL_SIMT_GEMM=0 clears it. */
#include "backend/cuda/conv_tiles.h"

#include <stdlib.h>
#include <string.h>

#define CT_TO 8                 /* output channels per thread */
#define CT_THREADS 448          /* most threads of a data-gradient block (one block per SM) */
#define CT_SMEM_FLOATS 51200    /* 200 KB of staged inputs per block at most (less where the device allows less) */
#define CT_MAX_CHANNELS 64      /* layers with more use cuDNN's Winograd (conv.cu) */
#define CT_MIN_CHANNELS 8       /* fewer: too little work per block (ResNet's 3-channel stem keeps its paths) */
#define CW_THREADS 512          /* most threads of a weight-gradient block */

enum { CT_DGRAD = 1, CT_WGRAD = 2 };

static bool tiles_on(int pass)
{
    static int mask = -1;
    if (mask < 0) {
        const char *e = getenv("ANVIL_CONV_TILES");
        mask = anvil_cuda_simt_mode() == 0 ? 0 : e && *e ? (int)strtol(e, NULL, 0) : CT_DGRAD | CT_WGRAD;
    }
    return (mask & pass) != 0;
}

/* Stages input rows r0-1 .. r0+rows-2 of C channels of one sample (planes p0 .. p0+C-1 of
 * x [.., H, W]) with a zero border: channel c's row ri at dst + c*CSTR + ri*XS, columns
 * -1 .. W.  Each thread walks its elements by additions and carries (divisions and
 * 64-bit index products cost ~50 instructions per staged float; this ~20). */
static __device__ __forceinline__ void stage_rows(float *dst, const float *x, int64_t p0, int C, int H, int W, int r0,
                                                  int rows, int XS, int CSTR, int tid, int nt)
{
    const int cols = W + 2, db = nt / cols, da = nt - db * cols, dc = db / rows, dr = db - dc * rows;
    int b = tid / cols, a = tid - b * cols, c = b / rows, ri = b - c * rows;
    /* offsets of element (c, ri, a): source (c*H + r0-1 + ri)*W + a-1 from plane p0, staged c*CSTR + ri*XS + a */
    const int64_t HW = (int64_t)H * W;
    const float *src = x + (p0 * H + r0 - 1) * W - 1 + c * HW + (int64_t)ri * W + a;
    int d = c * CSTR + ri * XS + a;
    const int64_t s_step = dc * HW + (int64_t)dr * W + da, s_wrap_a = W - cols, s_wrap_r = HW - (int64_t)rows * W;
    const int d_step = dc * CSTR + dr * XS + da, d_wrap_a = XS - cols, d_wrap_r = CSTR - rows * XS;
    while (c < C) {
        const bool ok = (unsigned)(r0 - 1 + ri) < (unsigned)H && (unsigned)(a - 1) < (unsigned)W;
        anvil_cp_async4(dst + d, ok ? src : x, ok);
        a += da, ri += dr, c += dc, src += s_step, d += d_step;
        if (a >= cols)
            a -= cols, ri++, src += s_wrap_a, d += d_wrap_a;
        if (ri >= rows)
            ri -= rows, c++, src += s_wrap_r, d += d_wrap_r;
    }
}

/* ------------------------------------------------------------------ data gradient */

/* Cin: dy's channels (the layer's O), Cout: dx's (the layer's C); w [Cin][Cout][3][3] */
typedef struct {
    int N, Cin, Cout, H, W;
    int R, bands, S, G, OB, ogroups; /* rows per band, PW-segments per row, 8-channel groups per block */
    int tile, cpg;                   /* R*S*G: the threads of one channel group; its input channels */
    int XS, CSTR, XCH, YS;           /* dy row and channel strides, dy's floats, dx tile stride */
} ct_geom;

/* One block per SM: everything the block reads is staged once, before the sums are live
 * (staging inside the loop, with the 56 sums live, ran out of registers and recomputed
 * its addresses: 50 instructions per staged float).  KS groups of `tile` threads each
 * take cpg of the input channels (more warps for the same registers per sum); their sums
 * are added in group order. */
/* 16 bytes global -> shared (cp.async, sm_80+) */
static __device__ __forceinline__ void ct_cp_async16(float *dst, const float *src)
{
    unsigned int d = (unsigned int)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}

/* WL: the staged weights' layout.  0: [c][tap][j] (a thread's 8 channels in two float4
 * loads; each float staged by its own cp.async with index arithmetic); 1: global order
 * [c][j][tap] (runs of OB*9 floats staged 16 bytes at a time; 8 scalar loads a tap). */
template <int PW, int KS, int WL>
static __global__ void __launch_bounds__(CT_THREADS, 1) ct_dgrad(ct_geom q, const float *__restrict__ x,
                                                                 const float *__restrict__ w, float *y)
{ /* x: dy [N][Cin][H][W], y: dx [N][Cout][H][W] */
    extern __shared__ __align__(16) float sm[];
    const int tid = threadIdx.x, nt = blockDim.x;
    const int og = blockIdx.x % q.ogroups, band = (blockIdx.x / q.ogroups) % q.bands;
    const int n = blockIdx.x / (q.ogroups * q.bands);
    const int o0 = og * q.OB, r0 = band * q.R;
    if (WL == 1) {
        stage_rows(sm, x, (int64_t)n * q.Cin, q.Cin, q.H, q.W, r0, q.R + 2, q.XS, q.CSTR, tid, nt);
        float *ws = sm + q.XCH;
        const int run4 = q.OB * 9 / 4; /* float4s of one input channel's run */
        const float *src = w + (int64_t)o0 * 9;
        for (int e = tid; e < q.Cin * run4; e += nt) {
            const int c = e / run4, r = e - c * run4;
            ct_cp_async16(ws + c * q.OB * 9 + r * 4, src + (int64_t)c * q.Cout * 9 + r * 4);
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
    } else {
        stage_rows(sm, x, (int64_t)n * q.Cin, q.Cin, q.H, q.W, r0, q.R + 2, q.XS, q.CSTR, tid, nt);
        /* w [Cin][Cout][9], read in order (Cin runs of OB*9 from o0), staged as [c][tap][j]:
         * element (c, j, t) at (c*9 + 8-t)*OB + j (tap t of the rotated kernel at 8 - t) */
        float *ws = sm + q.XCH;
        const int B9 = q.OB * 9, dc = nt / B9, dm = nt - dc * B9, dj = dm / 9, dt = dm - dj * 9;
        const int64_t C9 = (int64_t)q.Cout * 9;
        int c = tid / B9, m = tid - c * B9, j = m / 9, t = m - j * 9;
        const float *src = w + (int64_t)o0 * 9 + c * C9 + m;
        const int64_t s_step = dc * C9 + dm, s_wrap = C9 - B9;
        while (c < q.Cin) {
            anvil_cp_async4(ws + (c * 9 + 8 - t) * q.OB + j, src, true);
            t += dt, j += dj, c += dc, src += s_step;
            if (t >= 9)
                t -= 9, j++;
            if (j >= q.OB)
                j -= q.OB, c++, src += s_wrap;
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
    }
    __syncthreads();

    const int kg = tid / q.tile, tt = tid - kg * q.tile;
    const int g = tt % q.G, seg = tt / q.G, r = seg / q.S, s = seg - r * q.S;
    const int c0 = kg * q.cpg, c1 = min(q.Cin, c0 + q.cpg);
    float acc[CT_TO][PW];
#pragma unroll
    for (int k = 0; k < CT_TO; k++)
#pragma unroll
        for (int i = 0; i < PW; i++)
            acc[k][i] = 0.0f;
    {
        const int ob4 = q.OB / 4;
        const float *xb = sm + c0 * q.CSTR + r * q.XS + s * PW;
        const float4 *wb = reinterpret_cast<const float4 *>(sm + q.XCH) + c0 * 9 * ob4 + g * 2;
        const float *wsc = sm + q.XCH + (c0 * q.OB + g * CT_TO) * 9; /* WL 1 */
#pragma unroll 2
        for (int c = c0; c < c1; c++) {
#pragma unroll
            for (int ki = 0; ki < 3; ki++) {
                float xv[PW + 2];
#pragma unroll
                for (int i = 0; i < PW + 2; i++)
                    xv[i] = xb[ki * q.XS + i];
#pragma unroll
                for (int kj = 0; kj < 3; kj++) {
                    float wv[CT_TO];
                    if (WL == 1) {
#pragma unroll
                        for (int o = 0; o < CT_TO; o++) /* tap 8 - t of the kernel, rotated */
                            wv[o] = wsc[o * 9 + 8 - (ki * 3 + kj)];
                    } else {
                        const float4 *wp = wb + (ki * 3 + kj) * ob4;
                        const float4 wa = wp[0], wc = wp[1];
                        wv[0] = wa.x, wv[1] = wa.y, wv[2] = wa.z, wv[3] = wa.w;
                        wv[4] = wc.x, wv[5] = wc.y, wv[6] = wc.z, wv[7] = wc.w;
                    }
#pragma unroll
                    for (int o = 0; o < CT_TO; o++)
#pragma unroll
                        for (int i = 0; i < PW; i++)
                            acc[o][i] = fmaf(wv[o], xv[i + kj], acc[o][i]);
                }
            }
            xb += q.CSTR;
            wb += 9 * ob4;
            wsc += q.OB * 9;
        }
    }
    __syncthreads(); /* the staged inputs are no longer read */

    /* through shared memory (one tile per group), so that each channel's band of rows is
     * stored contiguously and the groups' sums are added in order */
    float *ys = sm + kg * q.OB * q.YS;
#pragma unroll
    for (int o = 0; o < CT_TO; o++)
#pragma unroll
        for (int i = 0; i < PW; i++)
            ys[(g * CT_TO + o) * q.YS + seg * PW + i] = acc[o][i];
    __syncthreads();
    const int rv = min(q.R, q.H - r0), len = rv * q.W;
    float *yb = y + (((int64_t)n * q.Cout + o0) * q.H + r0) * q.W;
    for (int j = 0, p = tid; j < q.OB;) {
        if (p >= len) {
            p -= len, j++;
            continue;
        }
        float v = sm[j * q.YS + p];
#pragma unroll
        for (int k = 1; k < KS; k++)
            v += sm[(k * q.OB + j) * q.YS + p];
        yb[(int64_t)j * q.H * q.W + p] = v;
        p += nt;
    }
}

/* the input row stride (>= W + 2) whose x loads hit the fewest banks per warp */
static int ct_row_stride(int W, int PW, int S, int G, int threads)
{
    int best = W + 2, best_ways = 1 << 30;
    for (int xs = W + 2; xs < W + 2 + 32; xs++) {
        int worst = 0;
        for (int w0 = 0; w0 < threads; w0 += 32) {
            int addr[32], m = 0;
            for (int l = 0; l < 32 && w0 + l < threads; l++) {
                int seg = (w0 + l) / G, a = (seg / S) * xs + (seg % S) * PW, dup = 0;
                for (int i = 0; i < m; i++)
                    dup |= addr[i] == a;
                if (!dup)
                    addr[m++] = a;
            }
            int ways[32] = {0};
            for (int i = 0; i < m; i++)
                worst = ++ways[addr[i] % 32] > worst ? ways[addr[i] % 32] : worst;
        }
        if (worst < best_ways)
            best = xs, best_ways = worst;
    }
    return best;
}

static size_t ct_smem_floats(const ct_geom &q, int ks)
{
    size_t st = (size_t)q.XCH + (size_t)q.Cin * 9 * q.OB, yt = (size_t)ks * q.OB * q.YS;
    return st > yt ? st : yt;
}

/* the most shared memory a block may opt into on this device (227 KB on the H100/H200) */
static int smem_optin_bytes(const anvil_cuda_ctx *c)
{
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device) != cudaSuccess) {
        (void)cudaGetLastError(); /* not left for a later launch check to report */
        v = 48 << 10;
    }
    return v;
}

/* The plan: PW 8 or 7 dividing W; the largest band R (from the whole height, halved) and
 * then the largest OB (64, 56, ... 8 dividing Cout) whose staged inputs fit the shared memory
 * with at most CT_THREADS threads per channel group; bands halved further while the grid
 * would leave more than half the SMs idle; then as many channel groups KS (8, 4, 2, 1) as
 * the threads allow with at least 4 input channels each. */
static bool ct_choose(const anvil_cuda_ctx *c, int64_t N, int64_t Cin, int64_t Cout, int64_t H, int64_t W, ct_geom *q,
                      int *pw, int *ks)
{
    if (!tiles_on(CT_DGRAD) || Cin < CT_MIN_CHANNELS || Cout % CT_TO != 0 ||
        (Cin >= CT_MAX_CHANNELS && Cout >= CT_MAX_CHANNELS) || Cin > 4 * CT_MAX_CHANNELS ||
        Cout > 4 * CT_MAX_CHANNELS || H < 1 || W < 1 || N < 1 || H > 4096 || W > 4096 ||
        N * Cout * H * W >= ((int64_t)1 << 31) || N * Cin * H * W >= ((int64_t)1 << 31))
        return false;
    *pw = W % 8 == 0 ? 8 : W % 7 == 0 ? 7 : 0;
    if (!*pw)
        return false;
    memset(q, 0, sizeof *q);
    q->N = (int)N, q->Cin = (int)Cin, q->Cout = (int)Cout, q->H = (int)H, q->W = (int)W;
    q->S = (int)(W / *pw);
    const int64_t sms = c->sm_count > 0 ? c->sm_count : 132;
    const size_t opt = (size_t)smem_optin_bytes(c) / sizeof(float), smax = opt < CT_SMEM_FLOATS ? opt : CT_SMEM_FLOATS;
    bool found = false;
    for (int R = (int)H; R >= 1 && !found; R = R > 1 ? (R + 1) / 2 : 0) {
        for (int ob = 64; ob >= CT_TO && !found; ob -= CT_TO) {
            if (Cout % ob != 0)
                continue;
            q->OB = ob, q->G = ob / CT_TO, q->ogroups = (int)(Cout / ob);
            q->R = R, q->bands = (int)((H + R - 1) / R);
            q->tile = R * q->S * q->G;
            q->XS = ct_row_stride((int)W, *pw, q->S, q->G, q->tile);
            q->CSTR = (R + 2) * q->XS;
            q->XCH = ((int)Cin * q->CSTR + 3) / 4 * 4;
            q->YS = (R * (int)W) | 1;
            found = q->tile <= CT_THREADS && ct_smem_floats(*q, 1) <= smax &&
                    (N * q->ogroups * q->bands * 2 >= sms || R == 1);
        }
    }
    if (!found)
        return false;
    *ks = 1;
    while (*ks < 8 && q->tile * *ks * 2 <= CT_THREADS && Cin >= 8 * *ks && ct_smem_floats(*q, *ks * 2) <= smax)
        *ks *= 2;
    q->cpg = (int)((Cin + *ks - 1) / *ks);
    return true;
}

/* ANVIL_CT_WLAYOUT=0: the weights staged as [c][tap][j] (for A/B); default the global order */
static int ct_wlayout(void)
{
    static int wl = -1;
    if (wl < 0) {
        const char *e = getenv("ANVIL_CT_WLAYOUT");
        wl = e && strcmp(e, "0") == 0 ? 0 : 1;
    }
    return wl;
}

template <int PW, int KS, int WL>
static anvil_status ct_launch_wl(anvil_cuda_ctx *c, const ct_geom &q, const float *dy, const float *w, float *dx,
                                 bool plan)
{
    size_t smem = ct_smem_floats(q, KS) * sizeof(float);
    ANVIL_CUDA_CHECK(cudaFuncSetAttribute(ct_dgrad<PW, KS, WL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                     "conv2d_bwd_data (3x3 register tiles): cudaFuncSetAttribute");
    if (plan)
        return ANVIL_OK;
    unsigned int blocks = (unsigned int)(q.N * q.ogroups * q.bands), threads = (unsigned int)(q.tile * KS);
    ct_dgrad<PW, KS, WL><<<blocks, threads, smem, c->stream>>>(q, dy, w, dx);
    return anvil_cuda_launched(c, "conv2d_bwd_data (3x3 register tiles)");
}

template <int PW, int KS>
static anvil_status ct_launch_t(anvil_cuda_ctx *c, const ct_geom &q, const float *dy, const float *w, float *dx,
                                bool plan)
{
    /* the global-order staging needs 16-byte runs: w aligned, OB * 9 and Cout * 9 multiples of 4 */
    bool wl1 = ct_wlayout() == 1 && ((uintptr_t)w & 15) == 0 && q.OB % 4 == 0 && q.Cout % 4 == 0;
    return wl1 ? ct_launch_wl<PW, KS, 1>(c, q, dy, w, dx, plan) : ct_launch_wl<PW, KS, 0>(c, q, dy, w, dx, plan);
}

anvil_status anvil_conv_tiles_dgrad(anvil_cuda_ctx *c, int64_t N, int64_t C, int64_t O, int64_t H, int64_t W,
                                    const float *dy, const float *w, float *dx, size_t *plan)
{
    ct_geom q;
    int pw, ks;
    if (!ct_choose(c, N, O, C, H, W, &q, &pw, &ks)) /* a forward from O channels to C */
        return ANVIL_ERR_UNSUPPORTED;
    if (plan)
        *plan = 0;
    const bool p = plan != NULL;
    if (pw == 8)
        return ks == 8   ? ct_launch_t<8, 8>(c, q, dy, w, dx, p)
               : ks == 4 ? ct_launch_t<8, 4>(c, q, dy, w, dx, p)
               : ks == 2 ? ct_launch_t<8, 2>(c, q, dy, w, dx, p)
                         : ct_launch_t<8, 1>(c, q, dy, w, dx, p);
    return ks == 8   ? ct_launch_t<7, 8>(c, q, dy, w, dx, p)
           : ks == 4 ? ct_launch_t<7, 4>(c, q, dy, w, dx, p)
           : ks == 2 ? ct_launch_t<7, 2>(c, q, dy, w, dx, p)
                     : ct_launch_t<7, 1>(c, q, dy, w, dx, p);
}

/* ------------------------------------------------------------------ weight gradient */

typedef struct {
    int N, C, O, H, W;
    int pairs, RS;     /* (input channel, 8 output channels) pairs; row ranges per block */
    int XS, CSTR, DYO; /* x row and channel strides, where dy starts */
    int OS, outs;      /* dy's position stride (channels + 4), dW's values */
} cw_geom;

static __global__ void __launch_bounds__(CW_THREADS, 1) cw_partials(cw_geom q, const float *__restrict__ x,
                                                                     const float *__restrict__ dy, float *part)
{
    extern __shared__ __align__(16) float sm[];
    float *xs = sm, *dys = sm + q.DYO;
    const int tid = threadIdx.x, nt = blockDim.x;
    const int pair = tid % q.pairs, grp = tid / q.pairs, c = pair % q.C, og = pair / q.C;
    const int h0 = q.H * grp / q.RS, h1 = q.H * (grp + 1) / q.RS, HW = q.H * q.W;
    const int XS = q.XS;
    const int dob = nt / HW, dp = nt - dob * HW;
    float acc[CT_TO][9];
#pragma unroll
    for (int k = 0; k < CT_TO; k++)
#pragma unroll
        for (int t = 0; t < 9; t++)
            acc[k][t] = 0.0f;

    for (int n = blockIdx.x; n < q.N; n += gridDim.x) {
        __syncthreads(); /* the previous sample's reads are done */
        stage_rows(xs, x, (int64_t)n * q.C, q.C, q.H, q.W, 0, q.H + 2, XS, q.CSTR, tid, nt);
        const float *dyn = dy + (int64_t)n * q.O * HW;
        for (int e = tid, o = tid / HW, p = tid - (tid / HW) * HW; e < q.O * HW; e += nt) { /* stored transposed */
            anvil_cp_async4(dys + p * q.OS + o, dyn + e, true);
            p += dp, o += dob;
            if (p >= HW)
                p -= HW, o++;
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
        __syncthreads();
        for (int h = h0; h < h1; h++) {
            const float *xr = xs + c * q.CSTR + h * XS; /* padded rows h, h+1, h+2 = input rows h-1 .. h+1 */
            const float4 *dp = reinterpret_cast<const float4 *>(dys + h * q.W * q.OS + og * CT_TO);
            const int os4 = q.OS / 4;
            float a0 = xr[0], a1 = xr[XS], a2 = xr[2 * XS];
            float b0 = xr[1], b1 = xr[XS + 1], b2 = xr[2 * XS + 1];
            /* the next position's loads are issued before this one's sums (0.7 µs of the
             * kernel's 54 before the epilogue fix); one past the row stays in the staged
             * area (x's padding, dy's spare row) */
            float n0 = xr[2], n1 = xr[XS + 2], n2 = xr[2 * XS + 2];
            float4 na = dp[0], nb = dp[1];
            for (int wc = 0; wc < q.W; wc++) {
                const float c0 = n0, c1 = n1, c2 = n2;
                const float4 da = na, db = nb;
                dp += os4;
                n0 = xr[wc + 3], n1 = xr[XS + wc + 3], n2 = xr[2 * XS + wc + 3];
                na = dp[0], nb = dp[1];
                const float d[CT_TO] = {da.x, da.y, da.z, da.w, db.x, db.y, db.z, db.w};
#pragma unroll
                for (int k = 0; k < CT_TO; k++) {
                    acc[k][0] = fmaf(d[k], a0, acc[k][0]);
                    acc[k][1] = fmaf(d[k], b0, acc[k][1]);
                    acc[k][2] = fmaf(d[k], c0, acc[k][2]);
                    acc[k][3] = fmaf(d[k], a1, acc[k][3]);
                    acc[k][4] = fmaf(d[k], b1, acc[k][4]);
                    acc[k][5] = fmaf(d[k], c1, acc[k][5]);
                    acc[k][6] = fmaf(d[k], a2, acc[k][6]);
                    acc[k][7] = fmaf(d[k], b2, acc[k][7]);
                    acc[k][8] = fmaf(d[k], c2, acc[k][8]);
                }
                a0 = b0, a1 = b1, a2 = b2;
                b0 = c0, b1 = c1, b2 = c2;
            }
        }
    }
    /* every range's sums into shared memory in dW's layout (lanes 9 floats apart: no bank
     * conflicts), then the block's partial dW by all threads, the ranges added in range
     * order, in coalesced float4s (per-thread stores 9 floats apart took half the kernel:
     * Nsight's source counters) */
    __syncthreads();
    float *red = sm + (int64_t)grp * q.outs + ((int64_t)og * CT_TO * q.C + c) * 9;
#pragma unroll
    for (int k = 0; k < CT_TO; k++)
#pragma unroll
        for (int t = 0; t < 9; t++)
            red[k * q.C * 9 + t] = acc[k][t];
    __syncthreads();
    float4 *dst = reinterpret_cast<float4 *>(part + (int64_t)blockIdx.x * q.outs);
    const float4 *src = reinterpret_cast<const float4 *>(sm);
    const int outs4 = q.outs / 4;
    for (int e = tid; e < outs4; e += nt) {
        float4 v = src[e];
        for (int g2 = 1; g2 < q.RS; g2++) {
            const float4 w = src[g2 * outs4 + e];
            v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
        }
        dst[e] = v;
    }
}

static size_t cw_smem_floats(const cw_geom &q)
{
    size_t st = (size_t)q.DYO + ((size_t)q.H * q.W + 1) * q.OS, red = (size_t)q.RS * q.outs;
    return st > red ? st : red;
}


/* RS: 2 or 4 row ranges per block when the threads allow (more warps per SM to hide the
 * shared loads); one block per SM at most, P = min(N, SMs) blocks. */
static bool cw_choose(const anvil_cuda_ctx *c, int64_t N, int64_t C, int64_t O, int64_t H, int64_t W, cw_geom *q,
                      int *P)
{
    if (!tiles_on(CT_WGRAD) || C < CT_MIN_CHANNELS || O % CT_TO != 0 || (C >= CT_MAX_CHANNELS && O >= CT_MAX_CHANNELS) ||
        C * (O / CT_TO) > CW_THREADS / 2 || H < 1 || W < 1 || N < 1 || H > 4096 || W > 4096 ||
        N * O * H * W >= ((int64_t)1 << 31) || N * C * H * W >= ((int64_t)1 << 31))
        return false;
    memset(q, 0, sizeof *q);
    q->N = (int)N, q->C = (int)C, q->O = (int)O, q->H = (int)H, q->W = (int)W;
    q->pairs = (int)(C * (O / CT_TO));
    q->RS = 1;
    while (q->RS < 4 && q->pairs * q->RS * 2 <= CW_THREADS && q->RS * 2 <= q->H)
        q->RS *= 2;
    q->XS = (int)W + 2;
    q->CSTR = ((int)(H + 2) * q->XS) | 1; /* odd: 32 channels' loads in 32 banks */
    q->DYO = ((int)C * q->CSTR + 3) / 4 * 4;
    q->OS = (int)O + 4;
    q->outs = (int)(O * C * 9);
    while (q->RS > 1 && cw_smem_floats(*q) * sizeof(float) > (size_t)smem_optin_bytes(c))
        q->RS /= 2; /* the ranges' sums share the staging area */
    if (cw_smem_floats(*q) * sizeof(float) > (size_t)smem_optin_bytes(c))
        return false;
    int64_t sms = c->sm_count > 0 ? c->sm_count : 132;
    *P = (int)(N < sms ? N : sms);
    return true;
}

anvil_status anvil_conv_tiles_wgrad(anvil_cuda_ctx *c, int64_t N, int64_t C, int64_t O, int64_t H, int64_t W,
                                    const float *x, const float *dy, float *dw, void *ws, size_t ws_bytes,
                                    size_t *plan)
{
    cw_geom q;
    int P;
    if (!cw_choose(c, N, C, O, H, W, &q, &P))
        return ANVIL_ERR_UNSUPPORTED;
    size_t need = (size_t)P * (size_t)q.outs * sizeof(float), smem = cw_smem_floats(q) * sizeof(float);
    ANVIL_CUDA_CHECK(cudaFuncSetAttribute(cw_partials, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                     "conv2d_bwd_filter (3x3 register tiles): cudaFuncSetAttribute");
    if (plan) {
        *plan = need;
        return ANVIL_OK;
    }
    if (ws_bytes < need)
        return anvil_fail(ANVIL_ERR_STATE, "conv2d_bwd_filter: the step has %zu bytes of workspace, not the %zu planned",
                          ws_bytes, need);
    float *part = (float *)ws;
    cw_partials<<<(unsigned int)P, (unsigned int)(q.pairs * q.RS), smem, c->stream>>>(q, x, dy, part);
    ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_filter (3x3 register tiles)"));
    return anvil_conv_sum_partials(c, part, dw, q.outs, P, "conv2d_bwd_filter (3x3 register tiles, sum)");
}
