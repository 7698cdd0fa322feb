/* matmul.c — matrix products through OpenBLAS's sgemm. */
#include "backend/cpu/cpu.h"

#include <cblas.h>

/* Each operand is viewed as a matrix by flattening all but its last dim (the op's
 * definition, graph/ops/matmul.c): a [..., K] x b [K, N] -> [..., N]; with trans_a,
 * a [R, M] and b [R, N] (both flattened) give a^T b -> [M, N]; trans_b reads b as [N, K]. */
anvil_status anvil_cpu_matmul(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *a = s->in_node[0], *b = s->in_node[1];
    if (a->ndim < 1 || b->ndim < 1)
        return anvil_fail(ANVIL_ERR_SHAPE, "matmul: scalar operand");
    bool ta = s->node->ia[0] != 0, tb = s->node->ia[1] != 0;
    int64_t acols = a->shape[a->ndim - 1], bcols = b->shape[b->ndim - 1];
    int64_t arows = acols ? cpu_numel(a) / acols : 0, brows = bcols ? cpu_numel(b) / bcols : 0;
    int64_t M = ta ? acols : arows, K = ta ? arows : acols, N = tb ? brows : bcols;
    if (M == 0 || N == 0)
        return ANVIL_OK;
    if (K == 0) { /* an empty sum; not every BLAS writes C when K is 0 */
        memset(s->out, 0, (size_t)(M * N) * sizeof(float));
        return ANVIL_OK;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, 1.0f, (const float *)s->in[0],
                (blasint)acols, (const float *)s->in[1], (blasint)bcols, 0.0f,
                (float *)s->out, (blasint)N);
    if (s->node->n_in == 3) { /* the fused ReLU backward (graph/fuse.c) */
        const float *mk = (const float *)s->in[2];
        float *y = (float *)s->out;
        int64_t total = M * N;
#pragma omp parallel for if (total >= CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < total; i++)
            y[i] = mk[i] > 0.0f ? y[i] : 0.0f;
    }
    return ANVIL_OK;
}

/* x [..., in] w^T [in, out] (+ b [out]) -> [..., out], as torch.nn.functional.linear. */
anvil_status anvil_cpu_linear(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *x = s->in_node[0], *w = s->in_node[1];
    int64_t out_f = w->shape[0], in_f = w->shape[1];
    int64_t rows = in_f ? cpu_numel(x) / in_f : cpu_numel(s->node) / (out_f ? out_f : 1);
    float *y = (float *)s->out;
    const float *bias = s->node->n_in >= 3 ? (const float *)s->in[2] : NULL;
    if (rows == 0 || out_f == 0)
        return ANVIL_OK;
    /* The bias goes in first and sgemm accumulates onto it (beta = 1). */
    if (bias) {
#pragma omp parallel for if (rows * out_f >= CPU_PAR_MIN) schedule(static)
        for (int64_t r = 0; r < rows; r++)
            memcpy(y + r * out_f, bias, (size_t)out_f * sizeof(float));
    }
    if (in_f == 0) {
        if (!bias)
            memset(y, 0, (size_t)(rows * out_f) * sizeof(float));
        return ANVIL_OK;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)out_f,
                (blasint)in_f, 1.0f, (const float *)s->in[0], (blasint)in_f,
                (const float *)s->in[1], (blasint)in_f, bias ? 1.0f : 0.0f, y, (blasint)out_f);
    int64_t n = rows * out_f;
    if (s->node->ia[1] == 1) { /* fused relu epilogue (graph/fuse.c) */
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++)
            y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    } else if (s->node->ia[1] == 2) { /* fused gelu (tanh) epilogue */
#pragma omp parallel for if (n >= CPU_PAR_MIN_HEAVY) schedule(static)
        for (int64_t i = 0; i < n; i++)
            y[i] = cpu_gelu_tanh(y[i]);
    }
    return ANVIL_OK;
}
