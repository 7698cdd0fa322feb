/* options.c — parsing and validation of `anvil train` options (SPEC §3). */
#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char tool_train_usage[] =
    "usage: anvil train [options]\n"
    "\n"
    "  --model NAME|FILE.json    a built-in model (mlp, cnn, resnet18) or a model file (default: mlp)\n"
    "  --data DIR                dataset folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]\n"
    "                            (default: " ANVIL_DEFAULT_DATA_DIR ")\n"
    "  --epochs N                passes over the training set (default: 1)\n"
    "  --steps N                 stop after N optimizer steps in all (overrides --epochs)\n"
    "  --batch-size N            samples per step (default: 128)\n"
    "  --lr X                    learning rate (default: the optimizer's, as torch.optim: sgd, rmsprop,\n"
    "                            adagrad 0.01; adam, adamw 0.001; nadam 0.002; adadelta 1.0)\n"
    "  --optimizer NAME          sgd, adam, adamw, rmsprop, adagrad, adadelta or nadam (default: adam);\n"
    "                            torch.optim's update rules and other defaults\n"
    "  --momentum X              SGD or RMSprop momentum (default: 0)\n"
    "  --nesterov                SGD Nesterov momentum (needs --momentum > 0)\n"
    "  --weight-decay X          L2 penalty; decoupled for adamw (default: 0; adamw 0.01)\n"
    "  --loss NAME               cross_entropy (default), or another loss: the labels then\n"
    "                            become one-hot float targets\n"
    "  --seed N                  parameter init, shuffling, dropout: same seed, same result (default: 0)\n"
    "  --no-shuffle              batches in dataset order\n"
    "  --device auto|cpu|cuda    auto = the GPU when there is one (default: auto)\n"
    "  --init-weights FILE       initial parameters from a safetensors file\n"
    "  --save FILE               final parameters to a safetensors file\n"
    "  --json                    one JSON object per line on stdout (epoch and done events)\n"
    "  -h, --help                this text\n"
    "\n"
    "Exit status: 0 success, 1 runtime error (data, files, device), 2 bad command line.\n";

void tool_options_default(tool_options *o)
{
    memset(o, 0, sizeof *o);
    o->model = "mlp";
    o->data = ANVIL_DEFAULT_DATA_DIR;
    o->epochs = 1;
    o->steps = 0;
    o->batch_size = 128;
    o->optimizer = ANVIL_OPT_ADAM;
    o->loss = ANVIL_LOSS_CROSS_ENTROPY;
    o->seed = 0;
    o->shuffle = true;
    o->device = ANVIL_DEVICE_AUTO;
}

static tool_parse_status usage_error(char *err, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static tool_parse_status usage_error(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return TOOL_PARSE_USAGE;
}

/* A whole decimal integer in [lo, hi], digits only (no sign, no spaces). */
static bool parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > (unsigned long long)INT64_MAX)
        return false;
    if ((int64_t)v < lo || (int64_t)v > hi)
        return false;
    *out = (int64_t)v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = (uint64_t)v;
    return true;
}

/* A finite number that fits a float; whole string consumed. */
static bool parse_float(const char *s, float *out)
{
    if (!s || !*s)
        return false;
    if (*s == ' ' || *s == '\t' || *s == '\n')
        return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return false;
    if (fabs(v) > 3.0e38)
        return false;
    *out = (float)v;
    return true;
}

#define SUPPORTED_OPTIMIZERS "sgd, adam, adamw, rmsprop, adagrad, adadelta, nadam"

static const char *const unsupported_optimizers[] = {"lbfgs"};

static tool_parse_status parse_optimizer(const char *v, anvil_optimizer_kind *out, char *err,
                                         size_t cap)
{
    anvil_optimizer_kind k;
    if (v[0] && anvil_optimizer_parse(v, &k) == ANVIL_OK) {
        *out = k;
        return TOOL_PARSE_OK;
    }
    for (size_t i = 0; i < sizeof unsupported_optimizers / sizeof *unsupported_optimizers; i++)
        if (strcmp(v, unsupported_optimizers[i]) == 0)
            return usage_error(err, cap,
                               "--optimizer '%s' is not supported yet (supported: " SUPPORTED_OPTIMIZERS ")",
                               v);
    return usage_error(err, cap, "unknown --optimizer '%s' (supported: " SUPPORTED_OPTIMIZERS ")", v);
}

