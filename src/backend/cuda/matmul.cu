/* matmul.cu — matrix products through cuBLASLt, in true fp32 (CUBLAS_COMPUTE_32F, no
 * TF32, as PyTorch's default).  Row-major products are computed as their column-major
 * transposes: C[M,N] = op(A) op(B) is C^T[N,M] = op(B)^T op(A)^T, so B's storage is
 * cuBLASLt's first operand.  linear uses the BIAS epilogue (bias per row of C^T, i.e. per
 * output feature), with RELU or GELU (cuBLASLt's GELU is the tanh approximation) when the
 * fusion pass moved the activation in. */
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/cluster_gemm.cuh"
#include "backend/cuda/simt_gemm.cuh"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* A column-major D[m,n] = op(A)[m,k] op(B)[k,n] (+ bias[m] per column) (+ beta D). */
typedef struct {
    cublasOperation_t ta, tb;
    int64_t m, n, k;
    const float *A;
    int64_t lda;
    const float *B;
    int64_t ldb;
    float *D;
    int64_t ldd;
    const float *bias; /* NULL: none */
    int act;           /* fused activation (graph/fuse.c): 0 none, 1 relu, 2 gelu (tanh) */
    float beta;
    const float *mask; /* NULL, or D-shaped: D = 0 where mask <= 0 (a fused ReLU backward) */
} lt_gemm;

static uint32_t ptr_align(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    uint32_t a = 256;
    while (a > 4 && (v & (a - 1)))
        a >>= 1;
    return a;
}

#define LT_CHECK(call, what)                                     \
    do {                                                         \
        cublasStatus_t lt_st_ = (call);                          \
        if (lt_st_ != CUBLAS_STATUS_SUCCESS) {                   \
            s = anvil_cuda_lt_fail(lt_st_, what);                \
            goto done;                                           \
        }                                                        \
    } while (0)

/* Runs g; with use_epilogue false and a bias, returns ANVIL_ERR_UNSUPPORTED when no
 * algorithm fits (the caller then falls back). */
static anvil_status lt_run(anvil_cuda_ctx *c, const lt_gemm *g, bool use_epilogue,
                           const char *opname, bool *no_algo)
{
    anvil_status s = ANVIL_OK;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    float alpha = 1.0f, beta = g->beta;
    uint64_t ws = ANVIL_CUDA_LT_WORKSPACE;
    uint32_t al_a = ptr_align(g->A), al_b = ptr_align(g->B), al_d = ptr_align(g->D);
    *no_algo = false;

    LT_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &g->ta, sizeof g->ta),
             "cublasLtMatmulDescSetAttribute (transa)");
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &g->tb, sizeof g->tb),
             "cublasLtMatmulDescSetAttribute (transb)");
    if (use_epilogue && (g->bias || g->act)) {
        static const cublasLtEpilogue_t plain[3] = {CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_EPILOGUE_RELU,
                                                    CUBLASLT_EPILOGUE_GELU};
        static const cublasLtEpilogue_t biased[3] = {CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_RELU_BIAS,
                                                     CUBLASLT_EPILOGUE_GELU_BIAS};
        cublasLtEpilogue_t epi = g->bias ? biased[g->act] : plain[g->act];
        LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
                 "cublasLtMatmulDescSetAttribute (epilogue)");
        if (g->bias)
            LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                                    sizeof g->bias),
                     "cublasLtMatmulDescSetAttribute (bias pointer)");
    }
    LT_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, g->ta == CUBLAS_OP_N ? g->m : g->k,
                                        g->ta == CUBLAS_OP_N ? g->k : g->m, g->lda),
             "cublasLtMatrixLayoutCreate (A)");
    LT_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, g->tb == CUBLAS_OP_N ? g->k : g->n,
                                        g->tb == CUBLAS_OP_N ? g->n : g->k, g->ldb),
             "cublasLtMatrixLayoutCreate (B)");
    LT_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, g->m, g->n, g->ldd),
             "cublasLtMatrixLayoutCreate (D)");
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof ws),
             "cublasLtMatmulPreferenceSetAttribute (workspace)");
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                  &al_a, sizeof al_a),
             "cublasLtMatmulPreferenceSetAttribute (alignment A)");
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                  &al_b, sizeof al_b),
             "cublasLtMatmulPreferenceSetAttribute (alignment B)");
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                  &al_d, sizeof al_d),
             "cublasLtMatmulPreferenceSetAttribute (alignment C)");
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                  &al_d, sizeof al_d),
             "cublasLtMatmulPreferenceSetAttribute (alignment D)");
    {
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(c->lt, op, la, lb, ld, ld, pref, 1, &res, &found);
        if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0)) {
            *no_algo = true;
            s = anvil_fail(ANVIL_ERR_UNSUPPORTED,
                           "%s: cuBLASLt has no fp32 algorithm for [%lld x %lld] x [%lld x %lld]%s",
                           opname, (long long)g->m, (long long)g->k, (long long)g->k,
                           (long long)g->n, use_epilogue && (g->bias || g->act) ? " with an epilogue" : "");
            goto done;
        }
        LT_CHECK(st, "cublasLtMatmulAlgoGetHeuristic");
    }
    LT_CHECK(cublasLtMatmul(c->lt, op, &alpha, g->A, la, g->B, lb, &beta, g->D, ld, g->D, ld,
                            &res.algo, c->lt_workspace, ANVIL_CUDA_LT_WORKSPACE, c->stream),
             "cublasLtMatmul");
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (ld)
        cublasLtMatrixLayoutDestroy(ld);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (op)
        cublasLtMatmulDescDestroy(op);
    return s;
}

