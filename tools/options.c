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
    "  --optimizer NAME          sgd, adam, adamw, rmsprop, adagrad, adadelta, nadam or lbfgs (default: adam);\n"
    "                            torch.optim's update rules and other defaults\n"
    "  --momentum X              SGD or RMSprop momentum (default: 0)\n"
    "  --nesterov                SGD Nesterov momentum (needs --momentum > 0)\n"
    "  --weight-decay X          L2 penalty; decoupled for adamw (default: 0; adamw 0.01)\n"
    "  Each optimizer's other options, torch.optim's names and defaults (an option the\n"
    "  optimizer does not have is an error):\n"
    "  --dampening X (sgd)  --betas B1,B2 --amsgrad (adam, adamw; nadam betas)  --eps X\n"
    "  --maximize  --alpha X --centered (rmsprop)  --lr-decay X\n"
    "  --initial-accumulator-value X (adagrad)  --rho X (adadelta)\n"
    "  --momentum-decay X --decoupled-weight-decay (nadam)\n"
    "  --history-size N (100) --max-iter N (20) --max-eval N (max-iter*5/4) --tolerance-grad X (1e-7)\n"
    "  --tolerance-change X (1e-9) --line-search strong_wolfe|none (lbfgs: one torch LBFGS.step per\n"
    "  batch; no --schedule, clipping or weight decay)\n"
    "  --schedule NAME[,KEY=VALUE...]\n"
    "                            learning-rate schedule, torch.optim.lr_scheduler's, stepped once per\n"
    "                            epoch (per=step: per optimizer step; one_cycle: per step):\n"
    "                            step (step_size, gamma=0.1), multistep (milestones=A:B:..., gamma),\n"
    "                            exponential (gamma=0.95), cosine (t_max=the run's length, eta_min=0),\n"
    "                            cosine_restarts (t_0, t_mult=1, eta_min), one_cycle (max_lr = --lr;\n"
    "                            total_steps=the run's, pct_start=0.3, anneal=cos|linear,\n"
    "                            div_factor=25, final_div_factor=1e4, three_phase=0|1), plateau (on the\n"
    "                            test loss: mode=min|max, factor=0.1, patience=10, threshold=1e-4,\n"
    "                            threshold_mode=rel|abs, cooldown=0, min_lr=0, eps=1e-8); any but\n"
    "                            plateau also takes warmup=N, warmup_start_factor=X (linear warm-up\n"
    "                            over N epochs/steps first).  e.g. --schedule cosine,warmup=2\n"
    "  --clip-grad-norm X        scale gradients to total norm <= X (torch clip_grad_norm_)\n"
    "  --clip-norm-type P        the norm for --clip-grad-norm: a number > 0 or inf (default: 2)\n"
    "  --clip-grad-value X       clamp every gradient to [-X, X] (before norm clipping)\n"
    "  --checkpoint-every N      write a resumable checkpoint every N steps (at the end of an\n"
    "                            epoch: after its evaluation), atomically\n"
    "  --checkpoint FILE         where (default: anvil-checkpoint.safetensors)\n"
    "  --resume FILE             continue from a checkpoint; give the same options as the run that\n"
    "                            wrote it: the result is the same, bit for bit, as if never stopped\n"
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
    o->schedule = anvil_schedule_default_config(ANVIL_SCHED_CONSTANT);
    o->clip_norm_type = 2.0f;
    o->checkpoint = "anvil-checkpoint.safetensors";
}

#define OFF(f) offsetof(anvil_optimizer_config, f)
const tool_opt_flag tool_opt_flags[] = {
    {"--lr", TOOL_OPT_FLOAT, OFF(lr)},
    {"--momentum", TOOL_OPT_FLOAT, OFF(momentum)},
    {"--dampening", TOOL_OPT_FLOAT, OFF(dampening)},
    {"--nesterov", TOOL_OPT_BOOL, OFF(nesterov)},
    {"--weight-decay", TOOL_OPT_FLOAT, OFF(weight_decay)},
    {"--betas", TOOL_OPT_PAIR, OFF(beta1)},
    {"--eps", TOOL_OPT_FLOAT, OFF(eps)},
    {"--maximize", TOOL_OPT_BOOL, OFF(maximize)},
    {"--amsgrad", TOOL_OPT_BOOL, OFF(amsgrad)},
    {"--alpha", TOOL_OPT_FLOAT, OFF(alpha)},
    {"--centered", TOOL_OPT_BOOL, OFF(centered)},
    {"--lr-decay", TOOL_OPT_FLOAT, OFF(lr_decay)},
    {"--initial-accumulator-value", TOOL_OPT_FLOAT, OFF(initial_accumulator_value)},
    {"--rho", TOOL_OPT_FLOAT, OFF(rho)},
    {"--momentum-decay", TOOL_OPT_FLOAT, OFF(momentum_decay)},
    {"--decoupled-weight-decay", TOOL_OPT_BOOL, OFF(decoupled_weight_decay)},
    {"--history-size", TOOL_OPT_INT, OFF(history_size)},
    {"--max-iter", TOOL_OPT_INT, OFF(max_iter)},
    {"--max-eval", TOOL_OPT_INT, OFF(max_eval)},
    {"--tolerance-grad", TOOL_OPT_FLOAT, OFF(tolerance_grad)},
    {"--tolerance-change", TOOL_OPT_FLOAT, OFF(tolerance_change)},
    {"--line-search", TOOL_OPT_LINE_SEARCH, OFF(strong_wolfe)},
};
const int tool_n_opt_flags = (int)(sizeof tool_opt_flags / sizeof tool_opt_flags[0]);

