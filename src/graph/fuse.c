/* fuse.c — the fusion pass, run on a concrete graph before memory planning.
 *
 * linear + relu: when a LINEAR's output is read only by one ReLU and by ReLU backward
 * ops, the ReLU moves into the product's epilogue (cuBLASLt's RELU_BIAS on the GPU): the
 * LINEAR then holds relu(x w^T + b), the ReLU node becomes a view of it, and the backward
 * ops, which test x > 0, get the same answer from relu(x) > 0.  One kernel and one
 * activation buffer fewer per layer. */
#include "graph/ops/ops.h"

int anvil_fuse(anvil_graph *g, int n_keep, const anvil_value *keep)
{
    int n = g->n, fused = 0;
    int *uses = anvil_xcalloc((size_t)n, sizeof *uses, "fusion");
    int *relu = anvil_xmalloc((size_t)n * sizeof *relu, "fusion");
    if (!uses || !relu) {
        free(uses);
        free(relu);
        return 0; /* fusion is an optimization: without memory, skip it */
    }
    /* per value: how many readers, and the forward ReLU reading it (-1 none) */
    for (int v = 0; v < n; v++)
        relu[v] = -1;
    for (int v = 0; v < n; v++) {
        const anvil_node *nd = &g->nodes[v];
        for (int i = 0; i < nd->n_in; i++)
            uses[nd->in[i]]++;
        if (nd->op == OP_ACT && nd->ia[0] == ACT_RELU)
            relu[nd->in[0]] = v;
    }
    for (int i = 0; i < n_keep; i++)
        uses[keep[i]] += n; /* a fetched value keeps its meaning */
    for (int v = 0; v < n; v++) {
        anvil_node *lin = &g->nodes[v];
        if (lin->op != OP_LINEAR || lin->ia[1] != 0 || relu[v] < 0)
            continue;
        int readers = 1; /* the ReLU */
        for (int u = 0; u < n; u++) {
            const anvil_node *c = &g->nodes[u];
            if (c->op == OP_ACT_BWD && c->ia[0] == ACT_RELU && c->in[1] == v && c->in[0] != v)
                readers++;
        }
        if (readers != uses[v])
            continue;
        lin->ia[1] = 1; /* epilogue: relu */
        g->nodes[relu[v]].op = OP_RESHAPE;
        fused++;
    }
    free(uses);
    free(relu);
    return fused;
}
