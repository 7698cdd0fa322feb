/* cuda.cu — the CUDA backend: device memory, copies through pinned staging buffers,
 * and program runs as CUDA graphs.  The first run of a program captures every step's
 * kernel on the backend's stream into a CUDA graph (stored in p->backend_state); every
 * run, the first included, is then one cudaGraphLaunch. */
#include "backend/cuda/cuda_internal.h"

extern "C" anvil_status anvil_cuda_fail(cudaError_t e, const char *what)
{
    return anvil_fail(ANVIL_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(e));
}

extern "C" anvil_status anvil_cuda_lt_fail(cublasStatus_t st, const char *what)
{
    return anvil_fail(ANVIL_ERR_DEVICE, "%s: %s (%s)", what, cublasLtGetStatusName(st),
                      cublasLtGetStatusString(st));
}

extern "C" anvil_status anvil_cuda_launched(anvil_cuda_ctx *c, const char *kernel)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return anvil_fail(ANVIL_ERR_DEVICE, "launching kernel %s: %s", kernel,
                          cudaGetErrorString(e));
    if (!c->capturing && c->be)
        c->be->counters.host_kernel_launches++;
    return ANVIL_OK;
}

/* ---------------------------------------------------------------- availability */

/* The build holds sm_90 code and compute_90 PTX: a usable device has compute
 * capability 9.0 or newer.  On success *dev is the first such device. */
static bool find_device(int *dev, char *why, size_t cap)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, cap, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        cudaGetLastError();
        return false;
    }
    if (n <= 0) {
        snprintf(why, cap, "cudaGetDeviceCount found no device");
        return false;
    }
    for (int i = 0; i < n; i++) {
        int major = 0, minor = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i) != cudaSuccess ||
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i) != cudaSuccess) {
            cudaGetLastError();
            continue;
        }
        if (major >= 9) {
            *dev = i;
            return true;
        }
        snprintf(why, cap, "device %d has compute capability %d.%d; this build needs 9.0 or newer",
                 i, major, minor);
    }
    return false;
}

/* False (with the reason as the last error) when no usable GPU or driver is present. */
extern "C" bool anvil_cuda_available(void)
{
    int dev;
    char why[256];
    if (find_device(&dev, why, sizeof why))
        return true;
    anvil_fail(ANVIL_ERR_DEVICE, "no CUDA device: %s", why);
    return false;
}

/* ---------------------------------------------------------------- error word */

/* Reports (once) a data error the device flagged; called after a synchronization. */
static anvil_status check_error_word(anvil_cuda_ctx *c)
{
    unsigned int w = *(volatile unsigned int *)c->err_host;
    if (!w)
        return ANVIL_OK;
    *(volatile unsigned int *)c->err_host = 0;
    if (w & ANVIL_CUDA_ERR_LABEL)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "cross_entropy: label outside [0, C)");
    return anvil_fail(ANVIL_ERR_DEVICE, "cuda backend: device error word 0x%x", w);
}

/* ---------------------------------------------------------------- memory */

static anvil_cuda_ctx *ctx_of(anvil_backend *be) { return (anvil_cuda_ctx *)be->ctx; }

static anvil_status cuda_alloc(anvil_backend *be, size_t bytes, void **out)
{
    *out = NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : ANVIL_ALIGN);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
            cudaGetLastError();
        return anvil_fail(ANVIL_ERR_OOM,
                          "cudaMalloc: out of device memory allocating %zu bytes "
                          "(%zu of %zu bytes free)", bytes, free_b, total_b);
    }
    if (e != cudaSuccess)
        return anvil_fail(ANVIL_ERR_DEVICE, "cudaMalloc(%zu bytes): %s", bytes,
                          cudaGetErrorString(e));
    be->counters.device_allocs++;
    *out = p;
    return ANVIL_OK;
}

static void cuda_free(anvil_backend *be, void *p)
{
    (void)be;
    if (p && cudaFree(p) != cudaSuccess)
        cudaGetLastError();
}

/* The next chunk of an upload, src[done, done + *n) with *n at most a slot, copied by the
 * host into the next staging slot *slot (*stage), after waiting for that slot's last copy
 * only. */
static anvil_status stage_chunk(anvil_cuda_ctx *c, const void *src, size_t bytes, size_t done, size_t *n, int *slot,
                                char **stage)
{
    int k = c->staging_next;
    c->staging_next = (k + 1) % ANVIL_CUDA_STAGING_SLOTS;
    if (c->staging_used[k]) {
        ANVIL_CUDA_CHECK(cudaEventSynchronize(c->staging_done[k]), "cudaEventSynchronize (staging)");
        c->staging_used[k] = false;
    }
    *n = bytes - done < ANVIL_CUDA_STAGING_BYTES ? bytes - done : ANVIL_CUDA_STAGING_BYTES;
    *slot = k;
    *stage = c->staging + (size_t)k * ANVIL_CUDA_STAGING_BYTES;
    memcpy(*stage, (const char *)src + done, *n);
    return ANVIL_OK;
}

