/* optim.cu — optimizer updates over the flat parameter arena: ONE kernel per step for
 * all parameters (params, grads and state are each contiguous), four elements per thread
 * with 16-byte accesses when the arenas are aligned.  torch.optim's single-tensor
 * formulas, exactly as the CPU kernels compute them (src/backend/cpu/optim.c): every
 * float operation is written with a round-to-nearest intrinsic so that nvcc cannot fuse
 * a multiply and an add — given the same gradients, CPU and GPU updates agree bit for
 * bit.  lr, the step count and the bias corrections are read/computed on the device. */
#include "backend/cuda/cuda_internal.h"

/* ---------------------------------------------------------------- SGD */

typedef struct {
    float mom, damp, wd;
    int nesterov;
} sgd_args;

static __device__ __forceinline__ void sgd_elem(const sgd_args &a, float lr, bool first,
                                                float &p, float g, float &buf)
{
    if (a.wd != 0.0f)
        g = __fadd_rn(g, __fmul_rn(a.wd, p));
    if (a.mom != 0.0f) {
        float b = first ? g : __fadd_rn(__fmul_rn(a.mom, buf), __fmul_rn(1.0f - a.damp, g));
        buf = b;
        g = a.nesterov ? __fadd_rn(g, __fmul_rn(a.mom, b)) : b;
    }
    p = __fsub_rn(p, __fmul_rn(lr, g));
}

static __global__ void sgd_kernel(float *params, const float *grads, float *state, int64_t n,
                                  const anvil_hyper *h, sgd_args a, int vec4)
{
    float lr = h->lr;
    bool first = h->step == 0;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec4) {
        int64_t n4 = n / 4;
        for (int64_t i = tid; i < n4; i += stride) {
            float4 p = reinterpret_cast<float4 *>(params)[i];
            float4 g = reinterpret_cast<const float4 *>(grads)[i];
            float4 b = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (a.mom != 0.0f)
                b = reinterpret_cast<float4 *>(state)[i];
            sgd_elem(a, lr, first, p.x, g.x, b.x);
            sgd_elem(a, lr, first, p.y, g.y, b.y);
            sgd_elem(a, lr, first, p.z, g.z, b.z);
            sgd_elem(a, lr, first, p.w, g.w, b.w);
            reinterpret_cast<float4 *>(params)[i] = p;
            if (a.mom != 0.0f)
                reinterpret_cast<float4 *>(state)[i] = b;
        }
        done = n4 * 4;
    }
    for (int64_t i = done + tid; i < n; i += stride) {
        float p = params[i], b = a.mom != 0.0f ? state[i] : 0.0f;
        sgd_elem(a, lr, first, p, grads[i], b);
        params[i] = p;
        if (a.mom != 0.0f)
            state[i] = b;
    }
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static unsigned int optim_blocks(anvil_cuda_ctx *c, int64_t n)
{
    /* a persistent-style grid: enough blocks to fill the GPU a few times over */
    unsigned int cap = (unsigned int)(c->sm_count > 0 ? c->sm_count * 8 : 1024);
    return anvil_cuda_blocks((n + 3) / 4, ANVIL_CUDA_THREADS, cap);
}

ANVIL_CUDA_KERNEL(sgd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t n = ex->n_params;
    if (n == 0)
        return ANVIL_OK;
    sgd_args a;
    a.mom = s->node->fa[0];
    a.damp = s->node->fa[1];
    a.wd = s->node->fa[2];
    a.nesterov = s->node->ia[0] != 0;
    if (a.mom != 0.0f && !ex->state)
        return anvil_fail(ANVIL_ERR_STATE, "sgd: momentum %g needs optimizer state, and there is none",
                          (double)a.mom);
    int vec4 = aligned16(ex->params) && aligned16(ex->grads) && (a.mom == 0.0f || aligned16(ex->state));
    sgd_kernel<<<optim_blocks(c, n), ANVIL_CUDA_THREADS, 0, c->stream>>>(ex->params, ex->grads,
                                                                       ex->state, n, ex->hyper, a, vec4);
    return anvil_cuda_launched(c, "sgd");
}

/* ---------------------------------------------------------------- Adam / AdamW */

typedef struct {
    float b1, b2, eps, wd;
    int decoupled;
} adam_args;

typedef struct {
    float step_size, bc2_sqrt, decay;
} adam_consts;

