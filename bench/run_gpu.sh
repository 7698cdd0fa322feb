#!/usr/bin/env bash
# WORKLOADS.md on one GPU: Anvil (resident data and host batches) and every PyTorch mode,
# same GPU, same run; prints a table per workload with ratios (Anvil / best PyTorch).
#   bench/run_gpu.sh [BUILD_DIR (build-gpu)] [STEPS (200)] [WARMUP (50)] [MODELS ("mlp cnn")]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-gpu}"
steps="${2:-200}"
warmup="${3:-50}"
models="${4:-mlp cnn}"
[ -f "$build/libanvil.so" ] || { cmake -S . -B "$build" -DANVIL_CUDA=ON >/dev/null && cmake --build "$build" -j"$(nproc)" >/dev/null; }
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude bench/anvil_train_bench.c \
  -L"$build" -lanvil -Wl,-rpath,"$(pwd)/$build" -lm -o "$build/bench_anvil_train"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | sed 's/^/gpu: /'
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%F)"
for model in $models; do
  out="$(mktemp)"
  "$build/bench_anvil_train" "$model" cuda resident "$steps" "$warmup" | tee -a "$out"
  "$build/bench_anvil_train" "$model" cuda host "$steps" "$warmup" | tee -a "$out"
  python3 bench/torch_train_bench.py "$model" "$steps" "$warmup" | tee -a "$out"
  python3 - "$out" "$model" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
torch_ok = [r for r in rows if r["impl"] == "pytorch" and "ms_per_step" in r]
best = min(torch_ok, key=lambda r: r["ms_per_step"]) if torch_ok else None
print(f"\n{sys.argv[2]} fp32, ms/step (median of 5)")
print(f"{'impl':8} {'mode':18} {'ms/step':>9} {'vs best torch':>14}")
for r in rows:
    if "ms_per_step" not in r:
        print(f"{r['impl']:8} {r['mode']:18} {'failed':>9}  {r.get('error', '')}")
        continue
    ratio = f"{r['ms_per_step'] / best['ms_per_step']:.3f}" if best else "-"
    print(f"{r['impl']:8} {r['mode']:18} {r['ms_per_step']:9.4f} {ratio:>14}")
if best:
    print(f"best PyTorch mode: {best['mode']} {best['ms_per_step']:.4f} ms")
PY
done
