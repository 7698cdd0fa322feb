/* optim.cu — optimizer updates over the flat parameter arena: ONE kernel per step for
 * all parameters (params, grads and state are each contiguous), four elements per thread
 * with 16-byte accesses when the arenas are aligned.  torch.optim's single-tensor
 * formulas, exactly as the CPU kernels compute them (src/backend/cpu/optim.c): every
 * float operation is written with a round-to-nearest intrinsic so that nvcc cannot fuse
 * a multiply and an add — given the same gradients, CPU and GPU updates agree bit for
 * bit.  lr, the step count and the bias corrections are read/computed on the device.
 * SGD and Adam/AdamW have hand-written kernels; the later optimizers share flat_update,
 * a grid-stride loop over an element functor. */
#include "backend/cuda/cuda_internal.h"
#include "optim/schedule.h"

/* An update node's view of the arenas: its group's slice (graph.h), state slots 0..2. */
typedef struct {
    float *p;
    const float *g;
    float *s[3];
    int64_t n;
    int group;
    float clipv;
} dslice;

static dslice dslice_of(const anvil_exec *ex, const anvil_node *nd)
{
    dslice sl;
    int64_t off = anvil_optim_off(nd);
    sl.p = ex->params + off;
    sl.g = ex->grads + off;
    for (int k = 0; k < 3; k++)
        sl.s[k] = ex->state ? ex->state + k * ex->n_params + off : NULL;
    sl.n = anvil_optim_len(nd);
    if (sl.n > ex->n_params - off) /* the last group's padding may lie past a short arena */
        sl.n = ex->n_params - off;
    sl.group = nd->ia[2];
    sl.clipv = nd->fa[5];
    return sl;
}

/* The gradient the update sees (as the CPU's clipped()): clip_grad_value_, then the
 * clip_grad_norm_ factor (1 without clipping: exact). */
static __device__ __forceinline__ float clipped(float g, float v, float coef)
{
    if (v > 0.0f)
        g = g < -v ? -v : (g > v ? v : g);
    return __fmul_rn(g, coef);
}

/* ---------------------------------------------------------------- SGD */

typedef struct {
    float mom, damp, wd, clipv, coef;
    int nesterov, maximize, group;
} sgd_args;

static __device__ __forceinline__ void sgd_elem(const sgd_args &a, float lr, bool first,
                                                float &p, float g, float &buf)
{
    g = clipped(g, a.clipv, a.coef);
    if (a.maximize)
        g = -g;
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
    float lr = h->group[a.group].lr;
    bool first = h->step == 0;
    a.coef = h->clip_coef;
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
    /* a persistent-style grid: about as many blocks as stay resident at once (the mlp's
     * Adam step measured 1.5 µs faster with 4 per SM than with 8, which ran in two waves;
     * Adam now takes 6, see adam_kernel) */
    unsigned int cap = (unsigned int)(c->sm_count > 0 ? c->sm_count * 4 : 1024);
    return anvil_cuda_blocks((n + 3) / 4, ANVIL_CUDA_THREADS, cap);
}

ANVIL_CUDA_KERNEL(sgd)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    dslice sl = dslice_of(ex, s->node);
    int64_t n = sl.n;
    if (n == 0)
        return ANVIL_OK;
    sgd_args a;
    a.group = sl.group;
    a.clipv = sl.clipv;
    a.coef = 1.0f;
    a.mom = s->node->fa[0];
    a.damp = s->node->fa[1];
    a.wd = s->node->fa[2];
    a.nesterov = s->node->ia[0] != 0;
    a.maximize = s->node->ia[5] != 0;
    if (a.mom != 0.0f && !ex->state)
        return anvil_fail(ANVIL_ERR_STATE, "sgd: momentum %g needs optimizer state, and there is none",
                          (double)a.mom);
    int vec4 = aligned16(sl.p) && aligned16(sl.g) && (a.mom == 0.0f || aligned16(sl.s[0]));
    sgd_kernel<<<optim_blocks(c, n), ANVIL_CUDA_THREADS, 0, c->stream>>>(sl.p, sl.g, sl.s[0], n, ex->hyper, a,
                                                                       vec4);
    return anvil_cuda_launched(c, "sgd");
}

/* ---------------------------------------------------------------- Adam / AdamW */

typedef struct {
    float b1, b2, eps, wd, clipv, coef;
    int decoupled, amsgrad, maximize, group;
} adam_args;

