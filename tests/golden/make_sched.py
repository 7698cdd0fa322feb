#!/usr/bin/env python3
"""make_sched.py — PyTorch reference values for learning-rate schedules, gradient clipping
and parameter groups (tests/test_parity.c, the "sched_*" and "train2_*" tests).

Regenerate (from the repository root; torch and safetensors as for make_golden.py):

    python3 tests/golden/make_sched.py        # writes tests/golden/sched.safetensors

Keys
 "<case>.lr"      float32 [STEPS, 2]: the lr torch's optimizer used at optimizer step k
                  (rows) for the two parameter groups (columns: group 0 = weights with
                  lr 0.1, group 1 = biases with lr 0.02), for each case of SCHEDULES, the
                  scheduler stepped after every optimizer step or, with "per_epoch", after
                  every STEPS_PER_EPOCH optimizer steps.
 "<case>.metric"  float32 [STEPS] (plateau cases): the metric fed to
                  ReduceLROnPlateau.step() after optimizer step k; "<case>.lr" row k is the
                  lr of step k (so the metric of step k shows from row k + 1).
 "init.<name>", "x.<k>", "y.<k>", "step0.out"
                  the MLP of make_golden.py (Linear(6,16), ReLU, Linear(16,16), Tanh,
                  Linear(16,4)) and 30 batches, as in mlp_optim.safetensors.
 "<case>.loss" [30], "<case>.step<k>.<name>" (k = 1, 10, 30)
                  that MLP trained by each case of TRAIN_CASES (float64 reference),
 "<case>.grad_norm" [30]
                  the total norm clip_grad_norm_ returned at each step (clipping cases).
 "lbfgs*.loss" [4], "lbfgs*.step<k>.<name>" (k = 1, 4), "lbfgs*.func_evals" [1]
                  torch.optim.LBFGS (LBFGS_CASES) on the first 4 batches (x.0..x.3, 32
                  samples) as one full batch, one .step(closure) per step.
test_parity.c repeats every case's options: keep the two in step.
"""
import math
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import F64, f32, make_mlp_data  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
O = torch.optim
S = torch.optim.lr_scheduler
STEPS = 60
STEPS_PER_EPOCH = 3
LRS = (0.1, 0.02)

# name -> (scheduler factory(opt), per_epoch)
SCHEDULES = {
    "step": (lambda o: S.StepLR(o, step_size=7, gamma=0.5), False),
    "multistep": (lambda o: S.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.3), False),
    "exponential": (lambda o: S.ExponentialLR(o, gamma=0.93), False),
    "cosine": (lambda o: S.CosineAnnealingLR(o, T_max=25, eta_min=0.001), False),
    "cosine_restarts": (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-4), False),
    "cosine_restarts_mult1": (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=7), False),
    "one_cycle": (lambda o: S.OneCycleLR(o, max_lr=list(LRS), total_steps=STEPS, cycle_momentum=False), False),
    "one_cycle_three": (lambda o: S.OneCycleLR(o, max_lr=list(LRS), total_steps=STEPS, pct_start=0.25,
                                               anneal_strategy="linear", div_factor=10.0,
                                               final_div_factor=100.0, three_phase=True,
                                               cycle_momentum=False), False),
    "warmup_cosine": (lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=10),
                                                   S.CosineAnnealingLR(o, T_max=50)], milestones=[10]), False),
    "warmup_step": (lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.25, total_iters=4),
                                                 S.StepLR(o, step_size=10, gamma=0.5)], milestones=[4]), False),
    "epoch_step": (lambda o: S.StepLR(o, step_size=2, gamma=0.5), True),
    "epoch_warmup_exp": (lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.5, total_iters=3),
                                                      S.ExponentialLR(o, gamma=0.8)], milestones=[3]), True),
    "plateau": (lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=2, threshold=0.01, cooldown=1,
                                              min_lr=0.002), False),
    "plateau_max_abs": (lambda o: S.ReduceLROnPlateau(o, mode="max", factor=0.3, patience=1,
                                                      threshold=0.05, threshold_mode="abs"), False),
}


