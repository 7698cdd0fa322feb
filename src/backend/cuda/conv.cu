/* conv.cu — 2-D convolution (NCHW, float32) and its backward ops through cuDNN's
 * convolution API, in true fp32 (CUDNN_FMA_MATH: no TF32, as Anvil's matmuls).
 *
 * Algorithms are chosen without timing, from cuDNN's heuristics (the _v7 queries): the
 * first candidate that is supported, deterministic, not a tensor-op one (the descriptor
 * stays CUDNN_FMA_MATH whatever the heuristic reports) and whose workspace is at most
 * DNN_WS_MAX bytes.  Candidates that compute through FFTs or Winograd transforms are
 * taken only when nothing else fits, as their rounding differs most from a direct sum; a
 * candidate cuDNN refuses when run (NOT_SUPPORTED) gives way to the next.
 *
 * Workspace: every kernel here works in its step's planned workspace (anvil_step.ws, in
 * the transient arena, live during that step only).  anvil_cuda_conv_workspace sizes it
 * when the program is planned by making the same choice the kernel makes when captured
 * (the heuristics answer the same for the same shapes), so no convolution memory is
 * allocated per lane or per step.
 * Descriptors are made and destroyed per call: the kernel functions run
 * only while a program is captured, and the CUDA graph replays what they recorded.
 *
 * Bias and the ReLU the fusion pass may move in: both in cuDNN's epilogue
 * (cudnnConvolutionBiasActivationForward); one of them alone, an elementwise pass over y
 * after the convolution (bias_act_kernel; cuDNN's AddTensor and a separate ReLU were two).
 * Not everything goes through cuDNN: forwards with a short reduction run as one direct
 * kernel (fwd_direct), data gradients as a flipped-weight forward or a product + gather,
 * the backward passes of 3x3 "same" layers with few channels in register tiles
 * (conv_tiles.cu), weight gradients in register tiles (few values), as Anvil's implicit
 * product (small ones), im2col + product, or a direct kernel; each section below says
 * when and why (measurements: docs/benchmarks.md).
 * Without cuDNN at build time this file defines nothing: the CUDA backend then lacks
 * these ops and a program that needs them fails to compile naming the op. */
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/conv_tiles.h"
#include "backend/cuda/simt_gemm.cuh"

#ifdef ANVIL_HAVE_CUDNN

/* The most workspace one cuDNN call may take: 1 GiB, or 1/16 of the device's memory when
 * that is less (the largest one raises the planned arena's peak; the Winograd algorithms
 * of ResNet-18's 64-channel 32x32 layers ask ~600 MB at batch 256). */
#define DNN_WS_MAX (c->dnn_ws_max)
#define IM2COL_WS_MAX ((size_t)256 << 20)  /* weight-gradient staging per chunk of samples */
#define WINOGRAD_MIN_CHANNELS 64

static size_t ws_align(size_t b) { return (b + 255) & ~(size_t)255; }

static anvil_status dnn_fail(cudnnStatus_t st, const char *op, const char *what)
{
    return anvil_fail(ANVIL_ERR_DEVICE, "%s: %s: %s", op, what, cudnnGetErrorString(st));
}

#define DNN_CHECK(call, what)                        \
    do {                                             \
        cudnnStatus_t dnn_st_ = (call);              \
        if (dnn_st_ != CUDNN_STATUS_SUCCESS) {       \
            rc = dnn_fail(dnn_st_, d->op, what);     \
            goto done;                               \
        }                                            \
    } while (0)

/* A convolution's descriptors: x [N,C,H,W], w [O,C/G,kh,kw], y [N,O,OH,OW]. */
typedef struct {
    const char *op;
    int cg, O, kh, kw, stride_h, stride_w, dil_h, dil_w, groups; /* for the algorithm rule */
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
} dnn_conv;

static bool fits_int(const anvil_node *n)
{
    for (int i = 0; i < n->ndim; i++)
        if (n->shape[i] > 0x7fffffff)
            return false;
    return anvil_node_numel(n) <= 0x7fffffff;
}

static void dnn_destroy(dnn_conv *d)
{
    if (d->conv)
        cudnnDestroyConvolutionDescriptor(d->conv);
    if (d->w)
        cudnnDestroyFilterDescriptor(d->w);
    if (d->y)
        cudnnDestroyTensorDescriptor(d->y);
    if (d->x)
        cudnnDestroyTensorDescriptor(d->x);
}

/* Makes the descriptors for x [N,C,H,W], w [O,C/G,kh,kw],
 * y [N,O,OH,OW] and a node's ia (stride, padding, dilation), and binds the handle to the
 * lane's stream.  On failure the caller still calls dnn_destroy. */
static anvil_status dnn_setup_dims(anvil_cuda_ctx *c, dnn_conv *d, const char *op, const int *xd, const int *wd,
                                   const int *yd, const int *ia)
{
    anvil_status rc = ANVIL_OK;
    memset(d, 0, sizeof *d);
    d->op = op;
    if (!c->cudnn)
        return anvil_fail(ANVIL_ERR_DEVICE, "%s: no cuDNN handle (cudnnCreate: %s)", op,
                          cudnnGetErrorString((cudnnStatus_t)c->cudnn_status));
    int N = xd[0], C = xd[1], H = xd[2], W = xd[3];
    int O = wd[0], cg = wd[1], kh = wd[2], kw = wd[3];
    int OH = yd[2], OW = yd[3];
    d->cg = cg, d->O = O, d->kh = kh, d->kw = kw, d->groups = C / cg;
    d->stride_h = ia[0], d->stride_w = ia[1], d->dil_h = ia[4], d->dil_w = ia[5];
    cudnnHandle_t h = (cudnnHandle_t)c->cudnn;
    DNN_CHECK(cudnnSetStream(h, c->stream), "cudnnSetStream");
    DNN_CHECK(cudnnCreateTensorDescriptor(&d->x), "cudnnCreateTensorDescriptor (x)");
    DNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, C, H, W),
              "cudnnSetTensor4dDescriptor (x)");
    DNN_CHECK(cudnnCreateTensorDescriptor(&d->y), "cudnnCreateTensorDescriptor (y)");
    DNN_CHECK(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, O, OH, OW),
              "cudnnSetTensor4dDescriptor (y)");
    DNN_CHECK(cudnnCreateFilterDescriptor(&d->w), "cudnnCreateFilterDescriptor");
    DNN_CHECK(cudnnSetFilter4dDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, O, cg, kh, kw),
              "cudnnSetFilter4dDescriptor");
    DNN_CHECK(cudnnCreateConvolutionDescriptor(&d->conv), "cudnnCreateConvolutionDescriptor");
    /* CROSS_CORRELATION: torch's conv2d (no kernel flip) */
    DNN_CHECK(cudnnSetConvolution2dDescriptor(d->conv, ia[2], ia[3], ia[0], ia[1], ia[4], ia[5],
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "cudnnSetConvolution2dDescriptor");
    DNN_CHECK(cudnnSetConvolutionGroupCount(d->conv, C / cg), "cudnnSetConvolutionGroupCount");
    DNN_CHECK(cudnnSetConvolutionMathType(d->conv, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType");
    {
        /* cuDNN's output size must be the graph's */
        int n4[4];
        DNN_CHECK(cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n4[0], &n4[1], &n4[2], &n4[3]),
                  "cudnnGetConvolution2dForwardOutputDim");
        if (n4[0] != N || n4[1] != O || n4[2] != OH || n4[3] != OW)
            return anvil_fail(ANVIL_ERR_DEVICE, "%s: cuDNN's output [%d, %d, %d, %d] is not the graph's [%d, %d, %d, %d]",
                              op, n4[0], n4[1], n4[2], n4[3], N, O, OH, OW);
    }
done:
    return rc;
}

/* The same from the nodes' shapes (checked to fit cuDNN's int dims). */
static anvil_status dnn_setup(anvil_cuda_ctx *c, dnn_conv *d, const char *op, const anvil_node *x,
                              const anvil_node *w, const anvil_node *y, const int *ia)
{
    memset(d, 0, sizeof *d);
    d->op = op;
    if (!fits_int(x) || !fits_int(w) || !fits_int(y))
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "%s: tensors of 2^31 or more elements are not supported on CUDA", op);
    int xd[4], wd[4], yd[4];
    for (int i = 0; i < 4; i++) {
        xd[i] = (int)x->shape[i];
        wd[i] = (int)w->shape[i];
        yd[i] = (int)y->shape[i];
    }
    return dnn_setup_dims(c, d, op, xd, wd, yd, ia);
}

/* Ranks an algorithm: 0 for direct/GEMM-like ones, 1 for FFT or Winograd transforms. */
static int fwd_rank(cudnnConvolutionFwdAlgo_t a)
{
    return a == CUDNN_CONVOLUTION_FWD_ALGO_FFT || a == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD || a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}

static int bwd_data_rank(cudnnConvolutionBwdDataAlgo_t a)
{
    return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
           a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
           a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
}

