/* plan.c — the memory plan of a program.  Persistent values (parameters, buffers,
 * gradients) sit at fixed offsets the trainer chose; every other value gets a slice of
 * one transient arena: allocated when computed, released after its last use, best-fit
 * from the free list, and computed in place over its first input when that input dies
 * here.  Views (reshape) share their input's storage and extend its life.
 *
 * A backend that runs independent steps concurrently (CUDA's capture lanes) orders two
 * steps whenever their memory overlaps, so reusing a slice that a step on another branch
 * still reads would chain the branches.  For it the plan is "concurrent": a node takes
 * only slices whose earlier users are all its ancestors (it runs after them anyway), and
 * grows the arena otherwise, within a bound (anvil_plan). */
#include "graph/ops/ops.h"

#include <limits.h>

typedef struct {
    size_t off, size;
    int *users, n_users; /* concurrent plans: the nodes that touched it since it was taken */
} block;

typedef struct {
    block *free;
    int n, cap;
    size_t end; /* arena high-water mark */
    /* concurrent plans: anc + v * words is node v's ancestors as a bitset; NULL: plain */
    const uint64_t *anc;
    size_t words;
    int node; /* the node being placed */
} arena;

static bool is_ancestor(const arena *a, int u, int of)
{
    return (a->anc[(size_t)of * a->words + (size_t)u / 64] >> (u % 64)) & 1u;
}

/* May the node being placed take this block without waiting for a branch it does not
 * depend on? */
static bool safe(const arena *a, const block *b)
{
    if (!a->anc)
        return true;
    for (int i = 0; i < b->n_users; i++)
        if (!is_ancestor(a, b->users[i], a->node))
            return false;
    return true;
}

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
    free(a->free[at].users);
    memmove(&a->free[at], &a->free[at + 1], (size_t)(a->n - at - 1) * sizeof *a->free);
    a->n--;
}

static void arena_clear(arena *a)
{
    while (a->n > 0)
        arena_remove(a, a->n - 1);
    free(a->free);
    a->free = NULL;
    a->cap = 0;
    a->end = 0;
}

/* Best fit: the smallest (safe) free block that holds size; else grow the arena
 * (absorbing a safe free block that ends at the top). */
static size_t arena_alloc(arena *a, size_t size)
{
    int best = -1;
    for (int i = 0; i < a->n; i++)
        if (a->free[i].size >= size && (best < 0 || a->free[i].size < a->free[best].size) && safe(a, &a->free[i]))
            best = i;
    if (best >= 0) {
        size_t off = a->free[best].off;
        a->free[best].off += size;
        a->free[best].size -= size;
        if (a->free[best].size == 0)
            arena_remove(a, best);
        return off;
    }
    if (a->n > 0 && a->free[a->n - 1].off + a->free[a->n - 1].size == a->end && safe(a, &a->free[a->n - 1])) {
        size_t off = a->free[a->n - 1].off;
        arena_remove(a, a->n - 1);
        a->end = off + size;
        return off;
    }
    size_t off = a->end;
    a->end += size;
    return off;
}

/* Appends src's users to dst's (a coalesced block keeps everyone who touched it). */
static bool merge_users(block *dst, const int *users, int n)
{
    if (n == 0)
        return true;
    int *u = anvil_xrealloc(dst->users, (size_t)(dst->n_users + n) * sizeof *u, "the planner's free list");
    if (!u)
        return false;
    memcpy(u + dst->n_users, users, (size_t)n * sizeof *u);
    dst->users = u;
    dst->n_users += n;
    return true;
}

static bool arena_release(arena *a, size_t off, size_t size, const int *users, int n_users)
{
    int at = 0;
    while (at < a->n && a->free[at].off < off)
        at++;
    block b = {off, size, NULL, 0};
    if (a->anc && !merge_users(&b, users, n_users))
        return false;
    if (!arena_push(a, at, b)) {
        free(b.users);
        return false;
    }
    /* coalesce with the neighbours */
    if (at + 1 < a->n && a->free[at].off + a->free[at].size == a->free[at + 1].off) {
        if (!merge_users(&a->free[at], a->free[at + 1].users, a->free[at + 1].n_users))
            return false;
        a->free[at].size += a->free[at + 1].size;
        arena_remove(a, at + 1);
    }
    if (at > 0 && a->free[at - 1].off + a->free[at - 1].size == a->free[at].off) {
        if (!merge_users(&a->free[at - 1], a->free[at].users, a->free[at].n_users))
            return false;
        a->free[at - 1].size += a->free[at].size;
        arena_remove(a, at);
    }
    return true;
}

enum { WHERE_NONE = 0, WHERE_TRANSIENT = 1, WHERE_PERSISTENT = 2 };

