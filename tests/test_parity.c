/* test_parity.c — PyTorch parity of single ops, losses and two short MLP trainings.
 *
 * The reference values live in the safetensors files of tests/golden/ (committed),
 * written by tests/golden/make_golden.py (expected environment: python3, torch 2.x,
 * safetensors; see that script for how to regenerate and for the key names).  This
 * test never needs Python and skips nothing: a missing or unreadable golden file fails
 * every test.
 *
 * What is checked
 *  - every op / loss case (one cmocka test each): built with the graph API, every input
 *    fed through anvil_input with its full shape, loss = sum(y * R) for a fixed random R
 *    (or R * y when y is a scalar), gradients by anvil_gradient, run once on the CPU with
 *    anvil_graph_run; the forward value and every gradient are compared;
 *  - mlp_{sgd,adamw}_forward_backward: the MLP of the golden files built as a graph with
 *    its weights as inputs: output, loss and parameter gradients of step 1;
 *  - mlp_{sgd,adamw}: the same MLP as a model (anvil_model_add) trained by a CPU trainer
 *    for 20 steps: the loss of every step (anvil_trainer_last_loss), the output before
 *    training (anvil_predict) and the parameters after steps 1, 10 and 20;
 *  - mlp_optim_<case>: the same checks over 30 steps (params after 1, 10, 30) for every
 *    case of make_golden.py's OPTIM_CASES (RMSprop, Adagrad, Adadelta, NAdam with their
 *    options; maximize; amsgrad), from mlp_optim.safetensors.
 *
 * Tolerances (the reference is float64 rounded to float32; Anvil computes in float32):
 *    single ops, losses, step-1 forward/backward:  |got - want| <= 1e-5 + 1e-4 * |want|
 *    MLP training (every loss, params at 1/10/20): |got - want| <= 1e-4 + 1e-3 * |want|
 *  make_golden.py checks that float32 PyTorch itself stays well inside both (it prints
 *  the worst float32 error as a fraction of these tolerances: ~0.06 for single ops,
 *  ~0.0006 for the MLP runs), so a failure here is a real difference, not rounding.
 *
 * ANVIL_PARITY_VERBOSE=1 prints the worst error of every comparison, passing or not.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anvil.h"
#include "testutil.h"

#ifndef ANVIL_GOLDEN_DIR
#error "ANVIL_GOLDEN_DIR must name the tests/golden folder"
#endif

#define OP_ATOL 1e-5
#define OP_RTOL 1e-4
#define MLP_ATOL 1e-4
#define MLP_RTOL 1e-3

/* ------------------------------------------------------------ golden files */

typedef struct {
    const char *file;
    int n;
    char **names;
    anvil_tensor **t;
} golden;

static golden G_OPS = {"ops.safetensors", 0, NULL, NULL};
static golden G_LOSSES = {"losses.safetensors", 0, NULL, NULL};
static golden G_SGD = {"mlp_sgd.safetensors", 0, NULL, NULL};
static golden G_ADAMW = {"mlp_adamw.safetensors", 0, NULL, NULL};
static golden G_OPTIM = {"mlp_optim.safetensors", 0, NULL, NULL};
static golden G_SCHED = {"sched.safetensors", 0, NULL, NULL};
static golden *const G_ALL[] = {&G_OPS, &G_LOSSES, &G_SGD, &G_ADAMW, &G_OPTIM, &G_SCHED};

static int verbose(void) {
    const char *v = getenv("ANVIL_PARITY_VERBOSE");
    return v && *v && strcmp(v, "0") != 0;
}

/* The golden tensor named by a printf-style key, or NULL (and a message). */
static const anvil_tensor *gget(const golden *gf, const char *fmt, ...) {
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    for (int i = 0; i < gf->n; i++)
        if (strcmp(gf->names[i], key) == 0) return gf->t[i];
    print_error("golden %s has no tensor \"%s\"\n", gf->file, key);
    return NULL;
}

/* Like gget, but quiet when absent. */
static const anvil_tensor *gfind(const golden *gf, const char *key) {
    for (int i = 0; i < gf->n; i++)
        if (strcmp(gf->names[i], key) == 0) return gf->t[i];
    return NULL;
}

/* A [1] float golden parameter (e.g. "elu.alpha"), or dflt when absent. */
static float gscalar(const golden *gf, const char *key, float dflt) {
    const anvil_tensor *t = gfind(gf, key);
    if (!t) return dflt;
    return ((const float *)anvil_tensor_cdata(t))[0];
}

static int load_golden(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof G_ALL / sizeof G_ALL[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", ANVIL_GOLDEN_DIR, G_ALL[i]->file);
        anvil_status s = anvil_safetensors_read(path, &G_ALL[i]->n, &G_ALL[i]->names,
                                                &G_ALL[i]->t);
        if (s != ANVIL_OK) {
            print_error("cannot read golden file %s: %s: %s\n"
                        "(regenerate with python3 tests/golden/make_golden.py)\n",
                        path, anvil_status_name(s), anvil_last_error());
            G_ALL[i]->n = 0;
            G_ALL[i]->names = NULL;
            G_ALL[i]->t = NULL;
            return -1;
        }
    }
    return 0;
}

static int free_golden(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof G_ALL / sizeof G_ALL[0]; i++) {
        if (G_ALL[i]->names) anvil_safetensors_free(G_ALL[i]->n, G_ALL[i]->names, G_ALL[i]->t);
        G_ALL[i]->n = 0;
        G_ALL[i]->names = NULL;
        G_ALL[i]->t = NULL;
    }
    return 0;
}

/* ------------------------------------------------------------ comparison */

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static void format_index(char *buf, size_t n, int ndim, const int64_t *shape, int64_t flat) {
    int64_t idx[ANVIL_MAX_DIMS] = {0};
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = shape[d] ? flat % shape[d] : 0;
        flat = shape[d] ? flat / shape[d] : 0;
    }
    format_shape(buf, n, ndim, idx);
}

/* Compares got with the golden want elementwise: |got - want| <= atol + rtol * |want|.
 * Returns the number of failures (0 or 1) after printing, on failure, the key, the
 * number of elements out of tolerance and the worst one. */
