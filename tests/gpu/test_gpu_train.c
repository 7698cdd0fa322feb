/* test_gpu_train.c — the GPU-resident training step, measured.
 *
 *  - counters: after 3 warm-up steps, a training step makes 0 device allocations,
 *    0 device-to-host copies, exactly 1 CUDA-graph launch and 0 kernel launches from the
 *    host (anvil_trainer_counters' last_step); reading the loss, changing the learning
 *    rate or compiling a second batch size does not change that for later steps, and a
 *    learning-rate change reaches the captured graph (it is read on the device);
 *  - determinism: two CUDA trainers with the same seed (dropout included) hold the same
 *    parameters bit for bit after a few steps;
 *  - the copy stream: host batches uploaded overlapped with the previous step give the
 *    same parameters, bit for bit, as plain uploads;
 *  - Fashion-MNIST: the built-in "mlp" from PyTorch's initial weights, one epoch in
 *    dataset order on device-resident data, matches PyTorch's test accuracy and losses
 *    from the same start (tests/golden/mlp_fmnist.safetensors); a resident step makes no
 *    copies at all.  Data from $ANVIL_DATA_DIR or ANVIL_DEFAULT_DATA_DIR; skipped when
 *    absent, and when ANVIL_GPU_TEST_QUICK is set (scripts/gpu-tests.sh sets it under
 *    compute-sanitizer, where an epoch would take very long).
 *
 * Without a usable CUDA GPU every test is skipped. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "anvil.h"
#include "backend/backend.h"
#include "testutil.h"

static bool have_gpu;

static int group_setup(void **state)
{
    (void)state;
    have_gpu = anvil_cuda_available();
    if (!have_gpu)
        fprintf(stderr, "test_gpu_train: no usable CUDA GPU (%s); skipping every test\n", anvil_last_error());
    return 0;
}

#define NEED_GPU()          \
    do {                    \
        if (!have_gpu)      \
            skip();         \
    } while (0)

/* A random batch for a [B, 1, 28, 28] -> 10 classes model. */
static void mnist_like_batch(int64_t B, uint64_t seed, anvil_tensor **x, anvil_tensor **y)
{
    int64_t xs[4] = {B, 1, 28, 28};
    *x = tu_rand_tensor(4, xs, 0, 1, seed);
    assert_non_null(*x);
    CHECK_OK(anvil_tensor_create(y, ANVIL_I32, 1, &B, NULL));
    float *u = malloc((size_t)B * sizeof *u);
    assert_non_null(u);
    tu_fill_uniform(u, B, 0, 10, seed + 1);
    int32_t *yd = anvil_tensor_data(*y);
    for (int64_t i = 0; i < B; i++)
        yd[i] = (int32_t)u[i] > 9 ? 9 : (int32_t)u[i];
    free(u);
}

static void step(anvil_trainer *t, int64_t B, uint64_t seed)
{
    anvil_tensor *x, *y;
    mnist_like_batch(B, seed, &x, &y);
    CHECK_OK(anvil_train_step(t, x, y));
    anvil_tensor_release(x);
    anvil_tensor_release(y);
}

static void print_counters(const char *what, const anvil_counters *c)
{
    print_message("%s: allocs %lld, h2d %lld (%lld bytes), d2h %lld (%lld bytes), graph launches %lld, "
                  "host kernel launches %lld\n",
                  what, (long long)c->device_allocs, (long long)c->h2d_copies, (long long)c->h2d_bytes,
                  (long long)c->d2h_copies, (long long)c->d2h_bytes, (long long)c->graph_launches,
                  (long long)c->host_kernel_launches);
}

static void assert_one_launch_step(anvil_trainer *t, const char *what)
{
    anvil_counters total, last;
    CHECK_OK(anvil_trainer_counters(t, &total, &last));
    print_counters(what, &last);
    if (last.device_allocs != 0 || last.d2h_copies != 0 || last.graph_launches != 1 ||
        last.host_kernel_launches != 0 || last.h2d_copies > 2)
        fail_msg("%s: a training step must make 0 device allocations, 0 device-to-host copies, "
                 "1 graph launch, 0 host kernel launches and at most 2 host-to-device copies "
                 "(the batch); got %lld, %lld, %lld, %lld, %lld",
                 what, (long long)last.device_allocs, (long long)last.d2h_copies, (long long)last.graph_launches,
                 (long long)last.host_kernel_launches, (long long)last.h2d_copies);
}

