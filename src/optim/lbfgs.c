/* lbfgs.c — torch.optim.LBFGS.step (torch/optim/lbfgs.py, with _strong_wolfe and
 * _cubic_interpolate) over flat device arrays; see lbfgs.h.
 *
 * What is mirrored, and how
 *  - Vectors: every tensor op of torch's step is a backend vec op with torch's rounding:
 *    neg/mul are float32 products, add_(x, alpha=c) an FMA with c rounded to float32,
 *    sub a single rounding.  Dots and abs-sums accumulate in double (torch: float32 BLAS),
 *    the one place where results differ from torch's, by rounding.
 *  - Scalars: torch mixes Python floats (double) and 0-dim float32 tensors, and the type
 *    decides the rounding.  `num` carries a value and which of the two it is, and the
 *    arithmetic follows torch's rules (checked bit for bit against torch by the mirror in
 *    tests/golden/make_lbfgs.py): tensor (op) number rounds the number to float32 first and
 *    computes in float32; number / tensor is tensor.reciprocal() * number; a comparison
 *    with a tensor is made in float32; Python's min/max keep the first of equals.  So
 *    gtd, ys, ro, H_diag, al, be_i are tensors; losses are numbers; t is a number (lr) or,
 *    on the very first iteration and after most cubic interpolations, a tensor.
 *  - Device scalars: ys, ro[], H_diag, al[], be_i live on the device; the two-loop
 *    recursion never reads them back.  Read back (download) are only what torch's
 *    control flow branches on: ys (ys > 1e-10), gtd and max|d| (with the first
 *    iteration's sum|g|), max|g| (opt_cond), and each line-search point's gtd.
 *  - History: a ring of history_size + 1 (y, s) pairs; the spare pair receives the next
 *    candidate, which either joins (dropping the oldest when full) or is forgotten, as
 *    torch's `if ys > 1e-10` does, without copying a vector.
 *  - The line search keeps torch's quirks: it uses tolerance_change 1e-9, not the option;
 *    max_ls = max_eval - evaluations so far (0 possible: one evaluation, then the
 *    bracket [0, t]); the point it returns is the last one's params restored to x_init
 *    plus t*d, as torch's _set_param + _add_grad.
 * Where torch would raise (a NaN loss that ends the search on a one-point bracket: an
 * IndexError) this returns an error instead. */
#include "optim/lbfgs.h"

#include <float.h>
#include <math.h>

#if FLT_EVAL_METHOD != 0
#error "lbfgs.c mirrors float32 rounding: it needs FLT_EVAL_METHOD == 0 (SSE, not x87)"
#endif

#define LS_SLOTS 3 /* gradients the line search holds at once: g, g_prev, g_new / 2 + new */
#define LS_C1 1e-4
#define LS_C2 0.9
#define LS_TOL_CHANGE 1e-9 /* _strong_wolfe's default: the step does not pass its own */

/* Device scalars (floats after the vectors). */
enum { SC_YS, SC_YY, SC_HDIAG, SC_BE, SC_GTD, SC_DMAX, SC_GSUM, SC_GMAX, SC_GTDN, SC_FIXED };

/* ---------------------------------------------------------------- torch's scalars */

typedef struct {
    double v;
    bool t; /* a 0-dim float32 tensor (v holds a float32 value); else a Python float */
} num;

static inline num P(double v) { return (num){v, false}; }
static inline num T(float v) { return (num){v, true}; }
static inline float f32(num a) { return (float)a.v; }

static num add(num a, num b) { return a.t || b.t ? T(f32(a) + f32(b)) : P(a.v + b.v); }
static num sub(num a, num b) { return a.t || b.t ? T(f32(a) - f32(b)) : P(a.v - b.v); }
static num mul(num a, num b) { return a.t || b.t ? T(f32(a) * f32(b)) : P(a.v * b.v); }
static num ndiv(num a, num b)
{
    if (b.t && !a.t) /* number / tensor: tensor.reciprocal() * number */
        return T((1.0f / f32(b)) * f32(a));
    return a.t || b.t ? T(f32(a) / f32(b)) : P(a.v / b.v);
}
static num nabs(num a) { return (num){fabs(a.v), a.t}; }
static num nsqrt(num a) { return a.t ? T(sqrtf(f32(a))) : P(sqrt(a.v)); }
static bool lt(num a, num b) { return a.t || b.t ? f32(a) < f32(b) : a.v < b.v; }
static bool le(num a, num b) { return a.t || b.t ? f32(a) <= f32(b) : a.v <= b.v; }
static num pmin(num a, num b) { return lt(b, a) ? b : a; } /* Python's min(a, b) */
static num pmax(num a, num b) { return lt(a, b) ? b : a; } /* Python's max(a, b) */