static tool_parse_status parse_loss(const char *v, anvil_loss_kind *out, char *err, size_t cap)
{
    anvil_loss_kind k;
    if (v[0] && anvil_loss_parse(v, &k) == ANVIL_OK) {
        *out = k;
        return TOOL_PARSE_OK;
    }
    char known[512] = "";
    size_t len = 0;
    for (int i = 0; i < ANVIL_LOSS_COUNT; i++) {
        const char *n = anvil_loss_name((anvil_loss_kind)i);
        if (!n)
            continue;
        int w = snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", n);
        if (w < 0 || (size_t)w >= sizeof known - len)
            break;
        len += (size_t)w;
    }
    return usage_error(err, cap, "unknown --loss '%s' (known: %s)", v, known);
}

static tool_parse_status parse_device(const char *v, anvil_device *out, char *err, size_t cap)
{
    if (strcmp(v, "auto") == 0)
        *out = ANVIL_DEVICE_AUTO;
    else if (strcmp(v, "cpu") == 0)
        *out = ANVIL_DEVICE_CPU;
    else if (strcmp(v, "cuda") == 0)
        *out = ANVIL_DEVICE_CUDA;
    else
        return usage_error(err, cap, "unknown --device '%s' (expected auto, cpu or cuda)", v);
    return TOOL_PARSE_OK;
}

enum { OPT_FLAG, OPT_VALUE };

typedef struct {
    const char *name;
    int kind;
} opt_spec;

static const opt_spec specs[] = {
    {"--model", OPT_VALUE},      {"--data", OPT_VALUE},        {"--epochs", OPT_VALUE},
    {"--steps", OPT_VALUE},      {"--batch-size", OPT_VALUE},  {"--lr", OPT_VALUE},
    {"--optimizer", OPT_VALUE},  {"--momentum", OPT_VALUE},    {"--nesterov", OPT_FLAG},
    {"--weight-decay", OPT_VALUE}, {"--loss", OPT_VALUE},      {"--seed", OPT_VALUE},
    {"--no-shuffle", OPT_FLAG},  {"--device", OPT_VALUE},      {"--init-weights", OPT_VALUE},
    {"--save", OPT_VALUE},       {"--json", OPT_FLAG},         {"--help", OPT_FLAG},
    {"-h", OPT_FLAG},
};

static const opt_spec *find_spec(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        if (strlen(specs[i].name) == len && strncmp(specs[i].name, name, len) == 0)
            return &specs[i];
    return NULL;
}

#define MAX_EPOCHS ((int64_t)1000000000)
#define MAX_STEPS ((int64_t)1000000000000000)
#define MAX_BATCH ((int64_t)16777216)

/* A whole number from 1 to max for option `name`. */
static tool_parse_status parse_count(const char *name, const char *v, int64_t max, int64_t *out, char *err,
                                     size_t cap)
{
    if (!parse_int(v, 1, max, out))
        return usage_error(err, cap, "invalid value '%s' for %s: expected a whole number from 1 to %lld", v, name,
                           (long long)max);
    return TOOL_PARSE_OK;
}

