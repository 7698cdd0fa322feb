#!/usr/bin/env bash
# trace_gpu.sh — the kernels of one training step as they ran inside the CUDA graph
# (CUPTI activity records through bench/kernel_trace.c; not serialized like ncu).
#   bench/trace_gpu.sh [BUILD_DIR (build-gpu)] [MODEL (mlp)] [MODE (resident)] [STEPS (30)]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-gpu}"
model="${2:-mlp}"
mode="${3:-resident}"
steps="${4:-30}"
nvcc_path="$(command -v nvcc || true)"
cuda="${CUDA_HOME:-$([ -n "$nvcc_path" ] && dirname "$(dirname "$nvcc_path")" || echo /usr/local/cuda)}"
cupti_inc="$(dirname "$(find -L "$cuda" -name cupti.h -print -quit 2>/dev/null || true)")"
cupti_so="$(find -L "$cuda" /usr/lib/x86_64-linux-gnu -name "libcupti.so" -print -quit 2>/dev/null || true)"
[ -d "$cupti_inc" ] && [ -n "$cupti_so" ] || { echo "trace_gpu: CUPTI not found under $cuda" >&2; exit 1; }
cupti_lib="$(dirname "$cupti_so")"
bench/build_bench.sh "$build"
cc -O2 -std=c11 -shared -fPIC -Wall -Wextra -Werror -I"$cuda/include" -I"$cupti_inc" bench/kernel_trace.c \
  "$cupti_so" -Wl,-rpath,"$cupti_lib" -o "$build/libkernel_trace.so"
tmp="$(mktemp)"
CUDA_INJECTION64_PATH="$(pwd)/$build/libkernel_trace.so" "$build/bench_anvil_train" "$model" cuda "$mode" "$steps" 5 \
  2>"$tmp" | grep -o '"ms_per_step":[0-9.]*' || true
python3 bench/kernel_trace.py "$tmp" 10
rm -f "$tmp"
