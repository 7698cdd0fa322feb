/* matmul.c — matrix products through OpenBLAS's sgemm. */
#include "backend/cpu/cpu.h"

#include <cblas.h>

/* a [M,K] (stored [K,M] if trans_a) x b [K,N] (stored [N,K] if trans_b) -> [M,N]. */
anvil_status anvil_cpu_matmul(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *n = s->node, *a = s->in_node[0];
    if (n->ndim != 2 || a->ndim != 2)
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "matmul: only 2-D operands on the CPU");
    bool ta = n->ia[0] != 0, tb = n->ia[1] != 0;
    int64_t M = n->shape[0], N = n->shape[1], K = ta ? a->shape[0] : a->shape[1];
    if (M == 0 || N == 0)
        return ANVIL_OK;
    if (K == 0) { /* an empty sum; not every BLAS writes C when K is 0 */
        memset(s->out, 0, (size_t)(M * N) * sizeof(float));
        return ANVIL_OK;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, 1.0f, (const float *)s->in[0],
                (blasint)(ta ? M : K), (const float *)s->in[1], (blasint)(tb ? K : N), 0.0f,
                (float *)s->out, (blasint)N);
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
    return ANVIL_OK;
}