static int bwd_filter_rank(cudnnConvolutionBwdFilterAlgo_t a)
{
    return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
           a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

static anvil_status no_algo(const dnn_conv *d, size_t limit, const anvil_node *x, const anvil_node *w)
{
    char sx[96], sw[96];
    return anvil_fail(ANVIL_ERR_UNSUPPORTED,
                      "%s: cuDNN offers no deterministic fp32 (FMA) algorithm within a %zu-byte workspace for input %s, weight %s",
                      d->op, limit, anvil_shape_str(sx, sizeof sx, x->ndim, x->shape),
                      anvil_shape_str(sw, sizeof sw, w->ndim, w->shape));
}

/* A heuristic result's math type: FMA, or DEFAULT (which the descriptor's FMA setting
 * then restricts); never a tensor-op one (TF32 or lower). */
static bool fma_ok(cudnnMathType_t m)
{
    return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
}

/* ---- the algorithm rule, from bench/conv_algos.cu's survey of every algorithm on the
 * ResNet-18 and cnn layers (H200, cuDNN 9, fp32 FMA; docs/benchmarks.md has the table):
 *  - 3x3, stride 1, undilated, ungrouped layers with >= WINOGRAD_MIN_CHANNELS input and
 *    output channels:
 *    the non-fused Winograd algorithms, 2-4x faster than the direct ones in all three
 *    passes (e.g. 512x4x4 forward 0.32 vs 1.15 ms).  Deterministic; their rounding
 *    differs from a direct sum by less than the GPU suite's conv tolerance (which tests
 *    such a layer), and cuDNN's heuristics give PyTorch transforms for these layers too;
 * Anything else, or a preferred algorithm that is not usable: the heuristic's order.
 * (Timed alone, IMPLICIT_GEMM also beat the heuristic's IMPLICIT_PRECOMP_GEMM on forward
 * passes with short reductions, C/groups * kh * kw <= 288, by up to 1.8x; preferring it
 * made the cnn's step 30 us slower in the graph, so it is not in the rule.) */
static bool winograd_layer(const dnn_conv *d)
{
    return d->kh == 3 && d->kw == 3 && d->stride_h == 1 && d->stride_w == 1 && d->dil_h == 1 && d->dil_w == 1 &&
           d->groups == 1 && d->cg >= WINOGRAD_MIN_CHANNELS && d->O >= WINOGRAD_MIN_CHANNELS;
}

static int fwd_prefer(const dnn_conv *d)
{
    return winograd_layer(d) ? CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED : -1;
}

/* Runs the first usable algorithm: supported, deterministic, not tensor-op, its workspace
 * (asked again through ws_of) within limit bytes; first `prefer` (-1: none), then the
 * heuristic's list perf[0..n) in order, rank-0 algorithms before the others.  With
 * only_prefer nothing else is tried: ANVIL_ERR_UNSUPPORTED (no message) when it is not
 * usable.  A candidate that cuDNN refuses when run (a NOT_SUPPORTED status, decided on
 * the host before any launch) gives way to the next; any other failure is reported.
 * With plan, runs nothing: *plan is the workspace of the candidate it would try first (0
 * when none is usable). */
template <typename Perf, typename Rank, typename WsOf, typename Exec>
static anvil_status dnn_run(const dnn_conv *d, const Perf *perf, int n, int prefer, bool only_prefer, Rank rank,
                            WsOf ws_of, size_t limit, size_t *plan, Exec exec, const char *exec_name,
                            const anvil_node *x, const anvil_node *w)
{
    cudnnStatus_t refused = CUDNN_STATUS_SUCCESS;
    if (plan)
        *plan = 0;
    for (int pass = prefer >= 0 ? -1 : 0; pass < (only_prefer ? 0 : 2); pass++)
        for (int i = 0; i < n; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC ||
                !fma_ok(perf[i].mathType))
                continue;
            if (pass < 0 ? (int)perf[i].algo != prefer : (pass == 0) != (rank(perf[i].algo) == 0))
                continue;
            size_t ws = 0;
            if (ws_of(perf[i].algo, &ws) != CUDNN_STATUS_SUCCESS || ws > limit)
                continue;
            if (plan) {
                *plan = ws;
                return ANVIL_OK;
            }
            cudnnStatus_t st = exec(perf[i].algo, ws);
            if (st == CUDNN_STATUS_SUCCESS)
                return ANVIL_OK;
            if (CUDNN_STATUS_CATEGORY(st) != CUDNN_STATUS_NOT_SUPPORTED)
                return dnn_fail(st, d->op, exec_name);
            refused = st;
        }
    if (only_prefer)
        return ANVIL_ERR_UNSUPPORTED;
    if (plan)
        return ANVIL_OK;
    if (refused != CUDNN_STATUS_SUCCESS)
        return dnn_fail(refused, d->op, exec_name);
    return no_algo(d, limit, x, w);
}

/* y = conv(xp, wp) with the descriptors d, by the first usable algorithm of cuDNN's
 * forward heuristics (dnn_run) within ws [limit bytes]; xn, wn name the shapes in errors.
 * With bp (bias [O]): y = relu(conv + b) in one call (cudnnConvolutionBiasActivationForward,
 * its epilogue: the cnn's second layer 37.7 + 5.5 µs of bias+ReLU pass before); NaN sums
 * give 0 as in bias_act1.  With plan: only its workspace (dnn_run). */
static anvil_status dnn_forward(anvil_cuda_ctx *c, const dnn_conv *d, const void *xp, const void *wp, void *yp,
                                const void *bp, void *ws, size_t limit, size_t *plan, const anvil_node *xn,
                                const anvil_node *wn)
{
    anvil_status rc = ANVIL_OK;
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    const float one = 1.0f, zero = 0.0f;
    cudnnHandle_t h = (cudnnHandle_t)c->cudnn;
    cudnnTensorDescriptor_t bd = NULL;
    cudnnActivationDescriptor_t act = NULL;
    DNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d->x, d->w, d->conv, d->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                     &n, perf),
              "cudnnGetConvolutionForwardAlgorithm_v7");
    if (bp) {
        DNN_CHECK(cudnnCreateTensorDescriptor(&bd), "cudnnCreateTensorDescriptor (bias)");
        DNN_CHECK(cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, d->O, 1, 1),
                  "cudnnSetTensor4dDescriptor (bias)");
        DNN_CHECK(cudnnCreateActivationDescriptor(&act), "cudnnCreateActivationDescriptor");
        DNN_CHECK(cudnnSetActivationDescriptor(act, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0),
                  "cudnnSetActivationDescriptor");
    }
    {
        auto ws_of = [&](cudnnConvolutionFwdAlgo_t a, size_t *ws) {
            return cudnnGetConvolutionForwardWorkspaceSize(h, d->x, d->w, d->conv, d->y, a, ws);
        };
        auto exec = [&](cudnnConvolutionFwdAlgo_t a, size_t need) {
            if (bp) /* z = y with alpha2 = 0: not read */
                return cudnnConvolutionBiasActivationForward(h, &one, d->x, xp, d->w, wp, d->conv, a,
                                                             need ? ws : NULL, need, &zero, d->y, yp, bd, bp, act,
                                                             d->y, yp);
            return cudnnConvolutionForward(h, &one, d->x, xp, d->w, wp, d->conv, a, need ? ws : NULL, need, &zero,
                                           d->y, yp);
        };
        rc = dnn_run(d, perf, n, fwd_prefer(d), false, fwd_rank, ws_of, limit, plan, exec,
                     bp ? "cudnnConvolutionBiasActivationForward" : "cudnnConvolutionForward", xn, wn);
    }
done:
    if (act)
        cudnnDestroyActivationDescriptor(act);
    if (bd)
        cudnnDestroyTensorDescriptor(bd);
    return rc;
}

/* conv2d_run's fused cuDNN path (ANVIL_CUDNN_FUSED=0 turns it off, for A/B measurements) */
static bool cudnn_fused_on(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ANVIL_CUDNN_FUSED");
        on = !(e && strcmp(e, "0") == 0);
    }
    return on != 0;
}

/* A kernel's view of its workspace: where (NULL while planning) and how many bytes; when
 * plan is set the kernel launches nothing and adds the bytes it needs to *plan. */
typedef struct {
    char *p;
    size_t bytes;
    size_t *plan;
} conv_ws;

static conv_ws step_ws(const anvil_step *s)
{
    conv_ws w = {(char *)s->ws, s->ws ? s->ws_bytes : 0, NULL};
    return w;
}

/* y [planes = N*O of S each] += b[plane % O], then relu when asked: one flat pass, V
 * values per load (4 when S is a multiple of 4 and y is 16-byte aligned: the pass is
 * memory-bound and one float per load streamed at about a quarter of HBM speed). */
static __device__ __forceinline__ float bias_act1(float v, float add, bool relu)
{
    v = v + add;
    return relu && !(v > 0.0f) ? 0.0f : v;
}

template <typename I, int V>
static __global__ void bias_act_kernel(float *y, const float *__restrict__ b, I O, I S, I total, bool relu)
{
    I SV = S / V, tv = total / V;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < tv; i += (I)gridDim.x * blockDim.x) {
        float add = b ? b[(i / SV) % O] : 0.0f;
        if (V == 4) {
            float4 v = reinterpret_cast<float4 *>(y)[i];
            v.x = bias_act1(v.x, add, relu);
            v.y = bias_act1(v.y, add, relu);
            v.z = bias_act1(v.z, add, relu);
            v.w = bias_act1(v.w, add, relu);
            reinterpret_cast<float4 *>(y)[i] = v;
        } else {
            y[i] = bias_act1(y[i], add, relu);
        }
    }
}

/* A forward pass with a short reduction (C*kh*kw <= FWD_DIRECT_TAPS, ungrouped: the cnn's
 * first layer, 1 x 3x3) as one direct kernel with bias and ReLU: a thread per two output
 * positions keeps their input taps in registers and writes every output channel (a warp's
 * stores: 32 consecutive positions of one channel), the weights and bias in shared memory
 * read as broadcasts.  Replaces cuDNN's kernel plus the bias+ReLU pass over y (14 + 8 µs on
 * the cnn).  ANVIL_ERR_UNSUPPORTED (nothing launched) for other layers or with
 * ANVIL_SIMT_GEMM=0; no workspace.  y = act(sum over taps in order + bias). */
#define FWD_DIRECT_TAPS 16
#define FWD_DIRECT_SMEM_FLOATS 12288

typedef struct {
    int C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, positions, taps;
} fwd_geom;

/* Two output positions per thread (a block: 512 consecutive positions, so each warp's
 * stores stay 32 consecutive floats of one channel) and the weights as T4 float4s per
 * channel (taps zero-padded to 4*T4; a padded tap adds 0 * 0): per channel and position
 * pair, T4 broadcast loads feed 8*T4 multiply-adds.  One position per thread with one
 * float load per multiply-add took 16.5 µs on the cnn, this 13.0-13.2 (ncu). */
#define FWD_DIRECT_POS 2

template <int T4>
static __global__ void __launch_bounds__(256) conv_fwd_direct(fwd_geom q, const float *__restrict__ x,
                                                               const float *__restrict__ w,
                                                               const float *__restrict__ b, float *y, bool relu)
{
    /* the O biases first, zero-padded to OP = a multiple of 4 floats, then O rows of T4
     * float4 weights (zero-padded taps): the compiler may combine the biases' loads into
     * 16-byte ones, which stay inside the padding (with the biases last, such a load read
     * 12 bytes past the buffer: compute-sanitizer, 2 test shapes) */
    extern __shared__ float4 sw4_[];
    float *swf = reinterpret_cast<float *>(sw4_);
    const int TS = 4 * T4, OP = (q.O + 3) / 4 * 4;
    const float4 *ww4 = sw4_ + OP / 4;
    for (int i = threadIdx.x; i < OP; i += blockDim.x)
        swf[i] = b && i < q.O ? b[i] : 0.0f;
    for (int i = threadIdx.x; i < q.O * TS; i += blockDim.x) {
        int o = i / TS, t = i - o * TS;
        swf[OP + i] = t < q.taps ? w[o * q.taps + t] : 0.0f;
    }
    __syncthreads();
    const int hw = q.OH * q.OW, kk = q.kh * q.kw, chunk = FWD_DIRECT_POS * blockDim.x;
    for (int base = blockIdx.x * chunk; base < q.positions; base += gridDim.x * chunk) {
        float xv[FWD_DIRECT_POS][TS];
        float *yp[FWD_DIRECT_POS];
        bool ok[FWD_DIRECT_POS];
#pragma unroll
        for (int s = 0; s < FWD_DIRECT_POS; s++) {
            const int pos = base + s * blockDim.x + threadIdx.x;
            ok[s] = pos < q.positions;
            const int pc = ok[s] ? pos : 0, n = pc / hw, p = pc - n * hw, oh = p / q.OW, ow = p - oh * q.OW;
            const float *xn = x + (int64_t)n * q.C * q.H * q.W;
#pragma unroll
            for (int t = 0; t < TS; t++) {
                float v = 0.0f;
                if (t < q.taps) {
                    int c = t / kk, r = t - c * kk, ki = r / q.kw, kj = r - ki * q.kw;
                    int h = oh * q.sh - q.ph + ki * q.dh, wc = ow * q.sw - q.pw + kj * q.dw;
                    if (h >= 0 && h < q.H && wc >= 0 && wc < q.W)
                        v = xn[(c * q.H + h) * q.W + wc];
                }
                xv[s][t] = v;
            }
            yp[s] = y + (int64_t)n * q.O * hw + p;
        }
        for (int o = 0; o < q.O; o++) {
            float4 wv[T4];
#pragma unroll
            for (int j = 0; j < T4; j++)
                wv[j] = ww4[o * T4 + j];
            const float bo = swf[o];
#pragma unroll
            for (int s = 0; s < FWD_DIRECT_POS; s++) {
                float acc = 0.0f;
#pragma unroll
                for (int j = 0; j < T4; j++) {
                    acc = fmaf(wv[j].x, xv[s][4 * j], acc);
                    acc = fmaf(wv[j].y, xv[s][4 * j + 1], acc);
                    acc = fmaf(wv[j].z, xv[s][4 * j + 2], acc);
                    acc = fmaf(wv[j].w, xv[s][4 * j + 3], acc);
                }
                acc += bo;
                if (ok[s])
                    yp[s][(int64_t)o * hw] = relu && !(acc > 0.0f) ? 0.0f : acc;
            }
        }
    }
}

