/* test_nets20.c — 20 training steps of two convolutional nets against PyTorch
 * (tests/golden/make_nets20.py): the built-in "cnn" (WORKLOADS.md's cnn-fmnist) and a
 * residual net with BatchNorm (examples/models/resnet_small.json).  From PyTorch's initial
 * parameters and buffers: the evaluation-mode output before training (forward), the loss
 * of every step, and every parameter and buffer (running statistics and
 * num_batches_tracked included) after steps 1 and 20 — with SGD + momentum, step 1 moves
 * each parameter by exactly -lr * its gradient, so it checks the backward pass.
 * Tolerance: 1e-4 + 1e-3 |want| (float32 PyTorch stays within 0.3% of it). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "anvil.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3

static int g_n;
static char **g_names;
static anvil_tensor **g_t;

static int load(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/nets20.safetensors", ANVIL_GOLDEN_DIR);
    if (anvil_safetensors_read(path, &g_n, &g_names, &g_t) != ANVIL_OK) {
        fprintf(stderr, "cannot read %s: %s (python3 tests/golden/make_nets20.py)\n", path, anvil_last_error());
        return -1;
    }
    return 0;
}

static int unload(void **state)
{
    (void)state;
    anvil_safetensors_free(g_n, g_names, g_t);
    return 0;
}

static const anvil_tensor *get(const char *fmt, ...)
{
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    for (int i = 0; i < g_n; i++)
        if (strcmp(g_names[i], key) == 0)
            return g_t[i];
    fail_msg("golden nets20.safetensors has no \"%s\"", key);
    return NULL;
}

/* Compares a tensor with the golden; int64 buffers must be equal. */
static int compare(const char *key, const anvil_tensor *got, const anvil_tensor *want)
{
    int64_t n = anvil_tensor_numel(want);
    if (anvil_tensor_numel(got) != n || anvil_tensor_dtype(got) != anvil_tensor_dtype(want)) {
        print_error("%s: shape or dtype differs from the golden\n", key);
        return 1;
    }
    if (anvil_tensor_dtype(want) == ANVIL_I64) {
        bool eq = memcmp(anvil_tensor_cdata(got), anvil_tensor_cdata(want), (size_t)n * 8) == 0;
        if (!eq)
            print_error("%s: differs\n", key);
        return !eq;
    }
    int64_t worst;
    double e = tu_rel_err(anvil_tensor_cdata(got), anvil_tensor_cdata(want), n, ATOL, RTOL, &worst);
    if (e > 1.0) {
        print_error("%s: [%lld] got %.9g want %.9g (%.3g x tolerance)\n", key, (long long)worst,
                    (double)((const float *)anvil_tensor_cdata(got))[worst],
                    (double)((const float *)anvil_tensor_cdata(want))[worst], e);
        return 1;
    }
    return 0;
}

/* Every state_dict name of `net` (from its step-1 keys) into names[]; returns the count. */
static int state_names(const char *net, const char *names[], int cap)
{
    char pre[64];
    int k = 0;
    snprintf(pre, sizeof pre, "%s.step1.", net);
    for (int i = 0; i < g_n && k < cap; i++)
        if (strncmp(g_names[i], pre, strlen(pre)) == 0)
            names[k++] = g_names[i] + strlen(pre);
    return k;
}

static void train20(const char *net, anvil_model *m)
{
    anvil_trainer_config c = anvil_trainer_default_config();
    c.device = ANVIL_DEVICE_CPU, c.verbose = 0;
    c.optimizer = anvil_optimizer_default_config(ANVIL_OPT_SGD);
    c.optimizer.lr = 0.05f, c.optimizer.momentum = 0.9f;
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    const char *names[64];
    int n = state_names(net, names, 64), fails = 0;
    assert_true(n > 0);
    for (int i = 0; i < n; i++)
        CHECK_OK(anvil_trainer_set_param(t, names[i], get("%s.init.%s", net, names[i])));
    anvil_tensor *out;
    CHECK_OK(anvil_predict(t, get("%s.x.0", net), &out));
    char key[256];
    snprintf(key, sizeof key, "%s.eval0", net);
    fails += compare(key, out, get("%s", key));
    anvil_tensor_release(out);
    const float *want_loss = anvil_tensor_cdata(get("%s.loss", net));
    for (int k = 0; k < 20; k++) {
        CHECK_OK(anvil_train_step(t, get("%s.x.%d", net, k), get("%s.y.%d", net, k)));
        float loss;
        CHECK_OK(anvil_trainer_last_loss(t, &loss));
        if (!(fabs((double)loss - want_loss[k]) <= ATOL + RTOL * fabs(want_loss[k]))) {
            print_error("%s: loss of step %d %.9g, torch %.9g\n", net, k + 1, (double)loss, (double)want_loss[k]);
            fails++;
        }
        if (k + 1 == 1 || k + 1 == 20)
            for (int i = 0; i < n; i++) {
                anvil_tensor *p;
                CHECK_OK(anvil_trainer_get_param(t, names[i], &p));
                snprintf(key, sizeof key, "%s.step%d.%s", net, k + 1, names[i]);
                fails += compare(key, p, get("%s", key));
                anvil_tensor_release(p);
            }
    }
    anvil_trainer_free(t);
    assert_int_equal(fails, 0);
}

static void test_cnn(void **state)
{
    (void)state;
    anvil_model *m;
    CHECK_OK(anvil_model_builtin(&m, "cnn"));
    train20("cnn", m);
    anvil_model_free(m);
}

static void test_residual_batchnorm(void **state)
{
    (void)state;
    anvil_model *m;
    CHECK_OK(anvil_model_load_json(&m, ANVIL_SOURCE_DIR "/examples/models/resnet_small.json"));
    train20("res", m);
    anvil_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cnn),
        cmocka_unit_test(test_residual_batchnorm),
    };
    return cmocka_run_group_tests_name("nets20", tests, load, unload);
}