typedef struct {
    float step_size, bc2_sqrt, decay;
} adam_consts;

static __device__ __forceinline__ void adam_elem(const adam_args &a, const adam_consts &k,
                                                 float &p, float g, float &m, float &v, float &vmax)
{
    float pi = p;
    g = clipped(g, a.clipv, a.coef);
    if (a.maximize)
        g = -g;
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
    if (a.amsgrad) { /* torch.maximum(max_exp_avg_sq, exp_avg_sq) */
        vi = vi > vmax ? vi : vmax;
        vmax = vi;
    }
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bc2_sqrt), a.eps);
    p = __fsub_rn(pi, __fmul_rn(k.step_size, __fdiv_rn(mi, denom)));
}

/* The bias corrections of an update at the current step, in double as Python computes
 * them (and the CPU kernel). */
static __device__ adam_consts adam_consts_of(const anvil_hyper *h, int group, float b1, float b2, float wd)
{
    adam_consts k;
    double lr = (double)h->group[group].lr, t = (double)h->step + 1.0;
    double bc1 = __dsub_rn(1.0, pow((double)b1, t));
    double bc2 = __dsub_rn(1.0, pow((double)b2, t));
    k.step_size = (float)__ddiv_rn(lr, bc1);
    k.bc2_sqrt = (float)__dsqrt_rn(bc2);
    k.decay = (float)__dsub_rn(1.0, __dmul_rn(lr, (double)wd));
    return k;
}

typedef struct {
    int n, group[ANVIL_CUDA_MAX_ADAM];
    float b1[ANVIL_CUDA_MAX_ADAM], b2[ANVIL_CUDA_MAX_ADAM], wd[ANVIL_CUDA_MAX_ADAM];
} adam_prep_args;

/* Every Adam update's constants for this step, by one thread each, at the start of the
 * step beside the forward pass (capture_lanes): the updates then read three floats, and
 * STEP_END, which changes the step and the lr, can run beside them. */
static __global__ void adam_prepare_kernel(const anvil_hyper *h, adam_prep_args a, adam_consts *out)
{
    anvil_pdl_wait();
    int k = (int)threadIdx.x;
    if (k < a.n)
        out[k] = adam_consts_of(h, a.group[k], a.b1[k], a.b2[k], a.wd[k]);
}

extern "C" anvil_status anvil_cuda_adam_prepare(const anvil_exec *ex, const anvil_step *const *adams, int n)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    if (n < 1 || n > ANVIL_CUDA_MAX_ADAM || !c->adam_consts)
        return anvil_fail(ANVIL_ERR_STATE, "adam_prepare: %d updates (1 to %d)", n, ANVIL_CUDA_MAX_ADAM);
    adam_prep_args a;
    memset(&a, 0, sizeof a);
    a.n = n;
    for (int k = 0; k < n; k++) {
        a.group[k] = dslice_of(ex, adams[k]->node).group;
        a.b1[k] = adams[k]->node->fa[0];
        a.b2[k] = adams[k]->node->fa[1];
        a.wd[k] = adams[k]->node->fa[3];
        c->adam_prep[k] = adams[k];
    }
    c->adam_prep_n = n;
    ANVIL_CUDA_CHECK(anvil_cuda_launch(adam_prepare_kernel, 1, 32, 0, c->stream, (const anvil_hyper *)ex->hyper, a,
                                       (adam_consts *)c->adam_consts),
                     "adam_prepare");
    return anvil_cuda_launched(c, "adam_prepare");
}

/* At most 40 registers (no spills), so that 6 blocks fit an SM and one wave covers the
 * mlp's 0.67 M parameters at a float4 per thread. */