typedef struct {
    const bool *needed;
    int *storage;   /* value -> root value owning storage */
    const int *last;
    int *slast;     /* storage root -> last use */
    int *users;     /* scratch: g->n */
} walk;

/* Concurrent plans: the steps up to v that wrote or read storage r (into w->users). */
static int users_of(const anvil_graph *g, const walk *w, int r, int v)
{
    int n = 0;
    for (int u = r; u <= v; u++) {
        const anvil_node *nd = &g->nodes[u];
        if (!w->needed[u] || (anvil_opdef_of(nd->op)->flags & OPF_ALIAS))
            continue;
        bool touches = w->storage[u] == r;
        for (int i = 0; i < nd->n_in && !touches; i++)
            touches = w->storage[nd->in[i]] == r;
        if (touches)
            w->users[n++] = u;
    }
    return n;
}

/* Releases storage r after its last use at node v. */
static bool release(anvil_program *p, const anvil_graph *g, arena *a, const walk *w, int r, int v)
{
    int n = a->anc ? users_of(g, w, r, v) : 0;
    return arena_release(a, p->offset[r], anvil_align_up(anvil_node_bytes(&g->nodes[r])), w->users, n);
}

/* Step 4 for one node v: its storage (a view's, in place over its first input, or a
 * new slice), then the release of the storages whose last use it is. */
