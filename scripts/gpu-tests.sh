#!/usr/bin/env bash
# gpu-tests.sh — on a machine with an NVIDIA GPU (compute capability >= 9.0): configure
# and build Anvil with the CUDA backend, run the GPU tests (CTest label "gpu"), then run
# every GPU test program again under compute-sanitizer's memcheck and racecheck tools.
# Exits non-zero if the build, a test or a sanitizer finds a problem; prints a summary.
#
#   scripts/gpu-tests.sh                 # build dir: build-gpu (override: BUILD_DIR=...)
#   ANVIL_DATA_DIR=/data/fashion-mnist scripts/gpu-tests.sh
#
# Environment:
#   BUILD_DIR          build folder (default: <repo>/build-gpu)
#   BUILD_TYPE         CMake build type (default: Release)
#   JOBS               parallel build jobs (default: nproc)
#   ANVIL_DATA_DIR     Fashion-MNIST folder for test_gpu_train (default: the library's
#                      /usr/share/datasets/fashion-mnist); the accuracy test skips if absent
#   SANITIZE=0         skip the compute-sanitizer runs
#   SANITIZER_TIMEOUT  seconds per sanitizer run (default: 3600)
#   LEAK_CHECK=1       add --leak-check full to memcheck
#   ANVIL_DEPS_ROOT    a root of unpacked Debian packages (scripts/pack-gpu-deps.sh) for a
#                      machine without apt
# ANVIL_GPU_TEST_FILTER=<glob> runs only the matching tests of test_gpu_ops (e.g. one test
# under racecheck: build-gpu/tests/test_gpu_ops with compute-sanitizer --tool racecheck).
# Under the sanitizers ANVIL_GPU_TEST_QUICK=1 is set, which skips the one-epoch
# Fashion-MNIST training (far too slow instrumented); everything else runs.
set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build-gpu}"
BUILD_TYPE="${BUILD_TYPE:-Release}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 4)}"
SANITIZE="${SANITIZE:-1}"
SANITIZER_TIMEOUT="${SANITIZER_TIMEOUT:-3600}"
[ -n "${ANVIL_DATA_DIR:-}" ] && export ANVIL_DATA_DIR

# The CUDA toolkit: nvcc and compute-sanitizer, wherever they are.
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/cuda/bin; do
    if [ -x "$d/nvcc" ]; then
        case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
        break
    fi
done
for d in /usr/local/cuda/compute-sanitizer /usr/local/cuda-*/compute-sanitizer; do
    if [ -x "$d/compute-sanitizer" ] && ! command -v compute-sanitizer >/dev/null 2>&1; then
        PATH="$PATH:$d"
    fi
done
export PATH

declare -a SUMMARY=()
STATUS=0
note() { SUMMARY+=("$1"); printf '\n== %s\n' "$1"; }
fail() { SUMMARY+=("FAIL: $1"); STATUS=1; printf '\n== FAIL: %s\n' "$1"; }

print_summary() {
    printf '\n================ gpu-tests summary ================\n'
    for line in ${SUMMARY[@]+"${SUMMARY[@]}"}; do printf '  %s\n' "$line"; done
    if [ "$STATUS" -eq 0 ]; then printf '  RESULT: all passed\n'; else printf '  RESULT: FAILED\n'; fi
    printf '===================================================\n'
}

echo "== machine"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || true
else
    echo "nvidia-smi not found"
fi
command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -n 2
# cuDNN / NCCL in the system library folders (CMake looks there too)
ldconfig -p 2>/dev/null | grep -E 'libcudnn\.so|libnccl\.so' | head -n 4 || true

# ---- configure + build
CUDNN_HINT=()
for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/lib64; do
    if ls "$d"/libcudnn.so* >/dev/null 2>&1; then
        CUDNN_HINT=(-DCMAKE_LIBRARY_PATH="$d")
        break
    fi
done
echo "== configure ($BUILD_DIR)"
# Dependencies unpacked from Debian packages (scripts/pack-gpu-deps.sh) on machines without apt
DEPS_HINT=()
if [ -n "${ANVIL_DEPS_ROOT:-}" ]; then
    DEPS_HINT=(-DANVIL_DEPS_ROOT="$ANVIL_DEPS_ROOT")
    export LD_LIBRARY_PATH="$ANVIL_DEPS_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if ! cmake -S "$REPO" -B "$BUILD_DIR" -DANVIL_CUDA=ON -DCMAKE_BUILD_TYPE="$BUILD_TYPE" ${CUDNN_HINT[@]+"${CUDNN_HINT[@]}"} ${DEPS_HINT[@]+"${DEPS_HINT[@]}"}; then
    fail "cmake configure"
    print_summary
    exit 1