static __global__ void __launch_bounds__(ANVIL_CUDA_THREADS, 6)
    adam_kernel(float *params, const float *grads, float *m, float *v, float *vmax, int64_t n, const anvil_hyper *h,
                adam_args a, int vec4, const adam_consts *pre)
{
    /* pre: adam_prepare_kernel's constants (that kernel is a full dependency of this
     * one).  Otherwise once per block (two double pow()s in every thread cost as much as
     * the update itself); the step and the lr are written only between graph launches
     * (by the previous step's STEP_END, or the host), never by a kernel of this step
     * before it, so they are read before waiting for the previous kernel: the pow()s
     * overlap its tail. */
    __shared__ adam_consts ks;
    if (!pre && threadIdx.x == 0)
        ks = adam_consts_of(h, a.group, a.b1, a.b2, a.wd);
    anvil_pdl_wait();
    __syncthreads();
    a.coef = h->clip_coef; /* CLIP_NORM's, written in this step */
    adam_consts k = pre ? *pre : ks;
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
            float4 vm = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (a.amsgrad)
                vm = reinterpret_cast<float4 *>(vmax)[i];
            adam_elem(a, k, p.x, g.x, mm.x, vv.x, vm.x);
            adam_elem(a, k, p.y, g.y, mm.y, vv.y, vm.y);
            adam_elem(a, k, p.z, g.z, mm.z, vv.z, vm.z);
            adam_elem(a, k, p.w, g.w, mm.w, vv.w, vm.w);
            reinterpret_cast<float4 *>(params)[i] = p;
            reinterpret_cast<float4 *>(m)[i] = mm;
            reinterpret_cast<float4 *>(v)[i] = vv;
            if (a.amsgrad)
                reinterpret_cast<float4 *>(vmax)[i] = vm;
        }
        done = n4 * 4;
    }
    for (int64_t i = done + tid; i < n; i += stride) {
        float p = params[i], mi = m[i], vi = v[i], vm = a.amsgrad ? vmax[i] : 0.0f;
        adam_elem(a, k, p, grads[i], mi, vi, vm);
        params[i] = p;
        m[i] = mi;
        v[i] = vi;
        if (a.amsgrad)
            vmax[i] = vm;
    }
}

ANVIL_CUDA_KERNEL(adam)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    dslice sl = dslice_of(ex, s->node);
    int64_t n = sl.n;
    if (n == 0)
        return ANVIL_OK;
    if (!ex->state)
        return anvil_fail(ANVIL_ERR_STATE, "adam: needs optimizer state (2 x %lld floats), and there is none",
                          (long long)n);
    adam_args a;
    a.group = sl.group;
    a.clipv = sl.clipv;
    a.coef = 1.0f;
    a.b1 = s->node->fa[0];
    a.b2 = s->node->fa[1];
    a.eps = s->node->fa[2];
    a.wd = s->node->fa[3];
    a.decoupled = s->node->ia[0] != 0;
    a.amsgrad = s->node->ia[1] != 0;
    a.maximize = s->node->ia[5] != 0;
    float *m = sl.s[0], *v = sl.s[1], *vmax = sl.s[2];
    int vec4 = aligned16(sl.p) && aligned16(sl.g) && aligned16(m) && aligned16(v) && (!a.amsgrad || aligned16(vmax));
    /* one resident wave: 6 blocks per SM (its launch bounds) */
    unsigned int blocks = anvil_cuda_blocks((n + 3) / 4, ANVIL_CUDA_THREADS,
                                            c->sm_count > 0 ? (unsigned int)(c->sm_count * 6) : 1024u);
    const adam_consts *pre = NULL; /* the step's constants, when the capture prepared them */
    for (int k = 0; k < c->adam_prep_n; k++)
        if (c->adam_prep[k] == s)
            pre = (const adam_consts *)c->adam_consts + k;
    ANVIL_CUDA_CHECK(anvil_cuda_launch(adam_kernel, blocks, ANVIL_CUDA_THREADS, 0, c->stream, sl.p,
                                       (const float *)sl.g, m, v, vmax, n, (const anvil_hyper *)ex->hyper, a, vec4, pre),
                     "adam");
    return anvil_cuda_launched(c, "adam");
}

/* ---------------------------------------------------------------- shared driver */

/* Up to three state slots per element; a NULL slot is neither read nor written. */
typedef struct {
    float *s[3];
} slots3;

/* torch's lerp_(x, w), rounded as lerp rounds (as adam_elem). */
static __device__ __forceinline__ float lerp_w(float a, float x, float w)
{
    float d = __fsub_rn(x, a);
    return w < 0.5f ? __fadd_rn(a, __fmul_rn(w, d)) : __fsub_rn(x, __fmul_rn(d, 1.0f - w));
}

/* The grid-stride loop of every optimizer below: four elements per thread with 16-byte
 * accesses when everything is aligned, then the tail.  op(p, g, s) updates one element. */
