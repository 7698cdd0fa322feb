/* fuse.c — the fusion pass, run on a concrete graph before memory planning.
 *
 * linear + relu: when a LINEAR's output is read only by one ReLU and by ReLU backward
 * ops, the ReLU moves into the product's epilogue (cuBLASLt's RELU_BIAS on the GPU): the
 * LINEAR then holds relu(x w^T + b), the ReLU node becomes a view of it, and the backward
 * ops, which test x > 0, get the same answer from relu(x) > 0.  One kernel and one
 * activation buffer fewer per layer.
 *
 * conv2d + relu: the same, the ReLU applied in the convolution's bias pass (one pass over
 * the output instead of two on the GPU, where the bias was cuDNN's AddTensor).
 * (batchnorm + relu, the ReLU in batch norm's elementwise pass, was measured and
 * dropped: ResNet-18's step took 0.39 ms longer with it on the same H200, 20.68 vs 20.29
 * ms, although it saves one pass over each activation.)
 *
 * linear + gelu (approximate="tanh"): when the GELU is a LINEAR's only reader, the GELU
 * moves into the epilogue (cuBLASLt's GELU_BIAS) the same way.  GELU's backward needs
 * the product before the activation, so this happens in programs without it (evaluation,
 * inference), never in training.  (PyTorch's default exact-erf GELU has no epilogue.)
 *
 * max-pool backward + ReLU backward: when a max pool reads relu(v) and the pool's
 * backward is read only by the ReLU backward that tests v, the pool's backward applies
 * the mask itself (MAXPOOL2D_BWD ia[6] = 1: the gradient reaches a window's max only where
 * that max is > 0, i.e. where v > 0) and the ReLU backward becomes a view of it: one pass
 * over the pre-pool gradient instead of two (the cnn's two layers: ~17 µs of its GPU
 * step's critical path).  Same values bit for bit: every other position of a window gets
 * 0 from the pool either way.
 *
 * product + ReLU backward: a MATMUL read only by a ReLU backward (a hidden layer's input
 * gradient, dy W) takes the backward's x as a third input and zeroes its result where
 * x <= 0 (own CUDA kernel: in its epilogue; cuBLASLt: a pass after it); the ReLU backward
 * becomes a view.  Same values bit for bit (a select either way). */
#include "graph/ops/ops.h"

int anvil_fuse(anvil_graph *g, int n_roots, const anvil_value *roots, const anvil_persist_map *pm, int n_keep,
               const anvil_value *keep)
{
    int n = g->n, fused = 0;
    int *uses = anvil_xcalloc((size_t)n, sizeof *uses, "fusion");
    int *relu = anvil_xmalloc((size_t)n * sizeof *relu, "fusion");
    int *gelu = anvil_xmalloc((size_t)n * sizeof *gelu, "fusion");
    bool *needed = anvil_xcalloc((size_t)n, sizeof *needed, "fusion");
    if (!uses || !relu || !gelu || !needed) {
        free(uses);
        free(relu);
        free(gelu);
        free(needed);
        return 0; /* fusion is an optimization: without memory, skip it */
    }
    /* per value: how many readers in this program, and the forward ReLU / tanh-GELU
     * reading it (-1 none); nodes of other programs of the same graph do not count */
    anvil_mark_needed(g, n_roots, roots, pm, n_keep, keep, needed);
    for (int v = 0; v < n; v++)
        relu[v] = gelu[v] = -1;
    for (int v = 0; v < n; v++) {
        const anvil_node *nd = &g->nodes[v];
        if (!needed[v])
            continue;
        for (int i = 0; i < nd->n_in; i++)
            uses[nd->in[i]]++;
        if (nd->op == OP_ACT && nd->ia[0] == ACT_RELU)
            relu[nd->in[0]] = v;
        if (nd->op == OP_ACT && nd->ia[0] == ACT_GELU_TANH)
            gelu[nd->in[0]] = v;
    }
    for (int i = 0; i < n_keep; i++)
        uses[keep[i]] += n; /* a fetched value keeps its meaning */
    for (int v = 0; v < n; v++) {
        anvil_node *lin = &g->nodes[v];
        /* conv2d keeps the epilogue flag in ia[6], linear in ia[1] */
        bool conv = lin->op == OP_CONV2D && lin->ia[6] == 0;
        if (!conv && (lin->op != OP_LINEAR || lin->ia[1] != 0))
            continue;
        if (!conv && gelu[v] >= 0 && uses[v] == 1) {
            lin->ia[1] = 2; /* epilogue: gelu (tanh) */
            g->nodes[gelu[v]].op = OP_RESHAPE;
            fused++;
            continue;
        }
        if (relu[v] < 0)
            continue;
        int readers = 1; /* the ReLU */
        for (int u = 0; u < n; u++) {
            const anvil_node *c = &g->nodes[u];
            if (needed[u] && c->op == OP_ACT_BWD && c->ia[0] == ACT_RELU && c->in[1] == v && c->in[0] != v)
                readers++;
        }
        if (readers != uses[v])
            continue;
        lin->ia[conv ? 6 : 1] = 1; /* epilogue: relu */
        g->nodes[relu[v]].op = OP_RESHAPE;
        fused++;
    }
    /* a ReLU backward (dy, v) whose dy has no other reader: into dy's producer */
    for (int u = 0; u < n; u++) {
        anvil_node *ab = &g->nodes[u];
        if (!needed[u] || ab->op != OP_ACT_BWD || ab->ia[0] != ACT_RELU || ab->n_in != 2 ||
            uses[ab->in[0]] != 1 || ab->in[1] == ab->in[0])
            continue;
        anvil_node *src = &g->nodes[ab->in[0]];
        int v = ab->in[1];
        if (src->op == OP_MAXPOOL2D_BWD && src->ia[6] == 0) {
            /* the pool's input is relu(v): a ReLU of v, or the view of v left by the
             * epilogue fusion above */
            const anvil_node *px = &g->nodes[src->in[1]], *pv = &g->nodes[v];
            bool epilogue = (pv->op == OP_LINEAR && pv->ia[1] == 1) || (pv->op == OP_CONV2D && pv->ia[6] == 1);
            if (px->in[0] != v || !((px->op == OP_ACT && px->ia[0] == ACT_RELU) || (px->op == OP_RESHAPE && epilogue)))
                continue;
            src->ia[6] = 1;
        } else if (src->op == OP_MATMUL && src->n_in == 2) {
            src->in[2] = v;
            src->n_in = 3;
        } else {
            continue;
        }
        ab->op = OP_RESHAPE;
        ab->n_in = 1;
        fused++;
    }
    free(uses);
    free(relu);
    free(gelu);
    free(needed);
    return fused;
}