static void test_step_counters(void **state)
{
    (void)state;
    NEED_GPU();
    anvil_model *m;
    CHECK_OK(anvil_model_builtin(&m, "mlp"));
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = ANVIL_DEVICE_CUDA;
    cfg.seed = 3;
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &cfg));
    assert_int_equal(anvil_trainer_device(t), ANVIL_DEVICE_CUDA);
    for (int k = 0; k < 3; k++) /* warm-up: compile, capture */
        step(t, 128, 100 + (uint64_t)k);
    step(t, 128, 200);
    assert_one_launch_step(t, "step 4");

    /* Reading the loss copies to the host, outside the step; the next step is clean. */
    float loss;
    CHECK_OK(anvil_trainer_last_loss(t, &loss));
    assert_true(isfinite(loss) && loss > 0.0f);
    step(t, 128, 201);
    assert_one_launch_step(t, "step after reading the loss");

    /* A second batch size gets its own program; afterwards both replay cleanly. */
    step(t, 100, 202);
    step(t, 100, 203);
    assert_one_launch_step(t, "second step of batch 100");
    step(t, 128, 204);
    assert_one_launch_step(t, "batch 128 after batch 100");

    /* The learning rate lives on the device: a tiny one freezes the parameters without
     * recapturing anything. */
    CHECK_OK(anvil_trainer_set_lr(t, 1e-30f));
    anvil_tensor *before, *after;
    CHECK_OK(anvil_trainer_get_param(t, "1.weight", &before));
    step(t, 128, 205);
    assert_one_launch_step(t, "step after set_lr");
    CHECK_OK(anvil_trainer_get_param(t, "1.weight", &after));
    assert_int_equal(anvil_tensor_nbytes(before), anvil_tensor_nbytes(after));
    assert_memory_equal(anvil_tensor_cdata(before), anvil_tensor_cdata(after), anvil_tensor_nbytes(after));
    anvil_tensor_release(before);
    CHECK_OK(anvil_trainer_set_lr(t, 1e-3f));
    step(t, 128, 206);
    CHECK_OK(anvil_trainer_get_param(t, "1.weight", &before));
    assert_memory_not_equal(anvil_tensor_cdata(before), anvil_tensor_cdata(after), anvil_tensor_nbytes(after));
    anvil_tensor_release(before);
    anvil_tensor_release(after);
    assert_int_equal(anvil_trainer_step_count(t), 10);

    anvil_counters total, last;
    CHECK_OK(anvil_trainer_counters(t, &total, &last));
    print_counters("total", &total);
    /* Outside the graphs only the constants, once per program (batch 128 and 100). */
    assert_true(total.host_kernel_launches <= 2);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

static anvil_model *dropout_model(void)
{
    int64_t in[3] = {1, 28, 28};
    anvil_model *m;
    CHECK_OK(anvil_model_create(&m, "dropout-mlp", 3, in));
    anvil_layer_desc l = anvil_layer_default(ANVIL_LAYER_FLATTEN);
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l.out_features = 64;
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_RELU);
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_DROPOUT);
    l.p = 0.3f;
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l.out_features = 10;
    CHECK_OK(anvil_model_add(m, &l));
    return m;
}

/* conv (bias and none, stride 1 and 2) + BatchNorm + max pool + linear: the CUDA
 * backend's convolution, per-channel sum and batch-norm kernels */
static anvil_model *conv_bn_model(void)
{
    int64_t in[3] = {1, 28, 28};
    anvil_model *m;
    CHECK_OK(anvil_model_create(&m, "conv-bn", 3, in));
    anvil_layer_desc l = anvil_layer_default(ANVIL_LAYER_CONV2D);
    l.out_channels = 16;
    l.kernel_size[0] = l.kernel_size[1] = 3;
    l.padding[0] = l.padding[1] = 1;
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_BATCHNORM2D);
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_RELU);
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_CONV2D);
    l.out_channels = 32;
    l.kernel_size[0] = l.kernel_size[1] = 3;
    l.padding[0] = l.padding[1] = 1;
    l.stride[0] = l.stride[1] = 2;
    l.bias = false;
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_BATCHNORM2D);
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_RELU);
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_MAXPOOL2D);
    l.kernel_size[0] = l.kernel_size[1] = 2;
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_FLATTEN);
    CHECK_OK(anvil_model_add(m, &l));
    l = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l.out_features = 10;
    CHECK_OK(anvil_model_add(m, &l));
    return m;
}

/* Two trainers with the same seed and batches end bit-identical: the last loss, every
 * parameter and every buffer (batch norm's running statistics and count). */
