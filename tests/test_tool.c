/* test_tool.c — the `anvil` command-line tool, run as a separate process (SPEC §3).
 *
 * Bad input of every kind must give a non-zero exit status (2 for a bad command line, 1
 * for a runtime error), a message on stderr that names the culprit, and never a crash.
 * A happy path trains the built-in mlp for a few steps on a tiny IDX dataset this test
 * writes, and checks the --json output line by line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anvil.h" /* anvil_blas_coretype_advice */

extern char **environ;

#define TOOL_TIMEOUT_S 600
#define N_TRAIN 256
#define N_TEST 64
#define SIDE 28
#define CLASSES 10

/* ---------------------------------------------------------------- fixture */

static char g_dir[256];          /* the temporary folder of this run */
static char g_data[320];         /* a good dataset */
static char g_trunc[320];        /* a dataset whose training images are truncated */
static char g_empty[320];        /* an existing folder without dataset files */
static char g_bad_model[320];    /* a model file with an unknown layer type */
static char g_bad_json[320];     /* a model file that is not JSON */
static char g_small_model[320];  /* a good model file: flatten + linear */
static char g_weights[320];      /* --save target */
static char g_garbage[320];      /* a file that is no safetensors file */
/* The output of the latest run; freed by the next run and by teardown, so that a failed
 * assertion (which longjmps out of a test) leaks nothing. */
static char *g_out, *g_err;

static void put_be32(FILE *f, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

static bool write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* A learnable pattern: class c lights up rows 2c+3 and 2c+4; the rest is dim noise. */
static bool write_idx_pair(const char *dir, const char *prefix, int n, uint32_t seed,
                           bool truncate_images)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    if (!fi || !fl) {
        if (fi)
            fclose(fi);
        if (fl)
            fclose(fl);
        return false;
    }
    put_be32(fi, 0x00000803);
    put_be32(fi, (uint32_t)n);
    put_be32(fi, SIDE);
    put_be32(fi, SIDE);
    put_be32(fl, 0x00000801);
    put_be32(fl, (uint32_t)n);
    uint32_t state = seed;
    int written = truncate_images ? n / 2 : n;
    for (int i = 0; i < n; i++) {
        int label = i % CLASSES;
        unsigned char lab = (unsigned char)label;
        fwrite(&lab, 1, 1, fl);
        if (i >= written)
            continue;
        unsigned char img[SIDE * SIDE];
        for (int p = 0; p < SIDE * SIDE; p++) {
            state = state * 1664525u + 1013904223u;
            img[p] = (unsigned char)((state >> 24) & 63);
        }
        for (int r = 2 * label + 3; r <= 2 * label + 4; r++)
            for (int c = 4; c < SIDE - 4; c++)
                img[r * SIDE + c] = 255;
        fwrite(img, 1, sizeof img, fi);
    }
    if (truncate_images)
        fwrite("\x01\x02\x03", 1, 3, fi); /* and a ragged end */
    bool ok = fclose(fi) == 0;
    ok = fclose(fl) == 0 && ok;
    return ok;
}

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/anvil-test-tool-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_data, sizeof g_data, "%s/data", g_dir);
    snprintf(g_trunc, sizeof g_trunc, "%s/truncated", g_dir);
    snprintf(g_empty, sizeof g_empty, "%s/empty", g_dir);
    snprintf(g_bad_model, sizeof g_bad_model, "%s/bad_layer.json", g_dir);
    snprintf(g_bad_json, sizeof g_bad_json, "%s/not_json.json", g_dir);
    snprintf(g_small_model, sizeof g_small_model, "%s/small.json", g_dir);
    snprintf(g_weights, sizeof g_weights, "%s/weights.safetensors", g_dir);
    snprintf(g_garbage, sizeof g_garbage, "%s/garbage.safetensors", g_dir);
    if (mkdir(g_data, 0700) || mkdir(g_trunc, 0700) || mkdir(g_empty, 0700))
        return -1;
    if (!write_idx_pair(g_data, "train", N_TRAIN, 1u, false) ||
        !write_idx_pair(g_data, "t10k", N_TEST, 2u, false) ||
        !write_idx_pair(g_trunc, "train", N_TRAIN, 1u, true) ||
        !write_idx_pair(g_trunc, "t10k", N_TEST, 2u, false))
        return -1;
    if (!write_text(g_bad_model,
                    "{\"name\": \"bad\", \"input\": [1, 28, 28], \"layers\": [\n"
                    "  {\"type\": \"flatten\"},\n"
                    "  {\"type\": \"linear\", \"out_features\": 32},\n"
                    "  {\"type\": \"frobnicate\"},\n"
                    "  {\"type\": \"linear\", \"out_features\": 10}]}\n") ||
        !write_text(g_bad_json, "{\"input\": [1, 28, 28], \"layers\": [ {\"type\": \n") ||
        !write_text(g_small_model,
                    "{\"name\": \"small\", \"input\": [1, 28, 28], \"layers\": [\n"
                    "  {\"type\": \"flatten\"},\n"
                    "  {\"type\": \"linear\", \"out_features\": 10}]}\n") ||
        !write_text(g_garbage, "this is not a safetensors file, not even close\n"))
        return -1;
    return 0;
}