def plateau_metric(case):
    """A noisy metric that improves, then stalls (several reductions)."""
    g = torch.Generator().manual_seed(5)
    base = torch.linspace(1.0, 0.6, STEPS, dtype=F64) + 0.05 * torch.rand(STEPS, generator=g, dtype=F64)
    base[STEPS // 3:] = base[STEPS // 3] + 0.02 * torch.rand(STEPS - STEPS // 3, generator=g, dtype=F64)
    base = base.to(torch.float32).to(F64)  # the values the C test feeds, exactly
    return -base if case == "plateau_max_abs" else base


def make_schedules():
    o = {}
    for case, (make, per_epoch) in SCHEDULES.items():
        w = nn.Parameter(torch.zeros(3, dtype=F64))
        b = nn.Parameter(torch.zeros(3, dtype=F64))
        opt = O.SGD([{"params": [w], "lr": LRS[0]}, {"params": [b], "lr": LRS[1]}], lr=LRS[0])
        sched = make(opt)
        metric = plateau_metric(case) if case.startswith("plateau") else None
        lrs = []
        for k in range(STEPS):
            lrs.append([float(g["lr"]) for g in opt.param_groups])
            opt.step()  # no gradients: nothing moves, but the schedule sees a real step
            if metric is not None:
                sched.step(float(metric[k]))
            elif not per_epoch or (k + 1) % STEPS_PER_EPOCH == 0:
                sched.step()
        o[f"{case}.lr"] = f32(torch.tensor(lrs, dtype=F64))
        if metric is not None:
            o[f"{case}.metric"] = f32(metric)
    return o


TRAIN_STEPS = 30
SAVE_AT = (1, 10, 30)


def groups(model, default, bias):
    """Group 0: the weights (default options); group 1: the biases (1-D parameters)."""
    ws = [p for n, p in model.named_parameters() if p.ndim > 1]
    bs = [p for n, p in model.named_parameters() if p.ndim == 1]
    return [dict(params=ws, **default), dict(params=bs, **bias)]


# name -> (optimizer factory(model), scheduler factory(opt) or None, clip: (value, norm, type))
TRAIN_CASES = {
    "clip_norm": (lambda m: O.SGD(m.parameters(), lr=0.1, momentum=0.9, foreach=False), None,
                  (0.0, 0.5, 2.0)),
    "clip_norm_inf": (lambda m: O.Adam(m.parameters(), lr=0.01, foreach=False), None, (0.0, 0.05, math.inf)),
    "clip_norm_p1": (lambda m: O.SGD(m.parameters(), lr=0.05, foreach=False), None, (0.0, 1.0, 1.0)),
    "clip_value": (lambda m: O.SGD(m.parameters(), lr=0.1, foreach=False), None, (0.02, 0.0, 2.0)),
    "clip_both": (lambda m: O.Adam(m.parameters(), lr=0.01, foreach=False), None, (0.05, 0.3, 2.0)),
    "groups_adamw": (lambda m: O.AdamW(groups(m, dict(lr=0.01, weight_decay=0.1),
                                              dict(lr=0.02, weight_decay=0.0)), foreach=False), None,
                     (0.0, 0.0, 2.0)),
    "groups_nadam": (lambda m: O.NAdam(groups(m, dict(lr=0.01, momentum_decay=4e-3),
                                              dict(lr=0.005, momentum_decay=1e-2)), foreach=False), None,
                     (0.0, 0.0, 2.0)),
    "groups_sgd_sched_clip": (lambda m: O.SGD(groups(m, dict(lr=0.2, momentum=0.9, weight_decay=1e-3),
                                                     dict(lr=0.05, momentum=0.5)), foreach=False),
                              lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.2, total_iters=5),
                                                           S.CosineAnnealingLR(o, T_max=25, eta_min=0.001)],
                                                       milestones=[5]),
                              (0.0, 1.0, 2.0)),
}


def train(init, xs, ys, case, dtype):
    make_opt, make_sched, (clipv, clipn, ntype) = TRAIN_CASES[case]
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 4)).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init.items()})
    opt = make_opt(model)
    sched = make_sched(opt) if make_sched else None
    loss_fn = nn.CrossEntropyLoss()
    rec = {"loss": [], "grad_norm": []}
    for k in range(TRAIN_STEPS):
        opt.zero_grad()
        loss = loss_fn(model(xs[k].to(dtype)), ys[k])
        loss.backward()
        if clipv > 0:
            nn.utils.clip_grad_value_(model.parameters(), clipv, foreach=True)
        if clipn > 0:
            rec["grad_norm"].append(float(nn.utils.clip_grad_norm_(model.parameters(), clipn, norm_type=ntype,
                                                                    foreach=True)))
        opt.step()
        if sched:
            sched.step()
        rec["loss"].append(float(loss.detach()))
        if k + 1 in SAVE_AT:
            for n, v in model.state_dict().items():
                rec[f"step{k + 1}.{n}"] = v.detach().clone()
    rec["loss"] = torch.tensor(rec["loss"], dtype=F64)
    if rec["grad_norm"]:
        rec["grad_norm"] = torch.tensor(rec["grad_norm"], dtype=F64)
    else:
        del rec["grad_norm"]
    return rec


