/* compile.c — from a symbolic graph to a runnable program for one batch size. */
#include "train/train.h"

void anvil_program_free(anvil_backend *be, anvil_program *p)
{
    if (!p)
        return;
    if (be && be->program_release)
        be->program_release(be, p);
    if (be && p->transient)
        be->free(be, p->transient);
    anvil_graph_free(p->g);
    free(p->steps);
    free(p->offset);
    free(p->where);
    free(p->ws_offset);
    free(p->ws_bytes);
    free(p);
}

anvil_status anvil_program_compile(anvil_backend *be, const anvil_graph *sym, int64_t batch,
                                   bool training, int n_roots, const anvil_value *roots,
                                   int n_keep, const anvil_value *keep,
                                   const anvil_persist_map *pm, anvil_program **out)
{
    *out = NULL;
    anvil_program *p = anvil_xcalloc(1, sizeof *p, "a program");
    if (!p)
        return ANVIL_ERR_OOM;
    p->batch = batch;
    p->training = training;
    anvil_status st = anvil_graph_instantiate(sym, batch, training, &p->g);
    /* ANVIL_FUSE=0 skips the fusion pass (to measure it, or to rule it out) */
    const char *fz = getenv("ANVIL_FUSE");
    bool fuse = !fz || strcmp(fz, "0") != 0;
    int fused = st == ANVIL_OK && fuse ? anvil_fuse(p->g, n_roots, roots, pm, n_keep, keep) : 0;
    if (st == ANVIL_OK)
        st = anvil_plan(p, n_roots, roots, pm, keep, n_keep, be->workspace, be, be->concurrent);
    if (st == ANVIL_OK && p->transient_bytes > 0)
        st = be->alloc(be, p->transient_bytes, (void **)&p->transient);
    if (st != ANVIL_OK) {
        anvil_program_free(be, p);
        return st;
    }
    const anvil_graph *g = p->g;
    p->steps = anvil_xcalloc((size_t)g->n, sizeof *p->steps, "program steps");
    if (!p->steps) {
        anvil_program_free(be, p);
        return ANVIL_ERR_OOM;
    }
    /* Constants (fills outside the persistent arena) first: the backends run them once. */
    for (int pass = 0; pass < 2; pass++) {
        for (int v = 0; v < g->n; v++) {
            const anvil_node *nd = &g->nodes[v];
            unsigned flags = anvil_opdef_of(nd->op)->flags;
            if (p->where[v] < 0 || (flags & (OPF_SOURCE | OPF_ALIAS)))
                continue;
            bool constant = nd->op == OP_FILL && p->where[v] == 1;
            if (constant != (pass == 0))
                continue;
            if (!be->kernels[nd->op]) {
                anvil_program_free(be, p);
                return anvil_fail(ANVIL_ERR_UNSUPPORTED, "the %s backend has no kernel for op '%s'",
                                  be->name, anvil_op_name(nd->op));
            }
            anvil_step *s = &p->steps[p->n_steps++];
            s->id = v;
            s->node = nd;
            s->out = (flags & OPF_EFFECT) ? NULL : anvil_program_ptr(p, pm, v);
            for (int i = 0; i < nd->n_in; i++) {
                s->in_node[i] = &g->nodes[nd->in[i]];
                s->in[i] = anvil_program_ptr(p, pm, nd->in[i]);
            }
            if (p->ws_bytes[v]) {
                s->ws = p->transient + p->ws_offset[v];
                s->ws_bytes = p->ws_bytes[v];
            }
        }
        if (pass == 0)
            p->n_init = p->n_steps;
    }
    p->stats.kernels = p->n_steps - p->n_init;
    p->stats.fused = fused;
    *out = p;
    return ANVIL_OK;
}
