/* test_lbfgs.c — src/optim/lbfgs.c on the CPU backend against torch.optim.LBFGS
 * (tests/golden/lbfgs.safetensors, written by tests/golden/make_lbfgs.py).
 *
 * What is checked
 *  - every golden case (Rosenbrock in 10-D and a least-squares problem in 8-D, each with
 *    line_search_fn None and 'strong_wolfe', history 3 (the ring wraps) and others,
 *    max_iter 1..20 over 1..5 .step() calls, a max_eval limit, tolerance stops, a start at
 *    the optimum): after every step, func_evals and n_iter EXACTLY as torch's; the params
 *    and the returned loss within TOL of torch's float32 run; and within TIGHT of
 *    make_lbfgs.py's mirror with double reductions (what this port should compute);
 *  - a negative control: a 1% different lr, or history_size 2 for 3, fails the comparison;
 *  - export/import: a run resumed from a blob (in a new optimizer, and rewound into the same
 *    one, its ring rotated) continues bit for bit like the uninterrupted run;
 *  - import refuses a wrong size, magic, version, n or history_size; create refuses bad
 *    options (naming each), a backend without vec ops, and reports OOM with the bytes,
 *    leaking nothing; a closure's error comes back from step;
 *  - residency: a step allocates nothing, and the optimizer's own downloads are single
 *    scalars, at most 1 + 3 per iteration + 1 per line-search evaluation, whatever the
 *    history length (the two-loop recursion never reads a scalar back);
 *  - the CPU vec ops against direct formulas.
 *
 * Tolerances
 *  TOL vs torch: |got - want| <= 2e-5 + 2e-5 |want|.  The port differs from torch only in
 *    its dot products and sums (double accumulation vs torch's float32 BLAS); make_lbfgs.py
 *    measures what that alone does (the mirror with double reductions vs torch: worst
 *    4.4e-6 on params of size ~1) and how far a float64 torch run lies from the float32
 *    one (up to 1.5e-5): TOL sits above both.
 *  TIGHT vs the mirror: 1e-6 + 1e-6 |want| — the mirror sums exactly (fsum) where the
 *    backend sums in double in chunks, so a rare last-bit difference could appear;
 *    measured: 0 (bit for bit). */
#include "lbfgs_util.h"

#define TOL_ATOL 2e-5
#define TOL_RTOL 2e-5
#define TIGHT_ATOL 1e-6
#define TIGHT_RTOL 1e-6

static lb_golden G;
static anvil_backend *BE;

static int setup(void **state)
{
    (void)state;
    lb_golden_load(&G);
    CHECK_OK(anvil_cpu_backend_open(&BE));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    anvil_backend_close(BE);
    lb_golden_free(&G);
    return 0;
}

static void expect_counts(const lb_golden *g, const lb_case *c, const lb_run *r)
{
    const int32_t *ev = anvil_tensor_data(lb_get(g, "%s.func_evals", c->name));
    const int32_t *it = anvil_tensor_data(lb_get(g, "%s.n_iter", c->name));
    for (int k = 0; k < c->steps; k++)
        if (r->evals[k] != ev[k] || r->iters[k] != it[k])
            fail_msg("%s step %d: func_evals %lld, n_iter %lld; torch %d, %d", c->name, k + 1,
                     (long long)r->evals[k], (long long)r->iters[k], ev[k], it[k]);
}

