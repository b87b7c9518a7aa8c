// Contenders in one fresh Node process, run by bench/run.mjs:
//   node --expose-gc bench/node-run.mjs --contender baseline,onHits,onBatch --source mem
//   --hits 100000 --seed 1 --runs 5 [--server http://127.0.0.1:PORT] [--pkg DIR]
//   [--soak 1000000] [--bench-pkg DIR]   (DIR: the `bench` build, for framing/core)
// Several contenders (comma-separated) run interleaved, round by round (warm-up round first),
// so that the machine's drift hits all of them alike and a per-round ratio is meaningful.
// The heap is collected before every run, so each run's peak heap is its own. Prints one
// JSON line per contender with the per-run figures.
import { pathToFileURL } from "node:url";
import path from "node:path";
import { generate, streamingSource } from "./data.mjs";
import { CONTENDERS, CORE_ONLY, PACKAGE_FETCH, countOnly, memoryResponse, pulledResponse, verify } from "./contenders.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]?.startsWith("--") ? "1" : all[i + 1] ?? "1"]);
    return acc;
  }, []),
);
const contenders = String(args.contender).split(",");
const contender = contenders[0]; // the soak runs the first one
const source = args.source ?? "mem";
const hits = Number(args.hits ?? 100_000);
const seed = Number(args.seed ?? 1);
const runs = Number(args.runs ?? 5);
const pkgDir = path.resolve(args.pkg ?? new URL("../pkg", import.meta.url).pathname);

// The core-only contenders run the `bench` build of the package instead.
const pkg = await import(pathToFileURL(path.join(pkgDir, "node.js")).href);
const wasm = await pkg.default();
const benchEntry = contenders.some((c) => CORE_ONLY.has(c))
  ? await import(pathToFileURL(path.join(path.resolve(args["bench-pkg"]), "node.js")).href)
  : null;
const benchWasm = benchEntry ? await benchEntry.default() : null;
// BenchFramer/BenchScanner are classes of the bench build's glue (the entry exports only the API).
const benchPkg = benchEntry
  ? await import(pathToFileURL(path.join(path.resolve(args["bench-pkg"]), "livestream_wasm.js")).href)
  : null;
const { LiveStream } = pkg;
const wasmBytes = (c) => (CORE_ONLY.has(c) ? benchWasm : wasm).memory.buffer.byteLength;

let peakRss = 0;
let peakHeap = 0;
function sample() {
  const m = process.memoryUsage();
  if (m.rss > peakRss) peakRss = m.rss;
  if (m.heapUsed > peakHeap) peakHeap = m.heapUsed;
}

if (args.soak) {
  await soak(Number(args.soak));
  process.exit(0);
}

// --profile JSON: a data profile of the sweep ({intl, pad, small, chunk}).
const profile = args.profile ? JSON.parse(args.profile) : {};
const chunkBytes = profile.chunk ?? 64 * 1024;
const data = generate(hits, seed, profile);
const totalBytes = data.bytes.length;

if (args.crossings) {
  // Calls from JavaScript into wasm per body chunk: every Engine method is counted while one
  // run of each LiveStream contender reads the data from memory.
  const glue = await import(pathToFileURL(path.join(pkgDir, "livestream_wasm.js")).href);
  const counts = {};
  for (const name of Object.getOwnPropertyNames(glue.Engine.prototype)) {
    const f = glue.Engine.prototype[name];
    if (typeof f !== "function" || name === "constructor") continue;
    glue.Engine.prototype[name] = function (...a) {
      counts[name] = (counts[name] ?? 0) + 1;
      return f.apply(this, a);
    };
  }
  const out = {};
  for (const c of contenders) {
    for (const k of Object.keys(counts)) delete counts[k];
    const r = await CONTENDERS[c]({ LiveStream, open: () => Promise.resolve(memoryResponse(data.bytes, chunkBytes)), expected: hits });
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    out[c] = { chunks: r.chunks ?? Math.ceil(totalBytes / chunkBytes), calls: { ...counts }, total };
  }
  process.stdout.write(JSON.stringify({ env: "node", crossings: out, chunkBytes, bytes: totalBytes }) + "\n");
  process.exit(0);
}