static anvil_status cuda_upload(anvil_backend *be, void *dst, const void *src, size_t bytes)
{
    anvil_cuda_ctx *c = ctx_of(be);
    if (c->capturing)
        return anvil_fail(ANVIL_ERR_STATE, "cuda upload: called during graph capture");
    size_t done = 0;
    while (done < bytes) {
        size_t n = 0;
        int k = 0;
        char *stage = NULL;
        ANVIL_TRY(stage_chunk(c, src, bytes, done, &n, &k, &stage));
        ANVIL_CUDA_CHECK(cudaMemcpyAsync((char *)dst + done, stage, n, cudaMemcpyHostToDevice,
                                         c->stream),
                         "cudaMemcpyAsync (host to device)");
        ANVIL_CUDA_CHECK(cudaEventRecord(c->staging_done[k], c->stream), "cudaEventRecord (staging)");
        c->staging_used[k] = true;
        done += n;
    }
    be->counters.h2d_copies++;
    be->counters.h2d_bytes += (int64_t)bytes;
    return ANVIL_OK;
}

/* A batch: each chunk goes host -> pinned staging slot k (by the host) -> device landing
 * buffer k (on the copy stream, so it runs while the earlier graph launches compute) ->
 * dst (an on-device copy on the compute stream, which waits for the chunk's arrival and
 * comes after the earlier launches that read dst).  The copy stream first waits until
 * landing k's previous contents were copied out.  Later work on the compute stream,
 * downloads included, is ordered after these copies. */
static anvil_status cuda_upload_batch(anvil_backend *be, void *dst, const void *src, size_t bytes)
{
    anvil_cuda_ctx *c = ctx_of(be);
    if (c->capturing)
        return anvil_fail(ANVIL_ERR_STATE, "cuda upload: called during graph capture");
    if (!c->copy_stream)
        return cuda_upload(be, dst, src, bytes);
    size_t done = 0;
    while (done < bytes) {
        size_t n = 0;
        int k = 0;
        char *stage = NULL;
        ANVIL_TRY(stage_chunk(c, src, bytes, done, &n, &k, &stage));
        char *land = c->landing + (size_t)k * ANVIL_CUDA_STAGING_BYTES;
        ANVIL_CUDA_CHECK(cudaStreamWaitEvent(c->copy_stream, c->landing_free[k], 0), "cudaStreamWaitEvent (landing)");
        ANVIL_CUDA_CHECK(cudaMemcpyAsync(land, stage, n, cudaMemcpyHostToDevice, c->copy_stream),
                         "cudaMemcpyAsync (host to device)");
        ANVIL_CUDA_CHECK(cudaEventRecord(c->staging_done[k], c->copy_stream), "cudaEventRecord (staging)");
        c->staging_used[k] = true;
        ANVIL_CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->staging_done[k], 0), "cudaStreamWaitEvent (arrival)");
        ANVIL_CUDA_CHECK(cudaMemcpyAsync((char *)dst + done, land, n, cudaMemcpyDeviceToDevice, c->stream),
                         "cudaMemcpyAsync (landing buffer to input)");
        ANVIL_CUDA_CHECK(cudaEventRecord(c->landing_free[k], c->stream), "cudaEventRecord (landing)");
        done += n;
    }
    be->counters.h2d_copies++;
    be->counters.h2d_bytes += (int64_t)bytes;
    return ANVIL_OK;
}

static anvil_status cuda_download(anvil_backend *be, void *dst, const void *src, size_t bytes)
{
    anvil_cuda_ctx *c = ctx_of(be);
    if (c->capturing)
        return anvil_fail(ANVIL_ERR_STATE, "cuda download: called during graph capture");
    /* Every earlier use of the staging slots is ahead of these copies on the stream, and
     * the synchronization below completes them all. */
    char *stage = c->staging;
    size_t done = 0;
    if (bytes == 0)
        ANVIL_CUDA_CHECK(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (download)");
    while (done < bytes) {
        size_t n = bytes - done;
        if (n > ANVIL_CUDA_STAGING_BYTES)
            n = ANVIL_CUDA_STAGING_BYTES;
        ANVIL_CUDA_CHECK(cudaMemcpyAsync(stage, (const char *)src + done, n,
                                         cudaMemcpyDeviceToHost, c->stream),
                         "cudaMemcpyAsync (device to host)");
        ANVIL_CUDA_CHECK(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (download)");
        memcpy((char *)dst + done, stage, n);
        done += n;
    }
    for (int k = 0; k < ANVIL_CUDA_STAGING_SLOTS; k++)
        c->staging_used[k] = false;
    be->counters.d2h_copies++;
    be->counters.d2h_bytes += (int64_t)bytes;
    return check_error_word(c);
}

static anvil_status cuda_zero(anvil_backend *be, void *dst, size_t bytes)
{
    anvil_cuda_ctx *c = ctx_of(be);
    if (bytes == 0)
        return ANVIL_OK;
    ANVIL_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, c->stream), "cudaMemsetAsync");
    return ANVIL_OK;
}

