/* test_norm.c — batch norm and layer norm against PyTorch (tests/golden/norm.safetensors,
 * written by tests/golden/make_norm.py through make_golden.py; its docstring lists the
 * keys).
 *
 * What is checked
 *  - each op case: built with the graph API, run once on the CPU with anvil_graph_run
 *    (training mode, or evaluation mode for bn2d_eval, whose running statistics are fed
 *    into the buffers); the output and the gradients of sum(y * R) by anvil_gradient;
 *  - a model built with the graph API (BatchNorm2d, ReLU, Flatten, Linear, BatchNorm1d
 *    with momentum=None, ReLU, Linear; anvil_model_from_graph), trained 3 steps by a CPU
 *    trainer with SGD (momentum 0.9) from torch's initial state: every loss, every
 *    parameter, running_mean/running_var (exactly torch's update, the unbiased variance)
 *    and num_batches_tracked (int64, exact) after steps 1 and 3, and the evaluation-mode
 *    output (running statistics) after step 3;
 *  - anvil_trainer_save writes the buffers as PyTorch's state_dict has them:
 *    running_mean/running_var F32 [C], num_batches_tracked I64 [] (torch loads the file
 *    with load_state_dict; checked by hand with the snippet at the end of this file).
 *
 * Tolerance everywhere: |got - want| <= 1e-5 + 1e-4 * |want| (make_norm.py checks that
 * float32 PyTorch stays below 1% of it against the float64 reference).
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATOL 1e-5
#define RTOL 1e-4

static int G_N;
static char **G_NAMES;
static anvil_tensor **G_T;

static int setup(void **state)
{
    (void)state;
    CHECK_OK(anvil_safetensors_read(ANVIL_GOLDEN_DIR "/norm.safetensors", &G_N, &G_NAMES, &G_T));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    anvil_safetensors_free(G_N, G_NAMES, G_T);
    return 0;
}

static anvil_tensor *gget(const char *fmt, ...)
{
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    for (int i = 0; i < G_N; i++)
        if (strcmp(G_NAMES[i], key) == 0)
            return G_T[i];
    fail_msg("norm.safetensors has no tensor \"%s\"", key);
    return NULL;
}

static void compare(const char *what, anvil_tensor *got, anvil_tensor *want)
{
    int64_t n = anvil_tensor_numel(want), worst = 0;
    if (anvil_tensor_numel(got) != n)
        fail_msg("%s: %lld elements, want %lld", what, (long long)anvil_tensor_numel(got), (long long)n);
    double e = tu_rel_err(anvil_tensor_data(got), anvil_tensor_data(want), n, ATOL, RTOL, &worst);
    if (!(e <= 1.0))
        fail_msg("%s: element %lld is %.8g, want %.8g (%.3gx the tolerance)", what, (long long)worst,
                 (double)((float *)anvil_tensor_data(got))[worst], (double)((float *)anvil_tensor_data(want))[worst],
                 e);
}

/* ---- single ops */

typedef struct {
    const char *key;
    bool batch;        /* batch norm (else layer norm) */
    bool affine;
    bool eval;         /* batch norm in evaluation mode: running stats fed */
    int norm_dims;     /* layer norm */
    float eps;
} op_case;

static anvil_value input_like(anvil_graph *g, const char *name, anvil_tensor *t)
{
    return anvil_input(g, name, ANVIL_F32, anvil_tensor_ndim(t), anvil_tensor_shape(t));
}

