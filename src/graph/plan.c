/* plan.c — the memory plan of a program.  Persistent values (parameters, buffers,
 * gradients) sit at fixed offsets the trainer chose; every other value gets a slice of
 * one transient arena: allocated when computed, released after its last use, best-fit
 * from the free list, and computed in place over its first input when that input dies
 * here.  Views (reshape) share their input's storage and extend its life. */
#include "graph/ops/ops.h"

#include <limits.h>

typedef struct {
    size_t off, size;
} block;

typedef struct {
    block *free;
    int n, cap;
    size_t end; /* arena high-water mark */
} arena;

static bool arena_push(arena *a, int at, block b)
{
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 32;
        block *f = anvil_xrealloc(a->free, (size_t)cap * sizeof *f, "the planner's free list");
        if (!f)
            return false;
        a->free = f;
        a->cap = cap;
    }
    memmove(&a->free[at + 1], &a->free[at], (size_t)(a->n - at) * sizeof *a->free);
    a->free[at] = b;
    a->n++;
    return true;
}

static void arena_remove(arena *a, int at)
{
    memmove(&a->free[at], &a->free[at + 1], (size_t)(a->n - at - 1) * sizeof *a->free);
    a->n--;
}

/* Best fit: the smallest free block that holds size; else grow the arena (absorbing a
 * free block that ends at the top). */
static size_t arena_alloc(arena *a, size_t size)
{
    int best = -1;
    for (int i = 0; i < a->n; i++)
        if (a->free[i].size >= size && (best < 0 || a->free[i].size < a->free[best].size))
            best = i;
    if (best >= 0) {
        size_t off = a->free[best].off;
        a->free[best].off += size;
        a->free[best].size -= size;
        if (a->free[best].size == 0)
            arena_remove(a, best);
        return off;
    }
    if (a->n > 0 && a->free[a->n - 1].off + a->free[a->n - 1].size == a->end) {
        size_t off = a->free[a->n - 1].off;
        arena_remove(a, a->n - 1);
        a->end = off + size;
        return off;
    }
    size_t off = a->end;
    a->end += size;
    return off;
}

static bool arena_release(arena *a, size_t off, size_t size)
{
    int at = 0;
    while (at < a->n && a->free[at].off < off)
        at++;
    block b = {off, size};
    if (!arena_push(a, at, b))
        return false;
    /* coalesce with the neighbours */
    if (at + 1 < a->n && a->free[at].off + a->free[at].size == a->free[at + 1].off) {
        a->free[at].size += a->free[at + 1].size;
        arena_remove(a, at + 1);
    }
    if (at > 0 && a->free[at - 1].off + a->free[at - 1].size == a->free[at].off) {
        a->free[at - 1].size += a->free[at].size;
        arena_remove(a, at);
    }
    return true;
}

enum { WHERE_NONE = 0, WHERE_TRANSIENT = 1, WHERE_PERSISTENT = 2 };

/* Step 4 for one node v: its storage (a view's, in place over its first input, or a
 * new slice), then the release of the storages whose last use it is. */
