/* conv.c — 2-D convolution (torch.nn.functional.conv2d: NCHW, zero padding, groups) and
 * its two backward ops: data (dy, w -> dx) and filter (dy, x -> dw).  The bias gradient
 * is a plain sum_to.  The backward ops carry the shape they produce (x's or w's): it
 * cannot be recovered from dy when the stride drops rows. */
#include "graph/ops/ops.h"

/* torch's output size; < 1 when the (dilated) kernel does not fit. */
static int64_t conv_out(int64_t in, int64_t k, int s, int p, int d)
{
    return (in + 2 * (int64_t)p - (int64_t)d * (k - 1) - 1) / s + 1;
}

static bool is_4d_f32(const anvil_node *n)
{
    if (n->ndim != 4 || n->dtype != ANVIL_F32)
        return false;
    for (int i = 1; i < 4; i++)
        if (n->shape[i] <= 0)
            return false;
    return true;
}

/* Checks x [N,C,H,W] against w [O,C/g,kh,kw] and the attrs; sets y [N,O,OH,OW]. */
static anvil_status conv_shapes(const anvil_node *x, const anvil_node *w, const int *ia,
                                const char *op, int64_t y[4])
{
    char sx[96], sw[96];
    if (!is_4d_f32(x) || !is_4d_f32(w) || w->shape[0] <= 0)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: needs float32 input [N, C, H, W] and weight [O, C/groups, kh, kw], got %s and %s",
                          op, anvil_shape_str(sx, sizeof sx, x->ndim, x->shape),
                          anvil_shape_str(sw, sizeof sw, w->ndim, w->shape));
    if (ia[0] < 1 || ia[1] < 1 || ia[2] < 0 || ia[3] < 0 || ia[4] < 1 || ia[5] < 1)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: stride (%d, %d) and dilation (%d, %d) must be >= 1, padding (%d, %d) >= 0",
                          op, ia[0], ia[1], ia[4], ia[5], ia[2], ia[3]);
    int64_t C = x->shape[1], cg = w->shape[1], O = w->shape[0];
    if (C % cg || O % (C / cg))
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: input %s has %lld channels, not a multiple of the weight %s's %lld per group with %lld output channels",
                          op, SHAPE_STR(sx, x), (long long)C, SHAPE_STR(sw, w), (long long)cg, (long long)O);
    y[0] = x->shape[0];
    y[1] = O;
    y[2] = conv_out(x->shape[2], w->shape[2], ia[0], ia[2], ia[4]);
    y[3] = conv_out(x->shape[3], w->shape[3], ia[1], ia[3], ia[5]);
    if (y[2] < 1 || y[3] < 1)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: kernel %lldx%lld (dilation %d, %d) does not fit input %s padded by (%d, %d)",
                          op, (long long)w->shape[2], (long long)w->shape[3], ia[4], ia[5], SHAPE_STR(sx, x),
                          ia[2], ia[3]);
    return ANVIL_OK;
}

static anvil_status conv2d_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0), *w = IN(g, n, 1);
    int64_t y[4] = {0};
    ANVIL_TRY(conv_shapes(x, w, n->ia, "conv2d", y));
    if (n->n_in == 3) {
        const anvil_node *b = IN(g, n, 2);
        char sb[96], sw[96];
        if (b->ndim != 1 || b->shape[0] != w->shape[0] || b->dtype != ANVIL_F32)
            return anvil_fail(ANVIL_ERR_SHAPE, "conv2d: bias %s does not fit weight %s (needs [%lld])",
                              SHAPE_STR(sb, b), SHAPE_STR(sw, w), (long long)w->shape[0]);
    }
    n->ndim = 4;
    for (int i = 0; i < 4; i++)
        n->shape[i] = y[i];
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

/* dy must be what conv2d gives for x (n's own shape for data, in[1] for filter). */
static anvil_status check_dy(const anvil_node *dy, const int64_t y[4], const char *op)
{
    char sd[96], se[96];
    bool ok = dy->ndim == 4 && dy->dtype == ANVIL_F32;
    for (int i = 0; ok && i < 4; i++)
        ok = dy->shape[i] == y[i];
    if (!ok)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: dy %s, expected %s", op, SHAPE_STR(sd, dy),
                          anvil_shape_str(se, sizeof se, 4, y));
    return ANVIL_OK;
}

