/* model_json.c — JSON model files (SPEC §1) into the model builder: each layer object
 * becomes an anvil_layer_desc (PyTorch names and defaults), then anvil_model_add checks
 * the shapes.  Every error names the file, the layer (index, name, type) and the option. */
#include "core/core.h"
#include "train/train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <sys/stat.h>

#define MODEL_FILE_MAX ((size_t)64 << 20) /* no model file is this big; refuse garbage */
#define JSON_MAX_INT 9007199254740992.0   /* 2^53 */

/* Types SPEC §1 names that the builder does not have yet: "not supported yet", not "unknown". */
static const char *const future_types[] = {
    "embedding",
};

/* The layer being read, for messages: "file: layer 3 ('fc1', linear)". */
typedef struct {
    const char *origin;
    int index;
    const char *name;  /* NULL until known */
    const char *type;  /* as spelled in the file; NULL until known */
    char where[256];
} layer_ctx;

static const char *ctx_where(layer_ctx *c)
{
    if (c->name && c->type)
        snprintf(c->where, sizeof c->where, "%s: layer %d ('%s', %s)", c->origin, c->index,
                 c->name, c->type);
    else if (c->type || c->name)
        snprintf(c->where, sizeof c->where, c->type ? "%s: layer %d (%s)" : "%s: layer %d ('%s')",
                 c->origin, c->index, c->type ? c->type : c->name);
    else
        snprintf(c->where, sizeof c->where, "%s: layer %d", c->origin, c->index);
    return c->where;
}

static const char *json_kind(const cJSON *j)
{
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "invalid JSON";
}

static bool json_integer(const cJSON *j, int64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) > JSON_MAX_INT)
        return false;
    *out = (int64_t)d;
    return true;
}

/* ---------------------------------------------------------------- layer options */

static anvil_status want_kind(layer_ctx *c, const cJSON *v, bool ok, const char *kind)
{
    if (ok)
        return ANVIL_OK;
    return anvil_fail(ANVIL_ERR_FORMAT, "%s: option '%s' must be %s, got %s", ctx_where(c),
                      v->string, kind, json_kind(v));
}

static anvil_status want_number(layer_ctx *c, const cJSON *v, double *out)
{
    ANVIL_TRY(want_kind(c, v, cJSON_IsNumber(v), "a number"));
    if (!isfinite(v->valuedouble))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s' must be finite", ctx_where(c),
                          v->string);
    *out = v->valuedouble;
    return ANVIL_OK;
}

static anvil_status want_integer(layer_ctx *c, const cJSON *v, int64_t *out)
{
    ANVIL_TRY(want_kind(c, v, cJSON_IsNumber(v), "an integer"));
    if (!json_integer(v, out))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s' must be an integer, got %g",
                          ctx_where(c), v->string, v->valuedouble);
    return ANVIL_OK;
}

typedef struct {
    anvil_layer_desc *d;
    bool have_out;     /* out_features or units seen */
    bool have_channels, have_kernel, have_output_size;
} layer_state;

typedef anvil_status (*opt_fn)(layer_ctx *c, const cJSON *v, layer_state *st);

static anvil_status opt_out_features(layer_ctx *c, const cJSON *v, layer_state *st)
{
    int64_t n = 0;
    ANVIL_TRY(want_integer(c, v, &n));
    if (n <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s' must be positive, got %lld",
                          ctx_where(c), v->string, (long long)n);
    if (st->have_out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s': give either out_features or "
                          "units, not both", ctx_where(c), v->string);
    st->have_out = true;
    st->d->out_features = n;
    return ANVIL_OK;
}

static anvil_status opt_bias(layer_ctx *c, const cJSON *v, layer_state *st)
{
    ANVIL_TRY(want_kind(c, v, cJSON_IsBool(v), "true or false"));
    st->d->bias = cJSON_IsTrue(v);
    return ANVIL_OK;
}

static anvil_status opt_negative_slope(layer_ctx *c, const cJSON *v, layer_state *st)
{
    double x = 0;
    ANVIL_TRY(want_number(c, v, &x));
    st->d->negative_slope = (float)x;
    return ANVIL_OK;
}