static int compare(const char *key, const anvil_tensor *got, const anvil_tensor *want,
                   double atol, double rtol) {
    char gs[128], ws[128];
    if (!want) return 1; /* gget already said which key is missing */
    if (!got) {
        print_error("%s: Anvil produced no tensor\n", key);
        return 1;
    }
    format_shape(ws, sizeof ws, anvil_tensor_ndim(want), anvil_tensor_shape(want));
    format_shape(gs, sizeof gs, anvil_tensor_ndim(got), anvil_tensor_shape(got));
    if (anvil_tensor_dtype(got) != ANVIL_F32 || anvil_tensor_dtype(want) != ANVIL_F32) {
        print_error("%s: dtype %s, want %s\n", key, anvil_dtype_name(anvil_tensor_dtype(got)),
                    anvil_dtype_name(anvil_tensor_dtype(want)));
        return 1;
    }
    /* A golden scalar is stored as [1]; Anvil may give [] or [1]. */
    bool scalar_ok = anvil_tensor_numel(want) == 1 && anvil_tensor_ndim(want) == 1 &&
                     anvil_tensor_numel(got) == 1 && anvil_tensor_ndim(got) <= 1;
    if (!scalar_ok && strcmp(gs, ws) != 0) {
        print_error("%s: shape %s, want %s\n", key, gs, ws);
        return 1;
    }
    const float *a = anvil_tensor_cdata(got);
    const float *b = anvil_tensor_cdata(want);
    int64_t n = anvil_tensor_numel(want), bad = 0, worst = 0;
    double worst_ratio = -1.0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)a[i] - (double)b[i]);
        double tol = atol + rtol * fabs((double)b[i]);
        double ratio = isnan(err) ? INFINITY : err / tol;
        if (!(err <= tol)) bad++;
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    char at[128];
    format_index(at, sizeof at, anvil_tensor_ndim(want), anvil_tensor_shape(want), worst);
    double werr = fabs((double)a[worst] - (double)b[worst]);
    double wtol = atol + rtol * fabs((double)b[worst]);
    if (bad) {
        print_error("%s %s: %lld of %lld elements out of tolerance; worst at %s: got %.9g, "
                    "want %.9g, |diff| %.3g > %.3g (= %g + %g*|want|, %.3gx)\n",
                    key, ws, (long long)bad, (long long)n, at, (double)a[worst],
                    (double)b[worst], werr, wtol, atol, rtol, worst_ratio);
        return 1;
    }
    if (verbose())
        print_message("  ok %-28s %-10s worst at %s: got %.9g want %.9g |diff| %.3g "
                      "(%.3g of tol)\n",
                      key, ws, at, (double)a[worst], (double)b[worst], werr, worst_ratio);
    return 0;
}

/* Reports a failed Anvil call (with its message) and returns 1. */
static int failed_call(const char *what, anvil_status s) {
    print_error("%s: %s: %s\n", what, anvil_status_name(s), anvil_last_error());
    return 1;
}

#define CALL(fails, what, expr)                                   \
    do {                                                          \
        anvil_status s_ = (expr);                                 \
        if (s_ != ANVIL_OK) (fails) += failed_call((what), s_);   \
    } while (0)

static anvil_value input_like(anvil_graph *g, const char *name, const anvil_tensor *t) {
    return anvil_input(g, name, anvil_tensor_dtype(t), anvil_tensor_ndim(t),
                       anvil_tensor_shape(t));
}

static anvil_run_options cpu_options(void) {
    anvil_run_options o = anvil_run_default_options();
    o.device = ANVIL_DEVICE_CPU;
    o.training = false;
    o.seed = 1;
    return o;
}

/* ------------------------------------------------------------ op and loss cases */

typedef enum {
    K_LINEAR, K_MATMUL, K_ADD, K_SUB, K_MUL, K_DIV, K_SCALE,
    K_RELU, K_LEAKY_RELU, K_ELU, K_SIGMOID, K_TANH, K_SILU, K_GELU, K_GELU_TANH,
    K_SOFTMAX, K_LOG_SOFTMAX, K_SUM, K_MEAN, K_RESHAPE, K_RESHAPE_INFER, K_FLATTEN,
    /* losses (losses.safetensors; the output key is "<key>.loss") */
    K_CE, K_BCE, K_BCE_LOGITS, K_MSE, K_L1, K_HUBER, K_SMOOTH_L1,
} op_kind;

typedef struct {
    const char *key;    /* golden key prefix, also the cmocka test name */
    op_kind kind;
    int n_in;
    const char *in[3];  /* golden input names, fed in this order */
    int n_grad;         /* gradients checked: of in[0..n_grad-1] */
    int dim;            /* softmax / reductions */
    bool keep;          /* reductions */
    bool ta, tb;        /* matmul */
} op_case;

#define UN(key, kind) {key, kind, 1, {"x"}, 1, 0, false, false, false}
#define BIN(key, kind) {key, kind, 2, {"a", "b"}, 2, 0, false, false, false}
#define BIN4(op, kind) BIN(op "_same", kind), BIN(op "_b1", kind), BIN(op "_b2", kind), \
                       BIN(op "_b3", kind)
#define MM(key, ta, tb) {key, K_MATMUL, 2, {"a", "b"}, 2, 0, false, ta, tb}
#define RED(key, kind, dim, keep) {key, kind, 1, {"x"}, 1, dim, keep, false, false}
#define RED6(op, kind) RED(op "_d0", kind, 0, false), RED(op "_d0_keep", kind, 0, true), \
                       RED(op "_d1", kind, 1, false), RED(op "_d1_keep", kind, 1, true), \
                       RED(op "_dlast", kind, -1, false), RED(op "_dlast_keep", kind, -1, true), \
                       RED(op "_all", kind, ANVIL_ALL_DIMS, false)
#define LOSS(key, kind, pred, target) {key, kind, 2, {pred, target}, 1, 0, false, false, false}

