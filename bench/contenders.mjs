// The contenders, shared by Node (bench/node-run.mjs) and the browser page (bench/page.mjs).
// Each takes `open()`, which resolves to a fetch `Response` (from memory or the real fetch),
// consumes the whole body, and returns what it delivered: the hit ids for checking, and the
// elapsed time. The checking itself (verify) runs after the clock stops.

/** The URL given to LiveStream when its `fetch` option is injected (never requested). */
export const FAKE_URL = "http://127.0.0.1:9/api/1/stream/bench";

/**
 * How often the memory sampler (`onPull`) runs: every this many bytes handed out, whatever
 * the chunk size. A sample (process.memoryUsage) costs ~30 µs in Node; taken every 16 pulls
 * it added ~24 ms to every contender's run with 4 KiB chunks, which flattened the ratios of
 * that profile.
 */
const SAMPLE_BYTES = 1 << 20;

/** Counts the bytes handed out and calls `onPull` (if any) every SAMPLE_BYTES of them. */
function sampler(onPull) {
  let unsampled = 0;
  return (bytes) => {
    unsampled += bytes;
    if (onPull && unsampled >= SAMPLE_BYTES) {
      unsampled = 0;
      onPull();
    }
  };
}

/** A `Response` whose body is a ReadableStream over `bytes` in `chunk`-byte pieces. */
export function memoryResponse(bytes, chunk = 64 * 1024, onPull) {
  let at = 0;
  const handedOut = sampler(onPull);
  const body = new ReadableStream({
    pull(c) {
      if (at >= bytes.length) {
        c.close();
        return;
      }
      const end = Math.min(at + chunk, bytes.length);
      c.enqueue(bytes.subarray(at, end));
      handedOut(end - at);
      at = end;
    },
  });
  return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
}

/** A `Response` over a generator's `pull()` (null at the end): the soak, data made on the fly. */
export function pulledResponse(pull, onPull) {
  const handedOut = sampler(onPull);
  const body = new ReadableStream({
    pull(c) {
      const chunk = pull();
      if (chunk === null) c.close();
      else {
        c.enqueue(chunk);
        handedOut(chunk.length);
      }
    },
  });
  return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
}

/** Growable id store: strings or numbers as delivered. */
function idStore(expected) {
  return { hi: new Array(expected), lo: new Array(expected), n: 0 };
}

/**
 * (a) The plain-JS baseline: read the body, TextDecoder (streaming), split lines on LF (CR
 * dropped), JSON.parse each non-empty line, hand the hit to the consumer (which keeps the two
 * hit id fields, as a dedup or a table would).
 */
export async function runBaseline({ open, expected }, parse = true) {
  const ids = idStore(expected);
  const t0 = performance.now();
  const res = await open();
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  let n = 0;
  const hi = ids.hi;
  const lo = ids.lo;
  let chunks = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks++;
    buf += dec.decode(value, { stream: true });
    let start = 0;
    let nl;
    while ((nl = buf.indexOf("\n", start)) !== -1) {
      let end = nl;
      if (end > start && buf.charCodeAt(end - 1) === 13) end--;
      if (end > start) {
        if (parse) {
          const hit = JSON.parse(buf.slice(start, end));
          hi[n] = hit.hitIdHigh;
          lo[n] = hit.hitIdLow;
        }
        n++;
      }
      start = nl + 1;
    }
    buf = buf.slice(start);
  }
  buf += dec.decode();
  if (buf.length > 0) {
    const line = buf.endsWith("\r") ? buf.slice(0, -1) : buf;
    if (line) {
      if (parse) {
        const hit = JSON.parse(line);
        hi[n] = hit.hitIdHigh;
        lo[n] = hit.hitIdLow;
      }
      n++;
    }
  }
  const ms = performance.now() - t0;
  ids.n = n;
  return parse ? { ms, ids, errors: 0, chunks } : { ms, ids: null, count: n, errors: 0, chunks };
}

