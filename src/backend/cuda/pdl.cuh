/* pdl.cuh — programmatic dependent launch (sm_90), the device side.  A kernel launched
 * with programmatic stream serialization may be scheduled while the kernel ahead of it in
 * the stream is still running; it calls anvil_pdl_wait() first, before any access to
 * global memory. */
#pragma once

/* When a kernel lets the kernel behind it be scheduled (griddepcontrol.launch_dependents,
 * once every block of it has): 0 when its blocks exit (the implicit trigger); 1 every
 * kernel right after its wait; 2 the matrix products after their main loop, the others at
 * exit; 3 the products after their main loop, the others after their wait.  Any placement
 * is safe: griddepcontrol.wait returns only once the grids ahead have completed and their
 * writes are visible; an early trigger overlaps the next kernel's launch with this one's
 * work, but its waiting blocks hold SM resources meanwhile.  Measured on the H200
 * (docs/benchmarks.md, ninth session): 0 is the fastest (mlp step 50.8 µs; 1 and 3: 59.0;
 * 2: 52.2), though a CUPTI trace shows 1 shorter -- measure without the tracer. */
#ifndef ANVIL_PDL_TRIGGER
#define ANVIL_PDL_TRIGGER 0
#endif

static __device__ __forceinline__ void anvil_pdl_trigger(void)
{
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

/* Returns once the kernel ahead has completed and its writes are visible (at once when the
 * launch was an ordinary one). */
static __device__ __forceinline__ void anvil_pdl_wait(void)
{
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#if ANVIL_PDL_TRIGGER == 1 || ANVIL_PDL_TRIGGER == 3
    anvil_pdl_trigger();
#endif
}

/* The same for a matrix product, and its call after the main loop. */
static __device__ __forceinline__ void anvil_pdl_gemm_wait(void)
{
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#if ANVIL_PDL_TRIGGER == 1
    anvil_pdl_trigger();
#endif
}

static __device__ __forceinline__ void anvil_pdl_gemm_done(void)
{
#if ANVIL_PDL_TRIGGER >= 2
    anvil_pdl_trigger();
#endif
}
