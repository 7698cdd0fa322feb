/* test_cpu_kernels.c — every CPU kernel called directly on hand-built nodes and steps,
 * checked against straightforward double-precision reference loops in this file.
 *
 * Tolerance: |got - ref| <= 1e-5 * scale + 1e-6, where scale is |ref| (relative 1e-5
 * against the double reference; the 1e-6 floor covers values near zero, where float32
 * functions such as 1 + erf(x) lose relative accuracy) and, for matrix products, the
 * sum of |a_ik b_kj| (a float32 dot product's error grows with its terms, not its
 * result).
 *
 * Sizes run from single elements to just over a million, so every kernel runs both
 * below and above the CPU backend's threading thresholds (cpu.h: 2^20 elements, 2^17
 * for exp/erf/Philox-heavy ops); reductions are also checked to
 * give the same bits with 1, 2 and 3 OpenMP threads. */
#include <dlfcn.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "train/train.h"
#include "core/philox.h"
#include "testutil.h"

#define RTOL 1e-5
#define ATOL 1e-6

#define KDECL(n) anvil_status anvil_cpu_##n(const anvil_exec *ex, const anvil_step *s);
KDECL(copy) KDECL(fill) KDECL(matmul) KDECL(linear) KDECL(add) KDECL(sub) KDECL(mul)
KDECL(div) KDECL(scale) KDECL(reduce) KDECL(sum_to) KDECL(broadcast_to) KDECL(act)
KDECL(act_bwd) KDECL(softmax) KDECL(softmax_bwd) KDECL(log_softmax) KDECL(log_softmax_bwd)
KDECL(dropout) KDECL(dropout_bwd) KDECL(cross_entropy) KDECL(cross_entropy_bwd)
KDECL(pw_loss) KDECL(pw_loss_bwd) KDECL(sgd) KDECL(adam) KDECL(step_end)
KDECL(accum_loss) KDECL(accum_eval)
#undef KDECL

/* ------------------------------------------------------------------ helpers */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static double urand(void) /* [0, 1), splitmix64 */
{
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static float frand(double lo, double hi) { return (float)(lo + (hi - lo) * urand()); }

static float *rvec(int64_t n, double lo, double hi)
{
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = frand(lo, hi);
    return p;
}

static float *fzeros(int64_t n)
{
    float *p = calloc((size_t)(n ? n : 1), sizeof(float));
    assert_non_null(p);
    return p;
}

static double *dzeros(int64_t n)
{
    double *p = calloc((size_t)(n ? n : 1), sizeof(double));
    assert_non_null(p);
    return p;
}

static anvil_node mk(anvil_op op, anvil_dtype dt, int ndim, const int64_t *shape)
{
    anvil_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.dtype = dt;
    n.ndim = ndim;
    for (int d = 0; d < ndim; d++)
        n.shape[d] = shape[d];
    return n;
}

static int64_t numel(const anvil_node *n)
{
    int64_t k = 1;
    for (int d = 0; d < n->ndim; d++)
        k *= n->shape[d];
    return k;
}

static anvil_hyper g_hyper;
static anvil_exec g_ex;

static anvil_status run(anvil_kernel_fn fn, anvil_node *node, int nin, anvil_node *const *inn,
                        void *const *in, void *out)
{
    anvil_step s;
    memset(&s, 0, sizeof s);
    node->n_in = nin;
    s.node = node;
    for (int i = 0; i < nin; i++) {
        s.in_node[i] = inn[i];
        s.in[i] = in[i];
    }
    s.out = out;
    return fn(&g_ex, &s);
}

static void check_scaled(const char *what, const float *got, const double *ref,
                         const double *scale, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double sc = scale ? scale[i] : fabs(ref[i]);
        double err = fabs((double)got[i] - ref[i]);
        if (!(err <= RTOL * sc + ATOL) && !(isnan(got[i]) && isnan(ref[i])))
            fail_msg("%s: element %lld: got %.9g, want %.9g (err %.3g)", what, (long long)i,
                     (double)got[i], ref[i], err);
    }
}

static void check(const char *what, const float *got, const double *ref, int64_t n)
{
    check_scaled(what, got, ref, NULL, n);
}

/* Offset into `in` (right-aligned, size-1 dims broadcast) of output element o. */
static int64_t bc_offset(const anvil_node *in, const anvil_node *out, int64_t o)
{
    int64_t off = 0, stride = 1;
    for (int d = out->ndim - 1; d >= 0; d--) {
        int64_t i = o % out->shape[d];
        o /= out->shape[d];
        int ad = d - (out->ndim - in->ndim);
        if (ad < 0)
            continue;
        if (in->shape[ad] != 1)
            off += i * stride;
        stride *= in->shape[ad];
    }
    return off;
}

static int bc_shape(const anvil_node *a, const anvil_node *b, int64_t *shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        int64_t sa = da < 0 ? 1 : a->shape[da], sb = db < 0 ? 1 : b->shape[db];
        shape[d] = sa == 1 ? sb : sa;
    }
    return nd;
}

static void free_all(int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        free(va_arg(ap, void *));
    va_end(ap);
}

/* omp_set_num_threads from the OpenMP runtime the library already loaded (the test
 * itself is not built with -fopenmp). */
static void (*set_threads)(int);

static void find_omp(void)
{
    void *h = dlopen("libgomp.so.1", RTLD_LAZY);
    if (h)
        *(void **)&set_threads = dlsym(h, "omp_set_num_threads");
}

static int setup(void **state)
{
    (void)state;
    memset(&g_hyper, 0, sizeof g_hyper);
    g_hyper.group[0].lr = g_hyper.group[0].base_lr = 0.1f;
    g_hyper.n_groups = 1;
    g_hyper.clip_coef = 1.0f;
    g_hyper.seed_lo = 1234;
    g_hyper.seed_hi = 5678;
    memset(&g_ex, 0, sizeof g_ex);
    g_ex.hyper = &g_hyper;
    if (set_threads)
        set_threads(2);
    return 0;
}

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

/* ------------------------------------------------------------------ copy, fill */

static void test_copy_fill(void **state)
{
    (void)state;
    anvil_node x = mk(OP_INPUT, ANVIL_F32, 2, SH(3, 1100001 / 3)), y = x;
    y.op = OP_COPY;
    int64_t n = numel(&x);
    float *a = rvec(n, -1, 1), *o = fzeros(n);
    anvil_node *inn[1] = {&x};
    void *in[1] = {a};
    assert_int_equal(run(anvil_cpu_copy, &y, 1, inn, in, o), ANVIL_OK);
    assert_memory_equal(a, o, (size_t)n * sizeof(float));

    anvil_node li = mk(OP_INPUT, ANVIL_I32, 1, SH(5)), lo = li;
    lo.op = OP_COPY;
    int32_t la[5] = {1, -2, 3, 4, 99}, lb[5] = {0};
    anvil_node *inl[1] = {&li};
    void *inp[1] = {la};
    assert_int_equal(run(anvil_cpu_copy, &lo, 1, inl, inp, lb), ANVIL_OK);
    assert_memory_equal(la, lb, sizeof la);

    anvil_node f = mk(OP_FILL, ANVIL_F32, 1, SH(n));
    f.fa[0] = -2.5f;
    assert_int_equal(run(anvil_cpu_fill, &f, 0, NULL, NULL, o), ANVIL_OK);
    for (int64_t i = 0; i < n; i++)
        assert_true(o[i] == -2.5f);
    anvil_node fi = mk(OP_FILL, ANVIL_I32, 1, SH(5));
    fi.fa[0] = 7.0f;
    assert_int_equal(run(anvil_cpu_fill, &fi, 0, NULL, NULL, lb), ANVIL_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(lb[i], 7);
    anvil_node fs = mk(OP_FILL, ANVIL_F32, 0, NULL); /* a scalar */
    fs.fa[0] = 3.0f;
    assert_int_equal(run(anvil_cpu_fill, &fs, 0, NULL, NULL, o), ANVIL_OK);
    assert_true(o[0] == 3.0f);
    free_all(2, a, o);
}

/* ------------------------------------------------------------------ matmul, linear */

static void test_matmul(void **state)
{
    (void)state;
    const int64_t sizes[][3] = {{7, 13, 5}, {1, 1, 1}, {64, 33, 70}, {3, 200, 2}};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int64_t M = sizes[si][0], K = sizes[si][1], N = sizes[si][2];
        for (int ta = 0; ta < 2; ta++) {
            for (int tb = 0; tb < 2; tb++) {
                anvil_node an = mk(OP_INPUT, ANVIL_F32, 2, ta ? SH(K, M) : SH(M, K));
                anvil_node bn = mk(OP_INPUT, ANVIL_F32, 2, tb ? SH(N, K) : SH(K, N));
                anvil_node y = mk(OP_MATMUL, ANVIL_F32, 2, SH(M, N));
                y.ia[0] = ta;
                y.ia[1] = tb;
                float *a = rvec(M * K, -1, 1), *b = rvec(K * N, -1, 1), *o = fzeros(M * N);
                double *ref = dzeros(M * N), *sc = dzeros(M * N);
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++)
                        for (int64_t k = 0; k < K; k++) {
                            double av = ta ? a[k * M + i] : a[i * K + k];
                            double bv = tb ? b[j * K + k] : b[k * N + j];
                            ref[i * N + j] += av * bv;
                            sc[i * N + j] += fabs(av * bv);
                        }
                anvil_node *inn[2] = {&an, &bn};
                void *in[2] = {a, b};
                assert_int_equal(run(anvil_cpu_matmul, &y, 2, inn, in, o), ANVIL_OK);
                char what[64];
                snprintf(what, sizeof what, "matmul %lldx%lldx%lld ta=%d tb=%d", (long long)M,
                         (long long)K, (long long)N, ta, tb);
                check_scaled(what, o, ref, sc, M * N);
                free_all(5, a, b, o, ref, sc);
            }
        }
    }
}

/* Operands with more than two dims are matrices over their flattened leading dims
 * (graph/ops/matmul.c): a [2,3,4] x b [4,5] -> [2,3,5]; a^T with a [2,3,4], b [2,3,5]
 * -> [4,5]; a [2,3,4] x b^T with b [5,4] -> [2,3,5]. */
