// How fast hits cross from the wasm core into JavaScript, against the plain-JS baseline
// (TextDecoder -> split -> JSON.parse), on the same generated Live Stream data, in Node.
//
//   node bench/crossing.mjs [records=50000] [runs=5]      (needs pkg/: scripts/build-pkg.sh)
//
// End to end, the same ReadableStream of 64 KiB chunks feeds:
//   baseline      plain JS: TextDecoder(stream) -> split("\n") -> JSON.parse (ids wrong!)
//   onHits        LiveStream, hits as plain objects (the package's path)
//   onBatch keys  LiveStream, HitBatch typed arrays only (no record parsed)
//   onBatch all   LiveStream, HitBatch + toArray()
// Then, on the exact per-chunk JSON texts the core produced, the two ways of turning one
// batch into objects in JS (the only part where they differ):
//   per record    TextDecoder per record + JSON.parse per record (js/hit-batch.js)
//   whole batch   one TextDecoder + one JSON.parse of "[r,r,…]"
// serde-wasm-bindgen objects were not rebuilt here: perf-notes.md measured them at
// 0.46x (Node) / 0.30x (Chromium) of the baseline.
import { performance } from "node:perf_hooks";
import init, { LiveStream } from "../pkg/node.js";

const N = Number(process.argv[2] ?? 50_000);
const RUNS = Number(process.argv[3] ?? 5);
const CHUNK = 64 * 1024;
await init();

// ---- data -------------------------------------------------------------------------------
let seed = 0x2545f491;
const rnd = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const u64 = () => {
  const big = rnd() < 0.9; // ~90 % above 2^53
  const hi = BigInt(Math.floor(rnd() * 2 ** 32)) | (big ? 0x00400000n : 0n);
  const v = (hi << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
  return (big ? v | (1n << 60n) : v & ((1n << 52n) - 1n)).toString();
};
const ids = [];
let text = "";
for (let i = 0; i < N; i++) {
  const id = [u64(), u64()];
  ids.push(id);
  const page = rnd() < 0.1 ? `ページ ${i} – 日本語のタイトル` : `Page #${i}`;
  const extra = rnd() < 0.02 ? `,"newField${i % 7}":{"a":[1,2,3],"b":"x"}` : "";
  text += `{"reportSuite":"examplecomprod","hitIdHigh":${id[0]},"hitIdLow":${id[1]},` +
    `"visIdHigh":${u64()},"visIdLow":${u64()},"timeGMT":${1372782179 + i},"receivedTimeGMT":${1372782179 + i},` +
    `"pageName":"${page}","pageURL":"http://example.com/page${i}.html","referrer":"http://example.com/page${i % 500}.html",` +
    `"geoCountry":"fra","geoCity":"paris","browser":"Google Chrome 32.0","operatingSystem":"Macintosh","ip":"91.71.30.${i % 255}",` +
    `"evars":{"evars":{"campaign":"DFA:172612:21725632:182361","eVar1":"Summer Shoe Promo","eVar2":"${"x".repeat(200 + (i % 300))}"}},` +
    `"props":{"prop1":"Search Results"},"events":{"event1":[{"count":1,"exponent":0,"unique":""}]},` +
    `"products":[{"category":"Clothing","name":"Mens Black Running Shoes","revenue":1799,"units":15,"evars":{},"events":{}}],` +
    `"bot":"<Not a bot>","truncated":false,"visIdType":3${extra}}\r\n`;
  if (rnd() < 0.005) text += "\r\n";
}
const idsBig = ids.map(([h, l]) => [BigInt(h), BigInt(l)]);
const bytes = new TextEncoder().encode(text);
const chunks = [];
for (let i = 0; i < bytes.length; i += CHUNK) chunks.push(bytes.subarray(i, i + CHUNK));
const MB = bytes.length / 1e6;

function bodyStream() {
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]);
      else c.close();
    },
  }, { highWaterMark: 0 });
}

// ---- end-to-end pipelines ---------------------------------------------------------------
async function baseline() {
  const reader = bodyStream().pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  let count = 0;
  let wrong = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const lines = (rest + value).split("\n");
    rest = lines.pop();
    for (const line of lines) {
      if (line.length <= 1) continue;
      const h = JSON.parse(line);
      const [hi, lo] = ids[count++];
      if (String(h.hitIdHigh) !== hi || String(h.hitIdLow) !== lo) wrong++;
    }
  }
  return { count, wrong };
}

