#!/usr/bin/env bash
# mlp-small on the CPU: Anvil vs PyTorch eager, same machine, same run.
#   bench/run_cpu.sh [STEPS_PER_REP (100)] [WARMUP_STEPS (20)]
# Builds Anvil first if build/libanvil.so is missing (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-100}"
warmup="${2:-20}"

[ -f build/libanvil.so ] || scripts/build.sh
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Iinclude bench/cpu_mlp_small.c \
  -Lbuild -lanvil -Wl,-rpath,"$(pwd)/build" -lm -o build/bench_cpu_mlp_small

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
anvil_json="$(build/bench_cpu_mlp_small "$steps" "$warmup")"
echo "$anvil_json"
torch_json="$(python3 bench/cpu_mlp_small.py "$steps" "$warmup")"
echo "$torch_json"
python3 - "$anvil_json" "$torch_json" <<'PY'
import json, sys
a, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"mlp-small cpu: anvil {a['ms_per_step']:.3f} ms/step, pytorch eager {t['ms_per_step']:.3f} ms/step, "
      f"ratio anvil/pytorch = {a['ms_per_step'] / t['ms_per_step']:.2f}")
PY