static anvil_status opt_alpha(layer_ctx *c, const cJSON *v, layer_state *st)
{
    double x = 0;
    ANVIL_TRY(want_number(c, v, &x));
    st->d->alpha = (float)x;
    return ANVIL_OK;
}

static anvil_status opt_approximate(layer_ctx *c, const cJSON *v, layer_state *st)
{
    ANVIL_TRY(want_kind(c, v, cJSON_IsString(v), "\"none\" or \"tanh\""));
    if (strcmp(v->valuestring, "none") == 0)
        st->d->gelu_tanh = false;
    else if (strcmp(v->valuestring, "tanh") == 0)
        st->d->gelu_tanh = true;
    else
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'approximate' must be \"none\" or "
                          "\"tanh\", got \"%s\"", ctx_where(c), v->valuestring);
    return ANVIL_OK;
}

static anvil_status opt_dim(layer_ctx *c, const cJSON *v, layer_state *st)
{
    int64_t n = 0;
    ANVIL_TRY(want_integer(c, v, &n));
    if (n < -ANVIL_MAX_DIMS || n >= ANVIL_MAX_DIMS)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'dim' = %lld is outside %d..%d",
                          ctx_where(c), (long long)n, -ANVIL_MAX_DIMS, ANVIL_MAX_DIMS - 1);
    st->d->dim = (int)n;
    return ANVIL_OK;
}

static anvil_status opt_p(layer_ctx *c, const cJSON *v, layer_state *st)
{
    double p = 0;
    ANVIL_TRY(want_number(c, v, &p));
    if (!(p >= 0.0 && p < 1.0))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'p' must be in [0, 1), got %g",
                          ctx_where(c), p);
    st->d->p = (float)p;
    return ANVIL_OK;
}

/* An int or a pair [h, w] (PyTorch's _pair), each >= min. */
static anvil_status want_pair(layer_ctx *c, const cJSON *v, int out[2], int min)
{
    int64_t x[2] = {0, 0};
    if (cJSON_IsArray(v)) {
        if (cJSON_GetArraySize(v) != 2 || !json_integer(v->child, &x[0]) || !json_integer(v->child->next, &x[1]))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s' must be an integer or a pair [h, w] of integers",
                              ctx_where(c), v->string);
    } else {
        ANVIL_TRY(want_integer(c, v, &x[0]));
        x[1] = x[0];
    }
    for (int i = 0; i < 2; i++) {
        if (x[i] < min || x[i] > 1 << 20)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s' must be >= %d, got %lld", ctx_where(c),
                              v->string, min, (long long)x[i]);
        out[i] = (int)x[i];
    }
    return ANVIL_OK;
}

static anvil_status opt_out_channels(layer_ctx *c, const cJSON *v, layer_state *st)
{
    int64_t n = 0;
    ANVIL_TRY(want_integer(c, v, &n));
    if (n <= 0 || n > 1 << 24)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'out_channels' must be positive, got %lld",
                          ctx_where(c), (long long)n);
    st->d->out_channels = n;
    st->have_channels = true;
    return ANVIL_OK;
}

static anvil_status opt_kernel_size(layer_ctx *c, const cJSON *v, layer_state *st)
{
    st->have_kernel = true;
    return want_pair(c, v, st->d->kernel_size, 1);
}

static anvil_status opt_stride(layer_ctx *c, const cJSON *v, layer_state *st) { return want_pair(c, v, st->d->stride, 1); }
static anvil_status opt_padding(layer_ctx *c, const cJSON *v, layer_state *st) { return want_pair(c, v, st->d->padding, 0); }
static anvil_status opt_dilation(layer_ctx *c, const cJSON *v, layer_state *st) { return want_pair(c, v, st->d->dilation, 1); }

static anvil_status opt_output_size(layer_ctx *c, const cJSON *v, layer_state *st)
{
    st->have_output_size = true;
    return want_pair(c, v, st->d->output_size, 1);
}

static anvil_status opt_groups(layer_ctx *c, const cJSON *v, layer_state *st)
{
    int64_t n = 0;
    ANVIL_TRY(want_integer(c, v, &n));
    if (n <= 0 || n > 1 << 20)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'groups' must be positive, got %lld", ctx_where(c),
                          (long long)n);
    st->d->groups = (int)n;
    return ANVIL_OK;
}

