#!/usr/bin/env bash
# Anvil's side of bench/run_gpu.sh alone (no PyTorch): resident and host-batch ms/step for
# each model, for quick before/after checks inside a device call.  Ratios need the
# PyTorch modes of the same run: use bench/run_gpu.sh for anything recorded.
#   bench/anvil_only.sh [BUILD_DIR (build-gpu)] [MODELS ("mlp cnn resnet18")]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-gpu}"
models="${2:-mlp cnn resnet18}"
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude bench/anvil_train_bench.c \
  -L"$build" -lanvil -Wl,-rpath,"$(pwd)/$build" -lm -o "$build/bench_anvil_train"
for model in $models; do
  if [ "$model" = resnet18 ]; then steps=20 warmup=3; else steps=200 warmup=50; fi
  for mode in resident host; do
    "$build/bench_anvil_train" "$model" cuda "$mode" "$steps" "$warmup"
  done
done