static anvil_status cuda_sync(anvil_backend *be)
{
    anvil_cuda_ctx *c = ctx_of(be);
    ANVIL_CUDA_CHECK(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
    for (int k = 0; k < ANVIL_CUDA_STAGING_SLOTS; k++)
        c->staging_used[k] = false;
    return check_error_word(c);
}

/* ---------------------------------------------------------------- programs */

typedef struct {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
} cuda_program_state;

static void program_state_free(cuda_program_state *st)
{
    if (!st)
        return;
    if (st->exec && cudaGraphExecDestroy(st->exec) != cudaSuccess)
        cudaGetLastError();
    if (st->graph && cudaGraphDestroy(st->graph) != cudaSuccess)
        cudaGetLastError();
    free(st);
}

/* ---- concurrency inside the graph.  A step depends on an earlier one when their memory
 * overlaps with at least one of them writing (read-after-write, write-after-read,
 * write-after-write: the memory plan reuses storage, so all three occur).  Steps that
 * update persistent state (optimizer, bookkeeping, metrics) are barriers. */

typedef struct {
    const char *lo, *hi;
} byte_range;

static bool overlaps(byte_range a, byte_range b) { return a.lo < b.hi && b.lo < a.hi; }

static byte_range range_of(const void *p, const anvil_node *n)
{
    byte_range r;
    r.lo = (const char *)p;
    r.hi = r.lo + (p ? anvil_node_bytes(n) : 0);
    return r;
}

/* Effect steps read or write state beyond their operands (the flat parameter, gradient
 * and optimizer arenas, the step counters that other kernels read).  The metric
 * accumulators are the exception: they write only loss and accuracy sums, which no
 * kernel reads, so they just follow their operands. */
static bool is_barrier(const anvil_step *s)
{
    anvil_op op = s->node->op;
    return (anvil_opdef_of(op)->flags & OPF_EFFECT) && op != OP_ACCUM_LOSS && op != OP_ACCUM_EVAL;
}

/* A step's planned workspace counts as memory it writes. */
static byte_range ws_range(const anvil_step *s)
{
    byte_range r;
    r.lo = (const char *)s->ws;
    r.hi = r.lo + (s->ws ? s->ws_bytes : 0);
    return r;
}

static bool writes_into(const anvil_step *w, byte_range r)
{
    return overlaps(range_of(w->out, w->node), r) || overlaps(ws_range(w), r);
}

static bool depends(const anvil_step *a, const anvil_step *b) /* does a (later) need b? */
{
    if (writes_into(a, range_of(b->out, b->node)) || writes_into(a, ws_range(b)))
        return true;
    for (int i = 0; i < b->node->n_in; i++)
        if (writes_into(a, range_of(b->in[i], b->in_node[i])))
            return true;
    for (int i = 0; i < a->node->n_in; i++)
        if (writes_into(b, range_of(a->in[i], a->in_node[i])))
            return true;
    return false;
}

/* Does later step a wait for step b?  Inside a barrier's window by their memory; a barrier
 * waits for everything before it and everything after it waits for the barrier. */
static bool edge(const anvil_step *a, const anvil_step *b)
{
    return is_barrier(a) || is_barrier(b) || depends(a, b);
}

/* Marks the steps of the program's critical chain: from the step that heads the longest
 * chain of dependent steps, each time the successor that heads the longest remaining one
 * (ties: the one writing more bytes, a product before a bias reduction).  capture_lanes
 * keeps them all on lane 0, so that each follows its predecessor in one stream (the
 * launch overlap of PDL works only there) and side work (the loss value, weight
 * gradients) takes the other lanes.  O(n^2) dependency tests, once per capture. */
static anvil_status critical_chain(const anvil_step *steps, int n, bool *chain)
{
    int *height = (int *)anvil_xmalloc((size_t)(n + 1) * 2 * sizeof *height, "capture heights");
    if (!height)
        return ANVIL_ERR_OOM;
    int *heir = height + n + 1;
    int top = -1;
    for (int i = n - 1; i >= 0; i--) {
        height[i] = 1;
        heir[i] = -1;
        for (int j = i + 1; j < n; j++) {
            if (!edge(&steps[j], &steps[i]))
                continue;
            int hj = height[j] + 1;
            size_t bj = anvil_node_bytes(steps[j].node), bh = heir[i] >= 0 ? anvil_node_bytes(steps[heir[i]].node) : 0;
            if (hj > height[i] || (hj == height[i] && heir[i] >= 0 && bj > bh)) {
                height[i] = hj;
                heir[i] = j;
            }
            if (is_barrier(&steps[j]))
                break; /* later steps depend on i through the barrier */
        }
        if (top < 0 || height[i] >= height[top])
            top = i;
    }
    for (int i = 0; i < n; i++)
        chain[i] = false;
    for (int i = top; i >= 0; i = heir[i])
        chain[i] = true;
    free(height);
    return ANVIL_OK;
}

/* ANVIL_LANES=old: the previous lane choice (the latest dependency's lane when free, else
 * the lane idle longest), for A/B runs; read once. */
static bool chain_lanes(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ANVIL_LANES");
        on = !(e && strcmp(e, "old") == 0);
    }
    return on != 0;
}

static bool reads_from(const anvil_step *w, byte_range r)
{
    for (int k = 0; k < w->node->n_in; k++)
        if (overlaps(range_of(w->in[k], w->in_node[k]), r))
            return true;
    return false;
}

/* The resident data's images gather (on the critical chain) and labels gather of one
 * batch, when one kernel may do both (gather.cu): both depend on nothing before them, and
 * no step between them touches the later one's output (which the pair's kernel writes at
 * the earlier one's place).  Their indices in pair[]; false: none (or ANVIL_GATHER_PAIR=0). */
