/* optim.c — optimizer updates over the flat parameter arena (one pass over all
 * parameters), as torch.optim's single-tensor (non-foreach, non-fused) code computes
 * them, and the per-step bookkeeping. */
#include "backend/cpu/cpu.h"

/* torch.optim.SGD: fa[0] momentum, fa[1] dampening, fa[2] weight_decay, ia[0] nesterov,
 * ia[5] maximize.
 * state: the momentum buffer (n floats), seeded with the first step's gradient. */
anvil_status anvil_cpu_sgd(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float mom = nd->fa[0], damp = nd->fa[1], wd = nd->fa[2], lr = ex->hyper->lr;
    bool nesterov = nd->ia[0] != 0, first = ex->hyper->step == 0, maximize = nd->ia[5] != 0;
    int64_t n = ex->n_params;
    float *p = ex->params, *buf = ex->state;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = maximize ? -grad[i] : grad[i];
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

/* torch's exp_avg.lerp_(x, w): a + w (x - a), rounded as lerp rounds. */
static inline float lerp_w(float a, float x, float w)
{
    return w < 0.5f ? a + w * (x - a) : x - (x - a) * (1.0f - w);
}

/* Adam-family gradient: sign for maximize, then weight decay, L2 (into the gradient) or
 * decoupled (AdamW / NAdam's decoupled_weight_decay: into the parameter, *pi). */
static inline float adam_grad(float g, float *pi, bool maximize, float wd, bool decoupled, float decay)
{
    if (maximize)
        g = -g;
    if (wd != 0.0f) {
        if (decoupled)
            *pi *= decay;
        else
            g += wd * *pi;
    }
    return g;
}

/* torch.optim.Adam / AdamW: fa[0] beta1, fa[1] beta2, fa[2] eps, fa[3] weight_decay,
 * ia[0] decoupled (AdamW), ia[1] amsgrad, ia[5] maximize.  state: m, v[, vmax] (n floats
 * each). */
anvil_status anvil_cpu_adam(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float b1 = nd->fa[0], b2 = nd->fa[1], eps = nd->fa[2], wd = nd->fa[3];
    bool decoupled = nd->ia[0] != 0, amsgrad = nd->ia[1] != 0, maximize = nd->ia[5] != 0;
    double lr = ex->hyper->lr, t = (double)ex->hyper->step + 1.0;
    /* Bias corrections in double, as Python computes them. */
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - lr * wd);
    int64_t n = ex->n_params;
    float *p = ex->params, *m = ex->state, *v = ex->state + n, *vmax = ex->state + 2 * n;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], g = adam_grad(grad[i], &pi, maximize, wd, decoupled, decay);
        float mi = lerp_w(m[i], g, 1.0f - b1); /* torch: exp_avg.lerp_(grad, 1 - beta1) */
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) { /* torch.maximum(max_exp_avg_sq, exp_avg_sq): the denominator never shrinks */
            vi = vi > vmax[i] ? vi : vmax[i];
            vmax[i] = vi;
        }
        p[i] = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
    return ANVIL_OK;
}

/* torch.optim.RMSprop: fa[0] alpha, fa[1] eps, fa[2] weight_decay, fa[3] momentum,
 * ia[0] centered, ia[5] maximize.  state: square_avg[, momentum_buffer][, grad_avg]. */
anvil_status anvil_cpu_rmsprop(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float alpha = nd->fa[0], eps = nd->fa[1], wd = nd->fa[2], mom = nd->fa[3], lr = ex->hyper->lr;
    bool centered = nd->ia[0] != 0, maximize = nd->ia[5] != 0;
    int64_t n = ex->n_params;
    float *p = ex->params, *sq = ex->state, *buf = ex->state + n;
    float *gavg = ex->state + (mom > 0.0f ? 2 : 1) * n;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = maximize ? -grad[i] : grad[i];
        if (wd != 0.0f)
            g += wd * p[i];
        float si = alpha * sq[i] + (1.0f - alpha) * g * g, avg;
        sq[i] = si;
        if (centered) {
            float ga = lerp_w(gavg[i], g, 1.0f - alpha);
            gavg[i] = ga;
            avg = sqrtf(si - ga * ga) + eps;
        } else {
            avg = sqrtf(si) + eps;
        }
        if (mom > 0.0f) {
            float b = mom * buf[i] + g / avg;
            buf[i] = b;
            p[i] -= lr * b;
        } else {
            p[i] -= lr * g / avg;
        }
    }
    return ANVIL_OK;
}

