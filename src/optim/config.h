/* config.h — optimizer configuration (internal): gradient-clipping checks, and the
 * optimizer update node and state slots the trainer builds from an optimizer config.
 * Names, parsing, defaults and anvil_optimizer_check are public (anvil.h). */
#ifndef ANVIL_OPTIM_CONFIG_H
#define ANVIL_OPTIM_CONFIG_H

#include "graph/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Checks the trainer config's gradient clipping: clip_grad_value and clip_grad_norm
 * finite and >= 0 (0: off), clip_norm_type > 0 (or infinity) when clipping by norm. */
anvil_status anvil_check_clipping(const anvil_trainer_config *c);

/* The optimizer update node of o (op and attributes as graph.h documents them; no
 * inputs yet).  Not for L-BFGS, which has no update node (lbfgs.c). */
anvil_node anvil_optimizer_node(const anvil_optimizer_config *o);

/* The optimizer state slots (n_params floats each) the update node of o uses
 * (0 for L-BFGS: its state is its own). */
int anvil_optimizer_slots(const anvil_optimizer_config *o);

#ifdef __cplusplus
}
#endif
#endif