/* The same with four consecutive positions of one output row per thread and 8 of the
 * output channels (blockIdx.y picks the group): a float4 store per channel instead of four
 * scalar ones, and four times the threads of conv_fwd_direct's layout for the same
 * stores (its 12 warps per SM left the stores' latency exposed: 13 µs on the cnn, ~4 µs
 * of bytes).  Needs OW % 4 == 0, O % 8 == 0 and a 16-byte aligned y; the sums are the
 * same, in the same order. */
#define FWD_QUAD_CG 8
/* 3 blocks per SM where that fits without spills (T4 = 3: ptxas -v), else 2 */
template <int T4>
static __global__ void __launch_bounds__(256, T4 == 3 ? 3 : 2) conv_fwd_quad(fwd_geom q, const float *__restrict__ x,
                                                             const float *__restrict__ w, const float *__restrict__ b,
                                                             float *y, bool relu)
{
    __shared__ float4 ww4[FWD_QUAD_CG * T4];
    __shared__ float bs[FWD_QUAD_CG];
    __shared__ int4 tap[4 * T4]; /* per tap: its channel's plane offset, row and column shifts, valid */
    const int TS = 4 * T4, o0 = blockIdx.y * FWD_QUAD_CG;
    for (int i = threadIdx.x; i < FWD_QUAD_CG * TS; i += blockDim.x) {
        int o = i / TS, t = i - o * TS;
        reinterpret_cast<float *>(ww4)[i] = t < q.taps ? w[(o0 + o) * q.taps + t] : 0.0f;
    }
    if (threadIdx.x < FWD_QUAD_CG)
        bs[threadIdx.x] = b ? b[o0 + threadIdx.x] : 0.0f;
    if (threadIdx.x < TS) { /* the taps' divisions once per block, not per position */
        const int t = threadIdx.x, kk = q.kh * q.kw, c = t < q.taps ? t / kk : 0, r = t - c * kk;
        const int ki = t < q.taps ? r / q.kw : 0, kj = t < q.taps ? r - ki * q.kw : 0;
        tap[t] = make_int4(c * q.H * q.W, ki * q.dh - q.ph, kj * q.dw - q.pw, t < q.taps);
    }
    __syncthreads();
    const int hw = q.OH * q.OW, quads = q.positions / 4;
    for (int qd = blockIdx.x * blockDim.x + threadIdx.x; qd < quads; qd += gridDim.x * blockDim.x) {
        const int pos = qd * 4, n = pos / hw, p = pos - n * hw, oh = p / q.OW, ow0 = p - oh * q.OW;
        const float *xn = x + (int64_t)n * q.C * q.H * q.W;
        float xv[4][TS];
#pragma unroll
        for (int t = 0; t < TS; t++) {
            const int4 tp = tap[t];
            const int h = oh * q.sh + tp.y;
            const bool hin = tp.w && h >= 0 && h < q.H;
#pragma unroll
            for (int s = 0; s < 4; s++) {
                const int wc = (ow0 + s) * q.sw + tp.z;
                xv[s][t] = hin && wc >= 0 && wc < q.W ? xn[tp.x + h * q.W + wc] : 0.0f;
            }
        }
        float *yp = y + ((int64_t)n * q.O + o0) * hw + p;
#pragma unroll 2
        for (int o = 0; o < FWD_QUAD_CG; o++) {
            float acc[4];
#pragma unroll
            for (int s = 0; s < 4; s++) {
                float a = 0.0f;
#pragma unroll
                for (int j = 0; j < T4; j++) {
                    const float4 wv = ww4[o * T4 + j];
                    a = fmaf(wv.x, xv[s][4 * j], a);
                    a = fmaf(wv.y, xv[s][4 * j + 1], a);
                    a = fmaf(wv.z, xv[s][4 * j + 2], a);
                    a = fmaf(wv.w, xv[s][4 * j + 3], a);
                }
                a += bs[o];
                acc[s] = relu && !(a > 0.0f) ? 0.0f : a;
            }
            reinterpret_cast<float4 *>(yp + (int64_t)o * hw)[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
        }
    }
}

static anvil_status fwd_direct(anvil_cuda_ctx *c, const anvil_node *x, const anvil_node *w, const anvil_node *y,
                               const int *ia, bool bias, const void *const *in, void *out, conv_ws ws)
{
    int64_t C = x->shape[1], O = y->shape[1], taps = C * w->shape[2] * w->shape[3];
    int64_t positions = y->shape[0] * y->shape[2] * y->shape[3];
    if (anvil_cuda_simt_mode() == 0 || w->shape[1] != C || taps > FWD_DIRECT_TAPS || taps < 1 || positions < 1 ||
        O * ((taps + 3) / 4) * 4 + (O + 3) / 4 * 4 > FWD_DIRECT_SMEM_FLOATS || !fits_int(x) || !fits_int(y))
        return ANVIL_ERR_UNSUPPORTED;
    if (ws.plan) {
        *ws.plan = 0;
        return ANVIL_OK;
    }
    fwd_geom q;
    q.C = (int)C, q.H = (int)x->shape[2], q.W = (int)x->shape[3], q.O = (int)O;
    q.OH = (int)y->shape[2], q.OW = (int)y->shape[3], q.kh = (int)w->shape[2], q.kw = (int)w->shape[3];
    q.sh = ia[0], q.sw = ia[1], q.ph = ia[2], q.pw = ia[3], q.dh = ia[4], q.dw = ia[5];
    q.positions = (int)positions, q.taps = (int)taps;
    const float *xp = (const float *)in[0], *wp = (const float *)in[1], *bp = bias ? (const float *)in[2] : NULL;
    const int t4 = (int)((taps + 3) / 4);
    size_t smem = (size_t)(O * 4 * t4 + (O + 3) / 4 * 4) * sizeof(float);
    const char *qe = getenv("ANVIL_CONV_FWD_QUAD");
    if (!(qe && strcmp(qe, "0") == 0) && q.OW % 4 == 0 && O % FWD_QUAD_CG == 0 && ((uintptr_t)out & 15) == 0) {
        /* quads never straddle rows (OW % 4 == 0), so positions % 4 == 0 too */
        dim3 grid(anvil_cuda_blocks(positions / 4, 256), (unsigned int)(O / FWD_QUAD_CG));
        switch (t4) {
        case 1: conv_fwd_quad<1><<<grid, 256, 0, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
        case 2: conv_fwd_quad<2><<<grid, 256, 0, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
        case 3: conv_fwd_quad<3><<<grid, 256, 0, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
        default: conv_fwd_quad<4><<<grid, 256, 0, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
        }
        return anvil_cuda_launched(c, "conv2d (direct, short reduction, 4 positions a thread)");
    }
    unsigned int nb = anvil_cuda_blocks((positions + FWD_DIRECT_POS - 1) / FWD_DIRECT_POS, 256);
    switch (t4) {
    case 1: conv_fwd_direct<1><<<nb, 256, smem, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
    case 2: conv_fwd_direct<2><<<nb, 256, smem, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
    case 3: conv_fwd_direct<3><<<nb, 256, smem, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
    default: conv_fwd_direct<4><<<nb, 256, smem, c->stream>>>(q, xp, wp, bp, (float *)out, ia[6] == 1); break;
    }
    return anvil_cuda_launched(c, "conv2d (direct, short reduction)");
}

/* 3x3, stride 1, padding 1, undilated, ungrouped: the layers of conv_tiles.cu's backward
 * kernels (it checks the channel counts) */
static bool same3x3(const anvil_node *x, const anvil_node *w, const int *a)
{
    return w->shape[2] == 3 && w->shape[3] == 3 && w->shape[1] == x->shape[1] && a[0] == 1 && a[1] == 1 &&
           a[2] == 1 && a[3] == 1 && a[4] == 1 && a[5] == 1;
}

/* y = conv(x, w) (+ b), relu'd when the fusion pass set ia[6] */
static anvil_status conv2d_run(anvil_cuda_ctx *c, const anvil_node *x, const anvil_node *w, const anvil_node *y,
                               const int *ia, bool bias, const void *const *in, void *out, conv_ws ws)
{
    anvil_status ri = fwd_direct(c, x, w, y, ia, bias, in, out, ws);
    if (ri != ANVIL_ERR_UNSUPPORTED)
        return ri;
    dnn_conv dd, *d = &dd;
    anvil_status rc = dnn_setup(c, d, "conv2d", x, w, y, ia);
    if (rc != ANVIL_OK)
        goto done;
    {
        /* bias and ReLU in cuDNN's epilogue when both are asked for (a bias alone would
         * restrict cuDNN to one algorithm) */
        const bool fused = bias && ia[6] == 1 && cudnn_fused_on();
        const void *bp = fused ? (in ? in[2] : (const void *)d) : NULL; /* planning: any non-NULL */
        rc = dnn_forward(c, d, in ? in[0] : NULL, in ? in[1] : NULL, out, bp, ws.p,
                         ws.plan ? DNN_WS_MAX : ws.bytes, ws.plan, x, w);
        if (rc != ANVIL_OK || ws.plan || fused)
            goto done;
    }
    if (bias || ia[6] == 1) {
        int64_t O = y->shape[1], S = y->shape[2] * y->shape[3], total = y->shape[0] * O * S;
        const float *bp = bias ? (const float *)in[2] : NULL;
        bool relu = ia[6] == 1, vec = S % 4 == 0 && ((uintptr_t)out & 15) == 0;
        unsigned int nb = anvil_cuda_blocks(vec ? total / 4 : total, ANVIL_CUDA_THREADS);
        if (total < ((int64_t)1 << 31) && vec)
            bias_act_kernel<uint32_t, 4><<<nb, ANVIL_CUDA_THREADS, 0, c->stream>>>(
                (float *)out, bp, (uint32_t)O, (uint32_t)S, (uint32_t)total, relu);
        else if (total < ((int64_t)1 << 31))
            bias_act_kernel<uint32_t, 1><<<nb, ANVIL_CUDA_THREADS, 0, c->stream>>>(
                (float *)out, bp, (uint32_t)O, (uint32_t)S, (uint32_t)total, relu);
        else
            bias_act_kernel<uint64_t, 1><<<nb, ANVIL_CUDA_THREADS, 0, c->stream>>>(
                (float *)out, bp, (uint64_t)O, (uint64_t)S, (uint64_t)total, relu);
        rc = anvil_cuda_launched(c, "conv2d (bias, relu)");
    }
done:
    dnn_destroy(d);
    return rc;
}

ANVIL_CUDA_KERNEL(conv2d)
{
    if (s->in_node[0]->shape[0] == 0)
        return ANVIL_OK;
    return conv2d_run(anvil_cuda_ctx_of(ex), s->in_node[0], s->in_node[1], s->node, s->node->ia, s->node->n_in >= 3,
                      s->in, s->out, step_ws(s));
}

/* wt [C, O, kh, kw] = w [O, C, kh, kw] with each kernel rotated by 180 degrees */
static __global__ void flip_weights(const float *__restrict__ w, float *wt, int64_t O, int64_t C, int64_t kh, int64_t kw)
{
    int64_t total = O * C * kh * kw, kk = kh * kw;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = e % kk, oc = e / kk, o = oc / C, ch = oc - o * C;
        wt[(ch * O + o) * kk + (kk - 1 - t)] = w[e];
    }
}