/* D (column-major [m, n], ld m) = bias[m] in every column, or 0 without a bias. */
static __global__ void bias_rows_kernel(float *d, const float *bias, int64_t m, int64_t total)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        d[i] = bias ? bias[i % m] : 0.0f;
}

static anvil_status init_bias(anvil_cuda_ctx *c, float *d, const float *bias, int64_t m, int64_t n)
{
    int64_t total = m * n;
    bias_rows_kernel<<<anvil_cuda_blocks(total, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0,
                       c->stream>>>(d, bias, m, total);
    return anvil_cuda_launched(c, "bias_rows");
}

/* The activation epilogue's fallback, in place: relu (act 1) or gelu, approximate="tanh"
 * (act 2; cuBLASLt's GELU epilogue is this approximation). */
static __global__ void act_epilogue_kernel(float *d, int64_t total, int act)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = d[i];
        d[i] = act == 1 ? (v > 0.0f ? v : 0.0f)
                        : 0.5f * v * (1.0f + tanhf(0.79788456080286535588f * (v + 0.044715f * v * v * v)));
    }
}

/* Which products take simt_gemm.cuh's kernel instead of cuBLASLt: ANVIL_SIMT_GEMM=0 none
 * (0; conv.cu's own kernels are off too), =all every one that fits (2), unset the small
 * ones (1, see simt_small).  Read once per process. */
extern "C" int anvil_cuda_simt_mode(void)
{
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("ANVIL_SIMT_GEMM");
        mode = e && strcmp(e, "0") == 0 ? 0 : e && strcmp(e, "all") == 0 ? 2 : 1;
    }
    return mode;
}

/* The products where the own kernel beat cuBLASLt on the H200 (bench/simt_gemm.cu,
 * docs/benchmarks.md): tiny outputs (a 10-class layer's forward and weight gradient:
 * 4.4-4.9 µs vs 6.0 and, for 128x10 over 128 rows, 51 µs; in the mlp's step the 10 x 512
 * weight gradient, which cuBLASLt split over K into two kernels beside the chain's input
 * gradients: step 0.0508 -> 0.0506 ms) and sums over a few terms (the input gradient
 * through a 10-class layer: 2.2 vs 5.4 µs).  Larger products stay on cuBLASLt, which was
 * as fast or faster there. */
static bool simt_small(const lt_gemm *g)
{
    static int64_t outs = -1; /* ANVIL_SIMT_SMALL=<outputs>: the first rule's bound (A/B runs) */
    if (outs < 0) {
        const char *e = getenv("ANVIL_SIMT_SMALL");
        outs = e && atoll(e) > 0 ? atoll(e) : 8192;
    }
    return (g->m * g->n <= outs && g->k <= 4096) || (g->k <= 16 && g->m * g->n <= ((int64_t)1 << 20));
}

/* g as the own kernels' description (simt_gemm.cuh); false when a size passes int. */
static bool as_simt(const lt_gemm *g, anvil_simt_gemm *k)
{
    if (g->m >= INT_MAX || g->n >= INT_MAX || g->k >= INT_MAX || g->lda > INT_MAX || g->ldb > INT_MAX ||
        g->ldd > INT_MAX)
        return false;
    memset(k, 0, sizeof *k);
    k->ta = g->ta == CUBLAS_OP_T;
    k->tb = g->tb == CUBLAS_OP_T;
    k->m = (int)g->m;
    k->n = (int)g->n;
    k->k = (int)g->k;
    k->A = g->A;
    k->lda = (int)g->lda;
    k->B = g->B;
    k->ldb = (int)g->ldb;
    k->D = g->D;
    k->ldd = (int)g->ldd;
    k->beta = g->beta;
    k->bias = g->bias;
    k->act = g->act;
    k->mask = g->mask;
    return true;
}

