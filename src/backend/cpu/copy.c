/* copy.c — data movement: copy and fill. */
#include "backend/cpu/cpu.h"

anvil_status anvil_cpu_copy(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    size_t bytes = (size_t)cpu_numel(s->node) * anvil_dtype_size(s->node->dtype);
    if (s->out != s->in[0] && bytes)
        memcpy(s->out, s->in[0], bytes);
    return ANVIL_OK;
}

anvil_status anvil_cpu_fill(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    int64_t n = cpu_numel(s->node);
    float v = s->node->fa[0];
    switch (s->node->dtype) {
    case ANVIL_F32: {
        float *o = (float *)s->out;
#pragma omp parallel for if (n >= CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++)
            o[i] = v;
        return ANVIL_OK;
    }
    case ANVIL_I32: {
        int32_t *o = (int32_t *)s->out;
        int32_t iv = (int32_t)v;
        for (int64_t i = 0; i < n; i++)
            o[i] = iv;
        return ANVIL_OK;
    }
    default:
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "fill: dtype %s not supported on the CPU",
                          anvil_dtype_name(s->node->dtype));
    }
}
