/* test_model_json.c — JSON model files (SPEC §1): the SPEC's structure with the layers
 * supported today, the example files, every option, and every kind of error (each must
 * name the file, the layer and the option at fault). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <unistd.h>

#include "anvil.h"
#include "testutil.h"
#include "graph/graph.h"

/* The source's parameter node by state_dict name, or NULL. */
static const anvil_node *param(anvil_model *m, const char *name)
{
    anvil_graph *g = anvil_model_graph(m);
    for (int v = 0; v < g->n; v++)
        if (g->nodes[v].op == OP_PARAM && g->nodes[v].name && !strcmp(g->nodes[v].name, name))
            return &g->nodes[v];
    return NULL;
}

/* The k-th node (0-based) with op `op`, or NULL. */
static const anvil_node *nth_op(anvil_model *m, anvil_op op, int k)
{
    anvil_graph *g = anvil_model_graph(m);
    for (int v = 0; v < g->n; v++)
        if (g->nodes[v].op == op && k-- == 0)
            return &g->nodes[v];
    return NULL;
}

static void assert_param_shape(anvil_model *m, const char *name, int64_t d0, int64_t d1)
{
    const anvil_node *n = param(m, name);
    if (!n)
        fail_msg("no parameter named '%s'", name);
    assert_int_equal(n->ndim, d1 ? 2 : 1);
    assert_int_equal(n->shape[0], d0);
    if (d1)
        assert_int_equal(n->shape[1], d1);
}

static void assert_output_shape(anvil_model *m, int64_t features)
{
    int64_t s[ANVIL_MAX_DIMS];
    int nd = anvil_value_shape(anvil_model_graph(m), anvil_model_output(m), s);
    assert_int_equal(nd, 2);
    assert_int_equal(s[0], ANVIL_BATCH);
    assert_int_equal(s[1], features);
}

/* ---------------------------------------------------------------- valid files */

static const char *spec_like =
    "{\n"
    "  \"name\": \"fashion-mlp\",\n"
    "  \"input\": [1, 28, 28],\n"
    "  \"layers\": [\n"
    "    {\"type\": \"flatten\"},\n"
    "    {\"type\": \"linear\", \"out_features\": 128, \"name\": \"fc1\"},\n"
    "    {\"type\": \"relu\"},\n"
    "    {\"type\": \"dropout\", \"p\": 0.25},\n"
    "    {\"type\": \"dense\", \"units\": 64, \"bias\": false},\n"
    "    {\"type\": \"leaky_relu\", \"negative_slope\": 0.2},\n"
    "    {\"type\": \"linear\", \"out_features\": 32},\n"
    "    {\"type\": \"elu\", \"alpha\": 0.5},\n"
    "    {\"type\": \"linear\", \"out_features\": 32, \"bias\": true},\n"
    "    {\"type\": \"gelu\", \"approximate\": \"tanh\"},\n"
    "    {\"type\": \"swish\"},\n"
    "    {\"type\": \"sigmoid\"},\n"
    "    {\"type\": \"tanh\"},\n"
    "    {\"type\": \"gelu\"},\n"
    "    {\"type\": \"linear\", \"out_features\": 10},\n"
    "    {\"type\": \"softmax\", \"dim\": 1},\n"
    "    {\"type\": \"log_softmax\", \"dim\": 1}\n"
    "  ]\n"
    "}\n";