static bool gather_pair(const anvil_step *steps, int n, const bool *chain, int pair[2])
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ANVIL_GATHER_PAIR");
        on = !(e && strcmp(e, "0") == 0);
    }
    int im = -1, lb = -1;
    for (int i = 0; on && i < n; i++) {
        const anvil_node *nd = steps[i].node;
        if (nd->op != OP_GATHER)
            continue;
        if (nd->ia[0] == 1 && lb < 0)
            lb = i;
        else if (nd->ia[0] != 1 && im < 0 && chain[i])
            im = i;
    }
    if (im < 0 || lb < 0 || steps[im].node->shape[0] != steps[lb].node->shape[0])
        return false;
    int lo = im < lb ? im : lb, hi = im < lb ? lb : im;
    for (int j = 0; j < hi; j++) {
        if (j < lo && (is_barrier(&steps[j]) || depends(&steps[lo], &steps[j])))
            return false;
        if (j != lo && (is_barrier(&steps[j]) || depends(&steps[hi], &steps[j])))
            return false;
    }
    byte_range later = range_of(steps[hi].out, steps[hi].node);
    for (int q = lo + 1; q < hi; q++)
        if (writes_into(&steps[q], later) || reads_from(&steps[q], later))
            return false;
    pair[0] = im;
    pair[1] = lb;
    return true;
}

/* Where an Adam program's STEP_END goes (ANVIL_END_BESIDE): 0 after the updates (the
 * updates compute their constants themselves), 1 beside the updates, 2 (default) as early
 * as its readers allow: right after the last step that reads what it changes. */
static int end_place(void)
{
    static int m = -1;
    if (m < 0) {
        const char *e = getenv("ANVIL_END_BESIDE");
        m = e && (strcmp(e, "0") == 0 || strcmp(e, "1") == 0) ? e[0] - '0' : 2;
    }
    return m;
}

/* Steps whose kernels read the hyper block's data cursor or rng counter (gather.cu,
 * dropout.cu), which STEP_END advances; the step and the lrs, which it also changes, are
 * read only by the updates (from prepared constants here) and the constants' kernel.  A
 * new kernel reading any of them must be listed. */
static bool reads_cursor(anvil_op op)
{
    return op == OP_GATHER || op == OP_DROPOUT || op == OP_DROPOUT_BWD;
}

/* The Adam updates of a program whose only effects are Adam updates, gradient clipping,
 * metric accumulation and one STEP_END: their count (0: not such a program, or
 * ANVIL_END_BESIDE=0), into adams[], and the index of the first one. */
static int adam_program(const anvil_step *steps, int n, const anvil_step **adams, int *first)
{
    int on = end_place() != 0;
    int na = 0, ends = 0;
    *first = -1;
    for (int i = 0; on && i < n; i++) {
        anvil_op op = steps[i].node->op;
        if (op == OP_ADAM) {
            if (na == ANVIL_CUDA_MAX_ADAM)
                return 0;
            if (*first < 0)
                *first = i;
            adams[na++] = &steps[i];
        } else if (op == OP_STEP_END) {
            ends++;
        } else if ((anvil_opdef_of(op)->flags & OPF_EFFECT) && op != OP_CLIP_NORM && op != OP_ACCUM_LOSS &&
                   op != OP_ACCUM_EVAL) {
            return 0;
        }
    }
    return ends == 1 ? na : 0;
}

/* Captures p's steps, spreading independent ones over the lanes: the critical chain on
 * lane 0; any other step continues the lane of its latest dependency when that lane has
 * nothing newer, else takes the side lane idle longest; it waits (an event, a graph edge)
 * for dependencies on other lanes.  Barriers run on lane 0. */
