/* graph_run.c — run a graph once, without a trainer: for tests, parity checks and
 * one-off computations.  Sources live in a small persistent arena of their own. */
#include "train/train.h"

anvil_run_options anvil_run_default_options(void)
{
    anvil_run_options o;
    memset(&o, 0, sizeof o);
    o.device = ANVIL_DEVICE_AUTO;
    return o;
}

static const anvil_tensor *fed(int n_feed, const anvil_value *feed, anvil_tensor *const *feeds, anvil_value v)
{
    for (int i = 0; i < n_feed; i++)
        if (feed[i] == v)
            return feeds[i];
    return NULL;
}

static anvil_status check_feed(const anvil_node *n, const anvil_tensor *t, int64_t *batch)
{
    bool ok = t->dtype == n->dtype && t->ndim == n->ndim;
    for (int i = 0; ok && i < n->ndim; i++) {
        if (n->shape[i] == ANVIL_BATCH) {
            if (*batch < 0)
                *batch = t->shape[i];
            ok = t->shape[i] == *batch && *batch > 0;
        } else {
            ok = t->shape[i] == n->shape[i];
        }
    }
    if (!ok) {
        char a[96], b[96];
        return anvil_fail(ANVIL_ERR_SHAPE, "feed for %s '%s': expected %s %s, got %s %s", anvil_op_name(n->op),
                          n->name ? n->name : "?", anvil_dtype_name(n->dtype),
                          anvil_shape_str(a, sizeof a, n->ndim, n->shape), anvil_dtype_name(t->dtype),
                          anvil_shape_str(b, sizeof b, t->ndim, t->shape));
    }
    return ANVIL_OK;
}

anvil_status anvil_graph_run(anvil_graph *g, const anvil_run_options *opt, int n_feed, const anvil_value *feed,
                             anvil_tensor *const *feeds, int n_fetch, const anvil_value *fetch, anvil_tensor **out)
{
    if (!g || (n_feed && (!feed || !feeds)) || n_fetch <= 0 || !fetch || !out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_graph_run: bad arguments");
    ANVIL_TRY(anvil_graph_status(g));
    anvil_run_options o = opt ? *opt : anvil_run_default_options();
    for (int i = 0; i < n_fetch; i++) {
        out[i] = NULL;
        if (!anvil_graph_valid(g, fetch[i]) || g->nodes[fetch[i]].ndim < 0)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_graph_run: fetch[%d] is not a value with an output", i);
    }
    int64_t batch = -1;
    for (int i = 0; i < n_feed; i++) {
        if (!anvil_graph_valid(g, feed[i]) || !(anvil_opdef_of(g->nodes[feed[i]].op)->flags & OPF_SOURCE))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_graph_run: feed[%d] is not an input, parameter or buffer", i);
        ANVIL_TRY(check_feed(&g->nodes[feed[i]], feeds[i], &batch));
    }
    for (int v = 0; v < g->n; v++)
        if (g->nodes[v].op == OP_INPUT && !fed(n_feed, feed, feeds, v))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_graph_run: input '%s' is not fed",
                              g->nodes[v].name ? g->nodes[v].name : "?");
    if (batch < 0)
        batch = 1;

    anvil_backend *be;
    ANVIL_TRY(anvil_backend_open(o.device, 0, &be));
    /* persistent arena: the hyperparameter block, then every param/buffer */
    size_t *src_off = anvil_xmalloc((size_t)g->n * sizeof *src_off, "graph_run");
    size_t end = anvil_align_up(sizeof(anvil_hyper));
    for (int v = 0; src_off && v < g->n; v++) {
        src_off[v] = SIZE_MAX;
        if (g->nodes[v].op == OP_PARAM || g->nodes[v].op == OP_BUFFER) {
            src_off[v] = end;
            end = anvil_align_up(end + anvil_node_bytes(&g->nodes[v]));
        }
    }
    char *pers = NULL;
    anvil_program *p = NULL;
    anvil_status st = src_off ? be->alloc(be, end, (void **)&pers) : ANVIL_ERR_OOM;
    anvil_persist_map pm = {pers, src_off, g->n, 0, NULL, NULL};
    anvil_exec ex;
    memset(&ex, 0, sizeof ex);
    ex.hyper = (anvil_hyper *)pers;
    ex.backend = be->ctx;
    if (st == ANVIL_OK) {
        anvil_hyper h;
        memset(&h, 0, sizeof h);
        h.seed_lo = (uint32_t)o.seed;
        h.seed_hi = (uint32_t)(o.seed >> 32);
        h.rng_counter = o.rng_counter;
        st = be->upload(be, pers, &h, sizeof h);
    }
    for (int v = 0, stream = 0; st == ANVIL_OK && v < g->n; v++) {
        const anvil_node *n = &g->nodes[v];
        if (n->op != OP_PARAM && n->op != OP_BUFFER)
            continue;
        const anvil_tensor *t = fed(n_feed, feed, feeds, v);
        if (t) {
            st = be->upload(be, pers + src_off[v], t->data, anvil_tensor_nbytes(t));
        } else {
            int64_t k = anvil_node_numel(n);
            float *host = anvil_xmalloc((size_t)(k > 0 ? k : 1) * sizeof *host, "initialization");
            int64_t *wide = n->dtype == ANVIL_I64 ? anvil_xmalloc((size_t)(k > 0 ? k : 1) * 8, "initialization") : NULL;
            if (!host || (n->dtype == ANVIL_I64 && !wide)) {
                free(host);
                st = ANVIL_ERR_OOM;
                break;
            }
            anvil_init_fill(host, k, n->init, o.seed, (uint32_t)stream);
            if (wide) /* int64 buffers (a count): the init's values, widened */
                for (int64_t i = 0; i < k; i++)
                    wide[i] = (int64_t)host[i];
            st = n->dtype == ANVIL_F32 || wide
                     ? be->upload(be, pers + src_off[v], wide ? (void *)wide : (void *)host, anvil_node_bytes(n))
                     : anvil_fail(ANVIL_ERR_UNSUPPORTED, "buffer '%s': only float32 and int64 buffers", n->name);
            free(host);
            free(wide);
        }
        stream++;
    }
    if (st == ANVIL_OK)
        st = anvil_program_compile(be, g, batch, o.training, 0, NULL, n_fetch, fetch, &pm, &p);
    for (int i = 0; st == ANVIL_OK && i < n_feed; i++)
        if (g->nodes[feed[i]].op == OP_INPUT && p->where[feed[i]] > 0)
            st = be->upload(be, anvil_program_ptr(p, &pm, feed[i]), feeds[i]->data, anvil_tensor_nbytes(feeds[i]));
    if (st == ANVIL_OK)
        st = be->run(be, p, &ex);
    if (st == ANVIL_OK)
        st = be->sync(be);
    for (int i = 0; st == ANVIL_OK && i < n_fetch; i++) {
        const anvil_node *n = &p->g->nodes[fetch[i]];
        st = anvil_tensor_create(&out[i], n->dtype, n->ndim, n->shape, NULL);
        if (st == ANVIL_OK)
            st = be->download(be, out[i]->data, anvil_program_ptr(p, &pm, fetch[i]), anvil_tensor_nbytes(out[i]));
    }
    if (st != ANVIL_OK)
        for (int i = 0; i < n_fetch; i++) {
            anvil_tensor_release(out[i]);
            out[i] = NULL;
        }
    anvil_program_free(be, p);
    if (pers)
        be->free(be, pers);
    anvil_backend_close(be);
    free(src_off);
    return st;
}
