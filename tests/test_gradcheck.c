/* test_gradcheck.c — every op's gradient (built by autodiff, run by the CPU backend)
 * against central finite differences of the same graph's forward pass.
 *
 * For an op f and a fixed random R, L = sum(f(inputs) * R); the analytic dL/dx_i from
 * anvil_gradient is compared with (L(x_i + h) - L(x_i - h)) / 2h, h = 1e-2, per
 * element.  Pass: |fd - an| <= 3e-3 + 3e-3 |an| (float32 forward; the central difference
 * error is O(h^2) ~ 1e-4 on these smooth inputs, rounding ~ 1e-5).  Inputs stay away
 * from kinks (|x| >= 0.1) so the difference quotient is meaningful; max-pool inputs are a
 * shuffled grid 0.05 apart, so no nudge by h changes a window's argmax.  The last tests
 * show the check rejects a gradient that is wrong by 2% in one element. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H 1e-2f
#define ATOL 3e-3
#define RTOL 3e-3
#define MAX_INPUTS 4

typedef anvil_value (*build_fn)(anvil_graph *g, const anvil_value *x);

typedef struct {
    const char *name;
    int n_in;
    int ndim[MAX_INPUTS];
    int64_t shape[MAX_INPUTS][4];
    bool diff[MAX_INPUTS];         /* which inputs to check */
    bool int_labels;               /* input 1 holds int32 class labels */
    float lo, hi;                  /* input range */
    build_fn build;
} op_case;

static anvil_run_options cpu_opts(void)
{
    anvil_run_options o = anvil_run_default_options();
    o.device = ANVIL_DEVICE_CPU;
    o.training = true;
    o.seed = 7;
    return o;
}

/* A shuffled grid 0.05 apart, off zero: no two values in a max-pool window are within
 * the finite difference's reach (2h = 0.02) of each other. */
static void distinct_fill(float *d, int64_t n, uint64_t seed)
{
    for (int64_t k = 0; k < n; k++)
        d[k] = 0.05f * (float)(k - n / 2) + 0.025f;
    uint64_t st = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (int64_t k = n - 1; k > 0; k--) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        int64_t j = (int64_t)((st >> 33) % (uint64_t)(k + 1));
        float t = d[k];
        d[k] = d[j];
        d[j] = t;
    }
}

/* Graph: inputs x[0..n), R; out = build(x); L = sum(out * R). */
typedef struct {
    anvil_graph *g;
    anvil_value x[MAX_INPUTS], r, loss, grad[MAX_INPUTS];
    anvil_tensor *feed[MAX_INPUTS + 1];
} harness;

static void harness_init(harness *h, const op_case *c, uint64_t seed)
{
    memset(h, 0, sizeof *h);
    CHECK_OK(anvil_graph_create(&h->g));
    for (int i = 0; i < c->n_in; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        bool lab = c->int_labels && i == 1;
        h->x[i] = anvil_input(h->g, name, lab ? ANVIL_I32 : ANVIL_F32, c->ndim[i], c->shape[i]);
        if (lab) {
            CHECK_OK(anvil_tensor_create(&h->feed[i], ANVIL_I32, c->ndim[i], c->shape[i], NULL));
            int32_t *y = anvil_tensor_data(h->feed[i]);
            for (int64_t k = 0; k < anvil_tensor_numel(h->feed[i]); k++)
                y[k] = (int32_t)((k * 7 + 3) % c->shape[0][1]);
        } else {
            h->feed[i] = tu_rand_tensor(c->ndim[i], c->shape[i], c->lo, c->hi, seed + (uint64_t)i);
            /* keep away from kinks at 0 */
            float *d = anvil_tensor_data(h->feed[i]);
            for (int64_t k = 0; k < anvil_tensor_numel(h->feed[i]); k++)
                if (fabsf(d[k]) < 0.1f)
                    d[k] = d[k] < 0 ? -0.1f - 0.3f * (float)k / 100.0f : 0.1f + 0.3f * (float)(k % 7) / 7.0f;
            if (i == 0 && strncmp(c->name, "maxpool", 7) == 0) /* no ties to flip */
                distinct_fill(d, anvil_tensor_numel(h->feed[i]), seed);
        }
    }
    anvil_value out = c->build(h->g, h->x);
    CHECK_OK(anvil_graph_status(h->g));
    int64_t os[ANVIL_MAX_DIMS];
    int ond = anvil_value_shape(h->g, out, os);
    h->r = anvil_input(h->g, "R", ANVIL_F32, ond, os);
    h->feed[c->n_in] = tu_rand_tensor(ond, os, -1.0f, 1.0f, seed + 99);
    h->loss = anvil_sum(h->g, anvil_mul(h->g, out, h->r), ANVIL_ALL_DIMS, false);
    for (int i = 0; i < c->n_in; i++)
        if (c->diff[i])
            h->grad[i] = anvil_gradient(h->g, h->loss, h->x[i]);
    CHECK_OK(anvil_graph_status(h->g));
}

