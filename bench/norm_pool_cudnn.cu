/* norm_pool_cudnn.cu — what cuDNN's batch norm and pooling would cost on the benchmark
 * networks' layers, and whether they repeat bit for bit: resnet18-cifar's batch norms at
 * batch 256 (five layers of each shape) and cnn-fmnist's two 2x2 max-pools at batch 128.
 * For each shape: the forward training call (statistics, running-statistics update,
 * saved mean / inverse std), the backward call (dx, dweight, dbias), pooling forward and
 * backward; medians of 7 x 50 calls; "repeat" compares the outputs of 5 calls on the same
 * inputs byte for byte (Anvil requires bit-for-bit reproducible steps).  Compared with
 * Anvil's own kernels (bench/profile_gpu.sh) to decide which to run; not a test.
 *   build/bench_norm_pool_cudnn */
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "cudnn_check.h"

static cudnnHandle_t h;

static __global__ void fill(float *p, size_t n, unsigned seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned v = (unsigned)i * 2654435761u ^ seed;
        v ^= v >> 13;
        v *= 0x5bd1e995u;
        v ^= v >> 15;
        p[i] = (float)(v & 0xffff) / 32768.0f - 1.0f;
    }
}

static float *dev(size_t n, unsigned seed)
{
    float *p;
    cudaMalloc(&p, n * 4);
    fill<<<1024, 256>>>(p, n, seed);
    return p;
}

/* median µs of f() over 7 samples of `reps` calls */
template <typename F> static double time_us(F f, int reps = 50)
{
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    f();
    double t[7];
    for (int r = 0; r < 7; r++) {
        cudaEventRecord(e0);
        for (int i = 0; i < reps; i++)
            f();
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        t[r] = ms * 1000.0 / reps;
    }
    std::sort(t, t + 7);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return t[3];
}

/* true when 5 runs of f() leave the same bytes in every buffer of outs */
template <typename F> static bool repeats(F f, const std::vector<std::pair<float *, size_t>> &outs)
{
    std::vector<std::vector<float>> first;
    for (int r = 0; r < 5; r++) {
        f();
        cudaDeviceSynchronize();
        for (size_t o = 0; o < outs.size(); o++) {
            std::vector<float> v(outs[o].second);
            cudaMemcpy(v.data(), outs[o].first, v.size() * 4, cudaMemcpyDeviceToHost);
            if (r == 0)
                first.push_back(v);
            else if (memcmp(v.data(), first[o].data(), v.size() * 4) != 0)
                return false;
        }
    }
    return true;
}

static void batchnorm(int N, int C, int H, int W, cudnnBatchNormMode_t mode, const char *mode_name)
{
    size_t n = (size_t)N * C * H * W;
    float *x = dev(n, 1), *dy = dev(n, 2), *y = dev(n, 3), *dx = dev(n, 4);
    float *scale = dev(C, 5), *bias = dev(C, 6), *rm = dev(C, 7), *rv = dev(C, 8);
    float *sm = dev(C, 9), *siv = dev(C, 10), *dscale = dev(C, 11), *dbias = dev(C, 12);
    cudaMemset(rv, 0, C * 4);
    cudnnTensorDescriptor_t xd, cd;
    CK(cudnnCreateTensorDescriptor(&xd));
    CK(cudnnCreateTensorDescriptor(&cd));
    CK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, C, H, W));
    CK(cudnnDeriveBNTensorDescriptor(cd, xd, mode));
    float one = 1.0f, zero = 0.0f;
    double eps = 1e-5, mom = 0.1;
    auto fwd = [&] {
        CK(cudnnBatchNormalizationForwardTraining(h, mode, &one, &zero, xd, x, xd, y, cd, scale, bias, mom, rm, rv,
                                                  eps, sm, siv));
    };
    auto bwd = [&] {
        CK(cudnnBatchNormalizationBackward(h, mode, &one, &zero, &one, &zero, xd, x, xd, dy, xd, dx, cd, scale,
                                           dscale, dbias, eps, sm, siv));
    };
    fwd();
    double tf = time_us(fwd), tb = time_us(bwd);
    /* the forward's outputs without the running statistics, which accumulate */
    bool rf = repeats(fwd, {{y, n}, {sm, (size_t)C}, {siv, (size_t)C}});
    bool rb = repeats(bwd, {{dx, n}, {dscale, (size_t)C}, {dbias, (size_t)C}});
    printf("bn  %-11s %4dx%3dx%2dx%2d  fwd %8.2f us  bwd %8.2f us  repeat fwd %s bwd %s\n", mode_name, N, C, H, W, tf,
           tb, rf ? "yes" : "NO", rb ? "yes" : "NO");
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(cd);
    for (float *p : {x, dy, y, dx, scale, bias, rm, rv, sm, siv, dscale, dbias})
        cudaFree(p);
}

static void maxpool(int N, int C, int H, int W)
{
    int Ho = H / 2, Wo = W / 2;
    size_t n = (size_t)N * C * H * W, no = (size_t)N * C * Ho * Wo;
    float *x = dev(n, 1), *y = dev(no, 2), *dy = dev(no, 3), *dx = dev(n, 4);
    cudnnTensorDescriptor_t xd, yd;
    cudnnPoolingDescriptor_t pd;
    CK(cudnnCreateTensorDescriptor(&xd));
    CK(cudnnCreateTensorDescriptor(&yd));
    CK(cudnnCreatePoolingDescriptor(&pd));
    CK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, C, H, W));
    CK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, C, Ho, Wo));
    CK(cudnnSetPooling2dDescriptor(pd, CUDNN_POOLING_MAX_DETERMINISTIC, CUDNN_NOT_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2));
    float one = 1.0f, zero = 0.0f;
    auto fwd = [&] { CK(cudnnPoolingForward(h, pd, &one, xd, x, &zero, yd, y)); };
    auto bwd = [&] { CK(cudnnPoolingBackward(h, pd, &one, yd, y, yd, dy, xd, x, &zero, xd, dx)); };
    fwd();
    double tf = time_us(fwd), tb = time_us(bwd);
    bool rb = repeats(bwd, {{dx, n}});
    printf("maxpool 2x2 %4dx%3dx%2dx%2d  fwd %8.2f us  bwd %8.2f us  repeat bwd %s\n", N, C, H, W, tf, tb,
           rb ? "yes" : "NO");
    cudnnDestroyPoolingDescriptor(pd);
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(yd);
    for (float *p : {x, y, dy, dx})
        cudaFree(p);
}

int main(void)
{
    CK(cudnnCreate(&h));
    printf("cuDNN %zu\n", cudnnGetVersion());
    const int shapes[4][3] = {{64, 32, 32}, {128, 16, 16}, {256, 8, 8}, {512, 4, 4}};
    for (auto &s : shapes) {
        batchnorm(256, s[0], s[1], s[2], CUDNN_BATCHNORM_SPATIAL, "spatial");
        batchnorm(256, s[0], s[1], s[2], CUDNN_BATCHNORM_SPATIAL_PERSISTENT, "persistent");
    }
    maxpool(128, 32, 28, 28);
    maxpool(128, 64, 14, 14);
    return 0;
}
