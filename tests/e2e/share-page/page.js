// One "tab" of the share test: a LiveStream with `share: true` (or not), logging what it gets.
// Query: stream, delay (reconnectDelayMs), share=0|1, apiKey, max (maxConnections),
// mode=bench (an injected fetch streams `n` generated records as fast as it can).
import init, { LiveStream } from "/pkg/index.js";

await init();
const q = new URLSearchParams(location.search);
const log = { hits: [], statuses: [], errors: [], firstHitAt: 0, lastHitAt: 0 };
window.log = log;

let go;
const started = new Promise((r) => {
  go = r;
});
/** The bench leader streams only once every follower listens (the test calls `go()`). */
window.go = () => go();

function benchFetch(n) {
  const enc = new TextEncoder();
  return async () => {
    await started;
    let i = 0;
    const body = new ReadableStream({
      pull(controller) {
        if (i >= n) {
          // Keep the connection open (a real stream does not end).
          return new Promise(() => {});
        }
        let s = "";
        for (let k = 0; k < 200 && i < n; k++, i++) {
          s += `{"hitIdHigh":${1000000000000000000n + BigInt(i)},"hitIdLow":${i},"timeGMT":1700000000,"pageName":"Page ${i}","geoCity":"paris"}\r\n`;
        }
        controller.enqueue(enc.encode(s));
        return undefined;
      },
    });
    return new Response(body, { status: 200 });
  };
}

const bench = q.get("mode") === "bench";
const options = {
  url: `/api/1/stream/${q.get("stream") ?? "share"}`,
  token: "t",
  maxConnections: Number(q.get("max") ?? 1),
  connections: 1,
  reconnectDelayMs: Number(q.get("delay") ?? 2000),
  reconnectJitterMs: 0,
  share: q.get("share") !== "0",
  onBatch(b) {
    const t = performance.now();
    if (!log.firstHitAt) log.firstHitAt = t;
    log.lastHitAt = t;
    if (bench) {
      log.count = (log.count ?? 0) + b.length;
      return;
    }
    for (let i = 0; i < b.length; i++) log.hits.push(`${b.hitIdHigh[i]}:${b.hitIdLow[i]}`);
  },
  onStatus(s) {
    log.statuses.push({ ...s, at: Date.now() });
  },
  onError(e) {
    log.errors.push(e);
  },
};
if (q.get("apiKey")) options.apiKey = q.get("apiKey");
if (bench) {
  options.fetch = benchFetch(Number(q.get("n") ?? 100000));
  options.url = `/bench/${q.get("stream") ?? "bench"}`;
}
window.stream = new LiveStream(options);
window.stream.start();
window.ready = true;
