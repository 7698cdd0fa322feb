/* loss.c — losses with PyTorch's semantics and reduction="mean".  Each is one op with a
 * scalar output and one backward op giving the input's gradient. */
#include "graph/ops/ops.h"

static anvil_status ce_infer(const anvil_graph *g, anvil_node *n)
{
    bool bwd = n->op == OP_CROSS_ENTROPY_BWD;
    const anvil_node *x = IN(g, n, bwd ? 1 : 0), *t = IN(g, n, bwd ? 2 : 1);
    char sx[96], st[96];
    if (x->ndim != 2 || x->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "cross_entropy: logits must be float32 [N, C], got %s %s",
                          anvil_dtype_name(x->dtype), SHAPE_STR(sx, x));
    if (!(n->fa[0] >= 0.0f && n->fa[0] < 1.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "cross_entropy: label_smoothing must be in [0, 1), got %g",
                          (double)n->fa[0]);
    if (t->dtype == ANVIL_I32) {
        if (t->ndim != 1 || t->shape[0] != x->shape[0])
            return anvil_fail(ANVIL_ERR_SHAPE, "cross_entropy: class labels must be int32 [N] for logits %s, got %s",
                              SHAPE_STR(sx, x), SHAPE_STR(st, t));
        n->ia[0] = 0;
    } else if (t->dtype == ANVIL_F32) {
        if (!anvil_same_shape(t, x))
            return anvil_fail(ANVIL_ERR_SHAPE, "cross_entropy: probability targets must match logits %s, got %s",
                              SHAPE_STR(sx, x), SHAPE_STR(st, t));
        n->ia[0] = 1;
    } else {
        return anvil_fail(ANVIL_ERR_SHAPE, "cross_entropy: target must be int32 labels or float32 probabilities, got %s",
                          anvil_dtype_name(t->dtype));
    }
    if (bwd) {
        anvil_copy_shape(n, x);
        n->dtype = ANVIL_F32;
        return ANVIL_OK;
    }
    return anvil_infer_scalar(g, n);
}

static void ce_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                   anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    if (need[1] && n.ia[0]) {
        anvil_graph_fail(g, ANVIL_ERR_UNSUPPORTED, "cross_entropy: no gradient for the target");
        return;
    }
    if (!need[0])
        return;
    anvil_value in[3] = {dy, n.in[0], n.in[1]};
    anvil_node b = anvil_node_proto(OP_CROSS_ENTROPY_BWD, 3, in);
    b.fa[0] = n.fa[0];
    dx[0] = anvil_graph_add(g, &b);
}

anvil_value anvil_cross_entropy(anvil_graph *g, anvil_value logits, anvil_value target,
                                float label_smoothing)
{
    anvil_value in[2] = {logits, target};
    anvil_node n = anvil_node_proto(OP_CROSS_ENTROPY, 2, in);
    n.fa[0] = label_smoothing;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_cross_entropy = {"cross_entropy", 2, 2, 0, ce_infer, ce_vjp};
const anvil_opdef anvil_opdef_cross_entropy_bwd = {"cross_entropy_bwd", 3, 3, 0, ce_infer, NULL};

static const char *pw_name(int kind)
{
    static const char *names[] = {"mse", "l1", "bce", "bce_with_logits", "huber", "smooth_l1"};
    return (kind >= 0 && kind <= PW_SMOOTH_L1) ? names[kind] : "pw_loss";
}

static anvil_status pw_infer(const anvil_graph *g, anvil_node *n)
{
    bool bwd = n->op == OP_PW_LOSS_BWD;
    const anvil_node *x = IN(g, n, bwd ? 1 : 0), *t = IN(g, n, bwd ? 2 : 1);
    char sx[96], st[96];
    if (x->dtype != ANVIL_F32 || t->dtype != ANVIL_F32 || !anvil_same_shape(x, t))
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: input %s %s and target %s %s must be float32 of one shape",
                          pw_name(n->ia[0]), anvil_dtype_name(x->dtype), SHAPE_STR(sx, x),
                          anvil_dtype_name(t->dtype), SHAPE_STR(st, t));
    if ((n->ia[0] == PW_HUBER && !(n->fa[0] > 0.0f)) || (n->ia[0] == PW_SMOOTH_L1 && !(n->fa[0] >= 0.0f)))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: %s must be %s, got %g", pw_name(n->ia[0]),
                          n->ia[0] == PW_HUBER ? "delta" : "beta", n->ia[0] == PW_HUBER ? "> 0" : ">= 0",
                          (double)n->fa[0]);
    if (bwd) {
        anvil_copy_shape(n, x);
        n->dtype = ANVIL_F32;
        return ANVIL_OK;
    }
    return anvil_infer_scalar(g, n);
}

static void pw_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                   anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    if (need[1]) {
        anvil_graph_fail(g, ANVIL_ERR_UNSUPPORTED, "%s: no gradient for the target", pw_name(n.ia[0]));
        return;
    }
    if (!need[0])
        return;
    anvil_value in[3] = {dy, n.in[0], n.in[1]};
    anvil_node b = anvil_node_proto(OP_PW_LOSS_BWD, 3, in);
    b.ia[0] = n.ia[0];
    b.fa[0] = n.fa[0];
    dx[0] = anvil_graph_add(g, &b);
}

static anvil_value pw(anvil_graph *g, anvil_pw_kind kind, anvil_value x, anvil_value t, float param)
{
    anvil_value in[2] = {x, t};
    anvil_node n = anvil_node_proto(OP_PW_LOSS, 2, in);
    n.ia[0] = kind;
    n.fa[0] = param;
    return anvil_graph_add(g, &n);
}

anvil_value anvil_bce(anvil_graph *g, anvil_value p, anvil_value t) { return pw(g, PW_BCE, p, t, 0); }
anvil_value anvil_bce_with_logits(anvil_graph *g, anvil_value x, anvil_value t) { return pw(g, PW_BCE_LOGITS, x, t, 0); }
anvil_value anvil_mse(anvil_graph *g, anvil_value x, anvil_value t) { return pw(g, PW_MSE, x, t, 0); }
anvil_value anvil_l1(anvil_graph *g, anvil_value x, anvil_value t) { return pw(g, PW_L1, x, t, 0); }
anvil_value anvil_huber(anvil_graph *g, anvil_value x, anvil_value t, float delta) { return pw(g, PW_HUBER, x, t, delta); }
anvil_value anvil_smooth_l1(anvil_graph *g, anvil_value x, anvil_value t, float beta) { return pw(g, PW_SMOOTH_L1, x, t, beta); }

const anvil_opdef anvil_opdef_pw_loss = {"pw_loss", 2, 2, 0, pw_infer, pw_vjp};
const anvil_opdef anvil_opdef_pw_loss_bwd = {"pw_loss_bwd", 3, 3, 0, pw_infer, NULL};