static anvil_status conv2d_bwd_data_infer(const anvil_graph *g, anvil_node *n)
{
    /* n's shape (x's) was set by the VJP */
    int64_t y[4] = {0};
    n->dtype = ANVIL_F32;
    ANVIL_TRY(conv_shapes(n, IN(g, n, 1), n->ia, "conv2d_bwd_data", y));
    return check_dy(IN(g, n, 0), y, "conv2d_bwd_data");
}

static anvil_status conv2d_bwd_filter_infer(const anvil_graph *g, anvil_node *n)
{
    /* n's shape (w's) was set by the VJP */
    int64_t y[4] = {0};
    n->dtype = ANVIL_F32;
    ANVIL_TRY(conv_shapes(IN(g, n, 1), n, n->ia, "conv2d_bwd_filter", y));
    return check_dy(IN(g, n, 0), y, "conv2d_bwd_filter");
}

static anvil_value conv_bwd(anvil_graph *g, anvil_op op, anvil_value dy, anvil_value other,
                            const anvil_node *fwd, const anvil_node *like)
{
    anvil_value in[2] = {dy, other};
    anvil_node b = anvil_node_proto(op, 2, in);
    memcpy(b.ia, fwd->ia, sizeof b.ia);
    anvil_copy_shape(&b, like);
    return anvil_graph_add(g, &b);
}

static void conv2d_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                       anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    anvil_node x = g->nodes[n.in[0]], w = g->nodes[n.in[1]];
    if (need[0])
        dx[0] = conv_bwd(g, OP_CONV2D_BWD_DATA, dy, n.in[1], &n, &x);
    if (need[1])
        dx[1] = conv_bwd(g, OP_CONV2D_BWD_FILTER, dy, n.in[0], &n, &w);
    if (n.n_in == 3 && need[2]) {
        /* db[o] = sum of dy over N, OH, OW */
        anvil_node per_channel = {.ndim = 4, .shape = {1, w.shape[0], 1, 1}};
        anvil_value s = anvil_sum_to(g, dy, &per_channel);
        dx[2] = anvil_reshape_like(g, s, n.in[2]);
    }
}

anvil_conv_params anvil_conv_default_params(void)
{
    anvil_conv_params p = {1, 1, 0, 0, 1, 1, 1};
    return p;
}

anvil_value anvil_conv2d(anvil_graph *g, anvil_value x, anvil_value w, anvil_value b,
                         const anvil_conv_params *p)
{
    if (!g || g->status != ANVIL_OK)
        return ANVIL_NO_VALUE;
    anvil_conv_params d = anvil_conv_default_params();
    if (!p)
        p = &d;
    if (!anvil_graph_valid(g, x) || !anvil_graph_valid(g, w) ||
        (b != ANVIL_NO_VALUE && !anvil_graph_valid(g, b)))
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "conv2d: input, weight or bias is not a value of this graph");
    const anvil_node *xn = &g->nodes[x], *wn = &g->nodes[w];
    char sx[96], sw[96];
    if (p->groups < 1)
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "conv2d: groups must be >= 1, got %d", p->groups);
    if (xn->ndim == 4 && wn->ndim == 4) {
        /* conv2d's node derives groups from the shapes: check the caller's here */
        int64_t C = xn->shape[1], O = wn->shape[0];
        if (C % p->groups || C / p->groups != wn->shape[1])
            return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "conv2d: input %s has %lld channels, the weight %s expects %lld per group (groups %d)",
                                    SHAPE_STR(sx, xn), (long long)C, SHAPE_STR(sw, wn),
                                    (long long)wn->shape[1], p->groups);
        if (O % p->groups)
            return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "conv2d: weight %s has %lld output channels, not a multiple of groups %d",
                                    SHAPE_STR(sw, wn), (long long)O, p->groups);
    }
    anvil_value in[3] = {x, w, b};
    anvil_node n = anvil_node_proto(OP_CONV2D, b == ANVIL_NO_VALUE ? 2 : 3, in);
    int ia[6] = {p->stride_h, p->stride_w, p->pad_h, p->pad_w, p->dilation_h, p->dilation_w};
    memcpy(n.ia, ia, sizeof ia);
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_conv2d = {"conv2d", 2, 3, 0, conv2d_infer, conv2d_vjp};
const anvil_opdef anvil_opdef_conv2d_bwd_data = {"conv2d_bwd_data", 2, 2, 0, conv2d_bwd_data_infer, NULL};
const anvil_opdef anvil_opdef_conv2d_bwd_filter = {"conv2d_bwd_filter", 2, 2, 0, conv2d_bwd_filter_infer, NULL};
