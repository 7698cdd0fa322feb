/* simt_gemm.cu — Anvil's own small-shape fp32 product (src/backend/cuda/simt_gemm.cuh)
 * against cuBLASLt (the heuristic's first fp32 algorithm, what matmul.cu ran before) on the
 * products of the mlp-small and cnn-fmnist training steps.  First a correctness check of
 * every operand layout and epilogue against a double-precision host product; then, per
 * product, the median µs of 7 runs of a CUDA graph of 50 products for cuBLASLt, for the
 * plan anvil_simt_choose() picks, and for the fastest of every tile shape x split count
 * (to tune the choice); the same for cluster_gemm.cuh's split-K over a thread-block cluster
 * (the plan anvil_cluster_choose() picks, and the best tile shape x cluster size).  A probe,
 * not a test.
 *   build/bench_simt_gemm */
#include "backend/cuda/cluster_gemm.cuh"
#include "backend/cuda/simt_gemm.cuh"

#include <cublasLt.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define CKL(x)                                                                               \
    do {                                                                                     \
        cublasStatus_t s_ = (x);                                                             \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                   \
            fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, (int)s_);           \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)
#define CKC(x)                                                                               \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static cublasLtHandle_t lt;
static float *ws;
static unsigned int *counters;
static const size_t WS = 32u << 20;
static cudaStream_t stream;
static int sms;

typedef struct {
    const char *name;
    bool ta, tb;
    int m, n, k;
    bool bias_relu;
} prod;

static float *dev_random(size_t n, unsigned seed, std::vector<float> *host)
{
    std::vector<float> h(n);
    srand(seed);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
    float *d;
    CKC(cudaMalloc(&d, n * 4));
    CKC(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
    if (host)
        *host = h;
    return d;
}

/* Median µs per product of a graph of 50 calls of f. */
template <typename F>
static double time_graph(F f)
{
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CKC(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < 50; i++)
        f();
    CKC(cudaStreamEndCapture(stream, &graph));
    CKC(cudaGraphInstantiate(&exec, graph, 0));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    double t[7];
    for (int r = 0; r < 8; r++) {
        cudaEventRecord(e0, stream);
        cudaGraphLaunch(exec, stream);
        cudaEventRecord(e1, stream);
        CKC(cudaEventSynchronize(e1));
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r > 0)
            t[r - 1] = ms * 1000.0 / 50.0;
    }
    std::sort(t, t + 7);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    return t[3];
}

/* cuBLASLt's heuristic-first fp32 algorithm, as matmul.cu calls it (with RELU_BIAS when asked). */
struct lt_call {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulHeuristicResult_t res;
    const float *A, *B, *bias;
    float *D;
    void setup(const prod &p, const float *A_, const float *B_, float *D_, const float *bias_)
    {
        A = A_, B = B_, D = D_, bias = bias_;
        cublasOperation_t ta = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        CKL(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        CKL(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        CKL(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        if (p.bias_relu) {
            cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_RELU_BIAS;
            CKL(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
            CKL(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        }
        CKL(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, p.ta ? p.k : p.m, p.ta ? p.m : p.k, p.ta ? p.k : p.m));
        CKL(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, p.tb ? p.n : p.k, p.tb ? p.k : p.n, p.tb ? p.n : p.k));
        CKL(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, p.m, p.n, p.m));
        cublasLtMatmulPreference_t pref;
        CKL(cublasLtMatmulPreferenceCreate(&pref));
        uint64_t wsz = WS;
        CKL(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz));
        int found = 0;
        CKL(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1, &res, &found));
        if (!found) {
            fprintf(stderr, "no cuBLASLt algorithm\n");
            exit(1);
        }
        cublasLtMatmulPreferenceDestroy(pref);
    }
    void operator()() const
    {
        float alpha = 1.0f, beta = 0.0f;
        CKL(cublasLtMatmul(lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &res.algo, ws, WS, stream));
    }
};

static anvil_simt_gemm simt_of(const prod &p, const float *A, const float *B, float *D, const float *bias)
{
    anvil_simt_gemm g = {};
    g.ta = p.ta, g.tb = p.tb, g.m = p.m, g.n = p.n, g.k = p.k;
    g.A = A, g.lda = p.ta ? p.k : p.m;
    g.B = B, g.ldb = p.tb ? p.n : p.k;
    g.D = D, g.ldd = p.m;
    g.bias = p.bias_relu ? bias : NULL;
    g.act = p.bias_relu ? 1 : 0;
    return g;
}