static const op_case CASES[] = {
    {"linear", K_LINEAR, 3, {"x", "w", "b"}, 3, 0, false, false, false},
    MM("matmul_nn", false, false), MM("matmul_nt", false, true),
    MM("matmul_tn", true, false), MM("matmul_tt", true, true),
    BIN4("add", K_ADD), BIN4("sub", K_SUB), BIN4("mul", K_MUL), BIN4("div", K_DIV),
    UN("scale", K_SCALE),
    UN("relu", K_RELU), UN("leaky_relu", K_LEAKY_RELU), UN("elu", K_ELU),
    UN("sigmoid", K_SIGMOID), UN("tanh", K_TANH), UN("silu", K_SILU),
    UN("gelu", K_GELU), UN("gelu_tanh", K_GELU_TANH),
    RED("softmax_last", K_SOFTMAX, -1, false), RED("softmax_dim1", K_SOFTMAX, 1, false),
    RED("log_softmax_last", K_LOG_SOFTMAX, -1, false),
    RED("log_softmax_dim1", K_LOG_SOFTMAX, 1, false),
    RED6("sum", K_SUM), RED6("mean", K_MEAN),
    UN("reshape", K_RESHAPE), UN("reshape_infer", K_RESHAPE_INFER), UN("flatten", K_FLATTEN),
    LOSS("ce", K_CE, "logits", "labels"),
    LOSS("ce_ls", K_CE, "logits", "labels"),
    LOSS("ce_probs", K_CE, "logits", "target"),
    LOSS("bce", K_BCE, "probs", "target"),
    LOSS("bce_logits", K_BCE_LOGITS, "logits", "target"),
    LOSS("mse", K_MSE, "x", "target"),
    LOSS("l1", K_L1, "x", "target"),
    LOSS("huber", K_HUBER, "x", "target"),
    LOSS("smooth_l1", K_SMOOTH_L1, "x", "target"),
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

static anvil_value build_case(anvil_graph *g, const op_case *c, const golden *gf,
                              const anvil_value *in) {
    char k[128];
#define P(name, dflt) (snprintf(k, sizeof k, "%s." name, c->key), gscalar(gf, k, dflt))
    switch (c->kind) {
    case K_LINEAR: return anvil_linear(g, in[0], in[1], in[2]);
    case K_MATMUL: return anvil_matmul(g, in[0], in[1], c->ta, c->tb);
    case K_ADD: return anvil_add(g, in[0], in[1]);
    case K_SUB: return anvil_sub(g, in[0], in[1]);
    case K_MUL: return anvil_mul(g, in[0], in[1]);
    case K_DIV: return anvil_div(g, in[0], in[1]);
    case K_SCALE: return anvil_scale(g, in[0], P("s", NAN));
    case K_RELU: return anvil_relu(g, in[0]);
    case K_LEAKY_RELU: return anvil_leaky_relu(g, in[0], P("slope", NAN));
    case K_ELU: return anvil_elu(g, in[0], P("alpha", NAN));
    case K_SIGMOID: return anvil_sigmoid(g, in[0]);
    case K_TANH: return anvil_tanh(g, in[0]);
    case K_SILU: return anvil_silu(g, in[0]);
    case K_GELU: return anvil_gelu(g, in[0], false);
    case K_GELU_TANH: return anvil_gelu(g, in[0], true);
    case K_SOFTMAX: return anvil_softmax(g, in[0], c->dim);
    case K_LOG_SOFTMAX: return anvil_log_softmax(g, in[0], c->dim);
    case K_SUM: return anvil_sum(g, in[0], c->dim, c->keep);
    case K_MEAN: return anvil_mean(g, in[0], c->dim, c->keep);
    case K_RESHAPE: return anvil_reshape(g, in[0], 2, (const int64_t[]){4, 6});
    case K_RESHAPE_INFER: return anvil_reshape(g, in[0], 2, (const int64_t[]){ANVIL_INFER_DIM, 3});
    case K_FLATTEN: return anvil_flatten(g, in[0]);
    case K_CE: return anvil_cross_entropy(g, in[0], in[1], P("smoothing", 0.0f));
    case K_BCE: return anvil_bce(g, in[0], in[1]);
    case K_BCE_LOGITS: return anvil_bce_with_logits(g, in[0], in[1]);
    case K_MSE: return anvil_mse(g, in[0], in[1]);
    case K_L1: return anvil_l1(g, in[0], in[1]);
    case K_HUBER: return anvil_huber(g, in[0], in[1], P("delta", NAN));
    case K_SMOOTH_L1: return anvil_smooth_l1(g, in[0], in[1], P("beta", NAN));
    }
#undef P
    return ANVIL_NO_VALUE;
}

static void test_op_case(void **state) {
    const op_case *c = *state;
    const bool is_loss = c->kind >= K_CE;
    const golden *gf = is_loss ? &G_LOSSES : &G_OPS;
    const char *out_name = is_loss ? "loss" : "y";
    int fails = 0;

    const anvil_tensor *tin[3], *ty = gget(gf, "%s.%s", c->key, out_name);
    const anvil_tensor *tR = gget(gf, "%s.R", c->key);
    for (int i = 0; i < c->n_in; i++) {
        tin[i] = gget(gf, "%s.%s", c->key, c->in[i]);
        assert_non_null(tin[i]);
    }
    assert_non_null(ty);
    assert_non_null(tR);

    anvil_graph *g = NULL;
    assert_int_equal(anvil_graph_create(&g), ANVIL_OK);
    anvil_value in[3], feed[4];
    anvil_tensor *feeds[4];
    int n_feed = 0;
    for (int i = 0; i < c->n_in; i++) {
        in[i] = input_like(g, c->in[i], tin[i]);
        feed[n_feed] = in[i];
        feeds[n_feed++] = (anvil_tensor *)tin[i];
    }
    anvil_value y = build_case(g, c, gf, in), loss;
    if (anvil_tensor_numel(ty) == 1) {
        /* scalar output (a loss, a sum over all dims): loss = R * y */
        loss = anvil_scale(g, y, ((const float *)anvil_tensor_cdata(tR))[0]);
    } else {
        anvil_value R = input_like(g, "R", tR);
        feed[n_feed] = R;
        feeds[n_feed++] = (anvil_tensor *)tR;
        loss = anvil_sum(g, anvil_mul(g, y, R), ANVIL_ALL_DIMS, false);
    }
    anvil_value fetch[4];
    fetch[0] = y;
    for (int i = 0; i < c->n_grad; i++) fetch[1 + i] = anvil_gradient(g, loss, in[i]);
    const int n_fetch = 1 + c->n_grad;

    anvil_status s = anvil_graph_status(g);
    if (s != ANVIL_OK) {
        failed_call("building the graph", s);
        anvil_graph_free(g);
        fail_msg("%s: graph construction failed", c->key);
    }

    anvil_tensor *out[4] = {NULL, NULL, NULL, NULL};
    anvil_run_options opt = cpu_options();
    s = anvil_graph_run(g, &opt, n_feed, feed, feeds, n_fetch, fetch, out);
    if (s != ANVIL_OK) {
        failed_call("anvil_graph_run", s);
        anvil_graph_free(g);
        fail_msg("%s: run failed", c->key);
    }
    char key[160];
    snprintf(key, sizeof key, "%s.%s", c->key, out_name);
    fails += compare(key, out[0], ty, OP_ATOL, OP_RTOL);
    for (int i = 0; i < c->n_grad; i++) {
        snprintf(key, sizeof key, "%s.d%s", c->key, c->in[i]);
        fails += compare(key, out[1 + i], gget(gf, "%s", key), OP_ATOL, OP_RTOL);
    }
    for (int i = 0; i < n_fetch; i++) anvil_tensor_release(out[i]);
    anvil_graph_free(g);
    assert_int_equal(fails, 0);
}

/* ------------------------------------------------------------ the MLP */

static const char *const MLP_PARAMS[6] = {"0.weight", "0.bias", "2.weight",
                                          "2.bias",   "4.weight", "4.bias"};
#define MLP_STEPS 20

/* Step 1 of the golden run as one graph with the weights as inputs: the output, the
 * loss and the gradient of every parameter. */
static void mlp_forward_backward(const golden *gf) {
    int fails = 0;
    const anvil_tensor *tx = gget(gf, "x.0"), *ty = gget(gf, "y.0");
    const anvil_tensor *tw[6];
    for (int i = 0; i < 6; i++) {
        tw[i] = gget(gf, "init.%s", MLP_PARAMS[i]);
        assert_non_null(tw[i]);
    }
    assert_non_null(tx);
    assert_non_null(ty);
    anvil_graph *g = NULL;
    assert_int_equal(anvil_graph_create(&g), ANVIL_OK);
    anvil_value feed[8], w[6];
    anvil_tensor *feeds[8];
    feed[0] = input_like(g, "x", tx);
    feed[1] = input_like(g, "labels", ty);
    feeds[0] = (anvil_tensor *)tx;
    feeds[1] = (anvil_tensor *)ty;
    for (int i = 0; i < 6; i++) {
        w[i] = feed[2 + i] = input_like(g, MLP_PARAMS[i], tw[i]);
        feeds[2 + i] = (anvil_tensor *)tw[i];
    }
    anvil_value h = anvil_relu(g, anvil_linear(g, feed[0], w[0], w[1]));
    h = anvil_tanh(g, anvil_linear(g, h, w[2], w[3]));
    anvil_value out = anvil_linear(g, h, w[4], w[5]);
    anvil_value loss = anvil_cross_entropy(g, out, feed[1], 0.0f);
    anvil_value fetch[8] = {out, loss};
    for (int i = 0; i < 6; i++) fetch[2 + i] = anvil_gradient(g, loss, w[i]);
    anvil_status s = anvil_graph_status(g);
    if (s != ANVIL_OK) {
        failed_call("building the MLP graph", s);
        anvil_graph_free(g);
        fail_msg("%s: graph construction failed", gf->file);
    }
    anvil_tensor *res[8] = {0};
    anvil_run_options opt = cpu_options();
    s = anvil_graph_run(g, &opt, 8, feed, feeds, 8, fetch, res);
    if (s != ANVIL_OK) {
        failed_call("anvil_graph_run (MLP)", s);
        anvil_graph_free(g);
        fail_msg("%s: run failed", gf->file);
    }
    fails += compare("step0.out", res[0], gget(gf, "step0.out"), OP_ATOL, OP_RTOL);
    /* loss[0] is the step-1 loss; compare its first element only */
    const anvil_tensor *tl = gget(gf, "loss");
    if (tl) {
        anvil_tensor *l0 = NULL;
        assert_int_equal(anvil_tensor_create(&l0, ANVIL_F32, 1, (const int64_t[]){1},
                                             anvil_tensor_cdata(tl)),
                         ANVIL_OK);
        fails += compare("loss[0] (graph)", res[1], l0, OP_ATOL, OP_RTOL);
        anvil_tensor_release(l0);
    } else {
        fails++;
    }
    for (int i = 0; i < 6; i++) {
        char key[64];
        snprintf(key, sizeof key, "step0.grad.%s", MLP_PARAMS[i]);
        fails += compare(key, res[2 + i], gget(gf, "%s", key), OP_ATOL, OP_RTOL);
    }
    for (int i = 0; i < 8; i++) anvil_tensor_release(res[i]);
    anvil_graph_free(g);
    assert_int_equal(fails, 0);
}

static anvil_model *build_mlp(void) {
    anvil_model *m = NULL;
    anvil_status s = anvil_model_create(&m, "parity_mlp", 1, (const int64_t[]){6});
    if (s != ANVIL_OK) {
        failed_call("anvil_model_create", s);
        return NULL;
    }
    const anvil_layer_type types[5] = {ANVIL_LAYER_LINEAR, ANVIL_LAYER_RELU, ANVIL_LAYER_LINEAR,
                                       ANVIL_LAYER_TANH, ANVIL_LAYER_LINEAR};
    const int64_t outs[5] = {16, 0, 16, 0, 4};
    for (int i = 0; i < 5; i++) {
        anvil_layer_desc d = anvil_layer_default(types[i]);
        if (types[i] == ANVIL_LAYER_LINEAR) d.out_features = outs[i];
        s = anvil_model_add(m, &d);
        if (s != ANVIL_OK) {
            failed_call("anvil_model_add", s);
            anvil_model_free(m);
            return NULL;
        }
    }
    return m;
}

/* A golden training run of `steps` steps through the model builder and a CPU trainer;
 * the run's own keys ("loss", "step<k>.<name>") carry the prefix `pre` ("" or "<case>."). */
static void mlp_train_cfg(const golden *gf, const char *pre, int steps, const anvil_trainer_config *tc);

static void mlp_train(const golden *gf, const char *pre, int steps, const anvil_optimizer_config *oc) {
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.optimizer = *oc;
    mlp_train_cfg(gf, pre, steps, &cfg);
}

/* The same, with a whole trainer config (clipping, groups, schedules); when the golden
 * has "<pre>grad_norm", the norm of every step is compared too. */
static void mlp_train_cfg(const golden *gf, const char *pre, int steps, const anvil_trainer_config *tc) {
    int fails = 0;
    anvil_model *m = build_mlp();
    assert_non_null(m);
    anvil_trainer_config cfg = *tc;
    cfg.device = ANVIL_DEVICE_CPU;
    cfg.loss = ANVIL_LOSS_CROSS_ENTROPY;
    cfg.label_smoothing = 0.0f;
    cfg.seed = 1;
    cfg.verbose = 0;
    char nkey[96];
    snprintf(nkey, sizeof nkey, "%sgrad_norm", pre);
    const anvil_tensor *tn = gfind(gf, nkey);
    const float *want_norm = tn ? anvil_tensor_cdata(tn) : NULL;
    anvil_trainer *t = NULL;
    anvil_status s = anvil_trainer_create(&t, m, &cfg);
    if (s != ANVIL_OK) {
        failed_call("anvil_trainer_create", s);
        anvil_model_free(m);
        fail();
    }
    for (int i = 0; i < 6; i++) {
        const anvil_tensor *w = gget(gf, "init.%s", MLP_PARAMS[i]);
        if (!w) {
            fails++;
            continue;
        }
        CALL(fails, MLP_PARAMS[i], anvil_trainer_set_param(t, MLP_PARAMS[i], w));
    }
    if (fails) goto done;

    /* the output before any step (evaluation mode; the MLP has no dropout) */
    anvil_tensor *pred = NULL;
    s = anvil_predict(t, gget(gf, "x.0"), &pred);
    if (s != ANVIL_OK)
        fails += failed_call("anvil_predict", s);
    else
        fails += compare("step0.out (predict)", pred, gget(gf, "step0.out"), OP_ATOL, OP_RTOL);
    anvil_tensor_release(pred);

    const anvil_tensor *tl = gget(gf, "%sloss", pre);
    if (!tl) {
        fails++;
        goto done;
    }
    const float *want_loss = anvil_tensor_cdata(tl);
    for (int k = 0; k < steps; k++) {
        const anvil_tensor *x = gget(gf, "x.%d", k), *y = gget(gf, "y.%d", k);
        if (!x || !y) {
            fails++;
            break;
        }
        s = anvil_train_step(t, x, y);
        if (s != ANVIL_OK) {
            char what[64];
            snprintf(what, sizeof what, "anvil_train_step %d", k + 1);
            fails += failed_call(what, s);
            break;
        }
        float loss = NAN;
        CALL(fails, "anvil_trainer_last_loss", anvil_trainer_last_loss(t, &loss));
        double err = fabs((double)loss - want_loss[k]);
        double tol = MLP_ATOL + MLP_RTOL * fabs(want_loss[k]);
        if (!(err <= tol)) {
            print_error("loss of step %d: got %.9g, want %.9g, |diff| %.3g > %.3g\n", k + 1,
                        (double)loss, (double)want_loss[k], err, tol);
            fails++;
        } else if (verbose()) {
            print_message("  ok loss of step %-2d got %.9g want %.9g |diff| %.3g\n", k + 1,
                          (double)loss, (double)want_loss[k], err);
        }
        if (want_norm) {
            float norm = NAN;
            CALL(fails, "anvil_trainer_last_grad_norm", anvil_trainer_last_grad_norm(t, &norm));
            double nerr = fabs((double)norm - want_norm[k]), ntol = MLP_ATOL + MLP_RTOL * fabs(want_norm[k]);
            if (!(nerr <= ntol)) {
                print_error("gradient norm of step %d: got %.9g, want %.9g\n", k + 1, (double)norm,
                            (double)want_norm[k]);
                fails++;
            }
        }
        if (k + 1 == 1 || k + 1 == 10 || k + 1 == steps) {
            for (int i = 0; i < 6; i++) {
                char key[128];
                snprintf(key, sizeof key, "%sstep%d.%s", pre, k + 1, MLP_PARAMS[i]);
                anvil_tensor *p = NULL;
                s = anvil_trainer_get_param(t, MLP_PARAMS[i], &p);
                if (s != ANVIL_OK) {
                    fails += failed_call(key, s);
                    continue;
                }
                fails += compare(key, p, gget(gf, "%s", key), MLP_ATOL, MLP_RTOL);
                anvil_tensor_release(p);
            }
        }
    }
    if (anvil_trainer_step_count(t) != steps) {
        print_error("step count %lld, want %d\n", (long long)anvil_trainer_step_count(t),
                    steps);
        fails++;
    }
done:
    anvil_trainer_free(t);
    anvil_model_free(m);
    assert_int_equal(fails, 0);
}

static anvil_optimizer_config sgd_config(void) {
    /* torch.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3) */
    anvil_optimizer_config c = anvil_optimizer_default_config(ANVIL_OPT_SGD);
    c.lr = 0.05f;
    c.momentum = 0.9f;
    c.dampening = 0.0f;
    c.nesterov = true;
    c.weight_decay = 1e-3f;
    return c;
}

static anvil_optimizer_config adamw_config(void) {
    /* torch.optim.AdamW(lr=0.01, betas=(0.9, 0.99), eps=1e-7, weight_decay=0.05) */
    anvil_optimizer_config c = anvil_optimizer_default_config(ANVIL_OPT_ADAMW);
    c.lr = 0.01f;
    c.beta1 = 0.9f;
    c.beta2 = 0.99f;
    c.eps = 1e-7f;
    c.weight_decay = 0.05f;
    return c;
}

static void test_mlp_sgd_forward_backward(void **state) {
    (void)state;
    mlp_forward_backward(&G_SGD);
}

static void test_mlp_adamw_forward_backward(void **state) {
    (void)state;
    mlp_forward_backward(&G_ADAMW);
}

static void test_mlp_sgd(void **state) {
    (void)state;
    anvil_optimizer_config c = sgd_config();
    mlp_train(&G_SGD, "", MLP_STEPS, &c);
}

static void test_mlp_adamw(void **state) {
    (void)state;
    anvil_optimizer_config c = adamw_config();
    mlp_train(&G_ADAMW, "", MLP_STEPS, &c);
}

/* ------------------------------------------------------------ every other optimizer */

#define OPTIM_STEPS 30

typedef struct {
    const char *name; /* the case of make_golden.py's OPTIM_CASES */
    anvil_optimizer_config (*config)(void);
} optim_case;

static anvil_optimizer_config kind(anvil_optimizer_kind k) {
    return anvil_optimizer_default_config(k);
}

/* Each mirrors its torch.optim call in make_golden.py (foreach=False there). */
static anvil_optimizer_config c_sgd_maximize(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_SGD);
    c.lr = 0.01f, c.momentum = 0.9f, c.weight_decay = 1e-3f, c.maximize = true;
    return c;
}
static anvil_optimizer_config c_adam_amsgrad(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADAM);
    c.lr = 0.01f, c.weight_decay = 1e-2f, c.amsgrad = true;
    return c;
}
static anvil_optimizer_config c_adam_maximize(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADAM);
    c.lr = 0.005f, c.maximize = true;
    return c;
}
static anvil_optimizer_config c_adamw_amsgrad_maximize(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADAMW);
    c.lr = 0.01f, c.beta2 = 0.99f, c.eps = 1e-7f, c.weight_decay = 0.05f;
    c.amsgrad = true, c.maximize = true;
    return c;
}
static anvil_optimizer_config c_rmsprop(void) { return kind(ANVIL_OPT_RMSPROP); }
static anvil_optimizer_config c_rmsprop_momentum(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_RMSPROP);
    c.lr = 0.005f, c.momentum = 0.9f;
    return c;
}
static anvil_optimizer_config c_rmsprop_centered(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_RMSPROP);
    c.lr = 0.005f, c.centered = true;
    return c;
}
static anvil_optimizer_config c_rmsprop_all(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_RMSPROP);
    c.lr = 0.005f, c.alpha = 0.9f, c.eps = 1e-6f, c.weight_decay = 1e-3f;
    c.momentum = 0.8f, c.centered = true;
    return c;
}
static anvil_optimizer_config c_rmsprop_maximize(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_RMSPROP);
    c.lr = 0.002f, c.maximize = true;
    return c;
}
static anvil_optimizer_config c_adagrad(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADAGRAD);
    c.lr = 0.05f;
    return c;
}
static anvil_optimizer_config c_adagrad_all(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADAGRAD);
    c.lr = 0.05f, c.lr_decay = 0.01f, c.weight_decay = 1e-3f;
    c.initial_accumulator_value = 0.1f, c.eps = 1e-8f;
    return c;
}
static anvil_optimizer_config c_adagrad_maximize(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADAGRAD);
    c.lr = 0.01f, c.maximize = true;
    return c;
}
static anvil_optimizer_config c_adadelta(void) { return kind(ANVIL_OPT_ADADELTA); }
static anvil_optimizer_config c_adadelta_all(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADADELTA);
    c.lr = 0.5f, c.rho = 0.95f, c.eps = 1e-5f, c.weight_decay = 1e-3f;
    return c;
}
static anvil_optimizer_config c_adadelta_maximize(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_ADADELTA);
    c.maximize = true;
    return c;
}
static anvil_optimizer_config c_nadam(void) { return kind(ANVIL_OPT_NADAM); }
static anvil_optimizer_config c_nadam_all(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_NADAM);
    c.lr = 0.01f, c.beta1 = 0.85f, c.beta2 = 0.99f, c.eps = 1e-7f;
    c.weight_decay = 1e-2f, c.momentum_decay = 5e-3f;
    return c;
}
static anvil_optimizer_config c_nadam_decoupled(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_NADAM);
    c.lr = 0.01f, c.weight_decay = 0.05f, c.decoupled_weight_decay = true;
    return c;
}
static anvil_optimizer_config c_nadam_maximize(void) {
    anvil_optimizer_config c = kind(ANVIL_OPT_NADAM);
    c.lr = 0.002f, c.maximize = true;
    return c;
}

