/* conv_tiles.h — conv.cu's register-tiled kernels for the backward passes of 3x3 "same"
 * convolutions (stride 1, padding 1, undilated, ungrouped) with few channels (the cnn's
 * second layer: cuDNN's data gradient took 42 µs for ~14 µs of multiply-adds at the fp32
 * peak; H200).  Defined in conv_tiles.cu, called by conv.cu's
 * dispatch before its other paths.  Each returns ANVIL_ERR_UNSUPPORTED (nothing launched,
 * no message) for a shape it does not take; with plan != NULL it launches nothing and sets
 * *plan to the workspace bytes it needs. */
#ifndef ANVIL_CONV_TILES_H
#define ANVIL_CONV_TILES_H

#include "backend/cuda/cuda_internal.h"

/* dx [N,C,H,W] of y = conv(x, w [O,C,3,3]), from dy [N,O,H,W] */
anvil_status anvil_conv_tiles_dgrad(anvil_cuda_ctx *c, int64_t N, int64_t C, int64_t O, int64_t H, int64_t W,
                                    const float *dy, const float *w, float *dx, size_t *plan);

/* dw [O,C,3,3] from x [N,C,H,W] and dy [N,O,H,W]; ws: the step's workspace (ws_bytes of it) */
anvil_status anvil_conv_tiles_wgrad(anvil_cuda_ctx *c, int64_t N, int64_t C, int64_t O, int64_t H, int64_t W,
                                    const float *x, const float *dy, float *dw, void *ws, size_t ws_bytes,
                                    size_t *plan);

/* conv.cu: dw[v] = sum over p < P of part[p * outs + v], in a fixed order (deterministic) */
anvil_status anvil_conv_sum_partials(anvil_cuda_ctx *c, const float *part, float *dw, int outs, int P,
                                     const char *what);

#ifdef __CUDACC__
/* one float global -> shared without a register round trip (cp.async, sm_80+): a
 * thread's copies are all in flight at once (a load-then-store loop waits out one latency
 * per row: with it conv.cu's wtile kernel took 111 µs on the cnn's second layer, with
 * cp.async 84.5); a false `valid` writes a zero and reads nothing (src must still be a
 * valid address) */
static __device__ __forceinline__ void anvil_cp_async4(float *dst, const float *src, bool valid)
{
    unsigned int d = (unsigned int)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 4 : 0) : "memory");
}
#endif

#endif