/* num_features: PyTorch needs it; here the input decides, and the builder checks it. */
static anvil_status opt_num_features(layer_ctx *c, const cJSON *v, layer_state *st)
{
    int64_t n = 0;
    ANVIL_TRY(want_integer(c, v, &n));
    if (n <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s' must be positive", ctx_where(c), v->string);
    st->d->num_features = n;
    return ANVIL_OK;
}

static anvil_status opt_eps(layer_ctx *c, const cJSON *v, layer_state *st)
{
    double x = 0;
    ANVIL_TRY(want_number(c, v, &x));
    if (!(x > 0))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'eps' must be positive, got %g", ctx_where(c), x);
    st->d->eps = (float)x;
    return ANVIL_OK;
}

/* momentum: a number in [0, 1], or null for torch's cumulative average. */
static anvil_status opt_momentum(layer_ctx *c, const cJSON *v, layer_state *st)
{
    if (cJSON_IsNull(v)) {
        st->d->momentum = NAN;
        return ANVIL_OK;
    }
    double x = 0;
    ANVIL_TRY(want_number(c, v, &x));
    if (!(x >= 0 && x <= 1))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'momentum' must be in [0, 1] or null, got %g",
                          ctx_where(c), x);
    st->d->momentum = (float)x;
    return ANVIL_OK;
}

static anvil_status opt_affine(layer_ctx *c, const cJSON *v, layer_state *st)
{
    ANVIL_TRY(want_kind(c, v, cJSON_IsBool(v), "true or false"));
    st->d->affine = cJSON_IsTrue(v);
    return ANVIL_OK;
}

/* normalized_shape: an int or a list; the layer normalizes over that many trailing dims
 * (their sizes come from the input). */
static anvil_status opt_normalized_shape(layer_ctx *c, const cJSON *v, layer_state *st)
{
    int64_t n = 0;
    if (cJSON_IsArray(v)) {
        int k = cJSON_GetArraySize(v);
        if (k < 1 || k >= ANVIL_MAX_DIMS)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'normalized_shape' must list 1..%d sizes",
                              ctx_where(c), ANVIL_MAX_DIMS - 1);
        for (const cJSON *e = v->child; e; e = e->next)
            if (!json_integer(e, &n) || n <= 0)
                return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'normalized_shape' must hold positive integers",
                                  ctx_where(c));
        st->d->normalized_dims = k;
        return ANVIL_OK;
    }
    ANVIL_TRY(want_integer(c, v, &n));
    if (n <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'normalized_shape' must be positive", ctx_where(c));
    st->d->normalized_dims = 1;
    return ANVIL_OK;
}

#define T(x) (1u << ANVIL_LAYER_##x)
static const struct {
    const char *key;
    uint32_t types;  /* bit per anvil_layer_type the option applies to */
    opt_fn fn;
} layer_options[] = {
    {"out_features", T(LINEAR), opt_out_features},
    {"units", T(LINEAR), opt_out_features}, /* Keras spelling, for "dense" */
    {"bias", T(LINEAR) | T(CONV2D), opt_bias},
    {"out_channels", T(CONV2D), opt_out_channels},
    {"kernel_size", T(CONV2D) | T(MAXPOOL2D) | T(AVGPOOL2D), opt_kernel_size},
    {"stride", T(CONV2D) | T(MAXPOOL2D) | T(AVGPOOL2D), opt_stride},
    {"padding", T(CONV2D) | T(MAXPOOL2D) | T(AVGPOOL2D), opt_padding},
    {"dilation", T(CONV2D), opt_dilation},
    {"groups", T(CONV2D), opt_groups},
    {"output_size", T(ADAPTIVE_AVGPOOL2D), opt_output_size},
    {"eps", T(BATCHNORM1D) | T(BATCHNORM2D) | T(LAYERNORM), opt_eps},
    {"momentum", T(BATCHNORM1D) | T(BATCHNORM2D), opt_momentum},
    {"affine", T(BATCHNORM1D) | T(BATCHNORM2D), opt_affine},
    {"elementwise_affine", T(LAYERNORM), opt_affine},
    {"normalized_shape", T(LAYERNORM), opt_normalized_shape},
    {"num_features", T(BATCHNORM1D) | T(BATCHNORM2D), opt_num_features},
    {"negative_slope", T(LEAKY_RELU), opt_negative_slope},
    {"alpha", T(ELU), opt_alpha},
    {"approximate", T(GELU), opt_approximate},
    {"dim", T(SOFTMAX) | T(LOG_SOFTMAX) | T(CONCAT), opt_dim},
    {"p", T(DROPOUT), opt_p},
};
#undef T