#define OPTIM_CASE(n) {#n, c_##n}
static const optim_case OPTIM_CASES[] = {
    OPTIM_CASE(sgd_maximize),     OPTIM_CASE(adam_amsgrad),      OPTIM_CASE(adam_maximize),
    OPTIM_CASE(adamw_amsgrad_maximize), OPTIM_CASE(rmsprop),     OPTIM_CASE(rmsprop_momentum),
    OPTIM_CASE(rmsprop_centered), OPTIM_CASE(rmsprop_all),       OPTIM_CASE(rmsprop_maximize),
    OPTIM_CASE(adagrad),          OPTIM_CASE(adagrad_all),       OPTIM_CASE(adagrad_maximize),
    OPTIM_CASE(adadelta),         OPTIM_CASE(adadelta_all),      OPTIM_CASE(adadelta_maximize),
    OPTIM_CASE(nadam),            OPTIM_CASE(nadam_all),         OPTIM_CASE(nadam_decoupled),
    OPTIM_CASE(nadam_maximize),
};
#define N_OPTIM (sizeof OPTIM_CASES / sizeof OPTIM_CASES[0])

static void test_mlp_optim(void **state) {
    const optim_case *oc = *state;
    char pre[64];
    snprintf(pre, sizeof pre, "%s.", oc->name);
    anvil_optimizer_config c = oc->config();
    mlp_train(&G_OPTIM, pre, OPTIM_STEPS, &c);
}

