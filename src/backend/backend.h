/* backend.h — what a backend provides: memory, copies, and one kernel per op.
 * The CPU backend runs a program's steps in order; the CUDA backend captures them once
 * into a CUDA graph and replays it. */
#ifndef ANVIL_BACKEND_H
#define ANVIL_BACKEND_H

#include "graph/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef anvil_status (*anvil_kernel_fn)(const anvil_exec *ex, const anvil_step *s);


typedef struct anvil_backend anvil_backend;
struct anvil_backend {
    const char *name;
    anvil_device device;
    void *ctx;
    anvil_counters counters;
    const anvil_kernel_fn *kernels;   /* OP_COUNT entries; NULL = not implemented */
    anvil_status (*alloc)(anvil_backend *be, size_t bytes, void **out);
    void (*free)(anvil_backend *be, void *p);
    anvil_status (*upload)(anvil_backend *be, void *dst, const void *src, size_t bytes);
    anvil_status (*download)(anvil_backend *be, void *dst, const void *src, size_t bytes);
    anvil_status (*zero)(anvil_backend *be, void *dst, size_t bytes);
    /* Runs a program: every step's kernel, in order. */
    anvil_status (*run)(anvil_backend *be, anvil_program *p, const anvil_exec *ex);
    anvil_status (*sync)(anvil_backend *be);
    void (*program_release)(anvil_backend *be, anvil_program *p);
    void (*destroy)(anvil_backend *be);
};

/* Opens the backend for a device; AUTO picks CUDA when a GPU is usable, else the CPU
 * (saying so on stderr when verbose). */
anvil_status anvil_backend_open(anvil_device dev, int verbose, anvil_backend **out);
void anvil_backend_close(anvil_backend *be);

anvil_status anvil_cpu_backend_open(anvil_backend **out);
/* Defined by the CUDA backend when built with it; otherwise reports ANVIL_ERR_DEVICE. */
anvil_status anvil_cuda_backend_open(anvil_backend **out);
bool anvil_cuda_available(void);

/* Kernel tables.  Weak references: an op a backend lacks is NULL in its table and a
 * program that needs it fails to compile with ANVIL_ERR_UNSUPPORTED naming the op. */
extern const anvil_kernel_fn anvil_cpu_kernels[OP_COUNT];
extern const anvil_kernel_fn anvil_cuda_kernels[OP_COUNT];

#ifdef __cplusplus
}
#endif
#endif
