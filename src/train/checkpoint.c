/* checkpoint.c — resumable checkpoints: the model's tensors under their state_dict names
 * plus everything else a step reads ("anvil.*"): optimizer state, the device-resident
 * hyperparameters (step, learning rates, schedule, RNG counter, loss sums, data cursor,
 * NAdam's mu products) and the host's own (step count, data positions, plateau state).
 * Restoring all of it makes the next step the one the interrupted run would have taken. */
#include "train/train.h"
#include "io/io.h"
#include "optim/lbfgs.h"

#include <math.h>

#define CK_MAGIC "ANVILCK"
#define CK_VERSION 1

/* The host's part, stored as bytes ("anvil.trainer_state"). */
typedef struct {
    char magic[8];
    uint32_t version, hyper_bytes;
    int64_t n_params, slots, kind, n_groups, n_sources, steps;
    int64_t has_res, res_n, res_batch, res_shuffle, res_epoch, res_pos, res_begin;
    uint64_t res_seed;
    int64_t has_bat, bat_epoch, bat_pos;
    float clip_value, clip_norm, clip_type, pad_;
    double plateau_best, plateau_lr[ANVIL_MAX_PARAM_GROUPS];
    int64_t plateau_num_bad, plateau_cooldown, plateau_last_epoch;
} ck_host;

static int64_t count_sources(const anvil_trainer *t)
{
    int64_t n = 0;
    for (int v = 0; v < t->model->g->n; v++)
        n += t->model->g->nodes[v].op == OP_PARAM || t->model->g->nodes[v].op == OP_BUFFER;
    return n;
}

static anvil_status bytes_tensor(anvil_tensor **out, const void *p, size_t n)
{
    int64_t shape[1] = {(int64_t)n};
    return anvil_tensor_create(out, ANVIL_U8, 1, shape, p);
}