static void harness_free(harness *h, const op_case *c)
{
    for (int i = 0; i <= c->n_in; i++)
        anvil_tensor_release(h->feed[i]);
    anvil_graph_free(h->g);
}

static float run_loss(harness *h, const op_case *c)
{
    anvil_value feeds[MAX_INPUTS + 1];
    for (int i = 0; i < c->n_in; i++)
        feeds[i] = h->x[i];
    feeds[c->n_in] = h->r;
    anvil_run_options o = cpu_opts();
    anvil_tensor *out = NULL;
    CHECK_OK(anvil_graph_run(h->g, &o, c->n_in + 1, feeds, h->feed, 1, &h->loss, &out));
    float l = *(float *)anvil_tensor_data(out);
    anvil_tensor_release(out);
    return l;
}

/* Worst normalized error between `analytic` (for input i) and finite differences. */
static double fd_error(harness *h, const op_case *c, int i, const float *analytic)
{
    float *x = anvil_tensor_data(h->feed[i]);
    double worst = 0;
    int64_t n = anvil_tensor_numel(h->feed[i]);
    for (int64_t k = 0; k < n; k++) {
        float keep = x[k];
        x[k] = keep + H;
        float lp = run_loss(h, c);
        x[k] = keep - H;
        float lm = run_loss(h, c);
        x[k] = keep;
        double fd = ((double)lp - (double)lm) / (2.0 * H);
        double e = fabs(fd - analytic[k]) / (ATOL + RTOL * fabs(analytic[k]));
        if (e > worst || isnan(e)) {
            worst = isnan(e) ? INFINITY : e;
            if (e > 1)
                print_message("  %s input %d element %lld: finite difference %.6g, autodiff %.6g\n", c->name, i,
                              (long long)k, fd, (double)analytic[k]);
        }
    }
    return worst;
}

/* Analytic gradients of every checked input, in one run. */
static void analytic_grads(harness *h, const op_case *c, anvil_tensor **g)
{
    anvil_value feeds[MAX_INPUTS + 1], fetch[MAX_INPUTS];
    int nf = 0;
    for (int i = 0; i < c->n_in; i++)
        feeds[i] = h->x[i];
    feeds[c->n_in] = h->r;
    for (int i = 0; i < c->n_in; i++)
        if (c->diff[i])
            fetch[nf++] = h->grad[i];
    anvil_run_options o = cpu_opts();
    anvil_tensor *out[MAX_INPUTS] = {0};
    CHECK_OK(anvil_graph_run(h->g, &o, c->n_in + 1, feeds, h->feed, nf, fetch, out));
    for (int i = 0, j = 0; i < c->n_in; i++)
        g[i] = c->diff[i] ? out[j++] : NULL;
}

static void check_case(const op_case *c)
{
    for (uint64_t seed = 1; seed <= 2; seed++) {
        harness h;
        harness_init(&h, c, seed * 1000);
        anvil_tensor *g[MAX_INPUTS] = {0};
        analytic_grads(&h, c, g);
        for (int i = 0; i < c->n_in; i++) {
            if (!c->diff[i])
                continue;
            double e = fd_error(&h, c, i, anvil_tensor_data(g[i]));
            if (e > 1.0)
                fail_msg("%s: gradient of input %d off by %.2fx the tolerance", c->name, i, e);
            anvil_tensor_release(g[i]);
        }
        harness_free(&h, c);
    }
}