static void remove_dir(const char *dir, const char *const *names)
{
    char path[512];
    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int teardown(void **state)
{
    (void)state;
    static const char *const idx[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", NULL};
    static const char *const none[] = {NULL};
    static const char *const top[] = {"bad_layer.json", "not_json.json", "small.json",
                                      "weights.safetensors", "garbage.safetensors",
                                      "small.safetensors", "stdout", "stderr", NULL};
    remove_dir(g_data, idx);
    remove_dir(g_trunc, idx);
    remove_dir(g_empty, none);
    remove_dir(g_dir, top);
    free(g_out);
    free(g_err);
    g_out = g_err = NULL;
    return 0;
}

/* ---------------------------------------------------------------- running the tool */

typedef struct {
    int status;   /* raw wait status */
    char *out;    /* stdout */
    char *err;    /* stderr */
    char cmd[2048];
} run_result;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return calloc(1, 1);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf ? buf : calloc(1, 1);
}

static void run_free(run_result *r) { r->out = r->err = NULL; }

/* Runs the tool with a NULL-terminated list of arguments. */
static void run_tool_v(run_result *r, const char *const *args)
{
    memset(r, 0, sizeof *r);
    char out_path[512], err_path[512];
    snprintf(out_path, sizeof out_path, "%s/stdout", g_dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", g_dir);

    const char *argv[64];
    int argc = 0;
    argv[argc++] = ANVIL_TOOL_PATH;
    size_t len = (size_t)snprintf(r->cmd, sizeof r->cmd, "anvil");
    for (int i = 0; args[i] && argc < 63; i++) {
        argv[argc++] = args[i];
        if (len < sizeof r->cmd)
            len += (size_t)snprintf(r->cmd + len, sizeof r->cmd - len, " %s", args[i]);
    }
    argv[argc] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int rc = posix_spawn(&pid, ANVIL_TOOL_PATH, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        fail_msg("cannot start %s: %s", ANVIL_TOOL_PATH, strerror(rc));

    struct timespec tick = {0, 10 * 1000 * 1000};
    double waited = 0.0;
    for (;;) {
        pid_t w = waitpid(pid, &r->status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR)
            fail_msg("waitpid: %s", strerror(errno));
        if (waited > TOOL_TIMEOUT_S) {
            kill(pid, SIGKILL);
            waitpid(pid, &r->status, 0);
            fail_msg("`%s` did not finish within %d s", r->cmd, TOOL_TIMEOUT_S);
        }
        nanosleep(&tick, NULL);
        waited += 0.01;
    }
    free(g_out);
    free(g_err);
    g_out = r->out = slurp(out_path);
    g_err = r->err = slurp(err_path);
}

#define run_tool(r, ...)                                    \
    do {                                                    \
        const char *const args_[] = {__VA_ARGS__, NULL};    \
        run_tool_v((r), args_);                             \
    } while (0)

static bool contains(const char *hay, const char *needle)
{
    return hay && needle && strstr(hay, needle) != NULL;
}

/* The process ended by itself (no signal) with `code`, and no sanitizer spoke up. */
static void expect_exit(const run_result *r, int code)
{
    if (WIFSIGNALED(r->status))
        fail_msg("`%s` was killed by signal %d (a crash)\nstderr:\n%s", r->cmd,
                 WTERMSIG(r->status), r->err);
    if (!WIFEXITED(r->status))
        fail_msg("`%s` did not exit normally", r->cmd);
    if (contains(r->err, "Sanitizer") || contains(r->err, "runtime error:"))
        fail_msg("`%s`: a sanitizer reported a problem:\n%s", r->cmd, r->err);
    if (WEXITSTATUS(r->status) != code)
        fail_msg("`%s` exited with %d, expected %d\nstdout:\n%s\nstderr:\n%s", r->cmd,
                 WEXITSTATUS(r->status), code, r->out, r->err);
}

static void expect_stderr_names(const run_result *r, const char *what)
{
    if (!contains(r->err, what))
        fail_msg("`%s`: stderr does not name '%s':\n%s", r->cmd, what, r->err);
}

/* ---------------------------------------------------------------- a tiny JSON reader
 * Enough for the tool's output: one flat object per line, values are strings, numbers,
 * true, false or null.  Strict about the grammar (no NaN, no trailing commas). */

#define MAX_FIELDS 16

typedef struct {
    int n;
    char key[MAX_FIELDS][32];
    char sval[MAX_FIELDS][64];
    double num[MAX_FIELDS];
    int kind[MAX_FIELDS]; /* 0 number, 1 string, 2 null, 3 bool */
} json_obj;

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

static const char *parse_string(const char *p, char *dst, size_t cap)
{
    if (*p != '"')
        return NULL;
    p++;
    size_t n = 0;
    while (*p && *p != '"') {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (!*p)
                return NULL;
        }
        if (n + 1 < cap)
            dst[n++] = *p;
        p++;
    }
    if (*p != '"')
        return NULL;
    dst[n] = '\0';
    return p + 1;
}

static const char *parse_number(const char *p, double *out)
{
    const char *s = p;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    *out = strtod(s, NULL);
    return p;
}

static bool parse_flat_object(const char *line, json_obj *o)
{
    memset(o, 0, sizeof *o);
    const char *p = skip_ws(line);
    if (*p++ != '{')
        return false;
    p = skip_ws(p);
    if (*p == '}')
        return *skip_ws(p + 1) == '\0';
    for (;;) {
        if (o->n >= MAX_FIELDS)
            return false;
        p = parse_string(skip_ws(p), o->key[o->n], sizeof o->key[o->n]);
        if (!p)
            return false;
        p = skip_ws(p);
        if (*p++ != ':')
            return false;
        p = skip_ws(p);
        if (*p == '"') {
            o->kind[o->n] = 1;
            p = parse_string(p, o->sval[o->n], sizeof o->sval[o->n]);
        } else if (strncmp(p, "null", 4) == 0) {
            o->kind[o->n] = 2;
            p += 4;
        } else if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0) {
            o->kind[o->n] = 3;
            p += *p == 't' ? 4 : 5;
        } else {
            o->kind[o->n] = 0;
            p = parse_number(p, &o->num[o->n]);
        }
        if (!p)
            return false;
        o->n++;
        p = skip_ws(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '}')
            return false;
        return *skip_ws(p + 1) == '\0';
    }
}

static int field(const json_obj *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->key[i], key) == 0)
            return i;
    return -1;
}