/* The data gradient of a stride-1, undilated, ungrouped convolution is itself a forward
 * convolution: dx = conv(dy, flip(w)^T) with padding k - 1 - p.  cuDNN's deterministic
 * fp32 data-gradient kernels ran at under half the speed of its forward ones on the
 * ResNet-18 layers (H200), so such layers take this path: one small kernel flips w into
 * the start of the workspace, then the forward algorithm choice of conv2d in the rest.
 * Returns ANVIL_ERR_UNSUPPORTED (nothing launched) for other geometries. */
static anvil_status dgrad_as_fprop(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *w, const anvil_node *x,
                                   const int *a, const void *const *in, void *out, conv_ws ws)
{
    int64_t O = w->shape[0], C = x->shape[1], kh = w->shape[2], kw = w->shape[3];
    size_t flip_bytes = ws_align((size_t)(O * C * kh * kw) * sizeof(float));
    if (a[0] != 1 || a[1] != 1 || a[4] != 1 || a[5] != 1 || w->shape[1] != C || a[2] > kh - 1 || a[3] > kw - 1 ||
        flip_bytes > DNN_WS_MAX || !fits_int(dy) || !fits_int(x))
        return ANVIL_ERR_UNSUPPORTED;
    if (!ws.plan && ws.bytes < flip_bytes)
        return anvil_fail(ANVIL_ERR_STATE, "conv2d_bwd_data: the step has %zu bytes of workspace, not the %zu planned",
                          ws.bytes, flip_bytes);
    float *wt = (float *)ws.p;
    if (!ws.plan) {
        flip_weights<<<anvil_cuda_blocks(O * C * kh * kw, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
            (const float *)in[1], wt, O, C, kh, kw);
        ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_data (flip)"));
    }
    int xd[4] = {(int)dy->shape[0], (int)O, (int)dy->shape[2], (int)dy->shape[3]};
    int wd[4] = {(int)C, (int)O, (int)kh, (int)kw};
    int yd[4] = {(int)x->shape[0], (int)C, (int)x->shape[2], (int)x->shape[3]};
    int ia[6] = {1, 1, (int)kh - 1 - a[2], (int)kw - 1 - a[3], 1, 1};
    dnn_conv dd, *d = &dd;
    size_t fwd = 0;
    anvil_status rc = dnn_setup_dims(c, d, "conv2d_bwd_data", xd, wd, yd, ia);
    if (rc == ANVIL_OK)
        rc = dnn_forward(c, d, in ? in[0] : NULL, wt, out, NULL, ws.p ? ws.p + flip_bytes : NULL,
                         ws.plan ? DNN_WS_MAX : ws.bytes - flip_bytes, ws.plan ? &fwd : NULL, x, w);
    if (ws.plan)
        *ws.plan += flip_bytes + fwd;
    dnn_destroy(d);
    return rc;
}

static anvil_status dgrad_gemm(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *w, const anvil_node *x,
                               const int *a, const void *const *in, void *out, conv_ws ws);

/* dx = conv2d's adjoint in x of dy: in (dy, w), the node is x's shape.  Stride-1 layers as
 * forward convolutions (dgrad_as_fprop), other ungrouped ones as a product and a gather
 * (dgrad_gemm), the rest through cuDNN's heuristic order. */
static anvil_status conv2d_bwd_data_run(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *w,
                                        const anvil_node *x, const int *ia, const void *const *in, void *out,
                                        conv_ws ws)
{
    anvil_status fs = ANVIL_ERR_UNSUPPORTED;
    if (same3x3(x, w, ia))
        fs = anvil_conv_tiles_dgrad(c, x->shape[0], x->shape[1], w->shape[0], x->shape[2], x->shape[3],
                                    in ? (const float *)in[0] : NULL, in ? (const float *)in[1] : NULL, (float *)out,
                                    ws.plan);
    if (fs == ANVIL_ERR_UNSUPPORTED)
        fs = dgrad_as_fprop(c, dy, w, x, ia, in, out, ws);
    if (fs == ANVIL_ERR_UNSUPPORTED)
        fs = dgrad_gemm(c, dy, w, x, ia, in, out, ws);
    if (fs != ANVIL_ERR_UNSUPPORTED)
        return fs;
    dnn_conv dd, *d = &dd;
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    const float one = 1.0f, zero = 0.0f;
    anvil_status rc = dnn_setup(c, d, "conv2d_bwd_data", x, w, dy, ia);
    if (rc != ANVIL_OK)
        goto done;
    {
        cudnnHandle_t h = (cudnnHandle_t)c->cudnn;
        DNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d->w, d->y, d->conv, d->x,
                                                              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf),
                  "cudnnGetConvolutionBackwardDataAlgorithm_v7");
        auto ws_of = [&](cudnnConvolutionBwdDataAlgo_t a, size_t *b) {
            return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d->w, d->y, d->conv, d->x, a, b);
        };
        auto exec = [&](cudnnConvolutionBwdDataAlgo_t a, size_t need) {
            return cudnnConvolutionBackwardData(h, &one, d->w, in[1], d->y, in[0], d->conv, a, need ? ws.p : NULL,
                                                need, &zero, d->x, out);
        };
        rc = dnn_run(d, perf, n, -1, false, bwd_data_rank, ws_of, ws.plan ? DNN_WS_MAX : ws.bytes, ws.plan, exec,
                     "cudnnConvolutionBackwardData", x, w);
    }
done:
    dnn_destroy(d);
    return rc;
}

ANVIL_CUDA_KERNEL(conv2d_bwd_data)
{
    if (s->node->shape[0] == 0)
        return ANVIL_OK;
    return conv2d_bwd_data_run(anvil_cuda_ctx_of(ex), s->in_node[0], s->in_node[1], s->node, s->node->ia, s->in,
                               s->out, step_ws(s));
}

/* ---- the weight gradient as one matrix product per group.  cuDNN's only deterministic
 * fp32 weight-gradient algorithm was ~0.4 ms per layer of the cnn on an H100; instead,
 * with K = N*OH*OW output positions: colT [Cg*kh*kw, K] (im2col, transposed: a row per
 * kernel tap, the positions along it), dyT [Og, K], and dW_g = dyT colT^T through
 * cuBLASLt (both operands contiguous along K): deterministic.  Both staging kernels walk
 * the positions along the fast index, so that their reads (one input row, one output
 * plane) and writes are coalesced.  In-row indices fit 32 bits: the workspace holds
 * < 2^31 floats and x and dy are checked to. */
typedef struct {
    int64_t N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, Cg, Og;
} wgrad_geom;

/* Both staging kernels: a block per (samples, row) pair (grid x: groups of samples, y:
 * rows, each looping when there are more than the grid holds); the threads as a tile of
 * min(OW, 32) x (256 / that) over (ow, oh), so that no thread divides (the flat-index
 * version spent most of its time in index divisions: 5.2 ms of ResNet-18's step), and a
 * block takes enough samples for ~1024 positions (the cnn's 14x14 planes were slower
 * one sample per block). */
#define STAGE_THREADS 256

static __global__ void wgrad_im2col(wgrad_geom q, int64_t g, const float *__restrict__ x, float *col)
{
    const int ck = (int)(q.Cg * q.kh * q.kw), N = (int)q.N, OH = (int)q.OH, OW = (int)q.OW, H = (int)q.H, W = (int)q.W;
    const unsigned K = (unsigned)(q.N * q.OH * q.OW), hw = (unsigned)(OH * OW);
    for (int k = blockIdx.y; k < ck; k += gridDim.y) {
        int j = k % (int)q.kw, i = (k / (int)q.kw) % (int)q.kh;
        int ch = (int)(g * q.Cg) + k / (int)(q.kw * q.kh);
        int dh = i * (int)q.dh - (int)q.ph, dw = j * (int)q.dw - (int)q.pw;
        for (int n = blockIdx.x; n < N; n += gridDim.x) {
            const float *plane = x + ((size_t)n * q.C + ch) * (size_t)(H * W);
            float *row = col + (size_t)k * K + (unsigned)n * hw;
            for (int oh = threadIdx.y; oh < OH; oh += blockDim.y) {
                int h = oh * (int)q.sh + dh;
                bool hin = h >= 0 && h < H;
                for (int ow = threadIdx.x; ow < OW; ow += blockDim.x) {
                    int w = ow * (int)q.sw + dw;
                    row[oh * OW + ow] = (hin && w >= 0 && w < W) ? plane[h * W + w] : 0.0f;
                }
            }
        }
    }
}

static __global__ void wgrad_dy_rows(wgrad_geom q, int64_t g, const float *__restrict__ dy, float *dyt)
{
    const unsigned K = (unsigned)(q.N * q.OH * q.OW), hw = (unsigned)(q.OH * q.OW);
    const int N = (int)q.N, Og = (int)q.Og;
    const unsigned tid = threadIdx.y * blockDim.x + threadIdx.x, nt = blockDim.x * blockDim.y;
    for (int o = blockIdx.y; o < Og; o += gridDim.y)
        for (int n = blockIdx.x; n < N; n += gridDim.x) {
            const float *src = dy + ((size_t)n * q.O + g * q.Og + o) * hw;
            float *row = dyt + (size_t)o * K + (unsigned)n * hw;
            for (unsigned p = tid; p < hw; p += nt)
                row[p] = src[p];
        }
}

