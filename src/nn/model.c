/* model.c — the model builder: layers with PyTorch's names and defaults, turned into
 * graph nodes, with state_dict names for their parameters. */
#include "train/train.h"

#include <math.h>

static const struct {
    const char *name;
    anvil_layer_type type;
} type_names[] = {
    {"linear", ANVIL_LAYER_LINEAR},   {"dense", ANVIL_LAYER_LINEAR},
    {"relu", ANVIL_LAYER_RELU},       {"leaky_relu", ANVIL_LAYER_LEAKY_RELU},
    {"elu", ANVIL_LAYER_ELU},         {"sigmoid", ANVIL_LAYER_SIGMOID},
    {"tanh", ANVIL_LAYER_TANH},       {"silu", ANVIL_LAYER_SILU},
    {"swish", ANVIL_LAYER_SILU},      {"gelu", ANVIL_LAYER_GELU},
    {"softmax", ANVIL_LAYER_SOFTMAX}, {"log_softmax", ANVIL_LAYER_LOG_SOFTMAX},
    {"dropout", ANVIL_LAYER_DROPOUT}, {"flatten", ANVIL_LAYER_FLATTEN},
    {"add", ANVIL_LAYER_ADD},
    {"conv2d", ANVIL_LAYER_CONV2D},   {"maxpool2d", ANVIL_LAYER_MAXPOOL2D},
    {"avgpool2d", ANVIL_LAYER_AVGPOOL2D}, {"adaptive_avgpool2d", ANVIL_LAYER_ADAPTIVE_AVGPOOL2D},
    {"batchnorm1d", ANVIL_LAYER_BATCHNORM1D}, {"batchnorm2d", ANVIL_LAYER_BATCHNORM2D},
    {"layernorm", ANVIL_LAYER_LAYERNORM},     {"concat", ANVIL_LAYER_CONCAT},
};

const char *anvil_layer_type_name(anvil_layer_type type)
{
    for (size_t i = 0; i < sizeof type_names / sizeof *type_names; i++)
        if (type_names[i].type == type)
            return type_names[i].name;
    return "unknown";
}

anvil_status anvil_layer_type_parse(const char *name, anvil_layer_type *out)
{
    for (size_t i = 0; name && i < sizeof type_names / sizeof *type_names; i++)
        if (strcmp(type_names[i].name, name) == 0) {
            *out = type_names[i].type;
            return ANVIL_OK;
        }
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "unknown layer type '%s'", name ? name : "(null)");
}

anvil_layer_desc anvil_layer_default(anvil_layer_type type)
{
    anvil_layer_desc d;
    memset(&d, 0, sizeof d);
    d.type = type;
    d.bias = true;
    d.negative_slope = 0.01f;
    d.alpha = 1.0f;
    d.dim = type == ANVIL_LAYER_CONCAT ? 1 : -1;
    d.p = 0.5f;
    d.stride[0] = d.stride[1] = type == ANVIL_LAYER_CONV2D ? 1 : 0;
    d.dilation[0] = d.dilation[1] = 1;
    d.groups = 1;
    d.eps = 1e-5f;
    d.momentum = 0.1f;
    d.affine = true;
    d.normalized_dims = 1;
    return d;
}

anvil_status anvil_model_create(anvil_model **out, const char *name, int ndim,
                                const int64_t *input_shape)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_create: out is NULL");
    *out = NULL;
    if (ndim < 1 || ndim >= ANVIL_MAX_DIMS || !input_shape)
        return anvil_fail(ANVIL_ERR_SHAPE, "model input must have 1..%d dimensions, got %d", ANVIL_MAX_DIMS - 1, ndim);
    anvil_model *m = anvil_xcalloc(1, sizeof *m, "a model");
    if (!m)
        return ANVIL_ERR_OOM;
    int64_t shape[ANVIL_MAX_DIMS];
    shape[0] = ANVIL_BATCH;
    for (int i = 0; i < ndim; i++) {
        if (input_shape[i] <= 0) {
            free(m);
            return anvil_fail(ANVIL_ERR_SHAPE, "model input dimension %d is %lld (must be positive)", i,
                              (long long)input_shape[i]);
        }
        shape[i + 1] = m->in_shape[i] = input_shape[i];
    }
    m->in_ndim = ndim;
    m->name = anvil_xstrdup(name ? name : "model");
    anvil_status st = m->name ? anvil_graph_create(&m->g) : ANVIL_ERR_OOM;
    if (st == ANVIL_OK) {
        m->input = m->output = anvil_input(m->g, "input", ANVIL_F32, ndim + 1, shape);
        st = anvil_graph_status(m->g);
    }
    if (st != ANVIL_OK) {
        anvil_model_free(m);
        return st;
    }
    *out = m;
    return ANVIL_OK;
}

