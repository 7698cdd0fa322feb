/* test_train.c — the trainer end to end on the CPU: memory plan, learning, determinism,
 * partial batches, save/load, learning-rate changes, bad input, and the built-in mlp on
 * Fashion-MNIST (>= 0.85 test accuracy after one epoch). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static anvil_trainer_config cpu_config(anvil_optimizer_kind opt, uint64_t seed)
{
    anvil_trainer_config c = anvil_trainer_default_config();
    c.device = ANVIL_DEVICE_CPU;
    c.optimizer = anvil_optimizer_default_config(opt);
    c.seed = seed;
    return c;
}

/* A 2-feature, 3-class problem: class k centered at angle 2*pi*k/3. */
static void make_blobs(int n, uint64_t seed, anvil_tensor **x, anvil_tensor **y)
{
    int64_t xs[2] = {n, 2}, ys[1] = {n};
    CHECK_OK(anvil_tensor_create(x, ANVIL_F32, 2, xs, NULL));
    CHECK_OK(anvil_tensor_create(y, ANVIL_I32, 1, ys, NULL));
    float *xd = anvil_tensor_data(*x);
    int32_t *yd = anvil_tensor_data(*y);
    float noise[2];
    for (int i = 0; i < n; i++) {
        int k = (int)((i * 7 + (int)seed) % 3);
        tu_fill_uniform(noise, 2, -0.6f, 0.6f, seed * 1000003u + (uint64_t)i);
        xd[2 * i] = 2.0f * cosf(2.0943951f * (float)k) + noise[0];
        xd[2 * i + 1] = 2.0f * sinf(2.0943951f * (float)k) + noise[1];
        yd[i] = k;
    }
}

static anvil_model *small_mlp(float dropout)
{
    anvil_model *m;
    int64_t in[1] = {2};
    CHECK_OK(anvil_model_create(&m, "small", 1, in));
    anvil_layer_desc l1 = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l1.out_features = 32;
    CHECK_OK(anvil_model_add(m, &l1));
    anvil_layer_desc r = anvil_layer_default(ANVIL_LAYER_RELU);
    CHECK_OK(anvil_model_add(m, &r));
    if (dropout > 0) {
        anvil_layer_desc d = anvil_layer_default(ANVIL_LAYER_DROPOUT);
        d.p = dropout;
        CHECK_OK(anvil_model_add(m, &d));
    }
    anvil_layer_desc l2 = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l2.out_features = 3;
    CHECK_OK(anvil_model_add(m, &l2));
    return m;
}

static double accuracy(anvil_trainer *t, anvil_tensor *x, anvil_tensor *y)
{
    anvil_tensor *out;
    CHECK_OK(anvil_predict(t, x, &out));
    const float *o = anvil_tensor_data(out);
    const int32_t *yd = anvil_tensor_data(y);
    int64_t n = anvil_tensor_shape(out)[0], c = anvil_tensor_shape(out)[1], ok = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t best = 0;
        for (int64_t j = 1; j < c; j++)
            if (o[i * c + j] > o[i * c + best])
                best = j;
        ok += best == yd[i];
    }
    anvil_tensor_release(out);
    return (double)ok / (double)n;
}

static void test_learns_blobs(void **state)
{
    (void)state;
    anvil_model *m = small_mlp(0.1f);
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 3);
    c.optimizer.lr = 0.01f;
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    anvil_tensor *x, *y;
    make_blobs(64, 1, &x, &y);
    float first = 0, last = 0;
    for (int s = 0; s < 100; s++) {
        CHECK_OK(anvil_train_step(t, x, y));
        if (s == 0)
            CHECK_OK(anvil_trainer_last_loss(t, &first));
    }
    CHECK_OK(anvil_trainer_last_loss(t, &last));
    print_message("  blobs: loss %.4f -> %.4f\n", first, last);
    assert_true(last < 0.3f * first);
    anvil_tensor *tx, *ty;
    make_blobs(300, 2, &tx, &ty);
    double acc = accuracy(t, tx, ty);
    print_message("  blobs: held-out accuracy %.3f\n", acc);
    assert_true(acc > 0.95);
    assert_int_equal(anvil_trainer_step_count(t), 100);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_tensor_release(tx);
    anvil_tensor_release(ty);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

/* The memory plan shares storage: the arena is smaller than all intermediates; the fusion
 * pass takes every ReLU after a linear or conv2d into its epilogue, and ReLU backwards
 * into the max pool's backward or the product before them. */
static void test_memory_plan(void **state)
{
    (void)state;
    anvil_model *m;
    CHECK_OK(anvil_model_builtin(&m, "mlp"));
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 0);
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    anvil_plan_stats s;
    CHECK_OK(anvil_trainer_plan_stats(t, 128, &s));
    print_message("  mlp batch 128: transient %zu bytes planned vs %zu unplanned, %d values, %d in place, "
                  "%d kernels, %d fused, persistent %zu\n", s.transient_bytes, s.unplanned_bytes, s.values, s.inplace,
                  s.kernels, s.fused, s.persistent_bytes);
    assert_int_equal(s.fused, 4); /* both hidden linear+relu pairs and both dy W + relu backward pairs */
    /* fused, the mlp's step keeps 10 values, every one live into the backward pass: nothing
     * to share; without the fusion pass the plan shares storage and works in place */
    assert_true(s.transient_bytes > 0);
    assert_true(s.transient_bytes <= s.unplanned_bytes);
    /* params + grads + 2 Adam slots, each at least 669706 floats */
    assert_true(s.persistent_bytes >= 4 * 669706 * 4);
    assert_int_equal(anvil_model_param_count(m), 669706);
    setenv("ANVIL_FUSE", "0", 1);
    anvil_status su = anvil_trainer_plan_stats(t, 64, &s);
    unsetenv("ANVIL_FUSE");
    CHECK_OK(su);
    print_message("  mlp batch 64, unfused: transient %zu planned vs %zu unplanned, %d in place\n", s.transient_bytes,
                  s.unplanned_bytes, s.inplace);
    assert_true(s.transient_bytes < s.unplanned_bytes);
    assert_true(s.inplace > 0);
    anvil_trainer_free(t);
    anvil_model_free(m);

    /* the cnn: both conv+relu pairs, the hidden linear+relu, both max-pool backwards with
     * the ReLU backward after them, and the hidden layer's dy W + ReLU backward */
    CHECK_OK(anvil_model_builtin(&m, "cnn"));
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    CHECK_OK(anvil_trainer_plan_stats(t, 16, &s));
    print_message("  cnn batch 16: transient %zu planned vs %zu unplanned, %d in place, %d fused\n",
                  s.transient_bytes, s.unplanned_bytes, s.inplace, s.fused);
    assert_int_equal(s.fused, 6);
    assert_true(s.transient_bytes < s.unplanned_bytes);
    /* ANVIL_FUSE=0 turns the pass off (a new batch size compiles a new program) */
    setenv("ANVIL_FUSE", "0", 1);
    anvil_status st = anvil_trainer_plan_stats(t, 3, &s);
    unsetenv("ANVIL_FUSE");
    CHECK_OK(st);
    assert_int_equal(s.fused, 0);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