/* ------------------------------------------------ schedules, clipping, groups */

/* The MLP's biases (1-D) form group 1, as make_sched.py's groups(). */
static anvil_param_group bias_group(anvil_optimizer_config o) { return anvil_param_group_default(NULL, true, &o); }

typedef struct {
    const char *name;
    anvil_schedule_config (*sched)(void);
} sched_case;

static anvil_schedule_config s_step(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_STEP);
    s.step_size = 7, s.gamma = 0.5f;
    return s;
}
static anvil_schedule_config s_multistep(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_MULTISTEP);
    s.n_milestones = 3, s.milestones[0] = 5, s.milestones[1] = 12, s.milestones[2] = 30, s.gamma = 0.3f;
    return s;
}
static anvil_schedule_config s_exponential(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_EXPONENTIAL);
    s.gamma = 0.93f;
    return s;
}
static anvil_schedule_config s_cosine(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_COSINE);
    s.t_max = 25, s.eta_min = 0.001f;
    return s;
}
static anvil_schedule_config s_cosine_restarts(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_COSINE_RESTARTS);
    s.t_0 = 5, s.t_mult = 2, s.eta_min = 1e-4f;
    return s;
}
static anvil_schedule_config s_cosine_restarts_mult1(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_COSINE_RESTARTS);
    s.t_0 = 7;
    return s;
}
static anvil_schedule_config s_one_cycle(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_ONE_CYCLE);
    s.total_steps = 60;
    return s;
}
static anvil_schedule_config s_one_cycle_three(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_ONE_CYCLE);
    s.total_steps = 60, s.pct_start = 0.25f, s.anneal_linear = true, s.div_factor = 10.0f;
    s.final_div_factor = 100.0f, s.three_phase = true;
    return s;
}
static anvil_schedule_config s_warmup_cosine(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_COSINE);
    s.t_max = 50, s.warmup = 10, s.warmup_start_factor = 0.1f;
    return s;
}
static anvil_schedule_config s_warmup_step(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_STEP);
    s.step_size = 10, s.gamma = 0.5f, s.warmup = 4, s.warmup_start_factor = 0.25f;
    return s;
}
static anvil_schedule_config s_epoch_step(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_STEP);
    s.step_size = 2, s.gamma = 0.5f, s.steps_per_epoch = 3;
    return s;
}
static anvil_schedule_config s_epoch_warmup_exp(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_EXPONENTIAL);
    s.gamma = 0.8f, s.warmup = 3, s.warmup_start_factor = 0.5f, s.steps_per_epoch = 3;
    return s;
}
static anvil_schedule_config s_plateau(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_PLATEAU);
    s.factor = 0.5f, s.patience = 2, s.threshold = 0.01f, s.cooldown = 1, s.min_lr = 0.002f;
    return s;
}
static anvil_schedule_config s_plateau_max_abs(void) {
    anvil_schedule_config s = anvil_schedule_default_config(ANVIL_SCHED_PLATEAU);
    s.mode_max = true, s.factor = 0.3f, s.patience = 1, s.threshold = 0.05f, s.threshold_abs = true;
    return s;
}

