/* matmul.c — matrix products.  MATMUL views each operand as a matrix by flattening all
 * but its last dimension: a [..., K] x b [K, N] -> [..., N]; with trans_a, a [R, M]
 * (flattened) gives M rows: a^T b -> [M, N] with b [R, N]; both transposed: 2-D only.
 * LINEAR is x w^T + b. */
#include "graph/ops/ops.h"

/* rows (symbolic) and columns of a value viewed as a matrix */
static void as_matrix(const anvil_node *x, int64_t *rows_k, int *rows_p, int64_t *cols)
{
    anvil_sym_numel(x->ndim - 1, x->shape, rows_k, rows_p);
    *cols = x->shape[x->ndim - 1];
}

static anvil_status matmul_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *a = IN(g, n, 0), *b = IN(g, n, 1);
    char sa[96], sb[96];
    if (a->ndim < 1 || b->ndim < 2 || a->dtype != ANVIL_F32 || b->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "matmul: needs float32 a with >= 1 dims and b with >= 2, got %s and %s",
                          SHAPE_STR(sa, a), SHAPE_STR(sb, b));
    bool ta = n->ia[0], tb = n->ia[1];
    int64_t ark, acols, brk, bcols;
    int arp, brp;
    as_matrix(a, &ark, &arp, &acols);
    as_matrix(b, &brk, &brp, &bcols);
    if (tb && (b->ndim != 2))
        return anvil_fail(ANVIL_ERR_SHAPE, "matmul: a transposed b must be 2-D, got %s", SHAPE_STR(sb, b));
    if (!ta) {
        /* a [..., K] x b' [K, N] */
        int64_t k_b = tb ? b->shape[1] : b->shape[0], nb = tb ? b->shape[0] : b->shape[1];
        if (b->ndim != 2 || acols != k_b)
            return anvil_fail(ANVIL_ERR_SHAPE, "matmul: inner dimensions differ: %s x %s%s",
                              SHAPE_STR(sa, a), SHAPE_STR(sb, b), tb ? "^T" : "");
        anvil_copy_shape(n, a);
        n->shape[n->ndim - 1] = nb;
    } else if (tb) {
        /* a^T [M, K] x b^T [K, N], both 2-D */
        if (a->ndim != 2 || a->shape[0] != b->shape[1])
            return anvil_fail(ANVIL_ERR_SHAPE, "matmul: inner dimensions differ: %s^T x %s^T",
                              SHAPE_STR(sa, a), SHAPE_STR(sb, b));
        n->ndim = 2;
        n->shape[0] = a->shape[1];
        n->shape[1] = b->shape[0];
    } else {
        /* a^T [M, R] x b [R, N] (b flattened like a) */
        if (ark != brk || arp != brp)
            return anvil_fail(ANVIL_ERR_SHAPE, "matmul: rows differ for a^T b: %s^T x %s",
                              SHAPE_STR(sa, a), SHAPE_STR(sb, b));
        n->ndim = 2;
        n->shape[0] = acols;
        n->shape[1] = bcols;
    }
    n->dtype = ANVIL_F32;
    if (n->n_in == 3) { /* the fused ReLU backward's mask (graph/fuse.c): the result's shape */
        const anvil_node *mk = IN(g, n, 2);
        bool same = mk->ndim == n->ndim && mk->dtype == ANVIL_F32;
        for (int i = 0; same && i < n->ndim; i++)
            same = mk->shape[i] == n->shape[i];
        if (!same)
            return anvil_fail(ANVIL_ERR_SHAPE, "matmul: mask %s is not the product's shape", SHAPE_STR(sa, mk));
    }
    return ANVIL_OK;
}

static void matmul_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                       anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    anvil_value a = n.in[0], b = n.in[1];
    bool ta = n.ia[0], tb = n.ia[1];
    if (!ta) {
        /* C = A B' with A [R, K]: dA = dC B'^T; dB' = A^T dC */
        if (need[0])
            dx[0] = anvil_matmul(g, dy, b, false, !tb);
        if (need[1])
            dx[1] = tb ? anvil_matmul(g, dy, a, true, false) : anvil_matmul(g, a, dy, true, false);
    } else if (tb) {
        /* C = A^T B^T with A [K, M], B [N, K]: dA = B^T dC^T; dB = dC^T A^T */
        if (need[0])
            dx[0] = anvil_matmul(g, b, dy, true, true);
        if (need[1])
            dx[1] = anvil_matmul(g, dy, a, true, true);
    } else {
        /* C = A^T B with A [R, M], B [R, N]: dA = B dC^T; dB = A dC */
        if (need[0])
            dx[0] = anvil_matmul(g, b, dy, false, true);
        if (need[1])
            dx[1] = anvil_matmul(g, a, dy, false, false);
    }
}

anvil_value anvil_matmul(anvil_graph *g, anvil_value a, anvil_value b, bool trans_a, bool trans_b)
{
    anvil_value in[2] = {a, b};
    anvil_node n = anvil_node_proto(OP_MATMUL, 2, in);
    n.ia[0] = trans_a;
    n.ia[1] = trans_b;
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_matmul = {"matmul", 2, 3, 0, matmul_infer, matmul_vjp};

static anvil_status linear_infer(const anvil_graph *g, anvil_node *n)
{
    const anvil_node *x = IN(g, n, 0), *w = IN(g, n, 1);
    char sx[96], sw[96], sb[96];
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return anvil_fail(ANVIL_ERR_SHAPE, "linear: input %s does not fit weight %s (needs [..., %lld])",
                          SHAPE_STR(sx, x), SHAPE_STR(sw, w), w->ndim == 2 ? (long long)w->shape[1] : -1LL);
    if (n->n_in == 3) {
        const anvil_node *b = IN(g, n, 2);
        if (b->ndim != 1 || b->shape[0] != w->shape[0])
            return anvil_fail(ANVIL_ERR_SHAPE, "linear: bias %s does not fit weight %s",
                              SHAPE_STR(sb, b), SHAPE_STR(sw, w));
    }
    anvil_copy_shape(n, x);
    n->shape[n->ndim - 1] = w->shape[0];
    n->dtype = ANVIL_F32;
    return ANVIL_OK;
}

static void linear_vjp(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                       anvil_value *dx)
{
    anvil_node n = g->nodes[self];
    if (need[0])
        dx[0] = anvil_matmul(g, dy, n.in[1], false, false);
    if (need[1])
        dx[1] = anvil_matmul(g, dy, n.in[0], true, false);
    if (n.n_in == 3 && need[2])
        dx[2] = anvil_sum_to(g, dy, &g->nodes[n.in[2]]);
}

anvil_value anvil_linear(anvil_graph *g, anvil_value x, anvil_value w, anvil_value b)
{
    anvil_value in[3] = {x, w, b};
    anvil_node n = anvil_node_proto(OP_LINEAR, b == ANVIL_NO_VALUE ? 2 : 3, in);
    return anvil_graph_add(g, &n);
}

const anvil_opdef anvil_opdef_linear = {"linear", 2, 3, 0, linear_infer, linear_vjp};
