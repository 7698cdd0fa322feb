/* test_conv.c — conv2d and 2-D pooling on the CPU against PyTorch, plus their shape
 * errors and thread-count independence.
 *
 * Reference values: tests/golden/conv.safetensors, written by tests/golden/make_golden.py
 * (python3 tests/golden/make_golden.py --only conv; see that script for the keys).  Each
 * case feeds the golden inputs with their full shapes, builds y = op(inputs) and
 * L = sum(y * R) with the golden R, takes every input's gradient with anvil_gradient and
 * runs once on the CPU.  Tolerance (the reference is float64 rounded to float32, Anvil
 * computes in float32): |got - want| <= 1e-5 + 1e-4 * |want| for y and every gradient;
 * make_golden.py checks float32 PyTorch itself stays within ~0.1 of it. */
#include "testutil.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATOL 1e-5
#define RTOL 1e-4

static int g_n;
static char **g_names;
static anvil_tensor **g_t;

static int load(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/conv.safetensors", ANVIL_GOLDEN_DIR);
    anvil_status s = anvil_safetensors_read(path, &g_n, &g_names, &g_t);
    if (s != ANVIL_OK)
        print_error("cannot read %s: %s (regenerate with python3 tests/golden/make_golden.py --only conv)\n",
                    path, anvil_last_error());
    return s == ANVIL_OK ? 0 : -1;
}

static int unload(void **state)
{
    (void)state;
    if (g_names)
        anvil_safetensors_free(g_n, g_names, g_t);
    return 0;
}

static const anvil_tensor *gfind(const char *key, const char *name)
{
    char k[256];
    snprintf(k, sizeof k, "%s.%s", key, name);
    for (int i = 0; i < g_n; i++)
        if (strcmp(g_names[i], k) == 0)
            return g_t[i];
    return NULL;
}

typedef enum { K_CONV, K_MAX, K_AVG, K_ADAPTIVE } kind;

typedef struct {
    const char *key;
    kind k;
} conv_case;

