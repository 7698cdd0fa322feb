/* dropout.c — dropout and its gradient.  The mask is never stored: both kernels
 * regenerate it from (seed, step counter, stream, element index) with the same Philox
 * test as anvil_dropout_keep (philox.h), which the CUDA backend shares. */
#include "backend/cpu/cpu.h"
#include "core/philox.h"

/* out = keep ? x / (1-p) : 0; used for the forward (x) and the backward (dy). */
static anvil_status dropout_apply(const anvil_exec *ex, const anvil_step *s)
{
    int64_t n = cpu_numel(s->node);
    const float *x = (const float *)s->in[0];
    float *o = (float *)s->out;
    float p = s->node->fa[0];
    if (p <= 0.0f) { /* nothing dropped */
        if (o != x && n)
            memcpy(o, x, (size_t)n * sizeof(float));
        return ANVIL_OK;
    }
    if (p >= 1.0f) { /* everything dropped (and 1/(1-p) would be infinite) */
        if (n)
            memset(o, 0, (size_t)n * sizeof(float));
        return ANVIL_OK;
    }
    const anvil_hyper *h = ex->hyper;
    uint32_t stream = (uint32_t)s->node->ia[0], ctr = h->rng_counter;
    uint32_t klo = h->seed_lo, khi = h->seed_hi;
    float q = 1.0f - p;
    int64_t ng = (n + 3) / 4;
    /* One Philox call per group of four elements, exactly as anvil_dropout_keep's. */
#pragma omp parallel for if (n >= CPU_PAR_MIN_HEAVY) schedule(static)
    for (int64_t g = 0; g < ng; g++) {
        anvil_philox_out r = anvil_philox((uint32_t)(uint64_t)g, (uint32_t)((uint64_t)g >> 32),
                                          stream, ctr, klo, khi);
        int64_t i0 = g * 4, k = cpu_min64(4, n - i0);
        for (int64_t j = 0; j < k; j++) {
            float v = x[i0 + j];
            o[i0 + j] = anvil_u32_to_unit(r.v[j]) >= p ? v / q : 0.0f;
        }
    }
    return ANVIL_OK;
}

anvil_status anvil_cpu_dropout(const anvil_exec *ex, const anvil_step *s)
{
    return dropout_apply(ex, s);
}

anvil_status anvil_cpu_dropout_bwd(const anvil_exec *ex, const anvil_step *s)
{
    return dropout_apply(ex, s);
}
