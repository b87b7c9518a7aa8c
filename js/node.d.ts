// Types of the "node" entry (node.js): the same API as the browser entry; `init()` takes no
// argument, since the .wasm is loaded from disk at import.
export * from "./livestream_wasm.js";
import type { InitOutput } from "./livestream_wasm.js";

/** Resolves at once: the module was instantiated at import. */
export default function init(): Promise<InitOutput>;
