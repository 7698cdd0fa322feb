/* source.c — inputs, parameters and buffers: the values a graph starts from. */
#include "graph/ops/ops.h"

#include <inttypes.h>

static anvil_value add_source(anvil_graph *g, anvil_op op, const char *what, const char *name,
                              anvil_dtype dtype, int ndim, const int64_t *shape,
                              anvil_init init, bool allow_batch)
{
    if (!g)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "graph is NULL"), ANVIL_NO_VALUE;
    if (ndim < 0 || ndim > ANVIL_MAX_DIMS || (ndim && !shape))
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "%s '%s': ndim %d outside 0..%d", what,
                                name ? name : "?", ndim, ANVIL_MAX_DIMS);
    if ((unsigned)dtype >= ANVIL_DTYPE_COUNT)
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "%s '%s': invalid dtype", what, name ? name : "?");
    anvil_node n = anvil_node_proto(op, 0, NULL);
    for (int i = 0; i < ndim; i++) {
        bool batch = shape[i] == ANVIL_BATCH && allow_batch && i == 0;
        if (shape[i] <= 0 && !batch)
            return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "%s '%s': dimension %d is %" PRId64
                                    " (must be positive%s)", what, name ? name : "?", i, shape[i],
                                    allow_batch ? ", or ANVIL_BATCH first" : "");
        n.shape[i] = shape[i];
    }
    n.ndim = ndim;
    n.dtype = dtype;
    n.init = init;
    n.name = (char *)name;
    return anvil_graph_add(g, &n);
}

anvil_value anvil_input(anvil_graph *g, const char *name, anvil_dtype dtype, int ndim,
                        const int64_t *shape)
{
    anvil_init none = {ANVIL_INIT_ZEROS, 0};
    return add_source(g, OP_INPUT, "input", name, dtype, ndim, shape, none, true);
}

anvil_value anvil_param(anvil_graph *g, const char *name, int ndim, const int64_t *shape,
                        anvil_init init)
{
    return add_source(g, OP_PARAM, "parameter", name, ANVIL_F32, ndim, shape, init, false);
}

anvil_value anvil_buffer(anvil_graph *g, const char *name, anvil_dtype dtype, int ndim,
                         const int64_t *shape, anvil_init init)
{
    return add_source(g, OP_BUFFER, "buffer", name, dtype, ndim, shape, init, false);
}

/* The shape was set by the builder; nothing to infer. */
const anvil_opdef anvil_opdef_input = {"input", 0, 0, OPF_SOURCE, NULL, NULL};
const anvil_opdef anvil_opdef_param = {"param", 0, 0, OPF_SOURCE | OPF_PERSISTENT, NULL, NULL};
const anvil_opdef anvil_opdef_buffer = {"buffer", 0, 0, OPF_SOURCE | OPF_PERSISTENT, NULL, NULL};