static void test_matmul_flattened(void **state)
{
    (void)state;
    for (int c = 0; c < 3; c++) {
        int ta = c == 1, tb = c == 2;
        int64_t M = ta ? 4 : 6, K = ta ? 6 : 4, N = 5;
        anvil_node an = mk(OP_INPUT, ANVIL_F32, 3, SH(2, 3, 4));
        anvil_node bn = ta ? mk(OP_INPUT, ANVIL_F32, 3, SH(2, 3, 5))
                           : mk(OP_INPUT, ANVIL_F32, 2, tb ? SH(5, 4) : SH(4, 5));
        anvil_node y = ta ? mk(OP_MATMUL, ANVIL_F32, 2, SH(4, 5))
                          : mk(OP_MATMUL, ANVIL_F32, 3, SH(2, 3, 5));
        y.ia[0] = ta;
        y.ia[1] = tb;
        float *a = rvec(M * K, -1, 1), *b = rvec(K * N, -1, 1), *o = fzeros(M * N);
        double *ref = dzeros(M * N), *sc = dzeros(M * N);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                for (int64_t k = 0; k < K; k++) {
                    double av = ta ? a[k * M + i] : a[i * K + k];
                    double bv = tb ? b[j * K + k] : b[k * N + j];
                    ref[i * N + j] += av * bv;
                    sc[i * N + j] += fabs(av * bv);
                }
        anvil_node *inn[2] = {&an, &bn};
        void *in[2] = {a, b};
        assert_int_equal(run(anvil_cpu_matmul, &y, 2, inn, in, o), ANVIL_OK);
        check_scaled("matmul flattened", o, ref, sc, M * N);
        free_all(5, a, b, o, ref, sc);
    }
}

static void test_linear(void **state)
{
    (void)state;
    for (int bias = 0; bias < 2; bias++) {
        for (int three_d = 0; three_d < 2; three_d++) {
            int64_t in_f = 11, out_f = 7, rows = three_d ? 6 : 5;
            anvil_node xn = three_d ? mk(OP_INPUT, ANVIL_F32, 3, SH(2, 3, in_f))
                                    : mk(OP_INPUT, ANVIL_F32, 2, SH(rows, in_f));
            anvil_node wn = mk(OP_PARAM, ANVIL_F32, 2, SH(out_f, in_f));
            anvil_node bn = mk(OP_PARAM, ANVIL_F32, 1, SH(out_f));
            anvil_node y = three_d ? mk(OP_LINEAR, ANVIL_F32, 3, SH(2, 3, out_f))
                                   : mk(OP_LINEAR, ANVIL_F32, 2, SH(rows, out_f));
            float *x = rvec(rows * in_f, -1, 1), *w = rvec(out_f * in_f, -1, 1);
            float *b = rvec(out_f, -1, 1), *o = rvec(rows * out_f, 5, 6); /* garbage */
            double *ref = dzeros(rows * out_f), *sc = dzeros(rows * out_f);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < out_f; j++) {
                    double acc = bias ? b[j] : 0.0, s = bias ? fabs(b[j]) : 0.0;
                    for (int64_t k = 0; k < in_f; k++) {
                        acc += (double)x[r * in_f + k] * w[j * in_f + k];
                        s += fabs((double)x[r * in_f + k] * w[j * in_f + k]);
                    }
                    ref[r * out_f + j] = acc;
                    sc[r * out_f + j] = s;
                }
            anvil_node *inn[3] = {&xn, &wn, &bn};
            void *in[3] = {x, w, b};
            assert_int_equal(run(anvil_cpu_linear, &y, bias ? 3 : 2, inn, in, o), ANVIL_OK);
            check_scaled(bias ? "linear+bias" : "linear", o, ref, sc, rows * out_f);
            free_all(6, x, w, b, o, ref, sc);
        }
    }
}

/* ------------------------------------------------------------------ elementwise */

typedef struct {
    int nda;
    int64_t a[4];
    int ndb;
    int64_t b[4];
} shape_pair;

static double ew_ref(anvil_op op, double x, double y)
{
    switch (op) {
    case OP_ADD: return x + y;
    case OP_SUB: return x - y;
    case OP_MUL: return x * y;
    default: return x / y;
    }
}

static void test_elementwise(void **state)
{
    (void)state;
    const shape_pair pairs[] = {
        {3, {3, 4, 5}, 3, {3, 4, 5}},   /* equal */
        {3, {3, 4, 5}, 0, {0}},         /* scalar b */
        {3, {3, 4, 5}, 1, {5}},         /* trailing row vector */
        {3, {3, 4, 5}, 2, {4, 1}},      /* a column */
        {2, {1, 5}, 2, {6, 1}},         /* both broadcast */
        {4, {2, 1, 3, 1}, 3, {4, 1, 5}},
        {0, {0}, 2, {7, 3}},            /* scalar a */
        {3, {4, 1, 6}, 3, {1, 5, 1}},
        {2, {1100, 1000}, 1, {1000}},   /* threaded row vector */
        {1, {1048583}, 1, {1048583}},   /* threaded equal */
        {3, {5, 1, 210001}, 1, {1}},    /* threaded scalar, long last dim */
        {2, {30000, 40}, 2, {30000, 1}}, /* threaded column */
        {1, {1}, 1, {1}},
    };
    const anvil_op ops[] = {OP_ADD, OP_SUB, OP_MUL, OP_DIV};
    const anvil_kernel_fn fns[] = {anvil_cpu_add, anvil_cpu_sub, anvil_cpu_mul, anvil_cpu_div};
    const char *names[] = {"add", "sub", "mul", "div"};
    for (size_t pi = 0; pi < sizeof pairs / sizeof pairs[0]; pi++) {
        anvil_node an = mk(OP_INPUT, ANVIL_F32, pairs[pi].nda, pairs[pi].a);
        anvil_node bn = mk(OP_INPUT, ANVIL_F32, pairs[pi].ndb, pairs[pi].b);
        int64_t os[ANVIL_MAX_DIMS];
        int ond = bc_shape(&an, &bn, os);
        int64_t na = numel(&an), nb = numel(&bn);
        float *a = rvec(na, -2, 2), *b = rvec(nb, 0.5, 2);
        for (int64_t i = 0; i < nb; i++) /* signed, but away from 0 for div */
            if (urand() < 0.5)
                b[i] = -b[i];
        for (int k = 0; k < 4; k++) {
            anvil_node y = mk(ops[k], ANVIL_F32, ond, os);
            int64_t n = numel(&y);
            float *o = fzeros(n);
            double *ref = dzeros(n);
            for (int64_t i = 0; i < n; i++)
                ref[i] = ew_ref(ops[k], a[bc_offset(&an, &y, i)], b[bc_offset(&bn, &y, i)]);
            anvil_node *inn[2] = {&an, &bn};
            void *in[2] = {a, b};
            assert_int_equal(run(fns[k], &y, 2, inn, in, o), ANVIL_OK);
            char what[64];
            snprintf(what, sizeof what, "%s pair %zu", names[k], pi);
            check(what, o, ref, n);
            /* In place over a when a has the output's shape. */
            if (na == n) {
                float *ac = malloc((size_t)na * sizeof(float));
                memcpy(ac, a, (size_t)na * sizeof(float));
                void *in2[2] = {ac, b};
                assert_int_equal(run(fns[k], &y, 2, inn, in2, ac), ANVIL_OK);
                check(what, ac, ref, n);
                free(ac);
            }
            free_all(2, o, ref);
        }
        free_all(2, a, b);
    }
}

static void test_scale(void **state)
{
    (void)state;
    int64_t n = 1048579;
    anvil_node x = mk(OP_INPUT, ANVIL_F32, 1, SH(n)), y = mk(OP_SCALE, ANVIL_F32, 1, SH(n));
    y.fa[0] = -0.37f;
    float *a = rvec(n, -3, 3), *o = fzeros(n);
    double *ref = dzeros(n);
    for (int64_t i = 0; i < n; i++)
        ref[i] = (double)a[i] * (double)-0.37f;
    anvil_node *inn[1] = {&x};
    void *in[1] = {a};
    assert_int_equal(run(anvil_cpu_scale, &y, 1, inn, in, o), ANVIL_OK);
    check("scale", o, ref, n);
    void *in2[1] = {a}; /* in place */
    assert_int_equal(run(anvil_cpu_scale, &y, 1, inn, in2, a), ANVIL_OK);
    check("scale in place", a, ref, n);
    free_all(3, a, o, ref);
}

/* ------------------------------------------------------------------ reductions */

static void reduce_case(int nd, const int64_t *shape, int dim, int keepdim, int mean)
{
    anvil_node x = mk(OP_INPUT, ANVIL_F32, nd, shape);
    int64_t n = numel(&x);
    float *a = rvec(n, -1, 1);
    anvil_node y;
    double *ref;
    int64_t on;
    if (dim == ANVIL_ALL_DIMS) {
        y = mk(OP_REDUCE, ANVIL_F32, 0, NULL);
        on = 1;
        ref = dzeros(1);
        for (int64_t i = 0; i < n; i++)
            ref[0] += a[i];
        if (mean)
            ref[0] /= (double)n;
    } else {
        int d = dim < 0 ? dim + nd : dim;
        int64_t os[ANVIL_MAX_DIMS] = {0};
        int ond = 0;
        for (int k = 0; k < nd; k++) {
            if (k != d)
                os[ond++] = shape[k];
            else if (keepdim)
                os[ond++] = 1;
        }
        y = mk(OP_REDUCE, ANVIL_F32, ond, os);
        int64_t outer = 1, inner = 1, R = shape[d];
        for (int k = 0; k < d; k++)
            outer *= shape[k];
        for (int k = d + 1; k < nd; k++)
            inner *= shape[k];
        on = outer * inner;
        ref = dzeros(on);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t i = 0; i < inner; i++)
                    ref[o * inner + i] += a[(o * R + r) * inner + i];
        if (mean)
            for (int64_t i = 0; i < on; i++)
                ref[i] /= (double)R;
    }
    y.ia[0] = dim;
    y.ia[1] = keepdim;
    y.ia[2] = mean;
    float *o = fzeros(on);
    anvil_node *inn[1] = {&x};
    void *in[1] = {a};
    assert_int_equal(run(anvil_cpu_reduce, &y, 1, inn, in, o), ANVIL_OK);
    char what[96];
    snprintf(what, sizeof what, "reduce ndim=%d n=%lld dim=%d keepdim=%d mean=%d", nd,
             (long long)n, dim, keepdim, mean);
    check(what, o, ref, on);
    free_all(3, a, o, ref);
}