static anvil_status parse_inputs(layer_ctx *c, const cJSON *v, anvil_layer_desc *d)
{
    ANVIL_TRY(want_kind(c, v, cJSON_IsArray(v), "an array of layer names"));
    int n = cJSON_GetArraySize(v);
    if (n < 1 || n > ANVIL_MAX_LAYER_INPUTS)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'inputs' lists %d layers; give 1 to "
                          "%d", ctx_where(c), n, ANVIL_MAX_LAYER_INPUTS);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return anvil_fail(ANVIL_ERR_FORMAT, "%s: option 'inputs': entry %d must be a layer "
                              "name, got %s", ctx_where(c), i, json_kind(e));
        d->inputs[i] = e->valuestring;
    }
    d->n_inputs = n;
    return ANVIL_OK;
}

/* "type" first (it decides the defaults and which options apply), then the rest. */
static anvil_status parse_type(layer_ctx *c, const cJSON *obj, anvil_layer_type *type)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!t)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: missing \"type\"", ctx_where(c));
    ANVIL_TRY(want_kind(c, t, cJSON_IsString(t), "a layer type name"));
    c->type = t->valuestring;
    if (anvil_layer_type_parse(t->valuestring, type) == ANVIL_OK)
        return ANVIL_OK;
    for (size_t i = 0; i < sizeof future_types / sizeof future_types[0]; i++)
        if (strcmp(t->valuestring, future_types[i]) == 0)
            return anvil_fail(ANVIL_ERR_UNSUPPORTED, "%s: layer type '%s' is not supported yet",
                              ctx_where(c), t->valuestring);
    c->type = NULL;
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: unknown layer type '%s'", ctx_where(c),
                      t->valuestring);
}

static anvil_status parse_layer(layer_ctx *c, const cJSON *obj, anvil_layer_desc *d)
{
    if (!cJSON_IsObject(obj))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: a layer must be a JSON object, got %s",
                          ctx_where(c), json_kind(obj));
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(obj, "name");
    if (nm && cJSON_IsString(nm) && nm->valuestring[0])
        c->name = nm->valuestring;
    anvil_layer_type type;
    ANVIL_TRY(parse_type(c, obj, &type));
    *d = anvil_layer_default(type);
    layer_state st = {d, false, false, false, false};
    for (const cJSON *v = obj->child; v; v = v->next) {
        const char *key = v->string;
        if (strcmp(key, "type") == 0)
            continue;
        if (strcmp(key, "name") == 0) {
            ANVIL_TRY(want_kind(c, v, cJSON_IsString(v), "a string"));
            if (!v->valuestring[0])
                return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option 'name' is empty",
                                  ctx_where(c));
            d->name = v->valuestring;
            continue;
        }
        if (strcmp(key, "inputs") == 0) {
            ANVIL_TRY(parse_inputs(c, v, d));
            continue;
        }
        size_t k = 0, nopt = sizeof layer_options / sizeof layer_options[0];
        while (k < nopt && strcmp(layer_options[k].key, key) != 0)
            k++;
        if (k == nopt)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: unknown option '%s'", ctx_where(c), key);
        if (!(layer_options[k].types & (1u << type)))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: option '%s' does not apply to a %s layer",
                              ctx_where(c), key, c->type);
        ANVIL_TRY(layer_options[k].fn(c, v, &st));
    }
    if (type == ANVIL_LAYER_LINEAR && !st.have_out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: missing required option 'out_features' "
                          "(or 'units')", ctx_where(c));
    const char *missing = NULL;
    if (type == ANVIL_LAYER_CONV2D && !st.have_channels)
        missing = "out_channels";
    else if ((type == ANVIL_LAYER_CONV2D || type == ANVIL_LAYER_MAXPOOL2D || type == ANVIL_LAYER_AVGPOOL2D) &&
             !st.have_kernel)
        missing = "kernel_size";
    else if (type == ANVIL_LAYER_ADAPTIVE_AVGPOOL2D && !st.have_output_size)
        missing = "output_size";
    if (missing)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: missing required option '%s'", ctx_where(c), missing);
    return ANVIL_OK;
}