/**
 * (a0) The baseline without JSON.parse: read, decode, split, count lines. What the baseline
 * spends besides parsing; any contender that hands out every hit as a parsed object (onHits)
 * pays for JSON.parse too, so baseline / (baseline - a0) bounds it.
 */
export function runSplit(ctx) {
  return runBaseline(ctx, false);
}

/**
 * (r) Reading the body alone: every chunk taken, nothing decoded, split or parsed. What
 * reading costs on this platform and feed, so a bound for every contender: none can be
 * faster. Counts bytes only; reports the data's record count so rates compare.
 */
export async function runRead(ctx) {
  let bytes = 0;
  const out = await runCoreOnly(() => ({
    push(chunk) {
      bytes += chunk.length;
      return 0;
    },
    free() {},
  }), ctx);
  if (bytes === 0) throw new Error("reading alone: the body was empty");
  return { ...out, count: ctx.expected };
}

/**
 * Runs a LiveStream until the server ends the body (status `waiting`), then closes it.
 * `url` given: the real fetch; otherwise `open` is injected as the `fetch` option.
 */
function runStream(LiveStream, { open, url }, callbacks) {
  return new Promise((resolve, reject) => {
    let errors = 0;
    let firstError = null;
    let stream;
    const t0 = performance.now();
    const options = {
      url: url ?? FAKE_URL,
      token: "bench-token",
      reconnectDelayMs: 60_000,
      onStatus(s) {
        if (s.state === "waiting" || s.state === "failed") {
          const ms = performance.now() - t0;
          // Close outside the callback's stack: the shell is still delivering.
          queueMicrotask(() => {
            stream.close();
            // Release the wasm side now rather than at GC finalization: each run makes a new
            // LiveStream, and a closed one still holds its core (dedup window, buffers).
            const stats = stream.stats;
            stream.free?.();
            if (s.state === "failed") reject(new Error(`LiveStream failed: ${s.reason}`));
            else resolve({ ms, errors, firstError, stats });
          });
        }
      },
      onError(e) {
        if (e.code === "stream_ended") return; // the expected end of the data
        errors++;
        if (!firstError) firstError = `${e.code}: ${e.message}`;
      },
      ...callbacks,
    };
    if (!url) options.fetch = () => open();
    stream = new LiveStream(options);
    stream.start();
  });
}

/** (b) LiveStream with every hit delivered to `onHits` as a plain object. */
export async function runOnHits({ LiveStream, open, url, expected }) {
  const ids = idStore(expected);
  const hi = ids.hi;
  const lo = ids.lo;
  let n = 0;
  const r = await runStream(LiveStream, { open, url }, {
    onHits(hits) {
      for (let i = 0; i < hits.length; i++) {
        const hit = hits[i];
        hi[n] = hit.hitIdHigh;
        lo[n] = hit.hitIdLow;
        n++;
      }
    },
  });
  ids.n = n;
  return { ...r, ids };
}

/** (b2) LiveStream with `onBatch`, reading only the ids and timeGMT (typed arrays). */
export async function runOnBatch({ LiveStream, open, url, expected }) {
  let hi = new BigUint64Array(expected + 1024);
  let lo = new BigUint64Array(expected + 1024);
  let n = 0;
  let timeSum = 0;
  const r = await runStream(LiveStream, { open, url }, {
    onBatch(batch) {
      const len = batch.length;
      if (n + len > hi.length) {
        const h2 = new BigUint64Array((n + len) * 2);
        const l2 = new BigUint64Array((n + len) * 2);
        h2.set(hi);
        l2.set(lo);
        hi = h2;
        lo = l2;
      }
      hi.set(batch.hitIdHigh, n);
      lo.set(batch.hitIdLow, n);
      const t = batch.timeGMT;
      for (let i = 0; i < len; i++) timeSum += t[i];
      n += len;
    },
  });
  return { ...r, ids: { hi, lo, n }, timeSum };
}

