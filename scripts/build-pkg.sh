#!/usr/bin/env bash
# Builds the npm package's generated part into pkg/:
#   1. wasm-pack (release, --target web, no package.json: the root package.json is the
#      manifest), never downloading anything (--mode no-install);
#   2. wasm-opt -O3 from the npm package binaryen (never Debian's binaryen 108, which writes
#      modules that fail to load: see README#setup);
#   3. the hand-written JavaScript from js/ (the LiveStream host, the entries, the types);
#   4. prints the .wasm size, raw and gzipped.
# Environment: CARGO_TARGET_DIR is respected (wasm-pack passes it to cargo);
#   PKG_OUT_DIR   output directory (default pkg; it is removed and rebuilt);
#   BENCH_FEATURES cargo features to add (e.g. "bench" for the framing/scan-only benchmark
#                 classes); empty by default, so the shipped package is unchanged;
#   WASM_OPT_LEVEL wasm-opt level (default -O3: as small as -Oz after opt-level "s", and
#                 no slower).
set -euo pipefail
cd "$(dirname "$0")/.."

# wasm-pack looks for wasm-bindgen and wasm-opt on PATH: ours must come first.
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
wasm_opt="$PWD/node_modules/.bin/wasm-opt"
if [ ! -x "$wasm_opt" ]; then
  echo "build-pkg: $wasm_opt is missing; run npm ci (or bash scripts/setup.sh) first" >&2
  exit 1
fi

out="${PKG_OUT_DIR:-pkg}"
level="${WASM_OPT_LEVEL:--O3}"
features=()
if [ -n "${BENCH_FEATURES:-}" ]; then
  features=(--features "$BENCH_FEATURES")
fi
rm -rf "$out"
# wasm-pack resolves --out-dir against the crate directory: make it absolute.
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
wasm-pack --quiet build --release --target web --out-dir "$out" --out-name livestream_wasm \
  --no-pack --mode no-install -- "${features[@]}"

wasm="$out/livestream_wasm_bg.wasm"
raw_before=$(wc -c <"$wasm")
"$wasm_opt" "$level" --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"

# wasm-pack writes a `*` .gitignore into pkg/, which npm pack would obey too.
rm -f "$out/.gitignore" "$out/package.json" "$out/README.md"
# The JavaScript host and the entries (see js/): the public API lives there.
cp js/index.js js/index.d.ts js/live-stream.js js/hit-batch.js js/tab-share.js js/node-fetch.js js/node.js js/node.d.ts "$out/"

raw=$(wc -c <"$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
browser_js=("$out/livestream_wasm.js" "$out/index.js" "$out/live-stream.js" "$out/hit-batch.js" "$out/tab-share.js")
js_raw=$(cat "${browser_js[@]}" | wc -c)
js_gz=$(cat "${browser_js[@]}" | gzip -9 -c | wc -c)
printf 'build-pkg: %s: %d bytes from wasm-bindgen, %d bytes after wasm-opt %s, %d bytes gzipped\n' \
  "$wasm" "$raw_before" "$raw" "$level" "$gz"
printf 'build-pkg: JavaScript glue: %d bytes, %d bytes gzipped\n' "$js_raw" "$js_gz"
