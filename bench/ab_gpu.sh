#!/usr/bin/env bash
# ab_gpu.sh — A/B of environment switches on Anvil's training step, interleaved in one run
# (so that the GPU's state drifts equally over every variant): ms per step of each variant,
# model and data mode, ROUNDS times.
#   bench/ab_gpu.sh [BUILD_DIR (build-gpu)] "VARIANTS" [MODELS (mlp)] [MODES (resident)]
# VARIANTS: ';'-separated environment assignments, e.g. "ANVIL_PDL=1;ANVIL_PDL=0" or
# "BASE=1;ANVIL_LANES=old ANVIL_PDL=0" (a dummy name for the default).  A variant's
# BUILD=dir runs that build instead (A/B of compile-time switches: configure a second build
# folder with other CMAKE_CUDA_FLAGS).  ROUNDS (3), STEPS (200) and WARMUP (50) from the
# environment.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-gpu}"
variants="${2:?variants, e.g. \"ANVIL_PDL=1;ANVIL_PDL=0\"}"
models="${3:-mlp}"
modes="${4:-resident}"
IFS=';' read -ra vs <<<"$variants"
build_of() { # the build folder of variant $1
  local b="$build" a
  for a in $1; do case "$a" in BUILD=*) b="${a#BUILD=}" ;; esac; done
  printf '%s' "$b"
}
for v in "${vs[@]}"; do bench/build_bench.sh "$(build_of "$v")"; done
for r in $(seq "${ROUNDS:-3}"); do
  for v in "${vs[@]}"; do
    for model in $models; do
      for mode in $modes; do
        # shellcheck disable=SC2086 # v is a list of assignments
        ms="$(env $v "$(build_of "$v")/bench_anvil_train" "$model" cuda "$mode" "${STEPS:-200}" "${WARMUP:-50}" |
          grep -o '"ms_per_step":[0-9.]*' | cut -d: -f2)"
        printf 'round %s  %-40s %-9s %-9s %s ms\n' "$r" "$v" "$model" "$mode" "$ms"
      done
    done
  done
done
