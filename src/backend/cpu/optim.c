/* optim.c — optimizer updates over the flat parameter arena (one pass over all
 * parameters), as torch.optim's single-tensor (non-foreach, non-fused) code computes
 * them, and the per-step bookkeeping. */
#include "backend/cpu/cpu.h"

/* torch.optim.SGD: fa[0] momentum, fa[1] dampening, fa[2] weight_decay, ia[0] nesterov.
 * state: the momentum buffer (n floats), seeded with the first step's gradient. */
anvil_status anvil_cpu_sgd(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float mom = nd->fa[0], damp = nd->fa[1], wd = nd->fa[2], lr = ex->hyper->lr;
    bool nesterov = nd->ia[0] != 0, first = ex->hyper->step == 0;
    int64_t n = ex->n_params;
    float *p = ex->params, *buf = ex->state;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i];
        if (wd != 0.0f)
            g += wd * p[i];
        if (mom != 0.0f) {
            float b = first ? g : mom * buf[i] + (1.0f - damp) * g;
            buf[i] = b;
            g = nesterov ? g + mom * b : b;
        }
        p[i] -= lr * g;
    }
    return ANVIL_OK;
}

/* torch.optim.Adam / AdamW: fa[0] beta1, fa[1] beta2, fa[2] eps, fa[3] weight_decay,
 * ia[0] decoupled (AdamW).  state: m (n floats) then v (n floats). */
anvil_status anvil_cpu_adam(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float b1 = nd->fa[0], b2 = nd->fa[1], eps = nd->fa[2], wd = nd->fa[3];
    bool decoupled = nd->ia[0] != 0;
    double lr = ex->hyper->lr, t = (double)ex->hyper->step + 1.0;
    /* Bias corrections in double, as Python computes them. */
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - lr * wd);
    int64_t n = ex->n_params;
    float *p = ex->params, *m = ex->state, *v = ex->state + n;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i], pi = p[i];
        if (wd != 0.0f) {
            if (decoupled)
                pi *= decay;
            else
                g += wd * pi;
        }
        /* torch: exp_avg.lerp_(grad, 1 - beta1), i.e. b1 m + (1 - b1) g, rounded as
         * lerp rounds. */
        float w1 = 1.0f - b1, mi = w1 < 0.5f ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * (1.0f - w1);
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
    return ANVIL_OK;
}

/* After the update: one optimizer step done; the next step gets fresh dropout masks. */
anvil_status anvil_cpu_step_end(const anvil_exec *ex, const anvil_step *s)
{
    ex->hyper->step += 1;
    ex->hyper->rng_counter += 1;
    if (s->node->n_in == 1) /* resident data: the batch just used */
        ex->hyper->data_cursor += s->in_node[0]->shape[0];
    return ANVIL_OK;
}
