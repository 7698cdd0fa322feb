/* optim.c — optimizer updates and step bookkeeping as graph nodes.  They read the flat
 * parameter, gradient and state arenas and the device-resident hyperparameters. */
#include "graph/ops/ops.h"

const anvil_opdef anvil_opdef_sgd = {"sgd", 0, 0, OPF_EFFECT, anvil_infer_effect, NULL};
const anvil_opdef anvil_opdef_adam = {"adam", 0, 0, OPF_EFFECT, anvil_infer_effect, NULL};
const anvil_opdef anvil_opdef_rmsprop = {"rmsprop", 0, 0, OPF_EFFECT, anvil_infer_effect, NULL};
const anvil_opdef anvil_opdef_adagrad = {"adagrad", 0, 0, OPF_EFFECT, anvil_infer_effect, NULL};
const anvil_opdef anvil_opdef_adadelta = {"adadelta", 0, 0, OPF_EFFECT, anvil_infer_effect, NULL};
const anvil_opdef anvil_opdef_nadam = {"nadam", 0, 0, OPF_EFFECT, anvil_infer_effect, NULL};
const anvil_opdef anvil_opdef_clip_norm = {"clip_norm", 0, 0, OPF_EFFECT, anvil_infer_effect, NULL};
const anvil_opdef anvil_opdef_step_end = {"step_end", 0, 1, OPF_EFFECT, anvil_infer_effect, NULL};
