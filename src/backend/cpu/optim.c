/* optim.c — optimizer updates over the flat parameter arena (one pass over all
 * parameters), as torch.optim's single-tensor (non-foreach, non-fused) code computes
 * them, and the per-step bookkeeping. */
#include "backend/cpu/cpu.h"
#include "optim/schedule.h"

/* An update node's view: its group's slice of the arenas, lr and gradient transform. */
typedef struct {
    float *p;
    const float *g;
    float *s[3];      /* state slots 0..2 over the same slice */
    int64_t n;
    anvil_group_hyper *gh;
    float clipv, coef;
} slice;

static slice slice_of(const anvil_exec *ex, const anvil_node *nd)
{
    slice sl;
    int64_t off = anvil_optim_off(nd);
    sl.p = ex->params + off;
    sl.g = ex->grads + off;
    for (int k = 0; k < 3; k++)
        sl.s[k] = ex->state ? ex->state + k * ex->n_params + off : NULL;
    sl.n = anvil_optim_len(nd);
    if (sl.n > ex->n_params - off) /* the last group's padding may lie past a short arena */
        sl.n = ex->n_params - off;
    sl.gh = &ex->hyper->group[nd->ia[2]];
    sl.clipv = nd->fa[5];
    sl.coef = ex->hyper->clip_coef;
    return sl;
}

/* The gradient the update sees: clip_grad_value_ (NaN passes through, as torch.clamp),
 * then clip_grad_norm_'s factor (1 without clipping: exact). */
static inline float clipped(float g, float v, float coef)
{
    if (v > 0.0f)
        g = g < -v ? -v : (g > v ? v : g);
    return g * coef;
}

/* torch.optim.SGD: fa[0] momentum, fa[1] dampening, fa[2] weight_decay, ia[0] nesterov,
 * ia[5] maximize.
 * state: the momentum buffer (n floats), seeded with the first step's gradient. */
anvil_status anvil_cpu_sgd(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    slice sl = slice_of(ex, nd);
    float mom = nd->fa[0], damp = nd->fa[1], wd = nd->fa[2], lr = sl.gh->lr;
    bool nesterov = nd->ia[0] != 0, first = ex->hyper->step == 0, maximize = nd->ia[5] != 0;
    int64_t n = sl.n;
    float *p = sl.p, *buf = sl.s[0];
    const float *grad = sl.g;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = clipped(grad[i], sl.clipv, sl.coef);
        if (maximize)
            g = -g;
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
    slice sl = slice_of(ex, nd);
    double lr = sl.gh->lr, t = (double)ex->hyper->step + 1.0;
    /* Bias corrections in double, as Python computes them. */
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - lr * wd);
    int64_t n = sl.n;
    float *p = sl.p, *m = sl.s[0], *v = sl.s[1], *vmax = sl.s[2];
    const float *grad = sl.g;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], g = adam_grad(clipped(grad[i], sl.clipv, sl.coef), &pi, maximize, wd, decoupled, decay);
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
    slice sl = slice_of(ex, nd);
    float alpha = nd->fa[0], eps = nd->fa[1], wd = nd->fa[2], mom = nd->fa[3], lr = sl.gh->lr;
    bool centered = nd->ia[0] != 0, maximize = nd->ia[5] != 0;
    int64_t n = sl.n;
    float *p = sl.p, *sq = sl.s[0], *buf = sl.s[1];
    float *gavg = sl.s[mom > 0.0f ? 2 : 1];
    const float *grad = sl.g;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = clipped(grad[i], sl.clipv, sl.coef);
        if (maximize)
            g = -g;
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
    slice sl = slice_of(ex, nd);
    /* clr = lr / (1 + (step - 1) lr_decay) in double, as Python computes it */
    float clr = (float)((double)sl.gh->lr / (1.0 + (double)ex->hyper->step * (double)lr_decay));
    int64_t n = sl.n;
    float *p = sl.p, *sum = sl.s[0];
    const float *grad = sl.g;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = clipped(grad[i], sl.clipv, sl.coef);
        if (maximize)
            g = -g;
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
    slice sl = slice_of(ex, nd);
    float rho = nd->fa[0], eps = nd->fa[1], wd = nd->fa[2], lr = sl.gh->lr;
    bool maximize = nd->ia[5] != 0;
    int64_t n = sl.n;
    float *p = sl.p, *sq = sl.s[0], *acc = sl.s[1];
    const float *grad = sl.g;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = clipped(grad[i], sl.clipv, sl.coef);
        if (maximize)
            g = -g;
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
    slice sl = slice_of(ex, nd);
    /* The scalars in double, as Python computes them; mu_product is float32 as in torch. */
    double lr = sl.gh->lr, t = (double)h->step + 1.0, md = nd->fa[4];
    float bc2 = (float)(1.0 - pow(b2, t));
    double mu = b1 * (1.0 - 0.5 * pow(0.96, t * md));
    double mu_next = b1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * md));
    double mp_old = h->step == 0 ? 1.0 : (double)sl.gh->nadam_mu_product[h->step & 1];
    float mp = (float)(mp_old * mu);
    sl.gh->nadam_mu_product[(h->step + 1) & 1] = mp;
    float c_grad = (float)(lr * (1.0 - mu) / (1.0 - (double)mp));
    float c_avg = (float)(lr * mu_next / (1.0 - (double)mp * mu_next));
    float decay = (float)(1.0 - lr * wd);
    int64_t n = sl.n;
    float *p = sl.p, *m = sl.s[0], *v = sl.s[1];
    const float *grad = sl.g;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], g = adam_grad(clipped(grad[i], sl.clipv, sl.coef), &pi, maximize, wd, decoupled, decay);
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