static void test_golden(void **state)
{
    (void)state;
    double worst_torch = 0, worst_mirror = 0;
    for (int i = 0; i < LB_NCASES; i++) {
        lb_case c;
        lb_run r;
        lb_case_load(&G, LB_CASES[i], &c);
        lb_run_case(BE, &G, &c, NULL, &r);
        expect_counts(&G, &c, &r);
        double at, am;
        double et = lb_compare(&r, lb_f32(&G, c.name, "params"), lb_f32(&G, c.name, "loss"), &c, TOL_ATOL,
                               TOL_RTOL, &at);
        double em = lb_compare(&r, lb_f32(&G, c.name, "anvil.params"), lb_f32(&G, c.name, "anvil.loss"), &c,
                               TIGHT_ATOL, TIGHT_RTOL, &am);
        print_message("  %-15s %d steps, %3lld evals: |params - torch| %.2e (%.2f of TOL), "
                      "|params - mirror| %.2e\n", c.name, c.steps, (long long)r.evals[c.steps - 1], at, et, am);
        if (!(et <= 1.0))
            fail_msg("%s: %.3gx TOL from torch", c.name, et);
        if (!(em <= 1.0))
            fail_msg("%s: %.3gx TIGHT from the mirror", c.name, em);
        worst_torch = fmax(worst_torch, at);
        worst_mirror = fmax(worst_mirror, am);
    }
    print_message("  worst |params - torch| %.2e, |params - mirror| %.2e\n", worst_torch, worst_mirror);
}

/* The comparison can fail: runs with a slightly different option are caught. */
static void test_negative_control(void **state)
{
    (void)state;
    lb_case c;
    lb_run r;
    lb_case_load(&G, "rosen_none", &c);
    anvil_lbfgs_options o = c.o;
    o.lr *= 1.01f;
    lb_run_case(BE, &G, &c, &o, &r);
    double e = lb_compare(&r, lb_f32(&G, c.name, "params"), lb_f32(&G, c.name, "loss"), &c, TOL_ATOL, TOL_RTOL,
                          NULL);
    print_message("  rosen_none with lr x1.01: %.3g x TOL\n", e);
    assert_true(e > 1.0);

    lb_case_load(&G, "lsq_wolfe_h3", &c);
    o = c.o;
    o.history_size = 2;
    lb_run_case(BE, &G, &c, &o, &r);
    e = lb_compare(&r, lb_f32(&G, c.name, "params"), lb_f32(&G, c.name, "loss"), &c, TOL_ATOL, TOL_RTOL, NULL);
    print_message("  lsq_wolfe_h3 with history_size 2: %.3g x TOL\n", e);
    assert_true(e > 1.0);
}

/* ---------------------------------------------------------------- export / import */

static void expect_same_run(const char *what, const lb_run *a, const lb_run *b, int from, int to, int64_t n)
{
    for (int k = from; k < to; k++) {
        if (memcmp(a->params[k], b->params[k], (size_t)n * sizeof(float)) != 0 ||
            memcmp(&a->loss[k], &b->loss[k], sizeof(float)) != 0 || a->evals[k] != b->evals[k] ||
            a->iters[k] != b->iters[k])
            fail_msg("%s: step %d differs from the uninterrupted run", what, k + 1);
    }
}

