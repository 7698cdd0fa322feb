/* test_gpu_lbfgs.c — L-BFGS (src/optim/lbfgs.c) and the vec ops it runs on, on the CUDA
 * backend, against the CPU backend (and torch's goldens, tests/golden/lbfgs.safetensors).
 *
 * What is checked
 *  - every vec op (backend.h) on sizes 1 .. 3M (one block, many blocks, the split
 *    reductions' 1024-block cap) against the CPU backend: COPY, SCALE, AXPY (host and
 *    device coefficients), ABS_MAX (with a NaN) and RDIV bit for bit; DOT (plain and
 *    times a device scalar) and ABS_SUM within one float ulp (both sum in double, in
 *    different orders, and round once); each op counts as host-launched work;
 *  - every golden case of test_lbfgs.c on CUDA: func_evals and n_iter exactly the CPU's
 *    (and torch's), params and losses within TOL of the CPU run and of torch's;
 *  - a 1M-parameter separable quadratic (3 steps, strong Wolfe, history 5): CUDA vs CPU
 *    within LARGE_TOL with the same evaluation counts, and no device allocation in a step;
 *  - export/import on CUDA: resumed == uninterrupted bit for bit; a blob exported on CUDA
 *    imports on the CPU backend (the format is the backend's business only).
 *
 * Tolerances: TOL |gpu - cpu| <= 2e-5 + 2e-5 |cpu| (test_lbfgs.c's TOL vs torch: the two
 * backends differ only in the order of double additions inside dots, so they usually agree
 * bit for bit, and a one-ulp difference in a dot moves these runs by less than the
 * float32-vs-float64 spread make_lbfgs.py prints).  LARGE_TOL 1e-4 + 1e-4 |cpu| for the
 * 1M-parameter run: its dots sum a million terms, and its first step has t = 1/sum|g|.
 *
 * Without a usable CUDA GPU every test is skipped.  ANVIL_GPU_TEST_SELFCHECK=1 runs the
 * "GPU" side on a second CPU backend instead (a check of this harness without a GPU). */
#include "lbfgs_util.h"

#define TOL_ATOL 2e-5
#define TOL_RTOL 2e-5
#define LARGE_ATOL 1e-4
#define LARGE_RTOL 1e-4

static bool have_gpu;
static anvil_backend *GPU, *CPU;
static lb_golden G;

static int group_setup(void **state)
{
    (void)state;
    lb_golden_load(&G);
    CHECK_OK(anvil_cpu_backend_open(&CPU));
    const char *self = getenv("ANVIL_GPU_TEST_SELFCHECK");
    if (self && *self && strcmp(self, "0") != 0) {
        fprintf(stderr, "test_gpu_lbfgs: ANVIL_GPU_TEST_SELFCHECK: comparing the CPU backend with itself\n");
        CHECK_OK(anvil_cpu_backend_open(&GPU));
        have_gpu = true;
        return 0;
    }
    have_gpu = anvil_cuda_available() && anvil_cuda_backend_open(&GPU) == ANVIL_OK;
    if (!have_gpu)
        fprintf(stderr, "test_gpu_lbfgs: no usable CUDA GPU (%s); skipping every test\n", anvil_last_error());
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (GPU)
        anvil_backend_close(GPU);
    anvil_backend_close(CPU);
    lb_golden_free(&G);
    return 0;
}

#define NEED_GPU()     \
    do {               \
        if (!have_gpu) \
            skip();    \
    } while (0)

/* ---------------------------------------------------------------- vec ops */

static float *dev_from(const float *h, int64_t n)
{
    float *d = NULL;
    CHECK_OK(GPU->alloc(GPU, (size_t)(n > 0 ? n : 1) * sizeof(float), (void **)&d));
    if (n > 0)
        CHECK_OK(GPU->upload(GPU, d, h, (size_t)n * sizeof(float)));
    return d;
}

static void to_host(float *h, const float *d, int64_t n)
{
    CHECK_OK(GPU->download(GPU, h, d, (size_t)n * sizeof(float)));
}

/* The op on both backends: the CPU one on host copies; x, y, scalars given on the host. */
typedef struct {
    float *x, *y, *sc; /* host: x[n], y[n], sc[8] (sc[0..1] ca/cb inputs, sc[2] out) */
} opdata;