/* _cubic_interpolate: the minimizer of the cubic through (x1, f1, g1), (x2, f2, g2),
 * clamped to bounds (NULL: [min(x1, x2), max(x1, x2)]). */
static num cubic(num x1, num f1, num g1, num x2, num f2, num g2, const num *bounds)
{
    num lo, hi;
    if (bounds) {
        lo = bounds[0];
        hi = bounds[1];
    } else if (le(x1, x2)) {
        lo = x1;
        hi = x2;
    } else {
        lo = x2;
        hi = x1;
    }
    num d1 = sub(add(g1, g2), ndiv(mul(P(3), sub(f1, f2)), sub(x1, x2)));
    num d2sq = sub(mul(d1, d1), mul(g1, g2));
    if (!le(P(0), d2sq))
        return ndiv(add(lo, hi), P(2.0));
    num d2 = nsqrt(d2sq), mp;
    if (le(x1, x2))
        mp = sub(x2, mul(sub(x2, x1), ndiv(sub(add(g2, d2), d1), add(sub(g2, g1), mul(P(2), d2)))));
    else
        mp = sub(x1, mul(sub(x1, x2), ndiv(sub(add(g1, d2), d1), add(sub(g1, g2), mul(P(2), d2)))));
    return pmin(pmax(mp, lo), hi);
}

/* ---------------------------------------------------------------- the optimizer */

struct anvil_lbfgs {
    anvil_backend *be;
    float *params, *grads;
    int64_t n, stride;  /* stride: floats between device vectors (aligned) */
    anvil_lbfgs_options o;
    int64_t max_eval;   /* resolved */
    void *mem;          /* the one device block */
    size_t mem_bytes;
    float *d, *prev_g, *x_init;
    float *slot[LS_SLOTS];
    float *hy, *hs;     /* H + 1 vectors each */
    float *sc;          /* SC_FIXED scalars, then ro[H + 1], al[H + 1] */
    int64_t H1;         /* history_size + 1 */
    int64_t head, count; /* logical entry i is ring slot (head + i) % H1 */
    int64_t n_iter, func_evals;
    num t;
    double prev_loss;
};

#define HY(s, k) ((s)->hy + (k) * (s)->stride)
#define HS(s, k) ((s)->hs + (k) * (s)->stride)
#define RO(s, k) ((s)->sc + SC_FIXED + (k))
#define AL(s, k) ((s)->sc + SC_FIXED + (s)->H1 + (k))
#define SC(s, i) ((s)->sc + (i))

anvil_lbfgs_options anvil_lbfgs_default_options(void)
{
    anvil_lbfgs_options o = {1.0f, 20, 0, 1e-7f, 1e-9f, 100, false};
    return o;
}

static anvil_status vop(anvil_lbfgs *s, anvil_vec_kind k, const float *x, float *y, float *out,
                        double alpha, const float *ca, const float *cb)
{
    anvil_vec_op op = {k, s->n, x, y, out, alpha, ca, cb};
    return s->be->vec(s->be, &op);
}

static anvil_status v_copy(anvil_lbfgs *s, float *dst, const float *src)
{
    return vop(s, ANVIL_VEC_COPY, src, dst, NULL, 1.0, NULL, NULL);
}

static anvil_status v_scale(anvil_lbfgs *s, float *dst, const float *src, double alpha, const float *ca)
{
    return vop(s, ANVIL_VEC_SCALE, src, dst, NULL, alpha, ca, NULL);
}

/* y.add_(x, alpha=c), c = alpha or alpha * (ca - cb) */
static anvil_status v_axpy(anvil_lbfgs *s, float *y, const float *x, double alpha, const float *ca,
                           const float *cb)
{
    return vop(s, ANVIL_VEC_AXPY, x, y, NULL, alpha, ca, cb);
}

/* out = x.dot(y), times *ca when given (a second float32 rounding, as `dot(...) * ro`) */
static anvil_status v_dot(anvil_lbfgs *s, const float *x, const float *y, float *out, const float *ca)
{
    return vop(s, ANVIL_VEC_DOT, x, (float *)y, out, 1.0, ca, NULL);
}