static int opt_flag_index(const char *name)
{
    for (int i = 0; i < tool_n_opt_flags; i++)
        if (strcmp(tool_opt_flags[i].flag, name) == 0)
            return i;
    return -1;
}

void tool_apply_optimizer_options(const tool_options *o, anvil_optimizer_config *c)
{
    for (int i = 0; i < tool_n_opt_flags; i++) {
        if (!(o->opt_given & (1u << i)))
            continue;
        const tool_opt_flag *f = &tool_opt_flags[i];
        size_t n = f->kind == TOOL_OPT_BOOL || f->kind == TOOL_OPT_LINE_SEARCH ? sizeof(bool)
                   : f->kind == TOOL_OPT_PAIR                                 ? 2 * sizeof(float)
                   : f->kind == TOOL_OPT_INT                                  ? sizeof(int)
                                                                              : sizeof(float);
        memcpy((char *)c + f->offset, (const char *)&o->opt + f->offset, n);
    }
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

#define SUPPORTED_OPTIMIZERS "sgd, adam, adamw, rmsprop, adagrad, adadelta, nadam, lbfgs"

static tool_parse_status parse_optimizer(const char *v, anvil_optimizer_kind *out, char *err,
                                         size_t cap)
{
    anvil_optimizer_kind k;
    if (v[0] && anvil_optimizer_parse(v, &k) == ANVIL_OK) {
        *out = k;
        return TOOL_PARSE_OK;
    }
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
    {"--steps", OPT_VALUE},      {"--batch-size", OPT_VALUE},  {"--optimizer", OPT_VALUE},
    {"--loss", OPT_VALUE},       {"--seed", OPT_VALUE},
    {"--no-shuffle", OPT_FLAG},  {"--device", OPT_VALUE},      {"--init-weights", OPT_VALUE},
    {"--save", OPT_VALUE},       {"--json", OPT_FLAG},         {"--help", OPT_FLAG},
    {"-h", OPT_FLAG},            {"--schedule", OPT_VALUE},    {"--clip-grad-norm", OPT_VALUE},
    {"--clip-grad-value", OPT_VALUE}, {"--clip-norm-type", OPT_VALUE}, {"--checkpoint", OPT_VALUE},
    {"--checkpoint-every", OPT_VALUE}, {"--resume", OPT_VALUE},
};

static const opt_spec *find_spec(const char *name, size_t len)
{
    static opt_spec opt; /* an optimizer option of tool_opt_flags */
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        if (strlen(specs[i].name) == len && strncmp(specs[i].name, name, len) == 0)
            return &specs[i];
    for (int i = 0; i < tool_n_opt_flags; i++)
        if (strlen(tool_opt_flags[i].flag) == len && strncmp(tool_opt_flags[i].flag, name, len) == 0) {
            opt.name = tool_opt_flags[i].flag;
            opt.kind = tool_opt_flags[i].kind == TOOL_OPT_BOOL ? OPT_FLAG : OPT_VALUE;
            return &opt;
        }
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

/* An optimizer option of tool_opt_flags (flags have v == NULL). */
static tool_parse_status parse_optimizer_option(tool_options *o, int i, const char *v, char *err, size_t cap)
{
    const tool_opt_flag *f = &tool_opt_flags[i];
    char *field = (char *)&o->opt + f->offset;
    o->opt_given |= 1u << i;
    if (f->kind == TOOL_OPT_BOOL) {
        *(bool *)field = true;
        return TOOL_PARSE_OK;
    }
    if (f->kind == TOOL_OPT_LINE_SEARCH) {
        if (strcmp(v, "strong_wolfe") && strcmp(v, "none"))
            return usage_error(err, cap, "invalid value '%s' for --line-search: expected strong_wolfe or none", v);
        *(bool *)field = strcmp(v, "strong_wolfe") == 0;
        return TOOL_PARSE_OK;
    }
    if (f->kind == TOOL_OPT_INT) {
        int64_t k;
        if (!parse_int(v, 0, 1000000000, &k))
            return usage_error(err, cap, "invalid value '%s' for %s: expected a whole number >= 0", v, f->flag);
        *(int *)field = (int)k;
        return TOOL_PARSE_OK;
    }
    float *x = (float *)field;
    if (f->kind == TOOL_OPT_PAIR) {
        char a[64];
        const char *comma = strchr(v, ',');
        size_t la = comma ? (size_t)(comma - v) : 0;
        if (!comma || la >= sizeof a)
            return usage_error(err, cap, "invalid value '%s' for %s: expected two numbers, e.g. 0.9,0.999", v, f->flag);
        memcpy(a, v, la);
        a[la] = '\0';
        if (!parse_float(a, &x[0]) || !parse_float(comma + 1, &x[1]) || x[0] < 0.0f || x[1] < 0.0f)
            return usage_error(err, cap, "invalid value '%s' for %s: expected two numbers >= 0, e.g. 0.9,0.999", v,
                               f->flag);
        return TOOL_PARSE_OK;
    }
    bool positive = strcmp(f->flag, "--lr") == 0;
    if (!parse_float(v, x) || (positive ? !(*x > 0.0f) : *x < 0.0f))
        return usage_error(err, cap, "invalid value '%s' for %s: expected a finite number %s", v, f->flag,
                           positive ? "> 0" : ">= 0");
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
    } else if (opt_flag_index(name) >= 0) {
        return parse_optimizer_option(o, opt_flag_index(name), v, err, cap);
    } else if (strcmp(name, "--optimizer") == 0) {
        return parse_optimizer(v, &o->optimizer, err, cap);
    } else if (strcmp(name, "--schedule") == 0) {
        return tool_parse_schedule(o, v, err, cap);
    } else if (strcmp(name, "--clip-grad-norm") == 0 || strcmp(name, "--clip-grad-value") == 0) {
        float *f = strcmp(name, "--clip-grad-norm") == 0 ? &o->clip_grad_norm : &o->clip_grad_value;
        if (!parse_float(v, f) || !(*f > 0.0f))
            return usage_error(err, cap, "invalid value '%s' for %s: expected a finite number > 0", v, name);
    } else if (strcmp(name, "--clip-norm-type") == 0) {
        o->have_clip_norm_type = true;
        if (strcmp(v, "inf") == 0)
            o->clip_norm_type = INFINITY;
        else if (!parse_float(v, &o->clip_norm_type) || !(o->clip_norm_type > 0.0f))
            return usage_error(err, cap, "invalid value '%s' for --clip-norm-type: expected a number > 0 or inf", v);
    } else if (strcmp(name, "--checkpoint-every") == 0) {
        return parse_count(name, v, MAX_STEPS, &o->checkpoint_every, err, cap);
    } else if (strcmp(name, "--checkpoint") == 0 || strcmp(name, "--resume") == 0) {
        if (!*v)
            return usage_error(err, cap, "%s needs a non-empty value", name);
        *(name[2] == 'c' ? &o->checkpoint : &o->resume) = v;
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

    /* Options that only make sense together: the optimizer's own checks (torch's
     * options per optimizer), as a usage error naming the flag's option. */
    anvil_optimizer_config c = anvil_optimizer_default_config(o->optimizer);
    tool_apply_optimizer_options(o, &c);
    bool nesterov = c.nesterov, momentum = o->opt_given & (1u << opt_flag_index("--momentum"));
    if (nesterov && o->optimizer != ANVIL_OPT_SGD)
        return usage_error(err, cap, "--nesterov applies only to --optimizer sgd (got '%s')",
                           anvil_optimizer_name(o->optimizer));
    if (momentum && o->optimizer != ANVIL_OPT_SGD && o->optimizer != ANVIL_OPT_RMSPROP)
        return usage_error(err, cap, "--momentum applies only to --optimizer sgd or rmsprop (got '%s')",
                           anvil_optimizer_name(o->optimizer));
    if (nesterov && !(c.momentum > 0.0f))
        return usage_error(err, cap, "--nesterov needs --momentum > 0");
    if (anvil_optimizer_check(&c) != ANVIL_OK)
        return usage_error(err, cap, "%s", anvil_last_error());
    if (o->have_clip_norm_type && !(o->clip_grad_norm > 0.0f))
        return usage_error(err, cap, "--clip-norm-type needs --clip-grad-norm");
    return TOOL_PARSE_OK;
}
