// The package's entry under the "node" export condition: Node has no fetch for file URLs, so
// the .wasm is read from disk and instantiated synchronously at import, and requests go
// through node:http(s) (see node-fetch.js: no body timeout of its own, gzip passed through to
// the core, redirects judged by the core). `init()` exists so that one import works
// everywhere; here it resolves at once.
import { readFileSync } from "node:fs";
import { initSync as initWasmSync } from "./livestream_wasm.js";
import { markReady } from "./live-stream.js";
import { nodeFetch } from "./node-fetch.js";

const exports = initWasmSync({
  module: readFileSync(new URL("./livestream_wasm_bg.wasm", import.meta.url)),
});
markReady(nodeFetch);

export { LiveStream, HitBatch } from "./live-stream.js";
export { optionSchema } from "./livestream_wasm.js";

/** Resolves at once with the wasm exports: the module was instantiated at import. */
export default async function init() {
  return exports;
}

/** The same as `init()`, synchronously. */
export function initSync() {
  return exports;
}
