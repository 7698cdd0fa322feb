/* lt_epilogues.cu — which of cuBLASLt's gradient epilogues exist for true fp32
 * (CUBLAS_COMPUTE_32F, no TF32) on this GPU, and what they cost, on the products of the
 * mlp-small training step (784-512-512-10, batch 128).  For each product: the plain
 * product, then the same product with the epilogue (BGRADB on a weight gradient: the
 * bias gradient in the same kernel; DRELU_BGRAD on an input gradient: the ReLU mask of the
 * forward's RELU_AUX_BIAS and the previous layer's bias gradient; RELU_AUX_BIAS on the
 * forward); also the cnn's linear products and convolution weight gradients.  Every
 * candidate of the heuristic (up to 16) is timed without an epilogue, the first with it:
 * medians of 7 runs of a CUDA graph of 50 products.  Decides whether Anvil can use these
 * epilogues and whether the heuristic's first choice is the one to take; not a test.
 *   build/bench_lt_epilogues */
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                \
    do {                                                                                     \
        cublasStatus_t s_ = (x);                                                             \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                   \
            fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, (int)s_);           \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static cublasLtHandle_t lt;
static void *ws;
static const size_t WS = 32u << 20;

typedef struct {
    const char *name;
    cublasOperation_t ta, tb;
    int m, n, k;
    cublasLtEpilogue_t epi;
} prod;

/* Runs the product (with its epilogue) 200 times per sample; returns the median µs per
 * product, or -1 when no algorithm exists.  *nalg: the heuristic's count. */
static double run(const prod *p, bool with_epi, int *nalg, bool verbose)
{
    size_t big = (size_t)std::max(p->m, p->k) * std::max(p->n, p->k);
    float *A, *B, *D, *bias;
    void *aux;
    cudaMalloc(&A, big * 4);
    cudaMalloc(&B, big * 4);
    cudaMalloc(&D, (size_t)p->m * p->n * 4);
    cudaMalloc(&bias, (size_t)std::max(p->m, p->n) * 4);
    cudaMalloc(&aux, (size_t)p->m * p->n);
    cudaMemset(A, 0, big * 4);
    cudaMemset(B, 0, big * 4);
    cudaMemset(bias, 0, (size_t)std::max(p->m, p->n) * 4);
    cudaMemset(aux, 0, (size_t)p->m * p->n);
    cublasLtMatmulDesc_t op;
    CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &p->ta, sizeof p->ta));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &p->tb, sizeof p->tb));
    if (with_epi) {
        CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &p->epi, sizeof p->epi));
        CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        if (p->epi == CUBLASLT_EPILOGUE_DRELU_BGRAD || p->epi == CUBLASLT_EPILOGUE_RELU_AUX_BIAS ||
            p->epi == CUBLASLT_EPILOGUE_DRELU) {
            int64_t ld = (p->m + 127) / 128 * 128; /* in elements (bits of the mask) */
            CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
            CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
        }
    }
    cublasLtMatrixLayout_t la, lb, ld;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, p->ta == CUBLAS_OP_N ? p->m : p->k,
                                  p->ta == CUBLAS_OP_N ? p->k : p->m, p->ta == CUBLAS_OP_N ? p->m : p->k));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, p->tb == CUBLAS_OP_N ? p->k : p->n,
                                  p->tb == CUBLAS_OP_N ? p->n : p->k, p->tb == CUBLAS_OP_N ? p->k : p->n));
    CK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, p->m, p->n, p->m));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsz = WS;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz));
    cublasLtMatmulHeuristicResult_t res[16];
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 16, res, &found);
    *nalg = st == CUBLAS_STATUS_SUCCESS ? found : 0;
    double med = -1.0;
    if (*nalg > 0) {
        float alpha = 1.0f, beta = 0.0f;
        /* Each candidate in a CUDA graph of 50 launches (as Anvil runs them): back-to-back
         * host launches would time cublasLtMatmul's host cost, not the kernel. */
        cudaStream_t st;
        cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        for (int a = 0; a < *nalg; a++) {
            cudaGraph_t graph;
            cudaGraphExec_t exec;
            cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
            for (int i = 0; i < 50; i++)
                CK(cublasLtMatmul(lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &res[a].algo, ws, WS, st));
            cudaStreamEndCapture(st, &graph);
            cudaGraphInstantiate(&exec, graph, 0);
            double t[7];
            for (int r = 0; r < 8; r++) {
                cudaEventRecord(e0, st);
                cudaGraphLaunch(exec, st);
                cudaEventRecord(e1, st);
                cudaEventSynchronize(e1);
                float ms;
                cudaEventElapsedTime(&ms, e0, e1);
                if (r > 0)
                    t[r - 1] = ms * 1000.0 / 50.0;
            }
            std::sort(t, t + 7);
            if (a == 0)
                med = t[3];
            if (verbose)
                printf("    candidate %d: %8.2f us  (waves %.2f)\n", a, t[3], res[a].wavesCount);
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
        }
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        cudaStreamDestroy(st);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    cudaFree(A);
    cudaFree(B);
    cudaFree(D);
    cudaFree(bias);
    cudaFree(aux);
    return med;
}

