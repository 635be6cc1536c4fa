#!/usr/bin/env bash
# Sets kiln up on a fresh Debian 12 / Ubuntu machine and runs the main job: builds kiln, starts
# kilnd in the background on a private socket, stores the example template and shows it.
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

echo "==> storing examples/web-base.toml"
kiln template validate -f examples/web-base.toml
if kiln template show web-base >/dev/null 2>&1; then
  kiln template delete web-base --yes
fi
kiln template create -f examples/web-base.toml
kiln template list
kiln template show web-base

echo
echo "kilnd keeps running; talk to it with: export KILN_SOCKET=$KILN_SOCKET; kiln template list"
