#!/usr/bin/env bash
# The whole CPU test run: dependencies, the Release build and its tests, then a second
# build with AddressSanitizer + LeakSanitizer + UBSan (CUDA off) and the same tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# OpenBLAS picks its kernels from the CPU model and falls back to generic SSE3 ones on
# models it does not know (virtual machines often hide theirs): name the kernel family
# from the CPU's features instead (see anvil_blas_coretype_advice in include/anvil.h).
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  flags="$(grep -m1 '^flags' /proc/cpuinfo)"
  case " $flags " in
    *" avx512f "*) export OPENBLAS_CORETYPE=SkylakeX ;;
    *" avx2 "*" fma "* | *" fma "*" avx2 "*) export OPENBLAS_CORETYPE=Haswell ;;
  esac
fi
scripts/build.sh
ctest --test-dir build -L cpu --output-on-failure -j "$(nproc)"

cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANVIL_SANITIZE=ON -DANVIL_CUDA=OFF
cmake --build build-sanitize -j "$(nproc)"
# Every leak is an error: no LeakSanitizer suppressions (OpenBLAS and OpenMP report none).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-sanitize -L cpu --output-on-failure -j "$(nproc)"

echo "test.sh: all CPU tests passed (Release and sanitizers)"