static void params_equal(anvil_trainer *a, anvil_trainer *b, const char *name, bool expect_equal)
{
    anvil_tensor *ta, *tb;
    CHECK_OK(anvil_trainer_get_param(a, name, &ta));
    CHECK_OK(anvil_trainer_get_param(b, name, &tb));
    bool eq = memcmp(anvil_tensor_data(ta), anvil_tensor_data(tb), anvil_tensor_nbytes(ta)) == 0;
    if (eq != expect_equal)
        fail_msg("parameter %s: expected %s", name, expect_equal ? "bitwise equal" : "different");
    anvil_tensor_release(ta);
    anvil_tensor_release(tb);
}

/* Trains m for `steps` steps on (x, y) twice: with the fusion pass (which must fuse
 * want_fused pairs) and with ANVIL_FUSE=0; t[0], t[1] and their last losses. */
static void train_fused_and_not(anvil_model *m, anvil_trainer_config c, anvil_tensor *x, anvil_tensor *y, int steps,
                                int want_fused, anvil_trainer *t[2], float loss[2])
{
    int64_t batch = anvil_tensor_shape(x)[0];
    for (int f = 0; f < 2; f++) {
        if (f == 1)
            setenv("ANVIL_FUSE", "0", 1);
        CHECK_OK(anvil_trainer_create(&t[f], m, &c));
        anvil_plan_stats s;
        CHECK_OK(anvil_trainer_plan_stats(t[f], batch, &s));
        assert_int_equal(s.fused, f == 0 ? want_fused : 0);
        for (int i = 0; i < steps; i++)
            CHECK_OK(anvil_train_step(t[f], x, y));
        CHECK_OK(anvil_trainer_last_loss(t[f], &loss[f]));
        unsetenv("ANVIL_FUSE");
    }
    assert_memory_equal(&loss[0], &loss[1], sizeof(float));
}

/* conv -> relu -> maxpool (kernel k, stride st, padding pd) -> flatten -> linear 3. */
static anvil_model *conv_pool_model(int k, int st, int pd)
{
    anvil_model *m;
    int64_t in[3] = {2, 9, 10};
    CHECK_OK(anvil_model_create(&m, "convpool", 3, in));
    anvil_layer_desc cv = anvil_layer_default(ANVIL_LAYER_CONV2D);
    cv.out_channels = 4;
    cv.kernel_size[0] = cv.kernel_size[1] = 3;
    cv.padding[0] = cv.padding[1] = 1;
    CHECK_OK(anvil_model_add(m, &cv));
    anvil_layer_desc r = anvil_layer_default(ANVIL_LAYER_RELU);
    CHECK_OK(anvil_model_add(m, &r));
    anvil_layer_desc mp = anvil_layer_default(ANVIL_LAYER_MAXPOOL2D);
    mp.kernel_size[0] = mp.kernel_size[1] = k;
    mp.stride[0] = mp.stride[1] = st;
    mp.padding[0] = mp.padding[1] = pd;
    CHECK_OK(anvil_model_add(m, &mp));
    anvil_layer_desc f = anvil_layer_default(ANVIL_LAYER_FLATTEN);
    CHECK_OK(anvil_model_add(m, &f));
    anvil_layer_desc l = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l.out_features = 3;
    CHECK_OK(anvil_model_add(m, &l));
    return m;
}

/* The max-pool backward with the ReLU backward's mask (graph/fuse.c) gives the same
 * training bit for bit as the two ops apart (ANVIL_FUSE=0), for the 2x2 stride-2 pool
 * (its own CPU kernel), overlapping windows with padding, and windows with gaps; the
 * pass fuses exactly the conv+relu and the pool+relu-backward pair. */
static void test_fused_pool_relu_bitwise(void **state)
{
    (void)state;
    const int cfg[3][3] = {{2, 2, 0}, {3, 2, 1}, {2, 3, 0}};
    int64_t xs[4] = {6, 2, 9, 10}, ys[1] = {6};
    anvil_tensor *x, *y;
    CHECK_OK(anvil_tensor_create(&x, ANVIL_F32, 4, xs, NULL));
    CHECK_OK(anvil_tensor_create(&y, ANVIL_I32, 1, ys, NULL));
    tu_fill_uniform(anvil_tensor_data(x), 6 * 2 * 9 * 10, -1.0f, 1.0f, 77);
    for (int i = 0; i < 6; i++)
        ((int32_t *)anvil_tensor_data(y))[i] = i % 3;
    for (int k = 0; k < 3; k++) {
        anvil_model *m = conv_pool_model(cfg[k][0], cfg[k][1], cfg[k][2]);
        anvil_trainer *t[2];
        float loss[2];
        anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 5);
        c.optimizer.lr = 0.05f;
        train_fused_and_not(m, c, x, y, 5, 2, t, loss);
        params_equal(t[0], t[1], "0.weight", true);
        params_equal(t[0], t[1], "0.bias", true);
        params_equal(t[0], t[1], "4.weight", true);
        for (int f = 0; f < 2; f++)
            anvil_trainer_free(t[f]);
        anvil_model_free(m);
    }
    anvil_tensor_release(x);
    anvil_tensor_release(y);
}

/* The fusion pass changes no value on the CPU: an mlp with a hidden ReLU layer (linear
 * + relu epilogues, dy W + ReLU backward) trains bit for bit as with ANVIL_FUSE=0. */
static void test_fused_mlp_bitwise(void **state)
{
    (void)state;
    anvil_model *m = small_mlp(0);
    anvil_tensor *x, *y;
    make_blobs(32, 3, &x, &y);
    anvil_trainer *t[2];
    float loss[2];
    train_fused_and_not(m, cpu_config(ANVIL_OPT_ADAM, 9), x, y, 8, 2, t, loss); /* linear+relu, dy W + relu bwd */
    params_equal(t[0], t[1], "0.weight", true);
    params_equal(t[0], t[1], "2.weight", true);
    for (int f = 0; f < 2; f++)
        anvil_trainer_free(t[f]);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_model_free(m);
}

