#!/usr/bin/env python3
"""make_golden.py — PyTorch reference values for tests/test_parity.c.

Regenerate (from the repository root):

    python3 tests/golden/make_golden.py            # writes tests/golden/*.safetensors

Expected environment: python3 (>= 3.8), torch 2.x (the CPU build is enough) and the
`safetensors` package (`pip install torch safetensors`).  The files it writes are
committed, so the C test never needs Python; regenerate only when this script changes.
The output is deterministic (torch.manual_seed, CPU, float64 math), so regenerating with
another torch 2.x should reproduce the files up to the last bit of a few float64->float32
roundings.

Conventions of every file
 - Inputs are drawn as float32 (so Anvil is fed exactly the values the reference used),
   then the reference computation runs in float64 and the results are rounded to float32.
 - Class labels are int32 (PyTorch wants int64; they are converted for the reference).
 - A scalar (a loss, a sum over all dims, an op parameter) is stored with shape [1], not
   [] — the C test treats [1] and a 0-dim value as the same thing.
 - Backward is tested with a non-trivial upstream gradient: for an op y = f(inputs),
   "<key>.R" is a fixed random tensor shaped like y and "<key>.d<input>" is the gradient
   of sum(y * R) with respect to that input.

Files
 ops.safetensors      single ops: inputs, "<key>.y", "<key>.R", "<key>.d<input>"
 losses.safetensors   losses: inputs, "<key>.loss", "<key>.R" ([1]), "<key>.d<input>"
                      (gradient of R * loss w.r.t. the prediction input only)
 mlp_sgd.safetensors, mlp_adamw.safetensors
                      nn.Sequential(Linear(6,16), ReLU, Linear(16,16), Tanh, Linear(16,4))
                      trained 20 steps with CrossEntropyLoss:
                      "init.<name>"        initial parameters (state_dict names)
                      "x.<k>", "y.<k>"     batch k = 0..19: x float32 [8,6], y int32 [8]
                      "loss"               [20]: the loss of step k+1 (before its update)
                      "step<k>.<name>"     parameters after step k = 1, 10, 20
                      "step0.out"          forward output of step 1 (initial parameters)
                      "step0.grad.<name>"  loss gradient of step 1 (before weight decay)
 mlp_optim.safetensors
                      the same MLP trained 30 steps by each case of OPTIM_CASES (every
                      optimizer and option added after SGD-Nesterov/AdamW), all from one
                      init and one batch sequence: "init.<name>", "x.<k>", "y.<k>" (k = 0..29),
                      "step0.out" as above, and per case "<case>.loss" [30] and
                      "<case>.step<k>.<name>" (k = 1, 10, 30).  test_parity.c repeats each
                      case's options (keep the two in step).

    python3 tests/golden/make_golden.py --only mlp_optim   # writes just that file
 conv.safetensors     conv2d, max_pool2d, avg_pool2d and adaptive_avg_pool2d (test_conv.c),
                      keys as ops.safetensors ("<key>.x", ".w", ".b", ".y", ".R", ".dx",
                      ".dw", ".db") plus "<key>.params": conv2d [sh, sw, ph, pw, dh, dw,
                      groups], pooling [kh, kw, sh, sw, ph, pw], adaptive [oh, ow].

    python3 tests/golden/make_golden.py --only conv        # writes just that file
 norm.safetensors     batch norm / layer norm ops and a short BatchNorm training run for
                      tests/test_norm.c, written by make_norm.py (its docstring lists the
                      keys); a plain run writes it last.

    python3 tests/golden/make_golden.py --only norm        # writes just that file
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
F64 = torch.float64


def f32(t):
    """Detached, contiguous float32 copy (int tensors become int32)."""
    t = t.detach()
    if t.dtype in (torch.int64, torch.int32):
        return t.to(torch.int32).contiguous().clone()
    if t.dim() == 0:
        t = t.reshape(1)
    return t.to(torch.float32).contiguous().clone()


def scalar(v):
    return torch.tensor([v], dtype=torch.float32)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def away_from_zero(*shape, lo=0.5):
    """Random values with |v| in [lo, lo+1) and a random sign (for divisors)."""
    mag = lo + torch.rand(*shape, dtype=torch.float32)
    sign = torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0).to(torch.float32)
    return mag * sign


WORST_OP = [0.0]  # worst float32-vs-float64 error of a single op, / its tolerance


def record_op(out, key, fn, inputs, grad_of=None):
    """inputs: dict name -> float32 tensor.  Records inputs, y = fn(**inputs64), R and the
    gradient of sum(y * R) w.r.t. each float input (or those named in grad_of)."""
    ins64 = {}
    for name, t in inputs.items():
        out[f"{key}.{name}"] = f32(t)
        if t.is_floating_point():
            ins64[name] = t.to(F64).requires_grad_(grad_of is None or name in grad_of)
        else:
            ins64[name] = t.to(torch.int64)
    y = fn(**ins64)
    R = randn(*y.shape) if y.dim() > 0 else randn(1)
    loss = (y * R.to(F64).reshape(y.shape)).sum()
    wrt = [n for n, t in ins64.items() if t.is_floating_point() and t.requires_grad]
    grads = torch.autograd.grad(loss, [ins64[n] for n in wrt])
    out[f"{key}.y"] = f32(y)
    out[f"{key}.R"] = f32(R)
    for n, gr in zip(wrt, grads):
        out[f"{key}.d{n}"] = f32(gr)
    # Yardstick for the C test's tolerance: the same computation in float32 PyTorch.
    ins32 = {n: (t.detach().float().requires_grad_(t.requires_grad) if t.is_floating_point()
                 else t) for n, t in ins64.items()}
    y32 = fn(**ins32)
    g32 = torch.autograd.grad((y32 * R.reshape(y32.shape)).sum(), [ins32[n] for n in wrt])
    for a, b in [(y32, y)] + list(zip(g32, grads)):
        a, b = a.detach().to(F64), b.detach()
        r = float(((a - b).abs() / (1e-5 + 1e-4 * b.abs())).max())
        WORST_OP[0] = max(WORST_OP[0], r)


def make_ops():
    torch.manual_seed(1234)
    o = {}

    # linear: x[5,7], w[3,7], b[3] -> x w^T + b
    record_op(o, "linear", lambda x, w, b: F.linear(x, w, b),
              dict(x=randn(5, 7), w=randn(3, 7), b=randn(3)))

    # matmul with every transpose combination: op(a)[4,6] x op(b)[6,5]
    for ta in (False, True):
        for tb in (False, True):
            key = "matmul_" + ("t" if ta else "n") + ("t" if tb else "n")
            a = randn(6, 4) if ta else randn(4, 6)
            b = randn(5, 6) if tb else randn(6, 5)
            record_op(o, key, lambda a, b, ta=ta, tb=tb:
                      (a.t() if ta else a) @ (b.t() if tb else b), dict(a=a, b=b))

    # binary elementwise with broadcasting
    bshapes = {"same": ((3, 4), (3, 4)), "b1": ((4, 5), (5,)), "b2": ((4, 1), (1, 5)),
               "b3": ((2, 3, 4), (3, 1))}
    fns = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}
    for opname, fn in fns.items():
        for tag, (sa, sb) in bshapes.items():
            a = randn(*sa)
            b = away_from_zero(*sb) if opname == "div" else randn(*sb)
            record_op(o, f"{opname}_{tag}", lambda a, b, fn=fn: fn(a, b), dict(a=a, b=b))

    # scale
    o["scale.s"] = scalar(-1.7)
    record_op(o, "scale", lambda x: x * float(o["scale.s"][0]), dict(x=randn(3, 4)))

    # activations on x[4,6] (scaled so both sides of every kink are exercised)
    o["leaky_relu.slope"] = scalar(0.1)
    o["elu.alpha"] = scalar(1.3)
    acts = {
        "relu": F.relu,
        "leaky_relu": lambda x: F.leaky_relu(x, float(o["leaky_relu.slope"][0])),
        "elu": lambda x: F.elu(x, float(o["elu.alpha"][0])),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "silu": F.silu,
        "gelu": lambda x: F.gelu(x, approximate="none"),
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    }
    for name, fn in acts.items():
        record_op(o, name, lambda x, fn=fn: fn(x), dict(x=2.0 * randn(4, 6)))

    # softmax / log_softmax over dim -1 and dim 1 of a [2,3,4] input
    for name, fn in (("softmax", F.softmax), ("log_softmax", F.log_softmax)):
        for tag, dim in (("last", -1), ("dim1", 1)):
            record_op(o, f"{name}_{tag}", lambda x, fn=fn, dim=dim: fn(x, dim=dim),
                      dict(x=2.0 * randn(2, 3, 4)))

    # reductions over x[3,4,5]
    for name, fn in (("sum", torch.sum), ("mean", torch.mean)):
        for dim, dtag in ((0, "d0"), (1, "d1"), (-1, "dlast")):
            for keep in (False, True):
                key = f"{name}_{dtag}" + ("_keep" if keep else "")
                record_op(o, key, lambda x, fn=fn, dim=dim, keep=keep:
                          fn(x, dim=dim, keepdim=keep), dict(x=randn(3, 4, 5)))
        record_op(o, f"{name}_all", lambda x, fn=fn: fn(x), dict(x=randn(3, 4, 5)))

    # shape: reshape [2,3,4] -> [4,6]; reshape with an inferred dim -> [8,3]; flatten
    record_op(o, "reshape", lambda x: x.reshape(4, 6), dict(x=randn(2, 3, 4)))
    record_op(o, "reshape_infer", lambda x: x.reshape(-1, 3), dict(x=randn(2, 3, 4)))
    record_op(o, "flatten", lambda x: torch.flatten(x, 1), dict(x=randn(2, 3, 4)))
    return o


def near_kinks(kink, shape):
    """Differences d (float32) on both sides of the kinks at +-kink (and at 0 for l1),
    a little away from them (>= 1e-2), followed by random ones kept off the kinks."""
    if kink > 0:
        base = [-3.0, -1.03, -0.97, -0.5, -0.03, 0.03, 0.5, 0.97, 1.03, 3.0]
        base = [v * kink for v in base]
    else:
        base = [-1.5, -0.3, -0.03, -0.015, 0.015, 0.03, 0.3, 1.5]
    n = shape[0] * shape[1]
    d = torch.cat([torch.tensor(base, dtype=torch.float32), randn(n)])[:n]
    for k in {kink, -kink, 0.0}:
        close = (d - k).abs() < 1e-2
        d[close] += 0.05
    return d.reshape(*shape)


def make_losses():
    torch.manual_seed(4321)
    o = {}
    N, C = 6, 5

    def rec(key, fn, pred_name, inputs):
        record_op(o, key, fn, inputs, grad_of=(pred_name,))
        # rename y -> loss for readability
        o[f"{key}.loss"] = o.pop(f"{key}.y")

    labels = torch.randint(0, C, (N,), dtype=torch.int64)
    o["ce_ls.smoothing"] = scalar(0.1)
    o["ce_probs.smoothing"] = scalar(0.2)
    rec("ce", lambda logits, labels: F.cross_entropy(logits, labels), "logits",
        dict(logits=2.0 * randn(N, C), labels=labels))
    rec("ce_ls", lambda logits, labels: F.cross_entropy(
        logits, labels, label_smoothing=float(o["ce_ls.smoothing"][0])), "logits",
        dict(logits=2.0 * randn(N, C), labels=labels))
    rec("ce_probs", lambda logits, target: F.cross_entropy(
        logits, target, label_smoothing=float(o["ce_probs.smoothing"][0])), "logits",
        dict(logits=2.0 * randn(N, C), target=torch.softmax(randn(N, C), dim=1)))

    # BCE on [6,3]: mean over all elements (torch reduction="mean")
    bt = torch.rand(6, 3, dtype=torch.float32)
    bt[0] = torch.tensor([0.0, 1.0, 1.0])
    bt[1] = torch.tensor([1.0, 0.0, 0.0])
    rec("bce", lambda probs, target: F.binary_cross_entropy(probs, target), "probs",
        dict(probs=torch.sigmoid(2.0 * randn(6, 3)), target=bt))
    rec("bce_logits", lambda logits, target: F.binary_cross_entropy_with_logits(
        logits, target), "logits", dict(logits=3.0 * randn(6, 3), target=bt))

    t = randn(6, 3)
    rec("mse", lambda x, target: F.mse_loss(x, target), "x",
        dict(x=t + randn(6, 3), target=t))
    t = randn(6, 3)
    rec("l1", lambda x, target: F.l1_loss(x, target), "x",
        dict(x=t + near_kinks(0.0, (6, 3)), target=t))
    o["huber.delta"] = scalar(0.7)
    t = randn(6, 3)
    rec("huber", lambda x, target: F.huber_loss(x, target, delta=float(o["huber.delta"][0])),
        "x", dict(x=t + near_kinks(0.7, (6, 3)), target=t))
    o["smooth_l1.beta"] = scalar(0.5)
    t = randn(6, 3)
    rec("smooth_l1", lambda x, target: F.smooth_l1_loss(
        x, target, beta=float(o["smooth_l1.beta"][0])), "x",
        dict(x=t + near_kinks(0.5, (6, 3)), target=t))

    # sanity: no difference sits on a kink after the float32 rounding of x
    for key, kink in (("huber", 0.7), ("smooth_l1", 0.5), ("l1", 0.0)):
        d = (o[f"{key}.x"].to(F64) - o[f"{key}.target"].to(F64)).abs()
        assert float((d - kink).abs().min()) > 5e-3, key
    return o


MLP_NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
STEPS = 20
SAVE_AT = (1, 10, 20)


def make_mlp_data(seed, steps=STEPS):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 4))
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert list(init) == MLP_NAMES
    w_true = randn(6, 4)
    xs, ys = [], []
    for _ in range(steps):
        x = randn(8, 6)
        y = (x @ w_true + 0.3 * randn(8, 4)).argmax(dim=1)
        xs.append(x)
        ys.append(y)
    return init, xs, ys


def train_mlp(init, xs, ys, make_opt, dtype, steps=STEPS, save_at=SAVE_AT):
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 4)).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init.items()})
    opt = make_opt(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    rec = {"loss": []}
    for k in range(steps):
        opt.zero_grad()
        out = model(xs[k].to(dtype))
        loss = loss_fn(out, ys[k])
        loss.backward()
        if k == 0:
            rec["step0.out"] = out.detach().clone()
            for n, p in model.named_parameters():
                rec[f"step0.grad.{n}"] = p.grad.detach().clone()
        opt.step()
        rec["loss"].append(float(loss.detach()))
        if k + 1 in save_at:
            for n, v in model.state_dict().items():
                rec[f"step{k + 1}.{n}"] = v.detach().clone()
    rec["loss"] = torch.tensor(rec["loss"], dtype=F64)
    return rec


def make_mlp(seed, make_opt):
    init, xs, ys = make_mlp_data(seed)
    ref = train_mlp(init, xs, ys, make_opt, F64)
    o = {}
    for n, v in init.items():
        o[f"init.{n}"] = f32(v)
    for k in range(STEPS):
        o[f"x.{k}"] = f32(xs[k])
        o[f"y.{k}"] = f32(ys[k])
    for n, v in ref.items():
        o[n] = f32(v)
    # How far a float32 PyTorch run drifts from the float64 reference: a yardstick for
    # the C test's tolerance (printed, not saved).
    r32 = train_mlp(init, xs, ys, make_opt, torch.float32)
    worst = 0.0
    for n in ref:
        a, b = r32[n].to(F64), ref[n].to(F64)
        worst = max(worst, float(((a - b).abs() / (1e-4 + 1e-3 * b.abs())).max()))
    return o, worst


O = torch.optim
OPTIM_STEPS = 30
OPTIM_SAVE_AT = (1, 10, 30)
# name -> optimizer factory (single-tensor code path: foreach=False)
OPTIM_CASES = {
    "sgd_maximize": lambda p: O.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-3,
                                    maximize=True, foreach=False),
    "adam_amsgrad": lambda p: O.Adam(p, lr=0.01, weight_decay=1e-2, amsgrad=True,
                                     foreach=False),
    "adam_maximize": lambda p: O.Adam(p, lr=0.005, maximize=True, foreach=False),
    "adamw_amsgrad_maximize": lambda p: O.AdamW(p, lr=0.01, betas=(0.9, 0.99), eps=1e-7,
                                                weight_decay=0.05, amsgrad=True,
                                                maximize=True, foreach=False),
    "rmsprop": lambda p: O.RMSprop(p, foreach=False),
    "rmsprop_momentum": lambda p: O.RMSprop(p, lr=0.005, momentum=0.9, foreach=False),
    "rmsprop_centered": lambda p: O.RMSprop(p, lr=0.005, centered=True, foreach=False),
    "rmsprop_all": lambda p: O.RMSprop(p, lr=0.005, alpha=0.9, eps=1e-6, weight_decay=1e-3,
                                       momentum=0.8, centered=True, foreach=False),
    "rmsprop_maximize": lambda p: O.RMSprop(p, lr=0.002, maximize=True, foreach=False),
    "adagrad": lambda p: O.Adagrad(p, lr=0.05, foreach=False),
    "adagrad_all": lambda p: O.Adagrad(p, lr=0.05, lr_decay=0.01, weight_decay=1e-3,
                                       initial_accumulator_value=0.1, eps=1e-8,
                                       foreach=False),
    "adagrad_maximize": lambda p: O.Adagrad(p, lr=0.01, maximize=True, foreach=False),
    "adadelta": lambda p: O.Adadelta(p, foreach=False),
    "adadelta_all": lambda p: O.Adadelta(p, lr=0.5, rho=0.95, eps=1e-5, weight_decay=1e-3,
                                         foreach=False),
    "adadelta_maximize": lambda p: O.Adadelta(p, maximize=True, foreach=False),
    "nadam": lambda p: O.NAdam(p, foreach=False),
    "nadam_all": lambda p: O.NAdam(p, lr=0.01, betas=(0.85, 0.99), eps=1e-7,
                                   weight_decay=1e-2, momentum_decay=5e-3, foreach=False),
    "nadam_decoupled": lambda p: O.NAdam(p, lr=0.01, weight_decay=0.05,
                                         decoupled_weight_decay=True, foreach=False),
    "nadam_maximize": lambda p: O.NAdam(p, lr=0.002, maximize=True, foreach=False),
}


def make_mlp_optim(seed=779):
    init, xs, ys = make_mlp_data(seed, OPTIM_STEPS)
    o = {}
    for n, v in init.items():
        o[f"init.{n}"] = f32(v)
    for k in range(OPTIM_STEPS):
        o[f"x.{k}"] = f32(xs[k])
        o[f"y.{k}"] = f32(ys[k])
    worst = {}
    for case, make_opt in OPTIM_CASES.items():
        ref = train_mlp(init, xs, ys, make_opt, F64, OPTIM_STEPS, OPTIM_SAVE_AT)
        o["step0.out"] = f32(ref["step0.out"])
        for n, v in ref.items():
            if not n.startswith("step0."):
                o[f"{case}.{n}"] = f32(v)
        r32 = train_mlp(init, xs, ys, make_opt, torch.float32, OPTIM_STEPS, OPTIM_SAVE_AT)
        w = 0.0
        for n in ref:
            a, b = r32[n].to(F64), ref[n].to(F64)
            w = max(w, float(((a - b).abs() / (1e-4 + 1e-3 * b.abs())).max()))
        worst[case] = w
    return o, worst


def write_files(files):
    total = 0
    for name, tensors in files.items():
        path = os.path.join(HERE, name)
        save_file(tensors, path, metadata={  # one key: safetensors orders several randomly
            "generator": f"tests/golden/make_golden.py, torch {torch.__version__}"})
        size = os.path.getsize(path)
        total += size
        print(f"{name}: {len(tensors)} tensors, {size} bytes")
    return total


def main_optim():
    optim, worst = make_mlp_optim()
    write_files({"mlp_optim.safetensors": optim})
    for case in OPTIM_CASES:
        print(f"{case}: float32 error / MLP tolerance {worst[case]:.3g}; loss "
              + " ".join(f"{v:.4f}" for v in optim[f"{case}.loss"].tolist()[::5]))
    if max(worst.values()) >= 1.0:
        sys.exit("a tolerance of test_parity.c is too tight for float32 arithmetic")


# conv2d configs: key -> (x shape, w shape, bias, stride, padding, dilation, groups)
CONV_CASES = {
    "conv2d_basic": ((2, 3, 7, 8), (4, 3, 3, 3), True, (1, 1), (0, 0), (1, 1), 1),
    "conv2d_stride2_pad1": ((2, 3, 7, 8), (5, 3, 3, 3), True, (2, 2), (1, 1), (1, 1), 1),
    "conv2d_dilation2": ((2, 3, 9, 8), (4, 3, 3, 2), True, (1, 1), (2, 1), (2, 2), 1),
    "conv2d_groups2": ((2, 4, 6, 7), (6, 2, 3, 3), True, (1, 2), (1, 1), (1, 1), 2),
    "conv2d_nobias": ((3, 2, 6, 6), (3, 2, 2, 2), False, (2, 1), (0, 0), (1, 1), 1),
    "conv2d_1x1": ((2, 4, 5, 5), (8, 4, 1, 1), True, (1, 1), (0, 0), (1, 1), 1),
    "conv2d_depthwise": ((2, 3, 6, 6), (3, 1, 3, 3), False, (1, 1), (1, 1), (1, 1), 3),
    "conv2d_mixed": ((1, 6, 10, 9), (4, 3, 3, 5), True, (2, 3), (1, 2), (2, 1), 2),
}
# pooling: key -> (x shape, kernel, stride, padding); adaptive: key -> (x shape, output)
POOL_CASES = {
    "k2": ((2, 3, 6, 7), (2, 2), (2, 2), (0, 0)),
    "k3s2p1": ((2, 3, 7, 8), (3, 3), (2, 2), (1, 1)),
    "rect": ((2, 2, 7, 9), (2, 3), (1, 2), (1, 1)),
}
ADAPTIVE_CASES = {
    "adaptive_avg_pool2d_3x4": ((2, 3, 7, 9), (3, 4)),
    "adaptive_avg_pool2d_global": ((2, 3, 5, 6), (1, 1)),
    "adaptive_avg_pool2d_up": ((2, 2, 5, 5), (7, 3)),
}


def make_conv():
    torch.manual_seed(2468)
    o = {}
    for key, (xs, ws, bias, st, pad, dil, groups) in CONV_CASES.items():
        o[f"{key}.params"] = torch.tensor([*st, *pad, *dil, groups], dtype=torch.float32)
        ins = dict(x=randn(*xs), w=randn(*ws))
        if bias:
            ins["b"] = randn(ws[0])
        record_op(o, key, lambda x, w, b=None, st=st, pad=pad, dil=dil, groups=groups:
                  F.conv2d(x, w, b, stride=st, padding=pad, dilation=dil, groups=groups), ins)
    for tag, (xs, k, st, pad) in POOL_CASES.items():
        for name, fn in (("max_pool2d", F.max_pool2d), ("avg_pool2d", F.avg_pool2d)):
            key = f"{name}_{tag}"
            o[f"{key}.params"] = torch.tensor([*k, *st, *pad], dtype=torch.float32)
            record_op(o, key, lambda x, fn=fn, k=k, st=st, pad=pad:
                      fn(x, k, stride=st, padding=pad), dict(x=randn(*xs)))
    for key, (xs, out) in ADAPTIVE_CASES.items():
        o[f"{key}.params"] = torch.tensor(out, dtype=torch.float32)
        record_op(o, key, lambda x, out=out: F.adaptive_avg_pool2d(x, out), dict(x=randn(*xs)))
    return o


def main_conv():
    write_files({"conv.safetensors": make_conv()})
    print(f"float32-torch vs float64 reference, worst error / op tolerance: "
          f"{WORST_OP[0]:.3g} (must be < 1)")
    if WORST_OP[0] >= 1.0:
        sys.exit("a tolerance of test_conv.c is too tight for float32 arithmetic")


def main():
    torch.set_num_threads(1)
    if sys.argv[1:] == ["--only", "mlp_optim"]:
        main_optim()
        return
    if sys.argv[1:] == ["--only", "conv"]:
        main_conv()
        return
    if sys.argv[1:] == ["--only", "norm"]:
        import make_norm
        make_norm.main_norm()
        return
    files = {
        "ops.safetensors": make_ops(),
        "losses.safetensors": make_losses(),
    }
    sgd, w_sgd = make_mlp(777, lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=False))
    adamw, w_adamw = make_mlp(778, lambda p: torch.optim.AdamW(
        p, lr=0.01, betas=(0.9, 0.99), eps=1e-7, weight_decay=0.05, foreach=False))
    files["mlp_sgd.safetensors"] = sgd
    files["mlp_adamw.safetensors"] = adamw
    total = 0
    for name, tensors in files.items():
        path = os.path.join(HERE, name)
        save_file(tensors, path, metadata={  # one key: safetensors orders several randomly
            "generator": f"tests/golden/make_golden.py, torch {torch.__version__}"})
        size = os.path.getsize(path)
        total += size
        print(f"{name}: {len(tensors)} tensors, {size} bytes")
    print(f"total {total} bytes")
    print(f"float32-torch vs float64 reference, worst error / op tolerance: "
          f"{WORST_OP[0]:.3g} (must be < 1)")
    print(f"float32-torch vs float64 reference, worst error / MLP tolerance: "
          f"sgd {w_sgd:.3g}, adamw {w_adamw:.3g} (must be < 1)")
    print("mlp_sgd loss:", " ".join(f"{v:.4f}" for v in sgd["loss"].tolist()))
    print("mlp_adamw loss:", " ".join(f"{v:.4f}" for v in adamw["loss"].tolist()))
    if max(w_sgd, w_adamw, WORST_OP[0]) >= 1.0:
        sys.exit("a tolerance of test_parity.c is too tight for float32 arithmetic")
    main_optim()
    main_conv()
    import make_norm
    make_norm.main_norm()


if __name__ == "__main__":
    main()