function wasm(mode) {
  return new Promise((resolve, reject) => {
    let count = 0;
    let wrong = 0;
    const check = (hi, lo) => {
      const [h, l] = ids[count++];
      if (hi !== h || lo !== l) wrong++;
    };
    const options = {
      url: "http://bench.invalid/api/1/stream/bench",
      token: "t",
      fetch: async () => new Response(bodyStream(), { status: 200 }),
      onError: (e) => { if (e.code !== "stream_ended") reject(new Error(e.message)); },
      onStatus: (s) => {
        if (s.state === "waiting") { // the body ended
          stream.close();
          resolve({ count, wrong });
        }
      },
    };
    if (mode === "hits") {
      options.onHits = (hits) => { for (const h of hits) check(h.hitIdHigh, h.hitIdLow); };
    } else if (mode === "keys") {
      // A consumer that counts/joins on the typed arrays, comparing BigInts (no strings).
      options.onBatch = (b) => {
        for (let i = 0; i < b.length; i++) {
          const [h, l] = idsBig[count++];
          if (b.hitIdHigh[i] !== h || b.hitIdLow[i] !== l) wrong++;
        }
      };
    } else {
      options.onBatch = (b) => { for (const h of b.toArray()) check(h.hitIdHigh, h.hitIdLow); };
    }
    const stream = new LiveStream(options);
    stream.start();
  });
}

// ---- the JS half alone, on the core's own batch texts ----------------------------------
async function captureBatches() {
  const batches = [];
  const enc = new TextEncoder();
  await new Promise((resolve) => {
    const stream = new LiveStream({
      url: "http://bench.invalid/api/1/stream/bench",
      token: "t",
      fetch: async () => new Response(bodyStream(), { status: 200 }),
      onBatch(b) {
        const texts = Array.from({ length: b.length }, (_, i) => b.text(i));
        const starts = new Uint32Array(b.length);
        const ends = new Uint32Array(b.length);
        let pos = 1;
        const parts = texts.map((t, i) => {
          const n = enc.encode(t).length;
          starts[i] = pos + (i > 0 ? 1 : 0);
          ends[i] = starts[i] + n;
          pos = ends[i];
          return t;
        });
        batches.push({ text: enc.encode(`[${parts.join(",")}]`), starts, ends });
      },
      onStatus(s) { if (s.state === "waiting") { stream.close(); resolve(); } },
    });
    stream.start();
  });
  return batches;
}

const decoder = new TextDecoder();
function perRecord(batches) {
  let n = 0;
  for (const { text, starts, ends } of batches) {
    for (let i = 0; i < starts.length; i++) {
      JSON.parse(decoder.decode(text.subarray(starts[i], ends[i])));
      n++;
    }
  }
  return n;
}
function wholeBatch(batches) {
  let n = 0;
  for (const { text } of batches) n += JSON.parse(decoder.decode(text)).length;
  return n;
}

// ---- run ----------------------------------------------------------------------------------
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function measure(name, fn) {
  const times = [];
  let result;
  await fn(); // warm-up
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    result = await fn();
    times.push(performance.now() - t0);
  }
  const ms = median(times);
  const count = typeof result === "number" ? result : result.count;
  return { name, ms, count, wrong: result.wrong ?? 0 };
}

console.log(`crossing: ${N} records, ${MB.toFixed(1)} MB in ${chunks.length} chunks of 64 KiB; median of ${RUNS} runs (Node ${process.version})`);
const rows = [
  await measure("baseline (plain JS)", baseline),
  await measure("wasm onHits", () => wasm("hits")),
  await measure("wasm onBatch, key fields only", () => wasm("keys")),
  await measure("wasm onBatch + toArray()", () => wasm("all")),
];
const base = rows[0].ms;
for (const r of rows) {
  const rps = (r.count / r.ms) * 1000;
  console.log(`  ${r.name.padEnd(32)} ${(rps / 1000).toFixed(1).padStart(7)} k records/s ${(MB / r.ms * 1000).toFixed(0).padStart(5)} MB/s ` +
    `${(base / r.ms).toFixed(2)}x   ids wrong: ${r.wrong} of ${r.count} (${(100 * r.wrong / r.count).toFixed(1)} %)`);
}
const batches = await captureBatches();
const js = [
  await measure("per record decode + parse", () => perRecord(batches)),
  await measure("whole batch decode + parse", () => wholeBatch(batches)),
];
console.log(`JS half only, on the core's ${batches.length} batch texts:`);
for (const r of js) {
  console.log(`  ${r.name.padEnd(32)} ${(r.count / r.ms).toFixed(1).padStart(7)} k records/s`);
}
