/* trainer.c — the trainer: one persistent arena (hyperparameters, parameters,
 * gradients, optimizer state, buffers), and programs compiled per batch size from the
 * training, evaluation and prediction graphs.  A step is: copy the batch in, run the
 * training program.  Nothing else touches the host. */
#include "train/train.h"
#include "io/io.h"
#include "optim/config.h"
#include "optim/lbfgs.h"
#include "optim/schedule.h"

#include <fnmatch.h>
#include <math.h>

anvil_trainer_config anvil_trainer_default_config(void)
{
    anvil_trainer_config c;
    memset(&c, 0, sizeof c);
    c.device = ANVIL_DEVICE_AUTO;
    c.loss = ANVIL_LOSS_CROSS_ENTROPY;
    c.huber_delta = 1.0f;
    c.optimizer = anvil_optimizer_default_config(ANVIL_OPT_ADAM);
    c.verbose = 1;
    c.schedule = anvil_schedule_default_config(ANVIL_SCHED_CONSTANT);
    c.clip_norm_type = 2.0f;
    return c;
}

static anvil_status check_loss_config(const anvil_trainer_config *c);

static anvil_status check_config(const anvil_trainer_config *c)
{
    if ((unsigned)c->device > ANVIL_DEVICE_CUDA)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "trainer: unknown device %d", (int)c->device);
    if ((unsigned)c->loss >= ANVIL_LOSS_COUNT)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "trainer: unknown loss %d", (int)c->loss);
    ANVIL_TRY(anvil_optimizer_check(&c->optimizer));
    ANVIL_TRY(anvil_schedule_check(&c->schedule));
    ANVIL_TRY(anvil_check_clipping(c));
    if (c->optimizer.kind == ANVIL_OPT_LBFGS &&
        (c->n_param_groups > 0 || c->schedule.kind != ANVIL_SCHED_CONSTANT || c->clip_grad_norm > 0.0f ||
         c->clip_grad_value > 0.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs takes no parameter groups, schedule or gradient clipping");
    if (c->n_param_groups < 0 || c->n_param_groups > ANVIL_MAX_PARAM_GROUPS - 1 ||
        (c->n_param_groups > 0 && !c->param_groups))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "trainer: %d parameter groups (at most %d besides the default group)",
                          c->n_param_groups, ANVIL_MAX_PARAM_GROUPS - 1);
    return check_loss_config(c);
}

static anvil_status check_loss_config(const anvil_trainer_config *c)
{
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "label_smoothing must be in [0, 1), got %g", (double)c->label_smoothing);
    return ANVIL_OK;
}

/* The target input and the loss for a graph whose model output is `out`. */
static anvil_value add_loss(anvil_graph *g, const anvil_trainer_config *c, anvil_value out, anvil_value *y)
{
    int64_t shape[ANVIL_MAX_DIMS];
    int nd = anvil_value_shape(g, out, shape);
    switch (c->loss) {
    case ANVIL_LOSS_CROSS_ENTROPY:
        *y = anvil_input(g, "target", ANVIL_I32, 1, shape);
        return anvil_cross_entropy(g, out, *y, c->label_smoothing);
    default:
        *y = anvil_input(g, "target", ANVIL_F32, nd, shape);
        break;
    }
    switch (c->loss) {
    case ANVIL_LOSS_CROSS_ENTROPY_PROBS: return anvil_cross_entropy(g, out, *y, c->label_smoothing);
    case ANVIL_LOSS_BCE: return anvil_bce(g, out, *y);
    case ANVIL_LOSS_BCE_WITH_LOGITS: return anvil_bce_with_logits(g, out, *y);
    case ANVIL_LOSS_MSE: return anvil_mse(g, out, *y);
    case ANVIL_LOSS_L1: return anvil_l1(g, out, *y);
    case ANVIL_LOSS_HUBER: return anvil_huber(g, out, *y, c->huber_delta);
    case ANVIL_LOSS_SMOOTH_L1: return anvil_smooth_l1(g, out, *y, c->huber_delta);
    default: return ANVIL_NO_VALUE;
    }
}

/* The parameter groups: options of each (group 0: the trainer's optimizer; then the
 * config's groups; then the model file's, over the trainer's options) and the group of
 * every parameter (the first group that selects it). */
static anvil_status resolve_groups(anvil_trainer *t)
{
    const anvil_trainer_config *c = &t->cfg;
    const anvil_model *m = t->model;
    t->n_groups = 1 + c->n_param_groups + m->n_groups;
    if (c->optimizer.kind == ANVIL_OPT_LBFGS && m->n_groups > 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs takes no parameter groups (the model file has %d)",
                          m->n_groups);
    if (t->n_groups > ANVIL_MAX_PARAM_GROUPS)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%d parameter groups (%d from the config, %d from the model file); "
                          "at most %d", t->n_groups, c->n_param_groups, m->n_groups, ANVIL_MAX_PARAM_GROUPS);
    t->group_opt[0] = c->optimizer;
    for (int i = 0; i < c->n_param_groups; i++)
        t->group_opt[1 + i] = c->param_groups[i].optimizer;
    for (int i = 0; i < m->n_groups; i++)
        t->group_opt[1 + c->n_param_groups + i] = anvil_group_spec_apply(&m->groups[i], &c->optimizer);
    for (int gi = 1; gi < t->n_groups; gi++) {
        const anvil_optimizer_config *o = &t->group_opt[gi];
        if (o->kind != c->optimizer.kind)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "parameter group %d uses %s, the trainer %s: one optimizer for "
                              "all groups", gi, anvil_optimizer_name(o->kind), anvil_optimizer_name(c->optimizer.kind));
        anvil_status st = anvil_optimizer_check(o);
        if (st != ANVIL_OK)
            return anvil_fail(st, "parameter group %d: %s", gi, anvil_last_error());
    }
    t->param_group = anvil_xcalloc((size_t)t->n_params + 1, sizeof *t->param_group, "parameter groups");
    if (!t->param_group)
        return ANVIL_ERR_OOM;
    for (int i = 0; i < t->n_params; i++) {
        const anvil_node *nd = &m->g->nodes[t->params[i]];
        for (int k = 0; k < c->n_param_groups + m->n_groups; k++) {
            bool sel = k < c->n_param_groups
                           ? anvil_group_selects(c->param_groups[k].match, c->param_groups[k].ndim1, nd->name, nd->ndim)
                           : anvil_group_selects(m->groups[k - c->n_param_groups].match,
                                                 m->groups[k - c->n_param_groups].ndim1, nd->name, nd->ndim);
            if (sel) {
                t->param_group[i] = 1 + k;
                break;
            }
        }
    }
    return ANVIL_OK;
}

