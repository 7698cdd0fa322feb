/* elementwise.c — add, sub, mul, div with NumPy broadcasting, and scale.
 * out may alias in[0] (in place): each out[i] is written only after in[0]'s element i is
 * read, and in place is only planned when in[0] has the output's shape. */
#include "backend/cpu/cpu.h"

/* One broadcast loop per op, the op expanded inline.  The last (merged) dim gets
 * contiguous variants for the strides that occur: equal shapes, a scalar or row-vector
 * operand on either side. */
#define EW_LOOP(NAME, OPEXPR)                                                              \
    static void NAME(const cpu_bcast *it, const float *a, const float *b, float *o)        \
    {                                                                                      \
        int64_t inner = it->dim[it->nd - 1], rows = 1;                                     \
        for (int d = 0; d < it->nd - 1; d++)                                               \
            rows *= it->dim[d];                                                            \
        int64_t sa = it->st[0][it->nd - 1], sb = it->st[1][it->nd - 1];                    \
        int64_t nblk = (inner + CPU_BCAST_BLOCK - 1) / CPU_BCAST_BLOCK;                    \
        _Pragma("omp parallel for if (rows * inner >= CPU_PAR_MIN) schedule(static)")     \
        for (int64_t item = 0; item < rows * nblk; item++) {                               \
            int64_t row = item / nblk, j0 = (item % nblk) * CPU_BCAST_BLOCK;               \
            int64_t j1 = cpu_min64(inner, j0 + CPU_BCAST_BLOCK), off[2];                   \
            cpu_bcast_row(it, row, off);                                                   \
            const float *pa = a + off[0], *pb = b + off[1];                                \
            float *po = o + row * inner;                                                   \
            if (sa == 1 && sb == 1) {                                                      \
                for (int64_t j = j0; j < j1; j++) {                                        \
                    float x = pa[j], y = pb[j];                                            \
                    po[j] = OPEXPR;                                                        \
                }                                                                          \
            } else if (sa == 1 && sb == 0) {                                               \
                float y = pb[0];                                                           \
                for (int64_t j = j0; j < j1; j++) {                                        \
                    float x = pa[j];                                                       \
                    po[j] = OPEXPR;                                                        \
                }                                                                          \
            } else if (sa == 0 && sb == 1) {                                               \
                float x = pa[0];                                                           \
                for (int64_t j = j0; j < j1; j++) {                                        \
                    float y = pb[j];                                                       \
                    po[j] = OPEXPR;                                                        \
                }                                                                          \
            } else {                                                                       \
                for (int64_t j = j0; j < j1; j++) {                                        \
                    float x = pa[j * sa], y = pb[j * sb];                                  \
                    po[j] = OPEXPR;                                                        \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }

EW_LOOP(ew_add, x + y)
EW_LOOP(ew_sub, x - y)
EW_LOOP(ew_mul, x * y)
EW_LOOP(ew_div, x / y)

typedef void (*ew_fn)(const cpu_bcast *, const float *, const float *, float *);

static anvil_status ew_run(const anvil_step *s, ew_fn fn)
{
    if (cpu_numel(s->node) == 0)
        return ANVIL_OK;
    cpu_bcast it;
    const anvil_node *ins[2] = {s->in_node[0], s->in_node[1]};
    cpu_bcast_init(&it, s->node, 2, ins);
    fn(&it, (const float *)s->in[0], (const float *)s->in[1], (float *)s->out);
    return ANVIL_OK;
}

anvil_status anvil_cpu_add(const anvil_exec *ex, const anvil_step *s) { (void)ex; return ew_run(s, ew_add); }
anvil_status anvil_cpu_sub(const anvil_exec *ex, const anvil_step *s) { (void)ex; return ew_run(s, ew_sub); }
anvil_status anvil_cpu_mul(const anvil_exec *ex, const anvil_step *s) { (void)ex; return ew_run(s, ew_mul); }
anvil_status anvil_cpu_div(const anvil_exec *ex, const anvil_step *s) { (void)ex; return ew_run(s, ew_div); }

anvil_status anvil_cpu_scale(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    int64_t n = cpu_numel(s->node);
    const float *x = (const float *)s->in[0];
    float *o = (float *)s->out, f = s->node->fa[0];
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        o[i] = x[i] * f;
    return ANVIL_OK;
}
