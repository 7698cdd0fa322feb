/* schedule.h — learning-rate schedules as closed forms of the schedule step t, shared by
 * the host (initial values, reporting) and both backends' step-end kernels, so that
 * every place computes the same double and rounds it to the same float.  torch's
 * schedulers step Python floats (doubles); their closed forms are used here. */
#ifndef ANVIL_SCHEDULE_H
#define ANVIL_SCHEDULE_H

#include "anvil.h"
#include <math.h>

#define ANVIL_PI 3.14159265358979323846

#ifdef __CUDACC__
#define ANVIL_HD __host__ __device__
#else
#define ANVIL_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* torch's _annealing_cos / _annealing_linear (one-cycle) */
ANVIL_HD static inline double anvil_anneal(double start, double end, double pct, bool linear)
{
    if (linear)
        return (end - start) * pct + start;
    return end + (start - end) / 2.0 * (cos(ANVIL_PI * pct) + 1.0);
}

ANVIL_HD static inline double anvil_one_cycle_lr(const anvil_schedule_config *s, double max_lr, int64_t t)
{
    double initial = max_lr / (double)s->div_factor, min_lr = initial / (double)s->final_div_factor;
    double total = (double)s->total_steps, pct = (double)s->pct_start;
    double end[3], from[3], to[3];
    int n;
    if (s->three_phase) {
        n = 3;
        end[0] = pct * total - 1.0, from[0] = initial, to[0] = max_lr;
        end[1] = 2.0 * pct * total - 2.0, from[1] = max_lr, to[1] = initial;
        end[2] = total - 1.0, from[2] = initial, to[2] = min_lr;
    } else {
        n = 2;
        end[0] = pct * total - 1.0, from[0] = initial, to[0] = max_lr;
        end[1] = total - 1.0, from[1] = max_lr, to[1] = min_lr;
    }
    double step = (double)(t < s->total_steps ? t : s->total_steps - 1), start = 0.0;
    for (int i = 0; i < n; i++) {
        if (step <= end[i] || i == n - 1)
            return anvil_anneal(from[i], to[i], (step - start) / (end[i] - start), s->anneal_linear);
        start = end[i];
    }
    return min_lr;
}

/* The lr of a group whose base lr is `base` at schedule step t of the main schedule. */
ANVIL_HD static inline double anvil_schedule_main(const anvil_schedule_config *s, double base, int64_t t)
{
    double eta = (double)s->eta_min;
    switch (s->kind) {
    case ANVIL_SCHED_STEP:
        return base * pow((double)s->gamma, (double)(t / s->step_size));
    case ANVIL_SCHED_MULTISTEP: {
        int k = 0; /* bisect_right(milestones, t) */
        while (k < s->n_milestones && s->milestones[k] <= t)
            k++;
        return base * pow((double)s->gamma, (double)k);
    }
    case ANVIL_SCHED_EXPONENTIAL:
        return base * pow((double)s->gamma, (double)t);
    case ANVIL_SCHED_COSINE:
        return eta + (base - eta) * (1.0 + cos(ANVIL_PI * (double)t / (double)s->t_max)) / 2.0;
    case ANVIL_SCHED_COSINE_RESTARTS: {
        int64_t t_i = s->t_0, t_cur = t;
        if (s->t_mult == 1) {
            t_cur = t % s->t_0;
        } else {
            while (t_cur >= t_i) {
                t_cur -= t_i;
                t_i *= s->t_mult;
            }
        }
        return eta + (base - eta) * (1.0 + cos(ANVIL_PI * (double)t_cur / (double)t_i)) / 2.0;
    }
    case ANVIL_SCHED_ONE_CYCLE:
        return anvil_one_cycle_lr(s, base, t);
    default: /* constant; plateau's lr is set by the host */
        return base;
    }
}

/* The lr after `step` optimizer steps: the warm-up, then the main schedule. */
ANVIL_HD static inline float anvil_schedule_lr(const anvil_schedule_config *s, float base, int64_t step)
{
    int64_t t = s->steps_per_epoch > 0 ? step / s->steps_per_epoch : step;
    if (t < s->warmup) {
        double f0 = (double)s->warmup_start_factor;
        return (float)((double)base * (f0 + (1.0 - f0) * (double)t / (double)s->warmup));
    }
    return (float)anvil_schedule_main(s, (double)base, t - s->warmup);
}

#ifndef __CUDACC__
/* Host side (schedule.c): a schedule's options checked, with a message naming the bad one. */
anvil_status anvil_schedule_check(const anvil_schedule_config *s);
/* ReduceLROnPlateau's is_better(a, best). */
bool anvil_plateau_better(const anvil_schedule_config *s, double a, double best);
#endif

#ifdef __cplusplus
}
#endif
#endif