static void resume_case(const char *name, int at, int total)
{
    lb_case c;
    lb_case_load(&G, name, &c);
    lb_run full, part;
    lb_problem p, q;
    anvil_lbfgs *a = NULL, *b = NULL;
    void *blob = NULL, *blob_full = NULL, *blob_b = NULL;
    size_t bytes = 0, bytes_full = 0, bytes_b = 0;
    float saved[LB_MAX_N];
    memset(&full, 0, sizeof full);
    memset(&part, 0, sizeof part);

    /* the uninterrupted run, with a blob and the params saved after step `at` */
    lb_problem_for(&p, BE, &G, &c);
    CHECK_OK(anvil_lbfgs_create(&a, BE, p.params, p.grads, c.n, &c.o));
    lb_steps(a, &p, 0, at, &full);
    CHECK_OK(anvil_lbfgs_export(a, &blob, &bytes));
    memcpy(saved, full.params[at - 1], sizeof saved);
    lb_steps(a, &p, at, total, &full);
    CHECK_OK(anvil_lbfgs_export(a, &blob_full, &bytes_full));

    /* resumed in a new optimizer on new buffers */
    lb_problem_for(&q, BE, &G, &c);
    CHECK_OK(BE->upload(BE, q.params, saved, (size_t)c.n * sizeof(float)));
    CHECK_OK(anvil_lbfgs_create(&b, BE, q.params, q.grads, c.n, &c.o));
    CHECK_OK(anvil_lbfgs_import(b, blob, bytes));
    lb_steps(b, &q, at, total, &part);
    expect_same_run(name, &full, &part, at, total, c.n);
    CHECK_OK(anvil_lbfgs_export(b, &blob_b, &bytes_b));
    assert_true(bytes_b == bytes_full && memcmp(blob_b, blob_full, bytes_b) == 0);
    free(blob_b);

    /* rewound into the first optimizer (its ring rotated by the later steps) */
    CHECK_OK(BE->upload(BE, p.params, saved, (size_t)c.n * sizeof(float)));
    CHECK_OK(anvil_lbfgs_import(a, blob, bytes));
    memset(&part, 0, sizeof part);
    lb_steps(a, &p, at, total, &part);
    expect_same_run(name, &full, &part, at, total, c.n);
    CHECK_OK(anvil_lbfgs_export(a, &blob_b, &bytes_b));
    assert_true(bytes_b == bytes_full && memcmp(blob_b, blob_full, bytes_b) == 0);

    free(blob_b);
    free(blob);
    free(blob_full);
    anvil_lbfgs_free(a);
    anvil_lbfgs_free(b);
    lb_problem_close(&p);
    lb_problem_close(&q);
}

static void test_resume(void **state)
{
    (void)state;
    resume_case("rosen_wolfe_h3", 2, 3); /* line search; 10 iterations wrap a ring of 3 */
    resume_case("lsq_none_h3", 3, 5);    /* no line search */
    resume_case("lsq_wolfe", 1, 3);
    resume_case("rosen_iter1", 1, 4);    /* max_eval 1: the one-evaluation search */
    resume_case("rosen_at_min", 1, 2);   /* a state with no iteration yet */
}

static void expect_error(anvil_status got, anvil_status want, const char *needle)
{
    if (got != want)
        fail_msg("got %s (%s), want %s", anvil_status_name(got), anvil_last_error(), anvil_status_name(want));
    if (needle && !strstr(anvil_last_error(), needle))
        fail_msg("the message \"%s\" does not mention \"%s\"", anvil_last_error(), needle);
}

static void test_import_errors(void **state)
{
    (void)state;
    lb_case c;
    lb_case_load(&G, "lsq_none_h3", &c);
    lb_problem p;
    lb_problem_for(&p, BE, &G, &c);
    anvil_lbfgs *a = NULL, *other = NULL;
    CHECK_OK(anvil_lbfgs_create(&a, BE, p.params, p.grads, c.n, &c.o));
    lb_run r;
    lb_steps(a, &p, 0, 2, &r);
    void *blob = NULL;
    size_t bytes = 0;
    CHECK_OK(anvil_lbfgs_export(a, &blob, &bytes));
    unsigned char *bad = malloc(bytes + 4);
    assert_non_null(bad);

    expect_error(anvil_lbfgs_import(a, blob, bytes - 4), ANVIL_ERR_FORMAT, "bytes");
    memcpy(bad, blob, bytes);
    memset(bad + bytes, 0, 4);
    expect_error(anvil_lbfgs_import(a, bad, bytes + 4), ANVIL_ERR_FORMAT, "bytes");
    bad[0] = 'X';
    expect_error(anvil_lbfgs_import(a, bad, bytes), ANVIL_ERR_FORMAT, "not an L-BFGS state");
    memcpy(bad, blob, bytes);
    bad[8] = 99; /* the version */
    expect_error(anvil_lbfgs_import(a, bad, bytes), ANVIL_ERR_FORMAT, "version");
    memcpy(bad, blob, bytes);
    bad[32] = 77; /* the history count, beyond history_size */
    expect_error(anvil_lbfgs_import(a, bad, bytes), ANVIL_ERR_FORMAT, "inconsistent");
    expect_error(anvil_lbfgs_import(a, blob, 10), ANVIL_ERR_FORMAT, NULL);
    expect_error(anvil_lbfgs_import(NULL, blob, bytes), ANVIL_ERR_INVALID_ARG, NULL);

    /* another n */
    CHECK_OK(anvil_lbfgs_create(&other, BE, p.params, p.grads, c.n - 1, &c.o));
    expect_error(anvil_lbfgs_import(other, blob, bytes), ANVIL_ERR_SHAPE, "parameters");
    anvil_lbfgs_free(other);
    /* another history_size */
    anvil_lbfgs_options o = c.o;
    o.history_size = 4;
    CHECK_OK(anvil_lbfgs_create(&other, BE, p.params, p.grads, c.n, &o));
    expect_error(anvil_lbfgs_import(other, blob, bytes), ANVIL_ERR_INVALID_ARG, "history_size");
    anvil_lbfgs_free(other);

    /* a refused import leaves the state as it was: the run goes on like the reference */
    lb_steps(a, &p, 2, c.steps, &r);
    expect_counts(&G, &c, &r);
    free(bad);
    free(blob);
    anvil_lbfgs_free(a);
    lb_problem_close(&p);
}

