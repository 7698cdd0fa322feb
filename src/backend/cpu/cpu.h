/* cpu.h — helpers shared by the CPU kernels (internal): sizes, threading thresholds,
 * deterministic reductions and broadcast iteration. */
#ifndef ANVIL_CPU_H
#define ANVIL_CPU_H

#include "backend/backend.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

/* Below this many elements an op runs on one thread.  A parallel region is cheap on an
 * idle machine, but its barrier waits for every thread: on a loaded machine (tests and
 * builds beside us) or next to OpenBLAS's own threads, a descheduled or spinning thread
 * costs milliseconds, and an MLP step with many 64k-element regions ran 10x slower
 * (measured: 5 ms/step with these thresholds vs 40-120 ms with 32k).  So only ops long
 * enough (~1 ms of memory traffic) to pay for that go parallel. */
#define CPU_PAR_MIN (1 << 20)
/* The same for ops that spend tens of cycles per element (exp, erf, tanh, Philox). */
#define CPU_PAR_MIN_HEAVY (1 << 17)
/* Deterministic reductions split their range into at most this many fixed chunks; the
 * chunk size depends only on the length, never on the thread count. */
#define CPU_MAX_CHUNKS 1024

/* gelu(v) with approximate="tanh" (PyTorch's formula): the activation, and linear's fused
 * epilogue (graph/fuse.c). */
#define K_GELU_BETA 0.79788456080286535588f /* sqrt(2/pi) */
#define K_GELU_KAPPA 0.044715f
static inline float cpu_gelu_tanh(float v)
{
    return 0.5f * v * (1.0f + tanhf(K_GELU_BETA * (v + K_GELU_KAPPA * v * v * v)));
}

/* conv.c: the planned workspace a convolution kernel takes (column buffers, partials). */
size_t anvil_cpu_conv_workspace(const anvil_graph *g, const anvil_node *n);

static inline int64_t cpu_numel(const anvil_node *n)
{
    int64_t k = 1;
    for (int d = 0; d < n->ndim; d++)
        k *= n->shape[d];
    return k;
}

/* Product of shape[lo..hi). */
static inline int64_t cpu_prod(const int64_t *shape, int lo, int hi)
{
    int64_t k = 1;
    for (int d = lo; d < hi; d++)
        k *= shape[d];
    return k;
}

static inline int64_t cpu_min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- deterministic sums: f(ctx, begin, end) sums a sub-range; chunks are fixed by n
 * and min_chunk alone and their partials are added in order, so the result is the same
 * bit for bit whatever the thread count. */
typedef double (*cpu_range_fn)(const void *ctx, int64_t begin, int64_t end);

static inline double cpu_det_sum(int64_t n, int64_t min_chunk, bool par, cpu_range_fn f,
                                 const void *ctx)
{
    if (n <= 0)
        return 0.0;
    int64_t chunk = (n + CPU_MAX_CHUNKS - 1) / CPU_MAX_CHUNKS;
    if (chunk < min_chunk)
        chunk = min_chunk;
    int64_t nc = (n + chunk - 1) / chunk;
    double part[CPU_MAX_CHUNKS];
#pragma omp parallel for if (par && nc > 1) schedule(static)
    for (int64_t c = 0; c < nc; c++)
        part[c] = f(ctx, c * chunk, cpu_min64(n, (c + 1) * chunk));
    double s = 0.0;
    for (int64_t c = 0; c < nc; c++)
        s += part[c];
    return s;
}

/* Sum of x[0..n) in double; four accumulators for instruction-level parallelism. */
static inline double cpu_sum_serial(const float *x, int64_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++)
        s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

static inline double cpu_sum_range_(const void *ctx, int64_t b, int64_t e)
{
    return cpu_sum_serial((const float *)ctx + b, e - b);
}

/* Deterministic sum of a contiguous float array (parallel when par). */
static inline double cpu_sum_f32(const float *x, int64_t n, bool par)
{
    return cpu_det_sum(n, 4096, par, cpu_sum_range_, x);
}

/* ---- broadcast iteration over an output shape with up to two inputs (NumPy rules,
 * right-aligned).  Dims of size 1 are dropped and neighbours whose strides chain are
 * merged, so common cases collapse to one or two dims: equal shapes to {n} with strides
 * {1}, a trailing row vector to {rows, n} with strides {0, 1}. */
typedef struct {
    int nd;
    int nin;
    int64_t dim[ANVIL_MAX_DIMS];
    int64_t st[2][ANVIL_MAX_DIMS]; /* element strides per input; 0 = broadcast */
} cpu_bcast;

static inline void cpu_bcast_init(cpu_bcast *it, const anvil_node *out, int nin,
                                  const anvil_node *const *in)
{
    int64_t dim[ANVIL_MAX_DIMS], st[2][ANVIL_MAX_DIMS];
    int nd = 0;
    it->nin = nin;
    for (int d = 0; d < out->ndim; d++) {
        if (out->shape[d] == 1)
            continue; /* contributes nothing to any offset */
        dim[nd] = out->shape[d];
        for (int k = 0; k < nin; k++) {
            int ad = d - (out->ndim - in[k]->ndim);
            if (ad < 0 || in[k]->shape[ad] == 1)
                st[k][nd] = 0;
            else
                st[k][nd] = cpu_prod(in[k]->shape, ad + 1, in[k]->ndim);
        }
        nd++;
    }
    /* Merge dim j into the previous kept dim when every input's strides chain. */
    int m = 0;
    for (int j = 0; j < nd; j++) {
        bool merge = m > 0;
        for (int k = 0; k < nin && merge; k++)
            merge = it->st[k][m - 1] == st[k][j] * dim[j];
        if (merge) {
            it->dim[m - 1] *= dim[j];
            for (int k = 0; k < nin; k++)
                it->st[k][m - 1] = st[k][j];
        } else {
            it->dim[m] = dim[j];
            for (int k = 0; k < nin; k++)
                it->st[k][m] = st[k][j];
            m++;
        }
    }
    if (m == 0) { /* a single element */
        it->dim[0] = 1;
        for (int k = 0; k < 2; k++)
            it->st[k][0] = 0;
        m = 1;
    }
    it->nd = m;
}

/* Offsets into each input of the first element of outer row `row` (all dims but the
 * last). */
static inline void cpu_bcast_row(const cpu_bcast *it, int64_t row, int64_t off[2])
{
    off[0] = off[1] = 0;
    for (int d = it->nd - 2; d >= 0; d--) {
        int64_t i = row % it->dim[d];
        row /= it->dim[d];
        for (int k = 0; k < it->nin; k++)
            off[k] += i * it->st[k][d];
    }
}

/* Work items for a broadcast loop: (row, block of the last dim), so a long last dim
 * still spreads over threads. */
#define CPU_BCAST_BLOCK 4096

#endif
