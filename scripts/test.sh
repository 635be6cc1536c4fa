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

# One base image per Debian release shared by every VM test, cached between runs when the
# machine keeps ~/.cache: debian-12 for most tests, debian-13 for tests/tests/oses.rs.
cache="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
# base_image VAR OS SUITE: exports VAR as the cached image of OS, bootstrapping it when missing.
base_image() {
  local var=$1 os=$2 suite=$3 base="$cache/$2.qcow2" started
  if [ -z "${!var:-}" ]; then
    if [ ! -s "$base" ]; then
      mkdir -p "$cache"
      echo "==> bootstrapping the $os base image for the VM tests (about a minute, once)"
      started=$(date +%s)
      bash daemon/assets/bootstrap-debian.sh "$suite" "$base.partial"
      mv "$base.partial" "$base"
      echo "==> $os bootstrapped in $(( $(date +%s) - started )) s"
    fi
    export "$var=$base"
  fi
}
base_image KILN_TEST_BASE_IMAGE debian-12 bookworm
base_image KILN_TEST_BASE_IMAGE_13 debian-13 trixie

# VM tests boot real QEMU guests; two at a time is what two cores take.
cargo test --workspace --no-fail-fast -- --test-threads="${KILN_TEST_THREADS:-2}"