static anvil_status v_reduce(anvil_lbfgs *s, anvil_vec_kind k, const float *x, float *out)
{
    return vop(s, k, x, NULL, out, 1.0, NULL, NULL);
}

/* out = c / x[0] for one device float */
static anvil_status v_rdiv(anvil_lbfgs *s, float *out, const float *x, const float *ca)
{
    anvil_vec_op op = {ANVIL_VEC_RDIV, 1, x, NULL, out, 1.0, ca, NULL};
    return s->be->vec(s->be, &op);
}

/* Reads count device scalars from index first (downloads are ordered after the ops). */
static anvil_status read_sc(anvil_lbfgs *s, int first, int count, float *dst)
{
    return s->be->download(s->be, dst, SC(s, first), (size_t)count * sizeof(float));
}

static anvil_status call(anvil_lbfgs_closure f, void *ctx, float *loss)
{
    anvil_status st = f(ctx, loss);
    if (st != ANVIL_OK && !anvil_last_error()[0])
        anvil_fail(st, "lbfgs: the closure failed (%s)", anvil_status_name(st));
    return st;
}

/* ---------------------------------------------------------------- line search */

/* _directional_evaluate at x_init + t*d, then gtd_new = g_new.dot(d): the gradient goes
 * into a line-search slot other than busy0 and busy1 (the ones still referenced). */
static anvil_status dir_eval(anvil_lbfgs *s, anvil_lbfgs_closure f, void *ctx, num t, int busy0,
                             int busy1, num *f_new, int *g_new, num *gtd_new)
{
    ANVIL_TRY(v_axpy(s, s->params, s->d, t.v, NULL, NULL));
    float loss = 0.0f, gtd = 0.0f;
    ANVIL_TRY(call(f, ctx, &loss));
    int k = 0;
    while (k == busy0 || k == busy1)
        k++;
    ANVIL_TRY(v_copy(s, s->slot[k], s->grads));
    ANVIL_TRY(v_copy(s, s->params, s->x_init));
    ANVIL_TRY(v_dot(s, s->slot[k], s->d, SC(s, SC_GTDN), NULL));
    ANVIL_TRY(read_sc(s, SC_GTDN, 1, &gtd));
    *f_new = P(loss);
    *g_new = k;
    *gtd_new = T(gtd);
    return ANVIL_OK;
}

/* A bracket end: step, loss, gradient slot, directional derivative. */
typedef struct {
    num t, f, gtd;
    int g;
} lspt;

/* Armijo: f_new > f + c1 * t * gtd */
static bool armijo_fails(num f_new, num f, num t, num gtd)
{
    return lt(add(f, mul(mul(P(LS_C1), t), gtd)), f_new);
}

/* _strong_wolfe from (t, f = *loss, g = slot *flat, gtd), the direction s->d, d_norm =
 * max|d|.  Returns the chosen t, its loss and gradient slot, and the evaluations made. */