/* ---------------------------------------------------------------- the file */

/* "line 3, column 7, near '...'" for where cJSON stopped. */
static void json_position(const char *text, const char *at, char *buf, size_t cap)
{
    size_t len = strlen(text);
    if (!at || at < text || at > text + len)
        at = text + len;
    int line = 1, col = 1;
    for (const char *p = text; p < at; p++) {
        if (*p == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    char near[24];
    size_t k = 0;
    for (; k + 1 < sizeof near && at[k] && at[k] != '\n'; k++)
        near[k] = at[k] >= 0x20 && at[k] < 0x7f ? at[k] : ' ';
    near[k] = '\0';
    if (k)
        snprintf(buf, cap, "line %d, column %d, near '%s'", line, col, near);
    else
        snprintf(buf, cap, "line %d, column %d (end of input)", line, col);
}

/* The default model name: the file's base name without ".json". */
static void default_name(const char *origin, char *buf, size_t cap)
{
    const char *base = strrchr(origin, '/');
    base = base ? base + 1 : origin;
    snprintf(buf, cap, "%s", *base ? base : "model");
    size_t n = strlen(buf);
    if (n > 5 && strcmp(buf + n - 5, ".json") == 0)
        buf[n - 5] = '\0';
}

static anvil_status parse_input_shape(const char *origin, const cJSON *in, int *ndim,
                                      int64_t shape[ANVIL_MAX_DIMS])
{
    if (!in)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: missing \"input\" (the shape of one sample, "
                          "e.g. [1, 28, 28])", origin);
    if (!cJSON_IsArray(in))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: \"input\" must be an array of dimensions, got %s",
                          origin, json_kind(in));
    int n = cJSON_GetArraySize(in);
    if (n < 1 || n > ANVIL_MAX_DIMS - 1)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: \"input\" has %d dimensions; give 1 to %d "
                          "(no batch dimension)", origin, n, ANVIL_MAX_DIMS - 1);
    int i = 0;
    for (const cJSON *d = in->child; d; d = d->next, i++)
        if (!json_integer(d, &shape[i]) || shape[i] <= 0)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: \"input\" dimension %d must be a "
                              "positive integer", origin, i);
    *ndim = n;
    return ANVIL_OK;
}

/* Checks the top level; fills name, input shape and layers. */
static anvil_status parse_top(const char *origin, const cJSON *root, const char **name,
                              int *ndim, int64_t shape[ANVIL_MAX_DIMS], const cJSON **layers)
{
    if (!cJSON_IsObject(root))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: a model file must be a JSON object, got %s",
                          origin, json_kind(root));
    for (const cJSON *k = root->child; k; k = k->next)
        if (strcmp(k->string, "name") && strcmp(k->string, "input") && strcmp(k->string, "layers") &&
            strcmp(k->string, "param_groups"))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: unknown key '%s' (a model file has "
                              "\"name\", \"input\", \"layers\" and \"param_groups\")", origin, k->string);
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (nm && !cJSON_IsString(nm))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: \"name\" must be a string, got %s", origin,
                          json_kind(nm));
    *name = nm ? nm->valuestring : NULL;
    ANVIL_TRY(parse_input_shape(origin, cJSON_GetObjectItemCaseSensitive(root, "input"), ndim,
                                shape));
    *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!*layers)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: missing \"layers\"", origin);
    if (!cJSON_IsArray(*layers))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: \"layers\" must be an array, got %s", origin,
                          json_kind(*layers));
    if (cJSON_GetArraySize(*layers) == 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: \"layers\" is empty", origin);
    return ANVIL_OK;
}

/* "param_groups": [{"params": "*.bias" | [...], "ndim1": true, "weight_decay": 0, ...}] —
 * options under torch.optim's names, over the trainer's (see anvil_param_group). */
