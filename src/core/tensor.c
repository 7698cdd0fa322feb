/* tensor.c — reference-counted host tensors, dtypes and shape helpers. */
#include "core/core.h"

#include <inttypes.h>

size_t anvil_dtype_size(anvil_dtype t)
{
    switch (t) {
    case ANVIL_F32: case ANVIL_I32: return 4;
    case ANVIL_U8: return 1;
    case ANVIL_BF16: return 2;
    case ANVIL_I64: return 8;
    default: return 0;
    }
}

const char *anvil_dtype_name(anvil_dtype t)
{
    switch (t) {
    case ANVIL_F32: return "float32";
    case ANVIL_I32: return "int32";
    case ANVIL_U8: return "uint8";
    case ANVIL_BF16: return "bfloat16";
    case ANVIL_I64: return "int64";
    default: return "invalid dtype";
    }
}

int64_t anvil_shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

const char *anvil_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t len = 0;
    len += (size_t)snprintf(buf + len, cap - len, "[");
    for (int i = 0; i < ndim && len < cap; i++) {
        if (shape[i] == ANVIL_BATCH)
            len += (size_t)snprintf(buf + len, cap - len, "%sB", i ? ", " : "");
        else
            len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, i ? ", " : "", shape[i]);
    }
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
    return buf;
}

anvil_status anvil_tensor_create(anvil_tensor **out, anvil_dtype dtype, int ndim,
                                 const int64_t *shape, const void *data)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_tensor_create: out is NULL");
    *out = NULL;
    if ((unsigned)dtype >= ANVIL_DTYPE_COUNT)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_tensor_create: invalid dtype %d", (int)dtype);
    if (ndim < 0 || ndim > ANVIL_MAX_DIMS || (ndim > 0 && !shape))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_tensor_create: ndim %d outside 0..%d", ndim, ANVIL_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return anvil_fail(ANVIL_ERR_SHAPE, "anvil_tensor_create: negative dimension %" PRId64 " at %d", shape[i], i);
        if (shape[i] > 0 && numel > INT64_MAX / shape[i])
            return anvil_fail(ANVIL_ERR_SHAPE, "anvil_tensor_create: shape too large");
        numel *= shape[i];
    }
    size_t bytes = (size_t)numel * anvil_dtype_size(dtype);
    anvil_tensor *t = anvil_xcalloc(1, sizeof *t, "a tensor");
    if (!t)
        return ANVIL_ERR_OOM;
    t->data = data ? anvil_xmalloc(bytes, "tensor data") : anvil_xcalloc(1, bytes, "tensor data");
    if (!t->data) {
        free(t);
        return ANVIL_ERR_OOM;
    }
    if (data && bytes)
        memcpy(t->data, data, bytes);
    t->refs = 1;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->numel = numel;
    *out = t;
    return ANVIL_OK;
}

anvil_tensor *anvil_tensor_retain(anvil_tensor *t)
{
    if (t)
        t->refs++;
    return t;
}

void anvil_tensor_release(anvil_tensor *t)
{
    if (t && --t->refs == 0) {
        free(t->data);
        free(t);
    }
}

anvil_dtype anvil_tensor_dtype(const anvil_tensor *t) { return t->dtype; }
int anvil_tensor_ndim(const anvil_tensor *t) { return t->ndim; }
const int64_t *anvil_tensor_shape(const anvil_tensor *t) { return t->shape; }
int64_t anvil_tensor_numel(const anvil_tensor *t) { return t->numel; }
size_t anvil_tensor_nbytes(const anvil_tensor *t) { return (size_t)t->numel * anvil_dtype_size(t->dtype); }
void *anvil_tensor_data(anvil_tensor *t) { return t->data; }
const void *anvil_tensor_cdata(const anvil_tensor *t) { return t->data; }

anvil_status anvil_tensor_read(const anvil_tensor *t, void *dst, size_t dst_bytes)
{
    if (!t || !dst)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_tensor_read: NULL argument");
    size_t n = anvil_tensor_nbytes(t);
    if (dst_bytes < n)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_tensor_read: destination holds %zu bytes, tensor has %zu", dst_bytes, n);
    memcpy(dst, t->data, n);
    return ANVIL_OK;
}
