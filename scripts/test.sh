#!/usr/bin/env bash
# `npm test`: every test suite of the project, in order of cost. Stops at the first failure.
#  1. cargo tests: the core (unit, property, storm scenario) and the emulator (integration)
#  2. the release package (wasm-pack + wasm-opt) and the emulator binary
#  3. behaviour tests of the package (tests/web) in Node and in headless Chromium, against the emulator
#  4. Node tests of the packed npm package (Node import, Vite build, <script type=module>)
#  5. the demo page in a real browser (playwright-core + Debian chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "cargo test: core and emulator"
cargo test --workspace --quiet
step "the KA-16598 storm schedule"
cargo test --quiet --test storm -- --nocapture 2>&1 | sed -n '/KA-16598 storm/,/connected/p'

step "build: npm package (release) and emulator"
bash scripts/build-pkg.sh
cargo build --release --quiet -p livestream-emulator
export LIVESTREAM_EMULATOR_BIN="$PWD/target/release/livestream-emulator"

# The package's behaviour in Node and in headless Chromium (tests/web/): each runner starts
# its own emulators on free ports and stops them. --test-force-exit: a stream left open by a
# failing test must not hang the run (process exit itself is tested in child processes).
step "behaviour tests of the package in Node and headless Chromium (tests/web)"
node --test --test-force-exit tests/web/

step "Node tests of the packed package"
node --test tests/node/
step "demo page in a real browser"
node --test tests/e2e/
step "all suites passed"
