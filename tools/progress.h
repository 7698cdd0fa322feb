/* progress.h — the live progress line of `anvil train` on a terminal (stderr). */
#ifndef ANVIL_TOOL_PROGRESS_H
#define ANVIL_TOOL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

/* Seconds on a monotonic clock. */
double tool_now(void);

typedef struct {
    bool enabled;       /* drawing at all (stderr is a terminal, no --json) */
    bool drawn;         /* something is on the line now */
    int64_t epoch;      /* 1-based */
    int64_t epochs;     /* 0: unknown (--steps) */
    int64_t total;      /* steps planned in this epoch */
    double t_start;     /* when the epoch started */
    double t_last;      /* last redraw */
} tool_progress;

/* Is stderr a terminal? */
bool tool_progress_tty(void);

void tool_progress_begin(tool_progress *p, bool enabled, int64_t epoch, int64_t epochs,
                         int64_t total);
/* Whether a redraw is due (at most ~10 per second; the caller reads the loss only then,
 * because reading it waits for the device). */
bool tool_progress_due(const tool_progress *p, double now);
/* Redraws the line: `done` steps, `samples` samples so far in this epoch. */
void tool_progress_draw(tool_progress *p, double now, int64_t done, int64_t samples, float loss,
                        bool have_loss);
/* Replaces the line with "epoch E: message" (e.g. while evaluating). */
void tool_progress_message(tool_progress *p, const char *message);
/* Erases the line (before anything else is printed). */
void tool_progress_clear(tool_progress *p);

#endif