void anvil_model_free(anvil_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_layers; i++)
        free(m->layer_names[i]);
    free(m->layer_names);
    free(m->layer_out);
    for (int i = 0; i < m->n_groups; i++)
        free(m->groups[i].match);
    free(m->groups);
    anvil_graph_free(m->g);
    free(m->name);
    free(m);
}

static anvil_value find_layer(const anvil_model *m, const char *name)
{
    for (int i = 0; i < m->n_layers; i++)
        if (m->layer_names[i] && strcmp(m->layer_names[i], name) == 0)
            return m->layer_out[i];
    return ANVIL_NO_VALUE;
}

static anvil_value add_linear(anvil_model *m, const anvil_layer_desc *d, anvil_value x, const char *prefix)
{
    anvil_graph *g = m->g;
    int64_t xs[ANVIL_MAX_DIMS];
    int nd = anvil_value_shape(g, x, xs);
    if (d->out_features <= 0) {
        anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "out_features must be positive, got %lld", (long long)d->out_features);
        return ANVIL_NO_VALUE;
    }
    if (nd < 2) {
        anvil_graph_fail(g, ANVIL_ERR_SHAPE, "linear needs an input [B, features], got %d dims", nd);
        return ANVIL_NO_VALUE;
    }
    int64_t in = xs[nd - 1];
    /* torch.nn.Linear: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), bias too */
    anvil_init u = {ANVIL_INIT_UNIFORM, 1.0f / sqrtf((float)in)};
    char name[256];
    int64_t wshape[2] = {d->out_features, in};
    snprintf(name, sizeof name, "%s.weight", prefix);
    anvil_value w = anvil_param(g, name, 2, wshape, u);
    anvil_value b = ANVIL_NO_VALUE;
    if (d->bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        b = anvil_param(g, name, 1, &d->out_features, u);
    }
    return anvil_linear(g, x, w, b);
}

static anvil_value add_conv2d(anvil_model *m, const anvil_layer_desc *d, anvil_value x, const char *prefix)
{
    anvil_graph *g = m->g;
    int64_t xs[ANVIL_MAX_DIMS];
    int nd = anvil_value_shape(g, x, xs);
    if (d->out_channels <= 0 || d->kernel_size[0] <= 0 || d->kernel_size[1] <= 0 || d->groups <= 0)
        return anvil_graph_fail(g, ANVIL_ERR_INVALID_ARG, "out_channels, kernel_size and groups must be positive, "
                                "got %lld, [%d, %d], %d", (long long)d->out_channels, d->kernel_size[0],
                                d->kernel_size[1], d->groups);
    if (nd != 4)
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "conv2d needs an input [B, C, H, W], got %d dims", nd);
    if (xs[1] % d->groups || d->out_channels % d->groups)
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "groups %d must divide the %lld input and %lld output channels",
                                d->groups, (long long)xs[1], (long long)d->out_channels);
    int64_t cin = xs[1] / d->groups, fan_in = cin * d->kernel_size[0] * d->kernel_size[1];
    /* torch.nn.Conv2d: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias too */
    anvil_init u = {ANVIL_INIT_UNIFORM, 1.0f / sqrtf((float)fan_in)};
    char name[256];
    int64_t wshape[4] = {d->out_channels, cin, d->kernel_size[0], d->kernel_size[1]};
    snprintf(name, sizeof name, "%s.weight", prefix);
    anvil_value w = anvil_param(g, name, 4, wshape, u);
    anvil_value b = ANVIL_NO_VALUE;
    if (d->bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        b = anvil_param(g, name, 1, &d->out_channels, u);
    }
    anvil_conv_params p = anvil_conv_default_params();
    p.stride_h = d->stride[0];
    p.stride_w = d->stride[1];
    p.pad_h = d->padding[0];
    p.pad_w = d->padding[1];
    p.dilation_h = d->dilation[0];
    p.dilation_w = d->dilation[1];
    p.groups = d->groups;
    return anvil_conv2d(g, x, w, b, &p);
}