template <typename Op>
static __device__ __forceinline__ void flat_update(const Op &op, float *params, const float *grads, slots3 st,
                                                   int64_t n, int vec4)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec4) {
        int64_t n4 = n / 4;
        for (int64_t i = tid; i < n4; i += stride) {
            float4 p = reinterpret_cast<float4 *>(params)[i];
            float4 g = reinterpret_cast<const float4 *>(grads)[i];
            float4 sv[3];
#pragma unroll
            for (int j = 0; j < 3; j++)
                sv[j] = st.s[j] ? reinterpret_cast<float4 *>(st.s[j])[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float e[3];
#define ANVIL_LANE(c)                              \
    e[0] = sv[0].c, e[1] = sv[1].c, e[2] = sv[2].c; \
    op(p.c, g.c, e);                               \
    sv[0].c = e[0], sv[1].c = e[1], sv[2].c = e[2];
            ANVIL_LANE(x)
            ANVIL_LANE(y)
            ANVIL_LANE(z)
            ANVIL_LANE(w)
#undef ANVIL_LANE
            reinterpret_cast<float4 *>(params)[i] = p;
#pragma unroll
            for (int j = 0; j < 3; j++)
                if (st.s[j])
                    reinterpret_cast<float4 *>(st.s[j])[i] = sv[j];
        }
        done = n4 * 4;
    }
    for (int64_t i = done + tid; i < n; i += stride) {
        float p = params[i], e[3];
#pragma unroll
        for (int j = 0; j < 3; j++)
            e[j] = st.s[j] ? st.s[j][i] : 0.0f;
        op(p, grads[i], e);
        params[i] = p;
#pragma unroll
        for (int j = 0; j < 3; j++)
            if (st.s[j])
                st.s[j][i] = e[j];
    }
}

static int slots_aligned(const dslice &sl, slots3 st)
{
    int ok = aligned16(sl.p) && aligned16(sl.g);
    for (int j = 0; j < 3; j++)
        ok = ok && (!st.s[j] || aligned16(st.s[j]));
    return ok;
}

static anvil_status need_state(const anvil_exec *ex, const char *op, int slots)
{
    if (!ex->state)
        return anvil_fail(ANVIL_ERR_STATE, "%s: needs optimizer state (%d x %lld floats), and there is none", op,
                          slots, (long long)ex->n_params);
    return ANVIL_OK;
}

/* ---------------------------------------------------------------- RMSprop */

typedef struct {
    float lr, alpha, eps, wd, mom, clipv, coef;
    int centered, maximize, group;
    /* s[0] square_avg, s[1] momentum_buffer, s[2] grad_avg */
    __device__ __forceinline__ void operator()(float &p, float g, float *s) const
    {
        g = clipped(g, clipv, coef);
        if (maximize)
            g = -g;
        if (wd != 0.0f)
            g = __fadd_rn(g, __fmul_rn(wd, p));
        float si = __fadd_rn(__fmul_rn(alpha, s[0]), __fmul_rn(__fmul_rn(1.0f - alpha, g), g));
        s[0] = si;
        float avg;
        if (centered) {
            float ga = lerp_w(s[2], g, 1.0f - alpha);
            s[2] = ga;
            avg = __fadd_rn(__fsqrt_rn(__fsub_rn(si, __fmul_rn(ga, ga))), eps);
        } else {
            avg = __fadd_rn(__fsqrt_rn(si), eps);
        }
        if (mom > 0.0f) {
            float b = __fadd_rn(__fmul_rn(mom, s[1]), __fdiv_rn(g, avg));
            s[1] = b;
            p = __fsub_rn(p, __fmul_rn(lr, b));
        } else {
            p = __fsub_rn(p, __fdiv_rn(__fmul_rn(lr, g), avg));
        }
    }
} rmsprop_op;

static __global__ void rmsprop_kernel(float *params, const float *grads, slots3 st, int64_t n,
                                      const anvil_hyper *h, rmsprop_op op, int vec4)
{
    op.lr = h->group[op.group].lr;
    op.coef = h->clip_coef;
    flat_update(op, params, grads, st, n, vec4);
}