fi
grep -E '^CUDNN_LIB:' "$BUILD_DIR/CMakeCache.txt" || true
echo "== build (-j$JOBS)"
if ! cmake --build "$BUILD_DIR" -j "$JOBS"; then
    fail "build"
    print_summary
    exit 1
fi
note "build: ok ($BUILD_TYPE, CUDA ON)"

# ---- the GPU tests
echo "== ctest -L gpu"
CTEST_LOG="$BUILD_DIR/ctest-gpu.log"
if (cd "$BUILD_DIR" && ctest -L gpu --output-on-failure -V) 2>&1 | tee "$CTEST_LOG"; then
    note "ctest -L gpu: passed"
else
    fail "ctest -L gpu (log: $CTEST_LOG)"
fi
# Tests skip themselves without a usable GPU; on the machine this script is for, that
# is a failure, not a pass.
if grep -q 'no usable CUDA GPU' "$CTEST_LOG"; then
    fail "the GPU tests skipped: $(grep -m1 -o 'no usable CUDA GPU.*' "$CTEST_LOG")"
fi
ACC_LINE="$(grep -Eo 'fashion-mnist [a-z]+:.*' "$CTEST_LOG" | sort -u | tr '\n' ' ' || true)"
[ -n "$ACC_LINE" ] && note "$ACC_LINE"
if grep -q 'no Fashion-MNIST' "$CTEST_LOG"; then
    note "fashion-mnist: data absent, accuracy test skipped (set ANVIL_DATA_DIR)"
fi

# ---- compute-sanitizer
mapfile -t GPU_TESTS < <(find "$BUILD_DIR" -type f -name 'test_gpu_*' -perm -u+x ! -name '*.o' | sort)
if [ "${#GPU_TESTS[@]}" -eq 0 ]; then
    fail "no test_gpu_* programs found under $BUILD_DIR"
elif [ "$SANITIZE" = "0" ]; then
    note "compute-sanitizer: skipped (SANITIZE=0)"
elif ! command -v compute-sanitizer >/dev/null 2>&1; then
    fail "compute-sanitizer not found (install the CUDA toolkit's sanitizer, or SANITIZE=0)"
else
    MEMCHECK_OPTS=(--tool memcheck)
    [ "${LEAK_CHECK:-0}" = "1" ] && MEMCHECK_OPTS+=(--leak-check full)
    for tool in memcheck racecheck; do
        if [ "$tool" = memcheck ]; then opts=("${MEMCHECK_OPTS[@]}"); else opts=(--tool racecheck); fi
        for t in "${GPU_TESTS[@]}"; do
            name="$(basename "$t")"
            log="$BUILD_DIR/sanitizer-$tool-$name.log"
            echo "== compute-sanitizer $tool: $name (log: $log)"
            ANVIL_GPU_TEST_QUICK=1 timeout "$SANITIZER_TIMEOUT" \
                compute-sanitizer "${opts[@]}" --error-exitcode 86 --print-limit 50 "$t" >"$log" 2>&1
            rc=$?
            tail -n 25 "$log"
            errors="$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$log" | tail -n 1 || true)"
            hazards="$(grep -Eo 'RACECHECK SUMMARY: [0-9]+ hazard' "$log" | tail -n 1 || true)"
            if [ "$rc" -eq 0 ]; then
                note "$tool $name: clean ${errors:+($errors${hazards:+, $hazards})}"
            elif [ "$rc" -eq 86 ]; then
                fail "$tool $name: sanitizer errors ${errors:+($errors${hazards:+, $hazards})}; see $log"
            elif [ "$rc" -eq 124 ]; then
                fail "$tool $name: timed out after ${SANITIZER_TIMEOUT}s; see $log"
            else
                fail "$tool $name: exit status $rc (a test failed under the sanitizer); see $log"
            fi
        done
    done
fi

print_summary
exit "$STATUS"