static void test_op(void **state)
{
    const op_case *c = (const op_case *)*state;
    anvil_graph *g;
    CHECK_OK(anvil_graph_create(&g));
    anvil_tensor *tx = gget("%s.x", c->key);
    anvil_value x = input_like(g, "x", tx), w = ANVIL_NO_VALUE, b = ANVIL_NO_VALUE;
    anvil_value feed[8];
    anvil_tensor *feeds[8];
    int nf = 0;
    feed[nf] = x;
    feeds[nf++] = tx;
    if (c->affine) {
        feeds[nf] = gget("%s.w", c->key);
        w = feed[nf] = input_like(g, "w", feeds[nf]);
        nf++;
        feeds[nf] = gget("%s.b", c->key);
        b = feed[nf] = input_like(g, "b", feeds[nf]);
        nf++;
    }
    anvil_value y;
    if (c->batch) {
        int64_t C = anvil_tensor_shape(tx)[1];
        anvil_init zeros = {ANVIL_INIT_ZEROS, 0}, ones = {ANVIL_INIT_ONES, 0};
        anvil_value rm = anvil_buffer(g, "running_mean", ANVIL_F32, 1, &C, zeros);
        anvil_value rv = anvil_buffer(g, "running_var", ANVIL_F32, 1, &C, ones);
        if (c->eval) {
            feed[nf] = rm;
            feeds[nf++] = gget("%s.rm", c->key);
            feed[nf] = rv;
            feeds[nf++] = gget("%s.rv", c->key);
        }
        y = anvil_batchnorm(g, x, rm, rv, ANVIL_NO_VALUE, w, b, c->eps, 0.1f);
    } else {
        y = anvil_layernorm(g, x, c->norm_dims, w, b, c->eps);
    }
    anvil_tensor *tr = gget("%s.R", c->key);
    anvil_value r = input_like(g, "R", tr);
    feed[nf] = r;
    feeds[nf++] = tr;
    anvil_value loss = anvil_sum(g, anvil_mul(g, y, r), ANVIL_ALL_DIMS, false);
    anvil_value fetch[4] = {y, anvil_gradient(g, loss, x)};
    int nfetch = 2;
    if (c->affine) {
        fetch[nfetch++] = anvil_gradient(g, loss, w);
        fetch[nfetch++] = anvil_gradient(g, loss, b);
    }
    CHECK_OK(anvil_graph_status(g));
    anvil_run_options o = anvil_run_default_options();
    o.device = ANVIL_DEVICE_CPU;
    o.training = !c->eval;
    anvil_tensor *out[4] = {0};
    CHECK_OK(anvil_graph_run(g, &o, nf, feed, feeds, nfetch, fetch, out));
    static const char *const names[4] = {"y", "dx", "dw", "db"};
    for (int i = 0; i < nfetch; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s.%s", c->key, names[i]);
        compare(what, out[i], gget("%s.%s", c->key, names[i]));
        anvil_tensor_release(out[i]);
    }
    anvil_graph_free(g);
}

static const op_case cases[] = {
    {"bn1d", true, true, false, 0, 1e-5f},
    {"bn1d_3d", true, true, false, 0, 1e-5f},
    {"bn2d", true, true, false, 0, 1e-3f},
    {"bn2d_plain", true, false, false, 0, 1e-5f},
    {"bn2d_eval", true, true, true, 0, 1e-5f},
    {"ln1", false, true, false, 1, 1e-5f},
    {"ln2", false, true, false, 2, 1e-5f},
    {"ln_plain", false, false, false, 1, 1e-3f},
};

/* ---- a short BatchNorm training run */

static const char *const STATE_NAMES[] = {
    "0.weight", "0.bias", "0.running_mean", "0.running_var", "0.num_batches_tracked",
    "3.weight", "3.bias",
    "4.weight", "4.bias", "4.running_mean", "4.running_var", "4.num_batches_tracked",
    "6.weight", "6.bias",
};
enum { N_STATE = sizeof STATE_NAMES / sizeof *STATE_NAMES };

static anvil_value bn_layer(anvil_graph *g, anvil_value x, const char *p, int64_t C, float momentum)
{
    char n[64];
    anvil_init zeros = {ANVIL_INIT_ZEROS, 0}, ones = {ANVIL_INIT_ONES, 0};
    snprintf(n, sizeof n, "%s.weight", p);
    anvil_value w = anvil_param(g, n, 1, &C, ones);
    snprintf(n, sizeof n, "%s.bias", p);
    anvil_value b = anvil_param(g, n, 1, &C, zeros);
    snprintf(n, sizeof n, "%s.running_mean", p);
    anvil_value rm = anvil_buffer(g, n, ANVIL_F32, 1, &C, zeros);
    snprintf(n, sizeof n, "%s.running_var", p);
    anvil_value rv = anvil_buffer(g, n, ANVIL_F32, 1, &C, ones);
    snprintf(n, sizeof n, "%s.num_batches_tracked", p);
    anvil_value nbt = anvil_buffer(g, n, ANVIL_I64, 0, NULL, zeros);
    return anvil_batchnorm(g, x, rm, rv, nbt, w, b, 1e-5f, momentum);
}

static anvil_value linear_layer(anvil_graph *g, anvil_value x, const char *p, int64_t in, int64_t out)
{
    char n[64];
    anvil_init u = {ANVIL_INIT_UNIFORM, 0.1f};
    int64_t ws[2] = {out, in};
    snprintf(n, sizeof n, "%s.weight", p);
    anvil_value w = anvil_param(g, n, 2, ws, u);
    snprintf(n, sizeof n, "%s.bias", p);
    anvil_value b = anvil_param(g, n, 1, &out, u);
    return anvil_linear(g, x, w, b);
}