static const conv_case CASES[] = {
    {"conv2d_basic", K_CONV}, {"conv2d_stride2_pad1", K_CONV}, {"conv2d_dilation2", K_CONV},
    {"conv2d_groups2", K_CONV}, {"conv2d_nobias", K_CONV}, {"conv2d_1x1", K_CONV},
    {"conv2d_depthwise", K_CONV}, {"conv2d_mixed", K_CONV},
    {"max_pool2d_k2", K_MAX}, {"max_pool2d_k3s2p1", K_MAX}, {"max_pool2d_rect", K_MAX},
    {"avg_pool2d_k2", K_AVG}, {"avg_pool2d_k3s2p1", K_AVG}, {"avg_pool2d_rect", K_AVG},
    {"adaptive_avg_pool2d_3x4", K_ADAPTIVE}, {"adaptive_avg_pool2d_global", K_ADAPTIVE},
    {"adaptive_avg_pool2d_up", K_ADAPTIVE},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

/* params: conv [sh, sw, ph, pw, dh, dw, groups], pooling [kh, kw, sh, sw, ph, pw],
 * adaptive [oh, ow] */
static anvil_value build(anvil_graph *g, const conv_case *c, const anvil_tensor *params,
                         const anvil_value *in, int n_in)
{
    const float *p = anvil_tensor_cdata(params);
    int q[7] = {0};
    for (int64_t i = 0; i < anvil_tensor_numel(params) && i < 7; i++)
        q[i] = (int)p[i];
    switch (c->k) {
    case K_CONV: {
        anvil_conv_params cp = {q[0], q[1], q[2], q[3], q[4], q[5], q[6]};
        return anvil_conv2d(g, in[0], in[1], n_in == 3 ? in[2] : ANVIL_NO_VALUE, &cp);
    }
    case K_MAX: return anvil_maxpool2d(g, in[0], q[0], q[1], q[2], q[3], q[4], q[5]);
    case K_AVG: return anvil_avgpool2d(g, in[0], q[0], q[1], q[2], q[3], q[4], q[5]);
    case K_ADAPTIVE: return anvil_adaptive_avgpool2d(g, in[0], q[0], q[1]);
    }
    return ANVIL_NO_VALUE;
}

static double compare(const char *key, const char *what, const anvil_tensor *got,
                      const anvil_tensor *want)
{
    assert_non_null(got);
    assert_non_null(want);
    assert_int_equal(anvil_tensor_numel(got), anvil_tensor_numel(want));
    int64_t worst = 0;
    double e = tu_rel_err(anvil_tensor_cdata(got), anvil_tensor_cdata(want), anvil_tensor_numel(want),
                          ATOL, RTOL, &worst);
    if (!(e <= 1.0))
        fail_msg("%s.%s: element %lld: got %.9g, want %.9g (%.3gx the tolerance)", key, what,
                 (long long)worst, (double)((const float *)anvil_tensor_cdata(got))[worst],
                 (double)((const float *)anvil_tensor_cdata(want))[worst], e);
    return e;
}

static void test_case(void **state)
{
    const conv_case *c = *state;
    static const char *const names[3] = {"x", "w", "b"};
    const anvil_tensor *params = gfind(c->key, "params"), *R = gfind(c->key, "R");
    assert_non_null(params);
    assert_non_null(R);
    anvil_graph *g = NULL;
    CHECK_OK(anvil_graph_create(&g));
    anvil_value in[4], fetch[4];
    anvil_tensor *feeds[4];
    int n_in = 0;
    for (int i = 0; i < 3; i++) {
        const anvil_tensor *t = gfind(c->key, names[i]);
        if (!t)
            continue;
        in[n_in] = anvil_input(g, names[i], ANVIL_F32, anvil_tensor_ndim(t), anvil_tensor_shape(t));
        feeds[n_in++] = (anvil_tensor *)t;
    }
    anvil_value y = build(g, c, params, in, n_in);
    anvil_value r = anvil_input(g, "R", ANVIL_F32, anvil_tensor_ndim(R), anvil_tensor_shape(R));
    anvil_value loss = anvil_sum(g, anvil_mul(g, y, r), ANVIL_ALL_DIMS, false);
    fetch[0] = y;
    for (int i = 0; i < n_in; i++)
        fetch[1 + i] = anvil_gradient(g, loss, in[i]);
    CHECK_OK(anvil_graph_status(g));
    in[n_in] = r;
    feeds[n_in] = (anvil_tensor *)R;
    anvil_run_options o = anvil_run_default_options();
    o.device = ANVIL_DEVICE_CPU;
    anvil_tensor *out[4] = {0};
    CHECK_OK(anvil_graph_run(g, &o, n_in + 1, in, feeds, n_in + 1, fetch, out));
    double worst = compare(c->key, "y", out[0], gfind(c->key, "y"));
    for (int i = 0; i < n_in; i++) {
        char d[8];
        snprintf(d, sizeof d, "d%s", names[i]);
        double e = compare(c->key, d, out[1 + i], gfind(c->key, d));
        worst = e > worst ? e : worst;
    }
    print_message("  %s: worst error %.3g of the tolerance\n", c->key, worst);
    for (int i = 0; i <= n_in; i++)
        anvil_tensor_release(out[i]);
    anvil_graph_free(g);
}

/* A builder error names the op and the shapes, and leaves the graph failed. */
static void expect_error(anvil_graph *g, anvil_value v, const char *const *parts)
{
    assert_int_equal(v, ANVIL_NO_VALUE);
    assert_int_not_equal(anvil_graph_status(g), ANVIL_OK);
    const char *msg = anvil_last_error();
    for (int i = 0; parts[i]; i++)
        if (!strstr(msg, parts[i]))
            fail_msg("error \"%s\" lacks \"%s\"", msg, parts[i]);
}

static void test_shape_errors(void **state)
{
    (void)state;
    anvil_graph *g = NULL;
    CHECK_OK(anvil_graph_create(&g));
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 4, (const int64_t[]){ANVIL_BATCH, 3, 28, 28});
    anvil_value w = anvil_input(g, "w", ANVIL_F32, 4, (const int64_t[]){32, 1, 3, 3});
    expect_error(g, anvil_conv2d(g, x, w, ANVIL_NO_VALUE, NULL),
                 (const char *const[]){"conv2d", "[B, 3, 28, 28]", "[32, 1, 3, 3]", "3 channels", NULL});
    anvil_graph_free(g);

    CHECK_OK(anvil_graph_create(&g));
    x = anvil_input(g, "x", ANVIL_F32, 4, (const int64_t[]){2, 3, 4, 4});
    w = anvil_input(g, "w", ANVIL_F32, 4, (const int64_t[]){8, 3, 5, 5});
    expect_error(g, anvil_conv2d(g, x, w, ANVIL_NO_VALUE, NULL),
                 (const char *const[]){"conv2d", "[2, 3, 4, 4]", "does not fit", NULL});
    anvil_graph_free(g);

    CHECK_OK(anvil_graph_create(&g));
    x = anvil_input(g, "x", ANVIL_F32, 4, (const int64_t[]){2, 3, 4, 4});
    w = anvil_input(g, "w", ANVIL_F32, 4, (const int64_t[]){8, 3, 3, 3});
    anvil_value b = anvil_input(g, "b", ANVIL_F32, 1, (const int64_t[]){7});
    expect_error(g, anvil_conv2d(g, x, w, b, NULL), (const char *const[]){"conv2d", "bias", "[7]", NULL});
    anvil_graph_free(g);

    CHECK_OK(anvil_graph_create(&g));
    x = anvil_input(g, "x", ANVIL_F32, 4, (const int64_t[]){2, 3, 4, 4});
    expect_error(g, anvil_maxpool2d(g, x, 3, 3, 1, 1, 2, 2),
                 (const char *const[]){"maxpool2d", "padding", NULL});
    anvil_graph_free(g);

    CHECK_OK(anvil_graph_create(&g));
    x = anvil_input(g, "x", ANVIL_F32, 2, (const int64_t[]){2, 3});
    expect_error(g, anvil_avgpool2d(g, x, 2, 2, 0, 0, 0, 0),
                 (const char *const[]){"avgpool2d", "[2, 3]", NULL});
    anvil_graph_free(g);
}