/* ---- the ops */
static anvil_value b_linear(anvil_graph *g, const anvil_value *x) { return anvil_linear(g, x[0], x[1], x[2]); }
static anvil_value b_linear3d(anvil_graph *g, const anvil_value *x) { return anvil_linear(g, x[0], x[1], ANVIL_NO_VALUE); }
static anvil_value b_matmul(anvil_graph *g, const anvil_value *x) { return anvil_matmul(g, x[0], x[1], false, false); }
static anvil_value b_matmul_tb(anvil_graph *g, const anvil_value *x) { return anvil_matmul(g, x[0], x[1], false, true); }
static anvil_value b_matmul_ta(anvil_graph *g, const anvil_value *x) { return anvil_matmul(g, x[0], x[1], true, false); }
static anvil_value b_matmul_tt(anvil_graph *g, const anvil_value *x) { return anvil_matmul(g, x[0], x[1], true, true); }
static anvil_value b_add(anvil_graph *g, const anvil_value *x) { return anvil_add(g, x[0], x[1]); }
static anvil_value b_concat(anvil_graph *g, const anvil_value *x) { return anvil_concat(g, 3, x, 1); }
static anvil_value b_slice(anvil_graph *g, const anvil_value *x) { return anvil_slice(g, x[0], -1, 1, 3); }
static anvil_value b_sub(anvil_graph *g, const anvil_value *x) { return anvil_sub(g, x[0], x[1]); }
static anvil_value b_mul(anvil_graph *g, const anvil_value *x) { return anvil_mul(g, x[0], x[1]); }
static anvil_value b_div(anvil_graph *g, const anvil_value *x) { return anvil_div(g, x[0], x[1]); }
static anvil_value b_scale(anvil_graph *g, const anvil_value *x) { return anvil_scale(g, x[0], -2.5f); }
static anvil_value b_relu(anvil_graph *g, const anvil_value *x) { return anvil_relu(g, x[0]); }
static anvil_value b_leaky(anvil_graph *g, const anvil_value *x) { return anvil_leaky_relu(g, x[0], 0.1f); }
static anvil_value b_elu(anvil_graph *g, const anvil_value *x) { return anvil_elu(g, x[0], 1.3f); }
static anvil_value b_sigmoid(anvil_graph *g, const anvil_value *x) { return anvil_sigmoid(g, x[0]); }
static anvil_value b_tanh(anvil_graph *g, const anvil_value *x) { return anvil_tanh(g, x[0]); }
static anvil_value b_silu(anvil_graph *g, const anvil_value *x) { return anvil_silu(g, x[0]); }
static anvil_value b_gelu(anvil_graph *g, const anvil_value *x) { return anvil_gelu(g, x[0], false); }
static anvil_value b_gelu_tanh(anvil_graph *g, const anvil_value *x) { return anvil_gelu(g, x[0], true); }
static anvil_value b_softmax(anvil_graph *g, const anvil_value *x) { return anvil_softmax(g, x[0], -1); }
static anvil_value b_softmax1(anvil_graph *g, const anvil_value *x) { return anvil_softmax(g, x[0], 1); }
static anvil_value b_log_softmax(anvil_graph *g, const anvil_value *x) { return anvil_log_softmax(g, x[0], -1); }
static anvil_value b_log_softmax0(anvil_graph *g, const anvil_value *x) { return anvil_log_softmax(g, x[0], 0); }
static anvil_value b_reshape(anvil_graph *g, const anvil_value *x)
{
    int64_t s[2] = {4, ANVIL_INFER_DIM};
    return anvil_tanh(g, anvil_reshape(g, x[0], 2, s));
}
static anvil_value b_flatten(anvil_graph *g, const anvil_value *x) { return anvil_sigmoid(g, anvil_flatten(g, x[0])); }
static anvil_value b_sum1(anvil_graph *g, const anvil_value *x) { return anvil_sum(g, x[0], 1, false); }
static anvil_value b_sum_keep(anvil_graph *g, const anvil_value *x) { return anvil_sum(g, x[0], -1, true); }
static anvil_value b_mean0(anvil_graph *g, const anvil_value *x) { return anvil_mean(g, x[0], 0, false); }
static anvil_value b_mean_all(anvil_graph *g, const anvil_value *x) { return anvil_mean(g, x[0], ANVIL_ALL_DIMS, false); }
static anvil_value b_dropout(anvil_graph *g, const anvil_value *x) { return anvil_dropout(g, x[0], 0.3f); }
static anvil_value b_ce(anvil_graph *g, const anvil_value *x) { return anvil_cross_entropy(g, x[0], x[1], 0.0f); }
static anvil_value b_ce_smooth(anvil_graph *g, const anvil_value *x) { return anvil_cross_entropy(g, x[0], x[1], 0.1f); }
static anvil_value b_ce_probs(anvil_graph *g, const anvil_value *x)
{
    return anvil_cross_entropy(g, x[0], anvil_softmax(g, x[1], -1), 0.2f);
}
static anvil_value b_bce(anvil_graph *g, const anvil_value *x) { return anvil_bce(g, anvil_sigmoid(g, x[0]), anvil_sigmoid(g, x[1])); }
static anvil_value b_bce_logits(anvil_graph *g, const anvil_value *x) { return anvil_bce_with_logits(g, x[0], anvil_sigmoid(g, x[1])); }
static anvil_value b_mse(anvil_graph *g, const anvil_value *x) { return anvil_mse(g, x[0], x[1]); }
static anvil_value b_l1(anvil_graph *g, const anvil_value *x) { return anvil_l1(g, x[0], x[1]); }
static anvil_value b_huber(anvil_graph *g, const anvil_value *x) { return anvil_huber(g, x[0], x[1], 0.7f); }
static anvil_value b_smooth_l1(anvil_graph *g, const anvil_value *x) { return anvil_smooth_l1(g, x[0], x[1], 0.5f); }
/* Batch norm in training mode: the gradient flows through the batch statistics. */
static anvil_value bn(anvil_graph *g, const anvil_value *x, bool affine)
{
    int64_t s[ANVIL_MAX_DIMS];
    anvil_value_shape(g, x[0], s);
    anvil_init zeros = {ANVIL_INIT_ZEROS, 0}, ones = {ANVIL_INIT_ONES, 0};
    anvil_value rm = anvil_buffer(g, "running_mean", ANVIL_F32, 1, &s[1], zeros);
    anvil_value rv = anvil_buffer(g, "running_var", ANVIL_F32, 1, &s[1], ones);
    return anvil_batchnorm(g, x[0], rm, rv, ANVIL_NO_VALUE, affine ? x[1] : ANVIL_NO_VALUE,
                           affine ? x[2] : ANVIL_NO_VALUE, 1e-5f, 0.1f);
}
static anvil_value b_bn(anvil_graph *g, const anvil_value *x) { return bn(g, x, true); }
static anvil_value b_bn_plain(anvil_graph *g, const anvil_value *x) { return bn(g, x, false); }
static anvil_value b_ln(anvil_graph *g, const anvil_value *x) { return anvil_layernorm(g, x[0], 1, x[1], x[2], 1e-5f); }
static anvil_value b_ln2(anvil_graph *g, const anvil_value *x) { return anvil_layernorm(g, x[0], 2, x[1], x[2], 1e-5f); }
static anvil_value b_ln_plain(anvil_graph *g, const anvil_value *x)
{
    return anvil_layernorm(g, x[0], 1, ANVIL_NO_VALUE, ANVIL_NO_VALUE, 1e-5f);
}