static void test_reduce(void **state)
{
    (void)state;
    const int64_t s4[] = {3, 4, 5, 6};
    for (int dim = -1; dim < 4; dim++)
        for (int keep = 0; keep < 2; keep++)
            for (int mean = 0; mean < 2; mean++)
                reduce_case(4, s4, dim, keep, mean);
    for (int mean = 0; mean < 2; mean++) {
        reduce_case(4, s4, ANVIL_ALL_DIMS, 0, mean);
        reduce_case(2, SH(1100, 1000), 0, 0, mean);      /* threaded inner tiles */
        reduce_case(2, SH(1100, 1000), 1, 1, mean);      /* threaded rows */
        reduce_case(2, SH(200, 300), ANVIL_ALL_DIMS, 0, mean);
        reduce_case(2, SH(5, 220001), 1, 0, mean);       /* few long rows */
        reduce_case(2, SH(400001, 3), 0, 0, mean);       /* long columns */
        reduce_case(1, SH(1100003), ANVIL_ALL_DIMS, 0, mean);
        reduce_case(1, SH(1), 0, 0, mean);
        reduce_case(0, NULL, ANVIL_ALL_DIMS, 0, mean);
    }
}

static void sum_to_case(int ndi, const int64_t *is, int ndo, const int64_t *osh)
{
    anvil_node x = mk(OP_INPUT, ANVIL_F32, ndi, is), y = mk(OP_SUM_TO, ANVIL_F32, ndo, osh);
    int64_t n = numel(&x), on = numel(&y);
    float *a = rvec(n, -1, 1), *o = fzeros(on);
    double *ref = dzeros(on);
    /* Scatter-add each input element to the output element it broadcast from. */
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, off = 0, stride = 1;
        for (int d = ndi - 1; d >= 0; d--) {
            int64_t k = rem % is[d];
            rem /= is[d];
            int od = d - (ndi - ndo);
            if (od < 0)
                continue;
            if (osh[od] != 1)
                off += k * stride;
            stride *= osh[od];
        }
        ref[off] += a[i];
    }
    anvil_node *inn[1] = {&x};
    void *in[1] = {a};
    assert_int_equal(run(anvil_cpu_sum_to, &y, 1, inn, in, o), ANVIL_OK);
    char what[64];
    snprintf(what, sizeof what, "sum_to %lld -> %lld elements", (long long)n, (long long)on);
    check(what, o, ref, on);
    free_all(3, a, o, ref);
}

static void test_sum_to(void **state)
{
    (void)state;
    sum_to_case(2, SH(6, 5), 1, SH(5));
    sum_to_case(2, SH(6, 5), 2, SH(6, 1));
    sum_to_case(2, SH(6, 5), 2, SH(1, 5));
    sum_to_case(3, SH(4, 3, 5), 3, SH(1, 3, 1));
    sum_to_case(3, SH(4, 3, 5), 0, NULL);
    sum_to_case(3, SH(4, 3, 5), 2, SH(3, 5));
    sum_to_case(3, SH(4, 3, 5), 3, SH(4, 3, 5));
    sum_to_case(4, SH(2, 3, 4, 5), 3, SH(3, 1, 5));
    sum_to_case(4, SH(2, 3, 4, 5), 4, SH(1, 3, 1, 1));
    sum_to_case(3, SH(4, 1, 5), 2, SH(1, 5));
    sum_to_case(2, SH(1100, 1000), 1, SH(1000));
    sum_to_case(2, SH(1100, 1000), 2, SH(1100, 1));
    sum_to_case(3, SH(40, 300, 100), 2, SH(300, 1));
    sum_to_case(1, SH(1100003), 0, NULL);
}

static void broadcast_to_case(int ndi, const int64_t *is, int ndo, const int64_t *osh, int div)
{
    anvil_node x = mk(OP_INPUT, ANVIL_F32, ndi, is);
    anvil_node y = mk(OP_BROADCAST_TO, ANVIL_F32, ndo, osh);
    y.ia[0] = div;
    int64_t n = numel(&x), on = numel(&y);
    float *a = rvec(n, -1, 1), *o = fzeros(on);
    double *ref = dzeros(on);
    for (int64_t i = 0; i < on; i++)
        ref[i] = a[bc_offset(&x, &y, i)] / (div ? (double)(on / n) : 1.0);
    anvil_node *inn[1] = {&x};
    void *in[1] = {a};
    assert_int_equal(run(anvil_cpu_broadcast_to, &y, 1, inn, in, o), ANVIL_OK);
    check(div ? "broadcast_to (divide)" : "broadcast_to", o, ref, on);
    free_all(3, a, o, ref);
}

static void test_broadcast_to(void **state)
{
    (void)state;
    for (int div = 0; div < 2; div++) {
        broadcast_to_case(1, SH(5), 2, SH(3, 5), div);
        broadcast_to_case(2, SH(3, 1), 2, SH(3, 4), div);
        broadcast_to_case(0, NULL, 2, SH(2, 3), div);
        broadcast_to_case(3, SH(2, 1, 4), 3, SH(2, 3, 4), div);
        broadcast_to_case(0, NULL, 1, SH(1100001), div);
        broadcast_to_case(2, SH(1, 1000), 2, SH(1100, 1000), div);
        broadcast_to_case(2, SH(3, 4), 2, SH(3, 4), div);
    }
}

/* ------------------------------------------------------------------ activations */

static const double SQRT_2_PI = 0.79788456080286535588; /* sqrt(2/pi) */
static const double INV_SQRT_2PI = 0.39894228040143267794; /* 1/sqrt(2 pi) */

static double act_ref(int kind, double a, double x)
{
    switch (kind) {
    case ACT_RELU: return x > 0 ? x : 0;
    case ACT_LEAKY_RELU: return x > 0 ? x : a * x;
    case ACT_ELU: return x > 0 ? x : a * expm1(x);
    case ACT_SIGMOID: return 1 / (1 + exp(-x));
    case ACT_TANH: return tanh(x);
    case ACT_SILU: return x / (1 + exp(-x));
    case ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    default: return 0.5 * x * (1 + tanh(SQRT_2_PI * (x + 0.044715 * x * x * x)));
    }
}

/* f'(x) with PyTorch's choices at the kinks. */
static double act_grad_ref(int kind, double a, double x)
{
    double s = 1 / (1 + exp(-x));
    switch (kind) {
    case ACT_RELU: return x > 0 ? 1 : 0;
    case ACT_LEAKY_RELU: return x > 0 ? 1 : a;
    case ACT_ELU: return x > 0 ? 1 : a * exp(x);
    case ACT_SIGMOID: return s * (1 - s);
    case ACT_TANH: return 1 - tanh(x) * tanh(x);
    case ACT_SILU: return s * (1 + x * (1 - s));
    case ACT_GELU: return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) * INV_SQRT_2PI;
    default: {
        double u = SQRT_2_PI * (x + 0.044715 * x * x * x), t = tanh(u);
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_PI * (1 + 3 * 0.044715 * x * x);
    }
    }
}

static void test_activations(void **state)
{
    (void)state;
    const int kinds[] = {ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_SIGMOID,
                         ACT_TANH, ACT_SILU, ACT_GELU, ACT_GELU_TANH};
    const float params[] = {0, 0.2f, 0.7f, 0, 0, 0, 0, 0};
    const float kinks[] = {0.0f, -0.0f, 1e-7f, -1e-7f, 1.0f, -1.0f, 20.0f, -20.0f, 1e-30f};
    const int64_t sizes[] = {1000, 140001};
    for (size_t si = 0; si < 2; si++) {
        int64_t n = sizes[si];
        float *x = rvec(n, -5, 5), *dy = rvec(n, -2, 2);
        for (size_t k = 0; k < sizeof kinks / sizeof kinks[0]; k++)
            x[k] = kinks[k];
        anvil_node xn = mk(OP_INPUT, ANVIL_F32, 2, SH(n / 1, 1));
        for (size_t ki = 0; ki < 8; ki++) {
            int kind = kinds[ki];
            double a = params[ki];
            anvil_node y = mk(OP_ACT, ANVIL_F32, 2, SH(n, 1));
            y.ia[0] = kind;
            y.fa[0] = params[ki];
            float *o = fzeros(n);
            double *ref = dzeros(n), *gref = dzeros(n);
            for (int64_t i = 0; i < n; i++) {
                ref[i] = act_ref(kind, a, x[i]);
                gref[i] = dy[i] * act_grad_ref(kind, a, x[i]);
            }
            anvil_node *inn[1] = {&xn};
            void *in[1] = {x};
            assert_int_equal(run(anvil_cpu_act, &y, 1, inn, in, o), ANVIL_OK);
            char what[64];
            snprintf(what, sizeof what, "act kind %d n=%lld", kind, (long long)n);
            check(what, o, ref, n);

            anvil_node gb = y;
            gb.op = OP_ACT_BWD;
            anvil_node *inb[2] = {&xn, &xn};
            void *ib[2] = {dy, x};
            assert_int_equal(run(anvil_cpu_act_bwd, &gb, 2, inb, ib, o), ANVIL_OK);
            snprintf(what, sizeof what, "act_bwd kind %d n=%lld", kind, (long long)n);
            check(what, o, gref, n);

            /* The references' derivatives agree with central differences (away from
             * the kinks). */
            for (int64_t i = 0; i < 200; i++) {
                double v = x[i], h = 1e-6;
                if (fabs(v) < 1e-3)
                    continue;
                double fd = (act_ref(kind, a, v + h) - act_ref(kind, a, v - h)) / (2 * h);
                assert_true(fabs(fd - act_grad_ref(kind, a, v)) <= 1e-6 * (1 + fabs(fd)));
            }
            /* In place: the output over x (forward) or dy (backward). */
            float *xc = malloc((size_t)n * sizeof(float)), *gc = malloc((size_t)n * sizeof(float));
            memcpy(xc, x, (size_t)n * sizeof(float));
            memcpy(gc, dy, (size_t)n * sizeof(float));
            void *in2[1] = {xc};
            assert_int_equal(run(anvil_cpu_act, &y, 1, inn, in2, xc), ANVIL_OK);
            check("act in place", xc, ref, n);
            void *ib2[2] = {gc, x};
            assert_int_equal(run(anvil_cpu_act_bwd, &gb, 2, inb, ib2, gc), ANVIL_OK);
            check("act_bwd in place", gc, gref, n);
            free_all(5, o, ref, gref, xc, gc);
        }
        free_all(2, x, dy);
    }
    /* The kinks, spelled out: relu'(0) = 0, leaky_relu'(0) = slope, elu'(0) = alpha. */
    float z = 0.0f, one = 1.0f, out;
    anvil_node xn = mk(OP_INPUT, ANVIL_F32, 0, NULL), gb = mk(OP_ACT_BWD, ANVIL_F32, 0, NULL);
    anvil_node *inb[2] = {&xn, &xn};
    void *ib[2] = {&one, &z};
    gb.ia[0] = ACT_RELU;
    assert_int_equal(run(anvil_cpu_act_bwd, &gb, 2, inb, ib, &out), ANVIL_OK);
    assert_true(out == 0.0f);
    gb.ia[0] = ACT_LEAKY_RELU;
    gb.fa[0] = 0.01f;
    assert_int_equal(run(anvil_cpu_act_bwd, &gb, 2, inb, ib, &out), ANVIL_OK);
    assert_true(out == 0.01f);
    gb.ia[0] = ACT_ELU;
    gb.fa[0] = 0.5f;
    assert_int_equal(run(anvil_cpu_act_bwd, &gb, 2, inb, ib, &out), ANVIL_OK);
    assert_true(out == 0.5f);
}

