/* progress.c — a one-line progress bar on stderr: bar, step/total, loss, speed, ETA. */
#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define REDRAW_INTERVAL_S 0.1

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool tool_progress_tty(void) { return isatty(STDERR_FILENO) == 1; }

static int terminal_width(void)
{
#ifdef TIOCGWINSZ
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
#endif
    return 80;
}

void tool_progress_begin(tool_progress *p, bool enabled, int64_t epoch, int64_t epochs,
                         int64_t total)
{
    memset(p, 0, sizeof *p);
    p->enabled = enabled;
    p->epoch = epoch;
    p->epochs = epochs;
    p->total = total;
    p->t_start = tool_now();
    p->t_last = -1.0;
}

bool tool_progress_due(const tool_progress *p, double now)
{
    return p->enabled && (p->t_last < 0.0 || now - p->t_last >= REDRAW_INTERVAL_S);
}

static void format_duration(char *buf, size_t cap, double s)
{
    if (!isfinite(s) || s < 0.0) {
        snprintf(buf, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

void tool_progress_draw(tool_progress *p, double now, int64_t done, int64_t samples, float loss,
                        bool have_loss)
{
    if (!p->enabled)
        return;
    p->t_last = now;
    double elapsed = now - p->t_start;
    double rate = elapsed > 0.0 ? (double)samples / elapsed : 0.0;
    double eta = done > 0 ? elapsed / (double)done * (double)(p->total - done) : -1.0;

    char head[48], tail[160], eta_s[24], loss_s[32];
    if (p->epochs > 0)
        snprintf(head, sizeof head, "epoch %lld/%lld", (long long)p->epoch,
                 (long long)p->epochs);
    else
        snprintf(head, sizeof head, "epoch %lld", (long long)p->epoch);
    format_duration(eta_s, sizeof eta_s, eta);
    if (have_loss)
        snprintf(loss_s, sizeof loss_s, "%.4f", (double)loss);
    else
        snprintf(loss_s, sizeof loss_s, "-");
    snprintf(tail, sizeof tail, " %lld/%lld  loss %s  %.0f samples/s  ETA %s",
             (long long)done, (long long)p->total, loss_s, rate, eta_s);

    int width = terminal_width() - 1;
    int bar = width - (int)strlen(head) - (int)strlen(tail) - 3;
    if (bar > 40)
        bar = 40;
    char line[512];
    int n = snprintf(line, sizeof line, "%s", head);
    if (bar >= 5) {
        int filled = p->total > 0 ? (int)((double)bar * (double)done / (double)p->total) : 0;
        if (filled > bar)
            filled = bar;
        line[n++] = ' ';
        line[n++] = '[';
        for (int i = 0; i < bar; i++)
            line[n++] = i < filled ? '#' : '.';
        line[n++] = ']';
        line[n] = '\0';
    }
    snprintf(line + n, sizeof line - (size_t)n, "%s", tail);
    if ((int)strlen(line) > width)
        line[width > 0 ? width : 0] = '\0';
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    p->drawn = true;
}

void tool_progress_message(tool_progress *p, const char *message)
{
    if (!p->enabled)
        return;
    fprintf(stderr, "\r\033[Kepoch %lld: %s", (long long)p->epoch, message);
    fflush(stderr);
    p->drawn = true;
}

void tool_progress_clear(tool_progress *p)
{
    if (p->enabled && p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    p->drawn = false;
}
