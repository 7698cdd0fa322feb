#!/usr/bin/env python3
"""CPU milliseconds per training step of mlp-small in PyTorch eager mode (WORKLOADS.md):
784-512-512-10 ReLU, batch 128, cross-entropy, Adam lr 1e-3 (default foreach setting),
8 pre-made random batches rotated; warm-up, then the median of 5 repetitions of N steps.

usage: cpu_mlp_small.py [STEPS_PER_REP (100)] [WARMUP_STEPS (20)]   -> one JSON line
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

BATCH, IN, HIDDEN, CLASSES, N_BATCHES, REPS = 128, 784, 512, 10, 8, 5


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    warmup = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    model = torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs = [torch.rand(BATCH, IN) for _ in range(N_BATCHES)]
    ys = [torch.randint(0, CLASSES, (BATCH,)) for _ in range(N_BATCHES)]

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xs[i % N_BATCHES]), ys[i % N_BATCHES])
        loss.backward()
        opt.step()
        return loss

    for i in range(warmup):
        loss = step(i)
    ms = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        for i in range(steps):
            loss = step(i)
        ms.append((time.perf_counter() - t0) * 1e3 / steps)
    print(json.dumps({
        "impl": "pytorch-eager", "workload": "mlp-small", "device": "cpu",
        "ms_per_step": round(statistics.median(ms), 4), "reps_ms": [round(m, 4) for m in ms],
        "steps_per_rep": steps, "warmup": warmup, "final_loss": round(loss.item(), 4),
        "threads": threads, "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
