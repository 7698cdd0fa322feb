#!/usr/bin/env bash
# build_bench.sh BUILD_DIR — Anvil (CUDA on) in BUILD_DIR when it is not built there yet,
# then the training-step bench, BUILD_DIR/bench_anvil_train (bench/anvil_train_bench.c).
# Shared by run_gpu.sh, profile_gpu.sh, trace_gpu.sh and ab_gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:?build directory}"
[ -f "$build/libanvil.so" ] || { cmake -S . -B "$build" -DANVIL_CUDA=ON >/dev/null && cmake --build "$build" -j"$(nproc)" >/dev/null; }
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude bench/anvil_train_bench.c \
  -L"$build" -lanvil -Wl,-rpath,"$(pwd)/$build" -lm -o "$build/bench_anvil_train"
