/* config.c — optimizer and loss configuration: names, parsing, torch.optim's defaults,
 * checks (optimizer options, gradient clipping), and the optimizer update node and
 * state slots the trainer builds from an optimizer config. */
#include "optim/config.h"
#include "optim/lbfgs.h"

#include <math.h>

static const char *loss_names[ANVIL_LOSS_COUNT] = {"cross_entropy", "cross_entropy_probs", "bce",
                                                    "bce_with_logits", "mse", "l1", "huber", "smooth_l1"};
static const char *opt_names[ANVIL_OPT_COUNT] = {"sgd", "adam", "adamw", "rmsprop",
                                                  "adagrad", "adadelta", "nadam", "lbfgs"};

const char *anvil_loss_name(anvil_loss_kind k) { return (unsigned)k < ANVIL_LOSS_COUNT ? loss_names[k] : "?"; }
const char *anvil_optimizer_name(anvil_optimizer_kind k) { return (unsigned)k < ANVIL_OPT_COUNT ? opt_names[k] : "?"; }

anvil_status anvil_loss_parse(const char *name, anvil_loss_kind *out)
{
    for (int i = 0; name && i < ANVIL_LOSS_COUNT; i++)
        if (strcmp(name, loss_names[i]) == 0) {
            *out = (anvil_loss_kind)i;
            return ANVIL_OK;
        }
    if (name && (strcmp(name, "crossentropy") == 0 || strcmp(name, "ce") == 0)) {
        *out = ANVIL_LOSS_CROSS_ENTROPY;
        return ANVIL_OK;
    }
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "unknown loss '%s' (cross_entropy, cross_entropy_probs, bce, "
                      "bce_with_logits, mse, l1, huber, smooth_l1)", name ? name : "(null)");
}

anvil_status anvil_optimizer_parse(const char *name, anvil_optimizer_kind *out)
{
    for (int i = 0; name && i < ANVIL_OPT_COUNT; i++)
        if (strcmp(name, opt_names[i]) == 0) {
            *out = (anvil_optimizer_kind)i;
            return ANVIL_OK;
        }
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "unknown optimizer '%s' (sgd, adam, adamw, rmsprop, adagrad, "
                      "adadelta, nadam, lbfgs)", name ? name : "(null)");
}

anvil_optimizer_config anvil_optimizer_default_config(anvil_optimizer_kind kind)
{
    anvil_optimizer_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = kind == ANVIL_OPT_SGD ? 0.01f : 0.001f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.weight_decay = kind == ANVIL_OPT_ADAMW ? 0.01f : 0.0f;
    c.alpha = 0.99f;
    c.rho = 0.9f;
    c.momentum_decay = 4e-3f;
    /* torch.optim's per-class defaults */
    switch (kind) {
    case ANVIL_OPT_RMSPROP: c.lr = 0.01f; break;
    case ANVIL_OPT_ADAGRAD: c.lr = 0.01f; c.eps = 1e-10f; break;
    case ANVIL_OPT_ADADELTA: c.lr = 1.0f; c.eps = 1e-6f; break;
    case ANVIL_OPT_NADAM: c.lr = 2e-3f; break;
    case ANVIL_OPT_LBFGS: {
        anvil_lbfgs_options l = anvil_lbfgs_default_options();
        c.lr = l.lr;
        c.history_size = l.history_size;
        c.max_iter = l.max_iter;
        c.max_eval = l.max_eval;
        c.tolerance_grad = l.tolerance_grad;
        c.tolerance_change = l.tolerance_change;
        c.strong_wolfe = l.strong_wolfe;
        break;
    }
    default: break;
    }
    return c;
}

/* An option the kind does not have must be left at its default: silently ignoring it
 * would train something other than what was asked for. */