/* The training program's roots: the graph's own (updates, clipping, loss accumulation,
 * step end) and every effect node of the model graph (BatchNorm's running statistics). */
static anvil_status collect_roots(anvil_trainer *t, int n_own, const anvil_value *own)
{
    ANVIL_TRY(anvil_graph_status(t->train_g));
    const anvil_graph *m = t->model->g;
    t->roots = anvil_xmalloc((size_t)(m->n + n_own) * sizeof *t->roots, "the training roots");
    if (!t->roots)
        return ANVIL_ERR_OOM;
    for (int i = 0; i < n_own; i++)
        t->roots[t->n_roots++] = own[i];
    for (int v = 0; v < m->n; v++)
        if (anvil_opdef_of(m->nodes[v].op)->flags & OPF_EFFECT)
            t->roots[t->n_roots++] = v;
    return ANVIL_OK;
}

/* Training graph: model + loss + gradients (pinned into the gradient arena) + update. */
static anvil_status build_train_graph(anvil_trainer *t)
{
    const anvil_trainer_config *c = &t->cfg;
    ANVIL_TRY(anvil_graph_clone(t->model->g, &t->train_g));
    anvil_graph *g = t->train_g;
    t->train_loss = add_loss(g, c, t->model->output, &t->train_y);
    ANVIL_TRY(anvil_graph_status(g));
    anvil_value own[ANVIL_MAX_PARAM_GROUPS + 3];
    int n_own = 0;
    bool lbfgs = c->optimizer.kind == ANVIL_OPT_LBFGS;
    /* Right after the loss, so that on the GPU it runs beside the backward pass.  L-BFGS
     * runs the program as its closure, several times a step: the host keeps its loss. */
    if (!lbfgs)
        own[n_own++] = anvil_op1(g, OP_ACCUM_LOSS, t->train_loss);
    ANVIL_TRY(anvil_autodiff(g, t->train_loss, t->n_params, t->params, t->grads));
    /* A gradient is written straight into its slot unless it is not a fresh value of its
     * own (a view, a source, or shared with another parameter): then through a copy. */
    for (int i = 0; i < t->n_params; i++) {
        anvil_value d = t->grads[i];
        unsigned flags = anvil_opdef_of(g->nodes[d].op)->flags;
        bool shared = false;
        for (int j = 0; j < i; j++)
            shared |= t->grads[j] == d;
        if (shared || (flags & (OPF_ALIAS | OPF_SOURCE)))
            t->grads[i] = anvil_op1(g, OP_COPY, d);
    }
    if (lbfgs) { /* the program computes the loss and the gradients; lbfgs.c does the rest */
        t->step_end = ANVIL_NO_VALUE;
        anvil_value *roots = anvil_xmalloc((size_t)(t->n_params + 1) * sizeof *roots, "the training roots");
        if (!roots)
            return ANVIL_ERR_OOM;
        for (int i = 0; i < t->n_params; i++)
            roots[i] = t->grads[i];
        anvil_status st = collect_roots(t, t->n_params, roots);
        free(roots);
        return st;
    }
    if (c->clip_grad_norm > 0.0f) {
        anvil_node cn = anvil_node_proto(OP_CLIP_NORM, 0, NULL);
        cn.fa[0] = c->clip_grad_norm;
        cn.fa[1] = c->clip_norm_type;
        cn.fa[2] = c->clip_grad_value;
        own[n_own++] = anvil_graph_add(g, &cn);
    }
    for (int gi = 0; gi < t->n_groups; gi++) {
        if (t->group_len[gi] == 0)
            continue;
        anvil_node u = anvil_optimizer_node(&t->group_opt[gi]);
        u.ia[2] = gi;
        u.ia[3] = (int)(t->group_off[gi] / ANVIL_PARAM_ALIGN_FLOATS);
        u.ia[4] = (int)(t->group_len[gi] / ANVIL_PARAM_ALIGN_FLOATS);
        u.fa[5] = c->clip_grad_value;
        own[n_own++] = anvil_graph_add(g, &u);
    }
    anvil_node end = anvil_node_proto(OP_STEP_END, 0, NULL);
    t->step_end = own[n_own++] = anvil_graph_add(g, &end);
    return collect_roots(t, n_own, own);
}

static anvil_status build_eval_graph(anvil_trainer *t)
{
    ANVIL_TRY(anvil_graph_clone(t->model->g, &t->eval_g));
    anvil_graph *g = t->eval_g;
    anvil_value loss = add_loss(g, &t->cfg, t->model->output, &t->eval_y);
    anvil_value in[3] = {loss, t->model->output, t->eval_y};
    bool labels = t->cfg.loss == ANVIL_LOSS_CROSS_ENTROPY;
    anvil_node n = anvil_node_proto(OP_ACCUM_EVAL, labels ? 3 : 2, in);
    t->eval_root = anvil_graph_add(g, &n);
    return anvil_graph_status(g);
}

/* An int64 buffer (e.g. BatchNorm's num_batches_tracked) from its float init values. */
static anvil_status upload_i64(anvil_trainer *t, void *dst, const float *init, int64_t n)
{
    int64_t *v = anvil_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *v, "buffer initialization");
    if (!v)
        return ANVIL_ERR_OOM;
    for (int64_t i = 0; i < n; i++)
        v[i] = (int64_t)init[i];
    anvil_status st = t->be->upload(t->be, dst, v, (size_t)n * sizeof *v);
    free(v);
    return st;
}