/* Same seed, same result bit for bit (dropout included); another seed differs. */
static void test_deterministic(void **state)
{
    (void)state;
    anvil_model *m = small_mlp(0.5f);
    anvil_trainer *t[3];
    uint64_t seeds[3] = {11, 11, 12};
    anvil_tensor *x, *y;
    make_blobs(32, 5, &x, &y);
    for (int i = 0; i < 3; i++) {
        anvil_trainer_config c = cpu_config(ANVIL_OPT_SGD, seeds[i]);
        c.optimizer.momentum = 0.9f;
        CHECK_OK(anvil_trainer_create(&t[i], m, &c));
        for (int s = 0; s < 10; s++)
            CHECK_OK(anvil_train_step(t[i], x, y));
    }
    params_equal(t[0], t[1], "0.weight", true);
    params_equal(t[0], t[1], "3.bias", true);
    params_equal(t[0], t[2], "0.weight", false);
    for (int i = 0; i < 3; i++)
        anvil_trainer_free(t[i]);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_model_free(m);
}

/* Dropout draws a new mask every step: two steps on the same batch from the same
 * parameters give different losses; evaluation (predict) is deterministic. */
static void test_dropout_fresh_mask(void **state)
{
    (void)state;
    anvil_model *m = small_mlp(0.5f);
    anvil_trainer_config c = cpu_config(ANVIL_OPT_SGD, 1);
    c.optimizer.lr = 1e-30f; /* parameters effectively frozen */
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    anvil_tensor *x, *y;
    make_blobs(16, 9, &x, &y);
    float l1, l2;
    CHECK_OK(anvil_train_step(t, x, y));
    CHECK_OK(anvil_trainer_last_loss(t, &l1));
    CHECK_OK(anvil_train_step(t, x, y));
    CHECK_OK(anvil_trainer_last_loss(t, &l2));
    assert_true(l1 != l2);
    anvil_tensor *p1, *p2;
    CHECK_OK(anvil_predict(t, x, &p1));
    CHECK_OK(anvil_predict(t, x, &p2));
    assert_memory_equal(anvil_tensor_data(p1), anvil_tensor_data(p2), anvil_tensor_nbytes(p1));
    anvil_tensor_release(p1);
    anvil_tensor_release(p2);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

/* Batches of different sizes each get their own program; none crashes or is dropped. */
static void test_partial_batch_and_counters(void **state)
{
    (void)state;
    anvil_model *m = small_mlp(0);
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAMW, 1);
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    anvil_tensor *x, *y, *x2, *y2;
    make_blobs(32, 1, &x, &y);
    make_blobs(7, 2, &x2, &y2);
    CHECK_OK(anvil_train_step(t, x, y));
    CHECK_OK(anvil_train_step(t, x2, y2));
    CHECK_OK(anvil_train_step(t, x, y));
    anvil_counters total, step;
    CHECK_OK(anvil_trainer_counters(t, &total, &step));
    assert_int_equal(step.device_allocs, 0);
    assert_int_equal(step.d2h_copies, 0);
    assert_int_equal(step.h2d_copies, 2); /* the batch: x and y */
    CHECK_OK(anvil_trainer_set_lr(t, 0.5f));
    CHECK_OK(anvil_train_step(t, x, y));
    CHECK_OK(anvil_trainer_counters(t, &total, &step));
    assert_int_equal(step.device_allocs, 0);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_tensor_release(x2);
    anvil_tensor_release(y2);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

/* The learning rate lives in the trainer's state: changing it changes the update. */
static void test_set_lr_reaches_update(void **state)
{
    (void)state;
    anvil_model *m = small_mlp(0);
    anvil_trainer *a, *b;
    anvil_trainer_config c = cpu_config(ANVIL_OPT_SGD, 4);
    CHECK_OK(anvil_trainer_create(&a, m, &c));
    CHECK_OK(anvil_trainer_create(&b, m, &c));
    anvil_tensor *x, *y;
    make_blobs(16, 3, &x, &y);
    CHECK_OK(anvil_train_step(a, x, y));
    CHECK_OK(anvil_train_step(b, x, y));
    params_equal(a, b, "0.weight", true);
    CHECK_OK(anvil_trainer_set_lr(b, 0.2f));
    CHECK_OK(anvil_train_step(a, x, y));
    CHECK_OK(anvil_train_step(b, x, y));
    params_equal(a, b, "0.weight", false);
    assert_int_equal(anvil_trainer_set_lr(b, -1.0f), ANVIL_ERR_INVALID_ARG);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_trainer_free(a);
    anvil_trainer_free(b);
    anvil_model_free(m);
}

static void test_save_load(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    anvil_model *m = small_mlp(0);
    anvil_trainer *a, *b;
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 1);
    CHECK_OK(anvil_trainer_create(&a, m, &c));
    c.seed = 2;
    CHECK_OK(anvil_trainer_create(&b, m, &c));
    anvil_tensor *x, *y;
    make_blobs(16, 3, &x, &y);
    for (int i = 0; i < 3; i++)
        CHECK_OK(anvil_train_step(a, x, y));
    params_equal(a, b, "0.weight", false);
    CHECK_OK(anvil_trainer_save(a, path));
    CHECK_OK(anvil_trainer_load(b, path));
    params_equal(a, b, "0.weight", true);
    params_equal(a, b, "2.bias", true);
    /* a model of another shape rejects the file and keeps its weights */
    anvil_model *m2;
    int64_t in[1] = {2};
    CHECK_OK(anvil_model_create(&m2, "other", 1, in));
    anvil_layer_desc l = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l.out_features = 5;
    CHECK_OK(anvil_model_add(m2, &l));
    anvil_trainer *o;
    CHECK_OK(anvil_trainer_create(&o, m2, &c));
    anvil_tensor *before;
    CHECK_OK(anvil_trainer_get_param(o, "0.weight", &before));
    anvil_status s = anvil_trainer_load(o, path);
    assert_int_not_equal(s, ANVIL_OK);
    print_message("  mismatched load: %s\n", anvil_last_error());
    assert_non_null(strstr(anvil_last_error(), "w.safetensors"));
    assert_non_null(strstr(anvil_last_error(), "weight"));
    anvil_tensor *after;
    CHECK_OK(anvil_trainer_get_param(o, "0.weight", &after));
    assert_memory_equal(anvil_tensor_data(before), anvil_tensor_data(after), anvil_tensor_nbytes(after));
    anvil_tensor_release(before);
    anvil_tensor_release(after);
    anvil_trainer_free(o);
    anvil_model_free(m2);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_trainer_free(a);
    anvil_trainer_free(b);
    anvil_model_free(m);
    tu_rmdir(dir);
}

