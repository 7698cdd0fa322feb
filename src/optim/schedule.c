/* schedule.c — learning-rate schedules on the host: defaults (torch's), names, checks,
 * and reduce-on-plateau's comparison.  The closed forms are in schedule.h. */
#include "core/core.h"
#include "optim/schedule.h"

static const char *sched_names[ANVIL_SCHED_COUNT] = {"constant", "step", "multistep", "exponential",
                                                      "cosine", "cosine_restarts", "one_cycle", "plateau"};

const char *anvil_schedule_name(anvil_schedule_kind k)
{
    return (unsigned)k < ANVIL_SCHED_COUNT ? sched_names[k] : "?";
}

anvil_status anvil_schedule_parse(const char *name, anvil_schedule_kind *out)
{
    for (int i = 0; name && i < ANVIL_SCHED_COUNT; i++)
        if (strcmp(name, sched_names[i]) == 0) {
            *out = (anvil_schedule_kind)i;
            return ANVIL_OK;
        }
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "unknown schedule '%s' (constant, step, multistep, exponential, cosine, "
                      "cosine_restarts, one_cycle, plateau)", name ? name : "(null)");
}

anvil_schedule_config anvil_schedule_default_config(anvil_schedule_kind kind)
{
    anvil_schedule_config s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.step_size = 1;
    s.gamma = kind == ANVIL_SCHED_EXPONENTIAL ? 0.95f : 0.1f;
    s.t_max = 1;
    s.t_0 = 1;
    s.t_mult = 1;
    s.pct_start = 0.3f;
    s.div_factor = 25.0f;
    s.final_div_factor = 1e4f;
    s.factor = 0.1f;
    s.patience = 10;
    s.threshold = 1e-4f;
    s.plateau_eps = 1e-8f;
    s.warmup_start_factor = 1.0f / 3.0f;
    return s;
}

#define BAD(...) anvil_fail(ANVIL_ERR_INVALID_ARG, __VA_ARGS__)

anvil_status anvil_schedule_check(const anvil_schedule_config *s)
{
    const char *n = anvil_schedule_name(s->kind);
    if ((unsigned)s->kind >= ANVIL_SCHED_COUNT)
        return BAD("unknown schedule %d", (int)s->kind);
    if (s->steps_per_epoch < 0)
        return BAD("schedule: steps_per_epoch must be >= 0, got %lld", (long long)s->steps_per_epoch);
    if (s->warmup < 0 || (s->warmup > 0 && !(s->warmup_start_factor > 0.0f && s->warmup_start_factor <= 1.0f)))
        return BAD("schedule: warmup must be >= 0 and warmup_start_factor in (0, 1], got %lld and %g",
                   (long long)s->warmup, (double)s->warmup_start_factor);
    if (s->warmup > 0 && s->kind == ANVIL_SCHED_PLATEAU)
        return BAD("schedule: a warm-up does not combine with reduce-on-plateau");
    switch (s->kind) {
    case ANVIL_SCHED_STEP:
        if (s->step_size < 1)
            return BAD("%s: step_size must be >= 1, got %lld", n, (long long)s->step_size);
        break;
    case ANVIL_SCHED_MULTISTEP:
        if (s->n_milestones < 1 || s->n_milestones > ANVIL_MAX_MILESTONES)
            return BAD("%s: 1 to %d milestones, got %d", n, ANVIL_MAX_MILESTONES, s->n_milestones);
        for (int i = 0; i < s->n_milestones; i++)
            if (s->milestones[i] < 0 || (i > 0 && s->milestones[i] <= s->milestones[i - 1]))
                return BAD("%s: milestones must be increasing and >= 0", n);
        break;
    case ANVIL_SCHED_COSINE:
        if (s->t_max < 1)
            return BAD("%s: T_max must be >= 1, got %lld", n, (long long)s->t_max);
        break;
    case ANVIL_SCHED_COSINE_RESTARTS:
        if (s->t_0 < 1 || s->t_mult < 1)
            return BAD("%s: T_0 and T_mult must be >= 1, got %lld and %lld", n, (long long)s->t_0, (long long)s->t_mult);
        break;
    case ANVIL_SCHED_ONE_CYCLE:
        if (s->total_steps < 2)
            return BAD("%s: total_steps must be given (>= 2), got %lld", n, (long long)s->total_steps);
        if (!(s->pct_start > 0.0f && s->pct_start < 1.0f))
            return BAD("%s: pct_start must be in (0, 1), got %g", n, (double)s->pct_start);
        if (!(s->div_factor > 0.0f) || !(s->final_div_factor > 0.0f))
            return BAD("%s: div_factor and final_div_factor must be > 0", n);
        /* torch divides by each phase's length: a phase must have one */
        if (s->pct_start * (float)s->total_steps - 1.0f <= 0.0f ||
            (s->three_phase && s->pct_start * (float)s->total_steps >= (float)s->total_steps - 1.0f))
            return BAD("%s: pct_start %g of %lld steps leaves an empty phase", n, (double)s->pct_start,
                       (long long)s->total_steps);
        break;
    case ANVIL_SCHED_PLATEAU:
        if (!(s->factor > 0.0f && s->factor < 1.0f))
            return BAD("%s: factor must be in (0, 1), got %g", n, (double)s->factor);
        if (s->patience < 0 || s->cooldown < 0 || !(s->threshold >= 0.0f) || !(s->min_lr >= 0.0f) ||
            !(s->plateau_eps >= 0.0f))
            return BAD("%s: patience, cooldown, threshold, min_lr and eps must be >= 0", n);
        break;
    default:
        break;
    }
    if (s->kind != ANVIL_SCHED_PLATEAU && s->kind != ANVIL_SCHED_CONSTANT &&
        (!isfinite(s->gamma) || !(s->gamma > 0.0f) || !isfinite(s->eta_min) || s->eta_min < 0.0f))
        return BAD("%s: gamma must be > 0 and eta_min >= 0", n);
    return ANVIL_OK;
}

bool anvil_plateau_better(const anvil_schedule_config *s, double a, double best)
{
    double th = (double)s->threshold;
    if (!s->mode_max)
        return s->threshold_abs ? a < best - th : a < best * (1.0 - th);
    return s->threshold_abs ? a > best + th : a > best * (th + 1.0);
}