static void run_both(anvil_vec_op op, int64_t n, const opdata *h, float *y_cpu, float *y_gpu, float *out_cpu,
                     float *out_gpu)
{
    /* op.x / op.y / op.out / op.ca / op.cb hold offsets into {x, y, sc} encoded by the caller
     * as host pointers; map them to each backend's buffers */
    float *dx = dev_from(h->x, n), *dy = dev_from(h->y, n), *dsc = dev_from(h->sc, 8);
    float *cx = malloc((size_t)(n > 0 ? n : 1) * 4), *cy = malloc((size_t)(n > 0 ? n : 1) * 4), csc[8];
    assert_true(cx && cy);
    memcpy(cx, h->x, (size_t)n * 4);
    memcpy(cy, h->y, (size_t)n * 4);
    memcpy(csc, h->sc, sizeof csc);
#define MAP(p, X, Y, S) ((p) == h->x ? (X) : (p) == h->y ? (Y) : (p) ? (S) + ((p) - h->sc) : NULL)
    anvil_vec_op c = op, g = op;
    c.x = MAP(op.x, cx, cy, csc), c.y = MAP(op.y, cx, cy, csc), c.out = MAP(op.out, cx, cy, csc);
    c.ca = MAP(op.ca, cx, cy, csc), c.cb = MAP(op.cb, cx, cy, csc);
    g.x = MAP(op.x, dx, dy, dsc), g.y = MAP(op.y, dx, dy, dsc), g.out = MAP(op.out, dx, dy, dsc);
    g.ca = MAP(op.ca, dx, dy, dsc), g.cb = MAP(op.cb, dx, dy, dsc);
#undef MAP
    int64_t launches = GPU->counters.host_kernel_launches;
    CHECK_OK(CPU->vec(CPU, &c));
    CHECK_OK(GPU->vec(GPU, &g));
    CHECK_OK(GPU->sync(GPU));
    if (n > 0)
        assert_true(GPU->counters.host_kernel_launches > launches);
    memcpy(y_cpu, cy, (size_t)n * 4);
    to_host(y_gpu, dy, n);
    *out_cpu = csc[2];
    to_host(out_gpu, dsc + 2, 1);
    GPU->free(GPU, dx);
    GPU->free(GPU, dy);
    GPU->free(GPU, dsc);
    free(cx);
    free(cy);
}

static bool within_ulp(float a, float b)
{
    return a == b || nextafterf(b, INFINITY) == a || nextafterf(b, -INFINITY) == a;
}

static void test_vec_ops(void **state)
{
    (void)state;
    NEED_GPU();
    const int64_t sizes[] = {0, 1, 5, 1000, 33003, (1 << 20) + 7, 3000017};
    for (int si = 0; si < 7; si++) {
        int64_t n = sizes[si];
        size_t nb = (size_t)(n > 0 ? n : 1) * 4;
        opdata h;
        h.x = malloc(nb), h.y = malloc(nb), h.sc = calloc(8, 4);
        float *yc = malloc(nb), *yg = malloc(nb), oc = 0, og = 0;
        assert_true(h.x && h.y && h.sc && yc && yg);
        tu_fill_uniform(h.x, n, -3.0f, 3.0f, 100 + (uint64_t)n);
        tu_fill_uniform(h.y, n, -1.0f, 1.0f, 200 + (uint64_t)n);
        h.sc[0] = 0.3f, h.sc[1] = -1.7f;
        struct {
            const char *what;
            anvil_vec_op op;
            bool vec_exact, out_exact, out_ulp;
        } cases[] = {
            {"copy", {ANVIL_VEC_COPY, n, h.x, h.y, NULL, 1.0, NULL, NULL}, true, false, false},
            {"scale host", {ANVIL_VEC_SCALE, n, h.x, h.y, NULL, -0.37, NULL, NULL}, true, false, false},
            {"scale ca", {ANVIL_VEC_SCALE, n, h.y, h.y, NULL, 1.0, h.sc, NULL}, true, false, false},
            {"axpy host", {ANVIL_VEC_AXPY, n, h.x, h.y, NULL, 0.123456789, NULL, NULL}, true, false, false},
            {"axpy ca", {ANVIL_VEC_AXPY, n, h.x, h.y, NULL, -1.0, h.sc, NULL}, true, false, false},
            {"axpy ca-cb", {ANVIL_VEC_AXPY, n, h.x, h.y, NULL, 1.0, h.sc, h.sc + 1}, true, false, false},
            {"dot", {ANVIL_VEC_DOT, n, h.x, h.y, h.sc + 2, 1.0, NULL, NULL}, true, false, true},
            {"dot*ca", {ANVIL_VEC_DOT, n, h.x, h.y, h.sc + 2, 1.0, h.sc + 1, NULL}, true, false, true},
            {"dot self", {ANVIL_VEC_DOT, n, h.x, (float *)h.x, h.sc + 2, 1.0, NULL, NULL}, true, false, true},
            {"abs_sum", {ANVIL_VEC_ABS_SUM, n, h.x, NULL, h.sc + 2, 1.0, NULL, NULL}, true, false, true},
            {"abs_max", {ANVIL_VEC_ABS_MAX, n, h.x, NULL, h.sc + 2, 1.0, NULL, NULL}, true, true, false},
            {"rdiv", {ANVIL_VEC_RDIV, 1, h.sc + 1, NULL, h.sc + 2, 1.0, h.sc, NULL}, true, true, false},
        };
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            run_both(cases[k].op, n, &h, yc, yg, &oc, &og);
            if (cases[k].vec_exact && n > 0 && memcmp(yc, yg, (size_t)n * 4) != 0)
                fail_msg("vec %s, n %lld: the vector differs from the CPU's", cases[k].what, (long long)n);
            if (cases[k].out_exact && memcmp(&oc, &og, 4) != 0)
                fail_msg("vec %s, n %lld: %.9g, CPU %.9g", cases[k].what, (long long)n, og, oc);
            if (cases[k].out_ulp && !within_ulp(og, oc))
                fail_msg("vec %s, n %lld: %.9g, CPU %.9g (more than one ulp)", cases[k].what, (long long)n, og, oc);
        }
        if (n > 0) { /* NaN goes through abs_max */
            h.x[n - 1] = NAN;
            anvil_vec_op op = {ANVIL_VEC_ABS_MAX, n, h.x, NULL, h.sc + 2, 1.0, NULL, NULL};
            run_both(op, n, &h, yc, yg, &oc, &og);
            assert_true(isnan(og) && isnan(oc));
        }
        free(h.x), free(h.y), free(h.sc), free(yc), free(yg);
    }
}

