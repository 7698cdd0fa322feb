/* elementwise.c — add, sub, mul, div with broadcasting, and scale. */
#include "graph/ops/ops.h"

static anvil_status binary_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *a = IN(g, n, 0), *b = IN(g, n, 1);
    if (a->dtype != ANVIL_F32 || b->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: needs float32 operands, got %s and %s",
                          anvil_op_name(n->op), anvil_dtype_name(a->dtype), anvil_dtype_name(b->dtype));
    n->dtype = ANVIL_F32;
    return anvil_broadcast_shape(a, b, n, anvil_op_name(n->op));
}

/* The gradient of a broadcast operand: dy summed down to the operand's shape. */
static anvil_value reduce_for(anvil_graph *g, anvil_value d, anvil_value operand)
{
    const anvil_node *o = &g->nodes[operand];
    if (anvil_same_shape(&g->nodes[d], o))
        return d;
    return anvil_sum_to(g, d, o);
}

static void add_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                    anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    if (need[0])
        dx[0] = reduce_for(g, dy, n.in[0]);
    if (need[1])
        dx[1] = reduce_for(g, n.op == OP_SUB ? anvil_scale(g, dy, -1.0f) : dy, n.in[1]);
}

static void mul_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                    anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    if (need[0])
        dx[0] = reduce_for(g, anvil_mul(g, dy, n.in[1]), n.in[0]);
    if (need[1])
        dx[1] = reduce_for(g, anvil_mul(g, dy, n.in[0]), n.in[1]);
}

static void div_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                    anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    /* y = a / b: da = dy / b; db = -dy * y / b */
    if (need[0])
        dx[0] = reduce_for(g, anvil_div(g, dy, n.in[1]), n.in[0]);
    if (need[1])
        dx[1] = reduce_for(g, anvil_scale(g, anvil_div(g, anvil_mul(g, dy, self), n.in[1]), -1.0f), n.in[1]);
}

anvil_value anvil_add(anvil_graph *g, anvil_value a, anvil_value b) { return anvil_op2(g, OP_ADD, a, b); }
anvil_value anvil_sub(anvil_graph *g, anvil_value a, anvil_value b) { return anvil_op2(g, OP_SUB, a, b); }
anvil_value anvil_mul(anvil_graph *g, anvil_value a, anvil_value b) { return anvil_op2(g, OP_MUL, a, b); }
anvil_value anvil_div(anvil_graph *g, anvil_value a, anvil_value b) { return anvil_op2(g, OP_DIV, a, b); }

const anvil_opdef anvil_opdef_add = {"add", 2, 2, OPF_INPLACE, binary_infer, add_vjp};
const anvil_opdef anvil_opdef_sub = {"sub", 2, 2, OPF_INPLACE, binary_infer, add_vjp};
const anvil_opdef anvil_opdef_mul = {"mul", 2, 2, OPF_INPLACE, binary_infer, mul_vjp};
const anvil_opdef anvil_opdef_div = {"div", 2, 2, OPF_INPLACE, binary_infer, div_vjp};

static anvil_status scale_infer(const anvil_graph *g, anvil_node *n)
{
    if (IN(g, n, 0)->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "scale: needs float32");
    return anvil_infer_float_same(g, n);
}

static void scale_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                      anvil_value *dx)
{
    if (need[0])
        dx[0] = anvil_scale(g, dy, g->nodes[self].fa[0]);
}

anvil_value anvil_scale(anvil_graph *g, anvil_value x, float s)
{
    anvil_node n = anvil_node_proto(OP_SCALE, 1, &x);
    n.fa[0] = s;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_scale = {"scale", 1, 1, OPF_INPLACE, scale_infer, scale_vjp};
