#!/usr/bin/env bash
# pack-gpu-deps.sh — for a GPU machine without apt or network (like the lent device
# machine): downloads the Debian packages Anvil builds against and packs them, unpacked,
# into .deps.tar.xz (git-ignored).  There: tar xJf .deps.tar.xz -C DIR, then
#   ANVIL_DEPS_ROOT=DIR/root scripts/gpu-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download libcjson1 libcjson-dev libcmocka0 libcmocka-dev libopenblas0-openmp \
  libopenblas-openmp-dev libopenblas-dev libgfortran5 >/dev/null)
for f in "$work"/*.deb; do dpkg -x "$f" "$work/root"; done
find "$work/root" -name '*.a' -delete
rm -rf "$work/root/usr/share" "$work/root/usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack"*
tar cJf .deps.tar.xz -C "$work" root
ls -la .deps.tar.xz
