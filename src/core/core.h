/* core.h — internal helpers shared by every part of the library: errors, memory,
 * tensor internals.  Valid C11 and C++ (CUDA sources include it). */
#ifndef ANVIL_CORE_H
#define ANVIL_CORE_H

#include "anvil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Records a failure for anvil_last_error() and returns s, so callers can write
 * `return anvil_fail(ANVIL_ERR_SHAPE, "linear '%s': ...", name);`. */
anvil_status anvil_fail(anvil_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void anvil_clear_error(void);

/* Checked allocation: NULL only after recording ANVIL_ERR_OOM with what was asked for. */
void *anvil_xmalloc(size_t bytes, const char *what);
void *anvil_xcalloc(size_t n, size_t size, const char *what);
void *anvil_xrealloc(void *p, size_t bytes, const char *what);
char *anvil_xstrdup(const char *s);

#define ANVIL_TRY(expr)                        \
    do {                                       \
        anvil_status anvil_try_s_ = (expr);    \
        if (anvil_try_s_ != ANVIL_OK)          \
            return anvil_try_s_;               \
    } while (0)

struct anvil_tensor {
    int refs;
    anvil_dtype dtype;
    int ndim;
    int64_t shape[ANVIL_MAX_DIMS];
    int64_t numel;
    void *data;
};

/* "[2, 3, 4]" into buf (for error messages); ANVIL_BATCH prints as "B". */
const char *anvil_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
int64_t anvil_shape_numel(int ndim, const int64_t *shape);

#define ANVIL_ALIGN 256
static inline size_t anvil_align_up(size_t n) { return (n + ANVIL_ALIGN - 1) & ~(size_t)(ANVIL_ALIGN - 1); }

#ifdef __cplusplus
}
#endif
#endif
