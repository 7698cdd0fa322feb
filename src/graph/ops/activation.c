/* activation.c — pointwise activations; the backward op recomputes f'(x) from x. */
#include "graph/ops/ops.h"

static anvil_status act_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, n->op == OP_ACT_BWD ? 1 : 0);
    if (x->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "activation: needs float32, got %s", anvil_dtype_name(x->dtype));
    anvil_copy_shape(n, x);
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

static void act_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                    anvil_value *dx)
{
    if (!need[0])
        return;
    anvil_node n = g->nodes[self];
    anvil_value in[2] = {dy, n.in[0]};
    anvil_node b = anvil_node_proto(OP_ACT_BWD, 2, in);
    b.ia[0] = n.ia[0];
    b.fa[0] = n.fa[0];
    dx[0] = anvil_graph_add(g, &b);
}

static anvil_value act(anvil_graph *g, anvil_value x, anvil_act_kind kind, float param)
{
    anvil_node n = anvil_node_proto(OP_ACT, 1, &x);
    n.ia[0] = kind;
    n.fa[0] = param;
    return anvil_graph_add(g, &n);
}

anvil_value anvil_relu(anvil_graph *g, anvil_value x) { return act(g, x, ACT_RELU, 0); }
anvil_value anvil_leaky_relu(anvil_graph *g, anvil_value x, float s) { return act(g, x, ACT_LEAKY_RELU, s); }
anvil_value anvil_elu(anvil_graph *g, anvil_value x, float alpha) { return act(g, x, ACT_ELU, alpha); }
anvil_value anvil_sigmoid(anvil_graph *g, anvil_value x) { return act(g, x, ACT_SIGMOID, 0); }
anvil_value anvil_tanh(anvil_graph *g, anvil_value x) { return act(g, x, ACT_TANH, 0); }
anvil_value anvil_silu(anvil_graph *g, anvil_value x) { return act(g, x, ACT_SILU, 0); }
anvil_value anvil_gelu(anvil_graph *g, anvil_value x, bool tanh_approximation)
{
    return act(g, x, tanh_approximation ? ACT_GELU_TANH : ACT_GELU, 0);
}

const anvil_opdef anvil_opdef_act = {"act", 1, 1, OPF_INPLACE, act_infer, act_vjp};
const anvil_opdef anvil_opdef_act_bwd = {"act_bwd", 2, 2, OPF_INPLACE, act_infer, NULL};