static double num_field(const json_obj *o, const char *key, const char *line)
{
    int i = field(o, key);
    if (i < 0 || o->kind[i] != 0)
        fail_msg("JSON line lacks a number '%s': %s", key, line);
    return o->num[i];
}

/* Splits stdout into lines, checks each is one valid event object with every field. */
typedef struct {
    int n;
    json_obj obj[256];
} json_lines;

static void parse_json_output(const run_result *r, json_lines *jl)
{
    static const char *const fields[] = {"epoch", "step", "train_loss", "test_loss",
                                         "test_accuracy", "seconds", "samples_per_s"};
    jl->n = 0;
    char *copy = strdup(r->out);
    assert_non_null(copy);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (jl->n >= 256)
            fail_msg("too many lines on stdout");
        json_obj *o = &jl->obj[jl->n];
        if (!parse_flat_object(line, o)) {
            char msg[1024];
            snprintf(msg, sizeof msg, "`%.400s`: stdout line is not one JSON object: %.400s",
                     r->cmd, line);
            free(copy);
            fail_msg("%s", msg);
        }
        int e = field(o, "event");
        if (e < 0 || o->kind[e] != 1 ||
            (strcmp(o->sval[e], "epoch") != 0 && strcmp(o->sval[e], "done") != 0)) {
            free(copy);
            fail_msg("`%s`: line without a known \"event\"", r->cmd);
        }
        for (size_t k = 0; k < sizeof fields / sizeof *fields; k++) {
            int i = field(o, fields[k]);
            if (i < 0 || o->kind[i] != 0) {
                free(copy);
                fail_msg("`%s`: event line lacks numeric field '%s'", r->cmd, fields[k]);
            }
        }
        jl->n++;
    }
    free(copy);
    if (jl->n == 0)
        fail_msg("`%s`: nothing on stdout", r->cmd);
    for (int i = 0; i < jl->n; i++) {
        const char *ev = jl->obj[i].sval[field(&jl->obj[i], "event")];
        bool last = i == jl->n - 1;
        if (last != (strcmp(ev, "done") == 0))
            fail_msg("`%s`: \"done\" must be the last line and only the last", r->cmd);
    }
}

static double get(const json_obj *o, const char *key) { return num_field(o, key, "(event)"); }

static void check_event_values(const json_obj *o)
{
    double acc = get(o, "test_accuracy");
    assert_true(acc >= 0.0 && acc <= 1.0);
    assert_true(isfinite(get(o, "train_loss")) && get(o, "train_loss") >= 0.0);
    assert_true(isfinite(get(o, "test_loss")) && get(o, "test_loss") >= 0.0);
    assert_true(get(o, "seconds") >= 0.0);
    assert_true(get(o, "samples_per_s") >= 0.0);
    assert_true(get(o, "epoch") >= 1.0);
    assert_true(get(o, "step") >= 1.0);
}

