#!/usr/bin/env bash
# `npm test`: every test suite of the project, in order of cost. Stops at the first failure.
#  1. cargo tests: the core (unit, property, storm scenario, schema checks), the emulator and
#     the relay (integration), the fuzz crate; a 5-second smoke run of each fuzz target
#  2. the release package (wasm-pack + wasm-opt), the emulator and the relay binaries
#  3. behaviour tests of the package (tests/web) in Node and in headless Chromium
#  4. Node tests of the package: the packed tarball (Node, Vite, esbuild, webpack, Rollup,
#     a Worker, require, Deno, Bun), the tail command line, a chaos soak
#  5. the relay with Node clients of the package and the demo page through it
#  6. the demo page and tab sharing in a real browser (playwright-core + Debian chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "cargo test: core, schema, emulator, relay, fuzz crate"
cargo test --workspace --quiet
step "fuzz smoke: every target for 5 s (npm run fuzz -- --seconds N for longer runs)"
bash scripts/fuzz.sh --seconds 5
step "the KA-16598 storm schedule"
cargo test --quiet --test storm -- --nocapture 2>&1 | sed -n '/KA-16598 storm/,/connected/p'

step "build: npm package (release), emulator and relay (native)"
bash scripts/build-pkg.sh
cargo build --profile native --quiet -p livestream-emulator -p livestream-relay
export LIVESTREAM_EMULATOR_BIN="$PWD/target/native/livestream-emulator"
export LIVESTREAM_RELAY_BIN="$PWD/target/native/livestream-relay"

# The package's behaviour in Node and in headless Chromium (tests/web/): each runner starts
# its own emulators on free ports and stops them. --test-force-exit: a stream left open by a
# failing test must not hang the run (process exit itself is tested in child processes).
step "behaviour tests of the package in Node and headless Chromium (tests/web)"
node --test --test-force-exit tests/web/

step "Node tests of the package: packed tarball, bundlers, workers, the CLI, a chaos soak"
node --test tests/node/
step "the relay with clients of the package, curl-like clients and the demo page"
node --test tests/relay/
step "demo page and tab sharing in a real browser"
node --test tests/e2e/
step "all suites passed"