/* Lays out and allocates the persistent arena; initializes parameters from the seed. */
static anvil_status build_persistent(anvil_trainer *t)
{
    const anvil_graph *g = t->model->g;
    int slots = 0;
    for (int gi = 0; gi < t->n_groups; gi++) {
        int k = anvil_optimizer_slots(&t->group_opt[gi]);
        slots = k > slots ? k : slots;
    }
    t->slots = slots;
    t->source_offset = anvil_xmalloc((size_t)g->n * sizeof *t->source_offset, "the persistent layout");
    t->grad_offset = anvil_xmalloc((size_t)(t->n_params + 1) * sizeof *t->grad_offset, "the persistent layout");
    if (!t->source_offset || !t->grad_offset)
        return ANVIL_ERR_OOM;
    for (int v = 0; v < g->n; v++)
        t->source_offset[v] = SIZE_MAX;
    int64_t nf = 0; /* padded float count of all parameters, group after group */
    for (int gi = 0; gi < t->n_groups; gi++) {
        t->group_off[gi] = nf;
        for (int i = 0; i < t->n_params; i++) {
            if (t->param_group[i] != gi)
                continue;
            t->source_offset[t->params[i]] = (size_t)nf; /* in floats for now */
            nf += (anvil_node_numel(&g->nodes[t->params[i]]) + ANVIL_PARAM_ALIGN_FLOATS - 1) /
                  ANVIL_PARAM_ALIGN_FLOATS * ANVIL_PARAM_ALIGN_FLOATS;
        }
        t->group_len[gi] = nf - t->group_off[gi];
        if (t->group_len[gi] / ANVIL_PARAM_ALIGN_FLOATS > INT32_MAX)
            return anvil_fail(ANVIL_ERR_UNSUPPORTED, "parameter group %d: %lld parameters is more than Anvil can "
                              "address in one group", gi, (long long)t->group_len[gi]);
    }
    size_t hyper_off = 0;
    size_t params_off = anvil_align_up(sizeof(anvil_hyper));
    size_t grads_off = params_off + (size_t)nf * 4;
    size_t state_off = grads_off + (size_t)nf * 4;
    size_t end = anvil_align_up(state_off + (size_t)slots * (size_t)nf * 4);
    for (int v = 0, i = 0; v < g->n; v++) {
        const anvil_node *nd = &g->nodes[v];
        if (nd->op == OP_PARAM) {
            t->grad_offset[i++] = grads_off + t->source_offset[v] * 4;
            t->source_offset[v] = params_off + t->source_offset[v] * 4;
        } else if (nd->op == OP_BUFFER) {
            t->source_offset[v] = end;
            end = anvil_align_up(end + anvil_node_bytes(nd));
        }
    }
    t->persistent_bytes = end;
    ANVIL_TRY(t->be->alloc(t->be, end, (void **)&t->persistent));
    ANVIL_TRY(t->be->zero(t->be, t->persistent, end));
    t->ex.params = (float *)(t->persistent + params_off);
    t->ex.grads = (float *)(t->persistent + grads_off);
    t->ex.state = (float *)(t->persistent + state_off);
    t->ex.n_params = nf;
    t->ex.hyper = (anvil_hyper *)(t->persistent + hyper_off);
    t->ex.backend = t->be->ctx;

    anvil_hyper h;
    memset(&h, 0, sizeof h);
    h.n_groups = t->n_groups;
    h.sched = t->cfg.schedule;
    h.clip_coef = 1.0f;
    for (int gi = 0; gi < t->n_groups; gi++) {
        h.group[gi].base_lr = t->group_opt[gi].lr;
        h.group[gi].lr = anvil_schedule_lr(&h.sched, h.group[gi].base_lr, 0);
        t->plateau.lr[gi] = t->group_opt[gi].lr;
    }
    t->plateau.best = t->cfg.schedule.mode_max ? -INFINITY : INFINITY;
    h.seed_lo = (uint32_t)t->cfg.seed;
    h.seed_hi = (uint32_t)(t->cfg.seed >> 32);
    ANVIL_TRY(t->be->upload(t->be, t->ex.hyper, &h, sizeof h));
    /* parameters and buffers from their inits: one host pass, one upload each */
    for (int v = 0, stream = 0; v < g->n; v++) {
        const anvil_node *nd = &g->nodes[v];
        if (nd->op != OP_PARAM && nd->op != OP_BUFFER)
            continue;
        int64_t n = anvil_node_numel(nd);
        float *host = anvil_xmalloc((size_t)n * sizeof *host, "parameter initialization");
        if (!host)
            return ANVIL_ERR_OOM;
        anvil_init_fill(host, n, nd->init, t->cfg.seed, (uint32_t)stream++);
        anvil_status st = nd->dtype == ANVIL_F32   ? t->be->upload(t->be, t->persistent + t->source_offset[v], host, (size_t)n * 4)
                          : nd->dtype == ANVIL_I64 ? upload_i64(t, t->persistent + t->source_offset[v], host, n)
                                                   : anvil_fail(ANVIL_ERR_UNSUPPORTED, "buffer '%s': only float32 and "
                                                                "int64 buffers", nd->name);
        free(host);
        ANVIL_TRY(st);
    }
    return t->be->sync(t->be);
}