/* ---------------------------------------------------------------- tests */

static void test_help_and_version(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "--help");
    expect_exit(&r, 0);
    assert_true(contains(r.out, "train"));
    run_free(&r);

    run_tool(&r, "train", "--help");
    expect_exit(&r, 0);
    static const char *const opts[] = {"--model", "--data", "--epochs", "--steps",
                                       "--batch-size", "--lr", "--optimizer", "--momentum",
                                       "--nesterov", "--weight-decay", "--loss", "--seed",
                                       "--no-shuffle", "--device", "--init-weights", "--save",
                                       "--json"};
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        if (!contains(r.out, opts[i]))
            fail_msg("train --help does not mention %s", opts[i]);
    run_free(&r);

    run_tool(&r, "--version");
    expect_exit(&r, 0);
    assert_true(contains(r.out, "0.1.0"));
    run_free(&r);

    const char *const none[] = {NULL};
    run_tool_v(&r, none);
    expect_exit(&r, 2);
    assert_true(r.err[0] != '\0');
    run_free(&r);

    run_tool(&r, "frobnicate");
    expect_exit(&r, 2);
    expect_stderr_names(&r, "frobnicate");
    run_free(&r);
}

typedef struct {
    const char *args[6];
    const char *culprit[3];
} bad_case;

static void test_bad_options(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {{"--epochs", "abc"}, {"--epochs", "abc"}},
        {{"--epochs", "0"}, {"--epochs", "0"}},
        {{"--epochs", "-1"}, {"--epochs", "-1"}},
        {{"--epochs", "1.5"}, {"--epochs", "1.5"}},
        {{"--epochs", ""}, {"--epochs"}},
        {{"--steps", "x7"}, {"--steps", "x7"}},
        {{"--steps", "0"}, {"--steps", "0"}},
        {{"--steps", "-3"}, {"--steps", "-3"}},
        {{"--batch-size", "0"}, {"--batch-size", "0"}},
        {{"--batch-size", "-5"}, {"--batch-size", "-5"}},
        {{"--batch-size", "12abc"}, {"--batch-size", "12abc"}},
        {{"--batch-size", "99999999999999999999"}, {"--batch-size", "99999999999999999999"}},
        {{"--batch-size", " 64"}, {"--batch-size"}},
        {{"--lr", "abc"}, {"--lr", "abc"}},
        {{"--lr", "-0.1"}, {"--lr", "-0.1"}},
        {{"--lr", "0"}, {"--lr", "0"}},
        {{"--lr", "nan"}, {"--lr", "nan"}},
        {{"--lr", "inf"}, {"--lr", "inf"}},
        {{"--lr", "1e999"}, {"--lr", "1e999"}},
        {{"--lr=0.1x"}, {"--lr", "0.1x"}},
        {{"--optimizer", "sgd", "--momentum", "fast"}, {"--momentum", "fast"}},
        {{"--optimizer", "sgd", "--momentum", "-0.9"}, {"--momentum", "-0.9"}},
        {{"--weight-decay", "foo"}, {"--weight-decay", "foo"}},
        {{"--weight-decay", "-1"}, {"--weight-decay", "-1"}},
        {{"--seed", "-1"}, {"--seed", "-1"}},
        {{"--seed", "abc"}, {"--seed", "abc"}},
        {{"--seed", "99999999999999999999999"}, {"--seed", "99999999999999999999999"}},
        {{"--optimizer", "foo"}, {"--optimizer", "foo"}},
        {{"--optimizer", "lbfgs", "--weight-decay", "0.1"}, {"lbfgs", "weight_decay"}},
        {{"--optimizer", "lbfgs", "--schedule", "cosine"}, {"lbfgs", "schedule"}},
        {{"--optimizer", "lbfgs", "--line-search", "wolfe"}, {"--line-search", "wolfe"}},
        {{"--optimizer", "adam", "--history-size", "5"}, {"history_size"}},
        {{"--optimizer", "lbfgs", "--max-iter", "0"}, {"max_iter"}},
        {{"--device", "tpu"}, {"--device", "tpu"}},
        {{"--device", "CPU"}, {"--device", "CPU"}},
        {{"--loss", "foo"}, {"--loss", "foo"}},
        {{"--model"}, {"--model"}},
        {{"--lr", "--json"}, {"--lr"}},
        {{"--data"}, {"--data"}},
        {{"--save"}, {"--save"}},
        {{"--bogus"}, {"--bogus"}},
        {{"--bogus=1"}, {"--bogus"}},
        {{"-x"}, {"-x"}},
        {{"extra"}, {"extra"}},
        {{"--json=yes"}, {"--json", "yes"}},
        {{"--optimizer", "sgd", "--nesterov"}, {"--nesterov"}},
        {{"--momentum", "0.9"}, {"--momentum"}},
        {{"--optimizer", "adagrad", "--momentum", "0.5"}, {"--momentum"}},
        {{"--optimizer", "adam", "--nesterov", "--momentum", "0.9"}, {"--nesterov"}},
        {{"--optimizer", "sgd", "--amsgrad"}, {"amsgrad"}},
        {{"--optimizer", "adam", "--centered"}, {"centered"}},
        {{"--betas", "0.9"}, {"--betas", "0.9"}},
        {{"--betas", "0.9,x"}, {"--betas", "0.9,x"}},
        {{"--eps", "-1"}, {"--eps", "-1"}},
        {{"--schedule", "bogus"}, {"--schedule", "bogus"}},
        {{"--schedule", "step"}, {"step_size"}},
        {{"--schedule", "multistep"}, {"milestones"}},
        {{"--schedule", "cosine,t_max=x"}, {"t_max", "x"}},
        {{"--schedule", "cosine,foo=1"}, {"foo"}},
        {{"--schedule", "cosine,per=hour"}, {"per", "hour"}},
        {{"--schedule", "cosine,warmup"}, {"warmup"}},
        {{"--schedule", "plateau,warmup=2"}, {"warm-up"}},
        {{"--schedule", "one_cycle,pct_start=2"}, {"pct_start"}},
        {{"--clip-grad-norm", "-1"}, {"--clip-grad-norm", "-1"}},
        {{"--clip-grad-value", "abc"}, {"--clip-grad-value", "abc"}},
        {{"--clip-norm-type", "2"}, {"--clip-grad-norm"}},
        {{"--clip-grad-norm", "1", "--clip-norm-type", "0"}, {"--clip-norm-type", "0"}},
        {{"--checkpoint-every", "0"}, {"--checkpoint-every", "0"}},
        {{"--resume"}, {"--resume"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *argv[16];
        int n = 0;
        argv[n++] = "train";
        argv[n++] = "--data";
        argv[n++] = g_data;
        argv[n++] = "--device";
        argv[n++] = "cpu";
        for (int i = 0; i < 6 && cases[c].args[i]; i++)
            argv[n++] = cases[c].args[i];
        argv[n] = NULL;
        /* a bad value last in line, so a missing value is really missing */
        run_result r;
        run_tool_v(&r, argv);
        expect_exit(&r, 2);
        for (int k = 0; k < 3 && cases[c].culprit[k]; k++)
            expect_stderr_names(&r, cases[c].culprit[k]);
        if (r.out[0] != '\0')
            fail_msg("`%s`: printed on stdout on a usage error:\n%s", r.cmd, r.out);
        run_free(&r);
    }
}

static void test_unknown_builtin_model(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "train", "--model", "no-such-model", "--data", g_data, "--device", "cpu");
    if (WIFSIGNALED(r.status))
        fail_msg("`%s` crashed", r.cmd);
    assert_true(WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0);
    expect_stderr_names(&r, "no-such-model");
    run_free(&r);
}

