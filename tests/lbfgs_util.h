/* lbfgs_util.h — what tests/test_lbfgs.c and tests/gpu/test_gpu_lbfgs.c share: the
 * golden file (tests/golden/lbfgs.safetensors, written by make_lbfgs.py; its docstring
 * lists the keys), the two objectives as L-BFGS closures, and a runner.
 *
 * The closures compute loss and gradient in double, with the same operations in the same
 * order as make_lbfgs.py's, and round each once to float32: the optimizer is handed
 * exactly the numbers torch's was.  They move params and grads through the backend's
 * download/upload (fine in a test) and count what they move, so a test can tell the
 * optimizer's own copies from theirs. */
#ifndef ANVIL_TESTS_LBFGS_UTIL_H
#define ANVIL_TESTS_LBFGS_UTIL_H

#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "optim/lbfgs.h"

/* Every case of make_lbfgs.py. */
static const char *const LB_CASES[] = {
    "rosen_none", "rosen_wolfe", "rosen_wolfe_h3", "rosen_maxeval", "rosen_iter1", "rosen_at_min",
    "lsq_none_h3", "lsq_wolfe_h3", "lsq_wolfe", "lsq_tol", "lsq_lr_half",
};
#define LB_NCASES ((int)(sizeof LB_CASES / sizeof LB_CASES[0]))
#define LB_MAX_N 16
#define LB_MAX_STEPS 8

typedef struct {
    int n;
    char **names;
    anvil_tensor **t;
} lb_golden;

static inline void lb_golden_load(lb_golden *g)
{
    CHECK_OK(anvil_safetensors_read(ANVIL_GOLDEN_DIR "/lbfgs.safetensors", &g->n, &g->names, &g->t));
}

static inline void lb_golden_free(lb_golden *g)
{
    anvil_safetensors_free(g->n, g->names, g->t);
    memset(g, 0, sizeof *g);
}

static inline anvil_tensor *lb_get(const lb_golden *g, const char *fmt, ...)
{
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->names[i], key) == 0)
            return g->t[i];
    fail_msg("lbfgs.safetensors has no tensor \"%s\"", key);
    return NULL;
}

static inline const float *lb_f32(const lb_golden *g, const char *name, const char *what)
{
    return anvil_tensor_data(lb_get(g, "%s.%s", name, what));
}

/* ---------------------------------------------------------------- a case */

typedef struct {
    const char *name;
    anvil_lbfgs_options o;
    int steps, problem; /* problem 0: Rosenbrock, 1: least squares */
    int64_t n;
    const float *x0;
} lb_case;

static inline void lb_case_load(const lb_golden *g, const char *name, lb_case *c)
{
    const float *o = lb_f32(g, name, "opts");
    memset(c, 0, sizeof *c);
    c->name = name;
    c->o.lr = o[0];
    c->o.max_iter = (int)o[1];
    c->o.max_eval = (int)o[2];
    c->o.tolerance_grad = o[3];
    c->o.tolerance_change = o[4];
    c->o.history_size = (int)o[5];
    c->o.strong_wolfe = o[6] != 0.0f;
    c->steps = (int)o[7];
    c->problem = (int)o[8];
    c->n = anvil_tensor_numel(lb_get(g, "%s.x0", name));
    c->x0 = lb_f32(g, name, "x0");
    assert_true(c->n <= LB_MAX_N && c->steps <= LB_MAX_STEPS);
}

/* ---------------------------------------------------------------- the objectives */

typedef struct {
    anvil_backend *be;
    float *params, *grads; /* device */
    int64_t n;
    int problem;           /* 0 Rosenbrock, 1 least squares, 2 separable quadratic */
    const float *A, *b;    /* least squares: A [m, n], b [m]; quadratic: a [n], c [n] */
    int m;
    float *hx, *hg;        /* host staging */
    double *g64;
    int64_t calls, fail_at; /* fail_at > 0: the fail_at-th call returns an error */
    int64_t d2h_copies, d2h_bytes, h2d_copies; /* the closure's own */
} lb_problem;

static inline double lb_rosenbrock(const float *x, int64_t n, double *g)
{
    double f = 0.0;
    for (int64_t i = 0; i < n; i++)
        g[i] = 0.0;
    for (int64_t i = 0; i + 1 < n; i++) {
        double xi = x[i], a = (double)x[i + 1] - xi * xi, b = 1.0 - xi;
        f += 100.0 * a * a + b * b;
        g[i] += -400.0 * xi * a - 2.0 * b;
        g[i + 1] += 200.0 * a;
    }
    return f;
}

/* 0.5/m * ||A x - b||^2 */
static inline double lb_least_squares(const float *x, int64_t n, const float *A, const float *b, int m,
                                      double *g)
{
    double f = 0.0;
    for (int64_t j = 0; j < n; j++)
        g[j] = 0.0;
    for (int i = 0; i < m; i++) {
        double r = -(double)b[i];
        for (int64_t j = 0; j < n; j++)
            r += (double)A[i * n + j] * (double)x[j];
        f += r * r;
        for (int64_t j = 0; j < n; j++)
            g[j] += (double)A[i * n + j] * r;
    }
    for (int64_t j = 0; j < n; j++)
        g[j] = g[j] / m;
    return 0.5 * f / m;
}

/* 0.5 * sum a_i (x_i - c_i)^2: a large, well-conditioned problem */
static inline double lb_quadratic(const float *x, int64_t n, const float *a, const float *c, double *g)
{
    double f = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double r = (double)x[i] - (double)c[i];
        g[i] = (double)a[i] * r;
        f += 0.5 * (double)a[i] * r * r;
    }
    return f;
}