/* ---------------------------------------------------------------- create errors */

static void test_bad_options(void **state)
{
    (void)state;
    float *buf = NULL;
    CHECK_OK(BE->alloc(BE, 64 * sizeof(float), (void **)&buf));
    anvil_lbfgs *s = NULL;
    anvil_lbfgs_options d = anvil_lbfgs_default_options(), o;
    assert_true(d.lr == 1.0f && d.max_iter == 20 && d.max_eval == 0 && d.tolerance_grad == 1e-7f &&
                d.tolerance_change == 1e-9f && d.history_size == 100 && !d.strong_wolfe);
    o = d, o.lr = -0.5f;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "lr");
    o = d, o.lr = NAN;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "lr");
    o = d, o.lr = INFINITY;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "lr");
    o = d, o.max_iter = 0;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "max_iter");
    o = d, o.max_eval = -1;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "max_eval");
    o = d, o.tolerance_grad = -1e-3f;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "tolerance_grad");
    o = d, o.tolerance_change = NAN;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "tolerance_change");
    o = d, o.history_size = 0;
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o), ANVIL_ERR_INVALID_ARG, "history_size");
    expect_error(anvil_lbfgs_create(&s, BE, buf, buf + 32, 0, &d), ANVIL_ERR_INVALID_ARG, "n = 0");
    expect_error(anvil_lbfgs_create(&s, BE, NULL, buf + 32, 32, &d), ANVIL_ERR_INVALID_ARG, "params");
    expect_error(anvil_lbfgs_create(&s, BE, buf, NULL, 32, &d), ANVIL_ERR_INVALID_ARG, "grads");
    expect_error(anvil_lbfgs_create(&s, NULL, buf, buf + 32, 32, &d), ANVIL_ERR_INVALID_ARG, "backend");
    assert_null(s);
    /* a backend without vector operations */
    anvil_backend nov = *BE;
    nov.vec = NULL;
    expect_error(anvil_lbfgs_create(&s, &nov, buf, buf + 32, 32, &d), ANVIL_ERR_UNSUPPORTED, "vector");
    /* explicit options and NULL (the defaults) are fine */
    o = d, o.max_eval = 3, o.strong_wolfe = true, o.history_size = 1;
    CHECK_OK(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, &o));
    anvil_lbfgs_free(s);
    CHECK_OK(anvil_lbfgs_create(&s, BE, buf, buf + 32, 32, NULL));
    anvil_lbfgs_free(s);
    anvil_lbfgs_free(NULL);
    BE->free(BE, buf);
}

/* A CPU backend whose alloc fails above a limit, counting what it hands out. */
static anvil_status (*cpu_alloc)(anvil_backend *, size_t, void **);
static void (*cpu_free)(anvil_backend *, void *);
static int64_t live_allocs;
static size_t alloc_limit;