static void test_missing_data_dir(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "train", "--data", "/nonexistent/anvil-data", "--device", "cpu", "--json");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "/nonexistent/anvil-data");
    assert_string_equal(r.out, "");
    run_free(&r);

    run_tool(&r, "train", "--data", g_empty, "--device", "cpu");
    expect_exit(&r, 1);
    expect_stderr_names(&r, g_empty);
    run_free(&r);
}

static void test_truncated_idx(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "train", "--data", g_trunc, "--device", "cpu", "--steps", "2", "--json");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "train-images-idx3-ubyte");
    assert_string_equal(r.out, "");
    run_free(&r);
}

static void test_bad_model_files(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "train", "--model", g_bad_model, "--data", g_data, "--device", "cpu");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "frobnicate");
    run_free(&r);

    run_tool(&r, "train", "--model", g_bad_json, "--data", g_data, "--device", "cpu");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "not_json.json");
    run_free(&r);

    run_tool(&r, "train", "--model", "/nonexistent/model.json", "--data", g_data, "--device",
             "cpu");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "/nonexistent/model.json");
    run_free(&r);
}

static void test_happy_path_json(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "train", "--model", "mlp", "--steps", "20", "--json", "--device", "cpu",
             "--data", g_data);
    expect_exit(&r, 0);
    static json_lines jl;
    parse_json_output(&r, &jl);
    /* 256 samples, batch 128: 2 steps per epoch, 10 epochs */
    assert_int_equal(jl.n, 11);
    for (int i = 0; i < jl.n; i++) {
        check_event_values(&jl.obj[i]);
        if (i < jl.n - 1) {
            assert_int_equal((int)get(&jl.obj[i], "epoch"), i + 1);
            assert_int_equal((int)get(&jl.obj[i], "step"), 2 * (i + 1));
        }
    }
    const json_obj *done = &jl.obj[jl.n - 1];
    assert_int_equal((int)get(done, "step"), 20);
    assert_int_equal((int)get(done, "epoch"), 10);
    /* the pattern is trivially separable: 20 Adam steps learn it */
    if (get(done, "test_accuracy") < 0.9)
        fail_msg("test_accuracy %.4f after 20 steps on a separable set:\n%s",
                 get(done, "test_accuracy"), r.out);
    if (get(done, "train_loss") >= get(&jl.obj[0], "train_loss"))
        fail_msg("the training loss did not go down:\n%s", r.out);
    run_free(&r);
}