anvil_status anvil_trainer_create(anvil_trainer **out, anvil_model *m, const anvil_trainer_config *cfg)
{
    if (!out || !m)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_create: NULL argument");
    *out = NULL;
    anvil_trainer_config c = cfg ? *cfg : anvil_trainer_default_config();
    ANVIL_TRY(check_config(&c));
    ANVIL_TRY(anvil_graph_status(m->g));
    int64_t oshape[ANVIL_MAX_DIMS];
    int ond = anvil_value_shape(m->g, m->output, oshape);
    if (c.loss == ANVIL_LOSS_CROSS_ENTROPY || c.loss == ANVIL_LOSS_CROSS_ENTROPY_PROBS) {
        if (ond != 2) {
            char s[96];
            return anvil_fail(ANVIL_ERR_SHAPE, "%s needs a model output [B, classes], the model gives %s",
                              anvil_loss_name(c.loss), anvil_shape_str(s, sizeof s, ond, oshape));
        }
    }
    anvil_trainer *t = anvil_xcalloc(1, sizeof *t, "a trainer");
    if (!t)
        return ANVIL_ERR_OOM;
    t->model = m;
    t->cfg = c;
    anvil_status st = anvil_backend_open(c.device, c.verbose, &t->be);
    const anvil_graph *g = m->g;
    for (int v = 0; st == ANVIL_OK && v < g->n; v++)
        t->n_params += g->nodes[v].op == OP_PARAM;
    if (st == ANVIL_OK) {
        t->params = anvil_xcalloc((size_t)t->n_params + 1, sizeof *t->params, "trainer");
        t->grads = anvil_xcalloc((size_t)t->n_params + 1, sizeof *t->grads, "trainer");
        if (!t->params || !t->grads)
            st = ANVIL_ERR_OOM;
    }
    for (int v = 0, i = 0; st == ANVIL_OK && v < g->n; v++)
        if (g->nodes[v].op == OP_PARAM)
            t->params[i++] = v;
    if (st == ANVIL_OK)
        st = resolve_groups(t);
    if (st == ANVIL_OK) /* first: the update nodes need each group's slice */
        st = build_persistent(t);
    if (st == ANVIL_OK)
        st = build_train_graph(t);
    if (st == ANVIL_OK)
        st = build_eval_graph(t);
    if (st == ANVIL_OK && c.optimizer.kind == ANVIL_OPT_LBFGS) {
        anvil_lbfgs_options lo = anvil_lbfgs_default_options();
        lo.lr = c.optimizer.lr, lo.history_size = c.optimizer.history_size, lo.max_iter = c.optimizer.max_iter;
        lo.max_eval = c.optimizer.max_eval, lo.tolerance_grad = c.optimizer.tolerance_grad;
        lo.tolerance_change = c.optimizer.tolerance_change, lo.strong_wolfe = c.optimizer.strong_wolfe;
        st = anvil_lbfgs_create(&t->lbfgs, t->be, t->ex.params, t->ex.grads, t->ex.n_params, &lo);
    }
    if (st != ANVIL_OK) {
        anvil_trainer_free(t);
        return st;
    }
    *out = t;
    return ANVIL_OK;
}

void anvil_trainer_free(anvil_trainer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_progs; i++)
        anvil_program_free(t->be, t->progs[i].p);
    free(t->progs);
    anvil_lbfgs_free(t->lbfgs);
    if (t->be && t->data_mem)
        t->be->free(t->be, t->data_mem);
    free(t->order_host);
    anvil_graph_free(t->res_g);
    if (t->be && t->persistent)
        t->be->free(t->be, t->persistent);
    anvil_backend_close(t->be);
    anvil_graph_free(t->train_g);
    anvil_graph_free(t->eval_g);
    free(t->source_offset);
    free(t->grad_offset);
    free(t->params);
    free(t->grads);
    free(t->roots);
    free(t->param_group);
    free(t);
}

anvil_device anvil_trainer_device(const anvil_trainer *t) { return t->be->device; }
int64_t anvil_trainer_step_count(const anvil_trainer *t) { return t->steps; }

static anvil_persist_map persist_map(const anvil_trainer *t, bool with_grads)
{
    anvil_persist_map pm;
    pm.persistent = t->persistent;
    pm.source_offset = t->source_offset;
    pm.n_base = t->model->g->n;
    pm.n_grads = with_grads ? t->n_params : 0;
    pm.grad_node = t->grads;
    pm.grad_offset = t->grad_offset;
    return pm;
}

static anvil_status get_program(anvil_trainer *t, int kind, int64_t batch, anvil_program **out)
{
    for (int i = 0; i < t->n_progs; i++)
        if (t->progs[i].kind == kind && t->progs[i].batch == batch) {
            *out = t->progs[i].p;
            return ANVIL_OK;
        }
    if (t->n_progs == t->cap_progs) {
        int cap = t->cap_progs ? 2 * t->cap_progs : 8;
        cached_program *p = anvil_xrealloc(t->progs, (size_t)cap * sizeof *p, "the program cache");
        if (!p)
            return ANVIL_ERR_OOM;
        t->progs = p;
        t->cap_progs = cap;
    }
    anvil_persist_map pm = persist_map(t, kind == PROG_TRAIN || kind == PROG_TRAIN_RESIDENT);
    anvil_status st;
    anvil_program *p = NULL;
    if (kind == PROG_TRAIN)
        st = anvil_program_compile(t->be, t->train_g, batch, true, t->n_roots, t->roots, 1, &t->train_loss, &pm, &p);
    else if (kind == PROG_TRAIN_RESIDENT)
        st = anvil_program_compile(t->be, t->res_g, batch, true, t->n_roots, t->roots, 1, &t->train_loss, &pm, &p);
    else if (kind == PROG_EVAL)
        st = anvil_program_compile(t->be, t->eval_g, batch, false, 1, &t->eval_root, 0, NULL, &pm, &p);
    else
        st = anvil_program_compile(t->be, t->model->g, batch, false, 0, NULL, 1, &t->model->output, &pm, &p);
    if (st != ANVIL_OK)
        return st;
    p->stats.persistent_bytes = t->persistent_bytes;
    t->progs[t->n_progs].kind = kind;
    t->progs[t->n_progs].batch = batch;
    t->progs[t->n_progs++].p = p;
    *out = p;
    return ANVIL_OK;
}

/* Checks x against the model input; returns the batch size or 0 after setting an error. */
static int64_t check_x(const anvil_trainer *t, const anvil_tensor *x)
{
    const anvil_model *m = t->model;
    char sx[96], sm[96];
    bool ok = x && x->dtype == ANVIL_F32 && x->ndim == m->in_ndim + 1 && x->shape[0] > 0;
    for (int i = 0; ok && i < m->in_ndim; i++)
        ok = x->shape[i + 1] == m->in_shape[i];
    if (!ok) {
        int64_t want[ANVIL_MAX_DIMS];
        want[0] = ANVIL_BATCH;
        memcpy(want + 1, m->in_shape, (size_t)m->in_ndim * sizeof *want);
        anvil_fail(ANVIL_ERR_SHAPE, "input batch: expected float32 %s, got %s %s",
                   anvil_shape_str(sm, sizeof sm, m->in_ndim + 1, want), x ? anvil_dtype_name(x->dtype) : "NULL",
                   x ? anvil_shape_str(sx, sizeof sx, x->ndim, x->shape) : "");
        return 0;
    }
    return x->shape[0];
}