static dim3 stage_grid(const wgrad_geom *q, int64_t rows)
{
    int64_t hw = q->OH * q->OW, per = hw >= 1024 ? 1 : 1024 / (hw > 0 ? hw : 1);
    int64_t blocks = (q->N + per - 1) / per;
    return dim3((unsigned int)(blocks < 65535 ? blocks : 65535), (unsigned int)(rows < 65535 ? rows : 65535));
}

static dim3 stage_block(const wgrad_geom *q)
{
    unsigned int tx = q->OW < 32 ? (unsigned int)(q->OW > 0 ? q->OW : 1) : 32;
    return dim3(tx, STAGE_THREADS / tx);
}

/* The geometry of a staged product (wgrad_gemm, dgrad_gemm): x [N,C,H,W], w [O,Cg,kh,kw],
 * dy [N,O,OH,OW] and the attrs a (stride, padding, dilation). */
static wgrad_geom staging_geom(const anvil_node *dy, const anvil_node *x, const anvil_node *w, const int *a)
{
    wgrad_geom q;
    q.N = x->shape[0], q.C = x->shape[1], q.H = x->shape[2], q.W = x->shape[3];
    q.O = w->shape[0], q.kh = w->shape[2], q.kw = w->shape[3], q.OH = dy->shape[2], q.OW = dy->shape[3];
    q.sh = a[0], q.sw = a[1], q.ph = a[2], q.pw = a[3], q.dh = a[4], q.dw = a[5];
    q.Cg = w->shape[1];
    q.Og = q.O / (q.C / q.Cg); /* callers checked q.Cg > 0 divides q.C */
    return q;
}

/* *chunk samples at a time, per_sample bytes of staging each, within IM2COL_WS_MAX; equal
 * chunks, so that every chunk's product has the same shape.  ANVIL_ERR_UNSUPPORTED (no
 * message, nothing to undo) when not even one sample fits.  Planning (ws.plan): sets
 * *ws.plan to the bytes the chunks take.  Running: checks that the step's workspace
 * holds them. */
static anvil_status staging_chunks(int64_t batch, size_t per_sample, conv_ws ws, const char *op, int64_t *chunk)
{
    int64_t k = (int64_t)(IM2COL_WS_MAX / per_sample);
    if (k < 1)
        return ANVIL_ERR_UNSUPPORTED;
    k = k < batch ? k : batch;
    int64_t n_chunks = (batch + k - 1) / k;
    k = (batch + n_chunks - 1) / n_chunks;
    *chunk = k;
    size_t need = (size_t)k * per_sample;
    if (ws.plan)
        *ws.plan = need;
    else if (ws.bytes < need)
        return anvil_fail(ANVIL_ERR_STATE, "%s: the step has %zu bytes of workspace, not the %zu planned", op, ws.bytes,
                          need);
    return ANVIL_OK;
}

/* ---- small weight gradients directly from x and dy.  When dW has few values (the cnn's
 * first layer: 32 x 9 over 100k positions), the staged product below spends its time in
 * im2col, the dy copy and a product whose output tiles occupy a few SMs.  (Measured with
 * up to 2048 values: ResNet-18's stem, 64 x 27, was 0.16 ms slower this way.)  Instead a
 * fixed grid of WDIRECT_BLOCKS blocks each takes a contiguous range of output rows
 * (n, oh); per row it stages dy[n, :, oh, :] and the kh input rows each channel's taps
 * read in shared memory, and every thread adds row products into the dW values it owns
 * (at most WDIRECT_PER_THREAD).  The blocks' partial dW go to the workspace and
 * wdirect_sum adds them in a fixed order: deterministic, a function of the shapes only. */
#define WDIRECT_THREADS 256
#define WDIRECT_PER_THREAD 4
#define WDIRECT_BLOCKS 1024
#define WDIRECT_SMEM_FLOATS 8192 /* at most; each launch asks for what its rows take */

static bool wdirect_fits(const wgrad_geom &q)
{
    int64_t outs = q.O * q.C * q.kh * q.kw;
    return q.Cg == q.C && outs <= WDIRECT_THREADS * WDIRECT_PER_THREAD &&
           q.O * q.OW + q.C * q.kh * q.W <= WDIRECT_SMEM_FLOATS && q.N * q.OH >= 1;
}

static int64_t wdirect_blocks(const wgrad_geom &q)
{
    int64_t rows = q.N * q.OH;
    return rows < WDIRECT_BLOCKS ? rows : WDIRECT_BLOCKS;
}

static __global__ void wdirect_partials(wgrad_geom q, const float *__restrict__ x, const float *__restrict__ dy,
                                        float *part)
{
    extern __shared__ float sm[]; /* O*OW + C*kh*W floats: small, so 8 blocks fit an SM */
    const int O = (int)q.O, C = (int)q.C, kh = (int)q.kh, kw = (int)q.kw, OH = (int)q.OH, OW = (int)q.OW;
    const int H = (int)q.H, W = (int)q.W, ck = C * kh * kw, outs = O * ck;
    float *dys = sm, *xs = sm + O * OW;
    int own_o[WDIRECT_PER_THREAD], own_x[WDIRECT_PER_THREAD], own_j[WDIRECT_PER_THREAD];
    float acc[WDIRECT_PER_THREAD];
    int mine = 0;
#pragma unroll
    for (int m = 0; m < WDIRECT_PER_THREAD; m++) {
        int e = threadIdx.x + m * blockDim.x;
        if (e < outs)
            mine = m + 1;
        e = e < outs ? e : 0;
        int o = e / ck, r = e - o * ck, c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
        own_o[m] = o * OW;
        own_x[m] = (c * kh + i) * W;
        own_j[m] = j * (int)q.dw - (int)q.pw;
        acc[m] = 0.0f;
    }
    int64_t rows = q.N * (int64_t)OH, P = gridDim.x;
    int64_t r0 = rows * blockIdx.x / P, r1 = rows * (blockIdx.x + 1) / P;
    for (int64_t row = r0; row < r1; row++) {
        int64_t n = row / OH;
        int oh = (int)(row - n * OH);
        __syncthreads(); /* the previous row's reads are done */
        for (int t = threadIdx.x; t < O * OW; t += blockDim.x) {
            int o = t / OW, ow = t - o * OW;
            dys[t] = dy[((n * O + o) * OH + oh) * (int64_t)OW + ow];
        }
        for (int t = threadIdx.x; t < C * kh * W; t += blockDim.x) {
            int cr = t / W, w = t - cr * W, c = cr / kh, i = cr - c * kh;
            int h = oh * (int)q.sh - (int)q.ph + i * (int)q.dh;
            xs[t] = h >= 0 && h < H ? x[((n * C + c) * H + h) * (int64_t)W + w] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int m = 0; m < WDIRECT_PER_THREAD; m++) { /* unrolled: the arrays stay in registers */
            if (m >= mine)
                break;
            const float *d = dys + own_o[m], *xr = xs + own_x[m];
            float a = acc[m];
            for (int ow = 0; ow < OW; ow++) {
                int w = ow * (int)q.sw + own_j[m];
                if (w >= 0 && w < W)
                    a = __fmaf_rn(d[ow], xr[w], a);
            }
            acc[m] = a;
        }
    }
#pragma unroll
    for (int m = 0; m < WDIRECT_PER_THREAD; m++)
        if (m < mine)
            part[(int64_t)blockIdx.x * outs + threadIdx.x + m * blockDim.x] = acc[m];
}

/* dw[e] = the blocks' partials summed by one warp per value: lane l adds partials l,
 * l + 32, ... in order, then the warp's fixed shuffle tree (a serial sum over 1024
 * partials was latency-bound: ~40 µs). */
static __global__ void wdirect_sum(const float *__restrict__ part, float *dw, int64_t outs, int64_t P)
{
    int lane = threadIdx.x & 31;
    int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t e = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); e < outs; e += warps) {
        float a = 0.0f;
        for (int64_t p = lane; p < P; p += 32)
            a = __fadd_rn(a, part[p * outs + e]);
        a = anvil_cuda_warp_sum(a);
        if (lane == 0)
            dw[e] = a;
    }
}

/* ANVIL_ERR_UNSUPPORTED (nothing launched) unless wdirect_fits. */
static anvil_status wgrad_direct(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *x, const anvil_node *w,
                                 const int *a, const void *const *in, void *out, conv_ws ws)
{
    if (!fits_int(x) || !fits_int(dy) || w->shape[1] <= 0)
        return ANVIL_ERR_UNSUPPORTED;
    wgrad_geom q = staging_geom(dy, x, w, a);
    if (!wdirect_fits(q))
        return ANVIL_ERR_UNSUPPORTED;
    int64_t P = wdirect_blocks(q), outs = q.O * q.C * q.kh * q.kw;
    size_t need = (size_t)(P * outs) * sizeof(float);
    if (ws.plan) {
        *ws.plan = need;
        return ANVIL_OK;
    }
    if (ws.bytes < need)
        return anvil_fail(ANVIL_ERR_STATE, "conv2d_bwd_filter: the step has %zu bytes of workspace, not the %zu planned",
                          ws.bytes, need);
    float *part = (float *)ws.p;
    size_t smem = (size_t)(q.O * q.OW + q.C * q.kh * q.W) * sizeof(float);
    wdirect_partials<<<(unsigned int)P, WDIRECT_THREADS, smem, c->stream>>>(q, (const float *)in[1],
                                                                         (const float *)in[0], part);
    ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_filter (direct)"));
    wdirect_sum<<<anvil_cuda_blocks(outs * 32, 256), 256, 0, c->stream>>>(part, (float *)out, outs, P);
    return anvil_cuda_launched(c, "conv2d_bwd_filter (direct sum)");
}

/* ---- small weight gradients as an implicit product (simt_gemm.cuh's conv_wgrad_src):
 * x and dy read in place, nothing staged, the positions split over 2 (or 6, below) blocks
 * per SM and the splits' partial sums added per value in a fixed order by a second kernel.
 * For the cnn's second layer (64 x 288 values over 25k positions; its first, 32 x 9 over
 * 100k, goes to the register-tiled kernel after this section) this replaces im2col +
 * cuBLASLt (~100 µs: 81 + 10 µs here) and, for the first, the direct kernel (42 + 7); taken
 * when the gradient has at most WIMPLICIT_MAX_VALUES values over at most
 * WIMPLICIT_MAX_POSITIONS positions (larger ones: measured on the cnn only; ResNet-18's
 * layers stay on the paths below).  ANVIL_SIMT_GEMM=0 turns it off. */
#define WIMPLICIT_MAX_VALUES 32768
#define WIMPLICIT_MAX_POSITIONS 131072
#define WIMPLICIT_MAX_SPLITS 512