static anvil_status check_unused(const anvil_optimizer_config *o)
{
    anvil_optimizer_kind k = o->kind;
    const char *name = anvil_optimizer_name(k);
    bool sgd = k == ANVIL_OPT_SGD, adam = k == ANVIL_OPT_ADAM || k == ANVIL_OPT_ADAMW;
    if (o->momentum != 0.0f && !sgd && k != ANVIL_OPT_RMSPROP)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s has no momentum option (sgd, rmsprop)", name);
    if ((o->dampening != 0.0f || o->nesterov) && !sgd)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s has no dampening/nesterov options (sgd)", name);
    if (o->amsgrad && !adam)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s has no amsgrad option (adam, adamw)", name);
    if (o->centered && k != ANVIL_OPT_RMSPROP)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s has no centered option (rmsprop)", name);
    if ((o->lr_decay != 0.0f || o->initial_accumulator_value != 0.0f) && k != ANVIL_OPT_ADAGRAD)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s has no lr_decay/initial_accumulator_value options (adagrad)",
                          name);
    if (o->decoupled_weight_decay && k != ANVIL_OPT_NADAM)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s has no decoupled_weight_decay option (nadam; use adamw)",
                          name);
    bool lbfgs = k == ANVIL_OPT_LBFGS;
    if (!lbfgs && (o->history_size || o->max_iter || o->max_eval || o->tolerance_grad != 0.0f ||
                   o->tolerance_change != 0.0f || o->strong_wolfe))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s has no history_size/max_iter/max_eval/tolerance/line-search "
                          "options (lbfgs)", name);
    if (lbfgs && (o->weight_decay != 0.0f || o->maximize))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs has no weight_decay or maximize option (as torch's LBFGS)");
    return ANVIL_OK;
}

static anvil_status check_optimizer(const anvil_optimizer_config *o)
{
    const char *name = anvil_optimizer_name(o->kind);
    ANVIL_TRY(check_unused(o));
    switch (o->kind) {
    case ANVIL_OPT_SGD:
        if (!(o->momentum >= 0.0f) || !isfinite(o->momentum))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "sgd: momentum must be >= 0, got %g", (double)o->momentum);
        if (!(o->dampening >= 0.0f && o->dampening <= 1.0f))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "sgd: dampening must be in [0, 1], got %g", (double)o->dampening);
        if (o->nesterov && (o->momentum <= 0.0f || o->dampening != 0.0f))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "sgd: nesterov needs momentum > 0 and zero dampening");
        return ANVIL_OK;
    case ANVIL_OPT_RMSPROP:
        if (!(o->alpha >= 0.0f && o->alpha <= 1.0f))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "rmsprop: alpha must be in [0, 1], got %g", (double)o->alpha);
        if (!(o->momentum >= 0.0f) || !isfinite(o->momentum))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "rmsprop: momentum must be >= 0, got %g", (double)o->momentum);
        break;
    case ANVIL_OPT_ADAGRAD:
        if (!(o->lr_decay >= 0.0f) || !isfinite(o->lr_decay))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "adagrad: lr_decay must be >= 0, got %g", (double)o->lr_decay);
        if (!(o->initial_accumulator_value >= 0.0f) || !isfinite(o->initial_accumulator_value))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "adagrad: initial_accumulator_value must be >= 0, got %g",
                              (double)o->initial_accumulator_value);
        break;
    case ANVIL_OPT_ADADELTA:
        if (!(o->rho >= 0.0f && o->rho <= 1.0f))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "adadelta: rho must be in [0, 1], got %g", (double)o->rho);
        break;
    case ANVIL_OPT_LBFGS:
        if (o->history_size < 1 || o->max_iter < 1 || o->max_eval < 0 || !(o->tolerance_grad >= 0.0f) ||
            !(o->tolerance_change >= 0.0f))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs: history_size and max_iter must be >= 1, max_eval and "
                              "the tolerances >= 0; got %d, %d, %d, %g, %g", o->history_size, o->max_iter,
                              o->max_eval, (double)o->tolerance_grad, (double)o->tolerance_change);
        return ANVIL_OK;
    default: /* Adam, AdamW, NAdam */
        if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f) || !(o->beta2 >= 0.0f && o->beta2 < 1.0f))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: betas must be in [0, 1), got (%g, %g)", name,
                              (double)o->beta1, (double)o->beta2);
        if (o->kind == ANVIL_OPT_NADAM && (!(o->momentum_decay >= 0.0f) || !isfinite(o->momentum_decay)))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "nadam: momentum_decay must be >= 0, got %g",
                              (double)o->momentum_decay);
        break;
    }
    if (!(o->eps >= 0.0f) || !isfinite(o->eps))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: eps must be >= 0, got %g", name, (double)o->eps);
    return ANVIL_OK;
}

