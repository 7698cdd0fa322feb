#!/usr/bin/env python3
"""make_norm.py — PyTorch reference values for tests/test_norm.c (norm.safetensors).

Run through make_golden.py (`python3 tests/golden/make_golden.py --only norm` writes just
this file; a plain run writes it after the others), or directly.  The conventions of
make_golden.py hold (float32 inputs, float64 reference rounded to float32, scalars [1]),
except that num_batches_tracked is stored as int64 with shape [1].

Keys
 Single ops (training mode unless the key says eval), as make_golden.record_op: inputs,
 "<key>.y", "<key>.R", "<key>.d<input>" (gradient of sum(y * R)):
   bn1d        batch_norm x [8,5], weight, bias, eps 1e-5
   bn1d_3d     batch_norm x [4,3,7], weight, bias, eps 1e-5
   bn2d        batch_norm x [4,3,5,6], weight, bias, eps 1e-3
   bn2d_plain  batch_norm x [3,4,2,3], no affine, eps 1e-5
   bn2d_eval   batch_norm x [4,3,5,6] with running_mean/running_var inputs, eval mode
   ln1         layer_norm over [6] of x [4,6], weight, bias, eps 1e-5
   ln2         layer_norm over [3,4] of x [2,5,3,4], weight, bias, eps 1e-5
   ln_plain    layer_norm over [7] of x [3,7], no affine, eps 1e-3
 Trainer run ("train."): nn.Sequential(BatchNorm2d(3), ReLU(), Flatten(), Linear(48,8),
   BatchNorm1d(8, momentum=None), ReLU(), Linear(8,4)), CrossEntropyLoss, SGD(lr=0.1,
   momentum=0.9), 3 steps on batches "train.x.<k>" [6,3,4,4] / "train.y.<k>" int32 [6]:
   "train.init.<name>" (float32 state_dict entries; buffers at torch's init),
   "train.loss" [3], "train.step<k>.<name>" for k = 1, 3 (every state_dict entry, the
   running statistics and num_batches_tracked included), and "train.eval_out": the
   evaluation-mode output on "train.x_eval" [5,3,4,4] after step 3.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402

F64 = torch.float64


def make_norm_ops(o):
    r = mg.randn
    mg.record_op(o, "bn1d", lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
                 dict(x=r(8, 5) * 2 + 1, w=r(5), b=r(5)))
    mg.record_op(o, "bn1d_3d", lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
                 dict(x=r(4, 3, 7), w=r(3), b=r(3)))
    mg.record_op(o, "bn2d", lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-3),
                 dict(x=r(4, 3, 5, 6) * 3 - 1, w=r(3), b=r(3)))
    mg.record_op(o, "bn2d_plain", lambda x: F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5),
                 dict(x=r(3, 4, 2, 3)))
    mg.record_op(o, "bn2d_eval", lambda x, rm, rv, w, b: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5),
                 dict(x=r(4, 3, 5, 6), rm=r(3) * 0.3, rv=0.5 + torch.rand(3), w=r(3), b=r(3)),
                 grad_of=("x", "w", "b"))
    mg.record_op(o, "ln1", lambda x, w, b: F.layer_norm(x, (6,), w, b, 1e-5),
                 dict(x=r(4, 6) * 2 + 0.5, w=r(6), b=r(6)))
    mg.record_op(o, "ln2", lambda x, w, b: F.layer_norm(x, (3, 4), w, b, 1e-5),
                 dict(x=r(2, 5, 3, 4), w=r(3, 4), b=r(3, 4)))
    mg.record_op(o, "ln_plain", lambda x: F.layer_norm(x, (7,), None, None, 1e-3), dict(x=r(3, 7)))


def make_model():
    return nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 8),
                         nn.BatchNorm1d(8, momentum=None), nn.ReLU(), nn.Linear(8, 4))


def state(model, out, prefix):
    for k, v in model.state_dict().items():
        if v.dtype == torch.int64:
            out[f"{prefix}.{k}"] = v.detach().reshape(1).clone()
        else:
            out[f"{prefix}.{k}"] = mg.f32(v)


def run_train(init, xs, ys, x_eval, dtype):
    model = make_model().to(dtype)
    model.load_state_dict({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in init.items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    res, losses = {}, []
    model.train()
    for k, (x, y) in enumerate(zip(xs, ys), 1):
        opt.zero_grad()
        loss = F.cross_entropy(model(x.to(dtype)), y.to(torch.int64))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if k in (1, 3):
            state(model, res, f"train.step{k}")
    model.eval()
    with torch.no_grad():
        res["train.eval_out"] = mg.f32(model(x_eval.to(dtype)))
    res["train.loss"] = torch.tensor(losses, dtype=torch.float32)
    return res


def make_norm_train(o):
    torch.manual_seed(4321)
    model = make_model()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state(model, o, "train.init")
    xs = [mg.randn(6, 3, 4, 4) * 2 + 0.5 for _ in range(3)]
    ys = [torch.randint(0, 4, (6,)) for _ in range(3)]
    x_eval = mg.randn(5, 3, 4, 4)
    for k in range(3):
        o[f"train.x.{k}"] = xs[k]
        o[f"train.y.{k}"] = ys[k].to(torch.int32)
    o["train.x_eval"] = x_eval
    ref = run_train(init, xs, ys, x_eval, F64)
    o.update(ref)
    # Yardstick: float32 PyTorch against the float64 reference, / the C test's tolerance.
    got = run_train(init, xs, ys, x_eval, torch.float32)
    worst = 0.0
    for k, b in ref.items():
        a = got[k]
        if a.is_floating_point():
            worst = max(worst, float(((a.double() - b.double()).abs() / (1e-5 + 1e-4 * b.double().abs())).max()))
        elif not torch.equal(a, b):
            sys.exit(f"{k}: float32 run differs")
    return worst


def main_norm():
    torch.set_num_threads(1)
    torch.manual_seed(2468)
    o = {}
    mg.WORST_OP[0] = 0.0
    make_norm_ops(o)
    w_ops = mg.WORST_OP[0]
    w_train = make_norm_train(o)
    mg.write_files({"norm.safetensors": o})
    print(f"norm: float32-torch vs float64 reference, worst error / tolerance: ops {w_ops:.3g}, "
          f"training {w_train:.3g} (must be < 1)")
    if max(w_ops, w_train) >= 1.0:
        sys.exit("a tolerance of test_norm.c is too tight for float32 arithmetic")


if __name__ == "__main__":
    main_norm()