#define SCHED_CASE(n) {#n, s_##n}
static const sched_case SCHED_CASES[] = {
    SCHED_CASE(step), SCHED_CASE(multistep), SCHED_CASE(exponential), SCHED_CASE(cosine),
    SCHED_CASE(cosine_restarts), SCHED_CASE(cosine_restarts_mult1), SCHED_CASE(one_cycle),
    SCHED_CASE(one_cycle_three), SCHED_CASE(warmup_cosine), SCHED_CASE(warmup_step),
    SCHED_CASE(epoch_step), SCHED_CASE(epoch_warmup_exp), SCHED_CASE(plateau), SCHED_CASE(plateau_max_abs),
};
#define N_SCHED (sizeof SCHED_CASES / sizeof SCHED_CASES[0])
#define SCHED_STEPS 60

/* The lr of both groups before each of 60 steps against torch.optim.lr_scheduler's
 * (float32 rounding of torch's doubles: 1e-6 relative). */
static void test_sched(void **state) {
    const sched_case *sc = *state;
    anvil_model *m = build_mlp();
    assert_non_null(m);
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = ANVIL_DEVICE_CPU, cfg.verbose = 0;
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_SGD);
    cfg.optimizer.lr = 0.1f;
    anvil_optimizer_config bo = cfg.optimizer;
    bo.lr = 0.02f;
    anvil_param_group pg = bias_group(bo);
    cfg.n_param_groups = 1, cfg.param_groups = &pg;
    cfg.schedule = sc->sched();
    anvil_trainer *t = NULL;
    CHECK_OK(anvil_trainer_create(&t, m, &cfg));
    assert_int_equal(anvil_trainer_param_groups(t), 2);
    const anvil_tensor *want = gget(&G_SCHED, "%s.lr", sc->name);
    assert_non_null(want);
    const float *w = anvil_tensor_cdata(want);
    char mkey[96];
    snprintf(mkey, sizeof mkey, "%s.metric", sc->name);
    const anvil_tensor *mt = gfind(&G_SCHED, mkey);
    int fails = 0;
    for (int k = 0; k < SCHED_STEPS; k++) {
        for (int gi = 0; gi < 2; gi++) {
            float lr = NAN;
            CHECK_OK(anvil_trainer_lr(t, gi, &lr));
            double want_lr = w[2 * k + gi];
            if (!(fabs((double)lr - want_lr) <= 1e-6 * fabs(want_lr) + 1e-12)) {
                print_error("%s: group %d, step %d: lr %.9g, torch %.9g\n", sc->name, gi, k, (double)lr, want_lr);
                fails++;
            }
        }
        CHECK_OK(anvil_train_step(t, gget(&G_OPTIM, "x.%d", k % 30), gget(&G_OPTIM, "y.%d", k % 30)));
        if (mt)
            CHECK_OK(anvil_trainer_schedule_metric(t, ((const float *)anvil_tensor_cdata(mt))[k]));
    }
    anvil_trainer_free(t);
    anvil_model_free(m);
    assert_int_equal(fails, 0);
}

typedef struct {
    const char *name;
    anvil_trainer_config (*config)(anvil_param_group *pg);
} train2_case;

