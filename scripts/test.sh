#!/usr/bin/env bash
# Runs kiln's whole test suite on this machine: installs what is missing, builds the binaries the
# end-to-end tests drive, prepares (or reuses) a bootstrapped Debian 12 base image for the VM tests,
# then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

cargo build --workspace --bins

# One base image shared by every VM test, cached between runs when the machine keeps ~/.cache.
cache="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
base="$cache/debian-12.qcow2"
if [ -z "${KILN_TEST_BASE_IMAGE:-}" ]; then
  if [ ! -s "$base" ]; then
    mkdir -p "$cache"
    echo "==> bootstrapping the Debian 12 base image for the VM tests (a few minutes, once)"
    bash daemon/assets/bootstrap-debian.sh bookworm "$base.partial"
    mv "$base.partial" "$base"
  fi
  export KILN_TEST_BASE_IMAGE="$base"
fi

# VM tests boot real QEMU guests; two at a time is what two cores take.
cargo test --workspace --no-fail-fast -- --test-threads="${KILN_TEST_THREADS:-2}"
