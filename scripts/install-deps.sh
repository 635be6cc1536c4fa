#!/usr/bin/env bash
# Installs what kiln needs on a fresh Debian 12 / Ubuntu machine: QEMU (from bookworm-backports on
# Debian 12, where qemu-utils may already come from there), mmdebstrap, socat, tmux, ssh client,
# systemd-analyze (the unit's check; systemd need not be PID 1), a Rust toolchain when cargo is
# missing, and cargo-deb (the Debian package). Idempotent: does nothing that is already done.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
for cmd in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mmdebstrap:mmdebstrap \
           socat:socat tmux:tmux ssh-keygen:openssh-client genisoimage:genisoimage \
           sfdisk:fdisk mkfs.ext4:e2fsprogs zstd:zstd cc:build-essential pkg-config:pkg-config \
           curl:curl openssl:openssl python3:python3 \
           systemd-analyze:systemd runuser:util-linux; do
  bin=${cmd%%:*}; pkg=${cmd##*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
# ssh2 builds libssh2 against OpenSSL.
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  . /etc/os-release
  if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    # qemu-utils may come from backports already; qemu-system-x86 must then come from there too.
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "deb http://deb.debian.org/debian bookworm-backports main" |
        $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq -t bookworm-backports "${need[@]}"
  else
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}"
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

# cargo-deb builds the Debian package (tests/tests/system.rs, README "Installing as a system
# service"); about a minute to compile on 2 cores. Pinned: the test packages the dev-profile
# binaries it already has, which later cargo-deb versions say they will refuse.
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if ! cargo deb --version 2>/dev/null | grep -qx 'cargo-deb 3.8.0'; then
  cargo install cargo-deb --version 3.8.0 --locked
fi
