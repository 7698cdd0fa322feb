/* concat.c — torch.cat and its adjoint, slice (x.narrow). */
#include "graph/ops/ops.h"

static anvil_status concat_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x0 = IN(g, n, 0);
    char s0[96], si[96];
    int d = anvil_norm_dim(n->ia[0], x0->ndim);
    if (d < 0)
        return anvil_fail(ANVIL_ERR_SHAPE, "concat: dim %d out of range for %s", n->ia[0], SHAPE_STR(s0, x0));
    if (x0->shape[d] == ANVIL_BATCH)
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "concat: joining along the batch dimension");
    anvil_copy_shape(n, x0);
    n->dtype = x0->dtype;
    n->ia[0] = d;
    for (int i = 1; i < n->n_in; i++) {
        const anvil_node *xi = IN(g, n, i);
        bool ok = xi->ndim == x0->ndim && xi->dtype == x0->dtype;
        for (int k = 0; ok && k < x0->ndim; k++)
            ok = k == d || xi->shape[k] == x0->shape[k];
        if (!ok)
            return anvil_fail(ANVIL_ERR_SHAPE, "concat along dim %d: input 0 is %s %s but input %d is %s %s", d,
                              anvil_dtype_name(x0->dtype), SHAPE_STR(s0, x0), i, anvil_dtype_name(xi->dtype),
                              SHAPE_STR(si, xi));
        n->shape[d] += xi->shape[d];
    }
    return ANVIL_OK;
}

static void concat_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need, anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    int64_t at = 0;
    for (int i = 0; i < n.n_in; i++) {
        int64_t len = g->nodes[n.in[i]].shape[n.ia[0]];
        if (need[i])
            dx[i] = anvil_slice(g, dy, n.ia[0], at, len);
        at += len;
    }
}

anvil_value anvil_concat(anvil_graph *g, int n, const anvil_value *xs, int dim)
{
    if (!g)
        return ANVIL_NO_VALUE;
    if (n < 2 || n > ANVIL_MAX_IN || !xs)
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "concat: takes 2..%d values, got %d", ANVIL_MAX_IN, n);
    anvil_node nd = anvil_node_proto(OP_CONCAT, n, xs);
    nd.ia[0] = dim;
    return anvil_graph_add(g, &nd);
}

const anvil_opdef anvil_opdef_concat = {"concat", 2, ANVIL_MAX_IN, 0, concat_infer, concat_vjp};

/* The node's shape is set by anvil_slice (the input's, with `length` at dim). */
static anvil_status slice_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    int d = n->ia[0];
    char sx[96];
    if (d < 0 || d >= x->ndim || x->shape[d] == ANVIL_BATCH || n->ia[1] < 0 ||
        n->ia[1] + n->shape[d] > x->shape[d] || n->shape[d] <= 0)
        return anvil_fail(ANVIL_ERR_SHAPE, "slice: [%d, %lld) of dim %d is outside %s", n->ia[1],
                          (long long)(n->ia[1] + n->shape[d]), d, SHAPE_STR(sx, x));
    n->dtype = x->dtype;
    return ANVIL_OK;
}

static void slice_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need, anvil_value *dx)
{
    if (!need[0])
        return;
    /* dx = [zeros before, dy, zeros after] along the dim */
    anvil_node n = g->nodes[self];
    anvil_node x = g->nodes[n.in[0]];
    int d = n.ia[0];
    anvil_value parts[3];
    int k = 0;
    int64_t before = n.ia[1], after = x.shape[d] - n.ia[1] - n.shape[d];
    int64_t shape[ANVIL_MAX_DIMS];
    memcpy(shape, x.shape, sizeof shape);
    if (before > 0) {
        shape[d] = before;
        parts[k++] = anvil_fill(g, x.ndim, shape, 0.0f);
    }
    parts[k++] = dy;
    if (after > 0) {
        shape[d] = after;
        parts[k++] = anvil_fill(g, x.ndim, shape, 0.0f);
    }
    dx[0] = k == 1 ? dy : anvil_concat(g, k, parts, d);
}

anvil_value anvil_slice(anvil_graph *g, anvil_value x, int dim, int64_t start, int64_t length)
{
    if (!g || g->status != ANVIL_OK)
        return ANVIL_NO_VALUE;
    if (!anvil_graph_valid(g, x))
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "slice: invalid input value");
    const anvil_node *xn = &g->nodes[x];
    int d = anvil_norm_dim(dim, xn->ndim);
    if (d < 0 || start < 0 || start > (1 << 30))
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "slice: dim %d / start %lld out of range", dim, (long long)start);
    anvil_node n = anvil_node_proto(OP_SLICE, 1, &x);
    anvil_copy_shape(&n, xn);
    n.shape[d] = length;
    n.ia[0] = d;
    n.ia[1] = (int)start;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_slice = {"slice", 1, 1, 0, slice_infer, slice_vjp};