static anvil_status strong_wolfe(anvil_lbfgs *s, anvil_lbfgs_closure fn, void *ctx, num *t_io, num *loss_io,
                                 int *flat_io, num gtd, num d_norm, int64_t max_ls, int64_t *evals)
{
    num t = *t_io, f = *loss_io;
    int g = *flat_io;
    lspt nw, prev = {P(0), f, gtd, g}, br[2];
    int nb = 0;
    nw.t = t;
    ANVIL_TRY(dir_eval(s, fn, ctx, t, g, g, &nw.f, &nw.g, &nw.gtd));
    int64_t ls_evals = 1, ls_iter = 0;
    bool done = false;
    /* bracket an interval containing a point satisfying the Wolfe criteria */
    while (ls_iter < max_ls) {
        if (armijo_fails(nw.f, f, t, gtd) || (ls_iter > 1 && le(prev.f, nw.f))) {
            br[0] = prev, br[1] = nw, nb = 2;
            break;
        }
        if (le(nabs(nw.gtd), mul(P(-LS_C2), gtd))) {
            br[0] = nw, nb = 1, done = true;
            break;
        }
        if (le(P(0), nw.gtd)) {
            br[0] = prev, br[1] = nw, nb = 2;
            break;
        }
        num bounds[2] = {add(t, mul(P(0.01), sub(t, prev.t))), mul(t, P(10))};
        num tmp = t;
        t = cubic(prev.t, prev.f, prev.gtd, t, nw.f, nw.gtd, bounds);
        prev = nw;
        prev.t = tmp;
        nw.t = t;
        ANVIL_TRY(dir_eval(s, fn, ctx, t, g, prev.g, &nw.f, &nw.g, &nw.gtd));
        ls_evals++;
        ls_iter++;
    }
    if (ls_iter == max_ls) { /* reached max number of iterations: bracket [0, t] */
        br[0] = (lspt){P(0), f, gtd, g};
        br[1] = nw;
        nb = 2;
    }
    /* zoom: refine the bracket until a point satisfies the criteria */
    bool insuf = false;
    int low = le(br[0].f, br[nb - 1].f) ? 0 : 1, high = 1 - low;
    while (!done && ls_iter < max_ls) {
        if (lt(mul(nabs(sub(br[1].t, br[0].t)), d_norm), P(LS_TOL_CHANGE)))
            break;
        t = cubic(br[0].t, br[0].f, br[0].gtd, br[1].t, br[1].f, br[1].gtd, NULL);
        num bmax = pmax(br[0].t, br[1].t), bmin = pmin(br[0].t, br[1].t);
        num eps = mul(P(0.1), sub(bmax, bmin));
        if (lt(pmin(sub(bmax, t), sub(t, bmin)), eps)) {
            /* interpolation close to the boundary */
            if (insuf || le(bmax, t) || le(t, bmin)) {
                t = lt(nabs(sub(t, bmax)), nabs(sub(t, bmin))) ? sub(bmax, eps) : add(bmin, eps);
                insuf = false;
            } else {
                insuf = true;
            }
        } else {
            insuf = false;
        }
        nw.t = t;
        ANVIL_TRY(dir_eval(s, fn, ctx, t, br[0].g, br[1].g, &nw.f, &nw.g, &nw.gtd));
        ls_evals++;
        ls_iter++;
        if (armijo_fails(nw.f, f, t, gtd) || le(br[low].f, nw.f)) {
            br[high] = nw;
            low = le(br[0].f, br[1].f) ? 0 : 1;
            high = 1 - low;
        } else {
            if (le(nabs(nw.gtd), mul(P(-LS_C2), gtd)))
                done = true;
            else if (le(P(0), mul(nw.gtd, sub(br[high].t, br[low].t))))
                br[high] = br[low]; /* old high becomes new low */
            br[low] = nw;
        }
    }
    if (low >= nb)
        return anvil_fail(ANVIL_ERR_INVALID_ARG,
                          "lbfgs: the line search ended on a NaN loss (torch.optim.LBFGS raises "
                          "IndexError here)");
    *t_io = br[low].t;
    *loss_io = br[low].f;
    *flat_io = br[low].g;
    *evals = ls_evals;
    return ANVIL_OK;
}

/* ---------------------------------------------------------------- step */

/* d = -H g by the two-loop recursion over the ring, after offering (y, s) to it. */
static anvil_status direction(anvil_lbfgs *s, const float *fg)
{
    int64_t k = (s->head + s->count) % s->H1; /* the spare pair */
    float *y = HY(s, k), *sv = HS(s, k);
    ANVIL_TRY(v_copy(s, y, fg));
    ANVIL_TRY(v_axpy(s, y, s->prev_g, -1.0, NULL, NULL)); /* y = flat_grad - prev_flat_grad */
    ANVIL_TRY(v_scale(s, sv, s->d, s->t.v, NULL));        /* s = d * t */
    ANVIL_TRY(v_dot(s, y, sv, SC(s, SC_YS), NULL));
    float ys = 0.0f;
    ANVIL_TRY(read_sc(s, SC_YS, 1, &ys));
    if (lt(P(1e-10), T(ys))) {
        if (s->count == s->o.history_size)
            s->head = (s->head + 1) % s->H1; /* the oldest pair becomes the spare */
        else
            s->count++;
        ANVIL_TRY(v_rdiv(s, RO(s, k), SC(s, SC_YS), NULL));           /* ro = 1 / ys */
        ANVIL_TRY(v_dot(s, y, y, SC(s, SC_YY), NULL));
        ANVIL_TRY(v_rdiv(s, SC(s, SC_HDIAG), SC(s, SC_YY), SC(s, SC_YS))); /* ys / y.y */
    }
    ANVIL_TRY(v_scale(s, s->d, fg, -1.0, NULL)); /* q = -flat_grad, in d */
    for (int64_t i = s->count - 1; i >= 0; i--) {
        int64_t p = (s->head + i) % s->H1;
        ANVIL_TRY(v_dot(s, HS(s, p), s->d, AL(s, p), RO(s, p)));  /* al[i] = s_i.q * ro[i] */
        ANVIL_TRY(v_axpy(s, s->d, HY(s, p), -1.0, AL(s, p), NULL)); /* q += -al[i] y_i */
    }
    ANVIL_TRY(v_scale(s, s->d, s->d, 1.0, SC(s, SC_HDIAG))); /* r = q * H_diag */
    for (int64_t i = 0; i < s->count; i++) {
        int64_t p = (s->head + i) % s->H1;
        ANVIL_TRY(v_dot(s, HY(s, p), s->d, SC(s, SC_BE), RO(s, p)));          /* be_i */
        ANVIL_TRY(v_axpy(s, s->d, HS(s, p), 1.0, AL(s, p), SC(s, SC_BE))); /* r += (al - be) s */
    }
    return ANVIL_OK;
}

