/* norm.c — batch and layer normalization (torch.nn.functional's semantics).
 *
 * BatchNorm is five kinds of node (graph.h): BATCHNORM_MOMENTS (the batch's mean,
 * 1/std and unbiased variance, from one sweep over x), BATCHNORM (y, from the moments or,
 * in evaluation, the running statistics), BATCHNORM_STATS (an effect node that updates
 * the running statistics in place from the same moments), and for the backward pass
 * BATCHNORM_BWD_COEF (one sweep over x and dy: the per-channel coefficients of dx and the
 * affine gradients), BATCHNORM_BWD (dx) and BATCHNORM_BWD_AFFINE (dweight or dbias).
 * The trainer makes every effect node of a model graph a root of its training program;
 * evaluation programs never reach it, and anvil_graph_instantiate(training = false)
 * switches the batch-norm ops to the running statistics. */
#include "graph/ops/ops.h"

#include <math.h>

enum { BN_X, BN_MEAN, BN_VAR, BN_W }; /* BATCHNORM inputs; bias, then the moments follow */

static anvil_status bn_check_channel(const anvil_graph *g, const anvil_node *n, int i, int64_t C, const char *what,
                                     const char *op)
{
    const anvil_node *p = IN(g, n, i);
    char sp[96];
    if (p->dtype != ANVIL_F32 || p->ndim != 1 || p->shape[0] != C)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: %s must be float32 [%lld], got %s %s", op, what, (long long)C,
                          anvil_dtype_name(p->dtype), SHAPE_STR(sp, p));
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

/* a [C, cols] float32 per-channel table (moments, coefficients) */
static anvil_status bn_check_table(const anvil_node *t, int64_t C, int cols, const char *what, const char *op)
{
    char st[96];
    if (t->dtype != ANVIL_F32 || t->ndim != 2 || t->shape[0] != C || t->shape[1] != cols)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: %s must be float32 [%lld, %d], got %s %s", op, what, (long long)C,
                          cols, anvil_dtype_name(t->dtype), SHAPE_STR(st, t));
    return ANVIL_OK;
}

static void bn_table_shape(anvil_node *n, int64_t C, int cols)
{
    n->ndim = 2;
    n->shape[0] = C;
    n->shape[1] = cols;
    n->dtype = ANVIL_F32;
}

/* BATCHNORM_MOMENTS: in (x) -> [C, 4]. */
static anvil_status batchnorm_moments_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    ANVIL_TRY(bn_check_x(x, "batchnorm"));
    bn_table_shape(n, x->shape[1], ANVIL_BN_MOMENTS_COLS);
    return ANVIL_OK;
}

/* BATCHNORM: in (x, running_mean, running_var[, weight][, bias], moments). */
static anvil_status batchnorm_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0);
    ANVIL_TRY(bn_check_x(x, "batchnorm"));
    if (n->n_in != 4 + n->ia[1] + n->ia[2])
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "batchnorm: %d inputs do not match the affine flags", n->n_in);
    if (!(n->fa[0] > 0.0f))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "batchnorm: eps must be positive, got %g", (double)n->fa[0]);
    int64_t C = x->shape[1];
    ANVIL_TRY(bn_check_channel(g, n, BN_MEAN, C, "running_mean", "batchnorm"));
    ANVIL_TRY(bn_check_channel(g, n, BN_VAR, C, "running_var", "batchnorm"));
    for (int i = BN_W; i < n->n_in - 1; i++)
        ANVIL_TRY(bn_check_channel(g, n, i, C, (i == BN_W && n->ia[1]) ? "weight" : "bias", "batchnorm"));
    ANVIL_TRY(bn_check_table(IN(g, n, n->n_in - 1), C, ANVIL_BN_MOMENTS_COLS, "the moments", "batchnorm"));
    anvil_copy_shape(n, x);
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

/* BATCHNORM_BWD_COEF: in (dy, x, running_mean, running_var[, weight]) -> [C, 8]. */
static anvil_status batchnorm_bwd_coef_infer(const anvil_graph *g, anvil_node *n)
{
    bn_table_shape(n, IN(g, n, 1)->shape[1], ANVIL_BN_COEF_COLS);
    return ANVIL_OK;
}