static void test_bad_input(void **state)
{
    (void)state;
    anvil_model *m = small_mlp(0);
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 1);
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    anvil_tensor *x, *y, *bad;
    make_blobs(8, 1, &x, &y);
    int64_t s[2] = {8, 3};
    CHECK_OK(anvil_tensor_create(&bad, ANVIL_F32, 2, s, NULL));
    assert_int_equal(anvil_train_step(t, bad, y), ANVIL_ERR_SHAPE);
    assert_non_null(strstr(anvil_last_error(), "[8, 3]"));
    assert_int_equal(anvil_train_step(t, x, x), ANVIL_ERR_SHAPE); /* float targets for class labels */
    assert_non_null(strstr(anvil_last_error(), "int32"));
    int32_t *yd = anvil_tensor_data(y);
    yd[2] = 3; /* 3 classes: label out of range */
    assert_int_equal(anvil_train_step(t, x, y), ANVIL_ERR_INVALID_ARG);
    print_message("  bad label: %s\n", anvil_last_error());
    assert_int_equal(anvil_trainer_set_param(t, "nope", x), ANVIL_ERR_INVALID_ARG);
    assert_int_equal(anvil_trainer_set_param(t, "0.weight", x), ANVIL_ERR_SHAPE);
    /* config values */
    anvil_trainer *t2;
    c.optimizer.lr = -1;
    assert_int_equal(anvil_trainer_create(&t2, m, &c), ANVIL_ERR_INVALID_ARG);
    c = cpu_config(ANVIL_OPT_SGD, 0);
    c.optimizer.nesterov = true;
    assert_int_equal(anvil_trainer_create(&t2, m, &c), ANVIL_ERR_INVALID_ARG);
    assert_non_null(strstr(anvil_last_error(), "nesterov"));
    anvil_tensor_release(bad);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

/* Every optimizer by name, torch's defaults, and options a kind lacks or values out of
 * range refused with a message naming them. */
static void test_optimizer_config(void **state)
{
    (void)state;
    for (int k = 0; k < ANVIL_OPT_COUNT; k++) {
        anvil_optimizer_kind got;
        CHECK_OK(anvil_optimizer_parse(anvil_optimizer_name((anvil_optimizer_kind)k), &got));
        assert_int_equal(got, k);
    }
    anvil_optimizer_kind got;
    assert_int_equal(anvil_optimizer_parse("l-bfgs", &got), ANVIL_ERR_INVALID_ARG);
    anvil_optimizer_config l = anvil_optimizer_default_config(ANVIL_OPT_LBFGS); /* torch's LBFGS defaults */
    assert_true(l.lr == 1.0f && l.history_size == 100 && l.max_iter == 20 && l.max_eval == 0 &&
                l.tolerance_grad == 1e-7f && l.tolerance_change == 1e-9f && !l.strong_wolfe);
    anvil_optimizer_config d = anvil_optimizer_default_config(ANVIL_OPT_RMSPROP);
    assert_true(d.lr == 0.01f && d.alpha == 0.99f && d.eps == 1e-8f && !d.centered);
    d = anvil_optimizer_default_config(ANVIL_OPT_ADAGRAD);
    assert_true(d.lr == 0.01f && d.eps == 1e-10f && d.lr_decay == 0.0f);
    d = anvil_optimizer_default_config(ANVIL_OPT_ADADELTA);
    assert_true(d.lr == 1.0f && d.rho == 0.9f && d.eps == 1e-6f);
    d = anvil_optimizer_default_config(ANVIL_OPT_NADAM);
    assert_true(d.lr == 2e-3f && d.momentum_decay == 4e-3f && d.beta2 == 0.999f);

    anvil_model *m = small_mlp(0);
    anvil_trainer *t;
    struct {
        anvil_optimizer_kind kind;
        const char *needle;
    } bad[] = {
        {ANVIL_OPT_SGD, "amsgrad"},       {ANVIL_OPT_ADAGRAD, "momentum"}, {ANVIL_OPT_ADAM, "centered"},
        {ANVIL_OPT_RMSPROP, "alpha"},     {ANVIL_OPT_ADAGRAD, "lr_decay"}, {ANVIL_OPT_ADADELTA, "rho"},
        {ANVIL_OPT_NADAM, "momentum_decay"}, {ANVIL_OPT_ADAMW, "decoupled_weight_decay"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        anvil_trainer_config c = cpu_config(bad[i].kind, 0);
        switch (i) {
        case 0: c.optimizer.amsgrad = true; break;
        case 1: c.optimizer.momentum = 0.9f; break;
        case 2: c.optimizer.centered = true; break;
        case 3: c.optimizer.alpha = 1.5f; break;
        case 4: c.optimizer.lr_decay = -1.0f; break;
        case 5: c.optimizer.rho = -0.1f; break;
        case 6: c.optimizer.momentum_decay = -1.0f; break;
        default: c.optimizer.decoupled_weight_decay = true; break;
        }
        assert_int_equal(anvil_trainer_create(&t, m, &c), ANVIL_ERR_INVALID_ARG);
        if (!strstr(anvil_last_error(), bad[i].needle))
            fail_msg("case %zu: '%s' does not name %s", i, anvil_last_error(), bad[i].needle);
    }
    /* each kind trains a step (state slots sized by the kind and its options) */
    anvil_tensor *x, *y;
    make_blobs(8, 1, &x, &y);
    for (int k = 0; k < ANVIL_OPT_COUNT; k++) {
        anvil_trainer_config c = cpu_config((anvil_optimizer_kind)k, 0);
        c.optimizer.maximize = k == ANVIL_OPT_ADAGRAD;
        c.optimizer.amsgrad = k == ANVIL_OPT_ADAM;
        c.optimizer.centered = k == ANVIL_OPT_RMSPROP;
        c.optimizer.momentum = k == ANVIL_OPT_RMSPROP ? 0.5f : c.optimizer.momentum;
        CHECK_OK(anvil_trainer_create(&t, m, &c));
        CHECK_OK(anvil_train_step(t, x, y));
        CHECK_OK(anvil_train_step(t, x, y));
        float loss;
        CHECK_OK(anvil_trainer_last_loss(t, &loss));
        assert_true(isfinite(loss));
        anvil_trainer_free(t);
    }
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_model_free(m);
}

static void test_model_errors(void **state)
{
    (void)state;
    anvil_model *m;
    int64_t in[1] = {4};
    CHECK_OK(anvil_model_create(&m, "bad", 1, in));
    anvil_layer_desc l = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l.name = "fc";
    l.out_features = 0;
    assert_int_equal(anvil_model_add(m, &l), ANVIL_ERR_INVALID_ARG);
    assert_non_null(strstr(anvil_last_error(), "'fc'"));
    anvil_model_free(m);

    CHECK_OK(anvil_model_create(&m, "bad2", 1, in));
    anvil_layer_desc a = anvil_layer_default(ANVIL_LAYER_LINEAR);
    a.name = "a";
    a.out_features = 3;
    CHECK_OK(anvil_model_add(m, &a));
    anvil_layer_desc b = anvil_layer_default(ANVIL_LAYER_LINEAR);
    b.name = "b";
    b.out_features = 5;
    CHECK_OK(anvil_model_add(m, &b));
    anvil_layer_desc add = anvil_layer_default(ANVIL_LAYER_ADD);
    add.n_inputs = 2;
    add.inputs[0] = "a";
    add.inputs[1] = "b";
    assert_int_equal(anvil_model_add(m, &add), ANVIL_ERR_SHAPE);
    print_message("  residual mismatch: %s\n", anvil_last_error());
    assert_non_null(strstr(anvil_last_error(), "[B, 3]"));
    add.inputs[1] = "zz";
    assert_int_equal(anvil_model_add(m, &add), ANVIL_ERR_INVALID_ARG);
    assert_non_null(strstr(anvil_last_error(), "'zz'"));
    anvil_model_free(m);

    /* graph builder: a shape error is sticky and reported by compile */
    anvil_graph *g;
    CHECK_OK(anvil_graph_create(&g));
    int64_t s1[2] = {ANVIL_BATCH, 3}, s2[2] = {ANVIL_BATCH, 4};
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 2, s1), y = anvil_input(g, "y", ANVIL_F32, 2, s2);
    anvil_value z = anvil_add(g, x, y);
    assert_int_equal(z, ANVIL_NO_VALUE);
    assert_int_equal(anvil_relu(g, z), ANVIL_NO_VALUE);
    assert_int_equal(anvil_graph_status(g), ANVIL_ERR_SHAPE);
    assert_non_null(strstr(anvil_last_error(), "[B, 3]"));
    anvil_graph_free(g);
}

