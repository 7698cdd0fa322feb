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


/* Vector operations on flat float arrays in the backend's memory, for optimizers whose
 * loop runs on the host (L-BFGS, src/optim/lbfgs.c).  Each op runs in order with the
 * backend's other work (on CUDA: on its stream, never synchronizing); a result stays in
 * device memory until the caller downloads it.  Reductions are deterministic (fixed
 * chunks / a fixed grid, partials added in a fixed order) and accumulate in double.
 *
 * The coefficient c of an op is (float)alpha, or, given a device scalar ca,
 * (float)alpha * (ca[0] - cb[0]) in float32 (cb NULL: ca[0] alone) — so a scalar that
 * lives on the device (an L-BFGS alpha_i, rho_i, H_diag) scales a vector without a
 * round trip to the host. */
typedef enum {
    ANVIL_VEC_COPY,    /* y[i] = x[i]  (x and y must not partially overlap) */
    ANVIL_VEC_SCALE,   /* y[i] = x[i] * c  (torch.mul(x, c); y may be x) */
    ANVIL_VEC_AXPY,    /* y[i] = fmaf(c, x[i], y[i])  (y.add_(x, alpha=c): torch fuses it) */
    ANVIL_VEC_DOT,     /* out[0] = (float)sum x[i]*y[i]; then, given ca, out[0] *= c in float32 */
    ANVIL_VEC_ABS_MAX, /* out[0] = max |x[i]|; a NaN anywhere gives NaN (torch's max); 0 if n == 0 */
    ANVIL_VEC_ABS_SUM, /* out[0] = (float)sum |x[i]| */
    ANVIL_VEC_RDIV,    /* out[0] = c / x[0] in float32 (n ignored): 1/ys, ys/yy */
    ANVIL_VEC_KINDS
} anvil_vec_kind;

typedef struct {
    anvil_vec_kind kind;
    int64_t n;          /* elements of x (and y) */
    const float *x;
    float *y;           /* COPY/SCALE/AXPY: the output; DOT: the second operand (read only) */
    float *out;         /* DOT/ABS_MAX/ABS_SUM/RDIV: one device float */
    double alpha;       /* the coefficient's host part (1 when unused) */
    const float *ca, *cb; /* optional device scalars of the coefficient */
} anvil_vec_op;

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
    /* A batch's upload: like upload, but the copy overlaps the device's earlier work (CUDA:
     * a copy stream into a device landing buffer, then an on-device copy into dst after
     * the earlier work).  NULL: the backend has only upload. */
    anvil_status (*upload_batch)(anvil_backend *be, void *dst, const void *src, size_t bytes);
    anvil_status (*download)(anvil_backend *be, void *dst, const void *src, size_t bytes);
    anvil_status (*zero)(anvil_backend *be, void *dst, size_t bytes);
    /* Runs a program: every step's kernel, in order. */
    anvil_status (*run)(anvil_backend *be, anvil_program *p, const anvil_exec *ex);
    anvil_status (*sync)(anvil_backend *be);
    void (*program_release)(anvil_backend *be, anvil_program *p);
    void (*destroy)(anvil_backend *be);
    /* One vector operation (above); NULL where a backend has none. */
    anvil_status (*vec)(anvil_backend *be, const anvil_vec_op *op);
    /* Scratch bytes a node's kernel wants in the planned arena (anvil_step.ws), asked
     * once when a program is planned; NULL: no kernel of this backend wants any. */
    anvil_workspace_fn workspace;
    /* Runs independent steps of a program concurrently (CUDA's capture lanes): memory
     * plans then avoid reuse that would order independent steps (plan.c). */
    bool concurrent;
};

/* Opens the backend for a device; AUTO picks CUDA when a GPU is usable, else the CPU
 * (saying so on stderr when verbose). */
anvil_status anvil_backend_open(anvil_device dev, int verbose, anvil_backend **out);
void anvil_backend_close(anvil_backend *be);

anvil_status anvil_cpu_backend_open(anvil_backend **out);
/* cpu/blas_arch.c: a one-time note on stderr when OpenBLAS runs generic kernels on a CPU
 * it did not recognize (see anvil_blas_coretype_advice). */
void anvil_blas_note_once(void);
/* The backends' vec members (src/backend/cpu/vec.c, src/backend/cuda/vec.cu). */
anvil_status anvil_cpu_vec(anvil_backend *be, const anvil_vec_op *op);
anvil_status anvil_cuda_vec(anvil_backend *be, const anvil_vec_op *op);
/* Checks an op's kind, n and pointers (for the implementations). */
anvil_status anvil_vec_check(const anvil_backend *be, const anvil_vec_op *op);
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
