/* graph.c — building the IR: appending nodes (shape inference through the op table),
 * sticky errors, cloning, and instantiation for a concrete batch size. */
#include "graph/graph.h"

#include <inttypes.h>

static const anvil_opdef *const *opdefs(void);

anvil_status anvil_graph_create(anvil_graph **out)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_graph_create: out is NULL");
    *out = anvil_xcalloc(1, sizeof **out, "a graph");
    return *out ? ANVIL_OK : ANVIL_ERR_OOM;
}

void anvil_graph_free(anvil_graph *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n; i++)
        free(g->nodes[i].name);
    free(g->nodes);
    free(g->error);
    free(g);
}

anvil_status anvil_graph_status(const anvil_graph *g)
{
    if (!g)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "graph is NULL");
    if (g->status != ANVIL_OK)
        anvil_fail(g->status, "%s", g->error ? g->error : "graph error");
    return g->status;
}

int anvil_graph_value_count(const anvil_graph *g) { return g ? g->n : 0; }

bool anvil_graph_valid(const anvil_graph *g, anvil_value v) { return g && v >= 0 && v < g->n; }

anvil_value anvil_graph_fail(anvil_graph *g, anvil_status s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g && g->status == ANVIL_OK) {
        g->status = s;
        g->error = anvil_xstrdup(msg);
    }
    anvil_fail(s, "%s", msg);
    return ANVIL_NO_VALUE;
}

int anvil_value_shape(const anvil_graph *g, anvil_value v, int64_t shape[ANVIL_MAX_DIMS])
{
    if (!anvil_graph_valid(g, v))
        return -1;
    const anvil_node *n = &g->nodes[v];
    for (int i = 0; i < n->ndim; i++)
        shape[i] = n->shape[i];
    return n->ndim;
}

anvil_dtype anvil_value_dtype(const anvil_graph *g, anvil_value v)
{
    return anvil_graph_valid(g, v) ? g->nodes[v].dtype : ANVIL_DTYPE_COUNT;
}

int64_t anvil_node_numel(const anvil_node *n) { return anvil_shape_numel(n->ndim, n->shape); }

size_t anvil_node_bytes(const anvil_node *n)
{
    if (n->ndim < 0)
        return 0;
    return (size_t)anvil_node_numel(n) * anvil_dtype_size(n->dtype);
}

anvil_node anvil_node_proto(anvil_op op, int n_in, const anvil_value *in)
{
    anvil_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.n_in = n_in;
    for (int i = 0; i < n_in; i++)
        n.in[i] = in[i];
    return n;
}

anvil_value anvil_op1(anvil_graph *g, anvil_op op, anvil_value a)
{
    anvil_node n = anvil_node_proto(op, 1, &a);
    return anvil_graph_add(g, &n);
}

anvil_value anvil_op2(anvil_graph *g, anvil_op op, anvil_value a, anvil_value b)
{
    anvil_value in[2] = {a, b};
    anvil_node n = anvil_node_proto(op, 2, in);
    return anvil_graph_add(g, &n);
}

anvil_value anvil_graph_add(anvil_graph *g, const anvil_node *proto)
{
    if (!g)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "graph is NULL"), ANVIL_NO_VALUE;
    if (g->status != ANVIL_OK)
        return ANVIL_NO_VALUE;
    const anvil_opdef *def = anvil_opdef_of(proto->op);
    if (!def)
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "unknown op %d", (int)proto->op);
    if (proto->n_in < def->min_in || proto->n_in > def->max_in)
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "%s: takes %d..%d inputs, got %d",
                                def->name, def->min_in, def->max_in, proto->n_in);
    for (int i = 0; i < proto->n_in; i++)
        if (!anvil_graph_valid(g, proto->in[i]))
            return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "%s: input %d is not a value of this graph (%d)",
                                    def->name, i, (int)proto->in[i]);
    anvil_node n = *proto;
    n.name = NULL;
    if (def->infer) {
        anvil_status s = def->infer(g, &n);
        if (s != ANVIL_OK)
            return anvil_graph_fail(g, s, "%s", anvil_last_error());
    }
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 64;
        anvil_node *nodes = anvil_xrealloc(g->nodes, (size_t)cap * sizeof *nodes, "graph nodes");
        if (!nodes)
            return anvil_graph_fail(g, ANVIL_ERR_OOM, "%s", anvil_last_error());
        g->nodes = nodes;
        g->cap = cap;
    }
    if (proto->name && !(n.name = anvil_xstrdup(proto->name)))
        return anvil_graph_fail(g, ANVIL_ERR_OOM, "%s", anvil_last_error());
    g->nodes[g->n] = n;
    return g->n++;
}