static anvil_status limited_alloc(anvil_backend *be, size_t bytes, void **out)
{
    if (bytes > alloc_limit)
        return anvil_fail(ANVIL_ERR_OOM, "test backend: %zu bytes over the limit", bytes);
    anvil_status s = cpu_alloc(be, bytes, out);
    live_allocs += s == ANVIL_OK;
    return s;
}

static void counted_free(anvil_backend *be, void *p)
{
    live_allocs -= p != NULL;
    cpu_free(be, p);
}

static void test_oom(void **state)
{
    (void)state;
    anvil_backend lim = *BE;
    cpu_alloc = BE->alloc;
    cpu_free = BE->free;
    lim.alloc = limited_alloc;
    lim.free = counted_free;
    alloc_limit = 1 << 20;
    live_allocs = 0;
    float *buf = NULL;
    CHECK_OK(lim.alloc(&lim, 4000 * sizeof(float), (void **)&buf));
    anvil_lbfgs *s = NULL;
    anvil_lbfgs_options o = anvil_lbfgs_default_options();
    /* n = 2000 (a stride of 2048 floats, ANVIL_ALIGN-aligned vectors): 2 x 101 history
     * vectors + 2 work vectors of 8 KB, and 9 + 2 x 101 scalars: over the 1 MB limit */
    size_t want = (size_t)(2 * 101 + 2) * 2048 * 4 + (9 + 2 * 101) * 4;
    char expect[64];
    snprintf(expect, sizeof expect, "%zu bytes", want);
    expect_error(anvil_lbfgs_create(&s, &lim, buf, buf + 2000, 2000, &o), ANVIL_ERR_OOM, expect);
    print_message("  %s\n", anvil_last_error());
    assert_null(s);
    assert_int_equal(live_allocs, 1);
    /* more than can be addressed: refused before any allocation */
    o.history_size = 1 << 30;
    expect_error(anvil_lbfgs_create(&s, &lim, buf, buf + 2000, (int64_t)1 << 40, &o), ANVIL_ERR_OOM,
                 "more than can be addressed");
    assert_int_equal(live_allocs, 1);
    /* under the limit: allocated once, freed once */
    o.history_size = 5;
    CHECK_OK(anvil_lbfgs_create(&s, &lim, buf, buf + 2000, 2000, &o));
    assert_int_equal(live_allocs, 2);
    anvil_lbfgs_free(s);
    assert_int_equal(live_allocs, 1);
    lim.free(&lim, buf);
    assert_int_equal(live_allocs, 0);
}

static void test_closure_error(void **state)
{
    (void)state;
    const char *names[] = {"rosen_wolfe", "rosen_none"};
    for (int i = 0; i < 2; i++) {
        lb_case c;
        lb_case_load(&G, names[i], &c);
        lb_problem p;
        lb_problem_for(&p, BE, &G, &c);
        anvil_lbfgs *s = NULL;
        CHECK_OK(anvil_lbfgs_create(&s, BE, p.params, p.grads, c.n, &c.o));
        p.fail_at = 5; /* inside the line search / the iterations */
        float loss = 0;
        expect_error(anvil_lbfgs_step(s, lb_closure, &p, &loss), ANVIL_ERR_INVALID_ARG, "injected failure");
        p.fail_at = 1; /* the first call */
        p.calls = 0;
        expect_error(anvil_lbfgs_step(s, lb_closure, &p, &loss), ANVIL_ERR_INVALID_ARG, "injected failure");
        expect_error(anvil_lbfgs_step(s, NULL, &p, &loss), ANVIL_ERR_INVALID_ARG, "closure");
        expect_error(anvil_lbfgs_step(NULL, lb_closure, &p, &loss), ANVIL_ERR_INVALID_ARG, "optimizer");
        anvil_lbfgs_free(s);
        lb_problem_close(&p);
    }
}

/* ---------------------------------------------------------------- residency */