static void test_spec_structure(void **state)
{
    (void)state;
    anvil_model *m = NULL;
    assert_int_equal(anvil_model_parse_json(&m, spec_like, "spec.json"), ANVIL_OK);
    assert_string_equal(anvil_model_name(m), "fashion-mlp");
    int64_t in[ANVIL_MAX_DIMS];
    assert_int_equal(anvil_model_input_shape(m, in), 3);
    assert_true(in[0] == 1 && in[1] == 28 && in[2] == 28);
    assert_output_shape(m, 10);
    /* state_dict names: the layer's name, else its index in "layers" */
    assert_param_shape(m, "fc1.weight", 128, 784);
    assert_param_shape(m, "fc1.bias", 128, 0);
    assert_param_shape(m, "4.weight", 64, 128);
    assert_null(param(m, "4.bias")); /* bias: false */
    assert_param_shape(m, "6.weight", 32, 64);
    assert_param_shape(m, "8.bias", 32, 0);
    assert_param_shape(m, "14.weight", 10, 32);
    assert_int_equal(anvil_model_param_count(m),
                     784 * 128 + 128 + 128 * 64 + 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10);
    /* every option reached the graph */
    const anvil_node *n = nth_op(m, OP_DROPOUT, 0);
    assert_non_null(n);
    assert_true(n->fa[0] == 0.25f);
    int acts[8] = {ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_GELU_TANH, ACT_SILU, ACT_SIGMOID,
                   ACT_TANH, ACT_GELU};
    for (int k = 0; k < 8; k++) {
        n = nth_op(m, OP_ACT, k);
        assert_non_null(n);
        assert_int_equal(n->ia[0], acts[k]);
    }
    assert_true(nth_op(m, OP_ACT, 1)->fa[0] == 0.2f);
    assert_true(nth_op(m, OP_ACT, 2)->fa[0] == 0.5f);
    assert_non_null(nth_op(m, OP_SOFTMAX, 0));
    assert_int_equal(nth_op(m, OP_SOFTMAX, 0)->ia[0], 1);
    assert_non_null(nth_op(m, OP_LOG_SOFTMAX, 0));
    anvil_model_free(m);
}

static void test_defaults(void **state)
{
    (void)state;
    /* no name: the origin's base name; PyTorch's defaults for every option */
    const char *text = "{\"input\": [6], \"layers\": [{\"type\": \"linear\", \"units\": 4},"
                       "{\"type\": \"leaky_relu\"}, {\"type\": \"elu\"}, {\"type\": \"dropout\"},"
                       "{\"type\": \"log_softmax\"}]}";
    anvil_model *m = NULL;
    assert_int_equal(anvil_model_parse_json(&m, text, "/some/dir/tiny-net.json"), ANVIL_OK);
    assert_string_equal(anvil_model_name(m), "tiny-net");
    assert_param_shape(m, "0.weight", 4, 6);
    assert_param_shape(m, "0.bias", 4, 0);
    assert_true(nth_op(m, OP_ACT, 0)->fa[0] == 0.01f);
    assert_true(nth_op(m, OP_ACT, 1)->fa[0] == 1.0f);
    assert_true(nth_op(m, OP_DROPOUT, 0)->fa[0] == 0.5f);
    assert_output_shape(m, 4);
    anvil_model_free(m);
}

static void test_example_files(void **state)
{
    (void)state;
    anvil_model *m = NULL;
    assert_int_equal(anvil_model_load_json(&m, ANVIL_SOURCE_DIR "/examples/models/mlp.json"),
                     ANVIL_OK);
    assert_string_equal(anvil_model_name(m), "mlp");
    assert_int_equal(anvil_model_param_count(m), 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10);
    assert_param_shape(m, "1.weight", 512, 784);
    assert_param_shape(m, "3.weight", 512, 512);
    assert_param_shape(m, "5.weight", 10, 512);
    assert_output_shape(m, 10);
    anvil_model_free(m);

    assert_int_equal(anvil_model_load_json(&m, ANVIL_SOURCE_DIR "/examples/models/residual.json"),
                     ANVIL_OK);
    assert_param_shape(m, "a.weight", 128, 784);
    assert_param_shape(m, "b.weight", 128, 128);
    assert_param_shape(m, "6.weight", 10, 128);
    assert_int_equal(anvil_model_param_count(m), 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10);
    assert_non_null(nth_op(m, OP_ADD, 0)); /* the residual sum */
    assert_output_shape(m, 10);
    anvil_model_free(m);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/anvil_test_model_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, spec_like, strlen(spec_like)), (ssize_t)strlen(spec_like));
    close(fd);
    anvil_model *m = NULL;
    assert_int_equal(anvil_model_load_json(&m, path), ANVIL_OK);
    assert_string_equal(anvil_model_name(m), "fashion-mlp");
    anvil_model_free(m);
    unlink(path);
    assert_int_equal(anvil_model_load_json(&m, path), ANVIL_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(anvil_last_error(), path));
}