/* Every layout and epilogue against a double host product; returns the worst relative error. */
static double check(bool ta, bool tb, int m, int n, int k, anvil_simt_plan pl, bool epi, int cluster = 0)
{
    prod p = {"check", ta, tb, m, n, k, false};
    std::vector<float> hA, hB, hD0, hbias, hmask;
    float *A = dev_random((size_t)m * k, 1, &hA), *B = dev_random((size_t)k * n, 2, &hB);
    float *D = dev_random((size_t)m * n, 3, &hD0), *bias = dev_random(m, 4, &hbias);
    float *mask = dev_random((size_t)m * n, 5, &hmask), *rs;
    CKC(cudaMalloc(&rs, n * 4));
    anvil_simt_gemm g = simt_of(p, A, B, D, bias);
    if (epi) {
        g.beta = 0.5f;
        g.bias = bias;
        g.act = 1;
        g.mask = mask;
        g.rowsum = cluster ? NULL : rs;
    } else {
        g.bias = NULL;
    }
    if (cluster) {
        if (!anvil_cluster_fits(&g)) {
            fprintf(stderr, "cluster check: %dx%dx%d %d%d does not fit\n", m, n, k, ta, tb);
            exit(1);
        }
        CKC(anvil_cluster_launch(&g, cluster, stream));
        CKC(anvil_cluster_launch(&g, cluster, stream));
    } else {
        CKC(anvil_simt_launch(&g, pl, ws, counters, stream));
        CKC(anvil_simt_launch(&g, pl, ws, counters, stream)); /* twice: the counters were reset */
    }
    CKC(cudaStreamSynchronize(stream)); /* a non-blocking stream: cudaMemcpy does not wait for it */
    std::vector<float> hD((size_t)m * n), hrs(n);
    CKC(cudaMemcpy(hD.data(), D, hD.size() * 4, cudaMemcpyDeviceToHost));
    CKC(cudaMemcpy(hrs.data(), rs, n * 4, cudaMemcpyDeviceToHost));
    /* D ran twice with beta: D2 = f(AB + beta f(AB + beta D0)) */
    double worst = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0, mag = 0;
            for (int q = 0; q < k; q++) {
                double a = ta ? hA[(size_t)i * k + q] : hA[i + (size_t)q * m];
                double b = tb ? hB[j + (size_t)q * n] : hB[q + (size_t)j * k];
                s += a * b;
                mag += fabs(a * b);
            }
            double want = s;
            if (epi) {
                size_t o = i + (size_t)j * m;
                double v1 = s + 0.5 * hD0[o] + hbias[i];
                v1 = hmask[o] > 0 ? std::max(v1, 0.0) : 0.0;
                double v2 = s + 0.5 * v1 + hbias[i];
                want = hmask[o] > 0 ? std::max(v2, 0.0) : 0.0;
            }
            worst = std::max(worst, fabs(want - hD[i + (size_t)j * m]) / (mag + 1e-6));
        }
    if (epi && !cluster)
        for (int j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int q = 0; q < k; q++) {
                double b = tb ? hB[j + (size_t)q * n] : hB[q + (size_t)j * k];
                s += b;
                mag += fabs(b);
            }
            worst = std::max(worst, fabs(s - hrs[j]) / (mag + 1e-6));
        }
    cudaFree(A), cudaFree(B), cudaFree(D), cudaFree(bias), cudaFree(mask), cudaFree(rs);
    return worst;
}

