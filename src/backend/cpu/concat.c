/* concat.c — joining along a dim and taking a range of one: row-block copies over the
 * [outer, dim, inner] view. */
#include "backend/cpu/cpu.h"

anvil_status anvil_cpu_concat(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *y = s->node;
    int d = y->ia[0];
    size_t es = anvil_dtype_size(y->dtype);
    int64_t outer = cpu_prod(y->shape, 0, d), inner = cpu_prod(y->shape, d + 1, y->ndim);
    size_t row = (size_t)(y->shape[d] * inner) * es;
    size_t at = 0;
    for (int i = 0; i < y->n_in; i++) {
        size_t part = (size_t)(s->in_node[i]->shape[d] * inner) * es;
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)s->out + (size_t)o * row + at, (const char *)s->in[i] + (size_t)o * part, part);
        at += part;
    }
    return ANVIL_OK;
}

anvil_status anvil_cpu_slice(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *y = s->node, *x = s->in_node[0];
    int d = y->ia[0];
    size_t es = anvil_dtype_size(y->dtype);
    int64_t outer = cpu_prod(x->shape, 0, d), inner = cpu_prod(x->shape, d + 1, x->ndim);
    size_t xrow = (size_t)(x->shape[d] * inner) * es, yrow = (size_t)(y->shape[d] * inner) * es;
    size_t from = (size_t)((int64_t)y->ia[1] * inner) * es;
    for (int64_t o = 0; o < outer; o++)
        memcpy((char *)s->out + (size_t)o * yrow, (const char *)s->in[0] + (size_t)o * xrow + from, yrow);
    return ANVIL_OK;
}