/* A custom graph as a model: residual connection built with the graph API. */
static void test_graph_model(void **state)
{
    (void)state;
    anvil_graph *g;
    CHECK_OK(anvil_graph_create(&g));
    int64_t xs[2] = {ANVIL_BATCH, 2}, ws[2] = {2, 2}, w2s[2] = {3, 2}, bs[1] = {3};
    anvil_init u = {ANVIL_INIT_UNIFORM, 0.7f}, z = {ANVIL_INIT_ZEROS, 0};
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 2, xs);
    anvil_value w = anvil_param(g, "w", 2, ws, u);
    anvil_value h = anvil_add(g, x, anvil_tanh(g, anvil_linear(g, x, w, ANVIL_NO_VALUE)));
    anvil_value out = anvil_linear(g, h, anvil_param(g, "w2", 2, w2s, u), anvil_param(g, "b2", 1, bs, z));
    anvil_model *m;
    CHECK_OK(anvil_model_from_graph(&m, g, x, out));
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 1);
    c.optimizer.lr = 0.05f;
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    anvil_tensor *bx, *by;
    make_blobs(64, 4, &bx, &by);
    for (int i = 0; i < 150; i++)
        CHECK_OK(anvil_train_step(t, bx, by));
    double acc = accuracy(t, bx, by);
    print_message("  graph model accuracy %.3f\n", acc);
    assert_true(acc > 0.9);
    anvil_tensor_release(bx);
    anvil_tensor_release(by);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

/* Writes a tiny IDX dataset (n images of 4x4, 3 classes) and loads it. */
static anvil_dataset *tiny_dataset(const char *dir, int n)
{
    char ip[512], lp[512];
    snprintf(ip, sizeof ip, "%s/img.idx", dir);
    snprintf(lp, sizeof lp, "%s/lab.idx", dir);
    unsigned char *img = malloc(16 + (size_t)n * 16), *lab = malloc(8 + (size_t)n);
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, 4, 0, 0, 0, 4};
    unsigned char lh[8] = {0, 0, 8, 1, 0, 0, (unsigned char)(n >> 8), (unsigned char)n};
    memcpy(img, ih, 16);
    memcpy(lab, lh, 8);
    for (int i = 0; i < n; i++) {
        lab[8 + i] = (unsigned char)(i % 3);
        for (int j = 0; j < 16; j++)
            img[16 + i * 16 + j] = (unsigned char)((j % 3 == i % 3 ? 200 : 20) + (i * 7 + j * 13) % 50);
    }
    assert_int_equal(tu_write_file(ip, img, 16 + (size_t)n * 16), 0);
    assert_int_equal(tu_write_file(lp, lab, 8 + (size_t)n), 0);
    free(img);
    free(lab);
    anvil_dataset *d;
    CHECK_OK(anvil_dataset_load_idx(&d, ip, lp));
    return d;
}

/* Resident data (gathered by the program) trains exactly like host batches. */
static void test_resident_equals_batcher(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    anvil_dataset *d = tiny_dataset(dir, 50);
    anvil_model *m;
    int64_t in[3] = {1, 4, 4};
    CHECK_OK(anvil_model_create(&m, "tiny", 3, in));
    anvil_layer_desc f = anvil_layer_default(ANVIL_LAYER_FLATTEN), l = anvil_layer_default(ANVIL_LAYER_LINEAR);
    l.out_features = 3;
    CHECK_OK(anvil_model_add(m, &f));
    CHECK_OK(anvil_model_add(m, &l));
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 5);
    anvil_trainer *a, *b;
    CHECK_OK(anvil_trainer_create(&a, m, &c));
    CHECK_OK(anvil_trainer_create(&b, m, &c));
    anvil_batcher *bt;
    CHECK_OK(anvil_batcher_create(&bt, d, 16, true, 9));
    CHECK_OK(anvil_trainer_attach_data(b, d, 16, true, 9));
    int steps = 0;
    for (int epoch = 0; epoch < 2; epoch++) {
        for (;;) {
            anvil_tensor *x, *y;
            bool done, rdone;
            CHECK_OK(anvil_batcher_next(bt, &x, &y, &done));
            CHECK_OK(anvil_train_step_resident(b, &rdone));
            assert_int_equal(done, rdone);
            if (done)
                break;
            CHECK_OK(anvil_train_step(a, x, y));
            anvil_tensor_release(x);
            anvil_tensor_release(y);
            steps++;
            if (steps > 5) { /* mid-epoch steps copy nothing to the device */
                anvil_counters st;
                CHECK_OK(anvil_trainer_counters(b, NULL, &st));
                if (st.h2d_copies != 0 && steps % 4 != 1)
                    fail_msg("resident step %d made %lld host-to-device copies", steps, (long long)st.h2d_copies);
            }
        }
    }
    assert_int_equal(steps, 8); /* 4 batches (16, 16, 16, 2) per epoch */
    params_equal(a, b, "1.weight", true);
    params_equal(a, b, "1.bias", true);
    float la, lb;
    CHECK_OK(anvil_trainer_take_mean_loss(a, &la));
    CHECK_OK(anvil_trainer_take_mean_loss(b, &lb));
    assert_true(la == lb);
    anvil_batcher_free(bt);
    anvil_trainer_free(a);
    anvil_trainer_free(b);
    anvil_model_free(m);
    anvil_dataset_free(d);
    tu_rmdir(dir);
}