static tool_parse_status apply(tool_options *o, const char *name, const char *v, char *err,
                               size_t cap)
{
    if (strcmp(name, "--model") == 0) {
        if (!*v)
            return usage_error(err, cap, "--model needs a non-empty value");
        o->model = v;
    } else if (strcmp(name, "--data") == 0) {
        if (!*v)
            return usage_error(err, cap, "--data needs a non-empty value");
        o->data = v;
    } else if (strcmp(name, "--epochs") == 0) {
        return parse_count(name, v, MAX_EPOCHS, &o->epochs, err, cap);
    } else if (strcmp(name, "--steps") == 0) {
        return parse_count(name, v, MAX_STEPS, &o->steps, err, cap);
    } else if (strcmp(name, "--batch-size") == 0) {
        return parse_count(name, v, MAX_BATCH, &o->batch_size, err, cap);
    } else if (strcmp(name, "--lr") == 0) {
        if (!parse_float(v, &o->lr) || !(o->lr > 0.0f))
            return usage_error(err, cap,
                               "invalid value '%s' for --lr: expected a finite number > 0", v);
        o->have_lr = true;
    } else if (strcmp(name, "--optimizer") == 0) {
        return parse_optimizer(v, &o->optimizer, err, cap);
    } else if (strcmp(name, "--momentum") == 0) {
        if (!parse_float(v, &o->momentum) || o->momentum < 0.0f)
            return usage_error(err, cap,
                               "invalid value '%s' for --momentum: expected a finite number "
                               ">= 0",
                               v);
        o->have_momentum = true;
    } else if (strcmp(name, "--weight-decay") == 0) {
        if (!parse_float(v, &o->weight_decay) || o->weight_decay < 0.0f)
            return usage_error(err, cap,
                               "invalid value '%s' for --weight-decay: expected a finite "
                               "number >= 0",
                               v);
        o->have_weight_decay = true;
    } else if (strcmp(name, "--loss") == 0) {
        return parse_loss(v, &o->loss, err, cap);
    } else if (strcmp(name, "--seed") == 0) {
        if (!parse_u64(v, &o->seed))
            return usage_error(err, cap,
                               "invalid value '%s' for --seed: expected a whole number from 0 "
                               "to 18446744073709551615",
                               v);
    } else if (strcmp(name, "--device") == 0) {
        return parse_device(v, &o->device, err, cap);
    } else if (strcmp(name, "--init-weights") == 0) {
        if (!*v)
            return usage_error(err, cap, "--init-weights needs a non-empty value");
        o->init_weights = v;
    } else if (strcmp(name, "--save") == 0) {
        if (!*v)
            return usage_error(err, cap, "--save needs a non-empty value");
        o->save = v;
    } else if (strcmp(name, "--nesterov") == 0) {
        o->nesterov = true;
    } else if (strcmp(name, "--no-shuffle") == 0) {
        o->shuffle = false;
    } else if (strcmp(name, "--json") == 0) {
        o->json = true;
    } else if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        o->help = true;
    }
    return TOOL_PARSE_OK;
}

tool_parse_status tool_options_parse(tool_options *o, int argc, char **argv, char *err,
                                     size_t cap)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || arg[1] == '\0')
            return usage_error(err, cap, "unexpected argument '%s'", arg);
        const char *eq = strchr(arg, '=');
        size_t name_len = eq && arg[1] == '-' ? (size_t)(eq - arg) : strlen(arg);
        const opt_spec *spec = find_spec(arg, name_len);
        if (!spec)
            return usage_error(err, cap, "unknown option '%.*s'", (int)name_len, arg);
        char name[32];
        snprintf(name, sizeof name, "%s", spec->name);
        const char *value = NULL;
        if (spec->kind == OPT_FLAG) {
            if (eq && arg[1] == '-')
                return usage_error(err, cap, "option %s takes no value (got '%s')", name,
                                   eq + 1);
        } else if (eq && arg[1] == '-') {
            value = eq + 1;
        } else {
            if (i + 1 >= argc)
                return usage_error(err, cap, "option %s needs a value", name);
            value = argv[i + 1];
            if (value[0] == '-' && value[1] == '-')
                return usage_error(err, cap, "option %s needs a value (got option '%s')", name,
                                   value);
            i++;
        }
        tool_parse_status s = apply(o, name, value, err, cap);
        if (s != TOOL_PARSE_OK)
            return s;
        if (o->help)
            return TOOL_PARSE_OK; /* --help wins over whatever follows */
    }

    /* Options that only make sense together. */
    if (o->nesterov && o->optimizer != ANVIL_OPT_SGD)
        return usage_error(err, cap, "--nesterov applies only to --optimizer sgd (got '%s')",
                           anvil_optimizer_name(o->optimizer));
    if (o->have_momentum && o->optimizer != ANVIL_OPT_SGD && o->optimizer != ANVIL_OPT_RMSPROP)
        return usage_error(err, cap, "--momentum applies only to --optimizer sgd or rmsprop (got '%s')",
                           anvil_optimizer_name(o->optimizer));
    if (o->nesterov && !(o->have_momentum && o->momentum > 0.0f))
        return usage_error(err, cap, "--nesterov needs --momentum > 0");
    return TOOL_PARSE_OK;
}