/* Runs g through simt_gemm.cuh when it is eligible; *used says whether it did. */
static anvil_status simt_try(anvil_cuda_ctx *c, const lt_gemm *g, bool *used)
{
    *used = false;
    int mode = anvil_cuda_simt_mode();
    if (mode == 0 || !c->gemm_counters || (mode == 1 && !simt_small(g)))
        return ANVIL_OK;
    anvil_simt_gemm k;
    if (!as_simt(g, &k))
        return ANVIL_OK;
    anvil_simt_plan p = anvil_simt_choose(k.m, k.n, k.k, c->sm_count);
    int bm, bn;
    anvil_simt_tile(p.cfg, &bm, &bn);
    int64_t tiles = (int64_t)((k.m + bm - 1) / bm) * ((k.n + bn - 1) / bn);
    if (tiles > ANVIL_SIMT_COUNTERS || tiles > 65535 * 64 ||
        anvil_simt_ws_bytes(&k, p) > ANVIL_CUDA_LT_WORKSPACE)
        return ANVIL_OK;
    *used = true;
    cudaError_t e =
        anvil_simt_launch(&k, p, (float *)c->lt_workspace, c->gemm_counters, c->stream, anvil_cuda_pdl() != 0);
    if (e != cudaSuccess)
        return anvil_cuda_fail(e, "simt_gemm");
    return anvil_cuda_launched(c, "simt_gemm");
}

extern "C" int anvil_cuda_pdl(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ANVIL_PDL");
        on = !(e && strcmp(e, "0") == 0);
    }
    return on;
}

/* ANVIL_CLUSTER_GEMM=0 turns cluster_gemm.cuh's path off (for A/B runs); read once. */
static bool cluster_enabled(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ANVIL_CLUSTER_GEMM");
        on = !(e && strcmp(e, "0") == 0);
    }
    return on != 0;
}

/* Runs g as a split-K over a thread-block cluster (cluster_gemm.cuh) when its shape has a
 * plan (few output tiles, a long sum: the 128-row forward and input-gradient products of
 * layers with hundreds of inputs, 10-class layers included) and its operands are aligned;
 * *used says whether it did.  Tried before simt_gemm.cuh, which it beat on every such
 * shape on the H200 (fwd 512x128 K 784: 8.6 vs cuBLASLt 10.8 µs; 10x128 K 512: 3.7 vs
 * 5.4). */
static anvil_status cluster_try(anvil_cuda_ctx *c, const lt_gemm *g, bool *used)
{
    *used = false;
    if (anvil_cuda_simt_mode() == 0 || !cluster_enabled())
        return ANVIL_OK;
    anvil_simt_gemm k;
    if (!as_simt(g, &k))
        return ANVIL_OK;
    int cs = anvil_cluster_choose(k.m, k.n, k.k, c->sm_count);
    if (cs < 2 || !anvil_cluster_fits(&k))
        return ANVIL_OK;
    *used = true;
    cudaError_t e = anvil_cluster_launch(&k, cs, c->stream, anvil_cuda_pdl() != 0);
    if (e != cudaSuccess)
        return anvil_cuda_fail(e, "cluster_gemm");
    return anvil_cuda_launched(c, "cluster_gemm");
}

/* The fused ReLU backward after a cuBLASLt product: d = 0 where mask <= 0, in place. */
static __global__ void mask_kernel(float *d, const float *__restrict__ mask, int64_t total)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        d[i] = mask[i] > 0.0f ? d[i] : 0.0f;
}

static anvil_status gemm_unmasked(anvil_cuda_ctx *c, lt_gemm *g, const char *opname);

static anvil_status gemm(anvil_cuda_ctx *c, lt_gemm *g, const char *opname)
{
    if (g->m == 0 || g->n == 0)
        return ANVIL_OK;
    bool used = false;
    if (g->k > 0)
        ANVIL_TRY(cluster_try(c, g, &used)); /* applies the mask itself */
    if (!used && g->k > 0)
        ANVIL_TRY(simt_try(c, g, &used)); /* so does this */
    if (used)
        return ANVIL_OK;
    ANVIL_TRY(gemm_unmasked(c, g, opname));
    if (!g->mask)
        return ANVIL_OK;
    mask_kernel<<<anvil_cuda_blocks(g->m * g->n, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
        g->D, g->mask, g->m * g->n);
    return anvil_cuda_launched(c, "matmul (ReLU mask)");
}