static void test_steps_mid_epoch_and_partial_batch(void **state)
{
    (void)state;
    run_result r;
    /* batch 100 over 256 samples: 100, 100, 56 per epoch; stop after 4 steps in epoch 2 */
    run_tool(&r, "train", "--steps", "4", "--batch-size", "100", "--json", "--device", "cpu",
             "--data", g_data, "--no-shuffle");
    expect_exit(&r, 0);
    static json_lines jl;
    parse_json_output(&r, &jl);
    assert_int_equal(jl.n, 3);
    assert_int_equal((int)get(&jl.obj[0], "epoch"), 1);
    assert_int_equal((int)get(&jl.obj[0], "step"), 3);
    assert_int_equal((int)get(&jl.obj[1], "epoch"), 2);
    assert_int_equal((int)get(&jl.obj[1], "step"), 4);
    assert_int_equal((int)get(&jl.obj[2], "step"), 4);
    for (int i = 0; i < jl.n; i++)
        check_event_values(&jl.obj[i]);
    run_free(&r);

    /* --epochs without --steps */
    run_tool(&r, "train", "--epochs", "2", "--batch-size", "64", "--json", "--device", "cpu",
             "--data", g_data);
    expect_exit(&r, 0);
    parse_json_output(&r, &jl);
    assert_int_equal(jl.n, 3);
    assert_int_equal((int)get(&jl.obj[1], "step"), 8);
    assert_int_equal((int)get(&jl.obj[2], "epoch"), 2);
    run_free(&r);
}

static void test_optimizers_and_model_file(void **state)
{
    (void)state;
    static const char *const variants[][8] = {
        {"--optimizer", "sgd", "--lr", "0.05", NULL},
        {"--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--weight-decay", "1e-4"},
        {"--optimizer", "adamw", "--weight-decay", "0.1", NULL},
        {"--optimizer", "adam", "--lr=0.002", "--seed", "7", NULL},
        {"--optimizer", "rmsprop", "--lr", "1e-3", "--momentum", "0.5", NULL},
        {"--optimizer", "adagrad", "--weight-decay", "1e-4", NULL},
        {"--optimizer", "adadelta", NULL},
        {"--optimizer", "nadam", "--weight-decay", "1e-4", NULL},
        {"--model", g_small_model, NULL},
        {"--optimizer", "adam", "--amsgrad", "--betas", "0.8,0.99", "--eps", "1e-7"},
        {"--optimizer", "rmsprop", "--centered", "--alpha", "0.9", "--maximize", NULL},
        {"--optimizer", "adagrad", "--lr-decay", "0.01", "--initial-accumulator-value", "0.1", NULL},
        {"--optimizer", "nadam", "--momentum-decay", "0.005", "--decoupled-weight-decay", NULL},
        {"--optimizer", "adadelta", "--rho", "0.95", "--schedule", "exponential,gamma=0.5", NULL},
        {"--optimizer", "sgd", "--dampening", "0.1", "--momentum", "0.9", "--clip-grad-value", "0.1"},
        {"--schedule", "one_cycle,pct_start=0.5", "--clip-grad-norm", "1", "--clip-norm-type", "inf", NULL},
        {"--schedule", "plateau,patience=0", "--lr", "0.01", NULL},
        {"--schedule", "multistep,milestones=1:2,per=step", NULL},
        {"--optimizer", "lbfgs", "--max-iter", "4", "--history-size", "5", NULL},
        {"--optimizer", "lbfgs", "--line-search", "strong_wolfe", "--lr", "0.5", NULL},
    };
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        const char *argv[20];
        int n = 0;
        argv[n++] = "train";
        argv[n++] = "--steps";
        argv[n++] = "3";
        argv[n++] = "--json";
        argv[n++] = "--device";
        argv[n++] = "cpu";
        argv[n++] = "--data";
        argv[n++] = g_data;
        for (int i = 0; i < 8 && variants[v][i]; i++)
            argv[n++] = variants[v][i];
        argv[n] = NULL;
        run_result r;
        run_tool_v(&r, argv);
        expect_exit(&r, 0);
        static json_lines jl;
        parse_json_output(&r, &jl);
        assert_int_equal((int)get(&jl.obj[jl.n - 1], "step"), 3);
        run_free(&r);
    }
}

