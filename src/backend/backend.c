/* backend.c — choosing a backend for a device. */
#include "backend/backend.h"

anvil_status anvil_backend_open(anvil_device dev, int verbose, anvil_backend **out)
{
    *out = NULL;
    switch (dev) {
    case ANVIL_DEVICE_CPU:
        return anvil_cpu_backend_open(out);
    case ANVIL_DEVICE_CUDA:
        return anvil_cuda_backend_open(out);
    case ANVIL_DEVICE_AUTO:
        if (anvil_cuda_available() && anvil_cuda_backend_open(out) == ANVIL_OK)
            return ANVIL_OK;
        if (verbose)
            fprintf(stderr, "anvil: no usable CUDA GPU (%s); using the CPU\n",
                    anvil_last_error()[0] ? anvil_last_error() : "none found");
        anvil_clear_error();
        return anvil_cpu_backend_open(out);
    }
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "unknown device %d", (int)dev);
}

void anvil_backend_close(anvil_backend *be)
{
    if (be)
        be->destroy(be);
}

#ifndef ANVIL_HAVE_CUDA
/* This build has no CUDA backend: say so, rather than pretend. */
anvil_status anvil_cuda_backend_open(anvil_backend **out)
{
    *out = NULL;
    return anvil_fail(ANVIL_ERR_DEVICE, "this build of Anvil has no CUDA backend (built without the CUDA toolkit)");
}

bool anvil_cuda_available(void)
{
    anvil_fail(ANVIL_ERR_DEVICE, "this build of Anvil has no CUDA backend");
    return false;
}
#endif