static anvil_status gemm_unmasked(anvil_cuda_ctx *c, lt_gemm *g, const char *opname)
{
    if (g->k == 0) /* an empty sum: just the bias (or zeros) */
        return init_bias(c, g->D, g->bias, g->m, g->n);
    bool no_algo = false;
    anvil_status s = lt_run(c, g, true, opname, &no_algo);
    if (s == ANVIL_OK || !(no_algo && (g->bias || g->act)))
        return s;
    /* No algorithm with the epilogue: write the bias first, accumulate, then activate. */
    anvil_clear_error();
    lt_gemm h = *g;
    if (g->bias) {
        ANVIL_TRY(init_bias(c, g->D, g->bias, g->m, g->n));
        h.beta = 1.0f;
    }
    h.bias = NULL;
    h.act = 0;
    ANVIL_TRY(lt_run(c, &h, false, opname, &no_algo));
    if (!g->act)
        return ANVIL_OK;
    act_epilogue_kernel<<<anvil_cuda_blocks(g->m * g->n, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
        g->D, g->m * g->n, g->act);
    return anvil_cuda_launched(c, "activation epilogue");
}

static int64_t numel(const anvil_node *n) { return anvil_node_numel(n); }

/* MATMUL (see src/graph/ops/matmul.c): operands are viewed as matrices by flattening all
 * but their last dim.  Without trans_a: a [M, K] x op(b) -> [M, N], b [K, N] or, with
 * trans_b, [N, K].  With trans_a: a [K, M] and b [K, N] -> a^T b [M, N]. */
ANVIL_CUDA_KERNEL(matmul)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *a = s->in_node[0], *b = s->in_node[1];
    bool ta = s->node->ia[0] != 0, tb = s->node->ia[1] != 0;
    int64_t acols = a->ndim ? a->shape[a->ndim - 1] : 1;
    int64_t arows = acols ? numel(a) / acols : 0;
    int64_t bcols = b->shape[b->ndim - 1];
    int64_t brows = bcols ? numel(b) / bcols : 0;
    int64_t M, N, K;
    if (!ta) {
        M = arows;
        K = acols;
        N = tb ? brows : bcols;
    } else {
        M = acols;
        K = arows;
        N = bcols;
    }
    (void)brows;
    lt_gemm g;
    memset(&g, 0, sizeof g);
    g.m = N;
    g.n = M;
    g.k = K;
    g.A = (const float *)s->in[1];
    g.ta = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    g.lda = tb ? K : N;
    g.B = (const float *)s->in[0];
    g.tb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    g.ldb = ta ? M : K;
    g.D = (float *)s->out;
    g.ldd = N;
    g.bias = NULL;
    g.act = 0;
    g.beta = 0.0f;
    g.mask = s->node->n_in >= 3 ? (const float *)s->in[2] : NULL; /* a fused ReLU backward */
    if (g.lda < 1)
        g.lda = 1;
    if (g.ldb < 1)
        g.ldb = 1;
    if (g.ldd < 1)
        g.ldd = 1;
    return gemm(c, &g, "matmul");
}

/* LINEAR: y [R, O] = x [R, I] w[O, I]^T + b[O]; column-major y^T = w x^T (+ b per row). */
ANVIL_CUDA_KERNEL(linear)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *w = s->in_node[1];
    int64_t O = w->shape[0], I = w->shape[1];
    int64_t R = O ? numel(s->node) / O : 0;
    lt_gemm g;
    memset(&g, 0, sizeof g);
    g.m = O;
    g.n = R;
    g.k = I;
    g.A = (const float *)s->in[1];
    g.ta = CUBLAS_OP_T;
    g.lda = I > 0 ? I : 1;
    g.B = (const float *)s->in[0];
    g.tb = CUBLAS_OP_N;
    g.ldb = I > 0 ? I : 1;
    g.D = (float *)s->out;
    g.ldd = O > 0 ? O : 1;
    g.bias = s->node->n_in >= 3 ? (const float *)s->in[2] : NULL;
    g.act = s->node->ia[1] == 1 || s->node->ia[1] == 2 ? s->node->ia[1] : 0;
    g.beta = 0.0f;
    return gemm(c, &g, "linear");
}

extern "C" anvil_status anvil_cuda_gemm_f32(anvil_cuda_ctx *c, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                                           float *D, int64_t ldd, const char *what)
{
    lt_gemm g;
    memset(&g, 0, sizeof g);
    g.ta = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    g.tb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    g.m = m;
    g.n = n;
    g.k = k;
    g.A = A;
    g.lda = lda;
    g.B = B;
    g.ldb = ldb;
    g.D = D;
    g.ldd = ldd;
    g.bias = NULL;
    g.act = 0;
    g.beta = beta;
    return gemm(c, &g, what);
}