/* torch.optim.Adagrad: fa[0] lr_decay, fa[1] weight_decay, fa[2] eps,
 * fa[3] initial_accumulator_value, ia[5] maximize.  state: sum, zero-filled by the
 * trainer; step 1 starts it from the initial value (torch's torch.full_like). */
anvil_status anvil_cpu_adagrad(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float lr_decay = nd->fa[0], wd = nd->fa[1], eps = nd->fa[2], init = nd->fa[3];
    bool maximize = nd->ia[5] != 0, first = ex->hyper->step == 0;
    /* clr = lr / (1 + (step - 1) lr_decay) in double, as Python computes it */
    float clr = (float)((double)ex->hyper->lr / (1.0 + (double)ex->hyper->step * (double)lr_decay));
    int64_t n = ex->n_params;
    float *p = ex->params, *sum = ex->state;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = maximize ? -grad[i] : grad[i];
        if (wd != 0.0f)
            g += wd * p[i];
        float si = (first ? init : sum[i]) + g * g;
        sum[i] = si;
        p[i] -= clr * g / (sqrtf(si) + eps);
    }
    return ANVIL_OK;
}

/* torch.optim.Adadelta: fa[0] rho, fa[1] eps, fa[2] weight_decay, ia[5] maximize.
 * state: square_avg, acc_delta. */
anvil_status anvil_cpu_adadelta(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float rho = nd->fa[0], eps = nd->fa[1], wd = nd->fa[2], lr = ex->hyper->lr;
    bool maximize = nd->ia[5] != 0;
    int64_t n = ex->n_params;
    float *p = ex->params, *sq = ex->state, *acc = ex->state + n;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = maximize ? -grad[i] : grad[i];
        if (wd != 0.0f)
            g += wd * p[i];
        float si = rho * sq[i] + (1.0f - rho) * g * g;
        sq[i] = si;
        float delta = sqrtf(acc[i] + eps) / sqrtf(si + eps) * g;
        acc[i] = rho * acc[i] + (1.0f - rho) * delta * delta;
        p[i] -= lr * delta;
    }
    return ANVIL_OK;
}

/* torch.optim.NAdam: fa[0] beta1, fa[1] beta2, fa[2] eps, fa[3] weight_decay,
 * fa[4] momentum_decay, ia[0] decoupled_weight_decay, ia[5] maximize.  state: exp_avg,
 * exp_avg_sq; the running product of mu is hyper->nadam_mu_product (see graph.h). */
anvil_status anvil_cpu_nadam(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float b1 = nd->fa[0], b2 = nd->fa[1], eps = nd->fa[2], wd = nd->fa[3];
    bool decoupled = nd->ia[0] != 0, maximize = nd->ia[5] != 0;
    anvil_hyper *h = ex->hyper;
    /* The scalars in double, as Python computes them; mu_product is float32 as in torch. */
    double lr = h->lr, t = (double)h->step + 1.0, md = nd->fa[4];
    float bc2 = (float)(1.0 - pow(b2, t));
    double mu = b1 * (1.0 - 0.5 * pow(0.96, t * md));
    double mu_next = b1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * md));
    double mp_old = h->step == 0 ? 1.0 : (double)h->nadam_mu_product[h->step & 1];
    float mp = (float)(mp_old * mu);
    h->nadam_mu_product[(h->step + 1) & 1] = mp;
    float c_grad = (float)(lr * (1.0 - mu) / (1.0 - (double)mp));
    float c_avg = (float)(lr * mu_next / (1.0 - (double)mp * mu_next));
    float decay = (float)(1.0 - lr * wd);
    int64_t n = ex->n_params;
    float *p = ex->params, *m = ex->state, *v = ex->state + n;
    const float *grad = ex->grads;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], g = adam_grad(grad[i], &pi, maximize, wd, decoupled, decay);
        float mi = lerp_w(m[i], g, 1.0f - b1);
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi / bc2) + eps;
        pi -= c_grad * g / denom;
        p[i] = pi - c_avg * mi / denom;
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