static bool same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/* --checkpoint-every, then --resume: the same final weights, byte for byte, as the run
 * that was not stopped — on resident data and on host batches (mse: one-hot targets). */
static void test_checkpoint_resume(void **state)
{
    (void)state;
    char ck[400], a[400], b[400];
    snprintf(ck, sizeof ck, "%s/ck.safetensors", g_dir);
    snprintf(a, sizeof a, "%s/a.safetensors", g_dir);
    snprintf(b, sizeof b, "%s/b.safetensors", g_dir);
    for (int host = 0; host < 2; host++) {
        const char *loss = host ? "mse" : "cross_entropy";
        run_result r;
        /* 4 steps per epoch; checkpoints at 3 (mid-epoch) and 6 */
        run_tool(&r, "train", "--steps", "7", "--batch-size", "64", "--json", "--device", "cpu", "--data", g_data,
                 "--optimizer", "nadam", "--schedule", "cosine,per=step,t_max=9,warmup=2", "--clip-grad-norm", "0.5",
                 "--loss", loss, "--checkpoint-every", "3", "--checkpoint", ck, "--save", a);
        expect_exit(&r, 0);
        run_free(&r);
        run_tool(&r, "train", "--steps", "7", "--batch-size", "64", "--device", "cpu", "--data", g_data,
                 "--optimizer", "nadam", "--schedule", "cosine,per=step,t_max=9,warmup=2", "--clip-grad-norm", "0.5",
                 "--loss", loss, "--resume", ck, "--save", b);
        expect_exit(&r, 0);
        if (!contains(r.out, "resumed from") || !contains(r.out, "step 6"))
            fail_msg("`%s`: no resume message:\n%s", r.cmd, r.out);
        run_free(&r);
        if (!same_file(a, b))
            fail_msg("resumed run (%s) ended with other weights than the uninterrupted one", loss);
        /* the checkpoint of a run with other options is refused */
        run_tool(&r, "train", "--steps", "7", "--batch-size", "64", "--device", "cpu", "--data", g_data,
                 "--optimizer", "adam", "--loss", loss, "--resume", ck);
        expect_exit(&r, 1);
        expect_stderr_names(&r, ck);
        run_free(&r);
    }
    /* a missing checkpoint file */
    run_result r;
    run_tool(&r, "train", "--steps", "1", "--device", "cpu", "--data", g_data, "--resume", "/nonexistent/ck");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "/nonexistent/ck");
    run_free(&r);
}

static void test_same_seed_same_result(void **state)
{
    (void)state;
    char *first = NULL;
    for (int k = 0; k < 2; k++) {
        run_result r;
        run_tool(&r, "train", "--steps", "5", "--seed", "42", "--json", "--device", "cpu",
                 "--data", g_data);
        expect_exit(&r, 0);
        static json_lines jl;
        parse_json_output(&r, &jl);
        const json_obj *d = &jl.obj[jl.n - 1];
        char buf[256];
        snprintf(buf, sizeof buf, "%.9g %.9g %.9g", get(d, "train_loss"), get(d, "test_loss"),
                 get(d, "test_accuracy"));
        if (!first) {
            first = strdup(buf);
        } else if (strcmp(first, buf) != 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "two runs with --seed 42 differ: %s vs %s", first, buf);
            free(first);
            first = NULL;
            run_free(&r);
            fail_msg("%s", msg);
        }
        run_free(&r);
    }
    free(first);
}