/* ------------------------------------------------------------------ softmax */

static void softmax_case(int nd, const int64_t *shape, int dim, double range)
{
    anvil_node x = mk(OP_INPUT, ANVIL_F32, nd, shape);
    int64_t n = numel(&x);
    int d = nd == 0 ? 0 : (dim < 0 ? dim + nd : dim);
    int64_t outer = 1, D = nd ? shape[d] : 1, inner = 1;
    for (int k = 0; k < d; k++)
        outer *= shape[k];
    for (int k = d + 1; k < nd; k++)
        inner *= shape[k];
    float *a = rvec(n, -range, range), *dy = rvec(n, -1, 1), *y = fzeros(n), *ly = fzeros(n);
    float *dx = fzeros(n);
    double *sref = dzeros(n), *lref = dzeros(n), *gs = dzeros(n), *gl = dzeros(n);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double m = -INFINITY, sum = 0;
            for (int64_t k = 0; k < D; k++)
                m = fmax(m, a[(o * D + k) * inner + i]);
            for (int64_t k = 0; k < D; k++)
                sum += exp(a[(o * D + k) * inner + i] - m);
            for (int64_t k = 0; k < D; k++) {
                int64_t j = (o * D + k) * inner + i;
                sref[j] = exp(a[j] - m) / sum;
                lref[j] = a[j] - m - log(sum);
            }
        }
    anvil_node ys = mk(OP_SOFTMAX, ANVIL_F32, nd, shape), yl = ys;
    yl.op = OP_LOG_SOFTMAX;
    ys.ia[0] = yl.ia[0] = dim;
    anvil_node *inn[1] = {&x};
    void *in[1] = {a};
    char what[96];
    snprintf(what, sizeof what, "softmax n=%lld dim=%d", (long long)n, dim);
    assert_int_equal(run(anvil_cpu_softmax, &ys, 1, inn, in, y), ANVIL_OK);
    check(what, y, sref, n);
    assert_int_equal(run(anvil_cpu_log_softmax, &yl, 1, inn, in, ly), ANVIL_OK);
    check(what, ly, lref, n);
    /* Backward references from the kernel's own (float) outputs. */
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double s1 = 0, s2 = 0;
            for (int64_t k = 0; k < D; k++) {
                int64_t j = (o * D + k) * inner + i;
                s1 += (double)dy[j] * y[j];
                s2 += dy[j];
            }
            for (int64_t k = 0; k < D; k++) {
                int64_t j = (o * D + k) * inner + i;
                gs[j] = y[j] * (dy[j] - s1);
                gl[j] = dy[j] - exp((double)ly[j]) * s2;
            }
        }
    anvil_node bs = ys, bl = yl;
    bs.op = OP_SOFTMAX_BWD;
    bl.op = OP_LOG_SOFTMAX_BWD;
    anvil_node *inb[2] = {&x, &x};
    void *ibs[2] = {dy, y}, *ibl[2] = {dy, ly};
    assert_int_equal(run(anvil_cpu_softmax_bwd, &bs, 2, inb, ibs, dx), ANVIL_OK);
    check_scaled(what, dx, gs, NULL, n);
    assert_int_equal(run(anvil_cpu_log_softmax_bwd, &bl, 2, inb, ibl, dx), ANVIL_OK);
    check(what, dx, gl, n);
    /* In place over the input. */
    void *in2[1] = {a};
    assert_int_equal(run(anvil_cpu_softmax, &ys, 1, inn, in2, a), ANVIL_OK);
    check("softmax in place", a, sref, n);
    void *ib2[2] = {dy, ly};
    assert_int_equal(run(anvil_cpu_log_softmax_bwd, &bl, 2, inb, ib2, dy), ANVIL_OK);
    check("log_softmax_bwd in place", dy, gl, n);
    free_all(9, a, dy, y, ly, dx, sref, lref, gs, gl);
}

static void test_softmax(void **state)
{
    (void)state;
    const int64_t s3[] = {4, 7, 5};
    for (int dim = -1; dim < 3; dim++)
        softmax_case(3, s3, dim, 3);
    softmax_case(2, SH(1, 10), 1, 3);
    softmax_case(1, SH(9), 0, 3);
    softmax_case(2, SH(6, 11), -1, 200); /* large logits: needs the max subtraction */
    softmax_case(2, SH(1100, 129), 1, 5); /* threaded */
    softmax_case(2, SH(1100, 129), 0, 5);
    softmax_case(3, SH(20, 50, 150), 1, 5);
    softmax_case(0, NULL, 0, 3);
}

/* ------------------------------------------------------------------ dropout */

static void run_dropout(anvil_kernel_fn fn, float p, int stream, int64_t n, const float *x,
                        float *o)
{
    anvil_node xn = mk(OP_INPUT, ANVIL_F32, 1, SH(n)), y = mk(OP_DROPOUT, ANVIL_F32, 1, SH(n));
    y.fa[0] = p;
    y.ia[0] = stream;
    anvil_node *inn[1] = {&xn};
    void *in[1] = {(void *)x};
    assert_int_equal(run(fn, &y, 1, inn, in, o), ANVIL_OK);
}

static void test_dropout(void **state)
{
    (void)state;
    const int64_t n = 140003;
    const float p = 0.3f;
    float *x = rvec(n, 0.5, 1.5), *o = fzeros(n), *o2 = fzeros(n), *g = fzeros(n);
    g_hyper.rng_counter = 7;
    run_dropout(anvil_cpu_dropout, p, 2, n, x, o);
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        bool k = anvil_dropout_keep((uint64_t)i, 2, 7, g_hyper.seed_lo, g_hyper.seed_hi, p);
        /* the kernel's mask is the shared keep test's, and kept values are x / (1-p) */
        if (k) {
            kept++;
            assert_true(o[i] == x[i] / (1.0f - p));
        } else {
            assert_true(o[i] == 0.0f);
        }
    }
    double frac = (double)kept / n; /* binomial sd ~0.0015 */
    if (fabs(frac - (1 - p)) > 0.01)
        fail_msg("dropout kept %.4f, want about %.4f", frac, 1.0 - p);

    /* Deterministic, and the backward regenerates the same mask. */
    run_dropout(anvil_cpu_dropout, p, 2, n, x, o2);
    assert_memory_equal(o, o2, (size_t)n * sizeof(float));
    run_dropout(anvil_cpu_dropout_bwd, p, 2, n, x, g);
    assert_memory_equal(o, g, (size_t)n * sizeof(float));

    /* Another step counter, stream or seed: another mask. */
    int64_t differ;
    g_hyper.rng_counter = 8;
    run_dropout(anvil_cpu_dropout, p, 2, n, x, o2);
    differ = 0;
    for (int64_t i = 0; i < n; i++)
        differ += (o[i] == 0.0f) != (o2[i] == 0.0f);
    assert_true(differ > n / 5); /* independent masks differ in 2p(1-p) = 42% */
    g_hyper.rng_counter = 7;
    run_dropout(anvil_cpu_dropout, p, 3, n, x, o2);
    differ = 0;
    for (int64_t i = 0; i < n; i++)
        differ += (o[i] == 0.0f) != (o2[i] == 0.0f);
    assert_true(differ > n / 5);
    g_hyper.seed_hi ^= 1;
    run_dropout(anvil_cpu_dropout, p, 2, n, x, o2);
    g_hyper.seed_hi ^= 1;
    differ = 0;
    for (int64_t i = 0; i < n; i++)
        differ += (o[i] == 0.0f) != (o2[i] == 0.0f);
    assert_true(differ > n / 5);

    /* In place, a short tail (n not a multiple of 4), and the p = 0 / p = 1 ends. */
    memcpy(o2, x, (size_t)n * sizeof(float));
    run_dropout(anvil_cpu_dropout, p, 2, n, o2, o2);
    assert_memory_equal(o, o2, (size_t)n * sizeof(float));
    run_dropout(anvil_cpu_dropout, p, 2, 7, x, o2);
    assert_memory_equal(o, o2, 7 * sizeof(float));
    run_dropout(anvil_cpu_dropout, 0.0f, 2, n, x, o2);
    assert_memory_equal(x, o2, (size_t)n * sizeof(float));
    run_dropout(anvil_cpu_dropout, 1.0f, 2, n, x, o2);
    for (int64_t i = 0; i < n; i++)
        assert_true(o2[i] == 0.0f);
    free_all(4, x, o, o2, g);
}

/* ------------------------------------------------------------------ cross-entropy */

/* The reference loss (mean over rows) in double; t' = smoothed target. */
static double ce_ref(const float *x, const void *t, int probs, int64_t N, int64_t C, double eps,
                     const double *xd)
{
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        double m = -INFINITY, sum = 0;
        for (int64_t c = 0; c < C; c++)
            m = fmax(m, xd ? xd[n * C + c] : x[n * C + c]);
        for (int64_t c = 0; c < C; c++)
            sum += exp((xd ? xd[n * C + c] : x[n * C + c]) - m);
        double lse = m + log(sum);
        for (int64_t c = 0; c < C; c++) {
            double xc = xd ? xd[n * C + c] : x[n * C + c], tc;
            if (probs)
                tc = ((const float *)t)[n * C + c] * (1 - eps) + eps / C;
            else
                tc = (c == ((const int32_t *)t)[n] ? 1 - eps : 0) + eps / C;
            total += tc * (lse - xc);
        }
    }
    return total / N;
}