static void check_deterministic(anvil_model *(*make)(void), const char *what)
{
    anvil_model *m[2];
    anvil_trainer *t[2];
    for (int k = 0; k < 2; k++) {
        m[k] = make();
        anvil_trainer_config cfg = anvil_trainer_default_config();
        cfg.device = ANVIL_DEVICE_CUDA;
        cfg.seed = 1234;
        CHECK_OK(anvil_trainer_create(&t[k], m[k], &cfg));
        for (int s = 0; s < 4; s++)
            step(t[k], 64, 300 + (uint64_t)s);
    }
    float l0, l1;
    CHECK_OK(anvil_trainer_last_loss(t[0], &l0));
    CHECK_OK(anvil_trainer_last_loss(t[1], &l1));
    assert_memory_equal(&l0, &l1, sizeof l0);
    anvil_graph *g = anvil_model_graph(m[0]);
    for (int v = 0; v < g->n; v++) {
        if (g->nodes[v].op != OP_PARAM && g->nodes[v].op != OP_BUFFER)
            continue;
        anvil_tensor *a, *b;
        CHECK_OK(anvil_trainer_get_param(t[0], g->nodes[v].name, &a));
        CHECK_OK(anvil_trainer_get_param(t[1], g->nodes[v].name, &b));
        if (memcmp(anvil_tensor_cdata(a), anvil_tensor_cdata(b), anvil_tensor_nbytes(a)) != 0)
            fail_msg("%s: %s differs between two runs with the same seed", what, g->nodes[v].name);
        anvil_tensor_release(a);
        anvil_tensor_release(b);
    }
    for (int k = 0; k < 2; k++) {
        anvil_trainer_free(t[k]);
        anvil_model_free(m[k]);
    }
}

static void test_determinism(void **state)
{
    (void)state;
    NEED_GPU();
    check_deterministic(dropout_model, "dropout mlp");
    check_deterministic(conv_bn_model, "conv + batch norm");
}

/* Host batches go through the copy stream and device landing buffers (cuda.cu's
 * upload_batch), overlapped with the previous step.  20 steps queued back to back with
 * no host synchronization, batches of 128 (one chunk) and 1400 (4.4 MB: two chunks, so
 * the landing slots wrap around), must leave the same parameters, bit for bit, as the
 * same steps through plain uploads on the compute stream (ANVIL_CUDA_COPY_STREAM=0): a
 * batch read before its copy landed, or overwritten while a step still read it, would
 * differ.  A step still makes 2 host-to-device copies and 1 graph launch. */
static void test_copy_stream(void **state)
{
    (void)state;
    NEED_GPU();
    enum { STEPS = 20 };
    anvil_tensor *xs[STEPS], *ys[STEPS];
    for (int k = 0; k < STEPS; k++)
        mnist_like_batch(k % 3 == 2 ? 1400 : 128, 900 + 2 * (uint64_t)k, &xs[k], &ys[k]);
    anvil_model *m;
    CHECK_OK(anvil_model_builtin(&m, "mlp"));
    anvil_trainer *t[2];
    for (int v = 0; v < 2; v++) {
        anvil_trainer_config cfg = anvil_trainer_default_config();
        cfg.device = ANVIL_DEVICE_CUDA;
        cfg.seed = 5;
        if (v == 1)
            setenv("ANVIL_CUDA_COPY_STREAM", "0", 1);
        CHECK_OK(anvil_trainer_create(&t[v], m, &cfg));
        unsetenv("ANVIL_CUDA_COPY_STREAM");
        for (int k = 0; k < STEPS; k++)
            CHECK_OK(anvil_train_step(t[v], xs[k], ys[k]));
        if (v == 0)
            assert_one_launch_step(t[v], "host-batch step through the copy stream");
    }
    anvil_counters total, last;
    CHECK_OK(anvil_trainer_counters(t[0], &total, &last));
    assert_int_equal(last.h2d_copies, 2);
    anvil_graph *g = anvil_model_graph(m);
    for (int v = 0; v < g->n; v++) {
        if (g->nodes[v].op != OP_PARAM)
            continue;
        anvil_tensor *a, *b;
        CHECK_OK(anvil_trainer_get_param(t[0], g->nodes[v].name, &a));
        CHECK_OK(anvil_trainer_get_param(t[1], g->nodes[v].name, &b));
        if (memcmp(anvil_tensor_cdata(a), anvil_tensor_cdata(b), anvil_tensor_nbytes(a)) != 0)
            fail_msg("copy stream: %s differs from the plain-upload run", g->nodes[v].name);
        anvil_tensor_release(a);
        anvil_tensor_release(b);
    }
    for (int k = 0; k < STEPS; k++) {
        anvil_tensor_release(xs[k]);
        anvil_tensor_release(ys[k]);
    }
    anvil_trainer_free(t[0]);
    anvil_trainer_free(t[1]);
    anvil_model_free(m);
}

/* One epoch of the built-in mlp on the GPU from PyTorch's initial weights, dataset order,
 * device-resident data: accuracy and losses must match PyTorch's from the same start
 * (tests/golden/make_mlp_fmnist.py), as the CPU test does; and a resident step in the
 * middle of the epoch copies nothing in or out: one graph launch, nothing else. */
