// Types of the "node" entry (node.js): the same API as the browser entry; `init()` takes no
// argument, since the .wasm is loaded from disk at import.
export * from "./index.js";
import type { InitOutput } from "./index.js";

/** Resolves at once: the module was instantiated at import. */
export default function init(): Promise<InitOutput>;

/** The same as `init()`, synchronously. */
export function initSync(): InitOutput;