anvil_status anvil_lbfgs_step(anvil_lbfgs *s, anvil_lbfgs_closure f, void *ctx, float *loss_out)
{
    if (!s || !f)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs step: NULL %s", s ? "closure" : "optimizer");
    const anvil_lbfgs_options *o = &s->o;
    float orig = 0.0f, sc3[3], gmax = 0.0f;
    ANVIL_TRY(call(f, ctx, &orig));
    if (loss_out)
        *loss_out = orig;
    /* flat_grad: grads itself without a line search (nothing overwrites it before it is
     * replaced); with one, a slot (the search's evaluations overwrite grads) */
    int flat = -1;
    if (o->strong_wolfe) {
        flat = 0;
        ANVIL_TRY(v_copy(s, s->slot[0], s->grads));
    }
    const float *fg = flat < 0 ? s->grads : s->slot[flat];
    num loss = P(orig);
    int64_t current_evals = 1;
    s->func_evals++;
    ANVIL_TRY(v_reduce(s, ANVIL_VEC_ABS_MAX, fg, SC(s, SC_GMAX)));
    ANVIL_TRY(read_sc(s, SC_GMAX, 1, &gmax));
    if (le(T(gmax), P(o->tolerance_grad)))
        return ANVIL_OK; /* optimal already */
    num t = s->t;
    for (int n_iter = 1; n_iter <= o->max_iter; n_iter++) {
        s->n_iter++;
        if (s->n_iter == 1) {
            ANVIL_TRY(v_scale(s, s->d, fg, -1.0, NULL));
            s->head = s->count = 0;
            float one = 1.0f;
            ANVIL_TRY(s->be->upload(s->be, SC(s, SC_HDIAG), &one, sizeof one));
        } else {
            s->t = t;
            ANVIL_TRY(direction(s, fg));
        }
        ANVIL_TRY(v_copy(s, s->prev_g, fg));
        s->prev_loss = loss.v;
        ANVIL_TRY(v_dot(s, fg, s->d, SC(s, SC_GTD), NULL));
        ANVIL_TRY(v_reduce(s, ANVIL_VEC_ABS_MAX, s->d, SC(s, SC_DMAX)));
        if (s->n_iter == 1)
            ANVIL_TRY(v_reduce(s, ANVIL_VEC_ABS_SUM, fg, SC(s, SC_GSUM)));
        ANVIL_TRY(read_sc(s, SC_GTD, s->n_iter == 1 ? 3 : 2, sc3));
        /* the initial step: min(1, 1 / sum|g|) * lr the first time, else lr */
        if (s->n_iter == 1)
            t = mul(pmin(P(1.0), ndiv(P(1.0), T(sc3[2]))), P(o->lr));
        else
            t = P(o->lr);
        num gtd = T(sc3[0]);
        if (lt(P(-(double)o->tolerance_change), gtd))
            break; /* not a descent direction */
        int64_t ls_evals = 0;
        bool opt_cond = false;
        if (o->strong_wolfe) {
            ANVIL_TRY(v_copy(s, s->x_init, s->params));
            ANVIL_TRY(strong_wolfe(s, f, ctx, &t, &loss, &flat, gtd, T(sc3[1]), s->max_eval - current_evals,
                                   &ls_evals));
            fg = s->slot[flat];
            ANVIL_TRY(v_axpy(s, s->params, s->d, t.v, NULL, NULL));
            ANVIL_TRY(v_reduce(s, ANVIL_VEC_ABS_MAX, fg, SC(s, SC_GMAX)));
            ANVIL_TRY(read_sc(s, SC_GMAX, 1, &gmax));
            opt_cond = le(T(gmax), P(o->tolerance_grad));
        } else {
            ANVIL_TRY(v_axpy(s, s->params, s->d, t.v, NULL, NULL));
            if (n_iter != o->max_iter) {
                float l = 0.0f;
                ANVIL_TRY(call(f, ctx, &l));
                loss = P(l);
                ANVIL_TRY(v_reduce(s, ANVIL_VEC_ABS_MAX, fg, SC(s, SC_GMAX)));
                ANVIL_TRY(read_sc(s, SC_GMAX, 1, &gmax));
                opt_cond = le(T(gmax), P(o->tolerance_grad));
                ls_evals = 1;
            }
        }
        current_evals += ls_evals;
        s->func_evals += ls_evals;
        if (n_iter == o->max_iter || current_evals >= s->max_eval || opt_cond)
            break;
        /* lack of progress: max|d*t| is fl32(max|d| * |t|), rounding being monotonic */
        if (le(T(sc3[1] * fabsf(f32(t))), P(o->tolerance_change)))
            break;
        if (lt(nabs(sub(loss, P(s->prev_loss))), P(o->tolerance_change)))
            break;
    }
    s->t = t;
    return ANVIL_OK;
}

