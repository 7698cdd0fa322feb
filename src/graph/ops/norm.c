/* norm.c — batch and layer normalization (torch.nn.functional's semantics).
 *
 * BatchNorm is three kinds of node: BATCHNORM (y), its backward ops (which recompute
 * the batch mean and variance from x instead of storing them), and BATCHNORM_STATS, an
 * effect node that updates the running statistics in place.  The trainer makes every
 * effect node of a model graph a root of its training program; evaluation programs
 * never reach it, and anvil_graph_instantiate(training = false) switches BATCHNORM and
 * its backward ops to the running statistics. */
#include "graph/ops/ops.h"

#include <math.h>

enum { BN_X, BN_MEAN, BN_VAR, BN_W }; /* BATCHNORM inputs; bias follows the weight */

static anvil_status bn_check_channel(const anvil_graph *g, const anvil_node *n, int i, const char *what,
                                     const char *op)
{
    const anvil_node *x = IN(g, n, 0), *p = IN(g, n, i);
    char sx[96], sp[96];
    if (p->dtype != ANVIL_F32 || p->ndim != 1 || p->shape[0] != x->shape[1])
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: %s must be float32 [%lld] for input %s, got %s %s", op, what,
                          (long long)x->shape[1], SHAPE_STR(sx, x), anvil_dtype_name(p->dtype),
                          SHAPE_STR(sp, p));
    return ANVIL_OK;
}

/* x [N, C, *]: float32, at least 2 dims, C fixed. */
static anvil_status bn_check_x(const anvil_node *x, const char *op)
{
    char sx[96];
    if (x->dtype != ANVIL_F32 || x->ndim < 2 || x->shape[1] <= 0)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: input must be float32 [N, C, ...] with a fixed C, got %s %s", op,
                          anvil_dtype_name(x->dtype), SHAPE_STR(sx, x));
    return ANVIL_OK;
}

/* BATCHNORM: in (x, running_mean, running_var[, weight][, bias]). */
static anvil_status batchnorm_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    ANVIL_TRY(bn_check_x(x, "batchnorm"));
    if (n->n_in != 3 + n->ia[1] + n->ia[2])
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "batchnorm: %d inputs do not match the affine flags", n->n_in);
    if (!(n->fa[0] > 0.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "batchnorm: eps must be positive, got %g", (double)n->fa[0]);
    ANVIL_TRY(bn_check_channel(g, n, BN_MEAN, "running_mean", "batchnorm"));
    ANVIL_TRY(bn_check_channel(g, n, BN_VAR, "running_var", "batchnorm"));
    for (int i = BN_W; i < n->n_in; i++)
        ANVIL_TRY(bn_check_channel(g, n, i, (i == BN_W && n->ia[1]) ? "weight" : "bias", "batchnorm"));
    anvil_copy_shape(n, x);
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

/* BATCHNORM_BWD: in (dy, x, running_mean, running_var[, weight]) -> dx. */
static anvil_status batchnorm_bwd_infer(const anvil_graph *g, anvil_node *n)
{
    anvil_copy_shape(n, IN(g, n, 1));
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

/* BATCHNORM_BWD_AFFINE: in (dy, x, running_mean, running_var) -> [C]: ia[3] 0 dweight,
 * 1 dbias. */
static anvil_status batchnorm_bwd_affine_infer(const anvil_graph *g, anvil_node *n)
{
    n->ndim = 1;
    n->shape[0] = IN(g, n, 1)->shape[1];
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

static void batchnorm_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                          anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    bool has_w = n.ia[1], has_b = n.ia[2];
    if (need[BN_X]) {
        anvil_value in[5] = {dy, n.in[BN_X], n.in[BN_MEAN], n.in[BN_VAR], has_w ? n.in[BN_W] : 0};
        anvil_node b = anvil_node_proto(OP_BATCHNORM_BWD, has_w ? 5 : 4, in);
        b.fa[0] = n.fa[0];
        b.ia[0] = n.ia[0];
        b.ia[1] = has_w;
        dx[BN_X] = anvil_graph_add(g, &b);
    }
    anvil_value in[4] = {dy, n.in[BN_X], n.in[BN_MEAN], n.in[BN_VAR]};
    for (int k = 0; k < 2; k++) {
        int slot = k == 0 ? BN_W : BN_W + has_w;
        if (!(k == 0 ? has_w : has_b) || slot >= n.n_in || !need[slot])
            continue;
        anvil_node b = anvil_node_proto(OP_BATCHNORM_BWD_AFFINE, 4, in);
        b.fa[0] = n.fa[0];
        b.ia[0] = n.ia[0];
        b.ia[3] = k;
        dx[slot] = anvil_graph_add(g, &b);
    }
    /* running_mean/var: no gradient (buffers; in training they do not reach y). */
}

/* BATCHNORM_STATS: in (x, running_mean, running_var[, num_batches_tracked int64 []]). */
static anvil_status batchnorm_stats_infer(const anvil_graph *g, anvil_node *n)
{
    ANVIL_TRY(bn_check_x(IN(g, n, 0), "batchnorm_stats"));
    ANVIL_TRY(bn_check_channel(g, n, 1, "running_mean", "batchnorm_stats"));
    ANVIL_TRY(bn_check_channel(g, n, 2, "running_var", "batchnorm_stats"));
    for (int i = 1; i < n->n_in; i++)
        if (IN(g, n, i)->op != OP_BUFFER)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "batchnorm: running statistics must be buffers (anvil_buffer)");
    if (n->n_in == 4) {
        const anvil_node *t = IN(g, n, 3);
        if (t->dtype != ANVIL_I64 || anvil_node_numel(t) != 1)
            return anvil_fail(ANVIL_ERR_SHAPE, "batchnorm: num_batches_tracked must be an int64 scalar buffer");
    }
    if (isnan(n->fa[1]) && n->n_in != 4)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "batchnorm: momentum NAN (cumulative average) needs "
                          "num_batches_tracked");
    return anvil_infer_effect(g, n);
}

