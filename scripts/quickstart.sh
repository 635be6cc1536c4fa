#!/usr/bin/env bash
# Sets kiln up on a fresh Debian 12 / Ubuntu machine and runs the main job: builds kiln, starts
# kilnd in the background on a private socket, bootstraps the Debian 12 base image, stores the
# example template, builds it (a real VM: minutes under TCG, much faster with KVM) and shows the
# result.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --bins
export PATH="$PWD/target/release:$PATH"

state="${KILN_QUICKSTART_DIR:-$HOME/.local/share/kiln-quickstart}"
mkdir -p "$state" && chmod 700 "$state"
export KILN_SOCKET="$state/run/kiln.sock"
if ! kiln daemon status >/dev/null 2>&1; then
  echo "==> starting kilnd (log: $state/kilnd.log)"
  nohup kilnd --socket "$KILN_SOCKET" --data-dir "$state/data" >"$state/kilnd.log" 2>&1 &
  for _ in $(seq 50); do kiln daemon status >/dev/null 2>&1 && break; sleep 0.1; done
fi
kiln daemon status

if ! kiln image show debian-12 >/dev/null 2>&1; then
  echo "==> bootstrapping the public base image debian-12 (mmdebstrap, then one boot to save a ready VM for fast builds; a few minutes, needs root)"
  kiln image bootstrap debian-12
fi

echo "==> storing examples/web-base.toml"
kiln template validate -f examples/web-base.toml
if kiln template show web-base >/dev/null 2>&1; then
  kiln template delete web-base --yes
fi
kiln template create -f examples/web-base.toml
kiln template list

echo "==> building web-base (follow the log; kiln build show prints the result)"
id=$(kiln build start web-base --image-name web-base-quickstart --json |
  grep -m1 -o '"id": *[0-9]*' | grep -o '[0-9]*$')
kiln build logs -f "$id"
kiln build wait "$id"
kiln build show "$id"
kiln image list

echo
echo "kilnd keeps running; talk to it with: export KILN_SOCKET=$KILN_SOCKET; kiln template list"
