/* dropout.c — a fresh random mask each training step, regenerated (not stored) by the
 * backward op from the same (seed, stream, step counter). */
#include "graph/ops/ops.h"

static anvil_status dropout_infer(const anvil_graph *g, anvil_node *n)
{
    if (!(n->fa[0] >= 0.0f && n->fa[0] < 1.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "dropout: p must be in [0, 1), got %g", (double)n->fa[0]);
    if (IN(g, n, 0)->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "dropout: needs float32");
    return anvil_infer_float_same(g, n);
}

static void dropout_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                        anvil_value *dx)
{
    if (!need[0])
        return;
    anvil_node b = anvil_node_proto(OP_DROPOUT_BWD, 1, &dy);
    b.ia[0] = g->nodes[self].ia[0];
    b.fa[0] = g->nodes[self].fa[0];
    dx[0] = anvil_graph_add(g, &b);
}

anvil_value anvil_dropout(anvil_graph *g, anvil_value x, float p)
{
    if (!g)
        return ANVIL_NO_VALUE;
    anvil_node n = anvil_node_proto(OP_DROPOUT, 1, &x);
    n.fa[0] = p;
    n.ia[0] = g->dropout_streams;
    anvil_value v = anvil_graph_add(g, &n);
    if (v != ANVIL_NO_VALUE)
        g->dropout_streams++;
    return v;
}

const anvil_opdef anvil_opdef_dropout = {"dropout", 1, 1, OPF_INPLACE, dropout_infer, dropout_vjp};
const anvil_opdef anvil_opdef_dropout_bwd = {"dropout_bwd", 1, 1, OPF_INPLACE, anvil_infer_float_same, NULL};