anvil_value anvil_batchnorm(anvil_graph *g, anvil_value x, anvil_value running_mean, anvil_value running_var,
                            anvil_value num_batches_tracked, anvil_value weight, anvil_value bias, float eps,
                            float momentum)
{
    if (!g)
        return ANVIL_NO_VALUE;
    anvil_value in[5] = {x, running_mean, running_var};
    int k = 3;
    if (weight != ANVIL_NO_VALUE)
        in[k++] = weight;
    if (bias != ANVIL_NO_VALUE)
        in[k++] = bias;
    anvil_node n = anvil_node_proto(OP_BATCHNORM, k, in);
    n.fa[0] = eps;
    n.fa[1] = momentum;
    n.ia[0] = 1; /* training; instantiate clears it for evaluation */
    n.ia[1] = weight != ANVIL_NO_VALUE;
    n.ia[2] = bias != ANVIL_NO_VALUE;
    anvil_value y = anvil_graph_add(g, &n);
    if (y == ANVIL_NO_VALUE)
        return y;
    anvil_value sin[4] = {x, running_mean, running_var, num_batches_tracked};
    anvil_node s = anvil_node_proto(OP_BATCHNORM_STATS, num_batches_tracked != ANVIL_NO_VALUE ? 4 : 3, sin);
    s.fa[0] = eps;
    s.fa[1] = momentum;
    if (anvil_graph_add(g, &s) == ANVIL_NO_VALUE)
        return ANVIL_NO_VALUE;
    return y;
}

/* ---- layer norm over the last ia[0] dims */