static anvil_status capture_lanes(anvil_cuda_ctx *c, anvil_program *p, const anvil_exec *ex)
{
    int n = p->n_steps - p->n_init;
    const anvil_step *steps = p->steps + p->n_init; /* the constants ran before */
    anvil_status s = ANVIL_OK;
    cudaEvent_t *ev = (cudaEvent_t *)anvil_xcalloc((size_t)n + 2, sizeof *ev, "capture events");
    int *lane = (int *)anvil_xmalloc(((size_t)n + 1) * sizeof *lane, "capture lanes");
    if (!ev || !lane) {
        free(ev);
        free(lane);
        return ANVIL_ERR_OOM;
    }
    bool *chain = (bool *)anvil_xcalloc((size_t)n + 1, sizeof *chain, "capture chain");
    if (!chain) {
        free(ev);
        free(lane);
        return ANVIL_ERR_OOM;
    }
    if (chain_lanes() && ANVIL_CUDA_LANES > 1) {
        s = critical_chain(steps, n, chain);
        if (s != ANVIL_OK) {
            free(chain);
            free(ev);
            free(lane);
            return s;
        }
    }
    cudaStream_t main_stream = c->stream;
    void *main_ws = c->lt_workspace;
    unsigned int *main_counters = c->gemm_counters;
    float *main_scratch = c->scratch;
    int last[ANVIL_CUDA_LANES], barrier = -1;
    bool joined[ANVIL_CUDA_LANES] = {true};
    /* Adam programs: the updates' constants computed on lane 1 at the start of the step
     * (beside the forward pass), so that the updates read no step or lr and STEP_END can
     * run beside them instead of after them (the end of the step's critical path). */
    const anvil_step *adams[ANVIL_CUDA_MAX_ADAM];
    int first_adam = -1;
    int n_adam = ANVIL_CUDA_LANES > 1 && c->adam_consts ? adam_program(steps, n, adams, &first_adam) : 0;
    int gp[2] = {-1, -1};
    if (chain_lanes() && ANVIL_CUDA_LANES > 1 && gather_pair(steps, n, chain, gp)) {
        c->gather_pair[0] = &steps[gp[0]];
        c->gather_pair[1] = &steps[gp[1]];
        c->gather_pair_done = false;
    }
    /* ANVIL_END_BESIDE=2: STEP_END captured on lane 1 after the constants' kernel and the
     * last reader of the cursor or the counter (end_after; -1: none), beside the forward pass */
    int endm = n_adam > 0 ? end_place() : 0, i_end = -1, end_after = -1;
    for (int i = 0; endm == 2 && i < n; i++)
        if (steps[i].node->op == OP_STEP_END)
            i_end = i;
    for (int j = 0; endm == 2 && j < n; j++)
        if (reads_cursor(steps[j].node->op)) {
            if (j > i_end)
                endm = 1; /* a reader after it: keep it at the updates */
            else
                end_after = j;
        }
    for (int l = 0; l < ANVIL_CUDA_LANES; l++)
        last[l] = -1;
    int made = 0;
    for (; made <= n + 1; made++) /* one per step, the fork point, the update constants' */
        if (cudaEventCreateWithFlags(&ev[made], cudaEventDisableTiming) != cudaSuccess) {
            s = anvil_fail(ANVIL_ERR_DEVICE, "cudaEventCreate (capture)");
            goto out;
        }
    cudaEventRecord(ev[n], main_stream); /* the fork point */
    c->adam_prep_n = 0;
    for (int i = -1; i < n && s == ANVIL_OK; i++) {
        /* i = -1: the constants' kernel at the fork, a root of the graph (after the chain's
         * first step instead: no faster, measured) */
        if (n_adam > 0 && i < 0) {
            cudaStreamWaitEvent(c->lane_stream[1], ev[n], 0);
            joined[1] = true;
            c->stream = c->lane_stream[1];
            c->scratch = c->lane_scratch[1];
            s = anvil_cuda_adam_prepare(ex, adams, n_adam);
            cudaEventRecord(ev[n + 1], c->stream);
            c->stream = main_stream;
            c->scratch = main_scratch;
            if (s != ANVIL_OK)
                break;
        }
        /* STEP_END once its readers' kernels are all captured: before step end_after + 1
         * (after the constants' kernel, on its lane) */
        if (endm == 2 && i == end_after + 1) {
            cudaStream_t es = c->lane_stream[1];
            for (int j = 0; j <= end_after; j++)
                if (reads_cursor(steps[j].node->op) && lane[j] != 1)
                    cudaStreamWaitEvent(es, ev[j], 0);
            c->stream = es;
            c->lt_workspace = c->lane_ws[1];
            c->scratch = c->lane_scratch[1];
            c->gemm_counters = c->lane_counters[1];
            s = anvil_cuda_kernels[OP_STEP_END](ex, &steps[i_end]);
            cudaEventRecord(ev[i_end], es);
            lane[i_end] = 1; /* last[1] unchanged: later lane-1 steps simply follow it */
            c->stream = main_stream;
            if (s != ANVIL_OK)
                break;
        }
        if (i < 0 || (endm == 2 && i == i_end))
            continue;
        const anvil_step *st = &steps[i];
        bool bar = is_barrier(st);
        if (n_adam > 0 && st->node->op == OP_STEP_END) {
            /* beside the updates, on the side lane idle longest: after every step before
             * the first update (the readers of the data cursor and the rng counter) and
             * the constants' kernel (the reader of the step and the lr) */
            int E = 1;
            for (int l = 2; l < ANVIL_CUDA_LANES; l++)
                if (last[l] < last[E])
                    E = l;
            cudaStream_t es = c->lane_stream[E];
            if (!joined[E]) {
                cudaStreamWaitEvent(es, ev[n], 0);
                joined[E] = true;
            }
            for (int l = 0; l < ANVIL_CUDA_LANES; l++)
                for (int j = first_adam - 1; j >= 0; j--)
                    if (lane[j] == l) {
                        cudaStreamWaitEvent(es, ev[j], 0);
                        break;
                    }
            cudaStreamWaitEvent(es, ev[n + 1], 0);
            c->stream = es;
            c->lt_workspace = c->lane_ws[E];
            c->scratch = c->lane_scratch[E];
            c->gemm_counters = c->lane_counters[E];
            s = anvil_cuda_kernels[st->node->op](ex, st);
            cudaEventRecord(ev[i], es);
            lane[i] = E;
            last[E] = i;
            barrier = i;
            continue;
        }
        /* the latest dependency on each lane */
        int need[ANVIL_CUDA_LANES], latest = barrier;
        for (int l = 0; l < ANVIL_CUDA_LANES; l++)
            need[l] = -1;
        for (int j = i - 1; j > barrier; j--)
            if (need[lane[j]] < 0 && (bar || depends(st, &steps[j]))) {
                need[lane[j]] = j;
                if (j > latest)
                    latest = j;
            }
        int L = 0;
        if (!bar && chain_lanes() && ANVIL_CUDA_LANES > 1) {
            /* the critical chain on lane 0 (and both of a gather pair), the rest on the
             * others as below */
            if (!chain[i] && i != gp[0] && i != gp[1]) {
                if (latest > barrier && lane[latest] != 0 && last[lane[latest]] == latest) {
                    L = lane[latest];
                } else {
                    L = 1;
                    for (int l = 2; l < ANVIL_CUDA_LANES; l++)
                        if (last[l] < last[L])
                            L = l;
                }
            }
        } else if (!bar) {
            if (latest > barrier && last[lane[latest]] == latest) {
                L = lane[latest];
            } else {
                for (int l = 1; l < ANVIL_CUDA_LANES; l++)
                    if (last[l] < last[L])
                        L = l;
            }
        }
        if (!joined[L]) {
            cudaStreamWaitEvent(c->lane_stream[L], ev[n], 0);
            joined[L] = true;
        }
        if (barrier >= 0 && lane[barrier] != L && last[L] < barrier)
            cudaStreamWaitEvent(c->lane_stream[L], ev[barrier], 0);
        for (int l = 0; l < ANVIL_CUDA_LANES; l++)
            if (l != L && need[l] >= 0)
                cudaStreamWaitEvent(c->lane_stream[L], ev[need[l]], 0);
        c->stream = c->lane_stream[L];
        c->lt_workspace = c->lane_ws[L];
        c->scratch = c->lane_scratch[L];
        c->gemm_counters = c->lane_counters[L];
        /* its constants: implied when it waits for a later step of lane 1 (which follows
         * the constants' kernel there), else an edge of its own -- which, redundant, would
         * cost the update its programmatic launch after the previous kernel (measured) */
        if (n_adam > 0 && st->node->op == OP_ADAM && !(L != 1 && need[1] >= 0))
            cudaStreamWaitEvent(c->stream, ev[n + 1], 0);
        s = anvil_cuda_kernels[st->node->op](ex, st);
        cudaEventRecord(ev[i], c->stream);
        lane[i] = L;
        last[L] = i;
        if (bar)
            barrier = i;
    }
    /* join every lane back into the capturing stream */
    for (int l = 1; l < ANVIL_CUDA_LANES; l++)
        if (last[l] >= 0 && last[l] >= barrier) /* >=: STEP_END may end a side lane */
            cudaStreamWaitEvent(main_stream, ev[last[l]], 0);
    if (s == ANVIL_OK && endm == 2)
        cudaStreamWaitEvent(main_stream, ev[i_end], 0);
out:
    c->adam_prep_n = 0;
    c->gather_pair[0] = c->gather_pair[1] = NULL;
    c->gather_pair_done = false;
    free(chain);
    c->stream = main_stream;
    c->lt_workspace = main_ws;
    c->scratch = main_scratch;
    c->gemm_counters = main_counters;
    for (int k = 0; k < made; k++)
        cudaEventDestroy(ev[k]);
    free(ev);
    free(lane);
    return s;
}

