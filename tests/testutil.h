/* testutil.h — small helpers shared by the cmocka tests. */
#ifndef ANVIL_TESTUTIL_H
#define ANVIL_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "anvil.h"

/* Asserts a call returned ANVIL_OK, printing anvil_last_error() otherwise. */
#define CHECK_OK(expr)                                                              \
    do {                                                                            \
        anvil_status s_ = (expr);                                                   \
        if (s_ != ANVIL_OK)                                                         \
            fail_msg("%s -> %s: %s", #expr, anvil_status_name(s_), anvil_last_error()); \
    } while (0)

/* A fresh temporary directory (mkdtemp); the caller removes it with tu_rmdir. */
char *tu_mkdtemp(void);
void tu_rmdir(char *dir);
/* Deterministic uniform floats in [lo, hi) from a seed. */
void tu_fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed);
/* A new float32 host tensor filled from tu_fill_uniform. */
anvil_tensor *tu_rand_tensor(int ndim, const int64_t *shape, float lo, float hi, uint64_t seed);
/* max |a-b| / (atol + rtol*|b|) over n elements: <= 1 passes. Index of the worst in *worst. */
double tu_rel_err(const float *a, const float *b, int64_t n, double atol, double rtol, int64_t *worst);
int tu_write_file(const char *path, const void *data, size_t n);

/* Loads Fashion-MNIST from $ANVIL_DATA_DIR or ANVIL_DEFAULT_DATA_DIR; false (with a
 * message) when it is not there, so the caller can skip(). */
bool tu_load_fmnist(anvil_dataset **train, anvil_dataset **test);

/* One epoch of a built-in model from PyTorch's initial weights (the golden file of
 * tests/golden/make_fmnist.py), in dataset order on resident data, on `device`: test
 * accuracy within 0.006 and losses within 2% of PyTorch's from the same start (469 float32
 * steps in another summation order drift a little).  A resident step in the middle of the
 * epoch must copy nothing and allocate nothing (on CUDA: exactly one graph launch). */
void tu_fmnist_parity(const char *model, const char *golden, anvil_device device);

#endif
