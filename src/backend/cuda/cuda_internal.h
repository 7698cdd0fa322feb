/* cuda_internal.h — what the CUDA backend's files share: the backend context (stream,
 * cuBLASLt handle and workspace, staging buffers, the device error word, the reduction
 * scratch), error helpers, and (for CUDA sources) device helpers: index decoding for
 * broadcasting, deterministic block reductions, launch-size helpers.
 *
 * Rules every kernel wrapper follows (they are captured into a CUDA graph):
 *  - launch on ctx->stream only; never allocate, synchronize or copy to the host;
 *  - read hyperparameters (lr, step, seeds) inside the kernel from ex->hyper;
 *  - reductions are deterministic: a fixed grid for a given shape, tree reductions in
 *    shared memory, a second pass over per-block partials in ctx->scratch — no atomics
 *    whose order could change a result;
 *  - a data error found on the device (a label outside [0, C)) sets a bit of the error
 *    word instead of failing mid-graph; sync and download report it. */
#ifndef ANVIL_CUDA_INTERNAL_H
#define ANVIL_CUDA_INTERNAL_H

#include "backend/backend.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#ifdef ANVIL_HAVE_CUDNN
#include <cudnn.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bits of the device error word. */
enum {
    ANVIL_CUDA_ERR_LABEL = 1u << 0, /* cross_entropy(_bwd): a class label outside [0, C) */
};

#define ANVIL_CUDA_STAGING_SLOTS 4
#define ANVIL_CUDA_STAGING_BYTES ((size_t)4 << 20)     /* per slot */
#define ANVIL_CUDA_LT_WORKSPACE ((size_t)32 << 20)     /* cuBLASLt workspace */
#define ANVIL_CUDA_SCRATCH_FLOATS (1 << 18)            /* per-block partial sums, per lane */
#define ANVIL_CUDA_LANES 4                             /* concurrent streams in a graph */
#define ANVIL_CUDA_MAX_PARTIALS 1024                   /* blocks of a split reduction */
#define ANVIL_SIMT_COUNTERS 4096                       /* matmul.cu's split-K tile counters, per lane */
#define ANVIL_CUDA_MAX_ADAM ANVIL_MAX_PARAM_GROUPS     /* Adam updates whose constants are prepared */

typedef struct {
    anvil_backend *be;      /* back-pointer, for the counters */
    int device;
    int sm_count;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;     /* ANVIL_CUDA_LT_WORKSPACE bytes, allocated once */
    float *scratch;         /* ANVIL_CUDA_SCRATCH_FLOATS floats, device (partials, float or double) */
    /* pinned host staging: upload ring slots, each with the event of its last copy */
    char *staging;          /* ANVIL_CUDA_STAGING_SLOTS * ANVIL_CUDA_STAGING_BYTES */
    cudaEvent_t staging_done[ANVIL_CUDA_STAGING_SLOTS];
    bool staging_used[ANVIL_CUDA_STAGING_SLOTS];
    int staging_next;
    /* batch uploads (upload_batch): slot k's device landing buffer, the event of the
     * on-device copy out of it, and the copy stream; copy_stream NULL when turned off
     * (ANVIL_CUDA_COPY_STREAM=0) */
    char *landing;          /* ANVIL_CUDA_STAGING_SLOTS * ANVIL_CUDA_STAGING_BYTES, device */
    cudaEvent_t landing_free[ANVIL_CUDA_STAGING_SLOTS];
    cudaStream_t copy_stream;
    /* the error word: mapped pinned host memory the device writes (no copy to read it) */
    unsigned int *err_host;
    unsigned int *err_dev;
    bool capturing;         /* inside run()'s stream capture */
    /* Adam's per-step constants, computed at the start of the step (optim.cu's
     * anvil_cuda_adam_prepare, from capture_lanes) for the updates adam_prep[0..n) */
    void *adam_consts;      /* ANVIL_CUDA_MAX_ADAM x 3 floats, device */
    /* the resident data's images and labels GATHER steps that capture_lanes paired: the
     * first of them to be captured launches one kernel for both (gather.cu) */
    const anvil_step *gather_pair[2];
    bool gather_pair_done;
    const anvil_step *adam_prep[ANVIL_CUDA_MAX_ADAM];
    int adam_prep_n;
    /* Capture lanes: independent steps are captured on different streams so that the
     * graph runs them concurrently.  Lane 0 is `stream`; each lane has its own cuBLASLt
     * workspace and reduction scratch, and a kernel uses the current lane's (stream,
     * lt_workspace and scratch above point at them while a step is captured). */
    cudaStream_t lane_stream[ANVIL_CUDA_LANES];
    void *lane_ws[ANVIL_CUDA_LANES];
    float *lane_scratch[ANVIL_CUDA_LANES];
    /* matmul.cu's own split-K products (simt_gemm.cuh): per lane, tile counters that the
     * last block of each tile resets to 0; gemm_counters points at the current lane's */
    unsigned int *counters_base; /* ANVIL_CUDA_LANES * ANVIL_SIMT_COUNTERS, one allocation */
    unsigned int *lane_counters[ANVIL_CUDA_LANES];
    unsigned int *gemm_counters;
    /* cuDNN (conv.cu), when built with it: the handle (a cudnnHandle_t), or NULL with
     * cudnn_status holding why cudnnCreate failed (the conv ops then report it; nothing
     * else needs cuDNN).  One handle serves every lane: a kernel sets its stream to the
     * current lane's before each call; its workspace is the step's planned one. */
    void *cudnn;
    int cudnn_status;
    size_t dnn_ws_max;      /* the most planned workspace one cuDNN call may take (conv.cu) */
} anvil_cuda_ctx;