static anvil_status place(anvil_program *p, const anvil_graph *g, arena *a, int v, const walk *w)
{
    int *storage = w->storage, *slast = w->slast;
    const int *last = w->last;
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
    if (inplace && a->anc) { /* concurrent: every earlier user of r0 must be an ancestor */
        int nu = users_of(g, w, r0, v - 1);
        for (int i = 0; i < nu && inplace; i++)
            inplace = is_ancestor(a, w->users[i], v);
    }
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
            if (!release(p, g, a, w, r, v))
                return ANVIL_ERR_OOM;
        }
    }
    /* a value nobody reads (and not kept) dies at once */
    if (slast[storage[v]] == -1 && storage[v] == v) {
        slast[v] = -2;
        if (!release(p, g, a, w, v, v))
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

/* Concurrent plans up to this many nodes (their ancestor bitsets: n^2/8 bytes, 8 MB). */
#define PLAN_CONCURRENT_MAX_NODES 8192

/* anc + v * words: the transitive inputs of node v, as a bitset (node order is a
 * topological order). */
static uint64_t *ancestors(const anvil_graph *g, size_t words)
{
    uint64_t *anc = anvil_xcalloc((size_t)g->n * words, sizeof *anc, "the planner's ancestor sets");
    if (!anc)
        return NULL;
    for (int v = 0; v < g->n; v++) {
        uint64_t *av = anc + (size_t)v * words;
        for (int i = 0; i < g->nodes[v].n_in; i++) {
            int u = g->nodes[v].in[i];
            const uint64_t *au = anc + (size_t)u * words;
            for (size_t k = 0; k < words; k++)
                av[k] |= au[k];
            av[u / 64] |= (uint64_t)1 << (u % 64);
        }
    }
    return anc;
}

/* Step 4: walks the nodes in order, placing each (a->anc set: a concurrent plan). */
static anvil_status plan_walk(anvil_program *p, arena *a, const walk *w, const size_t *ws_of)
{
    const anvil_graph *g = p->g;
    int n = g->n;
    const bool *needed = w->needed;
    memset(&p->stats, 0, sizeof p->stats);
    for (int v = 0; v < n; v++)
        w->slast[v] = w->last[v];
    /* Inputs are written by the host before the run, and constants (fills) once before
     * the first run: they hold their slots throughout, so they are placed first. */
    for (int v = 0; v < n; v++)
        if (needed[v] && (g->nodes[v].op == OP_INPUT || g->nodes[v].op == OP_FILL) && p->where[v] != WHERE_PERSISTENT) {
            w->slast[v] = INT_MAX;
            size_t bytes = anvil_align_up(anvil_node_bytes(&g->nodes[v]));
            p->where[v] = WHERE_TRANSIENT;
            a->node = v;
            p->offset[v] = arena_alloc(a, bytes);
            p->stats.values++;
            p->stats.unplanned_bytes += bytes;
        }
    for (int v = 0; v < n; v++) {
        if (!needed[v] || ((g->nodes[v].op == OP_INPUT || g->nodes[v].op == OP_FILL) && p->where[v] != WHERE_PERSISTENT))
            continue;
        a->node = v;
        /* the node's workspace: taken before its output, given back after it, so that it
         * overlaps neither its inputs nor its output, and later nodes reuse it */
        size_t ws = ws_of[v];
        p->ws_offset[v] = 0;
        p->ws_bytes[v] = 0;
        if (ws) {
            p->ws_offset[v] = arena_alloc(a, ws);
            p->ws_bytes[v] = ws;
        }
        anvil_status st = place(p, g, a, v, w);
        if (st == ANVIL_OK && ws && !arena_release(a, p->ws_offset[v], ws, &v, 1))
            st = ANVIL_ERR_OOM;
        if (st != ANVIL_OK)
            return st;
    }
    p->transient_bytes = a->end;
    p->stats.transient_bytes = a->end;
    return ANVIL_OK;
}

anvil_status anvil_plan(anvil_program *p, int n_roots, const anvil_value *roots,
                        const anvil_persist_map *pm, const anvil_value *keep, int n_keep,
                        anvil_workspace_fn ws_fn, const void *ws_ctx, bool concurrent)
{
    anvil_graph *g = p->g;
    int n = g->n;
    bool *needed = anvil_xcalloc((size_t)n, sizeof *needed, "plan");
    int *last = anvil_xmalloc((size_t)n * sizeof *last, "plan");
    int *storage = anvil_xmalloc((size_t)n * sizeof *storage, "plan");
    int *storage0 = anvil_xmalloc((size_t)n * sizeof *storage0, "plan"); /* after step 3 */
    int *slast = anvil_xmalloc((size_t)n * sizeof *slast, "plan");
    int *users = anvil_xmalloc((size_t)n * sizeof *users, "plan");
    uint64_t *anc = NULL;
    size_t *ws_of = NULL; /* per node: its planned workspace bytes */
    p->offset = anvil_xcalloc((size_t)n, sizeof *p->offset, "plan");
    p->where = anvil_xcalloc((size_t)n, sizeof *p->where, "plan");
    p->ws_offset = anvil_xcalloc((size_t)n, sizeof *p->ws_offset, "plan");
    p->ws_bytes = anvil_xcalloc((size_t)n, sizeof *p->ws_bytes, "plan");
    arena a = {0};
    anvil_status st = ANVIL_OK;
    if (!needed || !last || !storage || !storage0 || !slast || !users || !p->offset || !p->where || !p->ws_offset ||
        !p->ws_bytes) {
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
        if (needed[v] && (g->nodes[v].op == OP_INPUT || (g->nodes[v].op == OP_FILL && p->where[v] != WHERE_PERSISTENT)))
            last[v] = INT_MAX; /* fed from the host before the run; constants */
    memcpy(storage0, storage, (size_t)n * sizeof *storage);

    /* 4. walk in order: allocate, reuse in place, release after last use.  Concurrent
     * (ANVIL_PLAN_REUSE=any: off): kept when its arena is within max(1.5x, +64 MiB) of the
     * plain plan's, else the plain plan. */
    walk w = {needed, storage, last, slast, users};
    /* the backend's workspace sizes, asked once (the walk may run up to three times) */
    ws_of = anvil_xcalloc((size_t)n, sizeof *ws_of, "plan");
    if (!ws_of) {
        st = ANVIL_ERR_OOM;
        goto out;
    }
    for (int v = 0; v < n && ws_fn; v++)
        if (needed[v])
            ws_of[v] = anvil_align_up(ws_fn(ws_ctx, g, &g->nodes[v]));
    st = plan_walk(p, &a, &w, ws_of); /* plain */
    const char *reuse = getenv("ANVIL_PLAN_REUSE");
    if (st == ANVIL_OK && concurrent && n <= PLAN_CONCURRENT_MAX_NODES && !(reuse && strcmp(reuse, "any") == 0)) {
        size_t plain = a.end, extra = plain / 2 > ((size_t)64 << 20) ? plain / 2 : ((size_t)64 << 20);
        a.words = ((size_t)n + 63) / 64;
        anc = ancestors(g, a.words);
        if (!anc) {
            st = ANVIL_ERR_OOM;
            goto out;
        }
        for (int pass = 0; pass < 2 && st == ANVIL_OK; pass++) { /* concurrent, then plain again */
            arena_clear(&a);
            a.anc = pass == 0 ? anc : NULL;
            memcpy(storage, storage0, (size_t)n * sizeof *storage);
            st = plan_walk(p, &a, &w, ws_of);
            if (pass == 0 && st == ANVIL_OK && a.end <= plain + extra)
                break;
        }
    }
    /* needed[] doubles as the step list filter for the program builder */
    for (int v = 0; v < n; v++)
        if (!needed[v])
            p->where[v] = -1;
out:
    arena_clear(&a);
    free(anc);
    free(ws_of);
    free(needed);
    free(last);
    free(storage);
    free(storage0);
    free(slast);
    free(users);
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
