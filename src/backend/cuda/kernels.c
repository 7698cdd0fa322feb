/* kernels.c — the CUDA backend's kernel table, one entry per op of oplist.h. */
#include "backend/backend.h"

#define ANVIL_X_DECL(E, n) \
    anvil_status anvil_cuda_##n(const anvil_exec *ex, const anvil_step *s) __attribute__((weak));
ANVIL_OPLIST(ANVIL_X_DECL)
#undef ANVIL_X_DECL

const anvil_kernel_fn anvil_cuda_kernels[OP_COUNT] = {
#define ANVIL_X_ENTRY(E, n) [OP_##E] = anvil_cuda_##n,
    ANVIL_OPLIST(ANVIL_X_ENTRY)
#undef ANVIL_X_ENTRY
};