/* Forward and both gradients of a convolution large enough to run threaded give the
 * same bits on 1 thread and on 4 (OpenMP's setter found at run time: libanvil links it). */
static void run_big_conv(anvil_tensor **out)
{
    anvil_graph *g = NULL;
    CHECK_OK(anvil_graph_create(&g));
    const int64_t xs[4] = {12, 16, 18, 18}, ws[4] = {32, 8, 3, 3}, bs[1] = {32};
    anvil_value in[4] = {anvil_input(g, "x", ANVIL_F32, 4, xs), anvil_input(g, "w", ANVIL_F32, 4, ws),
                         anvil_input(g, "b", ANVIL_F32, 1, bs)};
    anvil_conv_params p = anvil_conv_default_params();
    p.pad_h = p.pad_w = 1;
    p.groups = 2;
    anvil_value y = anvil_maxpool2d(g, anvil_conv2d(g, in[0], in[1], in[2], &p), 2, 2, 0, 0, 0, 0);
    anvil_value loss = anvil_mean(g, anvil_mul(g, y, y), ANVIL_ALL_DIMS, false);
    anvil_value fetch[4] = {y, anvil_gradient(g, loss, in[0]), anvil_gradient(g, loss, in[1]),
                            anvil_gradient(g, loss, in[2])};
    CHECK_OK(anvil_graph_status(g));
    anvil_tensor *feeds[3] = {tu_rand_tensor(4, xs, -1, 1, 1), tu_rand_tensor(4, ws, -1, 1, 2),
                              tu_rand_tensor(1, bs, -1, 1, 3)};
    anvil_run_options o = anvil_run_default_options();
    o.device = ANVIL_DEVICE_CPU;
    CHECK_OK(anvil_graph_run(g, &o, 3, in, feeds, 4, fetch, out));
    for (int i = 0; i < 3; i++)
        anvil_tensor_release(feeds[i]);
    anvil_graph_free(g);
}

static void test_thread_count_independent(void **state)
{
    (void)state;
    void *self = dlopen(NULL, RTLD_NOW);
    void (*set_threads)(int) = self ? (void (*)(int))dlsym(self, "omp_set_num_threads") : NULL;
    if (!set_threads) {
        if (self)
            dlclose(self);
        skip();
    }
    anvil_tensor *a[4] = {0}, *b[4] = {0};
    set_threads(1);
    run_big_conv(a);
    set_threads(4);
    run_big_conv(b);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(anvil_tensor_numel(a[i]), anvil_tensor_numel(b[i]));
        assert_memory_equal(anvil_tensor_cdata(a[i]), anvil_tensor_cdata(b[i]),
                            (size_t)anvil_tensor_numel(a[i]) * sizeof(float));
        anvil_tensor_release(a[i]);
        anvil_tensor_release(b[i]);
    }
    dlclose(self);
}

/* torch's max pooling rule on ties, NaN, -inf and signed zeros (take v when v > max or
 * v is NaN, in scan order; so the first of equal maxima and the last NaN), forward and
 * backward, bit for bit, for the 2x2 stride-2 pool (the CPU's vectorized path) and a
 * 3x2 stride-(2,1) pool (the general path), against a direct implementation here.  The
 * PyTorch goldens above use random data, which has no ties. */