static anvil_trainer_config t2_base(anvil_optimizer_kind k, float lr) {
    anvil_trainer_config c = anvil_trainer_default_config();
    c.optimizer = anvil_optimizer_default_config(k);
    c.optimizer.lr = lr;
    return c;
}
static anvil_trainer_config t_clip_norm(anvil_param_group *pg) {
    (void)pg;
    anvil_trainer_config c = t2_base(ANVIL_OPT_SGD, 0.1f);
    c.optimizer.momentum = 0.9f, c.clip_grad_norm = 0.5f;
    return c;
}
static anvil_trainer_config t_clip_norm_inf(anvil_param_group *pg) {
    (void)pg;
    anvil_trainer_config c = t2_base(ANVIL_OPT_ADAM, 0.01f);
    c.clip_grad_norm = 0.05f, c.clip_norm_type = INFINITY;
    return c;
}
static anvil_trainer_config t_clip_norm_p1(anvil_param_group *pg) {
    (void)pg;
    anvil_trainer_config c = t2_base(ANVIL_OPT_SGD, 0.05f);
    c.clip_grad_norm = 1.0f, c.clip_norm_type = 1.0f;
    return c;
}
static anvil_trainer_config t_clip_value(anvil_param_group *pg) {
    (void)pg;
    anvil_trainer_config c = t2_base(ANVIL_OPT_SGD, 0.1f);
    c.clip_grad_value = 0.02f;
    return c;
}
static anvil_trainer_config t_clip_both(anvil_param_group *pg) {
    (void)pg;
    anvil_trainer_config c = t2_base(ANVIL_OPT_ADAM, 0.01f);
    c.clip_grad_value = 0.05f, c.clip_grad_norm = 0.3f;
    return c;
}
static anvil_trainer_config t_groups_adamw(anvil_param_group *pg) {
    anvil_trainer_config c = t2_base(ANVIL_OPT_ADAMW, 0.01f);
    c.optimizer.weight_decay = 0.1f;
    anvil_optimizer_config b = c.optimizer;
    b.lr = 0.02f, b.weight_decay = 0.0f;
    *pg = bias_group(b);
    c.n_param_groups = 1, c.param_groups = pg;
    return c;
}
static anvil_trainer_config t_groups_nadam(anvil_param_group *pg) {
    anvil_trainer_config c = t2_base(ANVIL_OPT_NADAM, 0.01f);
    anvil_optimizer_config b = c.optimizer;
    b.lr = 0.005f, b.momentum_decay = 1e-2f;
    *pg = bias_group(b);
    c.n_param_groups = 1, c.param_groups = pg;
    return c;
}
static anvil_trainer_config t_groups_sgd_sched_clip(anvil_param_group *pg) {
    anvil_trainer_config c = t2_base(ANVIL_OPT_SGD, 0.2f);
    c.optimizer.momentum = 0.9f, c.optimizer.weight_decay = 1e-3f;
    anvil_optimizer_config b = anvil_optimizer_default_config(ANVIL_OPT_SGD);
    b.lr = 0.05f, b.momentum = 0.5f;
    *pg = bias_group(b);
    c.n_param_groups = 1, c.param_groups = pg;
    c.schedule = anvil_schedule_default_config(ANVIL_SCHED_COSINE);
    c.schedule.t_max = 25, c.schedule.eta_min = 0.001f, c.schedule.warmup = 5, c.schedule.warmup_start_factor = 0.2f;
    c.clip_grad_norm = 1.0f;
    return c;
}

#define TRAIN2_CASE(n) {#n, t_##n}
static const train2_case TRAIN2_CASES[] = {
    TRAIN2_CASE(clip_norm), TRAIN2_CASE(clip_norm_inf), TRAIN2_CASE(clip_norm_p1), TRAIN2_CASE(clip_value),
    TRAIN2_CASE(clip_both), TRAIN2_CASE(groups_adamw), TRAIN2_CASE(groups_nadam),
    TRAIN2_CASE(groups_sgd_sched_clip),
};
#define N_TRAIN2 (sizeof TRAIN2_CASES / sizeof TRAIN2_CASES[0])

static void test_train2(void **state) {
    const train2_case *tc = *state;
    char pre[64];
    snprintf(pre, sizeof pre, "%s.", tc->name);
    anvil_param_group pg;
    anvil_trainer_config c = tc->config(&pg);
    mlp_train_cfg(&G_SCHED, pre, 30, &c);
}

/* torch.optim.LBFGS, closure-style, full batch (x.0..x.3 as one batch of 32): the loss of
 * each step (the first closure's) and the parameters after steps 1 and 4 (12 L-BFGS
 * iterations: the history ring of lbfgs_wolfe (4) wraps), with and without the strong-
 * Wolfe line search.  Past ~12 iterations float32 and float64 L-BFGS part ways on this
 * MLP (make_sched.py prints the drift), so the golden stops there. */
static anvil_tensor *cat4(const char *key) {
    const anvil_tensor *p[4];
    for (int i = 0; i < 4; i++) p[i] = gget(&G_SCHED, "%s.%d", key, i);
    int64_t shape[ANVIL_MAX_DIMS];
    int nd = anvil_tensor_ndim(p[0]);
    for (int d = 0; d < nd; d++) shape[d] = anvil_tensor_shape(p[0])[d];
    shape[0] *= 4;
    anvil_tensor *t = NULL;
    CHECK_OK(anvil_tensor_create(&t, anvil_tensor_dtype(p[0]), nd, shape, NULL));
    size_t part = anvil_tensor_nbytes(p[0]);
    for (int i = 0; i < 4; i++) memcpy((char *)anvil_tensor_data(t) + i * part, anvil_tensor_cdata(p[i]), part);
    return t;
}

static void lbfgs_case(const char *name, bool wolfe) {
    anvil_model *m = build_mlp();
    assert_non_null(m);
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = ANVIL_DEVICE_CPU, cfg.verbose = 0;
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_LBFGS);
    cfg.optimizer.max_iter = 3;
    cfg.optimizer.history_size = wolfe ? 4 : 10;
    cfg.optimizer.strong_wolfe = wolfe;
    anvil_trainer *t = NULL;
    CHECK_OK(anvil_trainer_create(&t, m, &cfg));
    for (int i = 0; i < 6; i++) CHECK_OK(anvil_trainer_set_param(t, MLP_PARAMS[i], gget(&G_SCHED, "init.%s", MLP_PARAMS[i])));
    anvil_tensor *x = cat4("x"), *y = cat4("y");
    const float *want = anvil_tensor_cdata(gget(&G_SCHED, "%s.loss", name));
    int fails = 0;
    for (int k = 0; k < 4; k++) {
        CHECK_OK(anvil_train_step(t, x, y));
        float loss;
        CHECK_OK(anvil_trainer_last_loss(t, &loss));
        if (!(fabs((double)loss - want[k]) <= MLP_ATOL + MLP_RTOL * fabs(want[k]))) {
            print_error("%s: loss of step %d %.9g, torch %.9g\n", name, k + 1, (double)loss, (double)want[k]);
            fails++;
        }
        if (k + 1 == 1 || k + 1 == 4)
            for (int i = 0; i < 6; i++) {
                char key[128];
                snprintf(key, sizeof key, "%s.step%d.%s", name, k + 1, MLP_PARAMS[i]);
                anvil_tensor *p = NULL;
                CHECK_OK(anvil_trainer_get_param(t, MLP_PARAMS[i], &p));
                fails += compare(key, p, gget(&G_SCHED, "%s", key), MLP_ATOL, MLP_RTOL);
                anvil_tensor_release(p);
            }
    }
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_trainer_free(t);
    anvil_model_free(m);
    assert_int_equal(fails, 0);
}

