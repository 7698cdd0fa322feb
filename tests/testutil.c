/* testutil.c — see testutil.h. */
#define _GNU_SOURCE
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

bool tu_load_fmnist(anvil_dataset **train, anvil_dataset **test)
{
    const char *dir = getenv("ANVIL_DATA_DIR");
    if (!dir || !*dir)
        dir = ANVIL_DEFAULT_DATA_DIR;
    if (anvil_dataset_load_folder(train, test, dir) != ANVIL_OK) {
        print_message("  Fashion-MNIST not found in %s (%s): skipped\n", dir, anvil_last_error());
        return false;
    }
    return true;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

void tu_fmnist_parity(const char *model, const char *golden, anvil_device device)
{
    anvil_dataset *train, *test;
    if (!tu_load_fmnist(&train, &test))
        skip();
    int n;
    char **names;
    anvil_tensor **ts;
    CHECK_OK(anvil_safetensors_read(golden, &n, &names, &ts));
    anvil_model *m;
    CHECK_OK(anvil_model_builtin(&m, model));
    anvil_trainer_config c = anvil_trainer_default_config();
    c.device = device;
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    float acc = 0, test_loss = 0, train_loss = 0;
    for (int i = 0; i < n; i++) {
        const float *v = anvil_tensor_data(ts[i]);
        if (strcmp(names[i], "expect.accuracy") == 0)
            acc = v[0];
        else if (strcmp(names[i], "expect.test_loss") == 0)
            test_loss = v[0];
        else if (strcmp(names[i], "expect.train_loss") == 0)
            train_loss = v[0];
        else
            CHECK_OK(anvil_trainer_set_param(t, names[i], ts[i]));
    }
    anvil_safetensors_free(n, names, ts);
    CHECK_OK(anvil_trainer_attach_data(t, train, 128, false, 0));
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int steps = 0;
    for (;;) {
        bool done;
        CHECK_OK(anvil_train_step_resident(t, &done));
        if (done)
            break;
        if (++steps == 100) {
            anvil_counters last;
            CHECK_OK(anvil_trainer_counters(t, NULL, &last));
            assert_int_equal(last.device_allocs, 0);
            assert_int_equal(last.h2d_copies, 0);
            assert_int_equal(last.d2h_copies, 0);
            assert_int_equal(last.graph_launches, device == ANVIL_DEVICE_CUDA ? 1 : 0);
            if (device == ANVIL_DEVICE_CUDA)
                assert_int_equal(last.host_kernel_launches, 0);
        }
    }
    float mean_train;
    CHECK_OK(anvil_trainer_take_mean_loss(t, &mean_train)); /* waits for the device */
    double secs = seconds_since(&t0);
    anvil_eval_result r;
    CHECK_OK(anvil_evaluate(t, test, 1000, &r));
    print_message("fashion-mnist %s: %d steps in %.2f s (%.2f ms/step) on %s; train loss %.4f (PyTorch %.4f); test loss "
                  "%.4f (%.4f), accuracy %.4f (%.4f)\n", model, steps, secs, 1e3 * secs / steps,
                  device == ANVIL_DEVICE_CUDA ? "cuda" : "cpu", (double)mean_train, (double)train_loss, r.mean_loss,
                  (double)test_loss, r.accuracy, (double)acc);
    assert_int_equal(steps, 469);
    assert_int_equal(r.samples, 10000);
    assert_true(fabs(r.accuracy - acc) <= 0.006);
    assert_true(fabs(r.mean_loss - test_loss) <= 0.02 * test_loss);
    assert_true(fabs(mean_train - train_loss) <= 0.02 * train_loss);
    anvil_trainer_free(t);
    anvil_model_free(m);
    anvil_dataset_free(train);
    anvil_dataset_free(test);
}