static anvil_conv_params conv_p(int sh, int sw, int ph, int pw, int dh, int dw, int groups)
{
    anvil_conv_params p = {sh, sw, ph, pw, dh, dw, groups};
    return p;
}
static anvil_value b_conv(anvil_graph *g, const anvil_value *x) { return anvil_conv2d(g, x[0], x[1], x[2], NULL); }
static anvil_value b_conv_s2p1(anvil_graph *g, const anvil_value *x)
{
    anvil_conv_params p = conv_p(2, 2, 1, 1, 1, 1, 1);
    return anvil_conv2d(g, x[0], x[1], x[2], &p);
}
static anvil_value b_conv_dil(anvil_graph *g, const anvil_value *x)
{
    anvil_conv_params p = conv_p(1, 2, 1, 2, 2, 2, 1);
    return anvil_conv2d(g, x[0], x[1], ANVIL_NO_VALUE, &p);
}
static anvil_value b_conv_g2(anvil_graph *g, const anvil_value *x)
{
    anvil_conv_params p = conv_p(1, 2, 1, 0, 1, 1, 2);
    return anvil_conv2d(g, x[0], x[1], x[2], &p);
}
static anvil_value b_conv_1x1(anvil_graph *g, const anvil_value *x)
{
    anvil_conv_params p = conv_p(1, 1, 0, 0, 1, 1, 2);
    return anvil_conv2d(g, x[0], x[1], x[2], &p);
}
static anvil_value b_conv_dw(anvil_graph *g, const anvil_value *x)
{
    anvil_conv_params p = conv_p(2, 1, 1, 1, 1, 1, 3);
    return anvil_conv2d(g, x[0], x[1], ANVIL_NO_VALUE, &p);
}
static anvil_value b_maxpool(anvil_graph *g, const anvil_value *x) { return anvil_maxpool2d(g, x[0], 2, 2, 0, 0, 0, 0); }
static anvil_value b_maxpool_pad(anvil_graph *g, const anvil_value *x) { return anvil_maxpool2d(g, x[0], 3, 3, 2, 2, 1, 1); }
static anvil_value b_maxpool_rect(anvil_graph *g, const anvil_value *x) { return anvil_maxpool2d(g, x[0], 2, 3, 1, 2, 1, 0); }
static anvil_value b_avgpool(anvil_graph *g, const anvil_value *x) { return anvil_avgpool2d(g, x[0], 2, 2, 0, 0, 0, 0); }
static anvil_value b_avgpool_pad(anvil_graph *g, const anvil_value *x) { return anvil_avgpool2d(g, x[0], 3, 3, 2, 2, 1, 1); }
static anvil_value b_avgpool_rect(anvil_graph *g, const anvil_value *x) { return anvil_avgpool2d(g, x[0], 2, 3, 1, 2, 1, 1); }
static anvil_value b_adaptive(anvil_graph *g, const anvil_value *x) { return anvil_adaptive_avgpool2d(g, x[0], 2, 4); }
static anvil_value b_adaptive_up(anvil_graph *g, const anvil_value *x) { return anvil_adaptive_avgpool2d(g, x[0], 3, 7); }

