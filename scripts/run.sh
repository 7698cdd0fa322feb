#!/usr/bin/env bash
# From a fresh Debian 12 machine to a trained model: installs the dependencies, builds,
# and trains the default model (mlp) on Fashion-MNIST for one epoch, showing progress
# and the final test accuracy.  Extra arguments go to `anvil train`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh
exec build/anvil train --model mlp --epochs 1 "$@"