/* ---- resumable checkpoints */

static anvil_model *resume_model(void)
{
    anvil_model *m;
    int64_t in[3] = {1, 4, 4};
    CHECK_OK(anvil_model_create(&m, "resume", 3, in));
    anvil_layer_type types[] = {ANVIL_LAYER_FLATTEN, ANVIL_LAYER_LINEAR, ANVIL_LAYER_BATCHNORM1D, ANVIL_LAYER_RELU,
                                ANVIL_LAYER_DROPOUT, ANVIL_LAYER_LINEAR};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        anvil_layer_desc d = anvil_layer_default(types[i]);
        d.out_features = i == 1 ? 12 : 3;
        d.p = 0.3f;
        CHECK_OK(anvil_model_add(m, &d));
    }
    return m;
}

/* n optimizer steps on resident data (epoch ends are not steps), or on b's batches. */
static void steps_on(anvil_trainer *t, anvil_batcher *b, int n)
{
    for (int k = 0; k < n;) {
        bool done;
        if (!b) {
            CHECK_OK(anvil_train_step_resident(t, &done));
        } else {
            anvil_tensor *x, *y;
            CHECK_OK(anvil_batcher_next(b, &x, &y, &done));
            if (!done)
                CHECK_OK(anvil_train_step(t, x, y));
            anvil_tensor_release(x);
            anvil_tensor_release(y);
        }
        k += !done;
    }
}

