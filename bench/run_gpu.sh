#!/usr/bin/env bash
# WORKLOADS.md on one GPU: Anvil (resident data and host batches) and every PyTorch mode,
# same GPU, same run; prints a table per workload with ratios (Anvil / best PyTorch).
#   bench/run_gpu.sh [BUILD_DIR (build-gpu)] [STEPS (auto)] [WARMUP (auto)] [MODELS ("mlp cnn resnet18")]
# auto: 200 steps after 50 for mlp and cnn, 20 after 3 for resnet18 (a step there takes
# ~40 ms: 200 steps x 5 repetitions x 6 modes would take minutes).
# Models: mlp (mlp-small), cnn (cnn-fmnist), resnet18 (resnet18-cifar).  Before timing a
# model, PyTorch's network is checked against Anvil's (parameter count, state_dict names,
# shapes, dtypes).  A mode that fails (an error, or a PyTorch process that dies) is a
# "failed" row with its error; the run goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-gpu}"
steps_arg="${2:-auto}"
warmup_arg="${3:-auto}"
models="${4:-mlp cnn resnet18}"
torch_modes_all="eager,compile,reduce-overhead,whole-step-graph"
bench/build_bench.sh "$build"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | sed 's/^/gpu: /'
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%F)"

# A failed row: IMPL MODEL MODE ERROR (one JSON line).
failed_row() {
  python3 -c 'import json, sys; print(json.dumps({"impl": sys.argv[1], "model": sys.argv[2], "mode": sys.argv[3], "error": " ".join(sys.argv[4].split())[-300:]}))' "$@"
}

# Anvil on MODEL in MODE: its JSON line, or a failed row with its error output.
anvil_run() {
  local err rc=0
  err="$(mktemp)"
  "$build/bench_anvil_train" "$1" cuda "$2" "$steps" "$warmup" 2>"$err" || rc=$?
  cat "$err" >&2
  [ "$rc" = 0 ] || failed_row anvil "$1" "$2" "exit status $rc: $(cat "$err")"
  rm -f "$err"
}

for model in $models; do
  steps="$steps_arg" warmup="$warmup_arg"
  [ "$steps" = auto ] && { [ "$model" = resnet18 ] && steps=20 || steps=200; }
  [ "$warmup" = auto ] && { [ "$model" = resnet18 ] && warmup=3 || warmup=50; }
  out="$(mktemp)"
  names="$(mktemp)"
  if ! { "$build/bench_anvil_train" "$model" cpu names >"$names" && python3 bench/torch_train_bench.py "$model" --check "$names"; }; then
    echo "model check $model: FAILED: PyTorch's and Anvil's networks may differ"
  fi
  rm -f "$names"
  anvil_run "$model" resident | tee -a "$out"
  anvil_run "$model" host | tee -a "$out"
  # All PyTorch modes in one process; should the process die, the mode it died in is a
  # failed row and a new process runs the modes after it.
  modes="$torch_modes_all"
  while [ -n "$modes" ]; do
    rc=0
    python3 bench/torch_train_bench.py "$model" "$steps" "$warmup" --modes "$modes" | tee -a "$out" || rc=$?
    [ "$rc" = 0 ] && break
    modes="$(python3 - "$out" "$model" "$modes" "$rc" <<'PY'
import json, sys
out, model, modes, rc = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
seen = {json.loads(l).get("mode") for l in open(out) if l.startswith("{")}
left = [m for m in modes if m not in seen]
if left:
    row = json.dumps({"impl": "pytorch", "model": model, "mode": left[0],
                      "error": f"the PyTorch process died (exit status {rc}) in or just before this mode"})
    open(out, "a").write(row + "\n")
    print(row, file=sys.stderr)
print(",".join(left[1:]))
PY
)"
  done
  python3 - "$out" "$model" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
torch_ok = [r for r in rows if r["impl"] == "pytorch" and "ms_per_step" in r]
best = min(torch_ok, key=lambda r: r["ms_per_step"]) if torch_ok else None
what = {"resnet18": "batch 256, SGD lr 0.05 momentum 0.9"}.get(sys.argv[2], "batch 128, Adam lr 1e-3")
print(f"\n{sys.argv[2]} fp32 ({what}), ms/step (median of 5)")
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
  rm -f "$out"
done