/* batchnorm1d ([B, C] or [B, C, L]) / batchnorm2d ([B, C, H, W]): weight, bias (affine),
 * running_mean, running_var, num_batches_tracked, under torch's state_dict names. */
static anvil_value add_batchnorm(anvil_model *m, const anvil_layer_desc *d, anvil_value x, const char *prefix)
{
    anvil_graph *g = m->g;
    int64_t xs[ANVIL_MAX_DIMS];
    int nd = anvil_value_shape(g, x, xs);
    bool two_d = d->type == ANVIL_LAYER_BATCHNORM2D;
    if (two_d ? nd != 4 : (nd != 2 && nd != 3))
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "%s needs an input %s, got %d dims",
                                two_d ? "batchnorm2d" : "batchnorm1d", two_d ? "[B, C, H, W]" : "[B, C] or [B, C, L]", nd);
    if (d->num_features > 0 && d->num_features != xs[1])
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "num_features is %lld but the input has %lld channels",
                                (long long)d->num_features, (long long)xs[1]);
    char name[256];
    int64_t c = xs[1], scalar = 0;
    anvil_init ones = {ANVIL_INIT_ONES, 0}, zeros = {ANVIL_INIT_ZEROS, 0};
    anvil_value w = ANVIL_NO_VALUE, b = ANVIL_NO_VALUE;
    if (d->affine) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        w = anvil_param(g, name, 1, &c, ones);
        snprintf(name, sizeof name, "%s.bias", prefix);
        b = anvil_param(g, name, 1, &c, zeros);
    }
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    anvil_value rm = anvil_buffer(g, name, ANVIL_F32, 1, &c, zeros);
    snprintf(name, sizeof name, "%s.running_var", prefix);
    anvil_value rv = anvil_buffer(g, name, ANVIL_F32, 1, &c, ones);
    snprintf(name, sizeof name, "%s.num_batches_tracked", prefix);
    anvil_value nbt = anvil_buffer(g, name, ANVIL_I64, 0, &scalar, zeros);
    return anvil_batchnorm(g, x, rm, rv, nbt, w, b, d->eps, d->momentum);
}

/* layernorm over the last normalized_dims dims; weight ones, bias zeros (torch). */
static anvil_value add_layernorm(anvil_model *m, const anvil_layer_desc *d, anvil_value x, const char *prefix)
{
    anvil_graph *g = m->g;
    int64_t xs[ANVIL_MAX_DIMS];
    int nd = anvil_value_shape(g, x, xs), k = d->normalized_dims;
    if (k < 1 || k >= nd)
        return anvil_graph_fail(g, ANVIL_ERR_SHAPE, "layernorm over the last %d dims of a %d-dim input", k, nd);
    anvil_value w = ANVIL_NO_VALUE, b = ANVIL_NO_VALUE;
    if (d->affine) {
        char name[256];
        anvil_init ones = {ANVIL_INIT_ONES, 0}, zeros = {ANVIL_INIT_ZEROS, 0};
        snprintf(name, sizeof name, "%s.weight", prefix);
        w = anvil_param(g, name, k, xs + nd - k, ones);
        snprintf(name, sizeof name, "%s.bias", prefix);
        b = anvil_param(g, name, k, xs + nd - k, zeros);
    }
    return anvil_layernorm(g, x, k, w, b, d->eps);
}