static inline anvil_status lb_closure(void *ctx, float *loss)
{
    lb_problem *p = ctx;
    p->calls++;
    if (p->fail_at > 0 && p->calls == p->fail_at)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "test closure: the injected failure of call %lld",
                          (long long)p->calls);
    size_t bytes = (size_t)p->n * sizeof(float);
    ANVIL_TRY(p->be->download(p->be, p->hx, p->params, bytes));
    p->d2h_copies++;
    p->d2h_bytes += (int64_t)bytes;
    double f;
    if (p->problem == 0)
        f = lb_rosenbrock(p->hx, p->n, p->g64);
    else if (p->problem == 1)
        f = lb_least_squares(p->hx, p->n, p->A, p->b, p->m, p->g64);
    else
        f = lb_quadratic(p->hx, p->n, p->A, p->b, p->g64);
    for (int64_t i = 0; i < p->n; i++)
        p->hg[i] = (float)p->g64[i];
    ANVIL_TRY(p->be->upload(p->be, p->grads, p->hg, bytes));
    p->h2d_copies++;
    *loss = (float)f;
    return ANVIL_OK;
}

/* Device params (= x0) and grads on be, and host staging. */
static inline void lb_problem_open(lb_problem *p, anvil_backend *be, int problem, int64_t n, const float *x0,
                                   const float *A, const float *b, int m)
{
    memset(p, 0, sizeof *p);
    p->be = be;
    p->n = n;
    p->problem = problem;
    p->A = A;
    p->b = b;
    p->m = m;
    size_t bytes = (size_t)n * sizeof(float);
    CHECK_OK(be->alloc(be, bytes, (void **)&p->params));
    CHECK_OK(be->alloc(be, bytes, (void **)&p->grads));
    CHECK_OK(be->upload(be, p->params, x0, bytes));
    CHECK_OK(be->zero(be, p->grads, bytes));
    p->hx = malloc(bytes);
    p->hg = malloc(bytes);
    p->g64 = malloc((size_t)n * sizeof(double));
    assert_true(p->hx && p->hg && p->g64);
}

static inline void lb_problem_close(lb_problem *p)
{
    p->be->free(p->be, p->params);
    p->be->free(p->be, p->grads);
    free(p->hx);
    free(p->hg);
    free(p->g64);
}

/* The case's problem on be, from x0. */
static inline void lb_problem_for(lb_problem *p, anvil_backend *be, const lb_golden *g, const lb_case *c)
{
    const float *A = NULL, *b = NULL;
    int m = 0;
    if (c->problem == 1) {
        A = anvil_tensor_data(lb_get(g, "lsq.A"));
        b = anvil_tensor_data(lb_get(g, "lsq.b"));
        m = (int)anvil_tensor_numel(lb_get(g, "lsq.b"));
    }
    lb_problem_open(p, be, c->problem, c->n, c->x0, A, b, m);
}

/* ---------------------------------------------------------------- a run */

typedef struct {
    float params[LB_MAX_STEPS][LB_MAX_N]; /* after each step */
    float loss[LB_MAX_STEPS];
    int64_t evals[LB_MAX_STEPS], iters[LB_MAX_STEPS];
} lb_run;

/* Steps [from, to) of an optimizer on a problem, recording into r. */
static inline void lb_steps(anvil_lbfgs *opt, lb_problem *p, int from, int to, lb_run *r)
{
    for (int k = from; k < to; k++) {
        CHECK_OK(anvil_lbfgs_step(opt, lb_closure, p, &r->loss[k]));
        CHECK_OK(p->be->download(p->be, r->params[k], p->params, (size_t)p->n * sizeof(float)));
        r->evals[k] = anvil_lbfgs_func_evals(opt);
        r->iters[k] = anvil_lbfgs_n_iter(opt);
    }
}

/* The whole case on be, with options o (the case's when NULL). */
static inline void lb_run_case(anvil_backend *be, const lb_golden *g, const lb_case *c,
                               const anvil_lbfgs_options *o, lb_run *r)
{
    lb_problem p;
    anvil_lbfgs *opt = NULL;
    memset(r, 0, sizeof *r);
    lb_problem_for(&p, be, g, c);
    CHECK_OK(anvil_lbfgs_create(&opt, be, p.params, p.grads, c->n, o ? o : &c->o));
    lb_steps(opt, &p, 0, c->steps, r);
    anvil_lbfgs_free(opt);
    lb_problem_close(&p);
}

/* max over a run's steps of |got - want| / (atol + rtol |want|), params and losses;
 * *abs_err: the largest |got - want| of the params. */
static inline double lb_compare(const lb_run *r, const float *want_params, const float *want_loss,
                                const lb_case *c, double atol, double rtol, double *abs_err)
{
    double e = 0.0, a = 0.0;
    for (int k = 0; k < c->steps; k++) {
        const float *w = want_params + k * c->n;
        double ek = tu_rel_err(r->params[k], w, c->n, atol, rtol, NULL);
        double el = tu_rel_err(&r->loss[k], &want_loss[k], 1, atol, rtol, NULL);
        e = fmax(e, fmax(ek, el));
        if (isnan(ek) || isnan(el))
            e = INFINITY;
        for (int64_t i = 0; i < c->n; i++)
            a = fmax(a, fabs((double)r->params[k][i] - (double)w[i]));
    }
    if (abs_err)
        *abs_err = a;
    return e;
}

#endif