/* conv.cu: the planned workspace bytes a convolution node's kernel takes (0 for others). */
size_t anvil_cuda_conv_workspace(anvil_cuda_ctx *c, const anvil_graph *g, const anvil_node *n);

/* matmul.cu: column-major D[m,n] = op(A)[m,k] op(B)[k,n] + beta D in fp32 through
 * cuBLASLt, on the current lane (for other kernels that reduce to a matrix product). */
/* matmul.cu: ANVIL_SIMT_GEMM as 0 (Anvil's own small-shape kernels off), 1 (default) or 2 (all). */
int anvil_cuda_simt_mode(void);
/* Whether kernels launched through anvil_cuda_launch may start before the kernel ahead of
 * them in the stream has finished (programmatic dependent launch); ANVIL_PDL=0 turns it
 * off.  Read once per process. */
int anvil_cuda_pdl(void);
/* optim.cu: launches the kernel computing the constants of Adam updates adams[0..n) for
 * this step (into c->adam_consts; those updates then read them), on the current lane. */
anvil_status anvil_cuda_adam_prepare(const anvil_exec *ex, const anvil_step *const *adams, int n);
anvil_status anvil_cuda_gemm_f32(anvil_cuda_ctx *c, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *D, int64_t ldd,
                                 const char *what);

/* chansum.cu: per-channel double sums over x (and dy) viewed as [N, C, S], into the
 * lane's scratch: *sums -> [C][4] = {sum x, sum x^2, sum dy, sum dy x} (those of `what`,
 * others 0), valid for kernels launched after it on the same lane. */
enum { ANVIL_CHAN_X = 1, ANVIL_CHAN_DY = 2 };
anvil_status anvil_cuda_chan_sums(anvil_cuda_ctx *c, const float *x, const float *dy, int64_t N, int64_t C,
                                  int64_t S, int what, const char *op, double **sums);

/* A CUDA call failed: records "what: <cuda error string>" as ANVIL_ERR_DEVICE. */
anvil_status anvil_cuda_fail(cudaError_t e, const char *what);
anvil_status anvil_cuda_lt_fail(cublasStatus_t st, const char *what);
/* After a kernel launch: checks cudaGetLastError and counts the launch as a host kernel
 * launch when it was not made inside a stream capture. */
anvil_status anvil_cuda_launched(anvil_cuda_ctx *c, const char *kernel);

static inline anvil_cuda_ctx *anvil_cuda_ctx_of(const anvil_exec *ex)
{
    return (anvil_cuda_ctx *)ex->backend;
}

#ifdef __cplusplus
}
#endif

#define ANVIL_CUDA_CHECK(call, what)                    \
    do {                                                \
        cudaError_t anvil_cuda_e_ = (call);             \
        if (anvil_cuda_e_ != cudaSuccess)               \
            return anvil_cuda_fail(anvil_cuda_e_, what); \
    } while (0)

/* Defines the C-linkage kernel entry point anvil_cuda_<name> of oplist.h. */
#ifdef __cplusplus
#define ANVIL_CUDA_KERNEL(name) \
    extern "C" anvil_status anvil_cuda_##name(const anvil_exec *ex, const anvil_step *s)
#endif

/* ------------------------------------------------------------------ device helpers */
#ifdef __CUDACC__

#define ANVIL_CUDA_THREADS 256

/* Raises a bit of the error word (mapped host memory).  A plain store, not an atomic
 * (atomics on host memory need PCIe atomics): there is one bit today, and every writer
 * stores the same value.  A second bit would need its own word. */
static __device__ __forceinline__ void anvil_cuda_flag_error(unsigned int *err, unsigned int bit)
{
    *(volatile unsigned int *)err = bit;
}

/* Programmatic dependent launch (sm_90, pdl.cuh): a kernel launched through
 * anvil_cuda_launch may be scheduled while the kernel ahead of it in the stream is still
 * running, so that the launch latency of a chain of short dependent kernels overlaps their
 * tails.  Every such kernel calls anvil_pdl_wait() first, so the overlap never reaches the
 * data. */
#include "pdl.cuh"

/* Launches kern<<<grid, block, smem, st>>>(args...), with programmatic stream
 * serialization when anvil_cuda_pdl() (kern must start with anvil_pdl_wait()). */
