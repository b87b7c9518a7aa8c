#!/usr/bin/env bash
# `npm start`: set up if needed, build the package (release) and the emulator, then run the
# emulator serving the Live Stream API, the demo page and the package. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-pkg.sh
echo "[start] building the emulator (release)"
cargo build --release --quiet -p livestream-emulator
listen="${LIVESTREAM_LISTEN:-127.0.0.1:8787}"
echo "[start] demo page: http://${listen}/   (Ctrl-C stops the emulator)"
# exec: the emulator gets Ctrl-C directly and nothing is left behind.
exec target/release/livestream-emulator --listen "$listen" \
  --www www --mount /pkg/=pkg --mount /vendor/uplot/=node_modules/uplot/dist "$@"