#define S2(a, b) {a, b}
#define S3(a, b, c) {a, b, c}
#define S4(a, b, c, d) {a, b, c, d}

static const op_case cases[] = {
    {"linear", 3, {2, 2, 1}, {S2(5, 7), S2(3, 7), {3}}, {1, 1, 1}, false, -1, 1, b_linear},
    {"linear-3d", 2, {3, 2}, {S3(2, 3, 4), S2(5, 4)}, {1, 1}, false, -1, 1, b_linear3d},
    {"matmul", 2, {2, 2}, {S2(4, 3), S2(3, 5)}, {1, 1}, false, -1, 1, b_matmul},
    {"matmul-tb", 2, {2, 2}, {S2(4, 3), S2(5, 3)}, {1, 1}, false, -1, 1, b_matmul_tb},
    {"matmul-ta", 2, {2, 2}, {S2(3, 4), S2(3, 5)}, {1, 1}, false, -1, 1, b_matmul_ta},
    {"matmul-tt", 2, {2, 2}, {S2(3, 4), S2(5, 3)}, {1, 1}, false, -1, 1, b_matmul_tt},
    {"concat", 3, {3, 3, 3}, {S3(2, 1, 3), S3(2, 3, 3), S3(2, 2, 3)}, {1, 1, 1}, false, -1, 1, b_concat},
    {"slice", 1, {2}, {S2(3, 5)}, {1}, false, -1, 1, b_slice},
    {"add-broadcast", 2, {2, 1}, {S2(4, 5), {5}}, {1, 1}, false, -1, 1, b_add},
    {"sub-broadcast", 2, {2, 2}, {S2(4, 1), S2(1, 5)}, {1, 1}, false, -1, 1, b_sub},
    {"mul-broadcast", 2, {3, 2}, {S3(2, 3, 4), S2(3, 1)}, {1, 1}, false, -1, 1, b_mul},
    {"div", 2, {2, 2}, {S2(3, 4), S2(3, 4)}, {1, 1}, false, 0.5f, 2, b_div},
    {"scale", 1, {2}, {S2(3, 4)}, {1}, false, -1, 1, b_scale},
    {"relu", 1, {2}, {S2(4, 6)}, {1}, false, -1, 1, b_relu},
    {"leaky_relu", 1, {2}, {S2(4, 6)}, {1}, false, -1, 1, b_leaky},
    {"elu", 1, {2}, {S2(4, 6)}, {1}, false, -2, 2, b_elu},
    {"sigmoid", 1, {2}, {S2(4, 6)}, {1}, false, -3, 3, b_sigmoid},
    {"tanh", 1, {2}, {S2(4, 6)}, {1}, false, -2, 2, b_tanh},
    {"silu", 1, {2}, {S2(4, 6)}, {1}, false, -3, 3, b_silu},
    {"gelu", 1, {2}, {S2(4, 6)}, {1}, false, -3, 3, b_gelu},
    {"gelu-tanh", 1, {2}, {S2(4, 6)}, {1}, false, -3, 3, b_gelu_tanh},
    {"softmax", 1, {2}, {S2(3, 5)}, {1}, false, -2, 2, b_softmax},
    {"softmax-dim1", 1, {3}, {S3(2, 3, 4)}, {1}, false, -2, 2, b_softmax1},
    {"log_softmax", 1, {2}, {S2(3, 5)}, {1}, false, -2, 2, b_log_softmax},
    {"log_softmax-dim0", 1, {2}, {S2(3, 5)}, {1}, false, -2, 2, b_log_softmax0},
    {"reshape", 1, {3}, {S3(2, 2, 3)}, {1}, false, -2, 2, b_reshape},
    {"flatten", 1, {3}, {S3(2, 2, 3)}, {1}, false, -2, 2, b_flatten},
    {"sum-dim", 1, {3}, {S3(2, 3, 4)}, {1}, false, -1, 1, b_sum1},
    {"sum-keepdim", 1, {2}, {S2(3, 4)}, {1}, false, -1, 1, b_sum_keep},
    {"mean-dim0", 1, {2}, {S2(3, 4)}, {1}, false, -1, 1, b_mean0},
    {"mean-all", 1, {3}, {S3(2, 3, 2)}, {1}, false, -1, 1, b_mean_all},
    {"dropout", 1, {2}, {S2(6, 8)}, {1}, false, -1, 1, b_dropout},
    {"cross_entropy", 2, {2, 1}, {S2(4, 5), {4}}, {1, 0}, true, -2, 2, b_ce},
    {"cross_entropy-smooth", 2, {2, 1}, {S2(4, 5), {4}}, {1, 0}, true, -2, 2, b_ce_smooth},
    {"cross_entropy-probs", 2, {2, 2}, {S2(4, 5), S2(4, 5)}, {1, 0}, false, -2, 2, b_ce_probs},
    {"bce", 2, {2, 2}, {S2(3, 4), S2(3, 4)}, {1, 0}, false, -2, 2, b_bce},
    {"bce_with_logits", 2, {2, 2}, {S2(3, 4), S2(3, 4)}, {1, 0}, false, -2, 2, b_bce_logits},
    {"mse", 2, {2, 2}, {S2(3, 4), S2(3, 4)}, {1, 0}, false, -2, 2, b_mse},
    {"l1", 2, {2, 2}, {S2(3, 4), S2(3, 4)}, {1, 0}, false, -2, 2, b_l1},
    {"huber", 2, {2, 2}, {S2(3, 4), S2(3, 4)}, {1, 0}, false, -2, 2, b_huber},
    {"smooth_l1", 2, {2, 2}, {S2(3, 4), S2(3, 4)}, {1, 0}, false, -2, 2, b_smooth_l1},
    {"batchnorm1d", 3, {2, 1, 1}, {S2(6, 3), {3}, {3}}, {1, 1, 1}, false, -2, 2, b_bn},
    {"batchnorm1d-3d", 3, {3, 1, 1}, {S3(3, 2, 4), {2}, {2}}, {1, 1, 1}, false, -2, 2, b_bn},
    {"batchnorm2d", 3, {4, 1, 1}, {{3, 2, 2, 3}, {2}, {2}}, {1, 1, 1}, false, -2, 2, b_bn},
    {"batchnorm2d-plain", 1, {4}, {{2, 3, 2, 2}}, {1}, false, -2, 2, b_bn_plain},
    {"layernorm", 3, {2, 1, 1}, {S2(4, 5), {5}, {5}}, {1, 1, 1}, false, -2, 2, b_ln},
    {"layernorm-2d", 3, {3, 2, 2}, {S3(2, 3, 4), S2(3, 4), S2(3, 4)}, {1, 1, 1}, false, -2, 2, b_ln2},
    {"layernorm-plain", 1, {3}, {S3(2, 3, 5)}, {1}, false, -2, 2, b_ln_plain},
    {"conv2d", 3, {4, 4, 1}, {S4(2, 3, 5, 6), S4(4, 3, 3, 3), {4}}, {1, 1, 1}, false, -1, 1, b_conv},
    {"conv2d-stride2-pad1", 3, {4, 4, 1}, {S4(2, 3, 5, 6), S4(4, 3, 3, 2), {4}}, {1, 1, 1}, false, -1, 1, b_conv_s2p1},
    {"conv2d-dilation2-nobias", 2, {4, 4}, {S4(2, 3, 5, 6), S4(2, 3, 2, 3)}, {1, 1}, false, -1, 1, b_conv_dil},
    {"conv2d-groups2", 3, {4, 4, 1}, {S4(2, 4, 5, 6), S4(6, 2, 3, 3), {6}}, {1, 1, 1}, false, -1, 1, b_conv_g2},
    {"conv2d-1x1-groups2", 3, {4, 4, 1}, {S4(2, 4, 3, 4), S4(6, 2, 1, 1), {6}}, {1, 1, 1}, false, -1, 1, b_conv_1x1},
    {"conv2d-depthwise", 2, {4, 4}, {S4(2, 3, 5, 5), S4(3, 1, 3, 3)}, {1, 1}, false, -1, 1, b_conv_dw},
    {"maxpool2d", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_maxpool},
    {"maxpool2d-pad1", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_maxpool_pad},
    {"maxpool2d-rect", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_maxpool_rect},
    {"avgpool2d", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_avgpool},
    {"avgpool2d-pad1", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_avgpool_pad},
    {"avgpool2d-rect", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_avgpool_rect},
    {"adaptive_avgpool2d", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_adaptive},
    {"adaptive_avgpool2d-up", 1, {4}, {S4(2, 3, 5, 6)}, {1}, false, -1, 1, b_adaptive_up},
};