static anvil_status check_y(const anvil_program *p, anvil_value yv, const anvil_tensor *y)
{
    const anvil_node *n = &p->g->nodes[yv];
    bool ok = y && y->dtype == n->dtype && y->ndim == n->ndim;
    for (int i = 0; ok && i < n->ndim; i++)
        ok = y->shape[i] == n->shape[i];
    if (!ok) {
        char sy[96], sn[96];
        return anvil_fail(ANVIL_ERR_SHAPE, "target batch: expected %s %s, got %s %s", anvil_dtype_name(n->dtype),
                          anvil_shape_str(sn, sizeof sn, n->ndim, n->shape), y ? anvil_dtype_name(y->dtype) : "NULL",
                          y ? anvil_shape_str(sy, sizeof sy, y->ndim, y->shape) : "");
    }
    return ANVIL_OK;
}

/* L-BFGS's closure: the training program (forward, loss, gradients into the gradient
 * arena) on the batch already in place, and its loss read back. */
typedef struct {
    anvil_trainer *t;
    anvil_program *p;
} lbfgs_ctx;

static anvil_status lbfgs_closure(void *ctx, float *loss)
{
    lbfgs_ctx *c = ctx;
    anvil_persist_map pm = persist_map(c->t, false);
    ANVIL_TRY(c->t->be->run(c->t->be, c->p, &c->t->ex));
    ANVIL_TRY(c->t->be->sync(c->t->be));
    return c->t->be->download(c->t->be, loss, anvil_program_ptr(c->p, &pm, c->t->train_loss), sizeof *loss);
}

/* One training step of program p: one run, or with L-BFGS one LBFGS.step(closure) and
 * then, on the host, what STEP_END and ACCUM_LOSS do in the other optimizers' programs. */
static anvil_status run_step(anvil_trainer *t, anvil_program *p, int64_t data_batch)
{
    if (!t->lbfgs)
        return t->be->run(t->be, p, &t->ex);
    lbfgs_ctx c = {t, p};
    float loss;
    ANVIL_TRY(anvil_lbfgs_step(t->lbfgs, lbfgs_closure, &c, &loss));
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    h.step += 1;
    h.rng_counter += 1;
    h.data_cursor += data_batch;
    h.loss_last = loss;
    h.loss_sum += loss;
    h.loss_count += 1;
    return t->be->upload(t->be, t->ex.hyper, &h, sizeof h);
}

/* Copies x and y into the program's input slots and runs it (a training step when
 * `train`).  The copies overlap the previous step where the backend can (upload_batch). */
static anvil_status feed_and_run(anvil_trainer *t, anvil_program *p, anvil_value yv, const anvil_tensor *x,
                                 const anvil_tensor *y, bool train)
{
    anvil_persist_map pm = persist_map(t, false);
    anvil_backend *be = t->be;
    anvil_status (*put)(anvil_backend *, void *, const void *, size_t) = be->upload_batch ? be->upload_batch : be->upload;
    ANVIL_TRY(put(be, anvil_program_ptr(p, &pm, t->model->input), x->data, anvil_tensor_nbytes(x)));
    if (y)
        ANVIL_TRY(put(be, anvil_program_ptr(p, &pm, yv), y->data, anvil_tensor_nbytes(y)));
    return train ? run_step(t, p, 0) : t->be->run(t->be, p, &t->ex);
}

static anvil_counters counters_diff(anvil_counters a, anvil_counters b)
{
    anvil_counters d;
    d.device_allocs = a.device_allocs - b.device_allocs;
    d.h2d_copies = a.h2d_copies - b.h2d_copies;
    d.h2d_bytes = a.h2d_bytes - b.h2d_bytes;
    d.d2h_copies = a.d2h_copies - b.d2h_copies;
    d.d2h_bytes = a.d2h_bytes - b.d2h_bytes;
    d.graph_launches = a.graph_launches - b.graph_launches;
    d.host_kernel_launches = a.host_kernel_launches - b.host_kernel_launches;
    return d;
}

anvil_status anvil_train_step(anvil_trainer *t, const anvil_tensor *x, const anvil_tensor *y)
{
    if (!t)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_train_step: trainer is NULL");
    int64_t b = check_x(t, x);
    if (!b)
        return ANVIL_ERR_SHAPE;
    anvil_counters before = t->be->counters;
    anvil_program *p;
    ANVIL_TRY(get_program(t, PROG_TRAIN, b, &p));
    ANVIL_TRY(check_y(p, t->train_y, y));
    before.device_allocs = t->be->counters.device_allocs; /* compiling is not the step */
    ANVIL_TRY(feed_and_run(t, p, t->train_y, x, y, true));
    t->last_step = counters_diff(t->be->counters, before);
    t->steps++;
    return ANVIL_OK;
}

/* ---- device-resident data */

/* The training graph with both inputs turned into gathers from the resident data. */
static anvil_status build_resident_graph(anvil_trainer *t)
{
    ANVIL_TRY(anvil_graph_clone(t->train_g, &t->res_g));
    anvil_node *x = &t->res_g->nodes[t->model->input], *y = &t->res_g->nodes[t->train_y];
    x->op = OP_GATHER;
    x->ia[0] = 0;
    y->op = OP_GATHER;
    y->ia[0] = 1;
    if (t->step_end != ANVIL_NO_VALUE) {
        anvil_node *end = &t->res_g->nodes[t->step_end];
        end->n_in = 1;
        end->in[0] = t->train_y;
    }
    return ANVIL_OK;
}

