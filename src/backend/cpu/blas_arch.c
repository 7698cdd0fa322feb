/* blas_arch.c — is OpenBLAS using kernels made for this CPU?
 *
 * Debian's OpenBLAS is a DYNAMIC_ARCH build: when loaded it picks its kernels from the
 * CPU's family and model.  On virtual machines whose CPUID hides the model ("Intel(R)
 * Xeon(R) Processor") 0.3.21 falls back to its oldest x86-64 kernels, "Prescott" (SSE3),
 * even where the CPU has AVX-512: the cnn's matrix products then run about 3x slower
 * (measured: 100 cnn steps on a 2-core Xeon VM, 13.6 s with Prescott, 8.6 s with
 * SkylakeX).  OpenBLAS reads OPENBLAS_CORETYPE only when it is loaded, so a process can
 * only fix this for the next process: the anvil tool re-executes itself with the variable
 * set; a program linking the library gets the advice from anvil_blas_coretype_advice()
 * and a one-time note on stderr when a CPU trainer is made. */
#include "anvil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *openblas_get_corename(void); /* OpenBLAS's own (cblas.h declares it too) */

const char *anvil_blas_coretype_advice(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const char *set = getenv("OPENBLAS_CORETYPE");
    if (set && *set)
        return NULL; /* the user chose */
    const char *core = openblas_get_corename();
    if (!core || strcmp(core, "Prescott") != 0)
        return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}

void anvil_blas_note_once(void)
{
    static atomic_flag said = ATOMIC_FLAG_INIT;
    const char *ct = anvil_blas_coretype_advice();
    if (!ct || atomic_flag_test_and_set(&said))
        return;
    fprintf(stderr,
            "anvil: OpenBLAS did not recognize this CPU and uses its generic Prescott kernels; matrix products "
            "run 2-3x faster with OPENBLAS_CORETYPE=%s set before the program starts\n",
            ct);
}
