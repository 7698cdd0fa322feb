/* schedule_spec.c — `--schedule NAME[,KEY=VALUE...]`: torch.optim.lr_scheduler's option
 * names; what a run decides (per-epoch t_max, one-cycle's total_steps) is filled in later
 * by tool_finish_schedule. */
#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tool_parse_status bad(char *err, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static tool_parse_status bad(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return TOOL_PARSE_USAGE;
}

static bool num(const char *s, double *out)
{
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || errno || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static bool whole(const char *s, int64_t *out)
{
    double v;
    if (!num(s, &v) || v < 0 || v > 1e15 || v != floor(v))
        return false;
    *out = (int64_t)v;
    return true;
}

static tool_parse_status milestones(anvil_schedule_config *s, const char *v, char *err, size_t cap)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    s->n_milestones = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        if (s->n_milestones == ANVIL_MAX_MILESTONES || !whole(tok, &s->milestones[s->n_milestones]))
            return bad(err, cap, "--schedule: milestones=%s: expected up to %d whole numbers joined by ':'", v,
                       ANVIL_MAX_MILESTONES);
        s->n_milestones++;
    }
    return TOOL_PARSE_OK;
}

static tool_parse_status key_value(tool_options *o, const char *k, const char *v, char *err, size_t cap)
{
    anvil_schedule_config *s = &o->schedule;
    double x = 0;
    int64_t n = 0;
    bool isnum = num(v, &x), iswhole = whole(v, &n);
#define NUMBER(field)                                                                              \
    do {                                                                                           \
        if (!isnum)                                                                                \
            return bad(err, cap, "--schedule: %s=%s: expected a number", k, v);                    \
        s->field = (float)x;                                                                       \
        return TOOL_PARSE_OK;                                                                      \
    } while (0)
#define WHOLE(field)                                                                               \
    do {                                                                                           \
        if (!iswhole)                                                                              \
            return bad(err, cap, "--schedule: %s=%s: expected a whole number", k, v);              \
        s->field = n;                                                                              \
        return TOOL_PARSE_OK;                                                                      \
    } while (0)
#define CHOICE(field, a, b)                                                                        \
    do {                                                                                           \
        if (strcmp(v, a) && strcmp(v, b))                                                          \
            return bad(err, cap, "--schedule: %s=%s: expected %s or %s", k, v, a, b);              \
        s->field = strcmp(v, b) == 0;                                                              \
        return TOOL_PARSE_OK;                                                                      \
    } while (0)
    if (!strcmp(k, "step_size")) WHOLE(step_size);
    if (!strcmp(k, "gamma")) NUMBER(gamma);
    if (!strcmp(k, "milestones")) return milestones(s, v, err, cap);
    if (!strcmp(k, "t_max")) { o->sched_have_t_max = true; WHOLE(t_max); }
    if (!strcmp(k, "eta_min")) NUMBER(eta_min);
    if (!strcmp(k, "t_0")) WHOLE(t_0);
    if (!strcmp(k, "t_mult")) WHOLE(t_mult);
    if (!strcmp(k, "total_steps")) { o->sched_have_total = true; WHOLE(total_steps); }
    if (!strcmp(k, "pct_start")) NUMBER(pct_start);
    if (!strcmp(k, "anneal")) CHOICE(anneal_linear, "cos", "linear");
    if (!strcmp(k, "div_factor")) NUMBER(div_factor);
    if (!strcmp(k, "final_div_factor")) NUMBER(final_div_factor);
    if (!strcmp(k, "three_phase")) CHOICE(three_phase, "0", "1");
    if (!strcmp(k, "mode")) CHOICE(mode_max, "min", "max");
    if (!strcmp(k, "factor")) NUMBER(factor);
    if (!strcmp(k, "patience")) WHOLE(patience);
    if (!strcmp(k, "threshold")) NUMBER(threshold);
    if (!strcmp(k, "threshold_mode")) CHOICE(threshold_abs, "rel", "abs");
    if (!strcmp(k, "cooldown")) WHOLE(cooldown);
    if (!strcmp(k, "min_lr")) NUMBER(min_lr);
    if (!strcmp(k, "eps")) NUMBER(plateau_eps);
    if (!strcmp(k, "warmup")) WHOLE(warmup);
    if (!strcmp(k, "warmup_start_factor")) NUMBER(warmup_start_factor);
    if (!strcmp(k, "per")) {
        if (strcmp(v, "epoch") && strcmp(v, "step"))
            return bad(err, cap, "--schedule: per=%s: expected epoch or step", v);
        o->sched_have_per = true;
        o->sched_per_step = strcmp(v, "step") == 0;
        return TOOL_PARSE_OK;
    }
#undef NUMBER
#undef WHOLE
#undef CHOICE
    return bad(err, cap, "--schedule: unknown option '%s' (see anvil train --help)", k);
}

tool_parse_status tool_parse_schedule(tool_options *o, const char *v, char *err, size_t cap)
{
    char buf[1024];
    if (strlen(v) >= sizeof buf)
        return bad(err, cap, "--schedule: value too long");
    snprintf(buf, sizeof buf, "%s", v);
    char *save = NULL, *name = strtok_r(buf, ",", &save);
    anvil_schedule_kind kind;
    if (!name || anvil_schedule_parse(name, &kind) != ANVIL_OK)
        return bad(err, cap, "unknown --schedule '%s' (constant, step, multistep, exponential, cosine, "
                   "cosine_restarts, one_cycle, plateau)", name ? name : "");
    o->schedule = anvil_schedule_default_config(kind);
    o->sched_have_per = o->sched_have_t_max = o->sched_have_total = false;
    o->sched_per_step = kind == ANVIL_SCHED_ONE_CYCLE;
    for (char *kv = strtok_r(NULL, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1])
            return bad(err, cap, "--schedule: '%s' is not KEY=VALUE", kv);
        *eq = '\0';
        tool_parse_status st = key_value(o, kv, eq + 1, err, cap);
        if (st != TOOL_PARSE_OK)
            return st;
    }
    /* what torch requires */
    if (kind == ANVIL_SCHED_STEP && !strstr(v, ",step_size="))
        return bad(err, cap, "--schedule step needs step_size=N");
    if (kind == ANVIL_SCHED_MULTISTEP && o->schedule.n_milestones == 0)
        return bad(err, cap, "--schedule multistep needs milestones=A:B:...");
    if (kind == ANVIL_SCHED_COSINE_RESTARTS && !strstr(v, ",t_0="))
        return bad(err, cap, "--schedule cosine_restarts needs t_0=N");
    return TOOL_PARSE_OK;
}

void tool_finish_schedule(const tool_options *o, int64_t steps_per_epoch, int64_t total_steps,
                                  anvil_schedule_config *out)
{
    *out = o->schedule;
    out->steps_per_epoch = o->sched_per_step ? 0 : steps_per_epoch;
    int64_t length = o->sched_per_step ? total_steps : (total_steps + steps_per_epoch - 1) / steps_per_epoch;
    if (out->kind == ANVIL_SCHED_COSINE && !o->sched_have_t_max)
        out->t_max = length - out->warmup > 1 ? length - out->warmup : 1;
    if (out->kind == ANVIL_SCHED_ONE_CYCLE && !o->sched_have_total)
        out->total_steps = length - out->warmup;
}