static anvil_model *build_model(void)
{
    anvil_graph *g;
    CHECK_OK(anvil_graph_create(&g));
    int64_t xs[4] = {ANVIL_BATCH, 3, 4, 4};
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 4, xs);
    anvil_value h = anvil_relu(g, bn_layer(g, x, "0", 3, 0.1f));
    h = linear_layer(g, anvil_flatten(g, h), "3", 48, 8);
    h = anvil_relu(g, bn_layer(g, h, "4", 8, NAN)); /* momentum=None */
    h = linear_layer(g, h, "6", 8, 4);
    CHECK_OK(anvil_graph_status(g));
    anvil_model *m;
    CHECK_OK(anvil_model_from_graph(&m, g, x, h));
    return m;
}

static void compare_state(anvil_trainer *t, const char *prefix)
{
    for (int i = 0; i < N_STATE; i++) {
        anvil_tensor *got;
        CHECK_OK(anvil_trainer_get_param(t, STATE_NAMES[i], &got));
        anvil_tensor *want = gget("%s.%s", prefix, STATE_NAMES[i]);
        char what[96];
        snprintf(what, sizeof what, "%s.%s", prefix, STATE_NAMES[i]);
        if (strstr(STATE_NAMES[i], "num_batches_tracked")) {
            assert_int_equal(anvil_tensor_dtype(got), ANVIL_I64);
            assert_int_equal(anvil_tensor_ndim(got), 0);
            if (*(int64_t *)anvil_tensor_data(got) != *(int64_t *)anvil_tensor_data(want))
                fail_msg("%s: %lld, want %lld", what, (long long)*(int64_t *)anvil_tensor_data(got),
                         (long long)*(int64_t *)anvil_tensor_data(want));
        } else {
            compare(what, got, want);
        }
        anvil_tensor_release(got);
    }
}

static anvil_trainer *train_model(anvil_model *m, bool check)
{
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = ANVIL_DEVICE_CPU;
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_SGD);
    cfg.optimizer.lr = 0.1f;
    cfg.optimizer.momentum = 0.9f;
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &cfg));
    /* torch's initial state (buffers start at torch's init: zeros, ones, 0) */
    for (int i = 0; i < N_STATE; i++)
        if (!strstr(STATE_NAMES[i], "num_batches_tracked"))
            CHECK_OK(anvil_trainer_set_param(t, STATE_NAMES[i], gget("train.init.%s", STATE_NAMES[i])));
    if (check)
        compare_state(t, "train.init");
    float *loss = anvil_tensor_data(gget("train.loss"));
    for (int k = 0; k < 3; k++) {
        CHECK_OK(anvil_train_step(t, gget("train.x.%d", k), gget("train.y.%d", k)));
        float l;
        CHECK_OK(anvil_trainer_last_loss(t, &l));
        if (check && !(fabs(l - loss[k]) <= ATOL + RTOL * fabs(loss[k])))
            fail_msg("loss of step %d: %.8g, want %.8g", k + 1, (double)l, (double)loss[k]);
        if (check && (k == 0 || k == 2)) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "train.step%d", k + 1);
            compare_state(t, prefix);
        }
    }
    return t;
}