ANVIL_CUDA_KERNEL(rmsprop)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    dslice sl = dslice_of(ex, nd);
    int64_t n = sl.n;
    if (n == 0)
        return ANVIL_OK;
    rmsprop_op op;
    op.lr = 0.0f;
    op.alpha = nd->fa[0];
    op.eps = nd->fa[1];
    op.wd = nd->fa[2];
    op.mom = nd->fa[3];
    op.centered = nd->ia[0] != 0;
    op.maximize = nd->ia[5] != 0;
    op.group = sl.group, op.clipv = sl.clipv, op.coef = 1.0f;
    ANVIL_TRY(need_state(ex, "rmsprop", 1));
    slots3 st = {{sl.s[0], NULL, NULL}};
    if (op.mom > 0.0f)
        st.s[1] = sl.s[1];
    if (op.centered)
        st.s[2] = sl.s[op.mom > 0.0f ? 2 : 1];
    rmsprop_kernel<<<optim_blocks(c, n), ANVIL_CUDA_THREADS, 0, c->stream>>>(sl.p, sl.g, st, n, ex->hyper, op,
                                                                           slots_aligned(sl, st));
    return anvil_cuda_launched(c, "rmsprop");
}

/* ---------------------------------------------------------------- Adagrad */

typedef struct {
    float clr, wd, eps, init, clipv, coef;
    int first, maximize, group;
    /* s[0] sum: zero-filled; step 1 starts it from the initial value */
    __device__ __forceinline__ void operator()(float &p, float g, float *s) const
    {
        g = clipped(g, clipv, coef);
        if (maximize)
            g = -g;
        if (wd != 0.0f)
            g = __fadd_rn(g, __fmul_rn(wd, p));
        float si = __fadd_rn(first ? init : s[0], __fmul_rn(g, g));
        s[0] = si;
        p = __fsub_rn(p, __fdiv_rn(__fmul_rn(clr, g), __fadd_rn(__fsqrt_rn(si), eps)));
    }
} adagrad_op;

static __global__ void adagrad_kernel(float *params, const float *grads, slots3 st, int64_t n,
                                      const anvil_hyper *h, adagrad_op op, float lr_decay, int vec4)
{
    /* clr = lr / (1 + (step - 1) lr_decay), in double as Python computes it */
    op.coef = h->clip_coef;
    op.clr = (float)__ddiv_rn((double)h->group[op.group].lr, __dadd_rn(1.0, __dmul_rn((double)h->step, (double)lr_decay)));
    op.first = h->step == 0;
    flat_update(op, params, grads, st, n, vec4);
}

ANVIL_CUDA_KERNEL(adagrad)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    dslice sl = dslice_of(ex, nd);
    int64_t n = sl.n;
    if (n == 0)
        return ANVIL_OK;
    adagrad_op op;
    op.clr = 0.0f;
    op.first = 0;
    op.wd = nd->fa[1];
    op.eps = nd->fa[2];
    op.init = nd->fa[3];
    op.maximize = nd->ia[5] != 0;
    op.group = sl.group, op.clipv = sl.clipv, op.coef = 1.0f;
    ANVIL_TRY(need_state(ex, "adagrad", 1));
    slots3 st = {{sl.s[0], NULL, NULL}};
    adagrad_kernel<<<optim_blocks(c, n), ANVIL_CUDA_THREADS, 0, c->stream>>>(sl.p, sl.g, st, n, ex->hyper, op,
                                                                           nd->fa[0], slots_aligned(sl, st));
    return anvil_cuda_launched(c, "adagrad");
}

/* ---------------------------------------------------------------- Adadelta */

typedef struct {
    float lr, rho, eps, wd, clipv, coef;
    int maximize, group;
    /* s[0] square_avg, s[1] acc_delta */
    __device__ __forceinline__ void operator()(float &p, float g, float *s) const
    {
        g = clipped(g, clipv, coef);
        if (maximize)
            g = -g;
        if (wd != 0.0f)
            g = __fadd_rn(g, __fmul_rn(wd, p));
        float si = __fadd_rn(__fmul_rn(rho, s[0]), __fmul_rn(__fmul_rn(1.0f - rho, g), g));
        s[0] = si;
        float delta = __fmul_rn(__fdiv_rn(__fsqrt_rn(__fadd_rn(s[1], eps)), __fsqrt_rn(__fadd_rn(si, eps))), g);
        s[1] = __fadd_rn(__fmul_rn(rho, s[1]), __fmul_rn(__fmul_rn(1.0f - rho, delta), delta));
        p = __fsub_rn(p, __fmul_rn(lr, delta));
    }
} adadelta_op;

static __global__ void adadelta_kernel(float *params, const float *grads, slots3 st, int64_t n,
                                       const anvil_hyper *h, adadelta_op op, int vec4)
{
    op.lr = h->group[op.group].lr;
    op.coef = h->clip_coef;
    flat_update(op, params, grads, st, n, vec4);
}