static __device__ __forceinline__ void adam_elem(const adam_args &a, const adam_consts &k,
                                                 float &p, float g, float &m, float &v)
{
    float pi = p;
    if (a.wd != 0.0f) {
        if (a.decoupled)
            pi = __fmul_rn(pi, k.decay);
        else
            g = __fadd_rn(g, __fmul_rn(a.wd, pi));
    }
    /* torch: exp_avg.lerp_(grad, 1 - beta1), rounded as lerp rounds */
    float w1 = 1.0f - a.b1;
    float d = __fsub_rn(g, m);
    float mi = w1 < 0.5f ? __fadd_rn(m, __fmul_rn(w1, d)) : __fsub_rn(g, __fmul_rn(d, 1.0f - w1));
    float vi = __fadd_rn(__fmul_rn(a.b2, v), __fmul_rn(__fmul_rn(1.0f - a.b2, g), g));
    m = mi;
    v = vi;
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bc2_sqrt), a.eps);
    p = __fsub_rn(pi, __fmul_rn(k.step_size, __fdiv_rn(mi, denom)));
}

static __global__ void adam_kernel(float *params, const float *grads, float *m, float *v,
                                   int64_t n, const anvil_hyper *h, adam_args a, int vec4)
{
    /* Bias corrections in double, as Python computes them (and the CPU kernel). */
    double lr = (double)h->lr, t = (double)h->step + 1.0;
    double bc1 = __dsub_rn(1.0, pow((double)a.b1, t));
    double bc2 = __dsub_rn(1.0, pow((double)a.b2, t));
    adam_consts k;
    k.step_size = (float)__ddiv_rn(lr, bc1);
    k.bc2_sqrt = (float)__dsqrt_rn(bc2);
    k.decay = (float)__dsub_rn(1.0, __dmul_rn(lr, (double)a.wd));
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec4) {
        int64_t n4 = n / 4;
        for (int64_t i = tid; i < n4; i += stride) {
            float4 p = reinterpret_cast<float4 *>(params)[i];
            float4 g = reinterpret_cast<const float4 *>(grads)[i];
            float4 mm = reinterpret_cast<float4 *>(m)[i];
            float4 vv = reinterpret_cast<float4 *>(v)[i];
            adam_elem(a, k, p.x, g.x, mm.x, vv.x);
            adam_elem(a, k, p.y, g.y, mm.y, vv.y);
            adam_elem(a, k, p.z, g.z, mm.z, vv.z);
            adam_elem(a, k, p.w, g.w, mm.w, vv.w);
            reinterpret_cast<float4 *>(params)[i] = p;
            reinterpret_cast<float4 *>(m)[i] = mm;
            reinterpret_cast<float4 *>(v)[i] = vv;
        }
        done = n4 * 4;
    }
    for (int64_t i = done + tid; i < n; i += stride) {
        float p = params[i], mi = m[i], vi = v[i];
        adam_elem(a, k, p, grads[i], mi, vi);
        params[i] = p;
        m[i] = mi;
        v[i] = vi;
    }
}

ANVIL_CUDA_KERNEL(adam)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t n = ex->n_params;
    if (n == 0)
        return ANVIL_OK;
    if (!ex->state)
        return anvil_fail(ANVIL_ERR_STATE, "adam: needs optimizer state (2 x %lld floats), and there is none",
                          (long long)n);
    adam_args a;
    a.b1 = s->node->fa[0];
    a.b2 = s->node->fa[1];
    a.eps = s->node->fa[2];
    a.wd = s->node->fa[3];
    a.decoupled = s->node->ia[0] != 0;
    float *m = ex->state, *v = ex->state + n;
    int vec4 = aligned16(ex->params) && aligned16(ex->grads) && aligned16(m) && aligned16(v);
    adam_kernel<<<optim_blocks(c, n), ANVIL_CUDA_THREADS, 0, c->stream>>>(ex->params, ex->grads, m, v,
                                                                        n, ex->hyper, a, vec4);
    return anvil_cuda_launched(c, "adam");
}

/* ---------------------------------------------------------------- bookkeeping */

static __global__ void step_end_kernel(anvil_hyper *h, int64_t data_batch)
{
    h->step += 1;
    h->rng_counter += 1;
    h->data_cursor += data_batch; /* resident data: the batch just used */
}

ANVIL_CUDA_KERNEL(step_end)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t data_batch = s->node->n_in == 1 ? s->in_node[0]->shape[0] : 0;
    step_end_kernel<<<1, 1, 0, c->stream>>>(ex->hyper, data_batch);
    return anvil_cuda_launched(c, "step_end");
}