anvil_status anvil_trainer_attach_data(anvil_trainer *t, const anvil_dataset *d, int batch_size, bool shuffle,
                                       uint64_t seed)
{
    if (!t || !d)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_attach_data: NULL argument");
    if (batch_size <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_attach_data: batch size must be positive, got %d",
                          batch_size);
    if (t->cfg.loss != ANVIL_LOSS_CROSS_ENTROPY)
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "resident data holds class labels: the loss must be cross_entropy, "
                          "not %s", anvil_loss_name(t->cfg.loss));
    const anvil_model *m = t->model;
    bool fits = d->sample_ndim == m->in_ndim;
    for (int i = 0; fits && i < m->in_ndim; i++)
        fits = d->sample_shape[i] == m->in_shape[i];
    if (!fits) {
        char a[96], b[96];
        return anvil_fail(ANVIL_ERR_SHAPE, "dataset samples are %s but the model takes %s",
                          anvil_shape_str(a, sizeof a, d->sample_ndim, d->sample_shape),
                          anvil_shape_str(b, sizeof b, m->in_ndim, m->in_shape));
    }
    /* drop an earlier attachment and the programs captured over it */
    for (int i = 0; i < t->n_progs;)
        if (t->progs[i].kind == PROG_TRAIN_RESIDENT) {
            anvil_program_free(t->be, t->progs[i].p);
            t->progs[i] = t->progs[--t->n_progs];
        } else {
            i++;
        }
    if (t->data_mem)
        t->be->free(t->be, t->data_mem);
    t->data_mem = NULL;
    free(t->order_host);
    t->ex.data = NULL;
    size_t img = anvil_align_up((size_t)d->n * d->sample_bytes), lab = anvil_align_up((size_t)d->n * 4);
    t->order_host = anvil_xmalloc((size_t)d->n * sizeof *t->order_host, "the epoch order");
    if (!t->order_host)
        return ANVIL_ERR_OOM;
    ANVIL_TRY(t->be->alloc(t->be, img + 2 * lab, (void **)&t->data_mem));
    ANVIL_TRY(t->be->upload(t->be, t->data_mem, d->images, (size_t)d->n * d->sample_bytes));
    ANVIL_TRY(t->be->upload(t->be, t->data_mem + img, d->labels, (size_t)d->n * 4));
    t->data.images = (const uint8_t *)t->data_mem;
    t->data.labels = (const int32_t *)(t->data_mem + img);
    t->data.order = (const uint32_t *)(t->data_mem + img + lab);
    t->data.n = d->n;
    t->data.sample_elems = (int64_t)d->sample_bytes;
    t->ex.data = &t->data;
    if (!t->res_g)
        ANVIL_TRY(build_resident_graph(t));
    t->res_batch = batch_size;
    t->res_shuffle = shuffle;
    t->res_seed = seed;
    t->res_epoch = 0;
    t->res_pos = 0;
    t->res_begin = true;
    return ANVIL_OK;
}

anvil_status anvil_trainer_upload_order(anvil_trainer *t)
{
    anvil_shuffle_order(t->order_host, t->data.n, t->res_shuffle, t->res_seed, t->res_epoch);
    return t->be->upload(t->be, (void *)t->data.order, t->order_host, (size_t)t->data.n * 4);
}

anvil_status anvil_train_step_resident(anvil_trainer *t, bool *epoch_done)
{
    if (!t || !epoch_done)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_train_step_resident: NULL argument");
    *epoch_done = false;
    if (!t->data_mem)
        return anvil_fail(ANVIL_ERR_STATE, "anvil_train_step_resident: no data attached (anvil_trainer_attach_data)");
    if (t->res_pos >= t->data.n) {
        *epoch_done = true;
        t->res_epoch++;
        t->res_pos = 0;
        t->res_begin = true;
        return ANVIL_OK;
    }
    anvil_counters before = t->be->counters;
    if (t->res_begin) {
        /* once per epoch: this epoch's order, and the cursor back to its start */
        int64_t zero = 0;
        ANVIL_TRY(anvil_trainer_upload_order(t));
        ANVIL_TRY(t->be->upload(t->be, &t->ex.hyper->data_cursor, &zero, sizeof zero));
        t->res_begin = false;
    }
    int64_t b = t->data.n - t->res_pos < t->res_batch ? t->data.n - t->res_pos : t->res_batch;
    anvil_program *p;
    ANVIL_TRY(get_program(t, PROG_TRAIN_RESIDENT, b, &p));
    before.device_allocs = t->be->counters.device_allocs; /* compiling is not the step */
    ANVIL_TRY(run_step(t, p, b));
    t->last_step = counters_diff(t->be->counters, before);
    t->res_pos += b;
    t->steps++;
    return ANVIL_OK;
}

anvil_status anvil_trainer_read_hyper(anvil_trainer *t, anvil_hyper *h)
{
    ANVIL_TRY(t->be->sync(t->be));
    return t->be->download(t->be, h, t->ex.hyper, sizeof *h);
}

anvil_status anvil_trainer_last_loss(anvil_trainer *t, float *loss)
{
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    *loss = h.loss_last;
    return ANVIL_OK;
}

anvil_status anvil_trainer_take_mean_loss(anvil_trainer *t, float *mean_loss)
{
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    *mean_loss = h.loss_count > 0 ? (float)(h.loss_sum / h.loss_count) : NAN;
    double zero[2] = {0, 0};
    return t->be->upload(t->be, &t->ex.hyper->loss_sum, zero, sizeof zero);
}

/* Uploads group gi's base lr and the lr its next step uses (the schedule's at the
 * current step: the device computes the later ones). */
static anvil_status put_group_lr(anvil_trainer *t, int gi, float base, float now)
{
    anvil_group_hyper *gh = &t->ex.hyper->group[gi];
    ANVIL_TRY(t->be->upload(t->be, &gh->base_lr, &base, sizeof base));
    return t->be->upload(t->be, &gh->lr, &now, sizeof now);
}

anvil_status anvil_trainer_set_group_lr(anvil_trainer *t, int group, float lr)
{
    if (!t)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_set_group_lr: trainer is NULL");
    if (group < 0 || group >= t->n_groups)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "no parameter group %d (the trainer has %d)", group, t->n_groups);
    if (!(lr > 0.0f) || !isfinite(lr))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "learning rate must be positive, got %g", (double)lr);
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    t->plateau.lr[group] = lr;
    float now = h.sched.kind == ANVIL_SCHED_PLATEAU ? lr : anvil_schedule_lr(&h.sched, lr, h.step);
    return put_group_lr(t, group, lr, now);
}

anvil_status anvil_trainer_set_lr(anvil_trainer *t, float lr)
{
    if (!t)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_set_lr: trainer is NULL");
    for (int gi = 0; gi < t->n_groups; gi++)
        ANVIL_TRY(anvil_trainer_set_group_lr(t, gi, lr));
    return ANVIL_OK;
}

int anvil_trainer_param_groups(const anvil_trainer *t) { return t ? t->n_groups : 0; }

