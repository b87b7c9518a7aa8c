#!/usr/bin/env bash
# `npm test`: every test suite of the project, in order of cost. Stops at the first failure.
#  1. cargo tests: the core (unit, property, storm scenario, schema checks), the emulator and
#     the relay (integration), the fuzz crate; a 5-second smoke run of each fuzz target
#  2. the release package (wasm-pack + wasm-opt) and the emulator binary
#  3. wasm tests of the shell in Node and in headless Chromium, against the emulator
#  4. Node tests of the packed npm package (Node import, Vite build, <script type=module>)
#  5. the demo page in a real browser (playwright-core + Debian chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "cargo test: core and emulator"
cargo test --workspace --quiet
step "fuzz smoke: every target for 5 s (npm run fuzz -- --seconds N for longer runs)"
bash scripts/fuzz.sh --seconds 5
step "the KA-16598 storm schedule"
cargo test --quiet --test storm -- --nocapture 2>&1 | sed -n '/KA-16598 storm/,/connected/p'

step "build: npm package (release) and emulator"
bash scripts/build-pkg.sh
cargo build --release --quiet -p livestream-emulator
export LIVESTREAM_EMULATOR_BIN="$PWD/target/release/livestream-emulator"

# One emulator for the wasm tests; its URL is compiled into them.
emu_log=$(mktemp)
"$LIVESTREAM_EMULATOR_BIN" --listen 127.0.0.1:0 --quiet --rate 50 --seed 1 \
  --slot-hold-secs 0.3 --mount /pkg/=pkg --admin-cors-origin 'http://127.0.0.1:*' >"$emu_log" 2>&1 &
emu_pid=$!
trap 'kill $emu_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q 'listening on' "$emu_log" && break
  sleep 0.1
done
LIVESTREAM_TEST_SERVER=$(sed -n 's/^livestream-emulator listening on //p' "$emu_log" | head -n1)
[ -n "$LIVESTREAM_TEST_SERVER" ] || { cat "$emu_log"; echo "emulator did not start"; exit 1; }
export LIVESTREAM_TEST_SERVER
echo "emulator for the wasm tests: $LIVESTREAM_TEST_SERVER"

# The runner needs to be told which environment to use: without WASM_BINDGEN_USE_BROWSER it
# picks Node for the Chrome run, skips every test and still exits 0.
step "wasm tests in Node"
WASM_BINDGEN_USE_NODE_EXPERIMENTAL=1 wasm-pack test --node --mode no-install -- --test web
step "wasm tests in headless Chromium"
WASM_BINDGEN_USE_BROWSER=1 wasm-pack test --headless --chrome --mode no-install -- --test web
kill $emu_pid 2>/dev/null || true

step "Node tests of the packed package"
node --test tests/node/
step "demo page in a real browser"
node --test tests/e2e/
step "all suites passed"