static void residency_case(const char *name, int history)
{
    lb_case c;
    lb_case_load(&G, name, &c);
    c.o.history_size = history;
    lb_problem p;
    lb_problem_for(&p, BE, &G, &c);
    anvil_lbfgs *s = NULL;
    CHECK_OK(anvil_lbfgs_create(&s, BE, p.params, p.grads, c.n, &c.o));
    for (int k = 0; k < c.steps; k++) {
        anvil_counters before = BE->counters;
        int64_t cd = p.d2h_copies, cb = p.d2h_bytes, cu = p.h2d_copies;
        int64_t it = anvil_lbfgs_n_iter(s), ev = anvil_lbfgs_func_evals(s);
        float loss;
        CHECK_OK(anvil_lbfgs_step(s, lb_closure, &p, &loss));
        int64_t copies = BE->counters.d2h_copies - before.d2h_copies - (p.d2h_copies - cd);
        int64_t bytes = BE->counters.d2h_bytes - before.d2h_bytes - (p.d2h_bytes - cb);
        int64_t ups = BE->counters.h2d_copies - before.h2d_copies - (p.h2d_copies - cu);
        int64_t iters = anvil_lbfgs_n_iter(s) - it, evals = anvil_lbfgs_func_evals(s) - ev;
        assert_int_equal(BE->counters.device_allocs, before.device_allocs);
        if (copies > 1 + 3 * iters + evals || bytes > 12 * copies || ups > (it == 0 ? 1 : 0))
            fail_msg("%s (history %d) step %d: the optimizer made %lld downloads (%lld bytes) and %lld "
                     "uploads for %lld iterations and %lld evaluations",
                     name, history, k + 1, (long long)copies, (long long)bytes, (long long)ups,
                     (long long)iters, (long long)evals);
    }
    anvil_lbfgs_free(s);
    lb_problem_close(&p);
}

static void test_residency(void **state)
{
    (void)state;
    residency_case("rosen_wolfe", 100);
    residency_case("rosen_wolfe", 3);
    residency_case("rosen_none", 5);
    residency_case("lsq_none_h3", 50);
}

/* ---------------------------------------------------------------- vec ops */

