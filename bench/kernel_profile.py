#!/usr/bin/env python3
"""kernel_profile.py — where a training step's GPU time goes, per kernel.

  anvil A.csv B.csv STEPS   ncu CSV exports (--metrics gpu__time_duration.sum) of two
                            runs that differ only by STEPS training steps; the difference
                            per kernel name, divided by STEPS, is the per-step time without
                            setup kernels.
  anvil-seq B.csv N         the last N kernel launches of a run, in launch order (one
                            step's kernels when N is the per-step count): where the
                            step's time goes along its sequence.
  torch MODEL [STEPS]       PyTorch eager (TF32 off, as bench/torch_train_bench.py) under
                            torch.profiler: per-step CUDA time per kernel.
Prints the kernels by time per step, with count per step and share of the total."""
import collections
import csv
import sys


def ncu_times(path):
    t = collections.Counter()
    c = collections.Counter()
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        v = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit, 1e-3)
        name = row["Kernel Name"]
        t[name] += v * scale
        c[name] += 1
    return t, c


def show(rows, title):
    total = sum(r[1] for r in rows)
    print(f"== {title}: {total:.1f} us of kernel time per step, {sum(r[2] for r in rows):.0f} kernels")
    for name, us, n in sorted(rows, key=lambda r: -r[1])[:40]:
        print(f"{us:10.1f} us {100 * us / total:5.1f}% {n:6.1f}x  {name[:150]}")


def ncu_sequence(path, n):
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    rows = [r for r in csv.DictReader(lines) if r.get("Metric Name") == "gpu__time_duration.sum"]
    rows.sort(key=lambda r: int(r["ID"]))
    print(f"== last {n} kernels of {path}, in launch order")
    for r in rows[-n:]:
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(r.get("Metric Unit", "nsecond"), 1e-3)
        print(f"{float(r['Metric Value'].replace(',', '')) * scale:8.1f} us  {r['Kernel Name'][:110]}")


def main():
    if sys.argv[1] == "anvil-seq":
        ncu_sequence(sys.argv[2], int(sys.argv[3]))
        return
    if sys.argv[1] == "anvil":
        (ta, ca), (tb, cb), steps = ncu_times(sys.argv[2]), ncu_times(sys.argv[3]), int(sys.argv[4])
        rows = [(k, (tb[k] - ta.get(k, 0)) / steps, (cb[k] - ca.get(k, 0)) / steps) for k in tb]
        show([r for r in rows if r[2] > 0], "anvil " + sys.argv[2])
        return
    import torch
    sys.argv = [sys.argv[0], sys.argv[2], "1", "1", "--modes", "eager"]
    steps = 10
    import runpy
    g = runpy.run_path(__file__.replace("kernel_profile.py", "torch_train_bench.py"), run_name="kp")
    step = g["plain"]()
    for i in range(5):
        step(i)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
    rows = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            r = rows[e.name]
            r[0] += e.device_time / steps if hasattr(e, "device_time") else e.cuda_time / steps
            r[1] += 1 / steps
    show([(k, v[0], v[1]) for k, v in rows.items()], "pytorch eager " + g["MODEL"])


main()
