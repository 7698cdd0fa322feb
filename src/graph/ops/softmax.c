/* softmax.c — softmax and log_softmax over one dim; backward ops use the output. */
#include "graph/ops/ops.h"

static anvil_status softmax_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, n->n_in - 1);
    char sx[96];
    if (x->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: needs float32", anvil_op_name(n->op));
    int d = anvil_norm_dim(n->ia[0], x->ndim);
    if (d < 0)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: dim %d out of range for %s", anvil_op_name(n->op),
                          n->ia[0], SHAPE_STR(sx, x));
    n->ia[0] = d;
    anvil_copy_shape(n, x);
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

static void softmax_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                        anvil_value *dx)
{
    if (!need[0])
        return;
    anvil_node n = g->nodes[self];
    anvil_value in[2] = {dy, self};
    anvil_node b = anvil_node_proto(n.op == OP_SOFTMAX ? OP_SOFTMAX_BWD : OP_LOG_SOFTMAX_BWD, 2, in);
    b.ia[0] = n.ia[0];
    dx[0] = anvil_graph_add(g, &b);
}

static anvil_value softmax(anvil_graph *g, anvil_op op, anvil_value x, int dim)
{
    anvil_node n = anvil_node_proto(op, 1, &x);
    n.ia[0] = dim;
    return anvil_graph_add(g, &n);
}

anvil_value anvil_softmax(anvil_graph *g, anvil_value x, int dim) { return softmax(g, OP_SOFTMAX, x, dim); }
anvil_value anvil_log_softmax(anvil_graph *g, anvil_value x, int dim) { return softmax(g, OP_LOG_SOFTMAX, x, dim); }

const anvil_opdef anvil_opdef_softmax = {"softmax", 1, 1, 0, softmax_infer, softmax_vjp};
const anvil_opdef anvil_opdef_log_softmax = {"log_softmax", 1, 1, 0, softmax_infer, softmax_vjp};
const anvil_opdef anvil_opdef_softmax_bwd = {"softmax_bwd", 2, 2, 0, softmax_infer, NULL};
const anvil_opdef anvil_opdef_log_softmax_bwd = {"log_softmax_bwd", 2, 2, 0, softmax_infer, NULL};