static void ce_case(int64_t N, int64_t C, int probs, int normalized, float eps)
{
    anvil_node xn = mk(OP_INPUT, ANVIL_F32, 2, SH(N, C));
    anvil_node tn = probs ? mk(OP_INPUT, ANVIL_F32, 2, SH(N, C)) : mk(OP_INPUT, ANVIL_I32, 1, SH(N));
    anvil_node dn = mk(OP_INPUT, ANVIL_F32, 0, NULL);
    float *x = rvec(N * C, -4, 4), *tf = NULL, *dx = fzeros(N * C), loss = 0, dloss = 0.7f;
    int32_t *ti = NULL;
    void *t;
    if (probs) {
        tf = rvec(N * C, 0, 1);
        if (normalized)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t c = 0; c < C; c++)
                    s += tf[n * C + c];
                for (int64_t c = 0; c < C; c++)
                    tf[n * C + c] = (float)(tf[n * C + c] / s);
            }
        t = tf;
    } else {
        ti = malloc((size_t)N * sizeof(int32_t));
        for (int64_t n = 0; n < N; n++)
            ti[n] = (int32_t)(urand() * C);
        t = ti;
    }
    anvil_node y = mk(OP_CROSS_ENTROPY, ANVIL_F32, 0, NULL);
    y.fa[0] = eps;
    y.ia[0] = probs;
    anvil_node *inn[2] = {&xn, &tn};
    void *in[2] = {x, t};
    assert_int_equal(run(anvil_cpu_cross_entropy, &y, 2, inn, in, &loss), ANVIL_OK);
    double ref = ce_ref(x, t, probs, N, C, eps, NULL);
    char what[96];
    snprintf(what, sizeof what, "cross_entropy N=%lld C=%lld probs=%d eps=%g", (long long)N,
             (long long)C, probs, (double)eps);
    check(what, &loss, &ref, 1);

    /* Gradient: dloss/N * (softmax * sum(t') - t'). */
    double *g = dzeros(N * C);
    for (int64_t n = 0; n < N; n++) {
        double m = -INFINITY, sum = 0, ts = 0;
        for (int64_t c = 0; c < C; c++)
            m = fmax(m, x[n * C + c]);
        for (int64_t c = 0; c < C; c++)
            sum += exp(x[n * C + c] - m);
        double tp[4096];
        for (int64_t c = 0; c < C; c++) {
            tp[c] = probs ? tf[n * C + c] * (1.0 - eps) + (double)eps / C
                          : (c == ti[n] ? 1.0 - eps : 0) + (double)eps / C;
            ts += tp[c];
        }
        for (int64_t c = 0; c < C; c++)
            g[n * C + c] = dloss / (double)N * (exp(x[n * C + c] - m) / sum * ts - tp[c]);
    }
    /* ...which is the derivative of the reference loss (central differences). */
    double *xd = dzeros(N * C);
    for (int64_t i = 0; i < N * C; i++)
        xd[i] = x[i];
    for (int64_t i = 0; i < N * C; i += (N * C) / 7 + 1) {
        double h = 1e-5, save = xd[i];
        xd[i] = save + h;
        double lp = ce_ref(x, t, probs, N, C, eps, xd);
        xd[i] = save - h;
        double lm = ce_ref(x, t, probs, N, C, eps, xd);
        xd[i] = save;
        double fd = dloss * (lp - lm) / (2 * h);
        assert_true(fabs(fd - g[i]) <= 1e-6 + 1e-4 * fabs(g[i]));
    }
    anvil_node yb = y;
    yb.op = OP_CROSS_ENTROPY_BWD;
    yb.ndim = 2;
    yb.shape[0] = N;
    yb.shape[1] = C;
    anvil_node *inb[3] = {&dn, &xn, &tn};
    void *ib[3] = {&dloss, x, t};
    assert_int_equal(run(anvil_cpu_cross_entropy_bwd, &yb, 3, inb, ib, dx), ANVIL_OK);
    check(what, dx, g, N * C);
    free_all(5, x, tf, ti, dx, g);
    free(xd);
}

static void test_cross_entropy(void **state)
{
    (void)state;
    const float eps[] = {0.0f, 0.1f, 0.25f};
    for (int e = 0; e < 3; e++) {
        ce_case(13, 7, 0, 0, eps[e]);
        ce_case(13, 7, 1, 1, eps[e]);
        ce_case(13, 7, 1, 0, eps[e]); /* unnormalized probabilities */
        ce_case(1, 1, 0, 0, eps[e]);
        ce_case(14000, 10, 0, 0, eps[e]); /* threaded */
        ce_case(1400, 100, 1, 1, eps[e]);
    }
    /* A label outside [0, C) is an error naming it, forward and backward. */
    int64_t N = 5, C = 7;
    anvil_node xn = mk(OP_INPUT, ANVIL_F32, 2, SH(N, C)), tn = mk(OP_INPUT, ANVIL_I32, 1, SH(N));
    anvil_node dn = mk(OP_INPUT, ANVIL_F32, 0, NULL);
    float *x = rvec(N * C, -1, 1), loss, dloss = 1, *dx = fzeros(N * C);
    int32_t lab[5] = {0, 1, 2, 7, 3};
    anvil_node y = mk(OP_CROSS_ENTROPY, ANVIL_F32, 0, NULL);
    anvil_node *inn[2] = {&xn, &tn};
    void *in[2] = {x, lab};
    assert_int_equal(run(anvil_cpu_cross_entropy, &y, 2, inn, in, &loss), ANVIL_ERR_INVALID_ARG);
    assert_non_null(strstr(anvil_last_error(), "label 7 outside [0, 7) at row 3"));
    lab[3] = -1;
    anvil_node yb = mk(OP_CROSS_ENTROPY_BWD, ANVIL_F32, 2, SH(N, C));
    anvil_node *inb[3] = {&dn, &xn, &tn};
    void *ib[3] = {&dloss, x, lab};
    assert_int_equal(run(anvil_cpu_cross_entropy_bwd, &yb, 3, inb, ib, dx), ANVIL_ERR_INVALID_ARG);
    assert_non_null(strstr(anvil_last_error(), "label -1"));
    free_all(2, x, dx);
}

/* ------------------------------------------------------------------ pointwise losses */

static double sgn(double d) { return (d > 0) - (d < 0); }

static double pw_ref(int kind, double a, double x, double t)
{
    double d = x - t, ad = fabs(d);
    switch (kind) {
    case PW_MSE: return d * d;
    case PW_L1: return ad;
    case PW_BCE: return -(t * fmax(log(x), -100) + (1 - t) * fmax(log(1 - x), -100));
    case PW_BCE_LOGITS: return fmax(x, 0) - x * t + log1p(exp(-fabs(x)));
    case PW_HUBER: return ad <= a ? 0.5 * d * d : a * (ad - 0.5 * a);
    default: return a == 0 ? ad : (ad < a ? 0.5 * d * d / a : ad - 0.5 * a);
    }
}

static double pw_grad_ref(int kind, double a, double x, double t)
{
    double d = x - t, ad = fabs(d);
    switch (kind) {
    case PW_MSE: return 2 * d;
    case PW_L1: return sgn(d);
    case PW_BCE: return d / fmax(x * (1 - x), 1e-12);
    case PW_BCE_LOGITS: return 1 / (1 + exp(-x)) - t;
    case PW_HUBER: return ad <= a ? d : a * sgn(d);
    default: return ad < a ? d / a : sgn(d);
    }
}

static void pw_case(int kind, float a, int64_t n)
{
    bool bce = kind == PW_BCE;
    float *x = rvec(n, bce ? 0.001 : -3, bce ? 0.999 : 3), *t = rvec(n, bce ? 0 : -3, bce ? 1 : 3);
    /* kink points: d = 0, |d| = a exactly (0.25 - (0.25 -/+ a) is exact for these a) */
    t[0] = x[0];
    if (!bce && n > 3) {
        x[1] = 0.25f;
        t[1] = 0.25f - a;
        x[2] = 0.25f;
        t[2] = 0.25f + a;
    }
    if (bce && n > 3) { /* the log clamp at x = 0 and x = 1 */
        x[1] = 0.0f;
        x[2] = 1.0f;
        t[1] = 0.3f;
        t[2] = 0.6f;
    }
    anvil_node xn = mk(OP_INPUT, ANVIL_F32, 2, SH(n, 1)), dn = mk(OP_INPUT, ANVIL_F32, 0, NULL);
    anvil_node y = mk(OP_PW_LOSS, ANVIL_F32, 0, NULL);
    y.ia[0] = kind;
    y.fa[0] = a;
    float loss = 0, dloss = 1.3f, *dx = fzeros(n);
    double ref = 0, *g = dzeros(n);
    for (int64_t i = 0; i < n; i++) {
        ref += pw_ref(kind, a, x[i], t[i]);
        g[i] = dloss / (double)n * pw_grad_ref(kind, a, x[i], t[i]);
        if (i > 2 && fabs((double)x[i] - t[i] - a) > 1e-3 && fabs((double)x[i] - t[i] + a) > 1e-3 &&
            fabs((double)x[i] - t[i]) > 1e-3 && i < 100) {
            double h = 1e-6; /* the reference derivative is the reference loss's */
            double fd = (pw_ref(kind, a, x[i] + h, t[i]) - pw_ref(kind, a, x[i] - h, t[i])) / (2 * h);
            assert_true(fabs(fd - pw_grad_ref(kind, a, x[i], t[i])) <= 1e-5 * (1 + fabs(fd)));
        }
    }
    ref /= (double)n;
    anvil_node *inn[2] = {&xn, &xn};
    void *in[2] = {x, t};
    assert_int_equal(run(anvil_cpu_pw_loss, &y, 2, inn, in, &loss), ANVIL_OK);
    char what[64];
    snprintf(what, sizeof what, "pw_loss kind %d a=%g n=%lld", kind, (double)a, (long long)n);
    check(what, &loss, &ref, 1);
    anvil_node yb = mk(OP_PW_LOSS_BWD, ANVIL_F32, 2, SH(n, 1));
    yb.ia[0] = kind;
    yb.fa[0] = a;
    anvil_node *inb[3] = {&dn, &xn, &xn};
    void *ib[3] = {&dloss, x, t};
    assert_int_equal(run(anvil_cpu_pw_loss_bwd, &yb, 3, inb, ib, dx), ANVIL_OK);
    check(what, dx, g, n);
    free_all(4, x, t, dx, g);
}

