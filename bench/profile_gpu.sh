#!/usr/bin/env bash
# profile_gpu.sh — per-kernel GPU time of one training step, Anvil (ncu, resident data)
# next to PyTorch eager (torch.profiler), for the bench models.
#   bench/profile_gpu.sh [BUILD_DIR (build-gpu)] [MODELS ("mlp cnn resnet18")]
# Anvil's kernels are timed by Nsight Compute (serialized, clocks left alone) in two runs
# that differ by 5 steps; the difference removes the setup kernels.  SEQ=N also prints the
# last N kernels in launch order; NO_TORCH=1 skips PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-gpu}"
models="${2:-mlp cnn resnet18}"
ncu="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)"
[ -n "$ncu" ] || { echo "profile_gpu: ncu not found" >&2; exit 1; }
bench/build_bench.sh "$build"
tmp="$(mktemp -d)"
for model in $models; do
  for s in 1 2; do
    "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
      "$build/bench_anvil_train" "$model" cuda resident "$s" 1 >"$tmp/$model-$s.csv" 2>"$tmp/$model-$s.err" ||
      { tail -5 "$tmp/$model-$s.err"; continue 2; }
  done
  python3 bench/kernel_profile.py anvil "$tmp/$model-1.csv" "$tmp/$model-2.csv" 5
  if [ -n "${SEQ:-}" ]; then # SEQ=N: also the last N launches in order (one step's sequence)
    python3 bench/kernel_profile.py anvil-seq "$tmp/$model-2.csv" "$SEQ"
  fi
  [ -n "${NO_TORCH:-}" ] || python3 bench/kernel_profile.py torch "$model" || echo "torch profile of $model failed"
done
rm -rf "$tmp"
