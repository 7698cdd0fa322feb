/* pool.c — 2-D max, average and adaptive average pooling over NCHW (torch's semantics:
 * dilation 1, ceil_mode false, count_include_pad true) and their backward ops.  Max
 * pooling's backward recomputes the argmax from x instead of storing indices; the
 * average backward ops carry x's shape, which dy alone does not determine. */
#include "graph/ops/ops.h"

/* The pooled shape of x [N,C,H,W] under n's attrs. */
static anvil_status pool_shape(const anvil_node *x, const anvil_node *n, const char *op,
                               int64_t y[4])
{
    char sx[96];
    bool ok = x->ndim == 4 && x->dtype == ANVIL_F32;
    for (int i = 1; ok && i < 4; i++)
        ok = x->shape[i] > 0;
    if (!ok)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: needs a float32 input [N, C, H, W], got %s", op,
                          SHAPE_STR(sx, x));
    const int *a = n->ia;
    y[0] = x->shape[0];
    y[1] = x->shape[1];
    if (n->op == OP_ADAPTIVE_AVGPOOL2D || n->op == OP_ADAPTIVE_AVGPOOL2D_BWD) {
        if (a[0] < 1 || a[1] < 1)
            return anvil_fail(ANVIL_ERR_SHAPE, "%s: output size (%d, %d) must be >= 1", op, a[0], a[1]);
        y[2] = a[0];
        y[3] = a[1];
        return ANVIL_OK;
    }
    if (a[0] < 1 || a[1] < 1 || a[2] < 1 || a[3] < 1)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: kernel (%d, %d) and stride (%d, %d) must be >= 1", op,
                          a[0], a[1], a[2], a[3]);
    if (a[4] < 0 || a[5] < 0 || 2 * a[4] > a[0] || 2 * a[5] > a[1])
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: padding (%d, %d) must be between 0 and half the kernel (%d, %d)",
                          op, a[4], a[5], a[0], a[1]);
    y[2] = (x->shape[2] + 2 * a[4] - a[0]) / a[2] + 1;
    y[3] = (x->shape[3] + 2 * a[5] - a[1]) / a[3] + 1;
    if (x->shape[2] + 2 * a[4] < a[0] || x->shape[3] + 2 * a[5] < a[1])
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: kernel (%d, %d) is larger than input %s padded by (%d, %d)",
                          op, a[0], a[1], SHAPE_STR(sx, x), a[4], a[5]);
    return ANVIL_OK;
}

static anvil_status pool_infer(const anvil_graph *g, anvil_node *n)
{
    const char *op = anvil_op_name(n->op);
    int64_t y[4] = {0};
    n->dtype = ANVIL_F32;
    switch (n->op) {
    case OP_MAXPOOL2D:
    case OP_AVGPOOL2D:
    case OP_ADAPTIVE_AVGPOOL2D:
        ANVIL_TRY(pool_shape(IN(g, n, 0), n, op, y));
        n->ndim = 4;
        memcpy(n->shape, y, sizeof y);
        return ANVIL_OK;
    case OP_MAXPOOL2D_BWD:
        ANVIL_TRY(pool_shape(IN(g, n, 1), n, op, y));
        anvil_copy_shape(n, IN(g, n, 1));
        break;
    default: /* the average backward ops: n's shape (x's) was set by the VJP */
        ANVIL_TRY(pool_shape(n, n, op, y));
        break;
    }
    const anvil_node *dy = IN(g, n, 0);
    bool ok = dy->ndim == 4 && dy->dtype == ANVIL_F32;
    for (int i = 0; ok && i < 4; i++)
        ok = dy->shape[i] == y[i];
    char sd[96], se[96];
    if (!ok)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: dy %s, expected %s", op, SHAPE_STR(sd, dy),
                          anvil_shape_str(se, sizeof se, 4, y));
    return ANVIL_OK;
}

static void pool_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                     anvil_value *dx)
{
    if (!need[0])
        return;
    anvil_node n = g->nodes[self];
    anvil_value in[2] = {dy, n.in[0]};
    anvil_op op = n.op == OP_MAXPOOL2D ? OP_MAXPOOL2D_BWD
                : n.op == OP_AVGPOOL2D ? OP_AVGPOOL2D_BWD : OP_ADAPTIVE_AVGPOOL2D_BWD;
    anvil_node b = anvil_node_proto(op, op == OP_MAXPOOL2D_BWD ? 2 : 1, in);
    memcpy(b.ia, n.ia, sizeof b.ia);
    anvil_copy_shape(&b, &g->nodes[n.in[0]]);
    dx[0] = anvil_graph_add(g, &b);
}

static anvil_value pool(anvil_graph *g, anvil_op op, anvil_value x, int kh, int kw, int sh,
                        int sw, int ph, int pw)
{
    anvil_node n = anvil_node_proto(op, 1, &x);
    int ia[6] = {kh, kw, sh ? sh : kh, sw ? sw : kw, ph, pw}; /* stride 0: the kernel */
    memcpy(n.ia, ia, sizeof ia);
    return anvil_graph_add(g, &n);
}

anvil_value anvil_maxpool2d(anvil_graph *g, anvil_value x, int kh, int kw, int sh, int sw,
                            int ph, int pw)
{
    return pool(g, OP_MAXPOOL2D, x, kh, kw, sh, sw, ph, pw);
}

anvil_value anvil_avgpool2d(anvil_graph *g, anvil_value x, int kh, int kw, int sh, int sw,
                            int ph, int pw)
{
    return pool(g, OP_AVGPOOL2D, x, kh, kw, sh, sw, ph, pw);
}

anvil_value anvil_adaptive_avgpool2d(anvil_graph *g, anvil_value x, int oh, int ow)
{
    anvil_node n = anvil_node_proto(OP_ADAPTIVE_AVGPOOL2D, 1, &x);
    n.ia[0] = oh;
    n.ia[1] = ow;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_maxpool2d = {"maxpool2d", 1, 1, 0, pool_infer, pool_vjp};
const anvil_opdef anvil_opdef_maxpool2d_bwd = {"maxpool2d_bwd", 2, 2, 0, pool_infer, NULL};
const anvil_opdef anvil_opdef_avgpool2d = {"avgpool2d", 1, 1, 0, pool_infer, pool_vjp};
const anvil_opdef anvil_opdef_avgpool2d_bwd = {"avgpool2d_bwd", 1, 1, 0, pool_infer, NULL};
const anvil_opdef anvil_opdef_adaptive_avgpool2d = {"adaptive_avgpool2d", 1, 1, 0, pool_infer, pool_vjp};
const anvil_opdef anvil_opdef_adaptive_avgpool2d_bwd = {"adaptive_avgpool2d_bwd", 1, 1, 0, pool_infer, NULL};