static void test_train_batchnorm(void **state)
{
    (void)state;
    anvil_model *m = build_model();
    anvil_trainer *t = train_model(m, true);
    anvil_tensor *out;
    CHECK_OK(anvil_predict(t, gget("train.x_eval"), &out));
    compare("train.eval_out", out, gget("train.eval_out"));
    anvil_tensor_release(out);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

/* The saved file holds every state_dict entry with torch's dtype and shape. */
static void test_save_buffers(void **state)
{
    (void)state;
    anvil_model *m = build_model();
    anvil_trainer *t = train_model(m, false);
    char *dir = tu_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/bn.safetensors", dir);
    CHECK_OK(anvil_trainer_save(t, path));
    int n;
    char **names;
    anvil_tensor **ts;
    CHECK_OK(anvil_safetensors_read(path, &n, &names, &ts));
    assert_int_equal(n, N_STATE);
    for (int i = 0; i < N_STATE; i++) {
        int j = 0;
        while (j < n && strcmp(names[j], STATE_NAMES[i]) != 0)
            j++;
        if (j == n)
            fail_msg("saved file lacks %s", STATE_NAMES[i]);
        anvil_tensor *want = gget("train.step3.%s", STATE_NAMES[i]);
        if (strstr(STATE_NAMES[i], "num_batches_tracked")) {
            assert_int_equal(anvil_tensor_dtype(ts[j]), ANVIL_I64);
            assert_int_equal(anvil_tensor_ndim(ts[j]), 0);
            assert_int_equal(*(int64_t *)anvil_tensor_data(ts[j]), 3);
        } else {
            assert_int_equal(anvil_tensor_dtype(ts[j]), ANVIL_F32);
            compare(STATE_NAMES[i], ts[j], want);
        }
    }
    /* and it loads back (int64 buffers included) */
    CHECK_OK(anvil_trainer_load(t, path));
    anvil_safetensors_free(n, names, ts);
    tu_rmdir(dir);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

/* Evaluation programs never update the running statistics. */
static void test_eval_keeps_stats(void **state)
{
    (void)state;
    anvil_model *m = build_model();
    anvil_trainer *t = train_model(m, false);
    anvil_tensor *before, *after, *nb, *out;
    CHECK_OK(anvil_trainer_get_param(t, "4.running_var", &before));
    CHECK_OK(anvil_predict(t, gget("train.x_eval"), &out));
    CHECK_OK(anvil_trainer_get_param(t, "4.running_var", &after));
    CHECK_OK(anvil_trainer_get_param(t, "4.num_batches_tracked", &nb));
    assert_memory_equal(anvil_tensor_data(before), anvil_tensor_data(after), 8 * sizeof(float));
    assert_int_equal(*(int64_t *)anvil_tensor_data(nb), 3);
    /* One sample at a time: evaluation needs no batch statistics (their node computes
     * nothing), and each sample's output is the one it got in the batch of 5 (up to the
     * rounding of the linear layer's product, whose kernel depends on the row count). */
    anvil_tensor *xe = gget("train.x_eval");
    int64_t one[4];
    memcpy(one, anvil_tensor_shape(xe), sizeof one);
    int64_t per_x = anvil_tensor_numel(xe) / one[0], per_y = anvil_tensor_numel(out) / one[0];
    one[0] = 1;
    for (int64_t i = 0; i < anvil_tensor_shape(xe)[0]; i++) {
        anvil_tensor *x1, *y1;
        CHECK_OK(anvil_tensor_create(&x1, ANVIL_F32, 4, one, (const float *)anvil_tensor_data(xe) + i * per_x));
        CHECK_OK(anvil_predict(t, x1, &y1));
        assert_int_equal(anvil_tensor_numel(y1), per_y);
        int64_t worst;
        double err = tu_rel_err((const float *)anvil_tensor_data(y1), (const float *)anvil_tensor_data(out) + i * per_y,
                                per_y, 1e-6, 1e-5, &worst);
        assert_true(err <= 1.0);
        anvil_tensor_release(x1);
        anvil_tensor_release(y1);
    }
    anvil_tensor_release(before);
    anvil_tensor_release(after);
    anvil_tensor_release(nb);
    anvil_tensor_release(out);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

static void test_errors(void **state)
{
    (void)state;
    anvil_graph *g;
    CHECK_OK(anvil_graph_create(&g));
    int64_t xs[2] = {4, 3}, c3 = 3, c2 = 2;
    anvil_init zeros = {ANVIL_INIT_ZEROS, 0};
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 2, xs);
    anvil_value rm = anvil_buffer(g, "rm", ANVIL_F32, 1, &c2, zeros);
    anvil_value rv = anvil_buffer(g, "rv", ANVIL_F32, 1, &c3, zeros);
    assert_int_equal(anvil_batchnorm(g, x, rm, rv, ANVIL_NO_VALUE, ANVIL_NO_VALUE, ANVIL_NO_VALUE, 1e-5f, 0.1f),
                     ANVIL_NO_VALUE);
    assert_int_equal(anvil_graph_status(g), ANVIL_ERR_SHAPE);
    assert_non_null(strstr(anvil_last_error(), "running_mean"));
    anvil_graph_free(g);
    CHECK_OK(anvil_graph_create(&g));
    x = anvil_input(g, "x", ANVIL_F32, 2, xs);
    assert_int_equal(anvil_layernorm(g, x, 3, ANVIL_NO_VALUE, ANVIL_NO_VALUE, 1e-5f), ANVIL_NO_VALUE);
    anvil_graph_free(g);
}

int main(void)
{
    enum { N = sizeof cases / sizeof *cases };
    struct CMUnitTest tests[N + 4];
    for (int i = 0; i < N; i++) {
        struct CMUnitTest t = {cases[i].key, test_op, NULL, NULL, (void *)&cases[i]};
        tests[i] = t;
    }
    struct CMUnitTest extra[4] = {cmocka_unit_test(test_train_batchnorm), cmocka_unit_test(test_save_buffers),
                                  cmocka_unit_test(test_eval_keeps_stats), cmocka_unit_test(test_errors)};
    for (int i = 0; i < 4; i++)
        tests[N + i] = extra[i];
    return _cmocka_run_group_tests("norm", tests, N + 4, setup, teardown);
}

/* Loading a saved file into PyTorch (checked by hand):
 *   m = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 8),
 *                     nn.BatchNorm1d(8, momentum=None), nn.ReLU(), nn.Linear(8, 4))
 *   m.load_state_dict(safetensors.torch.load_file("bn.safetensors"))  # strict */
