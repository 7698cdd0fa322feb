/* autodiff.c — reverse-mode differentiation as a graph transformation: walk the nodes
 * from the loss back, asking each op's VJP to add the nodes of its input gradients, and
 * summing the contributions a value receives from several consumers. */
#include "graph/ops/ops.h"

anvil_status anvil_autodiff(anvil_graph *g, anvil_value loss, int n, const anvil_value *wrt,
                            anvil_value *grads)
{
    ANVIL_TRY(anvil_graph_status(g));
    if (!anvil_graph_valid(g, loss))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "gradient: loss is not a value of this graph");
    if (g->nodes[loss].ndim != 0)
        return anvil_fail(ANVIL_ERR_SHAPE, "gradient: the loss must be a scalar");
    for (int i = 0; i < n; i++)
        if (!anvil_graph_valid(g, wrt[i]) || g->nodes[wrt[i]].ndim < 0)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "gradient: wrt[%d] is not a value of this graph", i);

    int top = loss + 1; /* only nodes up to the loss matter */
    bool *reach = anvil_xcalloc((size_t)top, sizeof *reach, "autodiff flags");
    anvil_value *grad = anvil_xmalloc((size_t)top * sizeof *grad, "autodiff gradients");
    if (!reach || !grad) {
        free(reach);
        free(grad);
        return ANVIL_ERR_OOM;
    }
    /* reach[v]: v depends on some wrt value, so gradients flow through it */
    for (int i = 0; i < n; i++)
        if (wrt[i] < top)
            reach[wrt[i]] = true;
    for (int v = 0; v < top; v++) {
        grad[v] = ANVIL_NO_VALUE;
        for (int i = 0; i < g->nodes[v].n_in && !reach[v]; i++)
            reach[v] = reach[g->nodes[v].in[i]];
    }

    anvil_status st = ANVIL_OK;
    if (reach[loss])
        grad[loss] = anvil_fill(g, 0, NULL, 1.0f);
    for (int v = loss; v >= 0 && g->status == ANVIL_OK; v--) {
        if (grad[v] == ANVIL_NO_VALUE || g->nodes[v].n_in == 0)
            continue;
        const anvil_node nv = g->nodes[v];
        const anvil_opdef *def = anvil_opdef_of(nv.op);
        bool need[ANVIL_MAX_IN] = {false};
        bool any = false;
        for (int i = 0; i < nv.n_in; i++)
            any |= need[i] = reach[nv.in[i]];
        if (!any)
            continue;
        if (!def->vjp) {
            anvil_graph_fail(g, ANVIL_ERR_UNSUPPORTED, "gradient: op '%s' has no gradient", def->name);
            break;
        }
        anvil_value dx[ANVIL_MAX_IN];
        for (int i = 0; i < ANVIL_MAX_IN; i++)
            dx[i] = ANVIL_NO_VALUE;
        def->vjp(g, v, grad[v], need, dx);
        for (int i = 0; i < nv.n_in; i++) {
            anvil_value u = nv.in[i];
            if (dx[i] == ANVIL_NO_VALUE || !need[i])
                continue;
            grad[u] = grad[u] == ANVIL_NO_VALUE ? dx[i] : anvil_add(g, grad[u], dx[i]);
        }
    }
    st = anvil_graph_status(g);
    for (int i = 0; i < n && st == ANVIL_OK; i++) {
        anvil_value w = wrt[i];
        grads[i] = (w < top) ? grad[w] : ANVIL_NO_VALUE;
        if (grads[i] == ANVIL_NO_VALUE) {
            const anvil_node *wn = &g->nodes[w];
            grads[i] = anvil_fill(g, wn->ndim, wn->shape, 0.0f);
        }
        st = anvil_graph_status(g);
    }
    free(reach);
    free(grad);
    return st;
}

anvil_value anvil_gradient(anvil_graph *g, anvil_value loss, anvil_value wrt)
{
    anvil_value d = ANVIL_NO_VALUE;
    if (anvil_autodiff(g, loss, 1, &wrt, &d) != ANVIL_OK)
        return ANVIL_NO_VALUE;
    return d;
}