/* Captures every step of p into a CUDA graph and instantiates it. */
static anvil_status capture(anvil_cuda_ctx *c, anvil_program *p, const anvil_exec *ex,
                            cuda_program_state **out)
{
    *out = NULL;
    for (int i = p->n_init; i < p->n_steps; i++) {
        anvil_op op = p->steps[i].node->op;
        if (!anvil_cuda_kernels[op])
            return anvil_fail(ANVIL_ERR_UNSUPPORTED, "cuda backend: no kernel for op '%s' (node %d)",
                              anvil_op_name(op), p->steps[i].id);
    }
    cudaGetLastError(); /* a stale, already reported launch error must not fail this capture */
    cuda_program_state *st = (cuda_program_state *)anvil_xcalloc(1, sizeof *st, "a CUDA graph");
    if (!st)
        return ANVIL_ERR_OOM;
    /* Relaxed: a library's one-time internal setup (cuBLASLt, lazy module loading) may
     * allocate while we capture; our own kernels never allocate or synchronize (and a
     * synchronization of the capturing stream fails the capture in any mode). */
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
        free(st);
        return anvil_cuda_fail(e, "cudaStreamBeginCapture");
    }
    c->capturing = true;
    anvil_status s = capture_lanes(c, p, ex);
    c->capturing = false;
    cudaGraph_t g = NULL;
    e = cudaStreamEndCapture(c->stream, &g);
    if (s != ANVIL_OK) { /* the kernel's message stands */
        if (g)
            cudaGraphDestroy(g);
        cudaGetLastError();
        free(st);
        return s;
    }
    if (e != cudaSuccess) {
        if (g)
            cudaGraphDestroy(g);
        cudaGetLastError();
        free(st);
        return anvil_fail(ANVIL_ERR_DEVICE, "cudaStreamEndCapture (capturing a program of %d steps): %s",
                          p->n_steps, cudaGetErrorString(e));
    }
    st->graph = g;
    e = cudaGraphInstantiate(&st->exec, g, 0);
    if (e != cudaSuccess) {
        cudaGetLastError();
        st->exec = NULL;
        program_state_free(st);
        return anvil_cuda_fail(e, "cudaGraphInstantiate");
    }
    e = cudaGraphUpload(st->exec, c->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        program_state_free(st);
        return anvil_cuda_fail(e, "cudaGraphUpload");
    }
    *out = st;
    return ANVIL_OK;
}