static void test_vec_ops(void **state)
{
    (void)state;
    const int64_t sizes[] = {1, 7, 4099, (1 << 20) + 5};
    for (int si = 0; si < 4; si++) {
        int64_t n = sizes[si];
        float *x = NULL, *y = NULL, *sc = NULL;
        CHECK_OK(BE->alloc(BE, (size_t)n * 4, (void **)&x));
        CHECK_OK(BE->alloc(BE, (size_t)n * 4, (void **)&y));
        CHECK_OK(BE->alloc(BE, 64, (void **)&sc));
        tu_fill_uniform(x, n, -2.0f, 2.0f, 11 + (uint64_t)n);
        tu_fill_uniform(y, n, -2.0f, 2.0f, 12 + (uint64_t)n);
        float *y0 = malloc((size_t)n * 4);
        assert_non_null(y0);
        memcpy(y0, y, (size_t)n * 4);
        sc[0] = 0.75f;
        sc[1] = -0.125f;
        int64_t launches = BE->counters.host_kernel_launches;

        /* AXPY: fma with c = (float)alpha * (ca - cb) */
        anvil_vec_op op = {ANVIL_VEC_AXPY, n, x, y, NULL, -2.0, sc, sc + 1};
        CHECK_OK(BE->vec(BE, &op));
        float c = -2.0f * (0.75f - -0.125f);
        for (int64_t i = 0; i < n; i++)
            if (y[i] != fmaf(c, x[i], y0[i]))
                fail_msg("axpy n %lld: element %lld", (long long)n, (long long)i);
        /* SCALE in place with a host coefficient */
        memcpy(y, y0, (size_t)n * 4);
        op = (anvil_vec_op){ANVIL_VEC_SCALE, n, y, y, NULL, 0.1, NULL, NULL};
        CHECK_OK(BE->vec(BE, &op));
        for (int64_t i = 0; i < n; i++)
            assert_true(y[i] == y0[i] * 0.1f);
        /* DOT (times ca) and ABS_SUM against long double sums */
        memcpy(y, y0, (size_t)n * 4);
        op = (anvil_vec_op){ANVIL_VEC_DOT, n, x, y, sc + 2, 1.0, NULL, NULL};
        CHECK_OK(BE->vec(BE, &op));
        op.out = sc + 3, op.ca = sc;
        CHECK_OK(BE->vec(BE, &op));
        long double dot = 0, asum = 0;
        float amax = 0;
        for (int64_t i = 0; i < n; i++) {
            dot += (long double)x[i] * y[i];
            asum += fabsf(x[i]);
            amax = fmaxf(amax, fabsf(x[i]));
        }
        assert_true(fabsl(sc[2] - dot) <= 6e-8L * fabsl(dot) + 1e-30L);
        assert_true(sc[3] == sc[2] * 0.75f);
        float again = sc[2];
        CHECK_OK(BE->vec(BE, &op)); /* deterministic */
        op.out = sc + 2, op.ca = NULL;
        CHECK_OK(BE->vec(BE, &op));
        assert_true(sc[2] == again);
        op = (anvil_vec_op){ANVIL_VEC_ABS_SUM, n, x, NULL, sc + 4, 1.0, NULL, NULL};
        CHECK_OK(BE->vec(BE, &op));
        assert_true(fabsl(sc[4] - asum) <= 6e-8L * asum);
        op.kind = ANVIL_VEC_ABS_MAX;
        CHECK_OK(BE->vec(BE, &op));
        assert_true(sc[4] == amax);
        x[n / 2] = NAN; /* torch's max propagates NaN */
        CHECK_OK(BE->vec(BE, &op));
        assert_true(isnan(sc[4]));
        /* COPY and RDIV */
        op = (anvil_vec_op){ANVIL_VEC_COPY, n, y0, y, NULL, 1.0, NULL, NULL};
        CHECK_OK(BE->vec(BE, &op));
        assert_memory_equal(y, y0, (size_t)n * 4);
        op = (anvil_vec_op){ANVIL_VEC_RDIV, 1, sc + 1, NULL, sc + 5, 1.0, sc, NULL};
        CHECK_OK(BE->vec(BE, &op));
        assert_true(sc[5] == 0.75f / -0.125f);
        assert_int_equal(BE->counters.host_kernel_launches - launches, 11);
        free(y0);
        BE->free(BE, x);
        BE->free(BE, y);
        BE->free(BE, sc);
    }
    /* malformed ops */
    float v[4] = {0};
    anvil_vec_op op = {ANVIL_VEC_DOT, 4, v, v, NULL, 1.0, NULL, NULL};
    expect_error(BE->vec(BE, &op), ANVIL_ERR_INVALID_ARG, "NULL operand");
    op = (anvil_vec_op){ANVIL_VEC_KINDS, 4, v, v, v, 1.0, NULL, NULL};
    expect_error(BE->vec(BE, &op), ANVIL_ERR_INVALID_ARG, "unknown");
    op = (anvil_vec_op){ANVIL_VEC_AXPY, -1, v, v, NULL, 1.0, NULL, NULL};
    expect_error(BE->vec(BE, &op), ANVIL_ERR_INVALID_ARG, "negative");
    op = (anvil_vec_op){ANVIL_VEC_AXPY, 4, v, v, NULL, 1.0, NULL, v};
    expect_error(BE->vec(BE, &op), ANVIL_ERR_INVALID_ARG, "cb");
    op = (anvil_vec_op){ANVIL_VEC_ABS_MAX, 0, NULL, NULL, v, 1.0, NULL, NULL};
    CHECK_OK(BE->vec(BE, &op)); /* empty: 0 */
    assert_true(v[0] == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_negative_control),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_import_errors),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_closure_error),
        cmocka_unit_test(test_residency),
        cmocka_unit_test(test_vec_ops),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
