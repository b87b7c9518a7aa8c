#!/usr/bin/env bash
# Builds the npm package's generated part into pkg/:
#   1. wasm-pack (release, --target web, no package.json: the root package.json is the
#      manifest), never downloading anything (--mode no-install);
#   2. wasm-opt -Oz from the npm package binaryen (never Debian's binaryen 108, which writes
#      modules that fail to load: see README#setup);
#   3. the hand-written entries from js/ (the Node entry and its types);
#   4. prints the .wasm size, raw and gzipped.
# Environment: CARGO_TARGET_DIR is respected (wasm-pack passes it to cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

# wasm-pack looks for wasm-bindgen and wasm-opt on PATH: ours must come first.
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
wasm_opt="$PWD/node_modules/.bin/wasm-opt"
if [ ! -x "$wasm_opt" ]; then
  echo "build-pkg: $wasm_opt is missing; run npm ci (or bash scripts/setup.sh) first" >&2
  exit 1
fi

rm -rf pkg
wasm-pack --quiet build --release --target web --out-dir pkg --out-name livestream_wasm \
  --no-pack --mode no-install

wasm=pkg/livestream_wasm_bg.wasm
raw_before=$(wc -c <"$wasm")
"$wasm_opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"

# wasm-pack writes a `*` .gitignore into pkg/, which npm pack would obey too.
rm -f pkg/.gitignore pkg/package.json pkg/README.md
cp js/node.js js/node.d.ts pkg/

raw=$(wc -c <"$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
js_raw=$(cat pkg/livestream_wasm.js pkg/snippets/*/js/*.js | wc -c)
js_gz=$(cat pkg/livestream_wasm.js pkg/snippets/*/js/*.js | gzip -9 -c | wc -c)
printf 'build-pkg: %s: %d bytes from wasm-bindgen, %d bytes after wasm-opt -Oz, %d bytes gzipped\n' \
  "$wasm" "$raw_before" "$raw" "$gz"
printf 'build-pkg: JavaScript glue: %d bytes, %d bytes gzipped\n' "$js_raw" "$js_gz"