anvil_status anvil_trainer_lr(anvil_trainer *t, int group, float *lr)
{
    if (!t || !lr)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_lr: NULL argument");
    if (group < 0 || group >= t->n_groups)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "no parameter group %d (the trainer has %d)", group, t->n_groups);
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    *lr = h.group[group].lr;
    return ANVIL_OK;
}

anvil_status anvil_trainer_last_grad_norm(anvil_trainer *t, float *norm)
{
    if (!t || !norm)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_last_grad_norm: NULL argument");
    if (!(t->cfg.clip_grad_norm > 0.0f))
        return anvil_fail(ANVIL_ERR_STATE, "the gradient norm is computed only with clip_grad_norm > 0");
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    *norm = h.grad_norm;
    return ANVIL_OK;
}

/* torch's ReduceLROnPlateau.step(metric), on the host (once per evaluation), then the
 * new learning rates to the device. */
anvil_status anvil_trainer_schedule_metric(anvil_trainer *t, double metric)
{
    if (!t)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_schedule_metric: trainer is NULL");
    const anvil_schedule_config *s = &t->cfg.schedule;
    if (s->kind != ANVIL_SCHED_PLATEAU)
        return anvil_fail(ANVIL_ERR_STATE, "the schedule is %s: only reduce-on-plateau takes a metric",
                          anvil_schedule_name(s->kind));
    if (isnan(metric))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "reduce-on-plateau: the metric is NaN");
    if (anvil_plateau_better(s, metric, t->plateau.best)) {
        t->plateau.best = metric;
        t->plateau.num_bad = 0;
    } else {
        t->plateau.num_bad++;
    }
    t->plateau.last_epoch++;
    if (t->plateau.cooldown_counter > 0) {
        t->plateau.cooldown_counter--;
        t->plateau.num_bad = 0;
    }
    if (t->plateau.num_bad > s->patience) {
        for (int gi = 0; gi < t->n_groups; gi++) {
            double old = t->plateau.lr[gi], lr = old * (double)s->factor;
            lr = lr > (double)s->min_lr ? lr : (double)s->min_lr;
            if (old - lr > (double)s->plateau_eps) {
                t->plateau.lr[gi] = lr;
                ANVIL_TRY(t->be->upload(t->be, &t->ex.hyper->group[gi].lr, &(float){(float)lr}, sizeof(float)));
            }
        }
        t->plateau.cooldown_counter = s->cooldown;
        t->plateau.num_bad = 0;
    }
    return ANVIL_OK;
}