static anvil_status parse_groups(const char *origin, const cJSON *v, anvil_model *m)
{
    if (!v)
        return ANVIL_OK;
    if (!cJSON_IsArray(v))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: \"param_groups\" must be an array, got %s", origin, json_kind(v));
    int n = cJSON_GetArraySize(v);
    if (n > ANVIL_MAX_PARAM_GROUPS - 1)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: %d parameter groups, at most %d", origin, n,
                          ANVIL_MAX_PARAM_GROUPS - 1);
    m->groups = anvil_xcalloc((size_t)n + 1, sizeof *m->groups, "parameter groups");
    if (!m->groups)
        return ANVIL_ERR_OOM;
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        ANVIL_TRY(anvil_group_spec_parse(origin, i, e, &m->groups[i]));
        m->n_groups = i + 1;
    }
    return ANVIL_OK;
}

static anvil_status build(anvil_model **out, const char *origin, const cJSON *root)
{
    const char *name = NULL;
    int ndim = 0;
    int64_t shape[ANVIL_MAX_DIMS];
    const cJSON *layers = NULL;
    ANVIL_TRY(parse_top(origin, root, &name, &ndim, shape, &layers));
    char dname[128];
    if (!name) {
        default_name(origin, dname, sizeof dname);
        name = dname;
    }
    anvil_model *m = NULL;
    ANVIL_TRY(anvil_model_create(&m, name, ndim, shape));
    int i = 0;
    for (const cJSON *l = layers->child; l; l = l->next, i++) {
        layer_ctx c = {origin, i, NULL, NULL, {0}};
        anvil_layer_desc d;
        anvil_status s = parse_layer(&c, l, &d);
        if (s == ANVIL_OK) {
            s = anvil_model_add(m, &d);
            if (s != ANVIL_OK) { /* the builder names the layer and shapes; add the file */
                char msg[1024];
                snprintf(msg, sizeof msg, "%s", anvil_last_error());
                anvil_fail(s, "%s: %s", origin, msg);
            }
        }
        if (s != ANVIL_OK) {
            anvil_model_free(m);
            return s;
        }
    }
    anvil_status s = parse_groups(origin, cJSON_GetObjectItemCaseSensitive(root, "param_groups"), m);
    if (s != ANVIL_OK) {
        anvil_model_free(m);
        return s;
    }
    *out = m;
    return ANVIL_OK;
}

anvil_status anvil_model_parse_json(anvil_model **out, const char *text, const char *origin)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_parse_json: out is NULL");
    *out = NULL;
    if (!origin)
        origin = "<model JSON>";
    if (!text)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "%s: model text is NULL", origin);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, true);
    if (!root) {
        char where[128];
        json_position(text, end, where, sizeof where);
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: malformed JSON at %s", origin, where);
    }
    anvil_status s = build(out, origin, root);
    cJSON_Delete(root);
    return s;
}

anvil_status anvil_model_load_json(anvil_model **out, const char *path)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_load_json: out is NULL");
    *out = NULL;
    if (!path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_model_load_json: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f)
        return anvil_fail(ANVIL_ERR_IO, "cannot open model file '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > MODEL_FILE_MAX) {
        fclose(f);
        return anvil_fail(ANVIL_ERR_IO, "model file '%s' is not a regular file of at most %zu "
                          "bytes", path, MODEL_FILE_MAX);
    }
    size_t n = (size_t)st.st_size;
    char *text = anvil_xmalloc(n + 1, "a model file");
    if (!text) {
        fclose(f);
        return ANVIL_ERR_OOM;
    }
    size_t got = fread(text, 1, n, f);
    fclose(f);
    if (got != n) {
        free(text);
        return anvil_fail(ANVIL_ERR_IO, "cannot read model file '%s' (%zu of %zu bytes)", path,
                          got, n);
    }
    text[n] = '\0';
    size_t nul = strlen(text);
    if (nul != n) {
        free(text);
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: malformed JSON: a NUL byte at byte %zu", path,
                          nul);
    }
    anvil_status s = anvil_model_parse_json(out, text, path);
    free(text);
    return s;
}
