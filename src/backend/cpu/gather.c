/* gather.c — the next batch of the resident dataset, in this epoch's order. */
#include "backend/cpu/cpu.h"

anvil_status anvil_cpu_gather(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_data *d = ex->data;
    int64_t b = s->node->shape[0], start = ex->hyper->data_cursor;
    if (!d || start + b > d->n)
        return anvil_fail(ANVIL_ERR_STATE, "gather: no resident dataset, or batch past its end");
    if (s->node->ia[0] == 1) {
        int32_t *y = (int32_t *)s->out;
        for (int64_t i = 0; i < b; i++)
            y[i] = d->labels[d->order[start + i]];
        return ANVIL_OK;
    }
    float *x = (float *)s->out;
    int64_t k = d->sample_elems;
#pragma omp parallel for if (b * k >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < b; i++) {
        const uint8_t *src = d->images + (int64_t)d->order[start + i] * k;
        for (int64_t j = 0; j < k; j++)
            x[i * k + j] = (float)src[j] / 255.0f; /* as the batcher: same bits */
    }
    return ANVIL_OK;
}
