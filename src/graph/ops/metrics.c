/* metrics.c — loss and accuracy accumulated on the device; read only when asked. */
#include "graph/ops/ops.h"

static anvil_status accum_infer(const anvil_graph *g, anvil_node *n)
{
    if (IN(g, n, 0)->ndim != 0)
        return anvil_fail(ANVIL_ERR_SHAPE, "%s: the loss must be a scalar", anvil_op_name(n->op));
    return anvil_infer_effect(g, n);
}

const anvil_opdef anvil_opdef_accum_loss = {"accum_loss", 1, 1, OPF_EFFECT, accum_infer, NULL};
const anvil_opdef anvil_opdef_accum_eval = {"accum_eval", 2, 3, OPF_EFFECT, accum_infer, NULL};