int main(void)
{
    CK(cublasLtCreate(&lt));
    cudaMalloc(&ws, WS);
    const int R = 128;
    /* column-major views of the row-major products, as src/backend/cuda/matmul.cu builds them */
    const prod prods[] = {
        {"fwd1 y=xW1^T+b (RELU_AUX_BIAS)", CUBLAS_OP_T, CUBLAS_OP_N, 512, R, 784, CUBLASLT_EPILOGUE_RELU_AUX_BIAS},
        {"fwd2 y=h1W2^T+b (RELU_AUX_BIAS)", CUBLAS_OP_T, CUBLAS_OP_N, 512, R, 512, CUBLASLT_EPILOGUE_RELU_AUX_BIAS},
        {"fwd2 (RELU_BIAS, today)", CUBLAS_OP_T, CUBLAS_OP_N, 512, R, 512, CUBLASLT_EPILOGUE_RELU_BIAS},
        {"dW3=dy^T h2 (BGRADB)", CUBLAS_OP_N, CUBLAS_OP_T, 512, 10, R, CUBLASLT_EPILOGUE_BGRADB},
        {"dW2=dz2^T h1 (BGRADB)", CUBLAS_OP_N, CUBLAS_OP_T, 512, 512, R, CUBLASLT_EPILOGUE_BGRADB},
        {"dW1=dz1^T x (BGRADB)", CUBLAS_OP_N, CUBLAS_OP_T, 784, 512, R, CUBLASLT_EPILOGUE_BGRADB},
        {"dh2=dy W3 (DRELU_BGRAD)", CUBLAS_OP_N, CUBLAS_OP_N, 512, R, 10, CUBLASLT_EPILOGUE_DRELU_BGRAD},
        {"dh1=dz2 W2 (DRELU_BGRAD)", CUBLAS_OP_N, CUBLAS_OP_N, 512, R, 512, CUBLASLT_EPILOGUE_DRELU_BGRAD},
        /* cnn-fmnist's linear layers (3136-128-10) and its convolutions' weight gradients */
        {"cnn lin1 fwd (RELU_BIAS)", CUBLAS_OP_T, CUBLAS_OP_N, 128, R, 3136, CUBLASLT_EPILOGUE_RELU_BIAS},
        {"cnn lin1 dW=dy^T x (BGRADB)", CUBLAS_OP_N, CUBLAS_OP_T, 3136, 128, R, CUBLASLT_EPILOGUE_BGRADB},
        {"cnn lin1 dx=dy W", CUBLAS_OP_N, CUBLAS_OP_N, 3136, R, 128, CUBLASLT_EPILOGUE_DEFAULT},
        {"cnn conv1 dW (9x32, K 100352)", CUBLAS_OP_T, CUBLAS_OP_N, 9, 32, 100352, CUBLASLT_EPILOGUE_DEFAULT},
        {"cnn conv2 dW (288x64, K 25088)", CUBLAS_OP_T, CUBLAS_OP_N, 288, 64, 25088, CUBLASLT_EPILOGUE_DEFAULT},
    };
    printf("%-34s %8s %10s %8s %10s\n", "product", "algs", "plain us", "algs", "epi us");
    for (const prod &p : prods) {
        int n0, n1;
        printf("%s\n", p.name);
        double t0 = run(&p, false, &n0, true);
        double t1 = p.epi == CUBLASLT_EPILOGUE_DEFAULT ? t0 : run(&p, true, &n1, false);
        if (p.epi == CUBLASLT_EPILOGUE_DEFAULT)
            n1 = n0;
        printf("%-34s %8d %10.2f %8d %10.2f\n", "  first candidate, plain / epilogue", n0, t0, n1, t1);
    }
    return 0;
}