/* torch.nn.utils.clip_grad_norm_ (foreach): the p-norm of all gradients, accumulated in
 * double in a fixed order (per-thread chunks, then the chunks in order), rounded to float
 * as torch's float32 norm; clip_coef = min(1, max_norm / (norm + 1e-6)) in float. */
anvil_status anvil_cpu_clip_norm(const anvil_exec *ex, const anvil_step *s)
{
    const anvil_node *nd = s->node;
    float max_norm = nd->fa[0], v = nd->fa[2];
    double p = nd->fa[1];
    bool inf = isinf(p);
    int64_t n = ex->n_params;
    const float *g = ex->grads;
    double part[ANVIL_CLIP_BLOCKS] = {0};
    int64_t chunk = (n + ANVIL_CLIP_BLOCKS - 1) / ANVIL_CLIP_BLOCKS;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int b = 0; b < ANVIL_CLIP_BLOCKS; b++) {
        double acc = 0.0;
        int64_t end = (b + 1) * chunk < n ? (b + 1) * chunk : n;
        for (int64_t i = b * chunk; i < end; i++) {
            double a = fabs((double)clipped(g[i], v, 1.0f));
            if (inf)
                acc = a > acc ? a : acc;
            else
                acc += p == 2.0 ? a * a : pow(a, p);
        }
        part[b] = acc;
    }
    double total = 0.0;
    for (int b = 0; b < ANVIL_CLIP_BLOCKS; b++)
        total = inf ? (part[b] > total ? part[b] : total) : total + part[b];
    float norm = (float)(inf ? total : p == 2.0 ? sqrt(total) : pow(total, 1.0 / p));
    float coef = max_norm / (norm + 1e-6f);
    ex->hyper->grad_norm = norm;
    ex->hyper->clip_coef = coef < 1.0f ? coef : 1.0f;
    return ANVIL_OK;
}

/* After the update: one optimizer step done; the next step gets fresh dropout masks and
 * its learning rates from the schedule. */
anvil_status anvil_cpu_step_end(const anvil_exec *ex, const anvil_step *s)
{
    anvil_hyper *h = ex->hyper;
    h->step += 1;
    h->rng_counter += 1;
    if (s->node->n_in == 1) /* resident data: the batch just used */
        h->data_cursor += s->in_node[0]->shape[0];
    if (h->sched.kind != ANVIL_SCHED_PLATEAU) /* plateau: the host sets the lr */
        for (int g = 0; g < h->n_groups; g++)
            h->group[g].lr = anvil_schedule_lr(&h->sched, h->group[g].base_lr, h->step);
    return ANVIL_OK;
}
