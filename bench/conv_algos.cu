/* conv_algos.cu — what each of cuDNN's convolution algorithms costs on the layers of the
 * benchmark networks (resnet18-cifar at batch 256, cnn-fmnist at batch 128), fp32 FMA
 * math as Anvil runs them: cudnnFind*AlgorithmEx times every algorithm of the forward,
 * data-gradient and weight-gradient passes with up to 1 GiB of workspace.  One line per
 * (layer, pass, algorithm): milliseconds, workspace, deterministic or not, and a mark on
 * the heuristic's pick (cuDNN's first deterministic FMA candidate, non-FFT/Winograd
 * first: what conv.cu ran before its measured rule, and still runs outside it).  Used to
 * decide conv.cu's rule, and (the same layers in NHWC) the layout; not a test.
 *   build/bench_conv_algos [repeat=1] */
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stdio.h>
#include <stdlib.h>

#include "cudnn_check.h"

typedef struct {
    const char *name;
    int N, C, H, W, O, k, stride, pad;
} layer;

static const layer layers[] = {
    {"r18 stem", 256, 3, 32, 32, 64, 3, 1, 1},       {"r18 l1 64x32x32", 256, 64, 32, 32, 64, 3, 1, 1},
    {"r18 l2 down s2", 256, 64, 32, 32, 128, 3, 2, 1}, {"r18 l2 128x16x16", 256, 128, 16, 16, 128, 3, 1, 1},
    {"r18 l2 1x1 s2", 256, 64, 32, 32, 128, 1, 2, 0}, {"r18 l3 down s2", 256, 128, 16, 16, 256, 3, 2, 1},
    {"r18 l3 256x8x8", 256, 256, 8, 8, 256, 3, 1, 1}, {"r18 l3 1x1 s2", 256, 128, 16, 16, 256, 1, 2, 0},
    {"r18 l4 down s2", 256, 256, 8, 8, 512, 3, 2, 1}, {"r18 l4 512x4x4", 256, 512, 4, 4, 512, 3, 1, 1},
    {"r18 l4 1x1 s2", 256, 256, 8, 8, 512, 1, 2, 0},  {"cnn conv1", 128, 1, 28, 28, 32, 3, 1, 1},
    {"cnn conv2", 128, 32, 14, 14, 64, 3, 1, 1},
};

static bool fma_math(cudnnMathType_t m) { return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH; }

static const char *fmt_name = "NCHW";

template <typename Perf>
static void print_all(const char *layer_name, const char *pass, const Perf *perf, int n, int pick)
{
    for (int i = 0; i < n; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || !fma_math(perf[i].mathType))
            continue;
        printf("%s %-18s %-6s algo %d  %9.4f ms  ws %8.1f MB  %s%s\n", fmt_name, layer_name, pass, (int)perf[i].algo,
               perf[i].time,
               perf[i].memory / 1048576.0, perf[i].determinism == CUDNN_DETERMINISTIC ? "det" : "nondet",
               (int)perf[i].algo == pick ? "  <- heuristic's pick" : "");
    }
}

/* The heuristic's first deterministic FMA candidate within ws, direct before transforms. */
template <typename Perf, typename IsTransform, typename WsOf>
static int heuristic_pick(const Perf *perf, int n, IsTransform is_transform, WsOf ws_of, size_t ws_max)
{
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            size_t ws = 0;
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC ||
                !fma_math(perf[i].mathType) || (pass == 0) != !is_transform(perf[i].algo))
                continue;
            if (ws_of(perf[i].algo, &ws) != CUDNN_STATUS_SUCCESS || ws > ws_max)
                continue;
            return (int)perf[i].algo;
        }
    return -1;
}