static void all_equal(anvil_trainer *a, anvil_trainer *b)
{
    const char *names[] = {"1.weight", "1.bias", "2.weight", "2.bias", "2.running_mean", "2.running_var",
                           "2.num_batches_tracked", "5.weight", "5.bias"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        params_equal(a, b, names[i], true);
    float la, lb;
    CHECK_OK(anvil_trainer_take_mean_loss(a, &la));
    CHECK_OK(anvil_trainer_take_mean_loss(b, &lb));
    if (!(la == lb))
        fail_msg("mean loss %.9g vs %.9g", (double)la, (double)lb);
    for (int g = 0; g < anvil_trainer_param_groups(a); g++) {
        CHECK_OK(anvil_trainer_lr(a, g, &la));
        CHECK_OK(anvil_trainer_lr(b, g, &lb));
        assert_true(la == lb);
    }
    assert_int_equal(anvil_trainer_step_count(a), anvil_trainer_step_count(b));
}

/* Save after `at` steps, keep going to `total`; a new trainer loading the checkpoint and
 * taking the remaining steps ends bit for bit where the first did (dropout, BatchNorm
 * statistics, NAdam's state, groups, a warm-up cosine schedule, clipping, the shuffled
 * order mid-epoch and across epochs). */
static void resume_case(anvil_dataset *d, const char *dir, bool resident, bool plateau, int at, int total)
{
    anvil_model *m = resume_model();
    anvil_trainer_config c = cpu_config(ANVIL_OPT_NADAM, 11);
    c.optimizer.lr = 0.01f;
    anvil_optimizer_config bo = c.optimizer;
    bo.lr = 0.02f, bo.momentum_decay = 0.01f;
    anvil_param_group pg = anvil_param_group_default(NULL, true, &bo);
    c.n_param_groups = 1, c.param_groups = &pg;
    if (plateau) {
        c.schedule = anvil_schedule_default_config(ANVIL_SCHED_PLATEAU);
        c.schedule.patience = 0;
    } else {
        c.schedule = anvil_schedule_default_config(ANVIL_SCHED_COSINE);
        c.schedule.t_max = 9, c.schedule.warmup = 3;
    }
    c.clip_grad_norm = 0.5f;
    char path[600];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    anvil_trainer *a, *b;
    anvil_batcher *ba = NULL, *bb = NULL;
    CHECK_OK(anvil_trainer_create(&a, m, &c));
    CHECK_OK(anvil_trainer_create(&b, m, &c));
    if (resident) {
        CHECK_OK(anvil_trainer_attach_data(a, d, 16, true, 3));
        CHECK_OK(anvil_trainer_attach_data(b, d, 16, true, 3));
    } else {
        CHECK_OK(anvil_batcher_create(&ba, d, 16, true, 3));
        CHECK_OK(anvil_batcher_create(&bb, d, 16, true, 3));
    }
    for (int k = 0; k < at; k++) {
        steps_on(a, ba, 1);
        if (plateau)
            CHECK_OK(anvil_trainer_schedule_metric(a, 1.0 + 0.1 * (k % 2)));
    }
    CHECK_OK(anvil_trainer_save_checkpoint(a, ba, path));
    for (int k = at; k < total; k++) {
        steps_on(a, ba, 1);
        if (plateau)
            CHECK_OK(anvil_trainer_schedule_metric(a, 1.0 + 0.1 * (k % 2)));
    }
    CHECK_OK(anvil_trainer_load_checkpoint(b, bb, path));
    assert_int_equal(anvil_trainer_step_count(b), at);
    for (int k = at; k < total; k++) {
        steps_on(b, bb, 1);
        if (plateau)
            CHECK_OK(anvil_trainer_schedule_metric(b, 1.0 + 0.1 * (k % 2)));
    }
    all_equal(a, b);
    /* the checkpoint's weights load as plain weights too */
    CHECK_OK(anvil_trainer_load(b, path));
    anvil_batcher_free(ba);
    anvil_batcher_free(bb);
    anvil_trainer_free(a);
    anvil_trainer_free(b);
    anvil_model_free(m);
}

static void test_resume(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    anvil_dataset *d = tiny_dataset(dir, 50); /* 4 batches per epoch: 16, 16, 16, 2 */
    resume_case(d, dir, true, false, 6, 13);   /* mid-epoch, resident */
    resume_case(d, dir, true, false, 4, 9);    /* at an epoch's end */
    resume_case(d, dir, false, false, 5, 11);  /* host batches */
    resume_case(d, dir, false, true, 7, 12);   /* reduce-on-plateau's state */
    anvil_dataset_free(d);
    tu_rmdir(dir);
}

/* L-BFGS's history, direction and step size travel in the checkpoint too. */
static void test_resume_lbfgs(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    anvil_dataset *d = tiny_dataset(dir, 50);
    anvil_model *m = resume_model();
    anvil_trainer_config c = cpu_config(ANVIL_OPT_LBFGS, 4);
    c.optimizer.max_iter = 4, c.optimizer.history_size = 3, c.optimizer.strong_wolfe = true;
    anvil_trainer *a, *b;
    anvil_batcher *ba, *bb;
    CHECK_OK(anvil_trainer_create(&a, m, &c));
    CHECK_OK(anvil_trainer_create(&b, m, &c));
    CHECK_OK(anvil_batcher_create(&ba, d, 25, false, 0));
    CHECK_OK(anvil_batcher_create(&bb, d, 25, false, 0));
    char path[600];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    steps_on(a, ba, 3);
    CHECK_OK(anvil_trainer_save_checkpoint(a, ba, path));
    steps_on(a, ba, 3);
    CHECK_OK(anvil_trainer_load_checkpoint(b, bb, path));
    steps_on(b, bb, 3);
    all_equal(a, b);
    anvil_batcher_free(ba);
    anvil_batcher_free(bb);
    anvil_trainer_free(a);
    anvil_trainer_free(b);
    anvil_model_free(m);
    anvil_dataset_free(d);
    tu_rmdir(dir);
}

/* A checkpoint that does not fit the trainer is refused, and changes nothing. */
static void test_checkpoint_errors(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    anvil_dataset *d = tiny_dataset(dir, 50);
    anvil_model *m = resume_model();
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 1);
    anvil_trainer *a, *b;
    CHECK_OK(anvil_trainer_create(&a, m, &c));
    CHECK_OK(anvil_trainer_attach_data(a, d, 16, true, 3));
    steps_on(a, NULL, 2);
    char path[600], wpath[600];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    snprintf(wpath, sizeof wpath, "%s/w.safetensors", dir);
    CHECK_OK(anvil_trainer_save_checkpoint(a, NULL, path));
    CHECK_OK(anvil_trainer_save(a, wpath));
    /* no resident data attached */
    CHECK_OK(anvil_trainer_create(&b, m, &c));
    assert_int_equal(anvil_trainer_load_checkpoint(b, NULL, path), ANVIL_ERR_FORMAT);
    assert_non_null(strstr(anvil_last_error(), "attach"));
    /* other data options */
    CHECK_OK(anvil_trainer_attach_data(b, d, 8, true, 3));
    assert_int_equal(anvil_trainer_load_checkpoint(b, NULL, path), ANVIL_ERR_FORMAT);
    assert_non_null(strstr(anvil_last_error(), "batch"));
    assert_int_equal(anvil_trainer_step_count(b), 0);
    /* plain weights are not a checkpoint */
    assert_int_equal(anvil_trainer_load_checkpoint(b, NULL, wpath), ANVIL_ERR_FORMAT);
    assert_non_null(strstr(anvil_last_error(), "not an Anvil checkpoint"));
    anvil_trainer_free(b);
    /* another optimizer, another schedule */
    anvil_trainer_config c2 = cpu_config(ANVIL_OPT_SGD, 1);
    CHECK_OK(anvil_trainer_create(&b, m, &c2));
    CHECK_OK(anvil_trainer_attach_data(b, d, 16, true, 3));
    assert_int_equal(anvil_trainer_load_checkpoint(b, NULL, path), ANVIL_ERR_FORMAT);
    assert_non_null(strstr(anvil_last_error(), "optimizer"));
    anvil_trainer_free(b);
    c2 = c;
    c2.schedule = anvil_schedule_default_config(ANVIL_SCHED_EXPONENTIAL);
    CHECK_OK(anvil_trainer_create(&b, m, &c2));
    CHECK_OK(anvil_trainer_attach_data(b, d, 16, true, 3));
    assert_int_equal(anvil_trainer_load_checkpoint(b, NULL, path), ANVIL_ERR_FORMAT);
    assert_non_null(strstr(anvil_last_error(), "schedule"));
    anvil_trainer_free(b);
    /* a missing file */
    CHECK_OK(anvil_trainer_create(&b, m, &c));
    assert_int_equal(anvil_trainer_load_checkpoint(b, NULL, "/nonexistent/ck.safetensors"), ANVIL_ERR_IO);
    /* an unwritable path fails and leaves no file behind */
    assert_int_not_equal(anvil_trainer_save_checkpoint(a, NULL, "/nonexistent/dir/ck.safetensors"), ANVIL_OK);
    anvil_trainer_free(b);
    anvil_trainer_free(a);
    anvil_model_free(m);
    anvil_dataset_free(d);
    tu_rmdir(dir);
}

/* The built-in convolutional models: shapes, parameter names PyTorch would give, and a
 * few steps of learning on a tiny separable dataset. */