/**
 * Feeds the body to a bench-only wasm object (`push(chunk)` returns a count) and nothing
 * crosses back to JavaScript: what the core costs alone. `make` builds the object.
 */
async function runCoreOnly(make, { open }) {
  const target = make();
  const t0 = performance.now();
  const res = await open();
  const reader = res.body.getReader();
  let n = 0;
  let chunks = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks++;
    n += target.push(value);
  }
  const ms = performance.now() - t0;
  target.free();
  return { ms, ids: null, count: n, errors: 0, chunks };
}

/** (c) Framing alone in wasm (BenchFramer of the `bench` build): records counted. */
export function runFraming(ctx) {
  return runCoreOnly(() => new ctx.bench.BenchFramer(), ctx);
}

/** (c1) Framing plus the record scanner (validation, key fields) in wasm (BenchScan). */
export function runScan(ctx) {
  return runCoreOnly(() => new ctx.bench.BenchScan(), ctx);
}

/** (c2) The whole core chain in wasm (BenchScanner): framing, validation and id rewriting,
 * de-duplication and the batch, with no hit handed to JavaScript. */
export function runCore(ctx) {
  return runCoreOnly(() => new ctx.bench.BenchScanner(), ctx);
}

export const CONTENDERS = {
  baseline: runBaseline,
  split: runSplit,
  read: runRead,
  onHits: runOnHits,
  onBatch: runOnBatch,
  framing: runFraming,
  scan: runScan,
  core: runCore,
};

/** Contenders that need the `bench` build of the package and deliver counts, not ids. */
export const CORE_ONLY = new Set(["framing", "scan", "core"]);

/**
 * Contenders that read the body through the fetch LiveStream uses (in Node the package's
 * node:http one rather than the global fetch the baseline uses), so they bound LiveStream.
 */
export const PACKAGE_FETCH = new Set([...CORE_ONLY, "read"]);

/** The figures of a count-only run, in the shape `verify` returns. */
export function countOnly(expected, count) {
  return { delivered: count, wrong: 0, collisions: 0, duplicates: 0, missing: expected - count };
}

/**
 * Checks the delivered ids against the generator's truth, position by position:
 * - `wrong`: hits whose hitIdHigh or hitIdLow (as a decimal string) differs from the truth;
 * - `collisions`: distinct true ids that were delivered as the same id as another one;
 * - `duplicates`: the same true id delivered more than once;
 * - `missing`: hits expected but not delivered (negative: extra hits).
 */
export function verify(truthHi, truthLo, ids) {
  const n = Math.min(ids.n, truthHi.length);
  let wrong = 0;
  // delivered key -> first true key seen with it, or a Set of true keys when several.
  const byDelivered = new Map();
  for (let i = 0; i < n; i++) {
    const h = String(ids.hi[i]);
    const l = String(ids.lo[i]);
    const th = truthHi[i];
    const tl = truthLo[i];
    if (h !== th || l !== tl) wrong++;
    const dk = h + ":" + l;
    const tk = th + ":" + tl;
    const seen = byDelivered.get(dk);
    if (seen === undefined) byDelivered.set(dk, tk);
    else if (typeof seen === "string") {
      if (seen !== tk) byDelivered.set(dk, new Set([seen, tk]));
      else byDelivered.set(dk, { dup: 1, key: tk });
    } else if (seen instanceof Set) seen.add(tk);
    else if (seen.key === tk) seen.dup++;
    else byDelivered.set(dk, new Set([seen.key, tk]));
  }
  let collisions = 0;
  let duplicates = 0;
  for (const v of byDelivered.values()) {
    if (v instanceof Set) collisions += v.size;
    else if (typeof v === "object") duplicates += v.dup;
  }
  // Ids delivered beyond the truth are extra deliveries (duplicates of something).
  if (ids.n > truthHi.length) duplicates += ids.n - truthHi.length;
  return { delivered: ids.n, wrong, collisions, duplicates, missing: truthHi.length - ids.n };
}

/** Median of numbers. */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