/* BATCHNORM_BWD: in (dy, x, coef) -> dx. */
static anvil_status batchnorm_bwd_infer(const anvil_graph *g, anvil_node *n)
{
    anvil_copy_shape(n, IN(g, n, 1));
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

/* BATCHNORM_BWD_AFFINE: in (coef) -> [C]: ia[3] 0 dweight, 1 dbias. */
static anvil_status batchnorm_bwd_affine_infer(const anvil_graph *g, anvil_node *n)
{
    n->ndim = 1;
    n->shape[0] = IN(g, n, 0)->shape[0];
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

static void batchnorm_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                          anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    bool has_w = n.ia[1], has_b = n.ia[2];
    int slot[2] = {BN_W, BN_W + has_w};
    bool want[2] = {has_w && need[slot[0]], has_b && need[slot[1]]};
    if (!need[BN_X] && !want[0] && !want[1])
        return;
    /* one sweep over dy and x for dx and both affine gradients */
    anvil_value cin[5] = {dy, n.in[BN_X], n.in[BN_MEAN], n.in[BN_VAR], has_w ? n.in[BN_W] : 0};
    anvil_node cn = anvil_node_proto(OP_BATCHNORM_BWD_COEF, has_w ? 5 : 4, cin);
    cn.fa[0] = n.fa[0];
    cn.ia[0] = n.ia[0];
    cn.ia[1] = has_w;
    anvil_value coef = anvil_graph_add(g, &cn);
    if (coef == ANVIL_NO_VALUE)
        return;
    if (need[BN_X]) {
        anvil_value in[3] = {dy, n.in[BN_X], coef};
        anvil_node b = anvil_node_proto(OP_BATCHNORM_BWD, 3, in);
        b.ia[0] = n.ia[0];
        dx[BN_X] = anvil_graph_add(g, &b);
    }
    for (int k = 0; k < 2; k++) {
        if (!want[k])
            continue;
        anvil_node b = anvil_node_proto(OP_BATCHNORM_BWD_AFFINE, 1, &coef);
        b.ia[3] = k;
        dx[slot[k]] = anvil_graph_add(g, &b);
    }
    /* running_mean/var: no gradient (buffers; in training they do not reach y); the
     * moments: none either (dx above is the gradient through them) */
}

/* BATCHNORM_STATS: in (moments, running_mean, running_var[, num_batches_tracked int64 []]). */
static anvil_status batchnorm_stats_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *mo = IN(g, n, 0);
    int64_t C = mo->ndim == 2 ? mo->shape[0] : -1;
    ANVIL_TRY(bn_check_table(mo, C, ANVIL_BN_MOMENTS_COLS, "the moments", "batchnorm_stats"));
    ANVIL_TRY(bn_check_channel(g, n, 1, C, "running_mean", "batchnorm_stats"));
    ANVIL_TRY(bn_check_channel(g, n, 2, C, "running_var", "batchnorm_stats"));
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
    anvil_node mn = anvil_node_proto(OP_BATCHNORM_MOMENTS, 1, &x);
    mn.fa[0] = eps;
    mn.ia[0] = 1; /* training; instantiate clears it for evaluation */
    anvil_value moments = anvil_graph_add(g, &mn);
    if (moments == ANVIL_NO_VALUE)
        return ANVIL_NO_VALUE;
    anvil_value in[6] = {x, running_mean, running_var};
    int k = 3;
    if (weight != ANVIL_NO_VALUE)
        in[k++] = weight;
    if (bias != ANVIL_NO_VALUE)
        in[k++] = bias;
    in[k++] = moments;
    anvil_node n = anvil_node_proto(OP_BATCHNORM, k, in);
    n.fa[0] = eps;
    n.fa[1] = momentum;
    n.ia[0] = 1; /* training; instantiate clears it for evaluation */
    n.ia[1] = weight != ANVIL_NO_VALUE;
    n.ia[2] = bias != ANVIL_NO_VALUE;
    anvil_value y = anvil_graph_add(g, &n);
    if (y == ANVIL_NO_VALUE)
        return y;
    anvil_value sin[4] = {moments, running_mean, running_var, num_batches_tracked};
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

const anvil_opdef anvil_opdef_batchnorm_moments = {"batchnorm_moments", 1, 1, 0, batchnorm_moments_infer, NULL};
const anvil_opdef anvil_opdef_batchnorm = {"batchnorm", 4, 6, 0, batchnorm_infer, batchnorm_vjp};
const anvil_opdef anvil_opdef_batchnorm_stats = {"batchnorm_stats", 3, 4, OPF_EFFECT, batchnorm_stats_infer,
                                                 NULL};
const anvil_opdef anvil_opdef_batchnorm_bwd_coef = {"batchnorm_bwd_coef", 4, 5, 0, batchnorm_bwd_coef_infer, NULL};
const anvil_opdef anvil_opdef_batchnorm_bwd = {"batchnorm_bwd", 3, 3, 0, batchnorm_bwd_infer, NULL};
const anvil_opdef anvil_opdef_batchnorm_bwd_affine = {"batchnorm_bwd_affine", 1, 1, 0,
                                                      batchnorm_bwd_affine_infer, NULL};
const anvil_opdef anvil_opdef_layernorm = {"layernorm", 1, 3, 0, layernorm_infer, layernorm_vjp};
const anvil_opdef anvil_opdef_layernorm_bwd = {"layernorm_bwd", 2, 3, 0, layernorm_bwd_infer, NULL};
const anvil_opdef anvil_opdef_layernorm_bwd_affine = {"layernorm_bwd_affine", 2, 2, 0,
                                                      layernorm_bwd_affine_infer, NULL};