/* ---------------------------------------------------------------- golden cases */

static void test_golden(void **state)
{
    (void)state;
    NEED_GPU();
    double worst = 0;
    for (int i = 0; i < LB_NCASES; i++) {
        lb_case c;
        lb_run rc, rg;
        lb_case_load(&G, LB_CASES[i], &c);
        lb_run_case(CPU, &G, &c, NULL, &rc);
        lb_run_case(GPU, &G, &c, NULL, &rg);
        for (int k = 0; k < c.steps; k++)
            if (rg.evals[k] != rc.evals[k] || rg.iters[k] != rc.iters[k])
                fail_msg("%s step %d: func_evals %lld, n_iter %lld; CPU %lld, %lld", c.name, k + 1,
                         (long long)rg.evals[k], (long long)rg.iters[k], (long long)rc.evals[k],
                         (long long)rc.iters[k]);
        float pc[LB_MAX_STEPS * LB_MAX_N];
        for (int k = 0; k < c.steps; k++)
            memcpy(pc + k * c.n, rc.params[k], (size_t)c.n * 4);
        double a, at;
        double e = lb_compare(&rg, pc, rc.loss, &c, TOL_ATOL, TOL_RTOL, &a);
        double et = lb_compare(&rg, lb_f32(&G, c.name, "params"), lb_f32(&G, c.name, "loss"), &c, TOL_ATOL,
                               TOL_RTOL, &at);
        print_message("  %-15s |gpu - cpu| %.2e, |gpu - torch| %.2e\n", c.name, a, at);
        if (!(e <= 1.0) || !(et <= 1.0))
            fail_msg("%s: %.3g x TOL from the CPU, %.3g x TOL from torch", c.name, e, et);
        worst = fmax(worst, a);
    }
    print_message("  worst |gpu - cpu| %.2e\n", worst);
}

/* ---------------------------------------------------------------- a large problem */

static void large_run(anvil_backend *be, const float *a, const float *cv, int64_t n, int steps, float *params,
                      float *loss, int64_t *evals)
{
    float *x0 = calloc((size_t)n, 4);
    assert_non_null(x0);
    lb_problem p;
    lb_problem_open(&p, be, 2, n, x0, a, cv, 0);
    anvil_lbfgs_options o = anvil_lbfgs_default_options();
    o.history_size = 5;
    o.max_iter = 5;
    o.strong_wolfe = true;
    anvil_lbfgs *s = NULL;
    CHECK_OK(anvil_lbfgs_create(&s, be, p.params, p.grads, n, &o));
    for (int k = 0; k < steps; k++) {
        int64_t allocs = be->counters.device_allocs;
        CHECK_OK(anvil_lbfgs_step(s, lb_closure, &p, &loss[k]));
        assert_int_equal(be->counters.device_allocs, allocs);
        evals[k] = anvil_lbfgs_func_evals(s);
    }
    CHECK_OK(be->download(be, params, p.params, (size_t)n * 4));
    anvil_lbfgs_free(s);
    lb_problem_close(&p);
    free(x0);
}