typedef struct {
    anvil_simt_plan plan;
    anvil_simt_gemm g;
    size_t ws_bytes;
} wimplicit_plan;

static bool wimplicit_choose(const anvil_cuda_ctx *c, const wgrad_geom &q, wimplicit_plan *p)
{
    if (anvil_cuda_simt_mode() == 0)
        return false;
    int64_t ck = q.C * q.kh * q.kw, K = q.N * q.OH * q.OW;
    if (q.Cg != q.C || ck * q.O > WIMPLICIT_MAX_VALUES || K > WIMPLICIT_MAX_POSITIONS || K < 1)
        return false;
    memset(p, 0, sizeof *p);
    /* ck not a multiple of 64 (the cnn's 288): 32-row tiles waste no rows, and with ~6
     * blocks per SM the step was 0.2548 ms vs 0.2628 with 64x64 tiles at 2 per SM (64x64
     * at 6 per SM: 0.2706; 32x64 at 2, 4, 8, 12: 0.2961, 0.2602, 0.2549, 0.2596) */
    const bool rows32 = ck > 32 && ck % 64 != 0 && ck % 32 == 0;
    p->plan.cfg = ck <= 32 ? ANVIL_SIMT_32x32 : rows32 ? ANVIL_SIMT_32x64 : ANVIL_SIMT_64x64;
    int bm, bn;
    anvil_simt_tile(p->plan.cfg, &bm, &bn);
    int64_t tiles = ((ck + bm - 1) / bm) * ((q.O + bn - 1) / bn);
    int64_t per_sm = rows32 ? 6 : 2;
    int64_t splits = (per_sm * (int64_t)(c->sm_count > 0 ? c->sm_count : 132) + tiles - 1) / tiles;
    int64_t kmax = (K + 63) / 64;
    splits = splits < kmax ? splits : kmax;
    splits = splits < WIMPLICIT_MAX_SPLITS ? splits : WIMPLICIT_MAX_SPLITS;
    p->plan.splits = (int)(splits > 1 ? splits : 1);
    p->g.m = (int)ck;
    p->g.n = (int)q.O;
    p->g.k = (int)K;
    p->g.ldd = (int)ck;
    p->ws_bytes = anvil_simt_ws_bytes(&p->g, p->plan);
    return true;
}

static anvil_status wgrad_implicit(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *x, const anvil_node *w,
                                   const int *a, const void *const *in, void *out, conv_ws ws)
{
    if (!fits_int(x) || !fits_int(dy) || w->shape[1] <= 0)
        return ANVIL_ERR_UNSUPPORTED;
    wgrad_geom q = staging_geom(dy, x, w, a);
    wimplicit_plan p;
    if (!wimplicit_choose(c, q, &p))
        return ANVIL_ERR_UNSUPPORTED;
    if (ws.plan) {
        *ws.plan = p.ws_bytes;
        return ANVIL_OK;
    }
    if (ws.bytes < p.ws_bytes)
        return anvil_fail(ANVIL_ERR_STATE, "conv2d_bwd_filter: the step has %zu bytes of workspace, not the %zu planned",
                          ws.bytes, p.ws_bytes);
    p.g.D = (float *)out;
    cudaError_t e;
#define WIMPLICIT_LAUNCH(BM, BN, TM, TN)                                                                      \
    do {                                                                                                      \
        anvil_simt_conv_wgrad_src<BM, BN> src;                                                                \
        memset(&src, 0, sizeof src);                                                                          \
        src.x = (const float *)in[1];                                                                         \
        src.dy = (const float *)in[0];                                                                        \
        src.C = (int)q.C, src.H = (int)q.H, src.W = (int)q.W, src.O = (int)q.O, src.OH = (int)q.OH;           \
        src.OW = (int)q.OW, src.kh = (int)q.kh, src.kw = (int)q.kw, src.sh = (int)q.sh, src.sw = (int)q.sw;   \
        src.ph = (int)q.ph, src.pw = (int)q.pw, src.dh = (int)q.dh, src.dw = (int)q.dw;                       \
        e = anvil_simt_launch_src<BM, BN, TM, TN>(src, &p.g, p.plan.splits, (float *)ws.p, NULL, c->stream, false); \
    } while (0)
    if (p.plan.cfg == ANVIL_SIMT_32x32)
        WIMPLICIT_LAUNCH(32, 32, 2, 2);
    else if (p.plan.cfg == ANVIL_SIMT_32x64)
        WIMPLICIT_LAUNCH(32, 64, 2, 4);
    else
        WIMPLICIT_LAUNCH(64, 64, 4, 4);
#undef WIMPLICIT_LAUNCH
    if (e != cudaSuccess)
        return anvil_cuda_fail(e, "conv2d_bwd_filter (implicit product)");
    return anvil_cuda_launched(c, "conv2d_bwd_filter (implicit product)");
}

/* ---- weight gradients with few values over many positions, with register tiles (the
 * cnn's first layer: 32 x 1x3x3 over 100k positions).  The implicit product above
 * re-derives each operand's input coordinates per element (26.6 + 4.8 µs there, ncu), the
 * direct kernel stages one row at a time (42 µs).  Here 2 blocks per SM each take a
 * contiguous range of output rows (n, oh) and stage up to q.rows of them at a time (never
 * across samples) in shared memory with cp.async: per output channel its dy rows (one
 * contiguous run: a warp per channel, coalesced, every copy in flight at once), per input
 * channel the input rows its taps read, zero-filled outside x (so the inner loop has no
 * bounds checks).  Every thread owns TO output channels x kh*kw taps of one input channel
 * in registers: per position TO dy values and kh*kw x values feed TO*kh*kw multiply-adds.
 * The positions are split over `slices` threads per channel pair, added by a fixed
 * shuffle tree within a warp and then in warp order; the blocks' partial dW go to the
 * workspace and wtile_sum adds them in block order (coalesced: 32 values x 32 block slices
 * per block): deterministic, a function of the shapes only.  On the cnn: 13.9 + 3.8 µs.
 * Taken for at most WTILE_MAX_VALUES values, kh*kw <= WTILE_KK, ungrouped; ANVIL_SIMT_GEMM=0
 * turns it off.  Tried for the second layer (64 x 32x3x3 over 25k): 84.5 + 6.3 µs, no
 * faster than the implicit product there, and with one block per SM for its whole run it
 * slowed the step (0.2747 vs 0.2622 ms), so larger gradients keep the paths below. */
#define WTILE_MAX_VALUES 1024
#define WTILE_KK 9
#define WTILE_THREADS 256
#define WTILE_SMEM_FLOATS 12288 /* 48 KB: no opt-in needed */

typedef struct {
    int N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw;
    int kk, WP, CS, OSTR, rows, pairs, slices, outs, to;
    int sred; /* the slices' sums added through shared memory (stride outs + 1), not shuffles */
} wtile_geom;