anvil_status anvil_model_add(anvil_model *m, const anvil_layer_desc *d)
{
    if (!m || !d)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_add: NULL argument");
    ANVIL_TRY(anvil_graph_status(m->g));
    anvil_graph *g = m->g;
    int index = m->n_layers;
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s", d->name && d->name[0] ? d->name : "");
    if (!prefix[0])
        snprintf(prefix, sizeof prefix, "%d", index);
    const char *tname = anvil_layer_type_name(d->type);
    if (d->name && find_layer(m, d->name) != ANVIL_NO_VALUE)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "layer %d (%s): the name '%s' is already used", index, tname, d->name);
    if (d->n_inputs < 0 || d->n_inputs > ANVIL_MAX_LAYER_INPUTS)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "layer %d '%s' (%s): %d inputs (at most %d)", index, prefix, tname,
                          d->n_inputs, ANVIL_MAX_LAYER_INPUTS);
    anvil_value in[ANVIL_MAX_LAYER_INPUTS];
    int n_in = d->n_inputs;
    for (int i = 0; i < n_in; i++) {
        in[i] = d->inputs[i] ? find_layer(m, d->inputs[i]) : ANVIL_NO_VALUE;
        if (in[i] == ANVIL_NO_VALUE)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "layer %d '%s' (%s): input '%s' names no earlier layer", index,
                              prefix, tname, d->inputs[i] ? d->inputs[i] : "(null)");
    }
    if (n_in == 0) {
        in[0] = m->output;
        n_in = 1;
    }
    if (d->type != ANVIL_LAYER_ADD && d->type != ANVIL_LAYER_CONCAT && n_in != 1)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "layer %d '%s' (%s): takes one input, got %d", index, prefix, tname, n_in);

    anvil_value x = in[0], y = ANVIL_NO_VALUE;
    switch (d->type) {
    case ANVIL_LAYER_LINEAR: y = add_linear(m, d, x, prefix); break;
    case ANVIL_LAYER_RELU: y = anvil_relu(g, x); break;
    case ANVIL_LAYER_LEAKY_RELU: y = anvil_leaky_relu(g, x, d->negative_slope); break;
    case ANVIL_LAYER_ELU: y = anvil_elu(g, x, d->alpha); break;
    case ANVIL_LAYER_SIGMOID: y = anvil_sigmoid(g, x); break;
    case ANVIL_LAYER_TANH: y = anvil_tanh(g, x); break;
    case ANVIL_LAYER_SILU: y = anvil_silu(g, x); break;
    case ANVIL_LAYER_GELU: y = anvil_gelu(g, x, d->gelu_tanh); break;
    case ANVIL_LAYER_SOFTMAX: y = anvil_softmax(g, x, d->dim); break;
    case ANVIL_LAYER_LOG_SOFTMAX: y = anvil_log_softmax(g, x, d->dim); break;
    case ANVIL_LAYER_DROPOUT: y = anvil_dropout(g, x, d->p); break;
    case ANVIL_LAYER_FLATTEN: y = anvil_flatten(g, x); break;
    case ANVIL_LAYER_CONV2D: y = add_conv2d(m, d, x, prefix); break;
    case ANVIL_LAYER_MAXPOOL2D:
    case ANVIL_LAYER_AVGPOOL2D: {
        /* stride 0: the kernel size, as torch's default stride=None */
        int sh = d->stride[0] ? d->stride[0] : d->kernel_size[0], sw = d->stride[1] ? d->stride[1] : d->kernel_size[1];
        y = d->type == ANVIL_LAYER_MAXPOOL2D
                ? anvil_maxpool2d(g, x, d->kernel_size[0], d->kernel_size[1], sh, sw, d->padding[0], d->padding[1])
                : anvil_avgpool2d(g, x, d->kernel_size[0], d->kernel_size[1], sh, sw, d->padding[0], d->padding[1]);
        break;
    }
    case ANVIL_LAYER_CONCAT:
        if (n_in < 2 || n_in > 6)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "layer %d '%s' (concat): needs 2..6 inputs, got %d", index, prefix,
                              n_in);
        y = anvil_concat(g, n_in, in, d->dim);
        break;
    case ANVIL_LAYER_BATCHNORM1D:
    case ANVIL_LAYER_BATCHNORM2D: y = add_batchnorm(m, d, x, prefix); break;
    case ANVIL_LAYER_LAYERNORM: y = add_layernorm(m, d, x, prefix); break;
    case ANVIL_LAYER_ADAPTIVE_AVGPOOL2D: y = anvil_adaptive_avgpool2d(g, x, d->output_size[0], d->output_size[1]); break;
    case ANVIL_LAYER_ADD:
        if (n_in < 2)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "layer %d '%s' (add): needs at least 2 inputs, got %d", index,
                              prefix, n_in);
        y = x;
        for (int i = 1; i < n_in; i++) {
            int64_t a[ANVIL_MAX_DIMS], b[ANVIL_MAX_DIMS];
            int na = anvil_value_shape(g, in[0], a), nb = anvil_value_shape(g, in[i], b);
            if (na != nb || memcmp(a, b, (size_t)na * sizeof *a) != 0) {
                char sa[96], sb[96];
                return anvil_fail(ANVIL_ERR_SHAPE, "layer %d '%s' (add): input '%s' is %s but '%s' is %s", index, prefix,
                                  d->inputs[0], anvil_shape_str(sa, sizeof sa, na, a), d->inputs[i],
                                  anvil_shape_str(sb, sizeof sb, nb, b));
            }
            y = anvil_add(g, y, in[i]);
        }
        break;
    default:
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "layer %d: unknown layer type %d", index, (int)d->type);
    }
    if (y == ANVIL_NO_VALUE) {
        /* Name the layer, then keep the graph's own words about the shapes. */
        const char *why = g->error ? g->error : anvil_last_error();
        char msg[768];
        snprintf(msg, sizeof msg, "layer %d '%s' (%s): %s", index, prefix, tname, why);
        free(g->error);
        g->error = anvil_xstrdup(msg);
        return anvil_fail(g->status, "%s", msg);
    }
    if (m->n_layers == m->cap_layers) {
        int cap = m->cap_layers ? 2 * m->cap_layers : 16;
        char **names = anvil_xrealloc(m->layer_names, (size_t)cap * sizeof *names, "layer names");
        if (!names)
            return ANVIL_ERR_OOM;
        m->layer_names = names;
        anvil_value *outs = anvil_xrealloc(m->layer_out, (size_t)cap * sizeof *outs, "layer outputs");
        if (!outs)
            return ANVIL_ERR_OOM;
        m->layer_out = outs;
        m->cap_layers = cap;
    }
    m->layer_names[m->n_layers] = d->name ? anvil_xstrdup(d->name) : NULL;
    m->layer_out[m->n_layers++] = y;
    m->output = y;
    return ANVIL_OK;
}

