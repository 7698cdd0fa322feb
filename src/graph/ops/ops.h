/* ops.h — helpers shared by the op definitions in this folder. */
#ifndef ANVIL_OPS_H
#define ANVIL_OPS_H

#include "graph/graph.h"

/* A symbolic element count k * B^bpow (B = the batch dimension). */
static inline void anvil_sym_numel(int ndim, const int64_t *shape, int64_t *k, int *bpow)
{
    *k = 1;
    *bpow = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == ANVIL_BATCH)
            (*bpow)++;
        else
            *k *= shape[i];
    }
}

static inline bool anvil_same_shape(const anvil_node *a, const anvil_node *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

static inline void anvil_copy_shape(anvil_node *dst, const anvil_node *src)
{
    dst->ndim = src->ndim;
    for (int i = 0; i < src->ndim; i++)
        dst->shape[i] = src->shape[i];
}

/* Input node i of n (valid during infer: inputs precede n). */
#define IN(g, n, i) (&(g)->nodes[(n)->in[i]])

#define SHAPE_STR(buf, node) anvil_shape_str(buf, sizeof buf, (node)->ndim, (node)->shape)

/* Builders used by VJPs. */
anvil_value anvil_sum_to(anvil_graph *g, anvil_value x, const anvil_node *like);
anvil_value anvil_broadcast_to(anvil_graph *g, anvil_value x, int ndim, const int64_t *shape,
                               bool divide);
anvil_value anvil_fill(anvil_graph *g, int ndim, const int64_t *shape, float value);
anvil_value anvil_reshape_like(anvil_graph *g, anvil_value x, anvil_value like);

anvil_status anvil_infer_float_same(const anvil_graph *g, anvil_node *n);
anvil_status anvil_infer_scalar(const anvil_graph *g, anvil_node *n);
anvil_status anvil_infer_effect(const anvil_graph *g, anvil_node *n);

#endif