anvil_status anvil_optimizer_check(const anvil_optimizer_config *o)
{
    if (!o)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_optimizer_check: NULL config");
    if ((unsigned)o->kind >= ANVIL_OPT_COUNT)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "trainer: unknown optimizer %d", (int)o->kind);
    if (!(o->lr > 0.0f) || !isfinite(o->lr))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "optimizer: learning rate must be positive, got %g", (double)o->lr);
    if (!(o->weight_decay >= 0.0f) || !isfinite(o->weight_decay))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "optimizer: weight_decay must be >= 0, got %g", (double)o->weight_decay);
    return check_optimizer(o);
}

anvil_status anvil_check_clipping(const anvil_trainer_config *c)
{
    if (!(c->clip_grad_value >= 0.0f) || !isfinite(c->clip_grad_value))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "clip_grad_value must be >= 0 (0: off), got %g", (double)c->clip_grad_value);
    if (!(c->clip_grad_norm >= 0.0f) || !isfinite(c->clip_grad_norm))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "clip_grad_norm must be >= 0 (0: off), got %g", (double)c->clip_grad_norm);
    if (c->clip_grad_norm > 0.0f && !(c->clip_norm_type > 0.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "clip_norm_type must be > 0 or infinity, got %g", (double)c->clip_norm_type);
    return ANVIL_OK;
}

/* The optimizer update node (attributes as graph.h documents them). */
anvil_node anvil_optimizer_node(const anvil_optimizer_config *o)
{
    static const anvil_op ops[ANVIL_OPT_COUNT] = {OP_SGD, OP_ADAM, OP_ADAM, OP_RMSPROP,
                                                  OP_ADAGRAD, OP_ADADELTA, OP_NADAM};
    anvil_node u = anvil_node_proto(ops[o->kind], 0, NULL);
    u.ia[5] = o->maximize;
    switch (o->kind) {
    case ANVIL_OPT_SGD:
        u.fa[0] = o->momentum;
        u.fa[1] = o->dampening;
        u.fa[2] = o->weight_decay;
        u.ia[0] = o->nesterov;
        break;
    case ANVIL_OPT_RMSPROP:
        u.fa[0] = o->alpha;
        u.fa[1] = o->eps;
        u.fa[2] = o->weight_decay;
        u.fa[3] = o->momentum;
        u.ia[0] = o->centered;
        break;
    case ANVIL_OPT_ADAGRAD:
        u.fa[0] = o->lr_decay;
        u.fa[1] = o->weight_decay;
        u.fa[2] = o->eps;
        u.fa[3] = o->initial_accumulator_value;
        break;
    case ANVIL_OPT_ADADELTA:
        u.fa[0] = o->rho;
        u.fa[1] = o->eps;
        u.fa[2] = o->weight_decay;
        break;
    default: /* Adam, AdamW, NAdam */
        u.fa[0] = o->beta1;
        u.fa[1] = o->beta2;
        u.fa[2] = o->eps;
        u.fa[3] = o->weight_decay;
        u.fa[4] = o->momentum_decay;
        u.ia[0] = o->kind == ANVIL_OPT_ADAMW || (o->kind == ANVIL_OPT_NADAM && o->decoupled_weight_decay);
        u.ia[1] = o->amsgrad;
        break;
    }
    return u;
}

/* Optimizer state slots (n_params floats each) the update node of o uses. */
int anvil_optimizer_slots(const anvil_optimizer_config *o)
{
    switch (o->kind) {
    case ANVIL_OPT_SGD: return o->momentum != 0.0f;                    /* momentum buffer */
    case ANVIL_OPT_RMSPROP: return 1 + (o->momentum > 0.0f) + o->centered; /* square_avg[, buf][, grad_avg] */
    case ANVIL_OPT_ADAGRAD: return 1;                                   /* sum */
    case ANVIL_OPT_ADADELTA: return 2;                                  /* square_avg, acc_delta */
    case ANVIL_OPT_NADAM: return 2;                                     /* exp_avg, exp_avg_sq */
    case ANVIL_OPT_LBFGS: return 0;                                     /* its own (lbfgs.c) */
    default: return 2 + o->amsgrad;                                     /* exp_avg, exp_avg_sq[, max] */
    }
}
