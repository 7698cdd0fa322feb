/* reduce.c — sum/mean over a dim or everything, and the two adjoint ops of
 * broadcasting: sum_to (sum down to a shape) and broadcast_to (expand up to one). */
#include "graph/ops/ops.h"

static anvil_status reduce_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    if (x->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: needs float32, got %s", n->ia[2] ? "mean" : "sum",
                          anvil_dtype_name(x->dtype));
    n->dtype = ANVIL_F32;
    if (n->ia[0] == ANVIL_ALL_DIMS) {
        n->ndim = 0;
        return ANVIL_OK;
    }
    int d = anvil_norm_dim(n->ia[0], x->ndim);
    if (d < 0) {
        char sx[96];
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: dim %d out of range for %s", n->ia[2] ? "mean" : "sum",
                          n->ia[0], SHAPE_STR(sx, x));
    }
    n->ia[0] = d;
    n->ndim = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i == d && !n->ia[1])
            continue;
        n->shape[n->ndim++] = (i == d) ? 1 : x->shape[i];
    }
    return ANVIL_OK;
}

static void reduce_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                       anvil_value *dx)
{
    if (!need[0])
        return;
    anvil_node n = g->nodes[self];
    anvil_node x = g->nodes[n.in[0]];
    anvil_value d = dy;
    if (n.ia[0] != ANVIL_ALL_DIMS && !n.ia[1]) {
        /* put the reduced dim back as 1 so dy broadcasts over it */
        int64_t shape[ANVIL_MAX_DIMS];
        for (int i = 0; i < x.ndim; i++)
            shape[i] = (i == n.ia[0]) ? 1 : x.shape[i];
        d = anvil_reshape(g, dy, x.ndim, shape);
    }
    dx[0] = anvil_broadcast_to(g, d, x.ndim, x.shape, n.ia[2] != 0);
}

static anvil_value reduce(anvil_graph *g, anvil_value x, int dim, bool keepdim, bool mean)
{
    anvil_node n = anvil_node_proto(OP_REDUCE, 1, &x);
    n.ia[0] = dim;
    n.ia[1] = keepdim;
    n.ia[2] = mean;
    return anvil_graph_add(g, &n);
}

anvil_value anvil_sum(anvil_graph *g, anvil_value x, int dim, bool keepdim) { return reduce(g, x, dim, keepdim, false); }
anvil_value anvil_mean(anvil_graph *g, anvil_value x, int dim, bool keepdim) { return reduce(g, x, dim, keepdim, true); }

const anvil_opdef anvil_opdef_reduce = {"reduce", 1, 1, 0, reduce_infer, reduce_vjp};

/* Target shape is in n already; check that it broadcasts to (sum_to) or from
 * (broadcast_to) the input's shape. */
static anvil_status broadcast_check(const anvil_node *small, const anvil_node *big, const char *op)
{
    char ss[96], sb[96];
    if (small->ndim > big->ndim)
        goto bad;
    for (int i = 0; i < small->ndim; i++) {
        int64_t s = small->shape[small->ndim - 1 - i], b = big->shape[big->ndim - 1 - i];
        if (s != b && s != 1)
            goto bad;
    }
    return ANVIL_OK;
bad:
    return anvil_fail(ANVIL_ERR_SHAPE, "%s: %s does not broadcast to %s", op,
                      SHAPE_STR(ss, small), SHAPE_STR(sb, big));
}

static anvil_status sum_to_infer(const anvil_graph *g, anvil_node *n)
{
    n->dtype = ANVIL_F32;
    return broadcast_check(n, IN(g, n, 0), "sum_to");
}

static anvil_status broadcast_to_infer(const anvil_graph *g, anvil_node *n)
{
    n->dtype = ANVIL_F32;
    return broadcast_check(IN(g, n, 0), n, "broadcast_to");
}

static void sum_to_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                       anvil_value *dx)
{
    if (need[0]) {
        anvil_node x = g->nodes[g->nodes[self].in[0]];
        dx[0] = anvil_broadcast_to(g, dy, x.ndim, x.shape, false);
    }
}

static void broadcast_to_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                             anvil_value *dx)
{
    if (!need[0])
        return;
    anvil_node n = g->nodes[self];
    if (n.ia[0]) {
        anvil_graph_fail(g, ANVIL_ERR_UNSUPPORTED, "broadcast_to: no second derivative of mean");
        return;
    }
    dx[0] = anvil_sum_to(g, dy, &g->nodes[n.in[0]]);
}

anvil_value anvil_sum_to(anvil_graph *g, anvil_value x, const anvil_node *like)
{
    anvil_node n = anvil_node_proto(OP_SUM_TO, 1, &x);
    anvil_copy_shape(&n, like);
    return anvil_graph_add(g, &n);
}

anvil_value anvil_broadcast_to(anvil_graph *g, anvil_value x, int ndim, const int64_t *shape,
                               bool divide)
{
    anvil_node n = anvil_node_proto(OP_BROADCAST_TO, 1, &x);
    n.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        n.shape[i] = shape[i];
    n.ia[0] = divide;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_sum_to = {"sum_to", 1, 1, 0, sum_to_infer, sum_to_vjp};
const anvil_opdef anvil_opdef_broadcast_to = {"broadcast_to", 1, 1, 0, broadcast_to_infer, broadcast_to_vjp};
