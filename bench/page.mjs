// The browser side of the benchmark: bench/run.mjs opens this page (one fresh page per feed,
// contender and source), then calls window.bench.prepare() and window.bench.run().
import init, { LiveStream } from "/pkg/index.js";
import { generate, fingerprint } from "/bench/data.mjs";
import { CONTENDERS, CORE_ONLY, countOnly, memoryResponse, verify } from "/bench/contenders.mjs";

let wasm;
let data;

window.bench = {
  async prepare(hits, seed) {
    wasm = await init();
    data = generate(hits, seed);
    return { fingerprint: fingerprint(data.bytes), wasmBytes: wasm.memory.buffer.byteLength };
  },
  /** One run; returns the figures. `source`: "mem" or "net". */
  async run(contender, source, benchPkgUrl = "/bench/out/pkg-bench") {
    const open =
      source === "mem"
        ? () => Promise.resolve(memoryResponse(data.bytes, 64 * 1024))
        : () => fetch("/data", { cache: "no-store" });
    const url = source === "net" && contender !== "baseline" ? `${location.origin}/api/1/stream/data` : undefined;
    let bench;
    if (CORE_ONLY.has(contender)) {
      // The `bench` build of the package (e.g. bench/out/pkg-bench, served under /bench/).
      bench = await import(`${benchPkgUrl}/livestream_wasm.js`);
      await bench.default();
    }
    const out = await CONTENDERS[contender]({ LiveStream, bench, open, url, expected: data.hits });
    const check = out.ids ? verify(data.hitIdHigh, data.hitIdLow, out.ids) : countOnly(data.hits, out.count);
    return {
      ms: out.ms, bytes: data.bytes.length, hits: check.delivered, ...check,
      errors: out.errors, firstError: out.firstError, chunks: out.chunks, wasmBytes: wasm.memory.buffer.byteLength,
    };
  },
  /** The soak: `total` records from /soak through one connection (real fetch). */
  async soak(total, contender) {
    const state = (window.soakState = { delivered: 0, done: false, ms: 0, error: null });
    const t0 = performance.now();
    await new Promise((resolve, reject) => {
      let stream;
      const opts = {
        url: `${location.origin}/api/1/stream/soak?hits=${total}`,
        token: "bench-token",
        onStatus(s) {
          if (s.state === "waiting" || s.state === "failed") {
            queueMicrotask(() => {
              stream.close();
              s.state === "failed" ? reject(new Error(s.reason)) : resolve();
            });
          }
        },
      };
      if (contender === "onBatch") opts.onBatch = (b) => { state.delivered += b.length; };
      else opts.onHits = (h) => { state.delivered += h.length; };
      stream = new LiveStream(opts);
      stream.start();
    });
    state.ms = performance.now() - t0;
    state.done = true;
    return state;
  },
  wasmBytes() {
    return wasm.memory.buffer.byteLength;
  },
};
window.benchReady = true;