int64_t anvil_lbfgs_func_evals(const anvil_lbfgs *s) { return s ? s->func_evals : 0; }
int64_t anvil_lbfgs_n_iter(const anvil_lbfgs *s) { return s ? s->n_iter : 0; }

/* ---------------------------------------------------------------- create / free */

static anvil_status bad_option(const char *name, const char *why, double v)
{
    return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs: %s = %g: %s", name, v, why);
}

static anvil_status check_options(const anvil_lbfgs_options *o)
{
    if (!(o->lr >= 0.0f) || isinf(o->lr))
        return bad_option("lr", "must be a finite number >= 0", o->lr);
    if (o->max_iter < 1)
        return bad_option("max_iter", "must be >= 1", o->max_iter);
    if (o->max_eval < 0)
        return bad_option("max_eval", "must be >= 1, or 0 for torch's default max_iter * 5 / 4", o->max_eval);
    if (!(o->tolerance_grad >= 0.0f) || isinf(o->tolerance_grad))
        return bad_option("tolerance_grad", "must be a finite number >= 0", o->tolerance_grad);
    if (!(o->tolerance_change >= 0.0f) || isinf(o->tolerance_change))
        return bad_option("tolerance_change", "must be a finite number >= 0", o->tolerance_change);
    if (o->history_size < 1)
        return bad_option("history_size", "must be >= 1", o->history_size);
    return ANVIL_OK;
}