anvil_status anvil_model_from_graph(anvil_model **out, anvil_graph *g, anvil_value input,
                                    anvil_value output)
{
    if (!out || !g)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_from_graph: NULL argument");
    *out = NULL;
    ANVIL_TRY(anvil_graph_status(g));
    if (!anvil_graph_valid(g, input) || g->nodes[input].op != OP_INPUT)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_from_graph: `input` is not an input of the graph");
    if (!anvil_graph_valid(g, output) || g->nodes[output].ndim < 1)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_from_graph: `output` is not a value of the graph");
    const anvil_node *in = &g->nodes[input];
    if (in->ndim < 2 || in->shape[0] != ANVIL_BATCH || in->dtype != ANVIL_F32)
        return anvil_fail(ANVIL_ERR_SHAPE, "anvil_model_from_graph: the input must be float32 [ANVIL_BATCH, ...]");
    for (int v = 0; v < g->n; v++)
        if (g->nodes[v].op == OP_INPUT && v != input)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_from_graph: the graph has a second input '%s'",
                              g->nodes[v].name ? g->nodes[v].name : "?");
    anvil_model *m = anvil_xcalloc(1, sizeof *m, "a model");
    if (!m)
        return ANVIL_ERR_OOM;
    m->name = anvil_xstrdup("graph");
    m->g = g;
    m->input = input;
    m->output = output;
    m->in_ndim = in->ndim - 1;
    for (int i = 1; i < in->ndim; i++)
        m->in_shape[i - 1] = in->shape[i];
    *out = m;
    return ANVIL_OK;
}

