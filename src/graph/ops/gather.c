/* gather.c — a batch read from the device-resident dataset (the shape is set by the
 * trainer when it turns an input into a gather; nothing to infer). */
#include "graph/ops/ops.h"

const anvil_opdef anvil_opdef_gather = {"gather", 0, 0, 0, NULL, NULL};