int main(void)
{
    CKL(cublasLtCreate(&lt));
    CKC(cudaMalloc(&ws, WS));
    CKC(cudaMalloc(&counters, ANVIL_SIMT_COUNTERS * sizeof(unsigned)));
    CKC(cudaMemset(counters, 0, ANVIL_SIMT_COUNTERS * sizeof(unsigned)));
    CKC(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CKC(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));

    /* SIMT_GEMM_ONLY=text: only the products whose name contains it, no checks (for ncu) */
    const char *only = getenv("SIMT_GEMM_ONLY");
    double worst = 0;
    for (int cfg = 0; !only && cfg < ANVIL_SIMT_NCFG; cfg++)
        for (int sp : {1, 3})
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (int epi = 0; epi < 2; epi++)
                        worst = std::max(worst, check(ta, tb, 100, 37, 300, anvil_simt_plan{cfg, sp}, epi));
    printf("correctness: worst |error| / sum|a b| over 5 tiles x 2 splits x 4 layouts x 2 epilogues: %.3g %s\n",
           worst, worst < 1e-5 ? "ok" : "FAILED");
    double cworst = 0;
    for (int cs : {1, 2, 8})
        for (int ta = 0; !only && ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int epi = 0; epi < 2; epi++) {
                    /* 100 x 36 outputs (partial tiles both ways), K 300: partial last stages;
                     * K 36 over 8 blocks: blocks with nothing to sum */
                    cworst = std::max(cworst, check(ta, tb, 100, 36, 300, anvil_simt_plan{0, 1}, epi, cs));
                    cworst = std::max(cworst, check(ta, tb, 68, 132, 36, anvil_simt_plan{0, 1}, epi, cs));
                }
    printf("cluster correctness: worst over 3 cluster sizes x 4 layouts x 2 epilogues x 2 shapes: %.3g %s\n",
           cworst, cworst < 1e-5 ? "ok" : "FAILED");
    worst = std::max(worst, cworst);

    const int R = 128;
    const prod prods[] = {
        {"mlp fwd1 (relu+bias)", true, false, 512, R, 784, true},
        {"mlp fwd2 (relu+bias)", true, false, 512, R, 512, true},
        {"mlp fwd3", true, false, 10, R, 512, false},
        {"mlp dW3", false, true, 512, 10, R, false},
        {"mlp dW2", false, true, 512, 512, R, false},
        {"mlp dW1", false, true, 784, 512, R, false},
        {"mlp dh2 = dy W3", false, false, 512, R, 10, false},
        {"mlp dh1 = dz2 W2", false, false, 512, R, 512, false},
        {"cnn lin1 fwd (relu+bias)", true, false, 128, R, 3136, true},
        {"cnn lin1 dW", false, true, 3136, 128, R, false},
        {"cnn lin1 dx", false, false, 3136, R, 128, false},
        {"cnn lin2 fwd", true, false, 10, R, 128, false},
        {"cnn lin2 dW", false, true, 128, 10, R, false},
        {"cnn lin2 dx", false, false, 128, R, 10, false},
        {"cnn conv2 dW (288x64, K 25088)", true, false, 288, 64, 25088, false},
    };
    printf("%-32s %9s %9s %-10s %9s %-10s %9s %-9s %9s %-9s %9s\n", "product", "cuBLASLt", "simt", "(plan)", "best",
           "(plan)", "cluster", "(plan)", "best", "(plan)", "max|diff|");
    for (const prod &p : prods) {
        if (only && !strstr(p.name, only))
            continue;
        size_t big = (size_t)std::max(p.m, p.k) * std::max(p.n, p.k);
        float *A = dev_random(big, 11, NULL), *B = dev_random(big, 12, NULL), *bias = dev_random(p.m, 13, NULL);
        float *D1, *D2;
        CKC(cudaMalloc(&D1, (size_t)p.m * p.n * 4));
        CKC(cudaMalloc(&D2, (size_t)p.m * p.n * 4));
        lt_call L;
        L.setup(p, A, B, D1, bias);
        double t_lt = time_graph(L);
        anvil_simt_gemm g = simt_of(p, A, B, D2, bias);
        anvil_simt_plan pl = anvil_simt_choose(p.m, p.n, p.k, sms);
        double t_simt = time_graph([&] { CKC(anvil_simt_launch(&g, pl, ws, counters, stream)); });
        double best = 1e30;
        anvil_simt_plan bp = pl;
        for (int cfg = 0; cfg < ANVIL_SIMT_NCFG; cfg++)
            for (int sp : {1, 2, 3, 4, 6, 8, 12, 16}) {
                anvil_simt_plan q = {cfg, sp};
                if (anvil_simt_ws_bytes(&g, q) > WS)
                    continue;
                double t = time_graph([&] { CKC(anvil_simt_launch(&g, q, ws, counters, stream)); });
                if (t < best)
                    best = t, bp = q;
            }
        /* the cluster path: the chosen plan (if any) and the best of every shape x size */
        double t_cl = 0, cbest = 1e30;
        int cpl = anvil_cluster_choose(p.m, p.n, p.k, sms), cbp = 0;
        bool cfits = anvil_cluster_fits(&g);
        if (cfits && cpl)
            t_cl = time_graph([&] { CKC(anvil_cluster_launch(&g, cpl, stream)); });
        for (int cs : {1, 2, 4, 8}) {
            if (!cfits)
                break;
            double t = time_graph([&] { CKC(anvil_cluster_launch(&g, cs, stream)); });
            if (only)
                printf("  cluster of %d: %.2f\n", cs, t);
            if (t < cbest)
                cbest = t, cbp = cs;
        }
        if (cfits && cpl) /* D2 from the chosen cluster plan, compared with cuBLASLt below */
            CKC(anvil_cluster_launch(&g, cpl, stream));
        CKC(cudaStreamSynchronize(stream));
        std::vector<float> h1((size_t)p.m * p.n), h2(h1.size());
        CKC(cudaMemcpy(h1.data(), D1, h1.size() * 4, cudaMemcpyDeviceToHost));
        CKC(cudaMemcpy(h2.data(), D2, h2.size() * 4, cudaMemcpyDeviceToHost));
        double md = 0, mx = 0;
        for (size_t i = 0; i < h1.size(); i++)
            md = std::max(md, (double)fabsf(h1[i] - h2[i])), mx = std::max(mx, (double)fabsf(h1[i]));
        int bm, bn, cbm, cbn;
        anvil_simt_tile(pl.cfg, &bm, &bn);
        anvil_simt_tile(bp.cfg, &cbm, &cbn);
        char a[32], b[32], c1[32] = "-", c2[32] = "-";
        snprintf(a, sizeof a, "%dx%d/%d", bm, bn, pl.splits);
        snprintf(b, sizeof b, "%dx%d/%d", cbm, cbn, bp.splits);
        if (cfits && cpl)
            snprintf(c1, sizeof c1, "32x32/%d", cpl);
        if (cfits)
            snprintf(c2, sizeof c2, "32x32/%d", cbp);
        printf("%-32s %9.2f %9.2f %-10s %9.2f %-10s %9.2f %-9s %9.2f %-9s %9.2g (of %.3g)\n", p.name, t_lt, t_simt, a,
               best, b, t_cl, c1, cfits ? cbest : 0.0, c2, md, mx);
        cudaFree(A), cudaFree(B), cudaFree(bias), cudaFree(D1), cudaFree(D2);
    }
    return worst < 1e-5 ? 0 : 1;
}