template <typename... K, typename... A>
static inline cudaError_t anvil_cuda_launch(void (*kern)(K...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                            A... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    if (anvil_cuda_pdl()) {
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at;
        cfg.numAttrs = 1;
    }
    return cudaLaunchKernelEx(&cfg, kern, args...);
}

static inline unsigned int anvil_cuda_blocks(int64_t n, int threads, unsigned int cap = 65535u * 8)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1)
        b = 1;
    if (b > (int64_t)cap)
        b = cap;
    return (unsigned int)b;
}

/* Shapes, aligned to the right (NumPy broadcasting), with element strides; a stride of
 * 0 repeats (broadcasts) that dim.  Passed to kernels by value. */
typedef struct {
    int ndim;
    int64_t shape[ANVIL_MAX_DIMS];
    int64_t sa[ANVIL_MAX_DIMS]; /* strides of operand a over the output's dims */
    int64_t sb[ANVIL_MAX_DIMS]; /* strides of operand b (0 where broadcast) */
} anvil_cuda_bcast;

/* Strides of a tensor of shape (nd, shape) viewed as broadcast to (ondim, oshape). */
static inline void anvil_cuda_bcast_strides(int nd, const int64_t *shape, int ondim,
                                            const int64_t *oshape, int64_t *strides)
{
    int64_t st = 1;
    for (int i = ondim - 1, j = nd - 1; i >= 0; i--, j--) {
        if (j >= 0 && shape[j] == oshape[i] && shape[j] != 1) {
            strides[i] = st;
            st *= shape[j];
        } else {
            strides[i] = 0;
            if (j >= 0)
                st *= shape[j]; /* shape[j] == 1 */
        }
    }
}

static __device__ __forceinline__ void anvil_cuda_bcast_offsets(const anvil_cuda_bcast &b,
                                                                int64_t i, int64_t *oa,
                                                                int64_t *ob)
{
    int64_t a = 0, bb = 0;
    for (int d = b.ndim - 1; d >= 0; d--) {
        int64_t n = b.shape[d];
        int64_t k = i % n;
        i /= n;
        a += k * b.sa[d];
        bb += k * b.sb[d];
    }
    *oa = a;
    *ob = bb;
}

/* Deterministic block sum: every thread passes its value, every thread gets the total
 * (a fixed shuffle tree within warps, then warp sums in a fixed order).  blockDim.x must
 * be a multiple of 32 and at most 1024; shared is a __shared__ T[32]. */
template <typename T>
static __device__ __forceinline__ T anvil_cuda_warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
static __device__ __forceinline__ T anvil_cuda_warp_max(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

template <typename T>
static __device__ T anvil_cuda_block_sum(T v, T *shared)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = anvil_cuda_warp_sum(v);
    __syncthreads(); /* shared may be reused from a previous call */
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    T t = lane < nwarps ? shared[lane] : (T)0;
    t = anvil_cuda_warp_sum(t);
    return t;
}

template <typename T>
static __device__ T anvil_cuda_block_max(T v, T *shared)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = anvil_cuda_warp_max(v);
    __syncthreads();
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    T t = lane < nwarps ? shared[lane] : shared[0];
    t = anvil_cuda_warp_max(t);
    return t;
}

/* Two-pass deterministic sum of n per-element values f(i) into *out (divided by `div`):
 * pass 1 — a fixed grid (a function of n only) of blocks, each summing a contiguous
 * range into scratch[blockIdx]; pass 2 — one block sums the partials in order. */
#define ANVIL_CUDA_SPLIT_THREADS 256
static inline unsigned int anvil_cuda_split_blocks(int64_t n)
{
    int64_t b = (n + ANVIL_CUDA_SPLIT_THREADS * 8 - 1) / (ANVIL_CUDA_SPLIT_THREADS * 8);
    if (b < 1)
        b = 1;
    if (b > ANVIL_CUDA_MAX_PARTIALS)
        b = ANVIL_CUDA_MAX_PARTIALS;
    return (unsigned int)b;
}

/* Pass 1 body: the block sums f(i) (as T) over its contiguous range of [0, n); every
 * thread gets the block's sum. */
template <typename T, typename F>
static __device__ T anvil_cuda_split_partial(int64_t n, F f)
{
    __shared__ T sh[32];
    int64_t per = (n + gridDim.x - 1) / gridDim.x;
    int64_t lo = (int64_t)blockIdx.x * per, hi = lo + per < n ? lo + per : n;
    T acc = 0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        acc += (T)f(i);
    return anvil_cuda_block_sum(acc, sh);
}

/* Pass 2: out[0] = (O)(sum(partials[0..np)) / div), summed by one block in a fixed
 * order.  (A template, so each source file gets its own instance.) */
template <typename T, typename O>
static __global__ void anvil_cuda_finish_sum(const T *partials, int np, T div, O *out)
{
    __shared__ T sh[32];
    T acc = 0;
    for (int i = threadIdx.x; i < np; i += blockDim.x)
        acc += partials[i];
    acc = anvil_cuda_block_sum(acc, sh);
    if (threadIdx.x == 0)
        out[0] = (O)(acc / div);
}

#endif /* __CUDACC__ */
#endif