static void ref_maxpool(const float *x, const float *dy, float *y, float *dx, int64_t planes, int64_t H, int64_t W,
                        int kh, int kw, int sh, int sw)
{
    int64_t OH = (H - kh) / sh + 1, OW = (W - kw) / sw + 1;
    for (int64_t i = 0; i < planes * H * W; i++)
        dx[i] = 0.0f;
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t i = 0; i < OH; i++)
            for (int64_t j = 0; j < OW; j++) {
                int64_t best = pl * H * W + i * sh * W + j * sw;
                float m = -INFINITY;
                for (int a = 0; a < kh; a++)
                    for (int b = 0; b < kw; b++) {
                        int64_t k = pl * H * W + (i * sh + a) * W + j * sw + b;
                        if (x[k] > m || isnan(x[k])) {
                            m = x[k];
                            best = k;
                        }
                    }
                y[(pl * OH + i) * OW + j] = x[best];
                dx[best] += dy[(pl * OH + i) * OW + j];
            }
}

static void test_maxpool_ties_nan(void **state)
{
    (void)state;
    enum { N = 2, C = 3, H = 6, WMAX = 530 };
    static const int shapes[2][4] = {{2, 2, 2, 2}, {3, 2, 2, 1}};
    /* W 530: 265 windows per row, more than one of the CPU kernel's 256-window chunks */
    static const int widths[2] = {8, WMAX};
    static float x[N * C * H * WMAX], dy[N * C * H * WMAX], y_ref[N * C * H * WMAX], dx_ref[N * C * H * WMAX];
    for (int wi = 0; wi < 2; wi++) {
        const int W = widths[wi];
        uint32_t r = 12345;
        for (int i = 0; i < N * C * H * W; i++) {
            r = r * 1664525u + 1013904223u;
            uint32_t k = r >> 28;
            x[i] = k < 2 ? NAN : k == 2 ? -INFINITY : k == 3 ? -0.0f : k == 4 ? 0.0f : (float)(k % 3); /* many ties */
        }
        for (int sc = 0; sc < 2; sc++) {
            int kh = shapes[sc][0], kw = shapes[sc][1], sh = shapes[sc][2], sw = shapes[sc][3];
            int64_t OH = (H - kh) / sh + 1, OW = (W - kw) / sw + 1, ny = N * C * OH * OW;
            for (int64_t i = 0; i < ny; i++)
                dy[i] = i % 5 == 0 ? -0.0f : (float)(i + 1) * 0.25f;
            ref_maxpool(x, dy, y_ref, dx_ref, N * C, H, W, kh, kw, sh, sw);
            anvil_graph *g = NULL;
            CHECK_OK(anvil_graph_create(&g));
            int64_t xs[4] = {N, C, H, W}, ys[4] = {N, C, OH, OW};
            anvil_value xv = anvil_input(g, "x", ANVIL_F32, 4, xs);
            anvil_value dv = anvil_input(g, "dy", ANVIL_F32, 4, ys);
            anvil_value yv = anvil_maxpool2d(g, xv, kh, kw, sh, sw, 0, 0);
            anvil_value loss = anvil_sum(g, anvil_mul(g, yv, dv), ANVIL_ALL_DIMS, false);
            anvil_value fetch[2] = {yv, anvil_gradient(g, loss, xv)};
            CHECK_OK(anvil_graph_status(g));
            anvil_tensor *tx, *td, *out[2] = {0};
            CHECK_OK(anvil_tensor_create(&tx, ANVIL_F32, 4, xs, x));
            CHECK_OK(anvil_tensor_create(&td, ANVIL_F32, 4, ys, dy));
            anvil_run_options o = anvil_run_default_options();
            o.device = ANVIL_DEVICE_CPU;
            anvil_value in[2] = {xv, dv};
            anvil_tensor *feeds[2] = {tx, td};
            CHECK_OK(anvil_graph_run(g, &o, 2, in, feeds, 2, fetch, out));
            assert_memory_equal(anvil_tensor_cdata(out[0]), y_ref, (size_t)ny * sizeof(float));
            assert_memory_equal(anvil_tensor_cdata(out[1]), dx_ref, (size_t)(N * C * H * W) * sizeof(float));
            anvil_tensor_release(tx);
            anvil_tensor_release(td);
            anvil_tensor_release(out[0]);
            anvil_tensor_release(out[1]);
            anvil_graph_free(g);
        }
    }
}

int main(void)
{
    struct CMUnitTest tests[N_CASES + 3];
    for (size_t i = 0; i < N_CASES; i++) {
        struct CMUnitTest t = {CASES[i].key, test_case, NULL, NULL, (void *)&CASES[i]};
        tests[i] = t;
    }
    struct CMUnitTest e = cmocka_unit_test(test_shape_errors);
    struct CMUnitTest d = cmocka_unit_test(test_thread_count_independent);
    struct CMUnitTest m = cmocka_unit_test(test_maxpool_ties_nan);
    tests[N_CASES] = e;
    tests[N_CASES + 1] = d;
    tests[N_CASES + 2] = m;
    return _cmocka_run_group_tests("conv", tests, N_CASES + 3, load, unload);
}
