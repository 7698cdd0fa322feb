/* philox.h — Philox4x32-10, the counter-based generator behind every random number in
 * Anvil (initialization, dropout masks, shuffling).  A pure function of (key, counter),
 * so the CPU and the GPU produce the same stream and a step can be replayed. */
#ifndef ANVIL_PHILOX_H
#define ANVIL_PHILOX_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __CUDACC__
#define ANVIL_HD __host__ __device__ __forceinline__
#else
#define ANVIL_HD static inline
#endif

typedef struct {
    uint32_t v[4];
} anvil_philox_out;

ANVIL_HD uint32_t anvil_mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* counter: c0..c3; key: k0, k1 */
ANVIL_HD anvil_philox_out anvil_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                       uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = anvil_mulhilo(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = anvil_mulhilo(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    anvil_philox_out o;
    o.v[0] = c0; o.v[1] = c1; o.v[2] = c2; o.v[3] = c3;
    return o;
}

/* A uniform float in [0, 1) from 24 random bits. */
ANVIL_HD float anvil_u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

/* Dropout's keep test for element i of a tensor: one Philox call covers four
 * consecutive elements (counter = (i/4 as 64 bits, stream, step counter), key = seed).
 * The CPU and CUDA kernels both use it, so their masks match bit for bit. */
ANVIL_HD bool anvil_dropout_keep(uint64_t i, uint32_t stream, uint32_t counter,
                                 uint32_t seed_lo, uint32_t seed_hi, float p)
{
    uint64_t g = i / 4;
    anvil_philox_out r = anvil_philox((uint32_t)g, (uint32_t)(g >> 32), stream, counter,
                                      seed_lo, seed_hi);
    /* Select without a dynamic index, which would put r in local memory on a GPU. */
    uint32_t w = (i & 2) ? ((i & 1) ? r.v[3] : r.v[2]) : ((i & 1) ? r.v[1] : r.v[0]);
    return anvil_u32_to_unit(w) >= p;
}

#endif