ANVIL_CUDA_KERNEL(adadelta)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    dslice sl = dslice_of(ex, nd);
    int64_t n = sl.n;
    if (n == 0)
        return ANVIL_OK;
    adadelta_op op;
    op.lr = 0.0f;
    op.rho = nd->fa[0];
    op.eps = nd->fa[1];
    op.wd = nd->fa[2];
    op.maximize = nd->ia[5] != 0;
    op.group = sl.group, op.clipv = sl.clipv, op.coef = 1.0f;
    ANVIL_TRY(need_state(ex, "adadelta", 2));
    slots3 st = {{sl.s[0], sl.s[1], NULL}};
    adadelta_kernel<<<optim_blocks(c, n), ANVIL_CUDA_THREADS, 0, c->stream>>>(sl.p, sl.g, st, n, ex->hyper, op,
                                                                            slots_aligned(sl, st));
    return anvil_cuda_launched(c, "adadelta");
}

/* ---------------------------------------------------------------- NAdam */

typedef struct {
    float b1, b2, eps, wd, clipv, coef;
    int decoupled, maximize, group;
    float bc2, c_grad, c_avg, decay; /* per step, computed on the device */
    /* s[0] exp_avg, s[1] exp_avg_sq */
    __device__ __forceinline__ void operator()(float &p, float g, float *s) const
    {
        float pi = p;
        g = clipped(g, clipv, coef);
        if (maximize)
            g = -g;
        if (wd != 0.0f) {
            if (decoupled)
                pi = __fmul_rn(pi, decay);
            else
                g = __fadd_rn(g, __fmul_rn(wd, pi));
        }
        float mi = lerp_w(s[0], g, 1.0f - b1);
        float vi = __fadd_rn(__fmul_rn(b2, s[1]), __fmul_rn(__fmul_rn(1.0f - b2, g), g));
        s[0] = mi;
        s[1] = vi;
        float denom = __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, bc2)), eps);
        pi = __fsub_rn(pi, __fdiv_rn(__fmul_rn(c_grad, g), denom));
        p = __fsub_rn(pi, __fdiv_rn(__fmul_rn(c_avg, mi), denom));
    }
} nadam_op;

static __global__ void nadam_kernel(float *params, const float *grads, slots3 st, int64_t n, anvil_hyper *h,
                                    nadam_op op, float momentum_decay, int vec4)
{
    /* The scalars in double, as Python computes them (and the CPU kernel); mu_product is
     * a float32, as torch keeps it.  Thread 0 writes the other parity's slot, so no
     * thread ever reads a value written in this launch. */
    anvil_group_hyper *gh = &h->group[op.group];
    __shared__ float4 ks; /* bc2, c_grad, c_avg, decay: once per block */
    if (threadIdx.x == 0) {
        double lr = (double)gh->lr, t = (double)h->step + 1.0, md = (double)momentum_decay, b1 = (double)op.b1;
        ks.x = (float)__dsub_rn(1.0, pow((double)op.b2, t));
        double mu = __dmul_rn(b1, __dsub_rn(1.0, __dmul_rn(0.5, pow(0.96, __dmul_rn(t, md)))));
        double mu_next =
            __dmul_rn(b1, __dsub_rn(1.0, __dmul_rn(0.5, pow(0.96, __dmul_rn(__dadd_rn(t, 1.0), md)))));
        double mp_old = h->step == 0 ? 1.0 : (double)gh->nadam_mu_product[h->step & 1];
        float mp = (float)__dmul_rn(mp_old, mu);
        if (blockIdx.x == 0)
            gh->nadam_mu_product[(h->step + 1) & 1] = mp;
        ks.y = (float)__ddiv_rn(__dmul_rn(lr, __dsub_rn(1.0, mu)), __dsub_rn(1.0, (double)mp));
        ks.z = (float)__ddiv_rn(__dmul_rn(lr, mu_next), __dsub_rn(1.0, __dmul_rn((double)mp, mu_next)));
        ks.w = (float)__dsub_rn(1.0, __dmul_rn(lr, (double)op.wd));
    }
    __syncthreads();
    op.coef = h->clip_coef;
    op.bc2 = ks.x, op.c_grad = ks.y, op.c_avg = ks.z, op.decay = ks.w;
    flat_update(op, params, grads, st, n, vec4);
}

