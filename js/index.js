// The package's entry for browsers, workers and bundlers: `import init, { LiveStream } from
// "livestream-wasm"; await init();`. `init()` fetches and instantiates the .wasm (bundlers emit
// it as an asset next to the glue); pass `{ module_or_path }` to load it from elsewhere.
import initWasm, { initSync as initWasmSync } from "./livestream_wasm.js";
import { markReady } from "./live-stream.js";

export { LiveStream, HitBatch } from "./live-stream.js";
export { optionSchema } from "./livestream_wasm.js";

/** Loads the .wasm once; later calls resolve at once. Call before `new LiveStream(…)`. */
export default async function init(moduleOrPath) {
  const exports = await initWasm(moduleOrPath);
  markReady();
  return exports;
}

/** Instantiates the .wasm synchronously from bytes or a `WebAssembly.Module` you already have. */
export function initSync(module) {
  const exports = initWasmSync(module);
  markReady();
  return exports;
}