static void test_pw_losses(void **state)
{
    (void)state;
    const int64_t sizes[] = {1, 1001, 140003};
    for (int s = 0; s < 3; s++) {
        int64_t n = sizes[s];
        pw_case(PW_MSE, 0, n);
        pw_case(PW_L1, 0, n);
        pw_case(PW_BCE, 0, n);
        pw_case(PW_BCE_LOGITS, 0, n);
        pw_case(PW_HUBER, 1.0f, n);
        pw_case(PW_HUBER, 0.5f, n);
        pw_case(PW_SMOOTH_L1, 1.0f, n);
        pw_case(PW_SMOOTH_L1, 0.5f, n);
        pw_case(PW_SMOOTH_L1, 0.0f, n); /* beta 0 is L1 */
    }
}

/* ------------------------------------------------------------------ optimizers */

static void step_end(void)
{
    anvil_node e = mk(OP_STEP_END, ANVIL_F32, 0, NULL);
    assert_int_equal(run(anvil_cpu_step_end, &e, 0, NULL, NULL, NULL), ANVIL_OK);
}

static void sgd_case(int64_t n, float mom, float damp, int nesterov, float wd)
{
    float *p = rvec(n, -1, 1), *gr = fzeros(n), *buf = fzeros(n);
    double *pr = dzeros(n), *br = dzeros(n);
    for (int64_t i = 0; i < n; i++)
        pr[i] = p[i];
    g_hyper.step = 0;
    g_hyper.rng_counter = 0;
    g_hyper.group[0].lr = g_hyper.group[0].base_lr = 0.05f;
    g_ex.params = p;
    g_ex.grads = gr;
    g_ex.state = buf;
    g_ex.n_params = n;
    anvil_node u = mk(OP_SGD, ANVIL_F32, 0, NULL);
    u.ia[4] = (int)((n + 63) / 64); /* the whole arena is group 0 */
    u.fa[0] = mom;
    u.fa[1] = damp;
    u.fa[2] = wd;
    u.ia[0] = nesterov;
    for (int step = 0; step < 3; step++) {
        for (int64_t i = 0; i < n; i++)
            gr[i] = frand(-1, 1);
        for (int64_t i = 0; i < n; i++) { /* torch.optim.SGD */
            double g = gr[i] + (double)wd * pr[i];
            if (mom != 0) {
                br[i] = step == 0 ? g : (double)mom * br[i] + (1 - (double)damp) * g;
                g = nesterov ? g + (double)mom * br[i] : br[i];
            }
            pr[i] -= (double)g_hyper.group[0].lr * g;
        }
        assert_int_equal(run(anvil_cpu_sgd, &u, 0, NULL, NULL, NULL), ANVIL_OK);
        step_end();
        char what[96];
        snprintf(what, sizeof what, "sgd step %d mom=%g damp=%g nesterov=%d wd=%g", step,
                 (double)mom, (double)damp, nesterov, (double)wd);
        check(what, p, pr, n);
        if (mom != 0)
            check(what, buf, br, n);
    }
    assert_int_equal(g_hyper.step, 3);
    assert_int_equal(g_hyper.rng_counter, 3);
    free_all(5, p, gr, buf, pr, br);
}

static void test_sgd(void **state)
{
    (void)state;
    const float moms[] = {0.0f, 0.9f}, damps[] = {0.0f, 0.3f}, wds[] = {0.0f, 0.05f};
    for (int m = 0; m < 2; m++)
        for (int d = 0; d < 2; d++)
            for (int nv = 0; nv < 2; nv++)
                for (int w = 0; w < 2; w++)
                    sgd_case(37, moms[m], damps[d], nv, wds[w]);
    sgd_case(1100001, 0.9f, 0.1f, 1, 0.01f); /* threaded */
}

static void adam_case(int64_t n, float b1, float b2, float eps, float wd, int decoupled)
{
    float *p = rvec(n, -1, 1), *gr = fzeros(n), *st = fzeros(2 * n);
    double *pr = dzeros(n), *m = dzeros(n), *v = dzeros(n);
    for (int64_t i = 0; i < n; i++)
        pr[i] = p[i];
    g_hyper.step = 0;
    g_hyper.group[0].lr = g_hyper.group[0].base_lr = 0.01f;
    g_ex.params = p;
    g_ex.grads = gr;
    g_ex.state = st;
    g_ex.n_params = n;
    anvil_node u = mk(OP_ADAM, ANVIL_F32, 0, NULL);
    u.ia[4] = (int)((n + 63) / 64);
    u.fa[0] = b1;
    u.fa[1] = b2;
    u.fa[2] = eps;
    u.fa[3] = wd;
    u.ia[0] = decoupled;
    double lr = g_hyper.group[0].lr;
    for (int step = 0; step < 3; step++) {
        for (int64_t i = 0; i < n; i++)
            gr[i] = frand(-1, 1);
        int t = step + 1;
        double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        for (int64_t i = 0; i < n; i++) { /* torch.optim.Adam / AdamW */
            double g = gr[i];
            if (wd != 0 && !decoupled)
                g += (double)wd * pr[i];
            if (wd != 0 && decoupled)
                pr[i] *= 1 - lr * wd;
            m[i] = b1 * m[i] + (1 - (double)b1) * g;
            v[i] = b2 * v[i] + (1 - (double)b2) * g * g;
            pr[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
        }
        assert_int_equal(run(anvil_cpu_adam, &u, 0, NULL, NULL, NULL), ANVIL_OK);
        step_end();
        char what[96];
        snprintf(what, sizeof what, "adam step %d b1=%g wd=%g decoupled=%d", step, (double)b1,
                 (double)wd, decoupled);
        check(what, p, pr, n);
        check(what, st, m, n);
        check(what, st + n, v, n);
    }
    free_all(6, p, gr, st, pr, m, v);
}

static void test_adam(void **state)
{
    (void)state;
    for (int dec = 0; dec < 2; dec++) {
        adam_case(37, 0.9f, 0.999f, 1e-8f, 0.0f, dec);
        adam_case(37, 0.9f, 0.999f, 1e-8f, 0.1f, dec);
        adam_case(37, 0.3f, 0.99f, 1e-3f, 0.05f, dec); /* lerp's other branch */
    }
    adam_case(1100001, 0.9f, 0.999f, 1e-8f, 0.01f, 1); /* threaded */
}

/* ------------------------------------------------------------------ metrics */

static void test_metrics(void **state)
{
    (void)state;
    anvil_node ln = mk(OP_INPUT, ANVIL_F32, 0, NULL), a = mk(OP_ACCUM_LOSS, ANVIL_F32, 0, NULL);
    float losses[3] = {2.5f, 1.25f, 0.5f};
    for (int i = 0; i < 3; i++) {
        anvil_node *inn[1] = {&ln};
        void *in[1] = {&losses[i]};
        assert_int_equal(run(anvil_cpu_accum_loss, &a, 1, inn, in, NULL), ANVIL_OK);
    }
    assert_true(g_hyper.loss_last == 0.5f);
    assert_true(g_hyper.loss_sum == 4.25);
    assert_true(g_hyper.loss_count == 3.0);

    /* rows: argmax 2; tie 1/3 -> 1; all equal -> 0; the first NaN wins (torch.argmax); argmax 0 */
    float out[5][4] = {{0, 1, 5, 2}, {0, 3, 1, 3}, {1, 1, 1, 1}, {0, NAN, 9, NAN}, {9, 1, 2, 3}};
    int32_t lab[5] = {2, 1, 0, 1, 1};
    float loss = 0.75f;
    anvil_node on = mk(OP_INPUT, ANVIL_F32, 2, SH(5, 4)), lb = mk(OP_INPUT, ANVIL_I32, 1, SH(5));
    anvil_node e = mk(OP_ACCUM_EVAL, ANVIL_F32, 0, NULL);
    anvil_node *inn[3] = {&ln, &on, &lb};
    void *in[3] = {&loss, out, lab};
    assert_int_equal(run(anvil_cpu_accum_eval, &e, 3, inn, in, NULL), ANVIL_OK);
    assert_true(g_hyper.eval_loss_sum == 0.75 * 5);
    assert_true(g_hyper.eval_count == 5.0);
    assert_true(g_hyper.eval_correct == 4.0); /* rows 0-3 */
    assert_int_equal(run(anvil_cpu_accum_eval, &e, 2, inn, in, NULL), ANVIL_OK);
    assert_true(g_hyper.eval_count == 10.0);
    assert_true(g_hyper.eval_correct == 4.0);
    assert_true(g_hyper.eval_loss_sum == 7.5);

    /* Threaded argmax over many rows: one correct row in every three. */
    int64_t N = 300000, C = 4;
    float *big = rvec(N * C, -1, 1);
    int32_t *bl = malloc((size_t)N * sizeof(int32_t));
    int64_t want = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++)
            if (big[n * C + c] > big[n * C + best])
                best = c;
        bl[n] = (int32_t)(n % 3 == 0 ? best : (best + 1) % C);
        want += n % 3 == 0;
    }
    anvil_node bn = mk(OP_INPUT, ANVIL_F32, 2, SH(N, C)), bln = mk(OP_INPUT, ANVIL_I32, 1, SH(N));
    anvil_node *inb[3] = {&ln, &bn, &bln};
    void *ib[3] = {&loss, big, bl};
    g_hyper.eval_correct = 0;
    assert_int_equal(run(anvil_cpu_accum_eval, &e, 3, inb, ib, NULL), ANVIL_OK);
    assert_true(g_hyper.eval_correct == (double)want);
    free_all(2, big, bl);

    g_hyper.step = 41;
    g_hyper.rng_counter = 9;
    step_end();
    assert_int_equal(g_hyper.step, 42);
    assert_int_equal(g_hyper.rng_counter, 10);
}

/* ------------------------------------------------------------------ determinism */

