/* kernel_trace.c — an injection library (CUDA_INJECTION64_PATH) that records every kernel
 * the process runs with CUPTI's activity API, graph kernels included, and prints them at
 * exit: the GPU's own start and end times of each kernel as it ran inside the graph (not
 * serialized, unlike Nsight Compute), so the gaps between kernels on a training step's
 * critical path can be seen.  Built and run by bench/trace_gpu.sh; one line per kernel on
 * stderr:
 *   KTRACE <start_ns> <end_ns> <stream> <correlation> <graph_node> <name>
 * (correlation is the launching API call's: one cudaGraphLaunch per training step). */
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_BYTES (8u << 20)

static void CUPTIAPI buffer_requested(uint8_t **buf, size_t *size, size_t *max_records)
{
    *buf = (uint8_t *)aligned_alloc(8, BUF_BYTES);
    *size = *buf ? BUF_BYTES : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid)
{
    (void)ctx;
    (void)stream;
    (void)size;
    CUpti_Activity *rec = NULL;
    while (cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL)
            continue;
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
        fprintf(stderr, "KTRACE %llu %llu %u %u %llu %s\n", (unsigned long long)k->start,
                (unsigned long long)k->end, k->streamId, k->correlationId, (unsigned long long)k->graphNodeId,
                k->name ? k->name : "?");
    }
    free(buf);
}

static void flush_at_exit(void) { cuptiActivityFlushAll(1); }

/* Called by the CUDA driver when the library is named by CUDA_INJECTION64_PATH. */
int InitializeInjection(void)
{
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
        fprintf(stderr, "kernel_trace: CUPTI activity tracing could not be enabled\n");
        return 0;
    }
    atexit(flush_at_exit);
    return 1;
}