template <int TO>
static __global__ void __launch_bounds__(WTILE_THREADS) wtile_partials(wtile_geom q, const float *__restrict__ x,
                                                                       const float *__restrict__ dy, float *part)
{
    extern __shared__ float sm[]; /* dy [O][OSTR] (rows x OW each), then x [C][CS] (input rows x WP each) */
    float *dys = sm, *xs = sm + q.O * q.OSTR;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const int pair = tid % q.pairs, slice = tid / q.pairs, slices = q.slices;
    const bool active = slice < slices;
    const int c = pair % q.C, o0 = (pair / q.C) * TO, OW = q.OW, WP = q.WP;
    /* taps past kk read tap 0 again: no guards in the loop, their sums are never stored */
    int toff[WTILE_KK];
#pragma unroll
    for (int t = 0; t < WTILE_KK; t++) {
        int tt = t < q.kk ? t : 0, i = tt / q.kw, j = tt - i * q.kw;
        toff[t] = i * q.dh * WP + j * q.dw;
    }
    /* a slice steps `slices` positions at a time: sr rows and sc columns, then one wrap */
    const int sr = slices / OW, sc = slices - sr * OW;
    const int xstep = sr * q.sh * WP + sc * q.sw, xwrap = q.sh * WP - OW * q.sw;
    float acc[TO][WTILE_KK];
#pragma unroll
    for (int k = 0; k < TO; k++)
#pragma unroll
        for (int t = 0; t < WTILE_KK; t++)
            acc[k][t] = 0.0f;
    const int total = q.N * q.OH;
    const int r0 = (int)((int64_t)total * blockIdx.x / gridDim.x), r1 = (int)((int64_t)total * (blockIdx.x + 1) / gridDim.x);
    for (int s0 = r0; s0 < r1;) {
        const int n = s0 / q.OH, oh0 = s0 - n * q.OH;
        int nr = r1 - s0 < q.rows ? r1 - s0 : q.rows;
        nr = q.OH - oh0 < nr ? q.OH - oh0 : nr;
        const int len = nr * OW, hr = (nr - 1) * q.sh + (q.kh - 1) * q.dh + 1, h0 = oh0 * q.sh - q.ph;
        __syncthreads(); /* the previous stage's reads are done */
        for (int o = warp; o < q.O; o += warps) {
            const float *src = dy + (((int64_t)n * q.O + o) * q.OH + oh0) * OW;
            for (int k = lane; k < len; k += 32)
                anvil_cp_async4(dys + o * q.OSTR + k, src + k, true);
        }
        for (int row = warp; row < q.C * hr; row += warps) {
            const int cc = row / hr, i = row - cc * hr, h = h0 + i;
            const bool hin = h >= 0 && h < q.H;
            const float *src = hin ? x + (((int64_t)n * q.C + cc) * q.H + h) * q.W - q.pw : x;
            float *d = xs + cc * q.CS + i * WP;
            for (int wq = lane; wq < WP; wq += 32) {
                const int w = wq - q.pw;
                const bool in = hin && w >= 0 && w < q.W;
                anvil_cp_async4(d + wq, in ? src + wq : x, in);
            }
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
        __syncthreads();
        s0 += nr;
        if (!active || slice >= len)
            continue;
        int r = slice / OW, ow = slice - r * OW;
        const float *xr = xs + c * q.CS + r * q.sh * WP + ow * q.sw;
        const float *dr = dys + o0 * q.OSTR + slice;
        for (int p = slice; p < len; p += slices) {
            float xv[WTILE_KK];
#pragma unroll
            for (int t = 0; t < WTILE_KK; t++)
                xv[t] = xr[toff[t]];
#pragma unroll
            for (int k = 0; k < TO; k++) {
                const float d = dr[k * q.OSTR];
#pragma unroll
                for (int t = 0; t < WTILE_KK; t++)
                    acc[k][t] = __fmaf_rn(d, xv[t], acc[k][t]);
            }
            dr += slices;
            xr += xstep;
            ow += sc;
            if (ow >= OW) {
                ow -= OW;
                xr += xwrap;
            }
        }
    }
    if (q.sred) {
        /* every thread's sums into shared memory, then each value's slices added in slice
         * order by one thread (the shuffle tree below costs 3-5 shuffles and adds per sum;
         * this, one store and one load) */
        __syncthreads(); /* the staged inputs are no longer read */
        const int stride = q.outs + 1; /* lanes of one warp on distinct banks */
        if (active)
#pragma unroll
            for (int k = 0; k < TO; k++)
#pragma unroll
                for (int t = 0; t < WTILE_KK; t++)
                    if (t < q.kk)
                        sm[slice * stride + ((o0 + k) * q.C + c) * q.kk + t] = acc[k][t];
        __syncthreads();
        for (int e = tid; e < q.outs; e += blockDim.x) {
            float a = sm[e];
            for (int g = 1; g < slices; g++)
                a = __fadd_rn(a, sm[g * stride + e]);
            part[(int64_t)blockIdx.x * q.outs + e] = a;
        }
        return;
    }
    /* the slices' sums: first across the slices within a warp (fixed shuffle tree), then
     * the warps' in warp order */
#pragma unroll
    for (int b = 0; b < 5; b++) /* offsets pairs, 2 pairs, ... 16: unrolled, a uniform test */
        if ((1 << b) >= q.pairs && q.pairs < 32)
#pragma unroll
            for (int k = 0; k < TO; k++)
#pragma unroll
                for (int t = 0; t < WTILE_KK; t++)
                    acc[k][t] = __fadd_rn(acc[k][t], __shfl_xor_sync(0xffffffffu, acc[k][t], 1 << b));
    const int groups = q.pairs < 32 ? slices * q.pairs / 32 : slices; /* partial sets left */
    const int group = q.pairs < 32 ? warp : slice;
    const bool writer = active && (q.pairs >= 32 || lane < q.pairs);
    float *dst = part + (int64_t)blockIdx.x * q.outs;
    if (groups > 1) {
        __syncthreads();
        dst = sm + group * q.outs;
    }
    if (writer)
#pragma unroll
        for (int k = 0; k < TO; k++)
#pragma unroll
            for (int t = 0; t < WTILE_KK; t++)
                if (t < q.kk)
                    dst[((o0 + k) * q.C + c) * q.kk + t] = acc[k][t];
    if (groups > 1) {
        __syncthreads();
        for (int e = tid; e < q.outs; e += blockDim.x) {
            float a = sm[e];
            for (int g = 1; g < groups; g++)
                a = __fadd_rn(a, sm[g * q.outs + e]);
            part[(int64_t)blockIdx.x * q.outs + e] = a;
        }
    }
}

/* dw[v] = sum over blocks p of part[p][v], in p order per slice (p = s, s+32, ...) and
 * then the 32 slices in order: threads (32 values, 32 slices), reads coalesced along v. */
static __global__ void __launch_bounds__(1024) wtile_sum(const float *__restrict__ part, float *dw, int outs, int P)
{
    __shared__ float s[32][33];
    const int v = blockIdx.x * 32 + threadIdx.x, sl = threadIdx.y;
    float a = 0.0f;
    if (v < outs)
        for (int p = sl; p < P; p += 32)
            a = __fadd_rn(a, part[(int64_t)p * outs + v]);
    s[sl][threadIdx.x] = a;
    __syncthreads();
    if (sl == 0 && v < outs) {
        float t = s[0][threadIdx.x];
        for (int k = 1; k < 32; k++)
            t = __fadd_rn(t, s[k][threadIdx.x]);
        dw[v] = t;
    }
}

anvil_status anvil_conv_sum_partials(anvil_cuda_ctx *c, const float *part, float *dw, int outs, int P,
                                     const char *what)
{
    wtile_sum<<<(unsigned int)((outs + 31) / 32), dim3(32, 32), 0, c->stream>>>(part, dw, outs, P);
    return anvil_cuda_launched(c, what);
}

/* TO (output channels per thread): the largest of 8, 4, 2, 1 dividing O with at most
 * WTILE_THREADS channel pairs (C * O/TO), a number that divides or is a multiple of a warp
 * (so a warp's slices reduce by shuffles); more channels per thread amortize the x loads
 * and the loop over more multiply-adds. */
static bool wtile_choose(const anvil_cuda_ctx *c, const wgrad_geom &g, wtile_geom *q, int *blocks, size_t *smem)
{
    if (anvil_cuda_simt_mode() == 0 || g.Cg != g.C)
        return false;
    int64_t kk = g.kh * g.kw, outs = g.O * g.C * kk, positions = g.N * g.OH * g.OW;
    if (kk > WTILE_KK || outs > WTILE_MAX_VALUES || positions < 1)
        return false;
    int to = 0;
    int64_t pairs = 0;
    for (int t = 8; t >= 1 && !to; t /= 2) {
        pairs = g.C * (g.O / t);
        if (g.O % t == 0 && pairs <= WTILE_THREADS && (32 % pairs == 0 || pairs % 32 == 0))
            to = t;
    }
    if (!to)
        return false;
    memset(q, 0, sizeof *q);
    q->N = (int)g.N, q->C = (int)g.C, q->H = (int)g.H, q->W = (int)g.W, q->O = (int)g.O;
    q->OH = (int)g.OH, q->OW = (int)g.OW, q->kh = (int)g.kh, q->kw = (int)g.kw;
    q->sh = (int)g.sh, q->sw = (int)g.sw, q->ph = (int)g.ph, q->pw = (int)g.pw, q->dh = (int)g.dh, q->dw = (int)g.dw;
    q->kk = (int)kk, q->to = to, q->pairs = (int)pairs, q->outs = (int)outs;
    q->slices = (int)(WTILE_THREADS / pairs);
    q->WP = (int)((g.OW - 1) * g.sw + (g.kw - 1) * g.dw + 1);
    /* the most output rows per stage (within a sample) whose dy and x rows fit; odd channel
     * strides, so that lanes that differ in o (or c) hit distinct banks */
    int64_t rows = 0, st = 0;
    for (int64_t r = 1; r <= g.OH; r++) {
        int64_t hr = (r - 1) * g.sh + (g.kh - 1) * g.dh + 1;
        int64_t need = g.O * ((r * g.OW) | 1) + g.C * ((hr * q->WP) | 1);
        if (need > WTILE_SMEM_FLOATS)
            break;
        rows = r, st = need;
        q->OSTR = (int)((r * g.OW) | 1), q->CS = (int)((hr * q->WP) | 1);
    }
    int64_t groups = pairs < 32 ? WTILE_THREADS / 32 : q->slices; /* partial sets after the shuffles */
    if (rows < 1 || (groups > 1 && groups * outs > WTILE_SMEM_FLOATS))
        return false;
    q->rows = (int)rows;
    int64_t total = g.N * g.OH, sm = c->sm_count > 0 ? c->sm_count : 132;
    int64_t p = 2 * sm; /* 2 blocks per SM fit (registers); 4 were slower (two waves) */
    *blocks = (int)(p < total ? p : total);
    size_t red = groups > 1 ? (size_t)groups * (size_t)outs : 0;
    /* few pairs (the cnn's first layer: 4): the slices' sums through shared memory when
     * two blocks' worth fits an SM (ANVIL_WTILE_SHUFFLE=1: the shuffle tree) */
    const char *e = getenv("ANVIL_WTILE_SHUFFLE");
    size_t sred = (size_t)q->slices * (size_t)(outs + 1);
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device) != cudaSuccess) {
        cudaGetLastError();
        optin = 0;
    }
    if (pairs < 32 && !(e && strcmp(e, "1") == 0) && 2 * sred * sizeof(float) <= (size_t)optin) {
        q->sred = 1;
        red = sred;
    }
    *smem = ((size_t)st > red ? (size_t)st : red) * sizeof(float);
    return true;
}

