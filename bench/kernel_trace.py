#!/usr/bin/env python3
"""kernel_trace.py TRACE [LAUNCHES] — one training step's kernels as they ran in the graph.

Reads the KTRACE lines of bench/kernel_trace.c, keeps the last LAUNCHES (default 10) graph
launches (kernels with a graph node, grouped by the launch's correlation id) and prints,
per graph node in order of start, the median start and end relative to the launch's first
kernel, the median duration, and the gap to the kernel that ended last before it started
(idle or dependency time on the critical path); then the step's median span and the gap
between consecutive launches."""
import statistics
import subprocess
import sys


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
        return out.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


def short(name):
    name = name.split("(")[0]
    for junk in ("void ", "static "):
        name = name.replace(junk, "")
    return name[:70]


def main():
    path = sys.argv[1]
    keep = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    recs = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("KTRACE "):
                continue
            p = line.rstrip("\n").split(" ", 6)
            start, end, stream, corr, node = (int(x) for x in p[1:6])
            if node:
                recs.append((start, end, stream, corr, node, p[6]))
    if not recs:
        sys.exit("kernel_trace: no graph kernels recorded")
    launches = sorted({r[3] for r in recs})[-keep:]
    by_launch = {c: sorted([r for r in recs if r[3] == c]) for c in launches}
    rows = {}
    spans, gaps = [], []
    prev_end = None
    for c in launches:
        ks = by_launch[c]
        t0 = ks[0][0]
        spans.append(max(k[1] for k in ks) - t0)
        if prev_end is not None:
            gaps.append(t0 - prev_end)
        prev_end = max(k[1] for k in ks)
        for start, end, stream, _, node, name in ks:
            # the latest end among kernels that started before this one: the wait before it
            before = [k[1] for k in ks if k[0] < start]
            wait = start - max(before) if before else 0
            rows.setdefault(node, []).append((start - t0, end - t0, end - start, wait, stream, name))
    names = demangle([v[0][5] for v in rows.values()])
    table = []
    for (node, v), nm in zip(rows.items(), names):
        med = lambda i: statistics.median(x[i] for x in v)
        table.append((med(0), med(1), med(2), med(3), v[0][4], short(nm)))
    table.sort()
    print(f"{'start':>7} {'end':>7} {'dur':>6} {'gap':>6} {'stream':>6}  kernel   (µs, medians of {len(launches)} launches)")
    for s, e, d, w, st, nm in table:
        print(f"{s/1e3:7.2f} {e/1e3:7.2f} {d/1e3:6.2f} {w/1e3:6.2f} {st:6d}  {nm}")
    print(f"step span (first start to last end): {statistics.median(spans)/1e3:.2f} µs; "
          f"between launches (last end to next first start): {statistics.median(gaps)/1e3 if gaps else 0:.2f} µs")


if __name__ == "__main__":
    main()
