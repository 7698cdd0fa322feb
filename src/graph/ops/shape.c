/* shape.c — reshape (a view), copy and fill. */
#include "graph/ops/ops.h"

static anvil_status reshape_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    n->dtype = x->dtype;
    int64_t kx, kt;
    int px, pt;
    anvil_sym_numel(x->ndim, x->shape, &kx, &px);
    int infer_at = -1;
    int64_t prod = 1;
    int bt = 0;
    for (int i = 0; i < n->ndim; i++) {
        if (n->shape[i] == ANVIL_INFER_DIM) {
            if (infer_at >= 0)
                return anvil_fail(ANVIL_ERR_SHAPE, "reshape: more than one inferred dimension");
            infer_at = i;
        } else if (n->shape[i] == ANVIL_BATCH) {
            bt++;
        } else if (n->shape[i] <= 0) {
            return anvil_fail(ANVIL_ERR_SHAPE, "reshape: dimension %d is %lld", i, (long long)n->shape[i]);
        } else {
            prod *= n->shape[i];
        }
    }
    char sx[96], st[96];
    if (bt != px)
        return anvil_fail(ANVIL_ERR_SHAPE, "reshape: %s to %s moves the batch dimension",
                          SHAPE_STR(sx, x), SHAPE_STR(st, n));
    if (infer_at >= 0) {
        if (prod == 0 || kx % prod)
            return anvil_fail(ANVIL_ERR_SHAPE, "reshape: %s does not fit %s", SHAPE_STR(sx, x), SHAPE_STR(st, n));
        n->shape[infer_at] = kx / prod;
    }
    anvil_sym_numel(n->ndim, n->shape, &kt, &pt);
    if (kt != kx)
        return anvil_fail(ANVIL_ERR_SHAPE, "reshape: %s has a different size than %s",
                          SHAPE_STR(sx, x), SHAPE_STR(st, n));
    return ANVIL_OK;
}

static void reshape_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                        anvil_value *dx)
{
    if (need[0])
        dx[0] = anvil_reshape_like(g, dy, g->nodes[self].in[0]);
}

anvil_value anvil_reshape(anvil_graph *g, anvil_value x, int ndim, const int64_t *shape)
{
    if (!g)
        return ANVIL_NO_VALUE;
    if (ndim < 0 || ndim > ANVIL_MAX_DIMS || (ndim && !shape))
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "reshape: ndim %d outside 0..%d", ndim, ANVIL_MAX_DIMS);
    anvil_node n = anvil_node_proto(OP_RESHAPE, 1, &x);
    n.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        n.shape[i] = shape[i];
    return anvil_graph_add(g, &n);
}

anvil_value anvil_reshape_like(anvil_graph *g, anvil_value x, anvil_value like)
{
    const anvil_node *l = &g->nodes[like];
    int64_t shape[ANVIL_MAX_DIMS];
    int nd = l->ndim;
    memcpy(shape, l->shape, sizeof shape);
    return anvil_reshape(g, x, nd, shape);
}

anvil_value anvil_flatten(anvil_graph *g, anvil_value x)
{
    if (!g || g->status != ANVIL_OK)
        return ANVIL_NO_VALUE;
    if (!anvil_graph_valid(g, x))
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "flatten: invalid input value");
    const anvil_node *n = &g->nodes[x];
    if (n->ndim < 1)
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "flatten: needs at least 1 dimension, got a scalar");
    int64_t shape[2] = {n->shape[0], 1};
    for (int i = 1; i < n->ndim; i++)
        shape[1] *= n->shape[i];
    return anvil_reshape(g, x, 2, shape);
}

const anvil_opdef anvil_opdef_reshape = {"reshape", 1, 1, OPF_ALIAS, reshape_infer, reshape_vjp};

static void copy_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                     anvil_value *dx)
{
    (void)g, (void)self;
    if (need[0])
        dx[0] = dy;
}

anvil_status anvil_infer_float_same(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    anvil_copy_shape(n, x);
    n->dtype = x->dtype;
    return ANVIL_OK;
}

anvil_status anvil_infer_scalar(const anvil_graph *g, anvil_node *n)
{
    (void)g;
    n->ndim = 0;
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

anvil_status anvil_infer_effect(const anvil_graph *g, anvil_node *n)
{
    (void)g;
    n->ndim = -1; /* no output */
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

const anvil_opdef anvil_opdef_copy = {"copy", 1, 1, OPF_INPLACE, anvil_infer_float_same, copy_vjp};

anvil_value anvil_fill(anvil_graph *g, int ndim, const int64_t *shape, float value)
{
    anvil_node n = anvil_node_proto(OP_FILL, 0, NULL);
    n.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        n.shape[i] = shape[i];
    n.dtype = ANVIL_F32;
    n.fa[0] = value;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_fill = {"fill", 0, 0, 0, NULL, NULL};
