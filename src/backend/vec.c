/* vec.c — what both backends' vector operations (backend.h, anvil_vec_op) check first. */
#include "backend/backend.h"

static const char *const vec_names[ANVIL_VEC_KINDS] = {
    "copy", "scale", "axpy", "dot", "abs_max", "abs_sum", "rdiv",
};

anvil_status anvil_vec_check(const anvil_backend *be, const anvil_vec_op *op)
{
    if (!be || !op)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "vec: NULL backend or op");
    if ((int)op->kind < 0 || op->kind >= ANVIL_VEC_KINDS)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "vec: unknown op kind %d", (int)op->kind);
    const char *name = vec_names[op->kind];
    if (op->n < 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "vec %s: n = %lld is negative", name, (long long)op->n);
    if (op->cb && !op->ca)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "vec %s: cb given without ca", name);
    bool need_y = op->kind == ANVIL_VEC_COPY || op->kind == ANVIL_VEC_SCALE ||
                  op->kind == ANVIL_VEC_AXPY || op->kind == ANVIL_VEC_DOT;
    bool need_out = !need_y || op->kind == ANVIL_VEC_DOT;
    bool need_x = op->kind == ANVIL_VEC_RDIV || op->n > 0;
    if ((need_x && !op->x) || (need_y && op->n > 0 && !op->y) || (need_out && !op->out))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "vec %s: a NULL operand (x %p, y %p, out %p, n %lld)",
                          name, (const void *)op->x, (void *)op->y, (void *)op->out, (long long)op->n);
    return ANVIL_OK;
}