static anvil_status wgrad_tiled(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *x, const anvil_node *w,
                                const int *a, const void *const *in, void *out, conv_ws ws)
{
    if (!fits_int(x) || !fits_int(dy) || w->shape[1] <= 0)
        return ANVIL_ERR_UNSUPPORTED;
    wgrad_geom g = staging_geom(dy, x, w, a);
    wtile_geom q;
    int P;
    size_t smem;
    if (!wtile_choose(c, g, &q, &P, &smem))
        return ANVIL_ERR_UNSUPPORTED;
    size_t need = (size_t)P * (size_t)q.outs * sizeof(float);
    if (ws.plan) {
        *ws.plan = need;
        return ANVIL_OK;
    }
    if (ws.bytes < need)
        return anvil_fail(ANVIL_ERR_STATE, "conv2d_bwd_filter: the step has %zu bytes of workspace, not the %zu planned",
                          ws.bytes, need);
    float *part = (float *)ws.p;
    const float *xp = (const float *)in[1], *dyp = (const float *)in[0];
    if (smem > 48 * 1024) {
        cudaError_t e = q.to == 8   ? cudaFuncSetAttribute(wtile_partials<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)
                        : q.to == 4 ? cudaFuncSetAttribute(wtile_partials<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)
                        : q.to == 2 ? cudaFuncSetAttribute(wtile_partials<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)
                                    : cudaFuncSetAttribute(wtile_partials<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        ANVIL_CUDA_CHECK(e, "conv2d_bwd_filter (register tiles): cudaFuncSetAttribute");
    }
    switch (q.to) {
    case 8: wtile_partials<8><<<P, WTILE_THREADS, smem, c->stream>>>(q, xp, dyp, part); break;
    case 4: wtile_partials<4><<<P, WTILE_THREADS, smem, c->stream>>>(q, xp, dyp, part); break;
    case 2: wtile_partials<2><<<P, WTILE_THREADS, smem, c->stream>>>(q, xp, dyp, part); break;
    default: wtile_partials<1><<<P, WTILE_THREADS, smem, c->stream>>>(q, xp, dyp, part); break;
    }
    ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_filter (register tiles)"));
    return anvil_conv_sum_partials(c, part, (float *)out, q.outs, P, "conv2d_bwd_filter (register tiles, sum)");
}

/* Returns ANVIL_ERR_UNSUPPORTED (nothing launched) when one sample's staging exceeds
 * IM2COL_WS_MAX.  Larger batches go through the workspace in equal chunks of samples,
 * each chunk's product added onto the last (beta 1): a fixed order, so deterministic. */
static anvil_status wgrad_gemm(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *x, const anvil_node *w,
                               const int *a, const void *const *in, void *out, conv_ws ws)
{
    if (!fits_int(x) || !fits_int(dy) || w->shape[1] <= 0 || x->shape[1] % w->shape[1] != 0)
        return ANVIL_ERR_UNSUPPORTED;
    wgrad_geom q = staging_geom(dy, x, w, a);
    int64_t groups = q.C / q.Cg, batch = q.N, ck = q.Cg * q.kh * q.kw, chunk = 0;
    size_t per_sample = (size_t)(q.OH * q.OW) * (size_t)(ck + q.Og) * sizeof(float);
    anvil_status st = staging_chunks(batch, per_sample, ws, "conv2d_bwd_filter", &chunk);
    if (st != ANVIL_OK || ws.plan)
        return st;
    for (int64_t n0 = 0; n0 < batch; n0 += chunk) {
        q.N = batch - n0 < chunk ? batch - n0 : chunk;
        int64_t K = q.N * q.OH * q.OW;
        const float *xs = (const float *)in[1] + n0 * q.C * q.H * q.W;
        const float *dys = (const float *)in[0] + n0 * q.O * q.OH * q.OW;
        float *col = (float *)ws.p, *dyt = col + K * ck;
        for (int64_t g = 0; g < groups; g++) {
            wgrad_im2col<<<stage_grid(&q, ck), stage_block(&q), 0, c->stream>>>(q, g, xs, col);
            ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_filter (im2col)"));
            wgrad_dy_rows<<<stage_grid(&q, q.Og), stage_block(&q), 0, c->stream>>>(q, g, dys, dyt);
            ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_filter (dy rows)"));
            /* row-major dW_g [Og, ck] = dyT colT^T, i.e. column-major [ck, Og] = A^T B with
             * A = colT as column-major [K, ck] and B = dyT as column-major [K, Og] */
            ANVIL_TRY(anvil_cuda_gemm_f32(c, true, false, ck, q.Og, K, col, K, dyt, K, n0 == 0 ? 0.0f : 1.0f,
                                          (float *)out + g * q.Og * ck, ck, "conv2d_bwd_filter"));
        }
    }
    return ANVIL_OK;
}

/* ---- the data gradient of strided (or dilated) ungrouped convolutions as a product and
 * a gather.  cuDNN's deterministic fp32 data-gradient kernel took 2.4 ms on ResNet-18's
 * 256->512 stride-2 layer (its forward: 0.41 ms).  Instead, per chunk of samples with
 * K = n*OH*OW positions: dyT [O, K] (wgrad_dy_rows), cols [ck, K] = W^T dyT through
 * cuBLASLt, then every dx element sums the cols entries that its taps hit, in tap order
 * (a gather, no atomics: deterministic). */
static __global__ void dgrad_col2im(wgrad_geom q, const float *__restrict__ cols, float *dx)
{
    /* 32-bit index math (the caller checks that it fits): 64-bit divisions made this
     * kernel 10x slower than its memory traffic */
    const int W = (int)q.W, H = (int)q.H, C = (int)q.C, OH = (int)q.OH, OW = (int)q.OW, kh = (int)q.kh, kw = (int)q.kw;
    const int sh = (int)q.sh, sw = (int)q.sw, ph = (int)q.ph, pw = (int)q.pw, dh = (int)q.dh, dw = (int)q.dw;
    const unsigned K = (unsigned)(q.N * q.OH * q.OW), hw = (unsigned)(OH * OW);
    const unsigned total = (unsigned)(q.N * q.C * q.H * q.W);
    for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
        int wq = (int)(e % (unsigned)W), t = (int)(e / (unsigned)W), h = t % H;
        t /= H;
        int ch = t % C, n = t / C;
        float acc = 0.0f;
        for (int i = 0; i < kh; i++) {
            int oh = h + ph - i * dh;
            if (oh < 0 || oh % sh != 0 || oh / sh >= OH)
                continue;
            oh /= sh;
            const float *row = cols + (size_t)((ch * kh + i) * kw) * K + (unsigned)n * hw + (unsigned)(oh * OW);
            for (int j = 0; j < kw; j++) {
                int ow = wq + pw - j * dw;
                if (ow < 0 || ow % sw != 0 || ow / sw >= OW)
                    continue;
                acc += row[(size_t)j * K + (unsigned)(ow / sw)];
            }
        }
        dx[e] = acc;
    }
}

/* Returns ANVIL_ERR_UNSUPPORTED (nothing launched) for grouped convolutions, and when one
 * sample's staging exceeds IM2COL_WS_MAX. */
static anvil_status dgrad_gemm(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *w, const anvil_node *x,
                               const int *a, const void *const *in, void *out, conv_ws ws)
{
    if (w->shape[1] != x->shape[1] || x->shape[1] <= 0 || !fits_int(x) || !fits_int(dy))
        return ANVIL_ERR_UNSUPPORTED;
    wgrad_geom q = staging_geom(dy, x, w, a);
    int64_t batch = q.N, ck = q.C * q.kh * q.kw, chunk = 0;
    size_t per_sample = (size_t)(q.OH * q.OW) * (size_t)(ck + q.O) * sizeof(float);
    anvil_status st = staging_chunks(batch, per_sample, ws, "conv2d_bwd_data", &chunk);
    if (st != ANVIL_OK || ws.plan)
        return st;
    for (int64_t n0 = 0; n0 < batch; n0 += chunk) {
        q.N = batch - n0 < chunk ? batch - n0 : chunk;
        int64_t K = q.N * q.OH * q.OW;
        const float *dys = (const float *)in[0] + n0 * q.O * q.OH * q.OW;
        float *dxs = (float *)out + n0 * q.C * q.H * q.W;
        float *dyt = (float *)ws.p, *cols = dyt + K * q.O;
        wgrad_dy_rows<<<stage_grid(&q, q.O), stage_block(&q), 0, c->stream>>>(q, 0, dys, dyt);
        ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_data (dy rows)"));
        /* row-major cols [ck, K] = W^T dyT, i.e. column-major [K, ck] = dyT_cm [K, O] x
         * (W_cm [ck, O])^T */
        ANVIL_TRY(anvil_cuda_gemm_f32(c, false, true, K, ck, q.O, dyt, K, (const float *)in[1], ck, 0.0f, cols, K,
                                      "conv2d_bwd_data"));
        int64_t total = q.N * q.C * q.H * q.W;
        dgrad_col2im<<<anvil_cuda_blocks(total, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(q, cols, dxs);
        ANVIL_TRY(anvil_cuda_launched(c, "conv2d_bwd_data (col2im)"));
    }
    return ANVIL_OK;
}

/* dw = conv2d's adjoint in w of dy: in (dy, x), the node is w's shape.  Winograd layers
 * (the rule above) through cuDNN's non-fused Winograd; others through wgrad_gemm; what
 * neither takes, through cuDNN's heuristic order. */
static anvil_status conv2d_bwd_filter_run(anvil_cuda_ctx *c, const anvil_node *dy, const anvil_node *x,
                                          const anvil_node *w, const int *ia, const void *const *in, void *out,
                                          conv_ws ws)
{
    dnn_conv dd, *d = &dd;
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0;
    const float one = 1.0f, zero = 0.0f;
    anvil_status rc = dnn_setup(c, d, "conv2d_bwd_filter", x, w, dy, ia);
    if (rc != ANVIL_OK)
        goto done;
    {
        cudnnHandle_t h = (cudnnHandle_t)c->cudnn;
        DNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d->x, d->y, d->conv, d->w,
                                                                CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf),
                  "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
        auto ws_of = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *b) {
            return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d->x, d->y, d->conv, d->w, a, b);
        };
        auto exec = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t need) {
            return cudnnConvolutionBackwardFilter(h, &one, d->x, in[1], d->y, in[0], d->conv, a, need ? ws.p : NULL,
                                                  need, &zero, d->w, out);
        };
        size_t limit = ws.plan ? DNN_WS_MAX : ws.bytes;
        if (winograd_layer(d)) {
            rc = dnn_run(d, perf, n, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED, true, bwd_filter_rank, ws_of,
                         limit, ws.plan, exec, "cudnnConvolutionBackwardFilter", x, w);
            if (rc != ANVIL_ERR_UNSUPPORTED)
                goto done;
        }
        rc = wgrad_tiled(c, dy, x, w, ia, in, out, ws); /* few values, many positions */
        if (rc != ANVIL_ERR_UNSUPPORTED)
            goto done;
        if (same3x3(x, w, ia)) {
            rc = anvil_conv_tiles_wgrad(c, x->shape[0], x->shape[1], w->shape[0], x->shape[2], x->shape[3],
                                        in ? (const float *)in[1] : NULL, in ? (const float *)in[0] : NULL,
                                        (float *)out, ws.p, ws.bytes, ws.plan);
            if (rc != ANVIL_ERR_UNSUPPORTED)
                goto done;
        }
        rc = wgrad_implicit(c, dy, x, w, ia, in, out, ws);
        if (rc != ANVIL_ERR_UNSUPPORTED)
            goto done;
        rc = wgrad_direct(c, dy, x, w, ia, in, out, ws);
        if (rc != ANVIL_ERR_UNSUPPORTED)
            goto done;
        rc = wgrad_gemm(c, dy, x, w, ia, in, out, ws);
        if (rc != ANVIL_ERR_UNSUPPORTED)
            goto done;
        rc = dnn_run(d, perf, n, -1, false, bwd_filter_rank, ws_of, limit, ws.plan, exec,
                     "cudnnConvolutionBackwardFilter", x, w);
    }
done:
    dnn_destroy(d);
    return rc;
}

ANVIL_CUDA_KERNEL(conv2d_bwd_filter)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    if (s->in_node[1]->shape[0] == 0) {
        ANVIL_CUDA_CHECK(cudaMemsetAsync(s->out, 0, (size_t)anvil_node_numel(s->node) * sizeof(float), c->stream),
                         "conv2d_bwd_filter: cudaMemsetAsync");
        return ANVIL_OK;
    }
    return conv2d_bwd_filter_run(c, s->in_node[0], s->in_node[1], s->node, s->node->ia, s->in, s->out, step_ws(s));
}

/* The workspace each kernel above takes, for the planner: the same choices, nothing run.
 * A failure here (e.g. no cuDNN handle) plans none; the kernel then reports it. */
extern "C" size_t anvil_cuda_conv_workspace(anvil_cuda_ctx *c, const anvil_graph *g, const anvil_node *n)
{
    if (n->op != OP_CONV2D && n->op != OP_CONV2D_BWD_DATA && n->op != OP_CONV2D_BWD_FILTER)
        return 0;
    const anvil_node *in0 = &g->nodes[n->in[0]], *in1 = &g->nodes[n->in[1]];
    size_t need = 0;
    conv_ws ws = {NULL, 0, &need};
    anvil_status rc = ANVIL_OK;
    if (n->op == OP_CONV2D && in0->shape[0] > 0)
        rc = conv2d_run(c, in0, in1, n, n->ia, n->n_in >= 3, NULL, NULL, ws);
    else if (n->op == OP_CONV2D_BWD_DATA && n->shape[0] > 0)
        rc = conv2d_bwd_data_run(c, in0, in1, n, n->ia, NULL, NULL, ws);
    else if (n->op == OP_CONV2D_BWD_FILTER && in1->shape[0] > 0)
        rc = conv2d_bwd_filter_run(c, in0, in1, n, n->ia, NULL, NULL, ws);
    if (rc != ANVIL_OK)
        anvil_clear_error();
    return rc == ANVIL_OK ? need : 0;
}

#endif /* ANVIL_HAVE_CUDNN */
