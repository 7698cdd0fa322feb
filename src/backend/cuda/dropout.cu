/* dropout.cu — dropout and its gradient.  The mask is regenerated, never stored, from
 * (seed, step counter, stream, element index) exactly as the CPU kernel and
 * anvil_dropout_keep (core/philox.h) draw it: one Philox call per group of four
 * elements, so CPU and GPU masks match bit for bit.  The seed and the step counter are
 * read on the device from the hyper block, so a captured graph draws fresh masks every
 * step. */
#include "backend/cuda/cuda_internal.h"
#include "core/philox.h"

/* out = keep ? x / (1 - p) : 0.  One thread per group of four elements. */
static __global__ void dropout_kernel(const float *x, float *o, int64_t n, float p,
                                      uint32_t stream, const anvil_hyper *h, int vec4)
{
    uint32_t ctr = h->rng_counter, klo = h->seed_lo, khi = h->seed_hi;
    float q = 1.0f - p;
    int64_t ng = (n + 3) / 4;
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < ng;
         g += (int64_t)gridDim.x * blockDim.x) {
        anvil_philox_out r = anvil_philox((uint32_t)(uint64_t)g, (uint32_t)((uint64_t)g >> 32),
                                          stream, ctr, klo, khi);
        int64_t i0 = g * 4;
        if (vec4 && i0 + 4 <= n) {
            float4 v = reinterpret_cast<const float4 *>(x)[g];
            float4 w;
            w.x = anvil_u32_to_unit(r.v[0]) >= p ? v.x / q : 0.0f;
            w.y = anvil_u32_to_unit(r.v[1]) >= p ? v.y / q : 0.0f;
            w.z = anvil_u32_to_unit(r.v[2]) >= p ? v.z / q : 0.0f;
            w.w = anvil_u32_to_unit(r.v[3]) >= p ? v.w / q : 0.0f;
            reinterpret_cast<float4 *>(o)[g] = w;
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (i0 + j < n) {
                    float v = x[i0 + j];
                    o[i0 + j] = anvil_u32_to_unit(r.v[j]) >= p ? v / q : 0.0f;
                }
            }
        }
    }
}

static __global__ void zero_kernel(float *o, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        o[i] = 0.0f;
}

static anvil_status dropout_apply(const anvil_exec *ex, const anvil_step *s, const char *name)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t n = anvil_node_numel(s->node);
    const float *x = (const float *)s->in[0];
    float *o = (float *)s->out;
    float p = s->node->fa[0];
    if (n == 0)
        return ANVIL_OK;
    if (p <= 0.0f) { /* nothing dropped */
        if (o != x)
            ANVIL_CUDA_CHECK(cudaMemcpyAsync(o, x, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice,
                                             c->stream),
                             "dropout: cudaMemcpyAsync (device to device)");
        return ANVIL_OK;
    }
    if (p >= 1.0f) { /* everything dropped */
        zero_kernel<<<anvil_cuda_blocks(n, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(o, n);
        return anvil_cuda_launched(c, name);
    }
    int vec4 = (((uintptr_t)x | (uintptr_t)o) & 15) == 0;
    dropout_kernel<<<anvil_cuda_blocks((n + 3) / 4, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0,
                     c->stream>>>(x, o, n, p, (uint32_t)s->node->ia[0], ex->hyper, vec4);
    return anvil_cuda_launched(c, name);
}

ANVIL_CUDA_KERNEL(dropout) { return dropout_apply(ex, s, "dropout"); }
ANVIL_CUDA_KERNEL(dropout_bwd) { return dropout_apply(ex, s, "dropout_bwd"); }