anvil_status anvil_lbfgs_create(anvil_lbfgs **out, anvil_backend *be, float *params, float *grads,
                                int64_t n, const anvil_lbfgs_options *opt)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs create: NULL out");
    *out = NULL;
    if (!be)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs create: NULL backend");
    if (!be->vec)
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "lbfgs: backend '%s' has no vector operations", be->name);
    if (!params || !grads)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs create: NULL %s", params ? "grads" : "params");
    if (n < 1)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs create: n = %lld parameters; need at least 1",
                          (long long)n);
    anvil_lbfgs_options o = opt ? *opt : anvil_lbfgs_default_options();
    ANVIL_TRY(check_options(&o));

    int64_t H1 = (int64_t)o.history_size + 1;
    int64_t nvec = 2 + 2 * H1 + (o.strong_wolfe ? 1 + LS_SLOTS : 0);
    int64_t nsc = SC_FIXED + 2 * H1;
    /* floats per vector, rounded up so that every vector starts ANVIL_ALIGN-aligned */
    int64_t per = (int64_t)(ANVIL_ALIGN / sizeof(float));
    if (n > INT64_MAX - per)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs create: n = %lld is too large", (long long)n);
    int64_t stride = (n + per - 1) / per * per;
    double want = ((double)nvec * (double)stride + (double)nsc) * sizeof(float);
    if (want > (double)(SIZE_MAX / 2) || (double)stride * (double)nvec > 9e18)
        return anvil_fail(ANVIL_ERR_OOM,
                          "lbfgs: the state needs %.4g bytes (%lld vectors of %lld floats for "
                          "history_size %d): more than can be addressed",
                          want, (long long)nvec, (long long)n, o.history_size);
    size_t bytes = (size_t)(nvec * stride + nsc) * sizeof(float);

    anvil_lbfgs *s = anvil_xcalloc(1, sizeof *s, "the L-BFGS optimizer");
    if (!s)
        return ANVIL_ERR_OOM;
    anvil_status st = be->alloc(be, bytes, &s->mem);
    if (st != ANVIL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", anvil_last_error());
        free(s);
        return anvil_fail(st,
                          "lbfgs: cannot allocate its state, %zu bytes of %s memory (2 x %lld history "
                          "vectors + %lld work vectors of %lld floats, and %lld scalars): %s",
                          bytes, be->name, (long long)H1, (long long)(nvec - 2 * H1), (long long)n,
                          (long long)nsc, why);
    }
    st = be->zero(be, s->mem, bytes); /* an exported fresh state is deterministic */
    if (st != ANVIL_OK) {
        be->free(be, s->mem);
        free(s);
        return st;
    }
    s->be = be;
    s->params = params;
    s->grads = grads;
    s->n = n;
    s->stride = stride;
    s->o = o;
    s->max_eval = o.max_eval ? o.max_eval : (int64_t)o.max_iter * 5 / 4;
    s->mem_bytes = bytes;
    s->H1 = H1;
    s->t = P(o.lr);
    float *v = s->mem;
    s->d = v, v += stride;
    s->prev_g = v, v += stride;
    if (o.strong_wolfe) {
        s->x_init = v, v += stride;
        for (int k = 0; k < LS_SLOTS; k++)
            s->slot[k] = v, v += stride;
    }
    s->hy = v, v += H1 * stride;
    s->hs = v, v += H1 * stride;
    s->sc = v;
    *out = s;
    return ANVIL_OK;
}

void anvil_lbfgs_free(anvil_lbfgs *s)
{
    if (!s)
        return;
    s->be->free(s->be, s->mem);
    free(s);
}

/* ---------------------------------------------------------------- export / import */

#define BLOB_MAGIC "ANVLBFGS"
#define BLOB_VERSION 1u
#define BLOB_HEADER 72 /* magic, version, flags, n, history_size, count, n_iter, func_evals, t, prev_loss */
enum { FLAG_T_TENSOR = 1u };

static size_t blob_size(int64_t n, int64_t count)
{
    return BLOB_HEADER + sizeof(float) * (size_t)(1 + count + 2 * n + 2 * count * n);
}

static void put(unsigned char **p, const void *v, size_t k)
{
    memcpy(*p, v, k);
    *p += k;
}

static void get(const unsigned char **p, void *v, size_t k)
{
    memcpy(v, *p, k);
    *p += k;
}

/* Layout: the header, then floats: H_diag, ro[count], d[n], prev_flat_grad[n],
 * y[count][n], s[count][n] — the history oldest first, whatever the ring's rotation. */
anvil_status anvil_lbfgs_export(const anvil_lbfgs *cs, void **blob, size_t *bytes)
{
    if (!cs || !blob || !bytes)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs export: NULL argument");
    *blob = NULL;
    *bytes = 0;
    anvil_lbfgs *s = (anvil_lbfgs *)cs; /* downloads take a non-const backend */
    size_t size = blob_size(s->n, s->count);
    unsigned char *b = anvil_xmalloc(size, "an L-BFGS state blob"), *p = b;
    if (!b)
        return ANVIL_ERR_OOM;
    uint32_t version = BLOB_VERSION, flags = s->t.t ? FLAG_T_TENSOR : 0;
    int64_t hist = s->o.history_size;
    put(&p, BLOB_MAGIC, 8);
    put(&p, &version, 4);
    put(&p, &flags, 4);
    put(&p, &s->n, 8);
    put(&p, &hist, 8);
    put(&p, &s->count, 8);
    put(&p, &s->n_iter, 8);
    put(&p, &s->func_evals, 8);
    put(&p, &s->t.v, 8);
    put(&p, &s->prev_loss, 8);
    size_t vb = (size_t)s->n * sizeof(float);
    anvil_status st = s->be->download(s->be, p, SC(s, SC_HDIAG), sizeof(float));
    p += sizeof(float);
    for (int64_t i = 0; i < s->count && st == ANVIL_OK; i++, p += sizeof(float))
        st = s->be->download(s->be, p, RO(s, (s->head + i) % s->H1), sizeof(float));
    if (st == ANVIL_OK)
        st = s->be->download(s->be, p, s->d, vb);
    p += vb;
    if (st == ANVIL_OK)
        st = s->be->download(s->be, p, s->prev_g, vb);
    p += vb;
    for (int64_t i = 0; i < s->count && st == ANVIL_OK; i++, p += vb)
        st = s->be->download(s->be, p, HY(s, (s->head + i) % s->H1), vb);
    for (int64_t i = 0; i < s->count && st == ANVIL_OK; i++, p += vb)
        st = s->be->download(s->be, p, HS(s, (s->head + i) % s->H1), vb);
    if (st != ANVIL_OK) {
        free(b);
        return st;
    }
    *blob = b;
    *bytes = size;
    return ANVIL_OK;
}

