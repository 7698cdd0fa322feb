#!/usr/bin/env python3
"""make_nets20.py — 20 training steps of two convolutional nets in PyTorch, for
tests/test_conv.c (test_nets20): WORKLOADS.md's cnn (Anvil's built-in "cnn") and a small
residual net with BatchNorm (examples/models/resnet_small.json), running statistics
included.

    python3 tests/golden/make_nets20.py     # writes tests/golden/nets20.safetensors

Keys, per net ("cnn", "res"):
 "<net>.init.<name>"   parameters and buffers before training (state_dict names)
 "<net>.x.<k>", "<net>.y.<k>"  batch k = 0..19 (float32 images in [0,1), int32 labels)
 "<net>.eval0"         the output of batch 0 in evaluation mode before training
 "<net>.loss" [20]     the loss of step k+1 (before its update)
 "<net>.step<k>.<name>"  parameters and buffers after step k = 1, 20
Training: SGD(lr 0.05, momentum 0.9), CrossEntropyLoss, float64 reference rounded to
float32 (step 1 with momentum is p - lr * grad: it checks the backward pass).
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import F64, f32  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, BATCH, SAVE_AT = 20, 8, (1, 20)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


class Res(nn.Module):
    """examples/models/resnet_small.json, with its layer names."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        s = torch.relu(self.stem_bn(self.stem(x)))
        y = self.bn2(self.c2(torch.relu(self.bn1(self.c1(s)))))
        y = nn.functional.max_pool2d(torch.relu(s + y), 2)
        return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


def run(make, init, xs, ys, dtype):
    model = make().to(dtype)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in init.items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
    rec = {"loss": []}
    model.eval()
    with torch.no_grad():
        rec["eval0"] = model(xs[0].to(dtype))
    model.train()
    for k in range(STEPS):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xs[k].to(dtype)), ys[k])
        loss.backward()
        opt.step()
        rec["loss"].append(float(loss.detach()))
        if k + 1 in SAVE_AT:
            for n, v in model.state_dict().items():
                rec[f"step{k + 1}.{n}"] = v.detach().clone()
    rec["loss"] = torch.tensor(rec["loss"], dtype=F64)
    return rec


def make(net, factory, shape, classes, seed):
    torch.manual_seed(seed)
    init = {k: v.detach().clone() for k, v in factory().state_dict().items()}
    xs = [torch.rand(BATCH, *shape) for _ in range(STEPS)]
    ys = [torch.randint(0, classes, (BATCH,)) for _ in range(STEPS)]
    o = {}
    for n, v in init.items():
        o[f"{net}.init.{n}"] = f32(v) if v.is_floating_point() else v.to(torch.int64)
    for k in range(STEPS):
        o[f"{net}.x.{k}"] = f32(xs[k])
        o[f"{net}.y.{k}"] = ys[k].to(torch.int32)
    ref = run(factory, init, xs, ys, F64)
    r32 = run(factory, init, xs, ys, torch.float32)
    worst = 0.0
    for n, v in ref.items():
        o[f"{net}.{n}"] = f32(v) if v.is_floating_point() else v.to(torch.int64)
        if v.is_floating_point():
            a, b = r32[n].to(F64), v.to(F64)
            worst = max(worst, float(((a - b).abs() / (1e-4 + 1e-3 * b.abs())).max()))
    print(f"{net}: float32 error / tolerance (atol 1e-4, rtol 1e-3) {worst:.3g}")
    return o


def main():
    o = make("cnn", cnn, (1, 28, 28), 10, 11)
    o.update(make("res", Res, (1, 12, 12), 4, 12))
    path = os.path.join(HERE, "nets20.safetensors")
    save_file(o, path, metadata={"generator": f"tests/golden/make_nets20.py, torch {torch.__version__}"})
    print(f"nets20.safetensors: {len(o)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