static anvil_status cuda_run(anvil_backend *be, anvil_program *p, const anvil_exec *ex)
{
    anvil_cuda_ctx *c = ctx_of(be);
    if (ex->backend != (void *)c)
        return anvil_fail(ANVIL_ERR_STATE, "cuda run: the exec's backend context is not this backend's");
    cuda_program_state *st = (cuda_program_state *)p->backend_state;
    if (!st) {
        /* constants: computed once, outside the graph */
        for (int i = 0; i < p->n_init; i++)
            ANVIL_TRY(anvil_cuda_kernels[p->steps[i].node->op](ex, &p->steps[i]));
        p->initialized = true;
        ANVIL_TRY(capture(c, p, ex, &st));
        p->backend_state = st;
    }
    ANVIL_CUDA_CHECK(cudaGraphLaunch(st->exec, c->stream), "cudaGraphLaunch");
    be->counters.graph_launches++;
    return ANVIL_OK;
}

static void cuda_program_release(anvil_backend *be, anvil_program *p)
{
    (void)be;
    program_state_free((cuda_program_state *)p->backend_state);
    p->backend_state = NULL;
}

/* ---------------------------------------------------------------- open / destroy */

#ifdef ANVIL_HAVE_CUDNN
/* The convolutions' scratch lives in the planned arena (conv.cu); nothing else asks. */
static size_t cuda_workspace(const void *be, const anvil_graph *g, const anvil_node *n)
{
    return anvil_cuda_conv_workspace((anvil_cuda_ctx *)((const anvil_backend *)be)->ctx, g, n);
}
#endif

static void ctx_free(anvil_cuda_ctx *c)
{
    if (!c)
        return;
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    if (c->copy_stream)
        cudaStreamSynchronize(c->copy_stream);
    for (int k = 0; k < ANVIL_CUDA_STAGING_SLOTS; k++) {
        if (c->staging_done[k])
            cudaEventDestroy(c->staging_done[k]);
        if (c->landing_free[k])
            cudaEventDestroy(c->landing_free[k]);
    }
    if (c->landing)
        cudaFree(c->landing);
    if (c->copy_stream)
        cudaStreamDestroy(c->copy_stream);
    if (c->staging)
        cudaFreeHost(c->staging);
    if (c->err_host)
        cudaFreeHost(c->err_host);
    for (int l = 1; l < ANVIL_CUDA_LANES; l++) {
        if (c->lane_ws[l])
            cudaFree(c->lane_ws[l]);
        if (c->lane_scratch[l])
            cudaFree(c->lane_scratch[l]);
        if (c->lane_stream[l])
            cudaStreamDestroy(c->lane_stream[l]);
    }
    if (c->lt_workspace)
        cudaFree(c->lt_workspace);
    if (c->counters_base)
        cudaFree(c->counters_base);
    if (c->scratch)
        cudaFree(c->scratch);
    if (c->adam_consts)
        cudaFree(c->adam_consts);
    if (c->lt)
        cublasLtDestroy(c->lt);
#ifdef ANVIL_HAVE_CUDNN
    if (c->cudnn)
        cudnnDestroy((cudnnHandle_t)c->cudnn);
#endif
    if (c->stream)
        cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
}

static void cuda_destroy(anvil_backend *be)
{
    if (!be)
        return;
    ctx_free(ctx_of(be));
    free(be);
}

static anvil_status ctx_open(anvil_cuda_ctx *c)
{
    char why[256] = "";
    if (!find_device(&c->device, why, sizeof why))
        return anvil_fail(ANVIL_ERR_DEVICE, "no CUDA device: %s", why);
    ANVIL_CUDA_CHECK(cudaSetDevice(c->device), "cudaSetDevice");
    ANVIL_CUDA_CHECK(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, c->device),
                     "cudaDeviceGetAttribute (multiprocessors)");
    ANVIL_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    cublasStatus_t st = cublasLtCreate(&c->lt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        c->lt = NULL;
        return anvil_cuda_lt_fail(st, "cublasLtCreate");
    }
#ifdef ANVIL_HAVE_CUDNN
    {
        /* A failure is kept, not returned: only the conv ops need cuDNN (they report it). */
        cudnnHandle_t h = NULL;
        cudnnStatus_t ds = cudnnCreate(&h);
        c->cudnn = ds == CUDNN_STATUS_SUCCESS ? (void *)h : NULL;
        c->cudnn_status = (int)ds;
        size_t free_b = 0, total_b = 0;
        c->dnn_ws_max = (size_t)1 << 30;
        if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && total_b / 16 < c->dnn_ws_max)
            c->dnn_ws_max = total_b / 16;
    }