anvil_status anvil_model_builtin(anvil_model **out, const char *name)
{
    if (!out || !name)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_builtin: NULL argument");
    *out = NULL;
    if (strcmp(name, "mlp") == 0) {
        /* nn.Sequential(Flatten, Linear(784,512), ReLU, Linear(512,512), ReLU, Linear(512,10)) */
        int64_t in[3] = {1, 28, 28};
        anvil_model *m;
        ANVIL_TRY(anvil_model_create(&m, "mlp", 3, in));
        anvil_layer_desc layers[6] = {
            anvil_layer_default(ANVIL_LAYER_FLATTEN), anvil_layer_default(ANVIL_LAYER_LINEAR),
            anvil_layer_default(ANVIL_LAYER_RELU),    anvil_layer_default(ANVIL_LAYER_LINEAR),
            anvil_layer_default(ANVIL_LAYER_RELU),    anvil_layer_default(ANVIL_LAYER_LINEAR),
        };
        layers[1].out_features = 512;
        layers[3].out_features = 512;
        layers[5].out_features = 10;
        for (int i = 0; i < 6; i++) {
            anvil_status st = anvil_model_add(m, &layers[i]);
            if (st != ANVIL_OK) {
                anvil_model_free(m);
                return st;
            }
        }
        *out = m;
        return ANVIL_OK;
    }
    if (strcmp(name, "cnn") == 0) {
        /* nn.Sequential(Conv2d(1,32,3,padding=1), ReLU, MaxPool2d(2), Conv2d(32,64,3,padding=1),
         * ReLU, MaxPool2d(2), Flatten, Linear(3136,128), ReLU, Linear(128,10)) */
        int64_t in[3] = {1, 28, 28};
        anvil_model *m;
        ANVIL_TRY(anvil_model_create(&m, "cnn", 3, in));
        anvil_layer_type types[10] = {ANVIL_LAYER_CONV2D, ANVIL_LAYER_RELU, ANVIL_LAYER_MAXPOOL2D, ANVIL_LAYER_CONV2D,
                                      ANVIL_LAYER_RELU,   ANVIL_LAYER_MAXPOOL2D, ANVIL_LAYER_FLATTEN, ANVIL_LAYER_LINEAR,
                                      ANVIL_LAYER_RELU,   ANVIL_LAYER_LINEAR};
        for (int i = 0; i < 10; i++) {
            anvil_layer_desc l = anvil_layer_default(types[i]);
            l.out_channels = i == 0 ? 32 : 64;
            l.kernel_size[0] = l.kernel_size[1] = types[i] == ANVIL_LAYER_CONV2D ? 3 : 2;
            l.padding[0] = l.padding[1] = types[i] == ANVIL_LAYER_CONV2D ? 1 : 0;
            l.out_features = i == 7 ? 128 : 10;
            anvil_status st = anvil_model_add(m, &l);
            if (st != ANVIL_OK) {
                anvil_model_free(m);
                return st;
            }
        }
        *out = m;
        return ANVIL_OK;
    }
    if (strcmp(name, "resnet18") == 0)
        return anvil_model_resnet18(out, 1, 28, 28, 10);
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "unknown built-in model '%s' (available: mlp, cnn, resnet18)", name);
}

const char *anvil_model_name(const anvil_model *m) { return m ? m->name : ""; }
anvil_graph *anvil_model_graph(anvil_model *m) { return m ? m->g : NULL; }
anvil_value anvil_model_output(const anvil_model *m) { return m ? m->output : ANVIL_NO_VALUE; }

int anvil_model_input_shape(const anvil_model *m, int64_t shape[ANVIL_MAX_DIMS])
{
    for (int i = 0; i < m->in_ndim; i++)
        shape[i] = m->in_shape[i];
    return m->in_ndim;
}

int64_t anvil_model_param_count(const anvil_model *m)
{
    int64_t n = 0;
    for (int v = 0; v < m->g->n; v++)
        if (m->g->nodes[v].op == OP_PARAM)
            n += anvil_node_numel(&m->g->nodes[v]);
    return n;
}

/* ---- ResNet-18, CIFAR style.  Layer names follow torchvision's ResNet ("conv1", "bn1",
 * "layer2.0.conv1", "layer2.0.downsample.0", "fc"), so its state_dict names match a
 * torchvision-style module with a 3x3 stem and no max-pool. */

static anvil_status add_named(anvil_model *m, anvil_layer_desc l, const char *name, const char *in0, const char *in1)
{
    l.name = name;
    l.n_inputs = in1 ? 2 : in0 ? 1 : 0;
    l.inputs[0] = in0;
    l.inputs[1] = in1;
    return anvil_model_add(m, &l);
}

static anvil_layer_desc conv_desc(int64_t out, int k, int stride)
{
    anvil_layer_desc l = anvil_layer_default(ANVIL_LAYER_CONV2D);
    l.out_channels = out;
    l.kernel_size[0] = l.kernel_size[1] = k;
    l.stride[0] = l.stride[1] = stride;
    l.padding[0] = l.padding[1] = k / 2;
    l.bias = false;
    return l;
}