def make_train():
    init, xs, ys = make_mlp_data(779, TRAIN_STEPS)
    o = {}
    for n, v in init.items():
        o[f"init.{n}"] = f32(v)
    for k in range(TRAIN_STEPS):
        o[f"x.{k}"] = f32(xs[k])
        o[f"y.{k}"] = f32(ys[k])
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).to(F64)
    model.load_state_dict({k: v.to(F64) for k, v in init.items()})
    o["step0.out"] = f32(model(xs[0].to(F64)).detach())
    worst = {}
    for case in TRAIN_CASES:
        ref = train(init, xs, ys, case, F64)
        r32 = train(init, xs, ys, case, torch.float32)
        w = 0.0
        for n, v in ref.items():
            o[f"{case}.{n}"] = f32(v)
            a, b = r32[n].to(F64), v.to(F64)
            w = max(w, float(((a - b).abs() / (1e-4 + 1e-3 * b.abs())).max()))
        worst[case] = w
    return o, worst


# L-BFGS: full-batch (the first 4 batches, 32 samples), closure-style, one .step() per
# Anvil step.  name -> LBFGS options
LBFGS_CASES = {
    "lbfgs": dict(lr=1.0, max_iter=3, history_size=10),
    "lbfgs_wolfe": dict(lr=1.0, max_iter=3, history_size=4, line_search_fn="strong_wolfe"),
}
LBFGS_STEPS = 4
LBFGS_SAVE_AT = (1, 4)


def train_lbfgs(init, x, y, case, dtype):
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 4)).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init.items()})
    opt = O.LBFGS(model.parameters(), **LBFGS_CASES[case])
    loss_fn = nn.CrossEntropyLoss()
    rec = {"loss": []}

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x.to(dtype)), y)
        loss.backward()
        return loss

    for k in range(LBFGS_STEPS):
        rec["loss"].append(float(opt.step(closure)))
        if k + 1 in LBFGS_SAVE_AT:
            for n, v in model.state_dict().items():
                rec[f"step{k + 1}.{n}"] = v.detach().clone()
    rec["loss"] = torch.tensor(rec["loss"], dtype=F64)
    rec["func_evals"] = torch.tensor([float(opt.state[opt._params[0]]["func_evals"])], dtype=F64)
    return rec


def make_lbfgs():
    init, xs, ys = make_mlp_data(779, TRAIN_STEPS)
    x, y = torch.cat(xs[:4]), torch.cat(ys[:4])
    o, worst = {}, {}
    for case in LBFGS_CASES:
        ref = train_lbfgs(init, x, y, case, F64)
        r32 = train_lbfgs(init, x, y, case, torch.float32)
        w = 0.0
        for n, v in ref.items():
            o[f"{case}.{n}"] = f32(v)
            if n != "func_evals":
                a, b = r32[n].to(F64), v.to(F64)
                w = max(w, float(((a - b).abs() / (1e-4 + 1e-3 * b.abs())).max()))
        worst[case] = w
        print(f"{case}: func_evals float64 {int(ref['func_evals'])}, float32 {int(r32['func_evals'])}")
    return o, worst


def main():
    o = make_schedules()
    t, worst = make_train()
    o.update(t)
    t, w2 = make_lbfgs()
    o.update(t)
    worst.update(w2)
    path = os.path.join(HERE, "sched.safetensors")
    save_file(o, path, metadata={"generator": f"tests/golden/make_sched.py, torch {torch.__version__}"})
    print(f"sched.safetensors: {len(o)} tensors, {os.path.getsize(path)} bytes")
    for case, w in worst.items():
        print(f"{case}: float32 error / MLP tolerance {w:.3g}")
    if max(worst.values()) >= 1.0:
        sys.exit("a tolerance of test_parity.c is too tight for float32 arithmetic")


if __name__ == "__main__":
    main()