#endif
    cudaError_t e = cudaMalloc(&c->lt_workspace, ANVIL_CUDA_LT_WORKSPACE);
    if (e != cudaSuccess) {
        c->lt_workspace = NULL;
        return anvil_cuda_fail(e, "cudaMalloc (cuBLASLt workspace)");
    }
    e = cudaMalloc((void **)&c->scratch, ANVIL_CUDA_SCRATCH_FLOATS * sizeof(float));
    if (e != cudaSuccess) {
        c->scratch = NULL;
        return anvil_cuda_fail(e, "cudaMalloc (reduction scratch)");
    }
    e = cudaMalloc(&c->adam_consts, ANVIL_CUDA_MAX_ADAM * 4 * sizeof(float));
    if (e != cudaSuccess) {
        c->adam_consts = NULL;
        return anvil_cuda_fail(e, "cudaMalloc (update constants)");
    }
    {
        size_t cb = (size_t)ANVIL_CUDA_LANES * ANVIL_SIMT_COUNTERS * sizeof(unsigned int);
        e = cudaMalloc((void **)&c->counters_base, cb);
        if (e != cudaSuccess) {
            c->counters_base = NULL;
            return anvil_cuda_fail(e, "cudaMalloc (matrix product tile counters)");
        }
        ANVIL_CUDA_CHECK(cudaMemset(c->counters_base, 0, cb), "cudaMemset (matrix product tile counters)");
        for (int l = 0; l < ANVIL_CUDA_LANES; l++)
            c->lane_counters[l] = c->counters_base + (size_t)l * ANVIL_SIMT_COUNTERS;
        c->gemm_counters = c->lane_counters[0];
    }
    c->lane_stream[0] = c->stream;
    c->lane_ws[0] = c->lt_workspace;
    c->lane_scratch[0] = c->scratch;
    for (int l = 1; l < ANVIL_CUDA_LANES; l++) {
        ANVIL_CUDA_CHECK(cudaStreamCreateWithFlags(&c->lane_stream[l], cudaStreamNonBlocking),
                         "cudaStreamCreate (capture lane)");
        ANVIL_CUDA_CHECK(cudaMalloc(&c->lane_ws[l], ANVIL_CUDA_LT_WORKSPACE), "cudaMalloc (cuBLASLt workspace)");
        ANVIL_CUDA_CHECK(cudaMalloc((void **)&c->lane_scratch[l], ANVIL_CUDA_SCRATCH_FLOATS * sizeof(float)),
                         "cudaMalloc (reduction scratch)");
    }
    e = cudaHostAlloc((void **)&c->staging, ANVIL_CUDA_STAGING_SLOTS * ANVIL_CUDA_STAGING_BYTES,
                      cudaHostAllocDefault);
    if (e != cudaSuccess) {
        c->staging = NULL;
        return anvil_cuda_fail(e, "cudaHostAlloc (staging buffers)");
    }
    for (int k = 0; k < ANVIL_CUDA_STAGING_SLOTS; k++) {
        e = cudaEventCreateWithFlags(&c->staging_done[k], cudaEventDisableTiming);
        if (e != cudaSuccess) {
            c->staging_done[k] = NULL;
            return anvil_cuda_fail(e, "cudaEventCreate (staging)");
        }
    }
    const char *cs = getenv("ANVIL_CUDA_COPY_STREAM");
    if (!cs || strcmp(cs, "0") != 0) {
        ANVIL_CUDA_CHECK(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking), "cudaStreamCreate (copies)");
        e = cudaMalloc((void **)&c->landing, ANVIL_CUDA_STAGING_SLOTS * ANVIL_CUDA_STAGING_BYTES);
        if (e != cudaSuccess) {
            c->landing = NULL;
            return anvil_cuda_fail(e, "cudaMalloc (landing buffers)");
        }
        for (int k = 0; k < ANVIL_CUDA_STAGING_SLOTS; k++)
            ANVIL_CUDA_CHECK(cudaEventCreateWithFlags(&c->landing_free[k], cudaEventDisableTiming),
                             "cudaEventCreate (landing)");
    }
    e = cudaHostAlloc((void **)&c->err_host, sizeof(unsigned int), cudaHostAllocMapped);
    if (e != cudaSuccess) {
        c->err_host = NULL;
        return anvil_cuda_fail(e, "cudaHostAlloc (error word)");
    }
    *c->err_host = 0;
    ANVIL_CUDA_CHECK(cudaHostGetDevicePointer((void **)&c->err_dev, c->err_host, 0),
                     "cudaHostGetDevicePointer (error word)");
    return ANVIL_OK;
}

extern "C" anvil_status anvil_cuda_backend_open(anvil_backend **out)
{
    *out = NULL;
    anvil_backend *be = (anvil_backend *)anvil_xcalloc(1, sizeof *be, "the CUDA backend");
    if (!be)
        return ANVIL_ERR_OOM;
    anvil_cuda_ctx *c = (anvil_cuda_ctx *)anvil_xcalloc(1, sizeof *c, "the CUDA backend context");
    if (!c) {
        free(be);
        return ANVIL_ERR_OOM;
    }
    anvil_status s = ctx_open(c);
    if (s != ANVIL_OK) {
        ctx_free(c);
        free(be);
        return s;
    }
    c->be = be;
    be->name = "cuda";
    be->device = ANVIL_DEVICE_CUDA;
    be->ctx = c;
    be->kernels = anvil_cuda_kernels;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->upload = cuda_upload;
    be->upload_batch = cuda_upload_batch;
    be->download = cuda_download;
    be->zero = cuda_zero;
    be->run = cuda_run;
    be->sync = cuda_sync;
    be->program_release = cuda_program_release;
    be->destroy = cuda_destroy;
    be->vec = anvil_cuda_vec;
#ifdef ANVIL_HAVE_CUDNN
    be->workspace = cuda_workspace;
#endif
    be->concurrent = true;
    *out = be;
    return ANVIL_OK;
}