// From the server, the core-only contenders (c, c2) read the body with the fetch LiveStream
// uses by default in Node (the package's node:http one), so they bound the LiveStream
// contenders on the same feed; the baseline uses the platform's fetch, as a user would.
const { nodeFetch } = await import(pathToFileURL(path.join(pkgDir, "node-fetch.js")).href);
const openWith = (f) =>
  source === "mem"
    ? () => Promise.resolve(memoryResponse(data.bytes, chunkBytes, sample))
    : () => f(`${args.server}/data`, { cache: "no-store" });
const open = openWith(fetch);
const openCore = openWith(nodeFetch);
const results = Object.fromEntries(contenders.map((c) => [c, []]));
for (const c of contenders) if (!CONTENDERS[c]) throw new Error(`unknown contender ${c}`);
for (let r = 0; r <= runs; r++) {
  for (const c of contenders) {
    const url = source === "net" && c !== "baseline" ? `${args.server}/data` : undefined;
    globalThis.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;
    peakRss = 0;
    peakHeap = 0;
    sample();
    const timer = setInterval(sample, 10);
    const bench = CORE_ONLY.has(c) ? benchPkg : pkg;
    const out = await CONTENDERS[c]({ LiveStream, bench, open: PACKAGE_FETCH.has(c) ? openCore : open, url, expected: hits });
    clearInterval(timer);
    sample();
    const check = out.ids ? verify(data.hitIdHigh, data.hitIdLow, out.ids) : countOnly(hits, out.count);
    if (r === 0) continue; // warm-up round
    results[c].push({
      ms: out.ms,
      bytes: totalBytes,
      hits: check.delivered,
      ...check,
      errors: out.errors,
      firstError: out.firstError,
      chunks: out.chunks,
      peakRss,
      peakHeap,
      heapBefore,
      wasmBytes: wasmBytes(c),
    });
    out.ids = null;
  }
}
for (const c of contenders) {
  process.stdout.write(JSON.stringify({ env: "node", contender: c, source, results: results[c] }) + "\n");
}

/** 1 M records through one connection, data made on the fly; heap after a forced GC. */
async function soak(total) {
  const t0 = performance.now();
  const gen = streamingSource(total, seed + 1000);
  let delivered = 0;
  const points = [];
  const marks = [0.05, 0.25, 0.5, 0.75];
  let nextMark = 0;
  const mark = (label) => {
    globalThis.gc?.();
    const m = process.memoryUsage();
    points.push({ label, hits: delivered, ms: performance.now() - t0, heapUsed: m.heapUsed, rss: m.rss, wasmBytes: wasmBytes(contender) });
  };
  const check = () => {
    while (nextMark < marks.length && delivered >= marks[nextMark] * total) {
      mark(`${Math.round(marks[nextMark] * 100)}%`);
      nextMark++;
    }
  };
  const open = () => Promise.resolve(pulledResponse(gen.pull, sample));
  let stream;
  await new Promise((resolve, reject) => {
    const opts = {
      url: "http://127.0.0.1:9/api/1/stream/soak",
      token: "bench-token",
      fetch: () => open(),
      onStatus(s) {
        if (s.state === "waiting" || s.state === "failed") {
          queueMicrotask(() => (s.state === "failed" ? reject(new Error(s.reason)) : resolve()));
        }
      },
    };
    if (args.contender === "onBatch") {
      opts.onBatch = (b) => {
        delivered += b.length;
        check();
      };
    } else {
      opts.onHits = (h) => {
        delivered += h.length;
        check();
      };
    }
    mark("start");
    stream = new LiveStream(opts);
    stream.start();
  });
  const ms = performance.now() - t0;
  mark("end");
  const stats = stream.stats;
  stream.close();
  process.stdout.write(
    JSON.stringify({
      env: "node",
      soak: true,
      contender: args.contender,
      total,
      delivered,
      ms,
      bytes: gen.counts.bytes,
      malformed: stats.malformed,
      duplicates: stats.duplicates,
      points,
      peakRss,
      peakHeap,
    }) + "\n",
  );
}