/* Runs fn under 1, 2 and 3 threads and checks the outputs agree bit for bit. */
static void same_bits(const char *what, anvil_kernel_fn fn, anvil_node *y, int nin,
                      anvil_node *const *inn, void *const *in, int64_t on)
{
    float *ref = fzeros(on), *o = fzeros(on);
    if (set_threads)
        set_threads(1);
    assert_int_equal(run(fn, y, nin, inn, in, ref), ANVIL_OK);
    for (int th = 2; th <= 3; th++) {
        if (set_threads)
            set_threads(th);
        memset(o, 0xff, (size_t)on * sizeof(float));
        assert_int_equal(run(fn, y, nin, inn, in, o), ANVIL_OK);
        if (memcmp(o, ref, (size_t)on * sizeof(float)) != 0)
            fail_msg("%s: %d threads differ from 1", what, th);
    }
    if (set_threads)
        set_threads(2);
    free_all(2, ref, o);
}

static void test_determinism(void **state)
{
    (void)state;
    if (!set_threads)
        print_message("omp_set_num_threads not found: checking repeatability only\n");
    int64_t n = 1100003;
    float *a = rvec(n, -1, 1), *b = rvec(n, -1, 1);
    anvil_node x = mk(OP_INPUT, ANVIL_F32, 1, SH(n));
    anvil_node *inn[2] = {&x, &x};
    void *in[2] = {a, b};

    anvil_node r = mk(OP_REDUCE, ANVIL_F32, 0, NULL);
    r.ia[0] = ANVIL_ALL_DIMS;
    same_bits("reduce all", anvil_cpu_reduce, &r, 1, inn, in, 1);

    anvil_node x2 = mk(OP_INPUT, ANVIL_F32, 2, SH(1100, 1000));
    anvil_node *inn2[1] = {&x2};
    anvil_node st = mk(OP_SUM_TO, ANVIL_F32, 1, SH(1000));
    same_bits("sum_to rows", anvil_cpu_sum_to, &st, 1, inn2, in, 1000);
    anvil_node r1 = mk(OP_REDUCE, ANVIL_F32, 1, SH(1100));
    r1.ia[0] = 1;
    same_bits("reduce dim 1", anvil_cpu_reduce, &r1, 1, inn2, in, 1100);
    anvil_node x3 = mk(OP_INPUT, ANVIL_F32, 2, SH(2, 550001));
    anvil_node *inn3[1] = {&x3};
    anvil_node r2 = mk(OP_REDUCE, ANVIL_F32, 1, SH(2));
    r2.ia[0] = 1;
    same_bits("reduce long rows", anvil_cpu_reduce, &r2, 1, inn3, in, 2);

    anvil_node pl = mk(OP_PW_LOSS, ANVIL_F32, 0, NULL);
    pl.ia[0] = PW_MSE;
    same_bits("mse", anvil_cpu_pw_loss, &pl, 2, inn, in, 1);

    int64_t N = 100000, C = 10;
    int32_t *lab = malloc((size_t)N * sizeof(int32_t));
    for (int64_t i = 0; i < N; i++)
        lab[i] = (int32_t)(i % C);
    anvil_node xl = mk(OP_INPUT, ANVIL_F32, 2, SH(N, C)), ln = mk(OP_INPUT, ANVIL_I32, 1, SH(N));
    anvil_node ce = mk(OP_CROSS_ENTROPY, ANVIL_F32, 0, NULL);
    ce.fa[0] = 0.1f;
    anvil_node *inc[2] = {&xl, &ln};
    void *ic[2] = {a, lab};
    same_bits("cross_entropy", anvil_cpu_cross_entropy, &ce, 2, inc, ic, 1);
    anvil_node sm = mk(OP_SOFTMAX, ANVIL_F32, 2, SH(N, C));
    sm.ia[0] = 1;
    same_bits("softmax", anvil_cpu_softmax, &sm, 1, inc, ic, N * C);
    free_all(3, a, b, lab);
}

/* The planner gives each convolution step the workspace the CPU kernel asks for, inside
 * the transient arena and overlapping none of the step's inputs and output; no other
 * step gets one. */
size_t anvil_cpu_conv_workspace(const anvil_graph *g, const anvil_node *n); /* backend/cpu/cpu.h */

static bool overlaps(const void *a, size_t na, const void *b, size_t nb)
{
    const char *x = a, *y = b;
    return x < y + nb && y < x + na;
}

static void test_planned_workspace(void **state)
{
    (void)state;
    anvil_graph *g = NULL;
    assert_int_equal(anvil_graph_create(&g), ANVIL_OK);
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 4, (const int64_t[]){ANVIL_BATCH, 3, 10, 10});
    anvil_value w = anvil_input(g, "w", ANVIL_F32, 4, (const int64_t[]){8, 3, 3, 3});
    anvil_conv_params cp = anvil_conv_default_params();
    cp.pad_h = cp.pad_w = 1;
    anvil_value y = anvil_conv2d(g, x, w, ANVIL_NO_VALUE, &cp);
    anvil_value loss = anvil_sum(g, anvil_mul(g, y, y), ANVIL_ALL_DIMS, false);
    anvil_value fetch[3] = {y, anvil_gradient(g, loss, x), anvil_gradient(g, loss, w)};
    assert_int_equal(anvil_graph_status(g), ANVIL_OK);
    anvil_backend *be;
    assert_int_equal(anvil_cpu_backend_open(&be), ANVIL_OK);
    anvil_persist_map pm = {NULL, NULL, 0, 0, NULL, NULL};
    anvil_program *p;
    assert_int_equal(anvil_program_compile(be, g, 16, false, 0, NULL, 3, fetch, &pm, &p), ANVIL_OK);
    int convs = 0;
    for (int i = 0; i < p->n_steps; i++) {
        const anvil_step *s = &p->steps[i];
        anvil_op op = s->node->op;
        if (op != OP_CONV2D && op != OP_CONV2D_BWD_DATA && op != OP_CONV2D_BWD_FILTER) {
            assert_null(s->ws);
            continue;
        }
        convs++;
        size_t want = anvil_cpu_conv_workspace(p->g, s->node);
        assert_true(want > 0);
        assert_non_null(s->ws);
        assert_true(s->ws_bytes >= want);
        assert_true((char *)s->ws >= p->transient && (char *)s->ws + s->ws_bytes <= p->transient + p->transient_bytes);
        assert_false(overlaps(s->ws, s->ws_bytes, s->out, anvil_node_bytes(s->node)));
        for (int k = 0; k < s->node->n_in; k++)
            assert_false(overlaps(s->ws, s->ws_bytes, s->in[k], anvil_node_bytes(s->in_node[k])));
    }
    assert_int_equal(convs, 3);
    anvil_program_free(be, p);
    anvil_backend_close(be);
    anvil_graph_free(g);
}

/* Is node u a transitive input of node v? */
static bool node_reaches(const anvil_graph *g, int u, int v, signed char *memo)
{
    if (memo[v] >= 0)
        return memo[v];
    bool r = false;
    for (int i = 0; i < g->nodes[v].n_in && !r; i++)
        r = g->nodes[v].in[i] == u || node_reaches(g, u, g->nodes[v].in[i], memo);
    memo[v] = r;
    return r;
}

/* Steps that write memory an earlier step touched without depending on it: the pairs a
 * concurrent backend must order only because of the plan. */
static int false_orders(const anvil_program *p)
{
    const anvil_graph *g = p->g;
    signed char *memo = malloc((size_t)g->n);
    int bad = 0;
    for (int b = 0; b < p->n_steps; b++) {
        const anvil_step *v = &p->steps[b];
        const void *wo[2] = {v->out, v->ws};
        size_t wn[2] = {anvil_node_bytes(v->node), v->ws ? v->ws_bytes : 0};
        for (int a = 0; a < b; a++) {
            const anvil_step *u = &p->steps[a];
            bool touch = false;
            for (int k = 0; k < 2 && !touch; k++) {
                if (!wo[k] || !wn[k])
                    continue;
                touch = overlaps(wo[k], wn[k], u->out, anvil_node_bytes(u->node)) ||
                        (u->ws && overlaps(wo[k], wn[k], u->ws, u->ws_bytes));
                for (int i = 0; i < u->node->n_in && !touch; i++)
                    touch = overlaps(wo[k], wn[k], u->in[i], anvil_node_bytes(u->in_node[i]));
            }
            if (!touch)
                continue;
            memset(memo, -1, (size_t)g->n);
            if (!node_reaches(g, (int)(u->node - g->nodes), (int)(v->node - g->nodes), memo))
                bad++;
        }
    }
    free(memo);
    return bad;
}

/* plan.c's concurrent plans (the CUDA backend's): in a training step of two convolutions,
 * pooling and ReLUs, whose weight gradients may run beside the data gradients, no step
 * writes memory that an earlier step it does not depend on touched; the plain plan (the
 * CPU's) has such pairs, and is the smaller. */
static void test_concurrent_plan(void **state)
{
    (void)state;
    anvil_graph *g = NULL;
    assert_int_equal(anvil_graph_create(&g), ANVIL_OK);
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 4, (const int64_t[]){ANVIL_BATCH, 1, 12, 12});
    anvil_value w1 = anvil_input(g, "w1", ANVIL_F32, 4, (const int64_t[]){4, 1, 3, 3});
    anvil_value w2 = anvil_input(g, "w2", ANVIL_F32, 4, (const int64_t[]){6, 4, 3, 3});
    anvil_conv_params cp = anvil_conv_default_params();
    cp.pad_h = cp.pad_w = 1;
    anvil_value h = anvil_maxpool2d(g, anvil_relu(g, anvil_conv2d(g, x, w1, ANVIL_NO_VALUE, &cp)), 2, 2, 0, 0, 0, 0);
    anvil_value y = anvil_maxpool2d(g, anvil_relu(g, anvil_conv2d(g, h, w2, ANVIL_NO_VALUE, &cp)), 2, 2, 0, 0, 0, 0);
    anvil_value loss = anvil_sum(g, anvil_mul(g, y, y), ANVIL_ALL_DIMS, false);
    anvil_value fetch[2] = {anvil_gradient(g, loss, w1), anvil_gradient(g, loss, w2)};
    assert_int_equal(anvil_graph_status(g), ANVIL_OK);
    anvil_backend *be;
    assert_int_equal(anvil_cpu_backend_open(&be), ANVIL_OK);
    anvil_persist_map pm = {NULL, NULL, 0, 0, NULL, NULL};
    anvil_program *p;
    size_t bytes[2];
    for (int conc = 0; conc < 2; conc++) {
        be->concurrent = conc;
        assert_int_equal(anvil_program_compile(be, g, 8, true, 0, NULL, 2, fetch, &pm, &p), ANVIL_OK);
        int bad = false_orders(p);
        bytes[conc] = p->transient_bytes;
        print_message("  %s plan: %zu bytes, %d steps ordered by memory alone\n", conc ? "concurrent" : "plain",
                      p->transient_bytes, bad);
        if (conc)
            assert_int_equal(bad, 0);
        else
            assert_true(bad > 0);
        anvil_program_free(be, p);
    }
    assert_true(bytes[1] >= bytes[0]);
    be->concurrent = false;
    anvil_backend_close(be);
    anvil_graph_free(g);
}

