// The package's entry under the "node" export condition: Node has no fetch for file URLs,
// so the .wasm is read from disk and instantiated synchronously at import. `init()` exists
// so that one import works everywhere (`import init, { LiveStream } from "livestream-wasm";
// await init();`); here it resolves at once.
import { readFileSync } from "node:fs";
import { initSync } from "./livestream_wasm.js";

const exports = initSync({
  module: readFileSync(new URL("./livestream_wasm_bg.wasm", import.meta.url)),
});

export * from "./livestream_wasm.js";

/** Resolves at once with the wasm exports: the module was instantiated at import. */
export default async function init() {
  return exports;
}
