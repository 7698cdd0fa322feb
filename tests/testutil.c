/* testutil.c — see testutil.h. */
#define _GNU_SOURCE
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *tu_mkdtemp(void)
{
    char tmpl[] = "/tmp/anvil-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

void tu_rmdir(char *dir)
{
    if (!dir)
        return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    free(dir);
}

void tu_fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 11) * (1.0 / 9007199254740992.0));
    }
}

anvil_tensor *tu_rand_tensor(int ndim, const int64_t *shape, float lo, float hi, uint64_t seed)
{
    anvil_tensor *t = NULL;
    if (anvil_tensor_create(&t, ANVIL_F32, ndim, shape, NULL) != ANVIL_OK)
        return NULL;
    tu_fill_uniform(anvil_tensor_data(t), anvil_tensor_numel(t), lo, hi, seed);
    return t;
}

double tu_rel_err(const float *a, const float *b, int64_t n, double atol, double rtol, int64_t *worst)
{
    double e = 0;
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (isnan(a[i]) != isnan(b[i]) || d > e || isnan(d)) {
            e = isnan(d) || isnan(a[i]) != isnan(b[i]) ? INFINITY : d;
            w = i;
        }
    }
    if (worst)
        *worst = w;
    return e;
}

int tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}