/* The concurrent plan's bound: stages whose big values (x * w_i, [batch, 2^18]) depend on
 * nothing of the stage before cannot reuse its memory there, so the concurrent arena
 * would hold all of them; beyond max(1.5x, +64 MiB) of the plain arena the plain plan is
 * kept, byte for byte the same as without the flag. */
static void test_concurrent_plan_bound(void **state)
{
    (void)state;
    enum { STAGES = 8 };
    anvil_graph *g = NULL;
    assert_int_equal(anvil_graph_create(&g), ANVIL_OK);
    const int64_t N = (int64_t)1 << 18;
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 2, (const int64_t[]){ANVIL_BATCH, N});
    anvil_value s = ANVIL_NO_VALUE;
    for (int i = 0; i < STAGES; i++) {
        char name[8];
        snprintf(name, sizeof name, "w%d", i);
        anvil_value w = anvil_input(g, name, ANVIL_F32, 2, (const int64_t[]){1, N});
        anvil_value t = anvil_relu(g, anvil_mul(g, x, w)); /* independent of stage i-1 */
        if (s != ANVIL_NO_VALUE)
            t = anvil_mul(g, t, s);
        s = anvil_sum(g, t, ANVIL_ALL_DIMS, false);
    }
    assert_int_equal(anvil_graph_status(g), ANVIL_OK);
    anvil_backend *be;
    assert_int_equal(anvil_cpu_backend_open(&be), ANVIL_OK);
    anvil_persist_map pm = {NULL, NULL, 0, 0, NULL, NULL};
    size_t bytes[2];
    intptr_t offs[2][STAGES * 4];
    int n_offs[2] = {0, 0};
    for (int conc = 0; conc < 2; conc++) {
        anvil_program *p;
        be->concurrent = conc;
        assert_int_equal(anvil_program_compile(be, g, 16, false, 0, NULL, 1, &s, &pm, &p), ANVIL_OK);
        bytes[conc] = p->transient_bytes;
        for (int i = 0; i < p->n_steps && n_offs[conc] < STAGES * 4; i++)
            offs[conc][n_offs[conc]++] = (char *)p->steps[i].out - p->transient;
        anvil_program_free(be, p);
    }
    print_message("  plain %zu bytes, with the concurrent flag %zu bytes\n", bytes[0], bytes[1]);
    assert_true(bytes[0] >= (size_t)16 * N * sizeof(float) * 2); /* two big values live at once */
    assert_int_equal(bytes[1], bytes[0]);
    assert_int_equal(n_offs[1], n_offs[0]);
    for (int i = 0; i < n_offs[0]; i++)
        assert_true(offs[1][i] == offs[0][i]);
    be->concurrent = false;
    anvil_backend_close(be);
    anvil_graph_free(g);
}

/* linear + gelu(approximate="tanh") (graph/fuse.c): fused into the product's epilogue in
 * a program where nothing else reads the product, and not when the product is fetched or
 * when GELU's backward reads it (training); the fused program's result is
 * gelu_tanh(x w^T + b) computed here in double. */
static int count_ops(const anvil_program *p, anvil_op op, int ia1)
{
    int k = 0;
    for (int v = 0; v < p->g->n; v++)
        if (p->g->nodes[v].op == op && (ia1 < 0 || p->g->nodes[v].ia[1] == ia1))
            k++;
    return k;
}

static void test_linear_gelu_epilogue(void **state)
{
    (void)state;
    enum { B = 4, I = 5, O = 7 };
    anvil_graph *g = NULL;
    assert_int_equal(anvil_graph_create(&g), ANVIL_OK);
    anvil_value x = anvil_input(g, "x", ANVIL_F32, 2, (const int64_t[]){ANVIL_BATCH, I});
    anvil_value w = anvil_input(g, "w", ANVIL_F32, 2, (const int64_t[]){O, I});
    anvil_value b = anvil_input(g, "b", ANVIL_F32, 1, (const int64_t[]){O});
    anvil_value h = anvil_linear(g, x, w, b);
    anvil_value y = anvil_gelu(g, h, true);
    anvil_value dw = anvil_gradient(g, anvil_sum(g, y, ANVIL_ALL_DIMS, false), w);
    assert_int_equal(anvil_graph_status(g), ANVIL_OK);
    anvil_backend *be;
    assert_int_equal(anvil_cpu_backend_open(&be), ANVIL_OK);
    anvil_persist_map pm = {NULL, NULL, 0, 0, NULL, NULL};
    anvil_program *p;
    assert_int_equal(anvil_program_compile(be, g, B, false, 0, NULL, 1, &y, &pm, &p), ANVIL_OK);
    assert_int_equal(count_ops(p, OP_LINEAR, 2), 1);
    assert_int_equal(count_ops(p, OP_ACT, -1), 0);
    anvil_program_free(be, p);
    anvil_value both[2] = {y, h};
    assert_int_equal(anvil_program_compile(be, g, B, false, 0, NULL, 2, both, &pm, &p), ANVIL_OK);
    assert_int_equal(count_ops(p, OP_LINEAR, 0), 1);
    assert_int_equal(count_ops(p, OP_ACT, -1), 1);
    anvil_program_free(be, p);
    assert_int_equal(anvil_program_compile(be, g, B, true, 0, NULL, 1, &dw, &pm, &p), ANVIL_OK);
    assert_int_equal(count_ops(p, OP_LINEAR, 2), 0);
    anvil_program_free(be, p);
    anvil_backend_close(be);

    anvil_tensor *xt = tu_rand_tensor(2, (const int64_t[]){B, I}, -2, 2, 11);
    anvil_tensor *wt = tu_rand_tensor(2, (const int64_t[]){O, I}, -1, 1, 12);
    anvil_tensor *bt = tu_rand_tensor(1, (const int64_t[]){O}, -1, 1, 13);
    anvil_value feed[3] = {x, w, b};
    anvil_tensor *feeds[3] = {xt, wt, bt}, *out = NULL;
    anvil_run_options o = anvil_run_default_options();
    o.device = ANVIL_DEVICE_CPU;
    CHECK_OK(anvil_graph_run(g, &o, 3, feed, feeds, 1, &y, &out));
    const float *xd = anvil_tensor_cdata(xt), *wd = anvil_tensor_cdata(wt), *bd = anvil_tensor_cdata(bt);
    float want[B * O];
    for (int r = 0; r < B; r++)
        for (int j = 0; j < O; j++) {
            double v = bd[j];
            for (int k = 0; k < I; k++)
                v += (double)xd[r * I + k] * wd[j * I + k];
            want[r * O + j] = (float)(0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));
        }
    int64_t worst;
    assert_true(tu_rel_err(anvil_tensor_cdata(out), want, B * O, 1e-6, 1e-5, &worst) <= 1.0);
    anvil_tensor_release(out);
    anvil_tensor_release(xt);
    anvil_tensor_release(wt);
    anvil_tensor_release(bt);
    anvil_graph_free(g);
}

/* anvil_blas_coretype_advice: NULL once the user chose a core type; otherwise advice
 * only when OpenBLAS really runs its generic Prescott kernels, and then a family the CPU
 * has the instructions for. */
char *openblas_get_corename(void);
static void test_blas_coretype_advice(void **state)
{
    (void)state;
    const char *saved = getenv("OPENBLAS_CORETYPE");
    char keep[64] = "";
    if (saved)
        snprintf(keep, sizeof keep, "%s", saved);
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    assert_null(anvil_blas_coretype_advice());
    unsetenv("OPENBLAS_CORETYPE");
    const char *ct = anvil_blas_coretype_advice();
    if (ct) {
        assert_string_equal(openblas_get_corename(), "Prescott");
        __builtin_cpu_init();
        if (strcmp(ct, "SkylakeX") == 0)
            assert_true(__builtin_cpu_supports("avx512f"));
        else
            assert_true(strcmp(ct, "Haswell") == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
    }
    print_message("OpenBLAS core: %s, advice: %s\n", openblas_get_corename(), ct ? ct : "none");
    if (saved)
        setenv("OPENBLAS_CORETYPE", keep, 1);
}

int main(void)
{
    find_omp();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_copy_fill, setup),
        cmocka_unit_test_setup(test_matmul, setup),
        cmocka_unit_test_setup(test_matmul_flattened, setup),
        cmocka_unit_test_setup(test_linear, setup),
        cmocka_unit_test_setup(test_elementwise, setup),
        cmocka_unit_test_setup(test_scale, setup),
        cmocka_unit_test_setup(test_reduce, setup),
        cmocka_unit_test_setup(test_sum_to, setup),
        cmocka_unit_test_setup(test_broadcast_to, setup),
        cmocka_unit_test_setup(test_activations, setup),
        cmocka_unit_test_setup(test_softmax, setup),
        cmocka_unit_test_setup(test_dropout, setup),
        cmocka_unit_test_setup(test_cross_entropy, setup),
        cmocka_unit_test_setup(test_pw_losses, setup),
        cmocka_unit_test_setup(test_sgd, setup),
        cmocka_unit_test_setup(test_adam, setup),
        cmocka_unit_test_setup(test_metrics, setup),
        cmocka_unit_test_setup(test_determinism, setup),
        cmocka_unit_test(test_blas_coretype_advice),
        cmocka_unit_test(test_planned_workspace),
        cmocka_unit_test(test_concurrent_plan),
        cmocka_unit_test(test_concurrent_plan_bound),
        cmocka_unit_test(test_linear_gelu_epilogue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
