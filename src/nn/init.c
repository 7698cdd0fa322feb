/* init.c — parameter initialization from the seed, reproducible on any device: each
 * tensor draws from its own Philox stream. */
#include "train/train.h"
#include "core/philox.h"

#include <math.h>

void anvil_init_fill(float *dst, int64_t n, anvil_init init, uint64_t seed, uint32_t stream)
{
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    switch (init.kind) {
    case ANVIL_INIT_ZEROS:
    case ANVIL_INIT_ONES:
        for (int64_t i = 0; i < n; i++)
            dst[i] = init.kind == ANVIL_INIT_ONES ? 1.0f : 0.0f;
        return;
    case ANVIL_INIT_UNIFORM:
        for (int64_t i = 0; i < n; i += 4) {
            anvil_philox_out r = anvil_philox((uint32_t)(i / 4), (uint32_t)((uint64_t)i >> 34), stream, 0x1417u, k0, k1);
            for (int j = 0; j < 4 && i + j < n; j++)
                dst[i + j] = init.a * (2.0f * anvil_u32_to_unit(r.v[j]) - 1.0f);
        }
        return;
    case ANVIL_INIT_NORMAL:
        /* Box-Muller on pairs */
        for (int64_t i = 0; i < n; i += 4) {
            anvil_philox_out r = anvil_philox((uint32_t)(i / 4), (uint32_t)((uint64_t)i >> 34), stream, 0x2417u, k0, k1);
            for (int j = 0; j < 4; j += 2) {
                double u1 = (r.v[j] + 1.0) / 4294967297.0, u2 = r.v[j + 1] / 4294967296.0;
                double rad = sqrt(-2.0 * log(u1));
                if (i + j < n)
                    dst[i + j] = init.a * (float)(rad * cos(6.283185307179586 * u2));
                if (i + j + 1 < n)
                    dst[i + j + 1] = init.a * (float)(rad * sin(6.283185307179586 * u2));
            }
        }
        return;
    }
}