anvil_status anvil_lbfgs_import(anvil_lbfgs *s, const void *blob, size_t bytes)
{
    if (!s || !blob)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "lbfgs import: NULL argument");
    if (bytes < BLOB_HEADER || memcmp(blob, BLOB_MAGIC, 8) != 0)
        return anvil_fail(ANVIL_ERR_FORMAT, "lbfgs import: not an L-BFGS state (%zu bytes, no '%s' header)",
                          bytes, BLOB_MAGIC);
    const unsigned char *p = (const unsigned char *)blob + 8;
    uint32_t version, flags;
    int64_t n, hist, count, n_iter, func_evals;
    double t, prev_loss;
    get(&p, &version, 4);
    get(&p, &flags, 4);
    get(&p, &n, 8);
    get(&p, &hist, 8);
    get(&p, &count, 8);
    get(&p, &n_iter, 8);
    get(&p, &func_evals, 8);
    get(&p, &t, 8);
    get(&p, &prev_loss, 8);
    if (version != BLOB_VERSION)
        return anvil_fail(ANVIL_ERR_FORMAT, "lbfgs import: state version %u; this build reads version %u",
                          version, BLOB_VERSION);
    if (n != s->n)
        return anvil_fail(ANVIL_ERR_SHAPE, "lbfgs import: the state is for %lld parameters; this optimizer has %lld",
                          (long long)n, (long long)s->n);
    if (hist != s->o.history_size)
        return anvil_fail(ANVIL_ERR_INVALID_ARG,
                          "lbfgs import: the state has history_size %lld; this optimizer has %d",
                          (long long)hist, s->o.history_size);
    if (count < 0 || count > hist || n_iter < 0 || func_evals < 0 || (flags & ~FLAG_T_TENSOR) ||
        (count > 0 && n_iter < 2))
        return anvil_fail(ANVIL_ERR_FORMAT,
                          "lbfgs import: inconsistent state (history count %lld, n_iter %lld, func_evals %lld, "
                          "flags 0x%x)", (long long)count, (long long)n_iter, (long long)func_evals, flags);
    if (bytes != blob_size(n, count))
        return anvil_fail(ANVIL_ERR_FORMAT, "lbfgs import: %zu bytes; a state with %lld history pairs of %lld "
                          "floats has %zu", bytes, (long long)count, (long long)n, blob_size(n, count));
    size_t vb = (size_t)n * sizeof(float);
    anvil_backend *be = s->be;
    ANVIL_TRY(be->upload(be, SC(s, SC_HDIAG), p, sizeof(float)));
    p += sizeof(float);
    if (count > 0)
        ANVIL_TRY(be->upload(be, RO(s, 0), p, (size_t)count * sizeof(float)));
    p += (size_t)count * sizeof(float);
    ANVIL_TRY(be->upload(be, s->d, p, vb));
    p += vb;
    ANVIL_TRY(be->upload(be, s->prev_g, p, vb));
    p += vb;
    for (int64_t i = 0; i < count; i++, p += vb)
        ANVIL_TRY(be->upload(be, HY(s, i), p, vb));
    for (int64_t i = 0; i < count; i++, p += vb)
        ANVIL_TRY(be->upload(be, HS(s, i), p, vb));
    s->head = 0;
    s->count = count;
    s->n_iter = n_iter;
    s->func_evals = func_evals;
    s->t = (num){t, (flags & FLAG_T_TENSOR) != 0};
    s->prev_loss = prev_loss;
    return ANVIL_OK;
}
