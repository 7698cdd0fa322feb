/* cpu.c — the CPU backend: host memory and a loop over the program's steps. */
#include "backend/cpu/cpu.h"

static anvil_status cpu_alloc(anvil_backend *be, size_t bytes, void **out)
{
    /* 64-byte alignment for vector loads; zeroed so planned-but-unwritten padding is
     * deterministic. */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        return anvil_fail(ANVIL_ERR_OOM, "out of host memory: %zu bytes requested", bytes);
    memset(p, 0, rounded);
    be->counters.device_allocs++;
    *out = p;
    return ANVIL_OK;
}

static void cpu_free(anvil_backend *be, void *p)
{
    (void)be;
    free(p);
}

static anvil_status cpu_upload(anvil_backend *be, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
    be->counters.h2d_copies++;
    be->counters.h2d_bytes += (int64_t)bytes;
    return ANVIL_OK;
}

static anvil_status cpu_download(anvil_backend *be, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
    be->counters.d2h_copies++;
    be->counters.d2h_bytes += (int64_t)bytes;
    return ANVIL_OK;
}

static anvil_status cpu_zero(anvil_backend *be, void *dst, size_t bytes)
{
    (void)be;
    memset(dst, 0, bytes);
    return ANVIL_OK;
}

static anvil_status cpu_run(anvil_backend *be, anvil_program *p, const anvil_exec *ex)
{
    int first = p->initialized ? p->n_init : 0; /* constants once */
    for (int i = first; i < p->n_steps; i++) {
        const anvil_step *s = &p->steps[i];
        anvil_status st = be->kernels[s->node->op](ex, s);
        if (st != ANVIL_OK)
            return st;
    }
    p->initialized = true;
    be->counters.host_kernel_launches += p->n_steps - first;
    return ANVIL_OK;
}

static anvil_status cpu_sync(anvil_backend *be)
{
    (void)be;
    return ANVIL_OK;
}

static void cpu_destroy(anvil_backend *be) { free(be); }

/* Planned scratch: the convolutions' column buffers (conv.c). */
static size_t cpu_workspace(const void *be, const anvil_graph *g, const anvil_node *n)
{
    (void)be;
    return anvil_cpu_conv_workspace(g, n);
}

anvil_status anvil_cpu_backend_open(anvil_backend **out)
{
    anvil_backend *be = anvil_xcalloc(1, sizeof *be, "the CPU backend");
    if (!be)
        return ANVIL_ERR_OOM;
    be->name = "cpu";
    be->device = ANVIL_DEVICE_CPU;
    be->kernels = anvil_cpu_kernels;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_upload;
    be->download = cpu_download;
    be->zero = cpu_zero;
    be->run = cpu_run;
    be->sync = cpu_sync;
    be->program_release = NULL;
    be->destroy = cpu_destroy;
    be->vec = anvil_cpu_vec;
    be->workspace = cpu_workspace;
    anvil_blas_note_once();
    *out = be;
    return ANVIL_OK;
}