static void test_lbfgs(void **state) {
    (void)state;
    lbfgs_case("lbfgs", false);
}

static void test_lbfgs_wolfe(void **state) {
    (void)state;
    lbfgs_case("lbfgs_wolfe", true);
}

/* Bad schedule / clipping / group settings are errors that name the option. */
static void test_sched_errors(void **state) {
    (void)state;
    anvil_model *m = build_mlp();
    assert_non_null(m);
    anvil_trainer *t = NULL;
    static const struct { const char *what, *msg; } bad[] = {
        {"clip_grad_norm", "clip_grad_norm"}, {"clip_grad_value", "clip_grad_value"},
        {"clip_norm_type", "clip_norm_type"}, {"step_size", "step_size"}, {"milestones", "milestones"},
        {"t_max", "T_max"}, {"one_cycle", "total_steps"}, {"pct_start", "pct_start"},
        {"warmup_plateau", "warm-up"}, {"factor", "factor"}, {"groups", "parameter groups"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        anvil_trainer_config c = anvil_trainer_default_config();
        c.device = ANVIL_DEVICE_CPU, c.verbose = 0;
        const char *w = bad[i].what;
        if (!strcmp(w, "clip_grad_norm")) c.clip_grad_norm = -1.0f;
        if (!strcmp(w, "clip_grad_value")) c.clip_grad_value = NAN;
        if (!strcmp(w, "clip_norm_type")) c.clip_grad_norm = 1.0f, c.clip_norm_type = 0.0f;
        if (!strcmp(w, "step_size")) c.schedule = anvil_schedule_default_config(ANVIL_SCHED_STEP), c.schedule.step_size = 0;
        if (!strcmp(w, "milestones")) {
            c.schedule = anvil_schedule_default_config(ANVIL_SCHED_MULTISTEP);
            c.schedule.n_milestones = 2, c.schedule.milestones[0] = 5, c.schedule.milestones[1] = 5;
        }
        if (!strcmp(w, "t_max")) c.schedule = anvil_schedule_default_config(ANVIL_SCHED_COSINE), c.schedule.t_max = 0;
        if (!strcmp(w, "one_cycle")) c.schedule = anvil_schedule_default_config(ANVIL_SCHED_ONE_CYCLE);
        if (!strcmp(w, "pct_start")) {
            c.schedule = anvil_schedule_default_config(ANVIL_SCHED_ONE_CYCLE);
            c.schedule.total_steps = 100, c.schedule.pct_start = 1.5f;
        }
        if (!strcmp(w, "warmup_plateau")) c.schedule = anvil_schedule_default_config(ANVIL_SCHED_PLATEAU), c.schedule.warmup = 3;
        if (!strcmp(w, "factor")) c.schedule = anvil_schedule_default_config(ANVIL_SCHED_PLATEAU), c.schedule.factor = 1.0f;
        if (!strcmp(w, "groups")) c.n_param_groups = ANVIL_MAX_PARAM_GROUPS;
        assert_int_equal(anvil_trainer_create(&t, m, &c), ANVIL_ERR_INVALID_ARG);
        assert_null(t);
        if (!strstr(anvil_last_error(), bad[i].msg))
            fail_msg("%s: message '%s' lacks '%s'", w, anvil_last_error(), bad[i].msg);
    }
    /* a metric needs reduce-on-plateau; the grad norm needs clipping */
    anvil_trainer_config c = anvil_trainer_default_config();
    c.device = ANVIL_DEVICE_CPU, c.verbose = 0;
    CHECK_OK(anvil_trainer_create(&t, m, &c));
    assert_int_equal(anvil_trainer_schedule_metric(t, 1.0), ANVIL_ERR_STATE);
    float norm;
    assert_int_equal(anvil_trainer_last_grad_norm(t, &norm), ANVIL_ERR_STATE);
    assert_int_equal(anvil_trainer_set_group_lr(t, 1, 0.1f), ANVIL_ERR_INVALID_ARG);
    assert_int_equal(anvil_trainer_set_lr(t, -1.0f), ANVIL_ERR_INVALID_ARG);
    anvil_schedule_kind k;
    CHECK_OK(anvil_schedule_parse("cosine_restarts", &k));
    assert_int_equal(k, ANVIL_SCHED_COSINE_RESTARTS);
    assert_int_equal(anvil_schedule_parse("linear", &k), ANVIL_ERR_INVALID_ARG);
    anvil_trainer_free(t);
    anvil_model_free(m);
}

int main(void) {
    static struct CMUnitTest tests[N_CASES + 4 + N_OPTIM + N_SCHED + N_TRAIN2 + 3];
    tests[N_CASES + 4 + N_OPTIM + N_SCHED + N_TRAIN2] = (struct CMUnitTest)cmocka_unit_test(test_sched_errors);
    tests[N_CASES + 4 + N_OPTIM + N_SCHED + N_TRAIN2 + 1] = (struct CMUnitTest)cmocka_unit_test(test_lbfgs);
    tests[N_CASES + 4 + N_OPTIM + N_SCHED + N_TRAIN2 + 2] = (struct CMUnitTest)cmocka_unit_test(test_lbfgs_wolfe);
    static char snames[N_SCHED][64], tnames[N_TRAIN2][64];
    for (size_t i = 0; i < N_SCHED; i++) {
        snprintf(snames[i], sizeof snames[i], "sched_%s", SCHED_CASES[i].name);
        tests[N_CASES + 4 + N_OPTIM + i] = (struct CMUnitTest){snames[i], test_sched, NULL, NULL,
                                                                (void *)&SCHED_CASES[i]};
    }
    for (size_t i = 0; i < N_TRAIN2; i++) {
        snprintf(tnames[i], sizeof tnames[i], "train2_%s", TRAIN2_CASES[i].name);
        tests[N_CASES + 4 + N_OPTIM + N_SCHED + i] = (struct CMUnitTest){tnames[i], test_train2, NULL, NULL,
                                                                          (void *)&TRAIN2_CASES[i]};
    }
    static char names[N_OPTIM][64];
    for (size_t i = 0; i < N_OPTIM; i++) {
        snprintf(names[i], sizeof names[i], "mlp_optim_%s", OPTIM_CASES[i].name);
        tests[N_CASES + 4 + i] = (struct CMUnitTest){names[i], test_mlp_optim, NULL, NULL,
                                                      (void *)&OPTIM_CASES[i]};
    }

    for (size_t i = 0; i < N_CASES; i++) {
        tests[i] = (struct CMUnitTest){CASES[i].key, test_op_case, NULL, NULL,
                                       (void *)&CASES[i]};
    }
    tests[N_CASES + 0] = (struct CMUnitTest)cmocka_unit_test(test_mlp_sgd_forward_backward);
    tests[N_CASES + 1] = (struct CMUnitTest)cmocka_unit_test(test_mlp_adamw_forward_backward);
    tests[N_CASES + 2] = (struct CMUnitTest)cmocka_unit_test(test_mlp_sgd);
    tests[N_CASES + 3] = (struct CMUnitTest)cmocka_unit_test(test_mlp_adamw);
    return cmocka_run_group_tests_name("parity", tests, load_golden, free_golden);
}