static void test_builtin_cnn_and_resnet(void **state)
{
    (void)state;
    anvil_model *cnn, *res;
    CHECK_OK(anvil_model_builtin(&cnn, "cnn"));
    assert_int_equal(anvil_model_param_count(cnn), 421642); /* as nn.Sequential counts it */
    CHECK_OK(anvil_model_resnet18(&res, 3, 32, 32, 10));
    assert_int_equal(anvil_model_param_count(res), 11173962); /* torchvision-style, 3x3 stem */
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 1);
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, res, &c));
    const char *names[] = {"conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer2.0.downsample.0.weight",
                           "layer4.1.bn2.bias", "fc.weight"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        anvil_tensor *p;
        CHECK_OK(anvil_trainer_get_param(t, names[i], &p));
        anvil_tensor_release(p);
    }
    anvil_trainer_free(t);
    anvil_model_free(res);
    /* the example model files describe the same networks */
    anvil_model *f;
    CHECK_OK(anvil_model_load_json(&f, ANVIL_SOURCE_DIR "/examples/models/resnet18.json"));
    assert_int_equal(anvil_model_param_count(f), 11172810); /* 1-channel stem */
    anvil_model_free(f);
    CHECK_OK(anvil_model_load_json(&f, ANVIL_SOURCE_DIR "/examples/models/cnn.json"));
    assert_int_equal(anvil_model_param_count(f), 421642);
    anvil_model_free(f);
    /* concat of two branches (torch.cat along the features) */
    const char *cat = "{\"input\": [2], \"layers\": ["
                      "{\"type\": \"linear\", \"name\": \"a\", \"out_features\": 3},"
                      "{\"type\": \"linear\", \"name\": \"b\", \"out_features\": 5, \"inputs\": [\"a\"]},"
                      "{\"type\": \"concat\", \"inputs\": [\"a\", \"b\"], \"dim\": 1},"
                      "{\"type\": \"relu\"}, {\"type\": \"linear\", \"out_features\": 3}]}";
    CHECK_OK(anvil_model_parse_json(&f, cat, "concat.json"));
    assert_int_equal(anvil_model_param_count(f), 2 * 3 + 3 + 3 * 5 + 5 + 8 * 3 + 3);
    anvil_trainer *ct;
    anvil_trainer_config cc = cpu_config(ANVIL_OPT_ADAM, 2);
    cc.optimizer.lr = 0.05f;
    CHECK_OK(anvil_trainer_create(&ct, f, &cc));
    anvil_tensor *bx, *by;
    make_blobs(32, 7, &bx, &by);
    float l0, l1;
    CHECK_OK(anvil_train_step(ct, bx, by));
    CHECK_OK(anvil_trainer_last_loss(ct, &l0));
    for (int i = 0; i < 30; i++)
        CHECK_OK(anvil_train_step(ct, bx, by));
    CHECK_OK(anvil_trainer_last_loss(ct, &l1));
    print_message("  concat model: loss %.4f -> %.4f in 31 steps\n", l0, l1);
    assert_true(l1 < 0.5f * l0);
    anvil_tensor_release(bx);
    anvil_tensor_release(by);
    anvil_trainer_free(ct);
    anvil_model_free(f);

    /* the cnn learns: bright top half = class 1, bright bottom half = class 0 */
    c.optimizer.lr = 3e-3f;
    CHECK_OK(anvil_trainer_create(&t, cnn, &c));
    int64_t xs[4] = {16, 1, 28, 28}, ys[1] = {16};
    anvil_tensor *x, *y;
    CHECK_OK(anvil_tensor_create(&x, ANVIL_F32, 4, xs, NULL));
    CHECK_OK(anvil_tensor_create(&y, ANVIL_I32, 1, ys, NULL));
    float *xd = anvil_tensor_data(x);
    int32_t *yd = anvil_tensor_data(y);
    for (int n = 0; n < 16; n++) {
        yd[n] = n % 2;
        for (int i = 0; i < 28 * 28; i++)
            xd[n * 784 + i] = ((i / 28 < 14) == (n % 2)) ? 0.9f : 0.1f * (float)((i * 7 + n) % 5) / 5.0f;
    }
    float first = 0, last = 0;
    for (int s = 0; s < 15; s++) {
        CHECK_OK(anvil_train_step(t, x, y));
        if (s == 0)
            CHECK_OK(anvil_trainer_last_loss(t, &first));
    }
    CHECK_OK(anvil_trainer_last_loss(t, &last));
    print_message("  cnn: loss %.4f -> %.4f in 15 steps\n", first, last);
    assert_true(last < 0.1f * first);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_trainer_free(t);
    anvil_model_free(cnn);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* The epochs against PyTorch: tu_fmnist_parity (testutil.c). */
static void test_fashion_mnist_mlp_parity(void **state)
{
    (void)state;
    tu_fmnist_parity("mlp", ANVIL_GOLDEN_DIR "/mlp_fmnist.safetensors", ANVIL_DEVICE_CPU);
}

/* The cnn, the same way: PyTorch reaches 0.859 from this start (>= 0.85 in one epoch). */
static void test_fashion_mnist_cnn_parity(void **state)
{
    (void)state;
    tu_fmnist_parity("cnn", ANVIL_GOLDEN_DIR "/cnn_fmnist.safetensors", ANVIL_DEVICE_CPU);
}

/* What `anvil train --model mlp --epochs 1` does with its default seed 0: Anvil's own
 * init and a shuffled order, host batches.  One epoch of this model lands anywhere in
 * 0.81-0.86 depending on init and order, in PyTorch too: with this very init and order
 * PyTorch reaches 0.811 (Anvil 0.820); over six seeds PyTorch gave 0.843-0.851.  The
 * bar here is a sanity floor; the parity test above is the exact check. */
static void test_fashion_mnist_mlp_seeded(void **state)
{
    (void)state;
    anvil_dataset *train, *test;
    if (!tu_load_fmnist(&train, &test))
        skip();
    anvil_model *m;
    CHECK_OK(anvil_model_builtin(&m, "mlp"));
    anvil_trainer_config c = cpu_config(ANVIL_OPT_ADAM, 0);
    anvil_trainer *t;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    anvil_batcher *b;
    CHECK_OK(anvil_batcher_create(&b, train, 128, true, 0));
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int steps = 0;
    for (;;) {
        anvil_tensor *x, *y;
        bool done;
        CHECK_OK(anvil_batcher_next(b, &x, &y, &done));
        if (done)
            break;
        CHECK_OK(anvil_train_step(t, x, y));
        anvil_tensor_release(x);
        anvil_tensor_release(y);
        steps++;
    }
    double secs = seconds_since(&t0);
    anvil_eval_result r;
    CHECK_OK(anvil_evaluate(t, test, 1000, &r));
    print_message("  mlp 1 epoch (CPU, seed 0, host batches): %d steps in %.1f s (%.2f ms/step), test loss %.4f, "
                  "accuracy %.4f\n", steps, secs, 1e3 * secs / steps, r.mean_loss, r.accuracy);
    assert_int_equal(steps, 469);
    assert_true(r.accuracy >= 0.80);
    anvil_batcher_free(b);
    anvil_trainer_free(t);
    anvil_model_free(m);
    anvil_dataset_free(train);
    anvil_dataset_free(test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_blobs),
        cmocka_unit_test(test_memory_plan),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_fused_pool_relu_bitwise),
        cmocka_unit_test(test_fused_mlp_bitwise),
        cmocka_unit_test(test_dropout_fresh_mask),
        cmocka_unit_test(test_partial_batch_and_counters),
        cmocka_unit_test(test_set_lr_reaches_update),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_optimizer_config),
        cmocka_unit_test(test_model_errors),
        cmocka_unit_test(test_graph_model),
        cmocka_unit_test(test_resident_equals_batcher),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_resume_lbfgs),
        cmocka_unit_test(test_checkpoint_errors),
        cmocka_unit_test(test_builtin_cnn_and_resnet),
        cmocka_unit_test(test_fashion_mnist_mlp_parity),
        cmocka_unit_test(test_fashion_mnist_cnn_parity),
        cmocka_unit_test(test_fashion_mnist_mlp_seeded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