static void test_save_and_init_weights(void **state)
{
    (void)state;
    run_result r;
    unlink(g_weights);
    run_tool(&r, "train", "--steps", "5", "--json", "--device", "cpu", "--data", g_data,
             "--save", g_weights);
    expect_exit(&r, 0);
    static json_lines jl;
    parse_json_output(&r, &jl);
    double trained_test_loss = get(&jl.obj[jl.n - 1], "test_loss");
    run_free(&r);
    struct stat st;
    assert_int_equal(stat(g_weights, &st), 0);
    assert_true(st.st_size > 8);

    /* from the saved parameters: one more step at a tiny rate keeps the test loss near
     * the trained one, far from a fresh model's */
    run_tool(&r, "train", "--steps", "1", "--lr", "1e-9", "--json", "--device", "cpu",
             "--data", g_data, "--init-weights", g_weights);
    expect_exit(&r, 0);
    parse_json_output(&r, &jl);
    double resumed = get(&jl.obj[jl.n - 1], "test_loss");
    run_free(&r);
    run_tool(&r, "train", "--steps", "1", "--lr", "1e-9", "--json", "--device", "cpu",
             "--data", g_data);
    expect_exit(&r, 0);
    parse_json_output(&r, &jl);
    double fresh = get(&jl.obj[jl.n - 1], "test_loss");
    run_free(&r);
    if (!(fabs(resumed - trained_test_loss) < 1e-3 * (1.0 + trained_test_loss)))
        fail_msg("--init-weights: test_loss %.6f, the saved model had %.6f (fresh: %.6f)",
                 resumed, trained_test_loss, fresh);

    /* weights that do not fit the model, a garbage file, a missing file */
    run_tool(&r, "train", "--model", g_small_model, "--steps", "1", "--device", "cpu",
             "--data", g_data, "--init-weights", g_weights);
    expect_exit(&r, 1);
    expect_stderr_names(&r, "weights.safetensors");
    run_free(&r);

    run_tool(&r, "train", "--steps", "1", "--device", "cpu", "--data", g_data,
             "--init-weights", g_garbage);
    expect_exit(&r, 1);
    expect_stderr_names(&r, "garbage.safetensors");
    run_free(&r);

    run_tool(&r, "train", "--steps", "1", "--device", "cpu", "--data", g_data,
             "--init-weights", "/nonexistent/w.safetensors");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "/nonexistent/w.safetensors");
    run_free(&r);

    /* a --save target that cannot be written */
    run_tool(&r, "train", "--steps", "1", "--device", "cpu", "--data", g_data, "--save",
             "/nonexistent/dir/w.safetensors");
    expect_exit(&r, 1);
    expect_stderr_names(&r, "/nonexistent/dir/w.safetensors");
    run_free(&r);
}

static void test_human_output(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "train", "--steps", "3", "--device", "cpu", "--data", g_data);
    expect_exit(&r, 0);
    assert_true(contains(r.out, "epoch 1"));
    assert_true(contains(r.out, "test accuracy"));
    /* stderr is no terminal here: no progress bar escapes */
    assert_false(contains(r.err, "\033[K"));
    run_free(&r);
}

/* Where OpenBLAS fell back to its generic kernels (anvil_blas_coretype_advice), the tool
 * re-executes itself with OPENBLAS_CORETYPE set: it then trains without the library's
 * note about it.  A machine whose CPU OpenBLAS recognizes has nothing to check. */
static void test_blas_reexec(void **state)
{
    (void)state;
    const char *set = getenv("OPENBLAS_CORETYPE");
    char keep[64] = "";
    if (set)
        snprintf(keep, sizeof keep, "%s", set);
    unsetenv("OPENBLAS_CORETYPE");
    const char *advice = anvil_blas_coretype_advice();
    if (advice) {
        run_result r;
        run_tool(&r, "train", "--steps", "2", "--device", "cpu", "--data", g_data);
        expect_exit(&r, 0);
        if (contains(r.err, "OPENBLAS_CORETYPE"))
            fail_msg("`%s` ran with OpenBLAS's generic kernels (advice: %s):\n%s", r.cmd, advice, r.err);
        run_free(&r);
    } else {
        print_message("OpenBLAS uses kernels made for this CPU: no re-execution to check\n");
    }
    if (set)
        setenv("OPENBLAS_CORETYPE", keep, 1);
}

static void test_device_cuda_without_gpu_is_not_a_crash(void **state)
{
    (void)state;
    run_result r;
    run_tool(&r, "train", "--steps", "1", "--device", "cuda", "--json", "--data", g_data);
    if (WIFSIGNALED(r.status))
        fail_msg("`%s` crashed with signal %d:\n%s", r.cmd, WTERMSIG(r.status), r.err);
    assert_true(WIFEXITED(r.status));
    assert_false(contains(r.err, "Sanitizer"));
    if (WEXITSTATUS(r.status) != 0) {
        assert_int_equal(WEXITSTATUS(r.status), 1);
        assert_true(r.err[0] != '\0');
        assert_string_equal(r.out, "");
    }
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_unknown_builtin_model),
        cmocka_unit_test(test_missing_data_dir),
        cmocka_unit_test(test_truncated_idx),
        cmocka_unit_test(test_bad_model_files),
        cmocka_unit_test(test_happy_path_json),
        cmocka_unit_test(test_steps_mid_epoch_and_partial_batch),
        cmocka_unit_test(test_optimizers_and_model_file),
        cmocka_unit_test(test_same_seed_same_result),
        cmocka_unit_test(test_checkpoint_resume),
        cmocka_unit_test(test_save_and_init_weights),
        cmocka_unit_test(test_human_output),
        cmocka_unit_test(test_blas_reexec),
        cmocka_unit_test(test_device_cuda_without_gpu_is_not_a_crash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