/* ---------------------------------------------------------------- errors */

typedef struct {
    const char *json;
    anvil_status status;
    const char *mention[3]; /* each must appear in the message (besides the origin) */
} bad_case;

#define L0 "{\"input\": [1, 28, 28], \"layers\": [{\"type\": \"flatten\"}, "
#define L1 "]}"

static const bad_case bad_cases[] = {
    /* malformed JSON: the position cJSON stopped at */
    {"{\"input\": [1, 28, 28],\n \"layers\": [\n  {\"type\": \"relu\"},\n ]}", ANVIL_ERR_FORMAT,
     {"malformed JSON", "line 4", NULL}},
    {"", ANVIL_ERR_FORMAT, {"malformed JSON", "line 1", NULL}},
    {"{\"input\": [1]} trailing", ANVIL_ERR_FORMAT, {"malformed JSON", "trailing", NULL}},
    /* layer types */
    {L0 "{\"type\": \"frobnicate\", \"name\": \"mystery\"}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "mystery", "unknown layer type 'frobnicate'"}},
    {L0 "{\"type\": \"embedding\", \"num_embeddings\": 32}" L1, ANVIL_ERR_UNSUPPORTED,
     {"layer 1", "layer type 'embedding' is not supported yet", NULL}},
    /* conv2d and pooling options */
    {L0 "{\"type\": \"conv2d\", \"kernel_size\": 3}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "conv2d", "missing required option 'out_channels'"}},
    {L0 "{\"type\": \"conv2d\", \"out_channels\": 8}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "missing required option 'kernel_size'", NULL}},
    {L0 "{\"type\": \"conv2d\", \"out_channels\": 8, \"kernel_size\": [3, 0]}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "'kernel_size' must be >= 1", NULL}},
    {L0 "{\"type\": \"conv2d\", \"out_channels\": 8, \"kernel_size\": [3, 3, 3]}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "pair", NULL}},
    {L0 "{\"type\": \"conv2d\", \"out_channels\": 8, \"kernel_size\": 3, \"groups\": 0}" L1,
     ANVIL_ERR_INVALID_ARG, {"layer 1", "'groups' must be positive", NULL}},
    {L0 "{\"type\": \"maxpool2d\"}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "kernel_size", NULL}},
    {L0 "{\"type\": \"maxpool2d\", \"kernel_size\": 2, \"padding\": -1}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "'padding' must be >= 0", NULL}},
    {L0 "{\"type\": \"adaptive_avgpool2d\"}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "output_size", NULL}},
    {L0 "{\"type\": \"relu\", \"kernel_size\": 2}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "does not apply", NULL}},
    {L0 "{\"type\": \"batchnorm1d\", \"momentum\": 2}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "'momentum' must be in [0, 1] or null", NULL}},
    {L0 "{\"type\": \"batchnorm1d\", \"num_features\": 5, \"name\": \"bn\"}" L1, ANVIL_ERR_SHAPE,
     {"layer 1", "bn", "784 channels"}},
    {L0 "{\"type\": \"layernorm\", \"eps\": 0}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "'eps' must be positive", NULL}},
    {L0 "{\"out_features\": 3}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "type", NULL}},
    {L0 "{\"type\": 7}" L1, ANVIL_ERR_FORMAT, {"layer 1", "type", "a number"}},
    {L0 "\"relu\"" L1, ANVIL_ERR_FORMAT, {"layer 1", "object", NULL}},
    /* linear options */
    {L0 "{\"type\": \"linear\", \"name\": \"fc1\"}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "fc1", "out_features"}},
    {L0 "{\"type\": \"linear\", \"out_features\": \"128\"}" L1, ANVIL_ERR_FORMAT,
     {"layer 1", "out_features", "a string"}},
    {L0 "{\"type\": \"linear\", \"out_features\": -5, \"name\": \"neg\"}" L1, ANVIL_ERR_INVALID_ARG,
     {"neg", "out_features", "-5"}},
    {L0 "{\"type\": \"linear\", \"out_features\": 0}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "out_features", NULL}},
    {L0 "{\"type\": \"dense\", \"units\": 1.5}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "dense", "units"}},
    {L0 "{\"type\": \"linear\", \"out_features\": 5, \"units\": 5}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "units", NULL}},
    {L0 "{\"type\": \"linear\", \"out_features\": 5, \"bias\": \"yes\"}" L1, ANVIL_ERR_FORMAT,
     {"layer 1", "bias", NULL}},
    /* unknown and misplaced options */
    {L0 "{\"type\": \"relu\", \"inplace\": true, \"name\": \"r\"}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "'r'", "unknown option 'inplace'"}},
    {L0 "{\"type\": \"relu\", \"p\": 0.5}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "'p'", "relu"}},
    /* option values */
    {L0 "{\"type\": \"dropout\", \"p\": 1}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "'p'", "[0, 1)"}},
    {L0 "{\"type\": \"dropout\", \"p\": -0.1}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "'p'", NULL}},
    {L0 "{\"type\": \"dropout\", \"p\": null}" L1, ANVIL_ERR_FORMAT, {"layer 1", "'p'", "null"}},
    {L0 "{\"type\": \"gelu\", \"approximate\": \"fast\"}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 1", "approximate", "fast"}},
    {L0 "{\"type\": \"leaky_relu\", \"negative_slope\": \"x\"}" L1, ANVIL_ERR_FORMAT,
     {"layer 1", "negative_slope", NULL}},
    {L0 "{\"type\": \"elu\", \"alpha\": [1]}" L1, ANVIL_ERR_FORMAT, {"layer 1", "alpha", "an array"}},
    {L0 "{\"type\": \"softmax\", \"dim\": 1.5}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "dim", NULL}},
    {L0 "{\"type\": \"softmax\", \"dim\": 99}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "dim", "99"}},
    {L0 "{\"type\": \"relu\", \"name\": 5}" L1, ANVIL_ERR_FORMAT, {"layer 1", "name", NULL}},
    {L0 "{\"type\": \"relu\", \"name\": \"\"}" L1, ANVIL_ERR_INVALID_ARG, {"layer 1", "name", NULL}},
    /* inputs and the builder's own checks (which gain the file name) */
    {L0 "{\"type\": \"add\", \"inputs\": \"a\"}" L1, ANVIL_ERR_FORMAT, {"layer 1", "inputs", NULL}},
    {L0 "{\"type\": \"add\", \"inputs\": [\"a\", 3]}" L1, ANVIL_ERR_FORMAT, {"layer 1", "inputs", NULL}},
    {L0 "{\"type\": \"linear\", \"out_features\": 8, \"name\": \"a\"},"
        "{\"type\": \"add\", \"inputs\": [\"a\", \"zzz\"]}" L1, ANVIL_ERR_INVALID_ARG,
     {"layer 2", "zzz", NULL}},
    {L0 "{\"type\": \"linear\", \"out_features\": 8, \"name\": \"a\"},"
        "{\"type\": \"linear\", \"out_features\": 4, \"name\": \"b\"},"
        "{\"type\": \"add\", \"inputs\": [\"a\", \"b\"]}" L1, ANVIL_ERR_SHAPE,
     {"layer 3", "add", NULL}},
    {L0 "{\"type\": \"relu\", \"name\": \"x\"}, {\"type\": \"relu\", \"name\": \"x\"}" L1,
     ANVIL_ERR_INVALID_ARG, {"layer 2", "'x'", NULL}},
    /* the top level */
    {"[1, 2]", ANVIL_ERR_FORMAT, {"object", NULL, NULL}},
    {"{\"layers\": [{\"type\": \"relu\"}]}", ANVIL_ERR_INVALID_ARG, {"input", NULL, NULL}},
    {"{\"input\": [1, 0], \"layers\": [{\"type\": \"relu\"}]}", ANVIL_ERR_INVALID_ARG,
     {"input", "dimension 1", NULL}},
    {"{\"input\": \"28x28\", \"layers\": [{\"type\": \"relu\"}]}", ANVIL_ERR_FORMAT, {"input", NULL, NULL}},
    {"{\"input\": [4]}", ANVIL_ERR_INVALID_ARG, {"layers", NULL, NULL}},
    {"{\"input\": [4], \"layers\": {}}", ANVIL_ERR_FORMAT, {"layers", NULL, NULL}},
    {"{\"input\": [4], \"layers\": []}", ANVIL_ERR_INVALID_ARG, {"layers", "empty", NULL}},
    {"{\"input\": [4], \"layers\": [{\"type\": \"relu\"}], \"optimizer\": \"adam\"}",
     ANVIL_ERR_INVALID_ARG, {"optimizer", NULL, NULL}},
    {"{\"name\": 3, \"input\": [4], \"layers\": [{\"type\": \"relu\"}]}", ANVIL_ERR_FORMAT,
     {"name", NULL, NULL}},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        anvil_model *m = (anvil_model *)1;
        anvil_status s = anvil_model_parse_json(&m, c->json, "bad.json");
        const char *msg = anvil_last_error();
        if (s != c->status)
            fail_msg("case %zu: status %d (%s), wanted %d; JSON: %s", i, (int)s, msg,
                     (int)c->status, c->json);
        assert_null(m);
        if (!strstr(msg, "bad.json"))
            fail_msg("case %zu: message \"%s\" does not name the file", i, msg);
        for (int k = 0; k < 3; k++)
            if (c->mention[k] && !strstr(msg, c->mention[k]))
                fail_msg("case %zu: message \"%s\" does not mention \"%s\"", i, msg, c->mention[k]);
    }
}

static void test_null_args(void **state)
{
    (void)state;
    anvil_model *m = NULL;
    assert_int_equal(anvil_model_parse_json(NULL, "{}", "x"), ANVIL_ERR_INVALID_ARG);
    assert_int_equal(anvil_model_parse_json(&m, NULL, "x"), ANVIL_ERR_INVALID_ARG);
    assert_int_equal(anvil_model_load_json(&m, NULL), ANVIL_ERR_INVALID_ARG);
    /* no origin: still a message */
    assert_int_equal(anvil_model_parse_json(&m, "{", NULL), ANVIL_ERR_FORMAT);
    assert_true(strlen(anvil_last_error()) > 0);
    /* a folder is not a model file */
    assert_int_equal(anvil_model_load_json(&m, "/tmp"), ANVIL_ERR_IO);
    assert_non_null(strstr(anvil_last_error(), "/tmp"));
}

/* "param_groups": options over the trainer's, parameters chosen by pattern or by ndim. */
static void test_param_groups(void **state)
{
    (void)state;
    const char *text =
        "{\"input\": [4], \"layers\": [{\"type\": \"linear\", \"out_features\": 3, \"name\": \"fc\"},"
        " {\"type\": \"batchnorm1d\", \"name\": \"bn\"}, {\"type\": \"linear\", \"out_features\": 2}],"
        " \"param_groups\": [{\"params\": [\"bn.*\"], \"lr\": 0.5, \"weight_decay\": 0},"
        " {\"ndim1\": true, \"weight_decay\": 0, \"betas\": [0.8, 0.9]}]}";
    anvil_model *m = NULL;
    CHECK_OK(anvil_model_parse_json(&m, text, "groups.json"));
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = ANVIL_DEVICE_CPU, cfg.verbose = 0;
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_ADAMW);
    cfg.optimizer.lr = 0.01f;
    anvil_trainer *t = NULL;
    CHECK_OK(anvil_trainer_create(&t, m, &cfg));
    assert_int_equal(anvil_trainer_param_groups(t), 3);
    float lr = 0;
    CHECK_OK(anvil_trainer_lr(t, 0, &lr));
    assert_true(lr == 0.01f);
    CHECK_OK(anvil_trainer_lr(t, 1, &lr));
    assert_true(lr == 0.5f);
    CHECK_OK(anvil_trainer_lr(t, 2, &lr)); /* ndim1 group: the trainer's lr */
    assert_true(lr == 0.01f);
    assert_int_equal(anvil_trainer_lr(t, 3, &lr), ANVIL_ERR_INVALID_ARG);
    /* a config group comes before the file's: it takes fc.bias from the ndim1 group */
    anvil_trainer_free(t);
    anvil_optimizer_config o = cfg.optimizer;
    o.lr = 0.25f;
    anvil_param_group pg = anvil_param_group_default("fc.bias", false, &o);
    cfg.n_param_groups = 1, cfg.param_groups = &pg;
    CHECK_OK(anvil_trainer_create(&t, m, &cfg));
    assert_int_equal(anvil_trainer_param_groups(t), 4);
    CHECK_OK(anvil_trainer_set_group_lr(t, 1, 0.125f));
    CHECK_OK(anvil_trainer_lr(t, 1, &lr));
    assert_true(lr == 0.125f);
    anvil_trainer_free(t);
    /* every group has the trainer's optimizer kind */
    pg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_SGD);
    assert_int_equal(anvil_trainer_create(&t, m, &cfg), ANVIL_ERR_INVALID_ARG);
    assert_non_null(strstr(anvil_last_error(), "one optimizer"));
    anvil_model_free(m);

    /* bad groups name the file, the group and the option */
    static const struct { const char *groups, *msg; } bad[] = {
        {"{}", "must be an array"},
        {"[{\"lr\": 0.1}]", "selects nothing"},
        {"[{\"params\": \"*\", \"learning_rate\": 0.1}]", "unknown option \"learning_rate\""},
        {"[{\"params\": \"*\", \"lr\": \"fast\"}]", "\"lr\" must be a number"},
        {"[{\"params\": \"*\", \"betas\": [0.9]}]", "betas"},
        {"[{\"params\": [1]}]", "patterns"},
        {"[{\"ndim1\": 1}]", "ndim1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "{\"input\": [4], \"layers\": [{\"type\": \"linear\", \"out_features\": 2}], "
                 "\"param_groups\": %s}", bad[i].groups);
        assert_int_not_equal(anvil_model_parse_json(&m, buf, "bad.json"), ANVIL_OK);
        assert_null(m);
        if (!strstr(anvil_last_error(), bad[i].msg) || !strstr(anvil_last_error(), "bad.json"))
            fail_msg("case %zu: message '%s' lacks '%s'", i, anvil_last_error(), bad[i].msg);
    }
    /* a group option that is wrong for the optimizer fails at trainer creation, naming it */
    CHECK_OK(anvil_model_parse_json(&m, "{\"input\": [4], \"layers\": [{\"type\": \"linear\", \"out_features\": 2}], "
                                    "\"param_groups\": [{\"ndim1\": true, \"nesterov\": true}]}", "g.json"));
    assert_int_equal(anvil_trainer_create(&t, m, &cfg), ANVIL_ERR_INVALID_ARG);
    assert_non_null(strstr(anvil_last_error(), "group"));
    anvil_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_structure),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_example_files),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_null_args),
        cmocka_unit_test(test_param_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