/* LAYERNORM: in (x[, weight][, bias]); ia[0] k, ia[1] has weight, ia[2] has bias. */
static anvil_status layernorm_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    char sx[96], sp[96];
    int k = n->ia[0];
    if (x->dtype != ANVIL_F32 || k < 1 || k > x->ndim)
        return anvil_fail(ANVIL_ERR_SHAPE, "layernorm: needs float32 with at least %d dims, got %s %s", k,
                          anvil_dtype_name(x->dtype), SHAPE_STR(sx, x));
    for (int d = x->ndim - k; d < x->ndim; d++)
        if (x->shape[d] <= 0)
            return anvil_fail(ANVIL_ERR_SHAPE, "layernorm: normalized dims of %s must be fixed", SHAPE_STR(sx, x));
    if (n->n_in != 1 + n->ia[1] + n->ia[2])
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "layernorm: %d inputs do not match the affine flags", n->n_in);
    if (!(n->fa[0] > 0.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "layernorm: eps must be positive, got %g", (double)n->fa[0]);
    for (int i = 1; i < n->n_in; i++) {
        const anvil_node *p = IN(g, n, i);
        bool ok = p->dtype == ANVIL_F32 && p->ndim == k;
        for (int d = 0; ok && d < k; d++)
            ok = p->shape[d] == x->shape[x->ndim - k + d];
        if (!ok)
            return anvil_fail(ANVIL_ERR_SHAPE, "layernorm: %s %s does not match the last %d dims of %s",
                              (i == 1 && n->ia[1]) ? "weight" : "bias", SHAPE_STR(sp, p), k, SHAPE_STR(sx, x));
    }
    anvil_copy_shape(n, x);
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

/* LAYERNORM_BWD: in (dy, x[, weight]) -> dx. */
static anvil_status layernorm_bwd_infer(const anvil_graph *g, anvil_node *n)
{
    anvil_copy_shape(n, IN(g, n, 1));
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

/* LAYERNORM_BWD_AFFINE: in (dy, x) -> the normalized shape; ia[3] 0 dweight, 1 dbias. */
static anvil_status layernorm_bwd_affine_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 1);
    int k = n->ia[0];
    n->ndim = k;
    for (int d = 0; d < k; d++)
        n->shape[d] = x->shape[x->ndim - k + d];
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

static void layernorm_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                          anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    bool has_w = n.ia[1], has_b = n.ia[2];
    if (need[0]) {
        anvil_value in[3] = {dy, n.in[0], has_w ? n.in[1] : 0};
        anvil_node b = anvil_node_proto(OP_LAYERNORM_BWD, has_w ? 3 : 2, in);
        b.fa[0] = n.fa[0];
        b.ia[0] = n.ia[0];
        b.ia[1] = has_w;
        dx[0] = anvil_graph_add(g, &b);
    }
    anvil_value in[2] = {dy, n.in[0]};
    for (int k = 0; k < 2; k++) {
        int slot = k == 0 ? 1 : 1 + has_w;
        if (!(k == 0 ? has_w : has_b) || slot >= n.n_in || !need[slot])
            continue;
        anvil_node b = anvil_node_proto(OP_LAYERNORM_BWD_AFFINE, 2, in);
        b.fa[0] = n.fa[0];
        b.ia[0] = n.ia[0];
        b.ia[3] = k;
        dx[slot] = anvil_graph_add(g, &b);
    }
}

anvil_value anvil_layernorm(anvil_graph *g, anvil_value x, int n_normalized_dims, anvil_value weight,
                            anvil_value bias, float eps)
{
    if (!g)
        return ANVIL_NO_VALUE;
    anvil_value in[3] = {x};
    int k = 1;
    if (weight != ANVIL_NO_VALUE)
        in[k++] = weight;
    if (bias != ANVIL_NO_VALUE)
        in[k++] = bias;
    anvil_node n = anvil_node_proto(OP_LAYERNORM, k, in);
    n.fa[0] = eps;
    n.ia[0] = n_normalized_dims;
    n.ia[1] = weight != ANVIL_NO_VALUE;
    n.ia[2] = bias != ANVIL_NO_VALUE;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_batchnorm = {"batchnorm", 3, 5, 0, batchnorm_infer, batchnorm_vjp};
const anvil_opdef anvil_opdef_batchnorm_bwd = {"batchnorm_bwd", 4, 5, 0, batchnorm_bwd_infer, NULL};
const anvil_opdef anvil_opdef_batchnorm_bwd_affine = {"batchnorm_bwd_affine", 4, 4, 0,
                                                      batchnorm_bwd_affine_infer, NULL};
const anvil_opdef anvil_opdef_batchnorm_stats = {"batchnorm_stats", 3, 4, OPF_EFFECT, batchnorm_stats_infer,
                                                 NULL};
const anvil_opdef anvil_opdef_layernorm = {"layernorm", 1, 3, 0, layernorm_infer, layernorm_vjp};
const anvil_opdef anvil_opdef_layernorm_bwd = {"layernorm_bwd", 2, 3, 0, layernorm_bwd_infer, NULL};
const anvil_opdef anvil_opdef_layernorm_bwd_affine = {"layernorm_bwd_affine", 2, 2, 0,
                                                      layernorm_bwd_affine_infer, NULL};
