#!/usr/bin/env python3
"""make_lbfgs.py — torch.optim.LBFGS reference runs for tests/test_lbfgs.c and
tests/gpu/test_gpu_lbfgs.c (lbfgs.safetensors).

    python3 tests/golden/make_lbfgs.py        # writes tests/golden/lbfgs.safetensors

Needs python3, torch 2.x and safetensors.  Deterministic: the problems are fixed, the
objectives are evaluated in float64 and rounded once to float32 (loss and gradient), with
the sums in the same sequential order as the C test's closures, so Anvil's closure hands
the optimizer exactly the numbers torch's closure handed torch.

Besides the goldens it runs two checks and prints a table:
 - MIRROR (a Python transcription of src/optim/lbfgs.c: every scalar typed as torch types
   it, a Python float or a 0-dim float32 tensor) with torch's own float32 dot/sum must
   reproduce torch.optim.LBFGS BIT FOR BIT on every case (it asserts so).  This pins down
   the scalar semantics the C port mirrors (see lbfgs.c's header).
 - the same mirror with reductions accumulated in double, as Anvil's backends do: the
   result Anvil should produce ("<case>.anvil.*"), and its distance from torch's float32
   run; next to it, the distance of a float64 torch run from the float32 one (how far
   float32 rounding alone moves these runs) — the basis of the test's tolerance.

Keys (F32 unless noted; "steps" = number of .step() calls):
 "lsq.A" [24, 8], "lsq.b" [24]      least-squares data: f(x) = 0.5/24 * ||A x - b||^2
 per case <c>:
   "<c>.opts" [9]      lr, max_iter, max_eval (0: torch's default max_iter*5//4),
                       tolerance_grad, tolerance_change, history_size, strong_wolfe (0/1),
                       steps, problem (0: Rosenbrock, 1: least squares)
   "<c>.x0" [n]        the start
   "<c>.params" [steps, n], "<c>.loss" [steps]   torch float32: params after each step,
                       the value each step returned (the loss of its first closure call)
   "<c>.func_evals", "<c>.n_iter"  I32 [steps]: torch's state after each step
   "<c>.anvil.params", "<c>.anvil.loss"          the double-reduction mirror's run
"""
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- the problems
def rosenbrock(x):
    """sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 and its gradient, sequentially."""
    n = len(x)
    f = 0.0
    g = [0.0] * n
    for i in range(n - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        f += 100.0 * a * a + b * b
        g[i] += -400.0 * x[i] * a - 2.0 * b
        g[i + 1] += 200.0 * a
    return f, g


def make_lsq_data():
    rng = np.random.default_rng(3)
    cols = np.logspace(0, 1.0, 8).astype(np.float32)  # column scales 1..10: cond(A^T A) ~ 1e2
    A = (rng.standard_normal((24, 8)).astype(np.float32) * cols).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    return A, b


def least_squares(x, A, b):
    m, k = A.shape
    f = 0.0
    g = [0.0] * k
    for i in range(m):
        r = -float(b[i])
        for j in range(k):
            r += float(A[i, j]) * x[j]
        f += r * r
        for j in range(k):
            g[j] += float(A[i, j]) * r
    return 0.5 * f / m, [gj / m for gj in g]


def closure_for(x, fn, dtype):
    """Sets x.grad and returns the loss, both computed in float64 and rounded to dtype."""
    def closure():
        f, g = fn(x.detach().double().tolist())
        x.grad = torch.tensor(g, dtype=torch.float64).to(dtype)
        return torch.tensor(f, dtype=torch.float64).to(dtype)
    return closure


# ---------------------------------------------------------------- the mirror of lbfgs.c
def F(x):
    return float(np.float32(x))


class Num:
    """A Python float (t=False) or a 0-dim float32 tensor (t=True): torch's LBFGS mixes them
    (gtd, ys, ro, H_diag are tensors; losses are floats; t starts as a float or, on the
    first iteration, a tensor, and the cubic interpolation usually returns a tensor)."""
    __slots__ = ("v", "t")

    def __init__(self, v, t):
        self.v = F(v) if t else float(v)
        self.t = t


def P(v):
    return Num(v, False)


def T(v):
    return Num(v, True)


def _d(x):
    return np.float64(x)  # IEEE arithmetic (inf, nan) instead of Python exceptions


def add(a, b):
    with np.errstate(all="ignore"):
        return T(_d(F(a.v)) + _d(F(b.v))) if a.t or b.t else P(_d(a.v) + _d(b.v))


def sub(a, b):
    with np.errstate(all="ignore"):
        return T(_d(F(a.v)) - _d(F(b.v))) if a.t or b.t else P(_d(a.v) - _d(b.v))


def mul(a, b):
    with np.errstate(all="ignore"):
        return T(_d(F(a.v)) * _d(F(b.v))) if a.t or b.t else P(_d(a.v) * _d(b.v))


def div(a, b):
    with np.errstate(all="ignore"):
        if b.t and not a.t:  # number / tensor is tensor.reciprocal() * number
            return T(_d(F(1.0 / _d(F(b.v)))) * _d(F(a.v)))
        if a.t or b.t:
            return T(_d(F(a.v)) / _d(F(b.v)))
        return P(_d(a.v) / _d(b.v))


def nabs(a):
    return Num(abs(a.v), a.t)


def nsqrt(a):
    with np.errstate(all="ignore"):
        return Num(np.sqrt(_d(a.v)), a.t)


def lt(a, b):  # a tensor compares with a number at float32
    return F(a.v) < F(b.v) if a.t or b.t else a.v < b.v


def le(a, b):
    return F(a.v) <= F(b.v) if a.t or b.t else a.v <= b.v


def pmin(a, b):  # Python's min(a, b)
    return b if lt(b, a) else a


def pmax(a, b):  # Python's max(a, b)
    return b if lt(a, b) else a


def cubic(x1, f1, g1, x2, f2, g2, bounds=None):
    if bounds is not None:
        xmin, xmax = bounds
    else:
        xmin, xmax = (x1, x2) if le(x1, x2) else (x2, x1)
    d1 = sub(add(g1, g2), div(mul(P(3), sub(f1, f2)), sub(x1, x2)))
    d2sq = sub(mul(d1, d1), mul(g1, g2))
    if le(P(0), d2sq):
        d2 = nsqrt(d2sq)
        if le(x1, x2):
            mp = sub(x2, mul(sub(x2, x1), div(sub(add(g2, d2), d1), add(sub(g2, g1), mul(P(2), d2)))))
        else:
            mp = sub(x1, mul(sub(x1, x2), div(sub(add(g1, d2), d1), add(sub(g1, g2), mul(P(2), d2)))))
        return pmin(pmax(mp, xmin), xmax)
    return div(add(xmin, xmax), P(2.0))


class Dev:
    """The backend's vec ops.  dots='torch': torch's float32 dot/sum; 'double': summed in
    double and rounded once, as Anvil's backends do."""

    def __init__(self, dots):
        self.dots = dots

    @staticmethod
    def coef(alpha, ca=None, cb=None):
        return F(alpha) if ca is None else F(F(alpha) * F(ca - (cb if cb is not None else 0.0)))

    def dot(self, x, y, ca=None):
        if self.dots == "torch":
            r = float(x.dot(y))
        else:
            r = F(math.fsum((x.double() * y.double()).tolist()))
        return r if ca is None else F(F(r) * ca)

    def axpy(self, y, x, alpha, ca=None, cb=None):  # y.add_(x, alpha=c): an FMA
        y.add_(x, alpha=self.coef(alpha, ca, cb))

    def scale(self, out, x, alpha, ca=None):
        out.copy_(torch.mul(x, self.coef(alpha, ca)))

    @staticmethod
    def abs_max(x):
        return float(x.abs().max())

    def abs_sum(self, x):
        if self.dots == "torch":
            return float(x.abs().sum())
        return F(math.fsum(x.double().abs().tolist()))


class Mirror:
    def __init__(self, x, closure, lr=1.0, max_iter=20, max_eval=0, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, strong_wolfe=False, dots="torch"):
        self.x, self.closure = x, closure
        self.lr, self.max_iter = lr, max_iter
        self.max_eval = max_eval if max_eval else max_iter * 5 // 4
        self.tol_grad, self.tol_change = tolerance_grad, tolerance_change
        self.H, self.wolfe = history_size, strong_wolfe
        self.dev = Dev(dots)
        self.func_evals = self.n_iter = 0
        self.d = self.t = self.prev_flat_grad = self.prev_loss = None
        self.hist = []  # (y, s, ro)
        self.H_diag = 1.0

    def evaluate(self):
        loss = self.closure()
        return float(loss), self.x.grad.detach().clone()

    def directional(self, x_init, t, d):
        self.dev.axpy(self.x.data, d, t.v)
        f, g = self.evaluate()
        self.x.data.copy_(x_init)
        return P(f), g

    def strong_wolfe(self, x_init, t, d, f, g, gtd, max_ls, c1=1e-4, c2=0.9, tol_change=1e-9):
        dev = self.dev
        d_norm = T(dev.abs_max(d))
        f_new, g_new = self.directional(x_init, t, d)
        ls_evals = 1
        gtd_new = T(dev.dot(g_new, d))
        t_prev, f_prev, g_prev, gtd_prev = P(0), f, g, gtd
        done = False
        ls_iter = 0
        while ls_iter < max_ls:
            if lt(add(f, mul(mul(P(c1), t), gtd)), f_new) or (ls_iter > 1 and le(f_prev, f_new)):
                br, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
                break
            if le(nabs(gtd_new), mul(P(-c2), gtd)):
                br, bf, bg, bgtd = [t], [f_new], [g_new], None
                done = True
                break
            if le(P(0), gtd_new):
                br, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
                break
            min_step = add(t, mul(P(0.01), sub(t, t_prev)))
            max_step = mul(t, P(10))
            tmp = t
            t = cubic(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
            t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
            f_new, g_new = self.directional(x_init, t, d)
            ls_evals += 1
            gtd_new = T(dev.dot(g_new, d))
            ls_iter += 1
        if ls_iter == max_ls:
            br, bf, bg, bgtd = [P(0), t], [f, f_new], [g, g_new], None
        insuf = False
        low, high = (0, 1) if le(bf[0], bf[-1]) else (1, 0)
        while not done and ls_iter < max_ls:
            if lt(mul(nabs(sub(br[1], br[0])), d_norm), P(tol_change)):
                break
            t = cubic(br[0], bf[0], bgtd[0], br[1], bf[1], bgtd[1])
            bmax, bmin = pmax(br[0], br[1]), pmin(br[0], br[1])
            eps = mul(P(0.1), sub(bmax, bmin))
            if lt(pmin(sub(bmax, t), sub(t, bmin)), eps):
                if insuf or le(bmax, t) or le(t, bmin):
                    t = sub(bmax, eps) if lt(nabs(sub(t, bmax)), nabs(sub(t, bmin))) else add(bmin, eps)
                    insuf = False
                else:
                    insuf = True
            else:
                insuf = False
            f_new, g_new = self.directional(x_init, t, d)
            ls_evals += 1
            gtd_new = T(dev.dot(g_new, d))
            ls_iter += 1
            if lt(add(f, mul(mul(P(c1), t), gtd)), f_new) or le(bf[low], f_new):
                br[high], bf[high], bg[high], bgtd[high] = t, f_new, g_new, gtd_new
                low, high = (0, 1) if le(bf[0], bf[1]) else (1, 0)
            else:
                if le(nabs(gtd_new), mul(P(-c2), gtd)):
                    done = True
                elif le(P(0), mul(gtd_new, sub(br[high], br[low]))):
                    br[high], bf[high], bg[high], bgtd[high] = br[low], bf[low], bg[low], bgtd[low]
                br[low], bf[low], bg[low], bgtd[low] = t, f_new, g_new, gtd_new
        return bf[low], bg[low], br[low], ls_evals

    def step(self):
        dev = self.dev
        orig_loss, flat_grad = self.evaluate()
        loss = P(orig_loss)
        current_evals = 1
        self.func_evals += 1
        if le(T(dev.abs_max(flat_grad)), P(self.tol_grad)):
            return orig_loss
        d, t = self.d, self.t
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            self.n_iter += 1
            if self.n_iter == 1:
                d = torch.empty_like(flat_grad)
                dev.scale(d, flat_grad, -1.0)
                self.hist, self.H_diag = [], 1.0
            else:
                y = flat_grad.clone()
                dev.axpy(y, self.prev_flat_grad, -1.0)
                s = torch.empty_like(d)
                dev.scale(s, d, t.v)
                ys = dev.dot(y, s)
                if lt(P(1e-10), T(ys)):
                    if len(self.hist) == self.H:
                        self.hist.pop(0)
                    self.hist.append((y, s, F(1.0 / _d(ys))))  # 1.0 / ys: reciprocal
                    self.H_diag = F(_d(ys) / _d(dev.dot(y, y)))
                al = [None] * len(self.hist)
                dev.scale(d, flat_grad, -1.0)  # q, in d's storage
                for i in range(len(self.hist) - 1, -1, -1):
                    yi, si, roi = self.hist[i]
                    al[i] = dev.dot(si, d, ca=roi)
                    dev.axpy(d, yi, -1.0, ca=al[i])
                dev.scale(d, d, 1.0, ca=self.H_diag)
                for i in range(len(self.hist)):
                    yi, si, roi = self.hist[i]
                    be_i = dev.dot(yi, d, ca=roi)
                    dev.axpy(d, si, 1.0, ca=al[i], cb=be_i)
            if self.prev_flat_grad is None:
                self.prev_flat_grad = flat_grad.clone()
            else:
                self.prev_flat_grad.copy_(flat_grad)
            self.prev_loss = loss
            if self.n_iter == 1:
                t = mul(pmin(P(1.0), div(P(1.0), T(dev.abs_sum(flat_grad)))), P(self.lr))
            else:
                t = P(self.lr)
            gtd = T(dev.dot(flat_grad, d))
            if lt(P(-self.tol_change), gtd):
                break
            d_absmax = dev.abs_max(d)
            ls_evals = 0
            if self.wolfe:
                x_init = self.x.detach().clone()
                loss, flat_grad, t, ls_evals = self.strong_wolfe(
                    x_init, t, d, loss, flat_grad, gtd, self.max_eval - current_evals)
                dev.axpy(self.x.data, d, t.v)
                opt_cond = le(T(dev.abs_max(flat_grad)), P(self.tol_grad))
            else:
                dev.axpy(self.x.data, d, t.v)
                if n_iter != self.max_iter:
                    f, flat_grad = self.evaluate()
                    loss = P(f)
                    opt_cond = le(T(dev.abs_max(flat_grad)), P(self.tol_grad))
                    ls_evals = 1
            current_evals += ls_evals
            self.func_evals += ls_evals
            if n_iter == self.max_iter or current_evals >= self.max_eval or opt_cond:
                break
            # d.mul(t).abs().max(): rounding is monotonic, so it is fl32(max|d| * |t|)
            if le(T(F(d_absmax) * F(abs(F(t.v)))), P(self.tol_change)):
                break
            if lt(nabs(sub(loss, self.prev_loss)), P(self.tol_change)):
                break
        self.d, self.t = d, t
        return orig_loss


# ---------------------------------------------------------------- runs
def run(kind, x0, fn, opts, steps, dtype=torch.float32):
    x = torch.tensor(x0, dtype=dtype).requires_grad_(True)
    cl = closure_for(x, fn, dtype)
    if kind == "torch":
        o = {k: v for k, v in opts.items() if k != "strong_wolfe"}
        if not o.get("max_eval"):
            o.pop("max_eval", None)
        opt = torch.optim.LBFGS([x], line_search_fn="strong_wolfe" if opts["strong_wolfe"] else None, **o)
    else:
        opt = Mirror(x, cl, dots=kind, **opts)
    out = []
    for _ in range(steps):
        loss = float(opt.step(cl) if kind == "torch" else opt.step())
        st = opt.state[x] if kind == "torch" else {"func_evals": opt.func_evals, "n_iter": opt.n_iter}
        out.append((x.detach().double().numpy().copy(), loss, st["func_evals"], st["n_iter"]))
    return out


def cases():
    n = 10
    x0r = np.array([-1.2 if i % 2 == 0 else 1.0 for i in range(n)], np.float32)
    x0r = (x0r + np.float32(0.05) * np.arange(n, dtype=np.float32)).astype(np.float32)
    z = np.zeros(8, np.float32)
    D = dict(lr=1.0, max_iter=20, max_eval=0, tolerance_grad=1e-7, tolerance_change=1e-9,
             history_size=100, strong_wolfe=False)

    def o(**kw):
        r = dict(D)
        r.update(kw)
        return r
    # (name, problem, x0, options, steps); chosen so that the float64 run moves no step's
    # params by more than ~1.5e-5 from the float32 one and changes no evaluation count
    # (longer Rosenbrock runs are chaotic: one rounding in a dot flips a line-search branch)
    return [
        ("rosen_none", 0, x0r, o(lr=0.2, max_iter=10, history_size=5), 4),
        ("rosen_wolfe", 0, x0r, o(strong_wolfe=True), 1),  # torch's defaults
        ("rosen_wolfe_h3", 0, x0r, o(max_iter=5, history_size=3, strong_wolfe=True), 3),
        ("rosen_maxeval", 0, x0r, o(max_iter=20, max_eval=8, history_size=5, strong_wolfe=True), 2),
        ("rosen_iter1", 0, x0r, o(max_iter=1, history_size=5, strong_wolfe=True), 4),
        ("rosen_at_min", 0, np.ones(n, np.float32), o(strong_wolfe=True), 2),
        ("lsq_none_h3", 1, z, o(max_iter=4, history_size=3), 5),
        ("lsq_wolfe_h3", 1, z, o(max_iter=4, history_size=3, strong_wolfe=True), 5),
        ("lsq_wolfe", 1, z, o(max_iter=6, history_size=4, strong_wolfe=True), 3),
        ("lsq_tol", 1, z, o(max_iter=20, history_size=5, tolerance_grad=1e-3, tolerance_change=1e-5), 3),
        ("lsq_lr_half", 1, z, o(lr=0.5, max_iter=3, history_size=3), 5),
    ]


def main():
    A, b = make_lsq_data()
    fns = [rosenbrock, lambda x: least_squares(x, A, b)]
    out = {"lsq.A": torch.tensor(A), "lsq.b": torch.tensor(b)}
    print(f"{'case':16} {'step':>4} {'evals':>5} {'iters':>5} {'|anvil-torch|':>14} {'|f64-f32|':>10}")
    worst = 0.0
    for name, prob, x0, opts, steps in cases():
        fn = fns[prob]
        ref = run("torch", x0, fn, opts, steps)
        # 1. the mirror with torch's own reductions must be torch, bit for bit
        x = torch.tensor(x0).requires_grad_(True)
        m = Mirror(x, closure_for(x, fn, torch.float32), dots="torch", **opts)
        for k in range(steps):
            loss = float(m.step())
            got = (x.detach().double().numpy(), loss, m.func_evals, m.n_iter)
            assert np.array_equal(got[0], ref[k][0]) and got[1:] == ref[k][1:], \
                f"{name} step {k + 1}: the mirror differs from torch.optim.LBFGS"
        # 2. the mirror with double reductions (what Anvil computes), and float64 torch
        mir = run("double", x0, fn, opts, steps)
        r64 = run("torch", x0, fn, opts, steps, torch.float64)
        for k in range(steps):
            assert mir[k][2:] == ref[k][2:], f"{name} step {k + 1}: evaluation counts differ"
            assert r64[k][2:] == ref[k][2:], f"{name} step {k + 1}: float64 evaluation counts differ"
            e = float(np.max(np.abs(mir[k][0] - ref[k][0])))
            e64 = float(np.max(np.abs(r64[k][0] - ref[k][0])))
            worst = max(worst, e)
            print(f"{name:16} {k + 1:4} {ref[k][2]:5} {ref[k][3]:5} {e:14.2e} {e64:10.2e}")
        o = opts
        out[name + ".opts"] = torch.tensor(
            [o["lr"], o["max_iter"], o["max_eval"], o["tolerance_grad"], o["tolerance_change"],
             o["history_size"], 1.0 if o["strong_wolfe"] else 0.0, steps, prob], dtype=torch.float32)
        out[name + ".x0"] = torch.tensor(x0)
        for key, rr in (("", ref), (".anvil", mir)):
            out[name + key + ".params"] = torch.tensor(np.stack([r[0] for r in rr]), dtype=torch.float32)
            out[name + key + ".loss"] = torch.tensor([r[1] for r in rr], dtype=torch.float32)
        out[name + ".func_evals"] = torch.tensor([r[2] for r in ref], dtype=torch.int32)
        out[name + ".n_iter"] = torch.tensor([r[3] for r in ref], dtype=torch.int32)
    print(f"mirror == torch.optim.LBFGS bit for bit on every case; worst |anvil - torch| {worst:.2e}")
    path = os.path.join(HERE, "lbfgs.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