/* Resumed == uninterrupted on the GPU, bit for bit: dropout, groups, a warm-up cosine
 * schedule and norm clipping; host batches, then resident Fashion-MNIST when present. */
static void resume_run(bool resident, anvil_dataset *d)
{
    anvil_model *m = dropout_model();
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = ANVIL_DEVICE_CUDA;
    cfg.seed = 77;
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_ADAMW);
    anvil_optimizer_config b = cfg.optimizer;
    b.weight_decay = 0.0f;
    anvil_param_group pg = anvil_param_group_default(NULL, true, &b);
    cfg.n_param_groups = 1, cfg.param_groups = &pg;
    cfg.schedule = anvil_schedule_default_config(ANVIL_SCHED_COSINE);
    cfg.schedule.t_max = 10, cfg.schedule.warmup = 3;
    cfg.clip_grad_norm = 1.0f;
    anvil_trainer *a, *c;
    CHECK_OK(anvil_trainer_create(&a, m, &cfg));
    CHECK_OK(anvil_trainer_create(&c, m, &cfg));
    if (resident) {
        CHECK_OK(anvil_trainer_attach_data(a, d, 128, true, 5));
        CHECK_OK(anvil_trainer_attach_data(c, d, 128, true, 5));
    }
    char path[] = "/tmp/anvil-gpu-ck-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (int k = 0; k < 12; k++) {
        if (k == 7)
            CHECK_OK(anvil_trainer_save_checkpoint(a, NULL, path));
        if (resident) {
            bool done;
            CHECK_OK(anvil_train_step_resident(a, &done));
        } else {
            step(a, 64, 500 + (uint64_t)k);
        }
    }
    CHECK_OK(anvil_trainer_load_checkpoint(c, NULL, path));
    for (int k = 7; k < 12; k++) {
        if (resident) {
            bool done;
            CHECK_OK(anvil_train_step_resident(c, &done));
        } else {
            step(c, 64, 500 + (uint64_t)k);
        }
    }
    unlink(path);
    anvil_graph *g = anvil_model_graph(m);
    for (int v = 0; v < g->n; v++) {
        const char *name = g->nodes[v].name;
        if (g->nodes[v].op != OP_PARAM)
            continue;
        anvil_tensor *pa, *pc;
        CHECK_OK(anvil_trainer_get_param(a, name, &pa));
        CHECK_OK(anvil_trainer_get_param(c, name, &pc));
        if (memcmp(anvil_tensor_cdata(pa), anvil_tensor_cdata(pc), anvil_tensor_nbytes(pa)) != 0)
            fail_msg("%s resume: parameter %s differs from the uninterrupted run", resident ? "resident" : "host",
                     name);
        anvil_tensor_release(pa);
        anvil_tensor_release(pc);
    }
    float la, lc;
    CHECK_OK(anvil_trainer_take_mean_loss(a, &la));
    CHECK_OK(anvil_trainer_take_mean_loss(c, &lc));
    assert_memory_equal(&la, &lc, sizeof la);
    anvil_trainer_free(a);
    anvil_trainer_free(c);
    anvil_model_free(m);
}

static void test_resume(void **state)
{
    (void)state;
    NEED_GPU();
    resume_run(false, NULL);
    anvil_dataset *train, *test;
    if (!tu_load_fmnist(&train, &test)) {
        print_message("no Fashion-MNIST: resident resume not checked\n");
        return;
    }
    resume_run(true, train);
    anvil_dataset_free(train);
    anvil_dataset_free(test);
}

static void fmnist_parity(const char *model, const char *golden);

static void test_fashion_mnist(void **state)
{
    (void)state;
    fmnist_parity("mlp", ANVIL_GOLDEN_DIR "/mlp_fmnist.safetensors");
}

/* The cnn (cuDNN convolutions, CUDA pooling) the same way; PyTorch reaches 0.860. */
static void test_fashion_mnist_cnn(void **state)
{
    (void)state;
    fmnist_parity("cnn", ANVIL_GOLDEN_DIR "/cnn_fmnist.safetensors");
}

static void fmnist_parity(const char *model, const char *golden)
{
    NEED_GPU();
    const char *quick = getenv("ANVIL_GPU_TEST_QUICK");
    if (quick && *quick && strcmp(quick, "0") != 0) {
        print_message("ANVIL_GPU_TEST_QUICK is set: skipping the Fashion-MNIST epoch\n");
        skip();
    }
    tu_fmnist_parity(model, golden, ANVIL_DEVICE_CUDA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_counters),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_copy_stream),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_fashion_mnist),
        cmocka_unit_test(test_fashion_mnist_cnn),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