static anvil_status place(anvil_program *p, const anvil_graph *g, arena *a, int v, int *storage, const int *last,
                          int *slast)
{
    const anvil_node *nd = &g->nodes[v];
    const anvil_opdef *def = anvil_opdef_of(nd->op);
    if (def->flags & OPF_EFFECT)
        return ANVIL_OK;
    if (storage[v] != v) { /* a view */
        int r = storage[v];
        p->where[v] = p->where[r];
        p->offset[v] = p->offset[r];
        return ANVIL_OK;
    }
    if (p->where[v] == WHERE_PERSISTENT)
        return ANVIL_OK;
    size_t bytes = anvil_align_up(anvil_node_bytes(nd));
    p->stats.values++;
    p->stats.unplanned_bytes += bytes;
    int r0 = nd->n_in > 0 ? storage[nd->in[0]] : -1;
    bool inplace = (def->flags & OPF_INPLACE) && r0 >= 0 && p->where[r0] == WHERE_TRANSIENT &&
                   slast[r0] == v && g->nodes[r0].op != OP_INPUT && g->nodes[r0].op != OP_FILL &&
                   anvil_node_bytes(&g->nodes[nd->in[0]]) == anvil_node_bytes(nd);
    for (int i = 1; i < nd->n_in && inplace; i++)
        if (storage[nd->in[i]] == r0 && anvil_node_bytes(&g->nodes[nd->in[i]]) != anvil_node_bytes(nd))
            inplace = false;
    if (inplace) {
        storage[v] = r0;
        p->where[v] = WHERE_TRANSIENT;
        p->offset[v] = p->offset[r0];
        slast[r0] = last[v];
        p->stats.inplace++;
    } else {
        p->where[v] = WHERE_TRANSIENT;
        p->offset[v] = arena_alloc(a, bytes);
        slast[v] = last[v];
    }
    /* release storages whose last use is this node (never the one just computed) */
    for (int i = 0; i < nd->n_in; i++) {
        int r = storage[nd->in[i]];
        if (r != storage[v] && p->where[r] == WHERE_TRANSIENT && slast[r] == v) {
            slast[r] = -2; /* released */
            if (!arena_release(a, p->offset[r], anvil_align_up(anvil_node_bytes(&g->nodes[r]))))
                return ANVIL_ERR_OOM;
        }
    }
    /* a value nobody reads (and not kept) dies at once */
    if (slast[storage[v]] == -1 && storage[v] == v) {
        slast[v] = -2;
        if (!arena_release(a, p->offset[v], bytes))
            return ANVIL_ERR_OOM;
    }
    return ANVIL_OK;
}

void anvil_mark_needed(const anvil_graph *g, int n_roots, const anvil_value *roots, const anvil_persist_map *pm,
                       int n_keep, const anvil_value *keep, bool *needed)
{
    for (int i = 0; i < n_roots; i++)
        needed[roots[i]] = true;
    for (int i = 0; i < n_keep; i++)
        needed[keep[i]] = true;
    for (int i = 0; pm && i < pm->n_grads; i++)
        needed[pm->grad_node[i]] = true;
    /* node order is a topological order */
    for (int v = g->n - 1; v >= 0; v--)
        if (needed[v])
            for (int i = 0; i < g->nodes[v].n_in; i++)
                needed[g->nodes[v].in[i]] = true;
}

