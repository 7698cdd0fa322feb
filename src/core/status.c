/* status.c — error values: the thread-local last-error message and checked allocation. */
#include "core/core.h"

static _Thread_local char last_error[1024];

const char *anvil_last_error(void) { return last_error; }

void anvil_clear_error(void) { last_error[0] = '\0'; }

anvil_status anvil_fail(anvil_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

const char *anvil_status_name(anvil_status s)
{
    switch (s) {
    case ANVIL_OK: return "ok";
    case ANVIL_ERR_INVALID_ARG: return "invalid argument";
    case ANVIL_ERR_SHAPE: return "shape mismatch";
    case ANVIL_ERR_IO: return "i/o error";
    case ANVIL_ERR_FORMAT: return "bad file format";
    case ANVIL_ERR_OOM: return "out of memory";
    case ANVIL_ERR_DEVICE: return "device error";
    case ANVIL_ERR_UNSUPPORTED: return "unsupported";
    case ANVIL_ERR_STATE: return "invalid state";
    }
    return "unknown status";
}

void *anvil_xmalloc(size_t bytes, const char *what)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        anvil_fail(ANVIL_ERR_OOM, "out of host memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *anvil_xcalloc(size_t n, size_t size, const char *what)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        anvil_fail(ANVIL_ERR_OOM, "out of host memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

void *anvil_xrealloc(void *old, size_t bytes, const char *what)
{
    void *p = realloc(old, bytes ? bytes : 1);
    if (!p)
        anvil_fail(ANVIL_ERR_OOM, "out of host memory growing %s to %zu bytes", what, bytes);
    return p;
}

char *anvil_xstrdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = anvil_xmalloc(n, "a string");
    if (p)
        memcpy(p, s, n);
    return p;
}