ANVIL_CUDA_KERNEL(nadam)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    dslice sl = dslice_of(ex, nd);
    int64_t n = sl.n;
    if (n == 0)
        return ANVIL_OK;
    nadam_op op;
    memset(&op, 0, sizeof op);
    op.b1 = nd->fa[0];
    op.b2 = nd->fa[1];
    op.eps = nd->fa[2];
    op.wd = nd->fa[3];
    op.decoupled = nd->ia[0] != 0;
    op.maximize = nd->ia[5] != 0;
    op.group = sl.group, op.clipv = sl.clipv, op.coef = 1.0f;
    ANVIL_TRY(need_state(ex, "nadam", 2));
    slots3 st = {{sl.s[0], sl.s[1], NULL}};
    nadam_kernel<<<optim_blocks(c, n), ANVIL_CUDA_THREADS, 0, c->stream>>>(sl.p, sl.g, st, n, ex->hyper, op,
                                                                         nd->fa[4], slots_aligned(sl, st));
    return anvil_cuda_launched(c, "nadam");
}

/* ---------------------------------------------------------------- bookkeeping */

static __global__ void step_end_kernel(anvil_hyper *h, int64_t data_batch)
{
    anvil_pdl_wait();
    h->step += 1;
    h->rng_counter += 1;
    h->data_cursor += data_batch; /* resident data: the batch just used */
    if (h->sched.kind != ANVIL_SCHED_PLATEAU) /* plateau: the host sets the lr */
        for (int g = 0; g < h->n_groups; g++)
            h->group[g].lr = anvil_schedule_lr(&h->sched, h->group[g].base_lr, h->step);
}

/* ---------------------------------------------------------------- gradient clipping */

/* The CPU's clip_norm, with the same ANVIL_CLIP_BLOCKS chunks: block b sums chunk b of
 * the gradients (in double, in a fixed tree order) into hyper->clip_partial[b]; then
 * one thread adds the partials in order.  No atomics: the same result every run. */
static __global__ void clip_partial_kernel(const float *g, int64_t n, anvil_hyper *h, float v, double p)
{
    __shared__ double red[ANVIL_CUDA_THREADS];
    bool inf = isinf(p);
    int64_t chunk = (n + ANVIL_CLIP_BLOCKS - 1) / ANVIL_CLIP_BLOCKS;
    int64_t begin = (int64_t)blockIdx.x * chunk, end = begin + chunk < n ? begin + chunk : n;
    double acc = 0.0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
        double a = fabs((double)clipped(g[i], v, 1.0f));
        if (inf)
            acc = a > acc ? a : acc;
        else
            acc += p == 2.0 ? a * a : pow(a, p);
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w)
            red[threadIdx.x] = inf ? fmax(red[threadIdx.x], red[threadIdx.x + w]) : red[threadIdx.x] + red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        h->clip_partial[blockIdx.x] = red[0];
}

static __global__ void clip_final_kernel(anvil_hyper *h, float max_norm, double p)
{
    bool inf = isinf(p);
    double total = 0.0;
    for (int b = 0; b < ANVIL_CLIP_BLOCKS; b++)
        total = inf ? fmax(total, h->clip_partial[b]) : total + h->clip_partial[b];
    float norm = (float)(inf ? total : p == 2.0 ? sqrt(total) : pow(total, 1.0 / p));
    float coef = __fdiv_rn(max_norm, __fadd_rn(norm, 1e-6f));
    h->grad_norm = norm;
    h->clip_coef = coef < 1.0f ? coef : 1.0f;
}

ANVIL_CUDA_KERNEL(clip_norm)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *nd = s->node;
    clip_partial_kernel<<<ANVIL_CLIP_BLOCKS, ANVIL_CUDA_THREADS, 0, c->stream>>>(ex->grads, ex->n_params, ex->hyper,
                                                                                nd->fa[2], (double)nd->fa[1]);
    ANVIL_TRY(anvil_cuda_launched(c, "clip_norm"));
    clip_final_kernel<<<1, 1, 0, c->stream>>>(ex->hyper, nd->fa[0], (double)nd->fa[1]);
    return anvil_cuda_launched(c, "clip_norm");
}

ANVIL_CUDA_KERNEL(step_end)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    int64_t data_batch = s->node->n_in == 1 ? s->in_node[0]->shape[0] : 0;
    ANVIL_CUDA_CHECK(anvil_cuda_launch(step_end_kernel, 1, 1, 0, c->stream, ex->hyper, data_batch), "step_end");
    return anvil_cuda_launched(c, "step_end");
}