static void test_large(void **state)
{
    (void)state;
    NEED_GPU();
    const int64_t n = (1 << 20) + 3;
    enum { STEPS = 3 };
    float *a = malloc((size_t)n * 4), *cv = malloc((size_t)n * 4), *pc = malloc((size_t)n * 4),
          *pg = malloc((size_t)n * 4);
    assert_true(a && cv && pc && pg);
    tu_fill_uniform(a, n, 0.01f, 1.0f, 7); /* curvatures: condition number 100 */
    tu_fill_uniform(cv, n, -1.0f, 1.0f, 8);
    float lc[STEPS], lg[STEPS];
    int64_t ec[STEPS], eg[STEPS];
    large_run(CPU, a, cv, n, STEPS, pc, lc, ec);
    large_run(GPU, a, cv, n, STEPS, pg, lg, eg);
    int64_t worst = 0;
    double e = tu_rel_err(pg, pc, n, LARGE_ATOL, LARGE_RTOL, &worst);
    double el = tu_rel_err(lg, lc, STEPS, LARGE_ATOL, LARGE_RTOL, NULL);
    print_message("  n %lld: losses %.7g %.7g %.7g; evals %lld; |gpu - cpu| %.2e at %lld (%.3g x LARGE_TOL)\n",
                  (long long)n, lc[0], lc[1], lc[2], (long long)ec[STEPS - 1], fabs((double)pg[worst] - pc[worst]),
                  (long long)worst, e);
    for (int k = 0; k < STEPS; k++)
        assert_int_equal(eg[k], ec[k]);
    assert_true(e <= 1.0 && el <= 1.0);
    free(a), free(cv), free(pc), free(pg);
}

/* ---------------------------------------------------------------- resume */

static void test_resume(void **state)
{
    (void)state;
    NEED_GPU();
    const char *names[] = {"rosen_wolfe_h3", "lsq_none_h3"};
    const int at[] = {2, 3};
    for (int i = 0; i < 2; i++) {
        lb_case c;
        lb_case_load(&G, names[i], &c);
        lb_run full, part, cpu;
        memset(&part, 0, sizeof part);
        memset(&cpu, 0, sizeof cpu);
        lb_problem p, q, r;
        anvil_lbfgs *a = NULL, *b = NULL, *h = NULL;
        void *blob = NULL;
        size_t bytes = 0;
        lb_problem_for(&p, GPU, &G, &c);
        CHECK_OK(anvil_lbfgs_create(&a, GPU, p.params, p.grads, c.n, &c.o));
        lb_steps(a, &p, 0, at[i], &full);
        CHECK_OK(anvil_lbfgs_export(a, &blob, &bytes));
        lb_steps(a, &p, at[i], c.steps, &full);
        /* on CUDA: bit for bit */
        lb_problem_for(&q, GPU, &G, &c);
        CHECK_OK(GPU->upload(GPU, q.params, full.params[at[i] - 1], (size_t)c.n * 4));
        CHECK_OK(anvil_lbfgs_create(&b, GPU, q.params, q.grads, c.n, &c.o));
        CHECK_OK(anvil_lbfgs_import(b, blob, bytes));
        lb_steps(b, &q, at[i], c.steps, &part);
        for (int k = at[i]; k < c.steps; k++)
            if (memcmp(part.params[k], full.params[k], (size_t)c.n * 4) != 0 || part.evals[k] != full.evals[k])
                fail_msg("%s: the resumed run differs at step %d", c.name, k + 1);
        /* on the CPU, from the CUDA blob: the same counts, params within TOL */
        lb_problem_for(&r, CPU, &G, &c);
        CHECK_OK(CPU->upload(CPU, r.params, full.params[at[i] - 1], (size_t)c.n * 4));
        CHECK_OK(anvil_lbfgs_create(&h, CPU, r.params, r.grads, c.n, &c.o));
        CHECK_OK(anvil_lbfgs_import(h, blob, bytes));
        lb_steps(h, &r, at[i], c.steps, &cpu);
        for (int k = at[i]; k < c.steps; k++) {
            assert_int_equal(cpu.evals[k], full.evals[k]);
            assert_true(tu_rel_err(cpu.params[k], full.params[k], c.n, TOL_ATOL, TOL_RTOL, NULL) <= 1.0);
        }
        free(blob);
        anvil_lbfgs_free(a);
        anvil_lbfgs_free(b);
        anvil_lbfgs_free(h);
        lb_problem_close(&p);
        lb_problem_close(&q);
        lb_problem_close(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vec_ops),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_resume),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