anvil_status anvil_trainer_save_checkpoint(anvil_trainer *t, const anvil_batcher *b, const char *path)
{
    if (!t || !path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_save_checkpoint: NULL argument");
    anvil_hyper h;
    ANVIL_TRY(anvil_trainer_read_hyper(t, &h));
    ck_host c;
    memset(&c, 0, sizeof c);
    memcpy(c.magic, CK_MAGIC, sizeof CK_MAGIC);
    c.version = CK_VERSION;
    c.hyper_bytes = (uint32_t)sizeof h;
    c.n_params = t->ex.n_params, c.slots = t->slots, c.kind = t->cfg.optimizer.kind;
    c.n_groups = t->n_groups, c.n_sources = count_sources(t), c.steps = t->steps;
    if (t->data_mem) {
        c.has_res = 1, c.res_n = t->data.n, c.res_batch = t->res_batch, c.res_shuffle = t->res_shuffle;
        c.res_epoch = (int64_t)t->res_epoch, c.res_pos = t->res_pos, c.res_begin = t->res_begin;
        c.res_seed = t->res_seed;
    }
    if (b) {
        uint64_t e;
        c.has_bat = 1;
        anvil_batcher_position(b, &e, &c.bat_pos);
        c.bat_epoch = (int64_t)e;
    }
    c.clip_value = t->cfg.clip_grad_value, c.clip_norm = t->cfg.clip_grad_norm, c.clip_type = t->cfg.clip_norm_type;
    c.plateau_best = t->plateau.best;
    memcpy(c.plateau_lr, t->plateau.lr, sizeof c.plateau_lr);
    c.plateau_num_bad = t->plateau.num_bad, c.plateau_cooldown = t->plateau.cooldown_counter;
    c.plateau_last_epoch = t->plateau.last_epoch;

    const anvil_graph *g = t->model->g;
    int cap = (int)c.n_sources + 4, n = 0;
    const char **names = anvil_xcalloc((size_t)cap, sizeof *names, "a checkpoint");
    anvil_tensor **ts = anvil_xcalloc((size_t)cap, sizeof *ts, "a checkpoint");
    anvil_status st = names && ts ? ANVIL_OK : ANVIL_ERR_OOM;
    for (int v = 0; st == ANVIL_OK && v < g->n; v++) {
        if (g->nodes[v].op != OP_PARAM && g->nodes[v].op != OP_BUFFER)
            continue;
        names[n] = g->nodes[v].name;
        st = anvil_trainer_get_param(t, names[n], &ts[n]);
        n += st == ANVIL_OK;
    }
    if (st == ANVIL_OK) {
        names[n] = "anvil.trainer_state";
        st = bytes_tensor(&ts[n], &c, sizeof c);
        n += st == ANVIL_OK;
    }
    if (st == ANVIL_OK) {
        names[n] = "anvil.hyper";
        st = bytes_tensor(&ts[n], &h, sizeof h);
        n += st == ANVIL_OK;
    }
    if (st == ANVIL_OK && t->slots > 0) {
        int64_t len = (int64_t)t->slots * t->ex.n_params;
        names[n] = "anvil.optimizer_state";
        st = anvil_tensor_create(&ts[n], ANVIL_F32, 1, &len, NULL);
        if (st == ANVIL_OK)
            st = t->be->download(t->be, anvil_tensor_data(ts[n]), t->ex.state, (size_t)len * 4);
        n++;
    }
    if (st == ANVIL_OK && t->lbfgs) {
        void *blob = NULL;
        size_t bytes = 0;
        st = anvil_lbfgs_export(t->lbfgs, &blob, &bytes);
        if (st == ANVIL_OK) {
            names[n] = "anvil.lbfgs";
            st = bytes_tensor(&ts[n], blob, bytes);
            n += st == ANVIL_OK;
        }
        free(blob);
    }
    if (st == ANVIL_OK)
        st = anvil_safetensors_write(path, n, names, (const anvil_tensor *const *)ts);
    for (int i = 0; i < n; i++)
        anvil_tensor_release(ts[i]);
    free(names);
    free(ts);
    return st;
}

static bool same_schedule(const anvil_schedule_config *a, const anvil_schedule_config *b)
{
    bool same = a->kind == b->kind && a->steps_per_epoch == b->steps_per_epoch && a->step_size == b->step_size &&
                a->gamma == b->gamma && a->n_milestones == b->n_milestones && a->t_max == b->t_max &&
                a->eta_min == b->eta_min && a->t_0 == b->t_0 && a->t_mult == b->t_mult &&
                a->total_steps == b->total_steps && a->pct_start == b->pct_start &&
                a->anneal_linear == b->anneal_linear && a->div_factor == b->div_factor &&
                a->final_div_factor == b->final_div_factor && a->three_phase == b->three_phase &&
                a->mode_max == b->mode_max && a->factor == b->factor && a->patience == b->patience &&
                a->threshold == b->threshold && a->threshold_abs == b->threshold_abs && a->cooldown == b->cooldown &&
                a->min_lr == b->min_lr && a->plateau_eps == b->plateau_eps && a->warmup == b->warmup &&
                a->warmup_start_factor == b->warmup_start_factor;
    for (int i = 0; same && i < a->n_milestones; i++)
        same = a->milestones[i] == b->milestones[i];
    return same;
}

static const anvil_tensor *find(int n, char **names, anvil_tensor **ts, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return ts[i];
    return NULL;
}

/* Everything that must agree between the checkpoint and this trainer. */
static anvil_status check_fit(anvil_trainer *t, const anvil_batcher *b, const char *path, const ck_host *c,
                              const anvil_hyper *h)
{
#define MISMATCH(...) anvil_fail(ANVIL_ERR_FORMAT, __VA_ARGS__)
    if (memcmp(c->magic, CK_MAGIC, sizeof CK_MAGIC) != 0 || c->version != CK_VERSION ||
        c->hyper_bytes != sizeof(anvil_hyper))
        return MISMATCH("%s: not a checkpoint of this Anvil version (format %u)", path, c->version);
    if (c->kind != t->cfg.optimizer.kind || c->slots != t->slots || c->n_groups != t->n_groups)
        return MISMATCH("%s: written by a trainer with optimizer %s and %lld parameter groups; this one has %s "
                        "and %d", path, anvil_optimizer_name((anvil_optimizer_kind)c->kind), (long long)c->n_groups,
                        anvil_optimizer_name(t->cfg.optimizer.kind), t->n_groups);
    if (c->n_params != t->ex.n_params || c->n_sources != count_sources(t))
        return MISMATCH("%s: written for another model (%lld parameter floats, this model has %lld)", path,
                        (long long)c->n_params, (long long)t->ex.n_params);
    if (!same_schedule(&h->sched, &t->cfg.schedule))
        return MISMATCH("%s: written with schedule %s and other options than this trainer's %s", path,
                        anvil_schedule_name(h->sched.kind), anvil_schedule_name(t->cfg.schedule.kind));
    if (c->clip_value != t->cfg.clip_grad_value || c->clip_norm != t->cfg.clip_grad_norm ||
        (c->clip_norm > 0.0f && c->clip_type != t->cfg.clip_norm_type))
        return MISMATCH("%s: written with gradient clipping (value %g, norm %g) unlike this trainer's (%g, %g)", path,
                        (double)c->clip_value, (double)c->clip_norm, (double)t->cfg.clip_grad_value,
                        (double)t->cfg.clip_grad_norm);
    if (c->has_res) {
        if (!t->data_mem)
            return MISMATCH("%s: the run trained on resident data: attach the same data before loading", path);
        if (c->res_n != t->data.n || c->res_batch != t->res_batch || c->res_shuffle != t->res_shuffle ||
            c->res_seed != t->res_seed)
            return MISMATCH("%s: written with resident data of %lld samples, batch %lld, shuffle %d, seed %llu; "
                            "attached: %lld, %d, %d, %llu", path, (long long)c->res_n, (long long)c->res_batch,
                            (int)c->res_shuffle, (unsigned long long)c->res_seed, (long long)t->data.n, t->res_batch,
                            (int)t->res_shuffle, (unsigned long long)t->res_seed);
    }
    if (b && !c->has_bat)
        return MISMATCH("%s: has no batcher position (it was saved without a batcher)", path);
    return ANVIL_OK;
#undef MISMATCH
}

anvil_status anvil_trainer_load_checkpoint(anvil_trainer *t, anvil_batcher *b, const char *path)
{
    if (!t || !path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_trainer_load_checkpoint: NULL argument");
    int n;
    char **names;
    anvil_tensor **ts;
    ANVIL_TRY(anvil_safetensors_read(path, &n, &names, &ts));
    const anvil_tensor *tc = find(n, names, ts, "anvil.trainer_state"), *th = find(n, names, ts, "anvil.hyper");
    const anvil_tensor *tst = find(n, names, ts, "anvil.optimizer_state");
    anvil_status st = ANVIL_OK;
    ck_host c;
    anvil_hyper h;
    if (!tc || !th || anvil_tensor_nbytes(tc) != sizeof c || anvil_tensor_nbytes(th) != sizeof h)
        st = anvil_fail(ANVIL_ERR_FORMAT, "%s: not an Anvil checkpoint (no trainer state; weights load with "
                        "anvil_trainer_load / --init-weights)", path);
    if (st == ANVIL_OK) {
        memcpy(&c, anvil_tensor_cdata(tc), sizeof c);
        memcpy(&h, anvil_tensor_cdata(th), sizeof h);
        st = check_fit(t, b, path, &c, &h);
    }
    int64_t state_len = (int64_t)t->slots * t->ex.n_params;
    if (st == ANVIL_OK && t->slots > 0 && (!tst || anvil_tensor_dtype(tst) != ANVIL_F32 ||
                                           anvil_tensor_numel(tst) != state_len))
        st = anvil_fail(ANVIL_ERR_FORMAT, "%s: the optimizer state is missing or not %lld floats", path,
                        (long long)state_len);
    const anvil_tensor *tl = find(n, names, ts, "anvil.lbfgs");
    if (st == ANVIL_OK && t->lbfgs && !tl)
        st = anvil_fail(ANVIL_ERR_FORMAT, "%s: the L-BFGS state is missing", path);
    /* L-BFGS's state first: its import checks the blob before changing anything */
    if (st == ANVIL_OK && t->lbfgs)
        st = anvil_lbfgs_import(t->lbfgs, anvil_tensor_cdata(tl), anvil_tensor_nbytes(tl));
    if (st == ANVIL_OK && b)
        st = anvil_batcher_seek(b, (uint64_t)c.bat_epoch, c.bat_pos);
    /* from here on the trainer changes: the weights first (checked before any upload) */
    if (st == ANVIL_OK)
        st = anvil_trainer_put_sources(t, path, n, names, ts, "anvil.");
    if (st == ANVIL_OK && t->slots > 0)
        st = t->be->upload(t->be, t->ex.state, anvil_tensor_cdata(tst), (size_t)state_len * 4);
    if (st == ANVIL_OK)
        st = t->be->upload(t->be, t->ex.hyper, &h, sizeof h);
    if (st == ANVIL_OK) {
        t->steps = c.steps;
        t->plateau.best = c.plateau_best;
        memcpy(t->plateau.lr, c.plateau_lr, sizeof t->plateau.lr);
        t->plateau.num_bad = c.plateau_num_bad, t->plateau.cooldown_counter = c.plateau_cooldown;
        t->plateau.last_epoch = c.plateau_last_epoch;
        if (c.has_res) {
            t->res_epoch = (uint64_t)c.res_epoch, t->res_pos = c.res_pos, t->res_begin = c.res_begin != 0;
            if (!t->res_begin) /* mid-epoch: that epoch's order; the cursor came with the hyperparameters */
                st = anvil_trainer_upload_order(t);
        }
    }
    if (st == ANVIL_OK)
        st = t->be->sync(t->be);
    anvil_safetensors_free(n, names, ts);
    return st;
}