anvil_status anvil_graph_clone(const anvil_graph *g, anvil_graph **out)
{
    ANVIL_TRY(anvil_graph_create(out));
    anvil_graph *c = *out;
    c->cap = g->n > 0 ? g->n : 1;
    c->nodes = anvil_xcalloc((size_t)c->cap, sizeof *c->nodes, "graph nodes");
    if (!c->nodes) {
        anvil_graph_free(c);
        *out = NULL;
        return ANVIL_ERR_OOM;
    }
    for (int i = 0; i < g->n; i++) {
        c->nodes[i] = g->nodes[i];
        c->nodes[i].name = NULL;
        c->n = i + 1;
        if (g->nodes[i].name && !(c->nodes[i].name = anvil_xstrdup(g->nodes[i].name))) {
            anvil_graph_free(c);
            *out = NULL;
            return ANVIL_ERR_OOM;
        }
    }
    c->status = g->status;
    c->error = g->status != ANVIL_OK ? anvil_xstrdup(g->error) : NULL;
    c->dropout_streams = g->dropout_streams;
    return ANVIL_OK;
}

anvil_status anvil_graph_instantiate(const anvil_graph *g, int64_t batch, bool training,
                                     anvil_graph **out)
{
    if (batch <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "batch size must be positive, got %" PRId64, batch);
    ANVIL_TRY(anvil_graph_clone(g, out));
    anvil_graph *c = *out;
    for (int i = 0; i < c->n; i++) {
        anvil_node *n = &c->nodes[i];
        for (int d = 0; d < n->ndim; d++)
            if (n->shape[d] == ANVIL_BATCH)
                n->shape[d] = batch;
        /* Evaluation: dropout is the identity, which is a view of its input. */
        if (!training && n->op == OP_DROPOUT)
            n->op = OP_RESHAPE;
        /* Evaluation: batch norm (and its gradients) use the running statistics; the
         * BATCHNORM_STATS effect nodes stay in the graph but no evaluation root reaches
         * them (the trainer roots them in training programs only). */
        if (!training && (n->op == OP_BATCHNORM_MOMENTS || n->op == OP_BATCHNORM || n->op == OP_BATCHNORM_BWD_COEF ||
                          n->op == OP_BATCHNORM_BWD))
            n->ia[0] = 0;
    }
    return ANVIL_OK;
}

/* ---- op table */

#define ANVIL_X_DECL(E, n) extern const anvil_opdef anvil_opdef_##n;
ANVIL_OPLIST(ANVIL_X_DECL)
#undef ANVIL_X_DECL

static const anvil_opdef *const *opdefs(void)
{
    static const anvil_opdef *const table[OP_COUNT] = {
#define ANVIL_X_ENTRY(E, n) [OP_##E] = &anvil_opdef_##n,
        ANVIL_OPLIST(ANVIL_X_ENTRY)
#undef ANVIL_X_ENTRY
    };
    return table;
}

const anvil_opdef *anvil_opdef_of(anvil_op op)
{
    return ((unsigned)op < OP_COUNT) ? opdefs()[op] : NULL;
}

const char *anvil_op_name(anvil_op op)
{
    const anvil_opdef *d = anvil_opdef_of(op);
    return d ? d->name : "?";
}

/* ---- shape helpers */

int anvil_norm_dim(int dim, int ndim)
{
    if (dim < 0)
        dim += ndim;
    return (dim >= 0 && dim < ndim) ? dim : -1;
}

anvil_status anvil_broadcast_shape(const anvil_node *a, const anvil_node *b, anvil_node *out,
                                   const char *op)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da == db || db == 1)
            out->shape[i] = da;
        else if (da == 1)
            out->shape[i] = db;
        else {
            char sa[96], sb[96];
            return anvil_fail(ANVIL_ERR_SHAPE, "%s: shapes %s and %s do not broadcast (dim %d)", op,
                              anvil_shape_str(sa, sizeof sa, a->ndim, a->shape),
                              anvil_shape_str(sb, sizeof sb, b->ndim, b->shape), i);
        }
    }
    out->ndim = nd;
    return ANVIL_OK;
}