int main(int argc, char **argv)
{
    int repeat = argc > 1 ? atoi(argv[1]) : 1;
    const size_t WS = (size_t)1 << 30;
    cudnnHandle_t h;
    CK(cudnnCreate(&h));
    void *ws = NULL, *x = NULL, *w = NULL, *y = NULL;
    size_t big = (size_t)256 * 64 * 32 * 32 * 4 * 2;
    if (cudaMalloc(&ws, WS) != cudaSuccess || cudaMalloc(&x, big) != cudaSuccess || cudaMalloc(&w, (size_t)64 << 20) != cudaSuccess ||
        cudaMalloc(&y, big) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        return 1;
    }
    cudaMemset(x, 0, big);
    cudaMemset(w, 0, (size_t)64 << 20);
    cudaMemset(y, 0, big);
    const size_t n_layers = sizeof layers / sizeof layers[0];
    for (int r = 0; r < repeat; r++)
        for (size_t k = 0; k < 2 * n_layers; k++) {
            int f = (int)(k / n_layers);
            size_t li = k % n_layers;
            /* NHWC: activations channels-last and filters KRSC, the layout cuDNN's tensor-core
             * kernels prefer; timed to decide whether fp32 FMA convolutions gain from it */
            cudnnTensorFormat_t tf = f ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
            fmt_name = f ? "NHWC" : "NCHW";
            const layer *L = &layers[li];
            int OH = (L->H + 2 * L->pad - L->k) / L->stride + 1, OW = (L->W + 2 * L->pad - L->k) / L->stride + 1;
            cudnnTensorDescriptor_t xd, yd;
            cudnnFilterDescriptor_t wd;
            cudnnConvolutionDescriptor_t cd;
            CK(cudnnCreateTensorDescriptor(&xd));
            CK(cudnnCreateTensorDescriptor(&yd));
            CK(cudnnCreateFilterDescriptor(&wd));
            CK(cudnnCreateConvolutionDescriptor(&cd));
            CK(cudnnSetTensor4dDescriptor(xd, tf, CUDNN_DATA_FLOAT, L->N, L->C, L->H, L->W));
            CK(cudnnSetTensor4dDescriptor(yd, tf, CUDNN_DATA_FLOAT, L->N, L->O, OH, OW));
            CK(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, tf, L->O, L->C, L->k, L->k));
            CK(cudnnSetConvolution2dDescriptor(cd, L->pad, L->pad, L->stride, L->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                               CUDNN_DATA_FLOAT));
            CK(cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH));
            int n = 0;
            {
                cudnnConvolutionFwdAlgoPerf_t hp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT], fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
                CK(cudnnGetConvolutionForwardAlgorithm_v7(h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, hp));
                auto tr = [](cudnnConvolutionFwdAlgo_t a) {
                    return a == CUDNN_CONVOLUTION_FWD_ALGO_FFT || a == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
                           a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD || a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
                };
                auto wsof = [&](cudnnConvolutionFwdAlgo_t a, size_t *b) {
                    return cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, yd, a, b);
                };
                int pick = heuristic_pick(hp, n, tr, wsof, WS);
                CK(cudnnFindConvolutionForwardAlgorithmEx(h, xd, x, wd, w, cd, yd, y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                          &n, fp, ws, WS));
                print_all(L->name, "fwd", fp, n, pick);
            }
            {
                cudnnConvolutionBwdDataAlgoPerf_t hp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT],
                    fp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
                CK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, wd, yd, cd, xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n,
                                                               hp));
                auto tr = [](cudnnConvolutionBwdDataAlgo_t a) {
                    return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
                           a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
                           a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
                };
                auto wsof = [&](cudnnConvolutionBwdDataAlgo_t a, size_t *b) {
                    return cudnnGetConvolutionBackwardDataWorkspaceSize(h, wd, yd, cd, xd, a, b);
                };
                int pick = heuristic_pick(hp, n, tr, wsof, WS);
                CK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, wd, w, yd, y, cd, xd, x,
                                                               CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, fp, ws, WS));
                print_all(L->name, "dgrad", fp, n, pick);
            }
            {
                cudnnConvolutionBwdFilterAlgoPerf_t hp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT],
                    fp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
                CK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, xd, yd, cd, wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                 &n, hp));
                auto tr = [](cudnnConvolutionBwdFilterAlgo_t a) {
                    return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
                           a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
                };
                auto wsof = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *b) {
                    return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, xd, yd, cd, wd, a, b);
                };
                int pick = heuristic_pick(hp, n, tr, wsof, WS);
                CK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, xd, x, yd, y, cd, wd, w,
                                                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, fp, ws, WS));
                print_all(L->name, "wgrad", fp, n, pick);
            }
            cudnnDestroyConvolutionDescriptor(cd);
            cudnnDestroyFilterDescriptor(wd);
            cudnnDestroyTensorDescriptor(yd);
            cudnnDestroyTensorDescriptor(xd);
        }
    cudaFree(ws);
    cudaFree(x);
    cudaFree(w);
    cudaFree(y);
    cudnnDestroy(h);
    return 0;
}
