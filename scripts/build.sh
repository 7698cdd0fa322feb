#!/usr/bin/env bash
# Configures and builds Anvil in ./build (Release; the CUDA backend when nvcc is found).
# Extra arguments go to the configure step, e.g. scripts/build.sh -DANVIL_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DANVIL_CUDA=AUTO "$@"
cmake --build build -j "$(nproc)"