/* One BasicBlock: conv-bn-relu-conv-bn (+ downsample) + input, relu.  `in` names the
 * block's input layer; the block's output layer is "<p>.relu2". */
static anvil_status basic_block(anvil_model *m, const char *p, const char *in, int64_t in_ch, int64_t out_ch, int stride)
{
    char n[8][96];
    const char *suffix[8] = {"conv1", "bn1", "relu1", "conv2", "bn2", "downsample.0", "downsample.1", "add"};
    for (int i = 0; i < 8; i++)
        snprintf(n[i], sizeof n[i], "%s.%s", p, suffix[i]);
    char out[96];
    snprintf(out, sizeof out, "%s.relu2", p);
    anvil_layer_desc bn = anvil_layer_default(ANVIL_LAYER_BATCHNORM2D), relu = anvil_layer_default(ANVIL_LAYER_RELU);
    ANVIL_TRY(add_named(m, conv_desc(out_ch, 3, stride), n[0], in, NULL));
    ANVIL_TRY(add_named(m, bn, n[1], NULL, NULL));
    ANVIL_TRY(add_named(m, relu, n[2], NULL, NULL));
    ANVIL_TRY(add_named(m, conv_desc(out_ch, 3, 1), n[3], NULL, NULL));
    ANVIL_TRY(add_named(m, bn, n[4], NULL, NULL));
    const char *shortcut = in;
    if (stride != 1 || in_ch != out_ch) {
        ANVIL_TRY(add_named(m, conv_desc(out_ch, 1, stride), n[5], in, NULL));
        ANVIL_TRY(add_named(m, bn, n[6], NULL, NULL));
        shortcut = n[6];
    }
    ANVIL_TRY(add_named(m, anvil_layer_default(ANVIL_LAYER_ADD), n[7], n[4], shortcut));
    return add_named(m, relu, out, NULL, NULL);
}

anvil_status anvil_model_resnet18(anvil_model **out, int channels, int height, int width, int classes)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_resnet18: out is NULL");
    *out = NULL;
    if (channels <= 0 || height <= 0 || width <= 0 || classes <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "resnet18: channels %d, size %dx%d and classes %d must be positive",
                          channels, height, width, classes);
    int64_t in[3] = {channels, height, width};
    anvil_model *m;
    ANVIL_TRY(anvil_model_create(&m, "resnet18", 3, in));
    anvil_status st = add_named(m, conv_desc(64, 3, 1), "conv1", NULL, NULL);
    if (st == ANVIL_OK)
        st = add_named(m, anvil_layer_default(ANVIL_LAYER_BATCHNORM2D), "bn1", NULL, NULL);
    if (st == ANVIL_OK)
        st = add_named(m, anvil_layer_default(ANVIL_LAYER_RELU), "relu", NULL, NULL);
    const int64_t widths[4] = {64, 128, 256, 512};
    char prev[96] = "relu";
    int64_t in_ch = 64;
    for (int s = 0; s < 4 && st == ANVIL_OK; s++)
        for (int b = 0; b < 2 && st == ANVIL_OK; b++) {
            char p[32];
            snprintf(p, sizeof p, "layer%d.%d", s + 1, b);
            st = basic_block(m, p, prev, in_ch, widths[s], (s > 0 && b == 0) ? 2 : 1);
            snprintf(prev, sizeof prev, "%s.relu2", p);
            in_ch = widths[s];
        }
    anvil_layer_desc pool = anvil_layer_default(ANVIL_LAYER_ADAPTIVE_AVGPOOL2D);
    pool.output_size[0] = pool.output_size[1] = 1;
    anvil_layer_desc fc = anvil_layer_default(ANVIL_LAYER_LINEAR);
    fc.out_features = classes;
    if (st == ANVIL_OK)
        st = add_named(m, pool, "avgpool", NULL, NULL);
    if (st == ANVIL_OK)
        st = add_named(m, anvil_layer_default(ANVIL_LAYER_FLATTEN), "flatten", NULL, NULL);
    if (st == ANVIL_OK)
        st = add_named(m, fc, "fc", NULL, NULL);
    if (st != ANVIL_OK) {
        anvil_model_free(m);
        return st;
    }
    *out = m;
    return ANVIL_OK;
}