static void test_op(void **state) { check_case((const op_case *)*state); }

/* A gradient 2% wrong in one element must fail the same check. */
static void test_wrong_gradient_fails(void **state)
{
    (void)state;
    const op_case *c = &cases[0]; /* linear */
    harness h;
    harness_init(&h, c, 4242);
    anvil_tensor *g[MAX_INPUTS] = {0};
    analytic_grads(&h, c, g);
    float *w = anvil_tensor_data(g[1]);
    w[3] *= 1.02f;
    double e = fd_error(&h, c, 1, w);
    print_message("  deliberately wrong gradient: error %.2fx the tolerance (must be > 1)\n", e);
    assert_true(e > 1.0);
    for (int i = 0; i < c->n_in; i++)
        anvil_tensor_release(g[i]);
    harness_free(&h, c);
}

/* The gradient of leaky_relu(0.1) is not leaky_relu(0.12)'s: a subtly wrong VJP fails. */
static anvil_value b_leaky_other(anvil_graph *g, const anvil_value *x) { return anvil_leaky_relu(g, x[0], 0.12f); }
static void test_wrong_vjp_fails(void **state)
{
    (void)state;
    size_t k = 0;
    while (strcmp(cases[k].name, "leaky_relu") != 0)
        k++;
    op_case right = cases[k], other = cases[k];
    other.build = b_leaky_other;
    harness hr, ho;
    harness_init(&hr, &right, 77);
    harness_init(&ho, &other, 77);
    anvil_tensor *g[MAX_INPUTS] = {0};
    analytic_grads(&ho, &other, g);
    double e = fd_error(&hr, &right, 0, anvil_tensor_data(g[0]));
    assert_true(e > 1.0);
    anvil_tensor_release(g[0]);
    harness_free(&hr, &right);
    harness_free(&ho, &other);
}

int main(void)
{
    enum { N = sizeof cases / sizeof *cases };
    struct CMUnitTest tests[N + 2];
    for (int i = 0; i < N; i++) {
        struct CMUnitTest t = {cases[i].name, test_op, NULL, NULL, (void *)&cases[i]};
        tests[i] = t;
    }
    struct CMUnitTest w1 = cmocka_unit_test(test_wrong_gradient_fails);
    struct CMUnitTest w2 = cmocka_unit_test(test_wrong_vjp_fails);
    tests[N] = w1;
    tests[N + 1] = w2;
    return _cmocka_run_group_tests("gradcheck", tests, N + 2, NULL, NULL);
}
