/* lbfgs.h — torch.optim.LBFGS (internal): the algorithm of its step(closure), strong-Wolfe
 * line search included, over one flat float array of parameters and one of gradients in
 * a backend's memory.  Vectors and the two-loop recursion's scalars stay on the device
 * (backend vec ops); the host reads back only the scalars torch's control flow branches
 * on (ys, gtd, max |g|, ...).  All device memory is allocated once, by create. */
#ifndef ANVIL_LBFGS_H
#define ANVIL_LBFGS_H

#include "backend/backend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* torch's LBFGS arguments: lr 1, max_iter 20, max_eval 0 (= max_iter * 5 / 4, torch's
 * None), tolerance_grad 1e-7, tolerance_change 1e-9, history_size 100, line_search_fn
 * None (strong_wolfe false) or "strong_wolfe". */
typedef struct {
    float lr;
    int max_iter, max_eval;
    float tolerance_grad, tolerance_change;
    int history_size;
    bool strong_wolfe;
} anvil_lbfgs_options;

anvil_lbfgs_options anvil_lbfgs_default_options(void);

/* Evaluates the objective at the current params (device flat array) and writes its
 * gradient into grads (device flat array); returns the loss on the host. */
typedef anvil_status (*anvil_lbfgs_closure)(void *ctx, float *loss);

typedef struct anvil_lbfgs anvil_lbfgs;

/* Validates the options (each bad one named in the error) and allocates every device
 * buffer: 2 * (history_size + 1) history vectors, 2 work vectors (+ 4 with the line
 * search) and the scalars, in one block.  OOM: an error stating the bytes, nothing kept.
 * o NULL: the defaults.  params and grads (n floats each) stay the caller's. */
anvil_status anvil_lbfgs_create(anvil_lbfgs **out, anvil_backend *be, float *params, float *grads,
                                int64_t n, const anvil_lbfgs_options *o);
void anvil_lbfgs_free(anvil_lbfgs *s);

/* One torch LBFGS.step(closure): *loss_out (may be NULL) = the loss of its first closure
 * call (torch returns orig_loss).  After an error the state is undefined (import a saved
 * one to go on). */
anvil_status anvil_lbfgs_step(anvil_lbfgs *s, anvil_lbfgs_closure f, void *ctx, float *loss_out);

/* torch's state["func_evals"] and state["n_iter"]: totals over every step so far. */
int64_t anvil_lbfgs_func_evals(const anvil_lbfgs *s);
int64_t anvil_lbfgs_n_iter(const anvil_lbfgs *s);

/* The complete state as one host byte blob (caller frees with free()), and back: import
 * checks the magic, version, n, history_size and size, and refuses a mismatch with an
 * error saying which.  A run resumed from a blob (and the params it was saved with)
 * continues bit for bit like an uninterrupted one.  The blob is in host byte order. */
anvil_status anvil_lbfgs_export(const anvil_lbfgs *s, void **blob, size_t *bytes);
anvil_status anvil_lbfgs_import(anvil_lbfgs *s, const void *blob, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
