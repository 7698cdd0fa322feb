/* metrics.c — loss and accuracy accumulated in the persistent hyper block, so a step
 * never waits on the host; the trainer reads and resets them when asked. */
#include "backend/cpu/cpu.h"

/* in (loss scalar). */
anvil_status anvil_cpu_accum_loss(const anvil_exec *ex, const anvil_step *s)
{
    float loss = *(const float *)s->in[0];
    anvil_hyper *h = ex->hyper;
    h->loss_last = loss;
    h->loss_sum += loss;
    h->loss_count += 1.0;
    return ANVIL_OK;
}

/* in (loss scalar, output [N, ...][, labels int32 [N]]): the loss weighted by the batch
 * size, and with labels the number of rows whose argmax (first on ties, NaN counting as
 * the largest, as torch.argmax) is the label. */
anvil_status anvil_cpu_accum_eval(const anvil_exec *ex, const anvil_step *s)
{
    anvil_hyper *h = ex->hyper;
    const anvil_node *out = s->in_node[1];
    int64_t N = out->ndim >= 1 ? out->shape[0] : 1;
    float loss = *(const float *)s->in[0];
    h->eval_loss_sum += (double)loss * (double)N;
    h->eval_count += (double)N;
    if (s->node->n_in < 3 || !s->in[2] || N == 0)
        return ANVIL_OK;
    const float *y = (const float *)s->in[1];
    const int32_t *lab = (const int32_t *)s->in[2];
    int64_t C = cpu_numel(out) / N, correct = 0;
#pragma omp parallel for if (N * C >= CPU_PAR_MIN) reduction(+ : correct) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *r = y + n * C;
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++) {
            if (isnan(r[best]))
                break;
            if (r[c] > r[best] || isnan(r[c]))
                best = c;
        }
        correct += best == lab[n];
    }
    h->eval_correct += (double)correct;
    return ANVIL_OK;
}
