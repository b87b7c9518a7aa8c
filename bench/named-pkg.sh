#!/usr/bin/env bash
# Builds bench/out/pkg-names: the package's wasm with its function names kept (wasm-bindgen
# output without wasm-opt), so that a CPU profile names Rust functions instead of
# wasm-function[N]. Uses the cargo build that scripts/build-pkg.sh left in CARGO_TARGET_DIR
# (default target/); run that first. `npm run bench` profiles with this package when present.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/livestream_wasm.wasm"
[ -f "$target" ] || { echo "named-pkg: $target is missing: run scripts/build-pkg.sh first" >&2; exit 1; }
out=bench/out/pkg-names
rm -rf "$out"
wasm-bindgen --target web --out-dir "$out" --out-name livestream_wasm --keep-debug "$target"
cp js/node.js "$out/"
echo "named-pkg: $out ($(wc -c <"$out/livestream_wasm_bg.wasm") bytes, names kept)"
