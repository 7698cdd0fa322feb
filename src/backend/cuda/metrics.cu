/* metrics.cu — loss and accuracy accumulated in the device-resident hyper block, so a
 * step never waits on the host (src/backend/cpu/metrics.c gives the semantics). */
#include "backend/cuda/cuda_internal.h"

static __global__ void accum_loss_kernel(const float *loss, anvil_hyper *h)
{
    float l = loss[0];
    h->loss_last = l;
    h->loss_sum += (double)l;
    h->loss_count += 1.0;
}

ANVIL_CUDA_KERNEL(accum_loss)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    accum_loss_kernel<<<1, 1, 0, c->stream>>>((const float *)s->in[0], ex->hyper);
    return anvil_cuda_launched(c, "accum_loss");
}

/* One block: each thread takes every blockDim-th row, finds its argmax (first on ties,
 * NaN counting as the largest, as torch.argmax) and counts matches; an integer block sum
 * (exact in any order), then thread 0 updates the hyper block. */
#define EVAL_THREADS 256
static __global__ void accum_eval_kernel(const float *loss, const float *y, const int32_t *lab,
                                         int64_t N, int64_t C, anvil_hyper *h)
{
    __shared__ long long sh[32];
    long long correct = 0;
    if (lab) {
        for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
            const float *r = y + n * C;
            int64_t best = 0;
            for (int64_t c = 1; c < C; c++) {
                if (isnan(r[best]))
                    break;
                if (r[c] > r[best] || isnan(r[c]))
                    best = c;
            }
            correct += best == (int64_t)lab[n];
        }
    }
    correct = anvil_cuda_block_sum(correct, sh);
    if (threadIdx.x == 0) {
        h->eval_loss_sum += (double)loss[0] * (double)N;
        h->eval_count += (double)N;
        if (lab)
            h->eval_correct += (double)correct;
    }
}

ANVIL_CUDA_KERNEL(accum_eval)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *out = s->in_node[1];
    int64_t N = out->ndim >= 1 ? out->shape[0] : 1;
    int64_t C = N ? anvil_node_numel(out) / N : 0;
    const int32_t *lab = s->node->n_in >= 3 && N > 0 ? (const int32_t *)s->in[2] : NULL;
    accum_eval_kernel<<<1, EVAL_THREADS, 0, c->stream>>>((const float *)s->in[0],
                                                         (const float *)s->in[1], lab, N, C, ex->hyper);
    return anvil_cuda_launched(c, "accum_eval");
}