anvil_status anvil_plan(anvil_program *p, int n_roots, const anvil_value *roots,
                        const anvil_persist_map *pm, const anvil_value *keep, int n_keep,
                        anvil_workspace_fn ws_fn, const void *ws_ctx)
{
    anvil_graph *g = p->g;
    int n = g->n;
    bool *needed = anvil_xcalloc((size_t)n, sizeof *needed, "plan");
    int *last = anvil_xmalloc((size_t)n * sizeof *last, "plan");
    int *storage = anvil_xmalloc((size_t)n * sizeof *storage, "plan"); /* value -> root value owning storage */
    int *slast = anvil_xmalloc((size_t)n * sizeof *slast, "plan");     /* storage root -> last use */
    p->offset = anvil_xcalloc((size_t)n, sizeof *p->offset, "plan");
    p->where = anvil_xcalloc((size_t)n, sizeof *p->where, "plan");
    p->ws_offset = anvil_xcalloc((size_t)n, sizeof *p->ws_offset, "plan");
    p->ws_bytes = anvil_xcalloc((size_t)n, sizeof *p->ws_bytes, "plan");
    arena a = {0};
    anvil_status st = ANVIL_OK;
    if (!needed || !last || !storage || !slast || !p->offset || !p->where || !p->ws_offset || !p->ws_bytes) {
        st = ANVIL_ERR_OOM;
        goto out;
    }

    /* 1. what the roots need */
    anvil_mark_needed(g, n_roots, roots, pm, n_keep, keep, needed);

    /* 2. pinned storage: persistent sources and gradients */
    for (int v = 0; v < n; v++) {
        storage[v] = v;
        last[v] = -1;
        const anvil_node *nd = &g->nodes[v];
        if ((nd->op == OP_PARAM || nd->op == OP_BUFFER) && needed[v]) {
            if (v >= pm->n_base || pm->source_offset[v] == SIZE_MAX) {
                st = anvil_fail(ANVIL_ERR_STATE, "plan: %s '%s' has no persistent storage",
                                anvil_op_name(nd->op), nd->name ? nd->name : "?");
                goto out;
            }
            p->where[v] = WHERE_PERSISTENT;
            p->offset[v] = pm->source_offset[v];
        }
    }
    for (int i = 0; i < pm->n_grads; i++) {
        anvil_value v = pm->grad_node[i];
        p->where[v] = WHERE_PERSISTENT;
        p->offset[v] = pm->grad_offset[i];
    }

    /* 3. liveness, through views to the storage they share */
    for (int v = 0; v < n; v++) {
        if (!needed[v])
            continue;
        const anvil_node *nd = &g->nodes[v];
        if (anvil_opdef_of(nd->op)->flags & OPF_ALIAS)
            storage[v] = storage[nd->in[0]];
        for (int i = 0; i < nd->n_in; i++)
            last[storage[nd->in[i]]] = v;
    }
    for (int i = 0; i < n_keep; i++)
        last[storage[keep[i]]] = INT_MAX;
    for (int v = 0; v < n; v++)
        if (needed[v] && g->nodes[v].op == OP_INPUT)
            last[v] = INT_MAX; /* fed from the host before the run */

    /* 4. walk in order: allocate, reuse in place, release after last use */
    memset(&p->stats, 0, sizeof p->stats);
    for (int v = 0; v < n; v++)
        slast[v] = last[v];
    /* Inputs are written by the host before the run, and constants (fills) once before
     * the first run: they hold their slots throughout, so they are placed first. */
    for (int v = 0; v < n; v++)
        if (needed[v] && (g->nodes[v].op == OP_INPUT || g->nodes[v].op == OP_FILL) && p->where[v] != WHERE_PERSISTENT) {
            last[v] = INT_MAX;
            slast[v] = INT_MAX;
            size_t bytes = anvil_align_up(anvil_node_bytes(&g->nodes[v]));
            p->where[v] = WHERE_TRANSIENT;
            p->offset[v] = arena_alloc(&a, bytes);
            p->stats.values++;
            p->stats.unplanned_bytes += bytes;
        }
    for (int v = 0; v < n; v++) {
        if (!needed[v] || ((g->nodes[v].op == OP_INPUT || g->nodes[v].op == OP_FILL) && p->where[v] != WHERE_PERSISTENT))
            continue;
        /* the node's workspace: taken before its output, given back after it, so that it
         * overlaps neither its inputs nor its output, and later nodes reuse it */
        size_t ws = ws_fn ? anvil_align_up(ws_fn(ws_ctx, g, &g->nodes[v])) : 0;
        if (ws) {
            p->ws_offset[v] = arena_alloc(&a, ws);
            p->ws_bytes[v] = ws;
        }
        st = place(p, g, &a, v, storage, last, slast);
        if (st == ANVIL_OK && ws && !arena_release(&a, p->ws_offset[v], ws))
            st = ANVIL_ERR_OOM;
        if (st != ANVIL_OK)
            goto out;
    }
    p->transient_bytes = a.end;
    p->stats.transient_bytes = a.end;
    /* needed[] doubles as the step list filter for the program builder */
    for (int v = 0; v < n; v++)
        if (!needed[v])
            p->where[v] = -1;
out:
    free(a.free);
    free(needed);
    free(last);
    free(storage);
    free(slast);
    return st;
}

void *anvil_program_ptr(const anvil_program *p, const anvil_persist_map *pm, anvil_value v)
{
    switch (p->where[v]) {
    case WHERE_TRANSIENT: return p->transient + p->offset[v];
    case WHERE_PERSISTENT: return pm->persistent + p->offset[v];
    default: return NULL;
    }
}