anvil_status anvil_predict(anvil_trainer *t, const anvil_tensor *x, anvil_tensor **out)
{
    if (!t || !out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_predict: NULL argument");
    *out = NULL;
    int64_t b = check_x(t, x);
    if (!b)
        return ANVIL_ERR_SHAPE;
    anvil_program *p;
    ANVIL_TRY(get_program(t, PROG_PREDICT, b, &p));
    ANVIL_TRY(feed_and_run(t, p, ANVIL_NO_VALUE, x, NULL, false));
    const anvil_node *o = &p->g->nodes[t->model->output];
    anvil_tensor *r;
    ANVIL_TRY(anvil_tensor_create(&r, ANVIL_F32, o->ndim, o->shape, NULL));
    anvil_persist_map pm = persist_map(t, false);
    anvil_status st = t->be->sync(t->be);
    if (st == ANVIL_OK)
        st = t->be->download(t->be, r->data, anvil_program_ptr(p, &pm, t->model->output), anvil_tensor_nbytes(r));
    if (st != ANVIL_OK) {
        anvil_tensor_release(r);
        return st;
    }
    *out = r;
    return ANVIL_OK;
}

anvil_status anvil_evaluate(anvil_trainer *t, const anvil_dataset *d, int batch_size, anvil_eval_result *out)
{
    if (!t || !d || !out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_evaluate: NULL argument");
    if (batch_size <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_evaluate: batch size must be positive, got %d", batch_size);
    if (t->cfg.loss != ANVIL_LOSS_CROSS_ENTROPY)
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "anvil_evaluate: a labelled dataset needs the cross_entropy loss, "
                          "the trainer uses %s", anvil_loss_name(t->cfg.loss));
    memset(out, 0, sizeof *out);
    double zero[3] = {0, 0, 0};
    ANVIL_TRY(t->be->upload(t->be, &t->ex.hyper->eval_loss_sum, zero, sizeof zero));
    anvil_batcher *b;
    ANVIL_TRY(anvil_batcher_create(&b, d, batch_size, false, 0));
    anvil_status st = ANVIL_OK;
    for (;;) {
        anvil_tensor *x = NULL, *y = NULL;
        bool done = false;
        st = anvil_batcher_next(b, &x, &y, &done);
        if (st != ANVIL_OK || done)
            break;
        anvil_program *p = NULL;
        int64_t n = check_x(t, x);
        st = n ? get_program(t, PROG_EVAL, n, &p) : ANVIL_ERR_SHAPE;
        if (st == ANVIL_OK)
            st = feed_and_run(t, p, t->eval_y, x, y, false);
        anvil_tensor_release(x);
        anvil_tensor_release(y);
        if (st != ANVIL_OK)
            break;
    }
    anvil_batcher_free(b);
    ANVIL_TRY(st);
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    out->samples = (int64_t)h.eval_count;
    out->mean_loss = h.eval_count > 0 ? h.eval_loss_sum / h.eval_count : NAN;
    out->accuracy = h.eval_count > 0 ? h.eval_correct / h.eval_count : 0;
    return ANVIL_OK;
}

anvil_status anvil_trainer_plan_stats(anvil_trainer *t, int batch_size, anvil_plan_stats *out)
{
    if (!t || !out || batch_size <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_plan_stats: bad argument");
    anvil_program *p;
    ANVIL_TRY(get_program(t, PROG_TRAIN, batch_size, &p));
    *out = p->stats;
    return ANVIL_OK;
}

anvil_status anvil_trainer_counters(const anvil_trainer *t, anvil_counters *total, anvil_counters *last_step)
{
    if (!t)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_counters: trainer is NULL");
    if (total)
        *total = t->be->counters;
    if (last_step)
        *last_step = t->last_step;
    return ANVIL_OK;
}

/* ---- parameters by name */

static anvil_value find_source(const anvil_trainer *t, const char *name)
{
    const anvil_graph *g = t->model->g;
    for (int v = 0; name && v < g->n; v++)
        if ((g->nodes[v].op == OP_PARAM || g->nodes[v].op == OP_BUFFER) && g->nodes[v].name &&
            strcmp(g->nodes[v].name, name) == 0)
            return v;
    return ANVIL_NO_VALUE;
}

anvil_status anvil_trainer_get_param(anvil_trainer *t, const char *name, anvil_tensor **out)
{
    if (!t || !out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_get_param: NULL argument");
    *out = NULL;
    anvil_value v = find_source(t, name);
    if (v == ANVIL_NO_VALUE)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "the model has no parameter or buffer '%s'", name ? name : "(null)");
    const anvil_node *n = &t->model->g->nodes[v];
    anvil_tensor *r;
    ANVIL_TRY(anvil_tensor_create(&r, n->dtype, n->ndim, n->shape, NULL));
    anvil_status st = t->be->sync(t->be);
    if (st == ANVIL_OK)
        st = t->be->download(t->be, r->data, t->persistent + t->source_offset[v], anvil_tensor_nbytes(r));
    if (st != ANVIL_OK) {
        anvil_tensor_release(r);
        return st;
    }
    *out = r;
    return ANVIL_OK;
}

/* Checks that value fits source v; the message names it. */
static anvil_status check_value(const anvil_node *n, const char *name, const anvil_tensor *value)
{
    bool ok = value->dtype == n->dtype && value->ndim == n->ndim;
    for (int i = 0; ok && i < n->ndim; i++)
        ok = value->shape[i] == n->shape[i];
    if (!ok) {
        char a[96], b[96];
        return anvil_fail(ANVIL_ERR_SHAPE, "'%s': expected %s %s, got %s %s", name, anvil_dtype_name(n->dtype),
                          anvil_shape_str(a, sizeof a, n->ndim, n->shape), anvil_dtype_name(value->dtype),
                          anvil_shape_str(b, sizeof b, value->ndim, value->shape));
    }
    return ANVIL_OK;
}

anvil_status anvil_trainer_set_param(anvil_trainer *t, const char *name, const anvil_tensor *value)
{
    if (!t || !value)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_set_param: NULL argument");
    anvil_value v = find_source(t, name);
    if (v == ANVIL_NO_VALUE)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "the model has no parameter or buffer '%s'", name ? name : "(null)");
    ANVIL_TRY(check_value(&t->model->g->nodes[v], name, value));
    return t->be->upload(t->be, t->persistent + t->source_offset[v], value->data, anvil_tensor_nbytes(value));
}

anvil_status anvil_trainer_save(anvil_trainer *t, const char *path)
{
    if (!t || !path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_save: NULL argument");
    const anvil_graph *g = t->model->g;
    int n = 0;
    const char **names = anvil_xcalloc((size_t)g->n, sizeof *names, "save");
    anvil_tensor **ts = anvil_xcalloc((size_t)g->n, sizeof *ts, "save");
    anvil_status st = (names && ts) ? ANVIL_OK : ANVIL_ERR_OOM;
    for (int v = 0; st == ANVIL_OK && v < g->n; v++) {
        if (g->nodes[v].op != OP_PARAM && g->nodes[v].op != OP_BUFFER)
            continue;
        names[n] = g->nodes[v].name;
        st = anvil_trainer_get_param(t, names[n], &ts[n]);
        if (st == ANVIL_OK)
            n++;
    }
    if (st == ANVIL_OK)
        st = anvil_safetensors_write(path, n, names, (const anvil_tensor *const *)ts);
    for (int i = 0; i < n; i++)
        anvil_tensor_release(ts[i]);
    free(names);
    free(ts);
    return st;
}

anvil_status anvil_trainer_put_sources(anvil_trainer *t, const char *origin, int n, char **names,
                                       anvil_tensor **ts, const char *skip)
{
    anvil_status st = ANVIL_OK;
    size_t skip_len = skip ? strlen(skip) : 0;
    /* Check everything first (every file tensor is a model tensor, every model tensor is
     * in the file with its shape), so a bad file changes nothing. */
    for (int i = 0; i < n && st == ANVIL_OK; i++)
        if (!(skip && strncmp(names[i], skip, skip_len) == 0) && find_source(t, names[i]) == ANVIL_NO_VALUE)
            st = anvil_fail(ANVIL_ERR_FORMAT, "%s: tensor '%s' is not a parameter or buffer of the model", origin,
                            names[i]);
    const anvil_graph *g = t->model->g;
    int *match = anvil_xcalloc((size_t)g->n, sizeof *match, "load");
    if (!match)
        st = ANVIL_ERR_OOM;
    for (int v = 0; v < g->n && st == ANVIL_OK; v++) {
        if (g->nodes[v].op != OP_PARAM && g->nodes[v].op != OP_BUFFER)
            continue;
        int i = 0;
        while (i < n && strcmp(names[i], g->nodes[v].name) != 0)
            i++;
        match[v] = i;
        if (i == n)
            st = anvil_fail(ANVIL_ERR_FORMAT, "%s: missing tensor '%s'", origin, g->nodes[v].name);
        else if (check_value(&g->nodes[v], names[i], ts[i]) != ANVIL_OK)
            st = anvil_fail(ANVIL_ERR_FORMAT, "%s: %s", origin, anvil_last_error());
    }
    for (int v = 0; v < g->n && st == ANVIL_OK; v++)
        if (g->nodes[v].op == OP_PARAM || g->nodes[v].op == OP_BUFFER)
            st = t->be->upload(t->be, t->persistent + t->source_offset[v], ts[match[v]]->data,
                               anvil_tensor_nbytes(ts[match[v]]));
    free(match);
    return st;
}

anvil_status anvil_trainer_load(anvil_trainer *t, const char *path)
{
    if (!t || !path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_load: NULL argument");
    int n;
    char **names;
    anvil_tensor **ts;
    ANVIL_TRY(anvil_safetensors_read(path, &n, &names, &ts));
    /* a checkpoint's own tensors ("anvil.*") are not weights: its weights load as any */
    anvil_status st = anvil_trainer_put_sources(t, path, n, names, ts, "anvil.");
    anvil_safetensors_free(n, names, ts);
    return st;
}
