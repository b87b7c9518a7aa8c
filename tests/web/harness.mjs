// Helpers of the behaviour tests that work the same in Node and in a page: assertions,
// recording callbacks with event-driven waits, fake fetch functions whose bodies are
// deterministic streams, records with bare 64-bit ids, the emulator's admin API.
// Nothing here imports a Node module: the page imports this file as it is.

/** The largest hit id half, and one that `JSON.parse` would round. */
export const MAX_ID = "18446744073709551615";
export const BIG_ID = "2948027281753079808";

// ---- assertions -------------------------------------------------------------------------------

function show(v) {
  try {
    return JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

function fail(message, what) {
  throw new Error(what ? `${what}: ${message}` : message);
}

export const assert = {
  ok(v, what) {
    if (!v) fail(`expected a truthy value, got ${show(v)}`, what);
  },
  equal(actual, expected, what) {
    if (!Object.is(actual, expected)) fail(`expected ${show(expected)}, got ${show(actual)}`, what);
  },
  deepEqual(actual, expected, what) {
    const a = show(actual);
    const e = show(expected);
    if (a !== e) fail(`expected ${e}\n  got      ${a}`, what);
  },
  includes(text, needle, what) {
    if (typeof text !== "string" || !text.includes(needle)) fail(`${show(text)} does not contain ${show(needle)}`, what);
  },
  notIncludes(text, needle, what) {
    if (typeof text !== "string" || text.includes(needle)) fail(`${show(text)} contains ${show(needle)}`, what);
  },
  atLeast(actual, min, what) {
    if (!(actual >= min)) fail(`expected at least ${min}, got ${show(actual)}`, what);
  },
  atMost(actual, max, what) {
    if (!(actual <= max)) fail(`expected at most ${max}, got ${show(actual)}`, what);
  },
  /** Runs `f`, which must throw; returns what it threw. */
  throws(f, what) {
    try {
      f();
    } catch (e) {
      return e;
    }
    fail("did not throw", what);
  },
  notThrows(f, what) {
    try {
      return f();
    } catch (e) {
      fail(`threw ${e?.name}: ${e?.message}`, what);
    }
  },
};

// ---- time ---------------------------------------------------------------------------------

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const now = () => performance.now();

/** Rejects with a clear message when `promise` takes longer than `ms`. */
export function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `cond` (for things no event tells about, like the emulator's stats). */
export async function poll(what, cond, ms = 10_000, every = 25) {
  const start = now();
  let last;
  for (;;) {
    last = await cond();
    if (last) return last;
    if (now() - start > ms) fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

export function unique(prefix) {
  return `${prefix}-${Math.floor(Math.random() * 1e12)}`;
}

// ---- records ------------------------------------------------------------------------------

/** One Live Stream record with bare 64-bit ids, as the service writes it. */
export function record(high, low, page) {
  return `{"reportSuite":"rs","hitIdHigh":${high},"hitIdLow":${low},"visIdHigh":${high},"visIdLow":1,` +
    `"timeGMT":1372782179,"receivedTimeGMT":1372782180,"pageName":${JSON.stringify(page)},` +
    `"evars":{"evars":{"eVar1":"x"}},"newField":[1,2]}`;
}

export const crlf = (lines) => lines.map((l) => `${l}\r\n`).join("");
export const bytes = (text) => new TextEncoder().encode(text);

export async function gzip(text) {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// ---- recording callbacks ------------------------------------------------------------------

/**
 * Callbacks that record everything, and `until(what, cond)`, which resolves as soon as a
 * callback makes `cond()` true (checked after each one), or fails with a summary of the log.
 */
export function recorder() {
  const waiters = new Set();
  const log = {
    hits: [],
    batches: [],
    hitCalls: 0,
    statuses: [],
    errors: [],
    states: () => log.statuses.map((s) => s.status.state),
    codes: () => log.errors.map((e) => e.code),
    total: () => log.hitCalls + log.batches.length + log.statuses.length + log.errors.length,
    summary: () => `states ${show(log.states())}, errors ${show(log.errors.map((e) => `${e.code}: ${e.message}`))}, ${log.hits.length} hits`,
    notify() {
      for (const w of [...waiters]) w();
    },
    until(what, cond, ms = 10_000) {
      if (cond()) return Promise.resolve();
      let check;
      const p = new Promise((resolve) => {
        check = () => {
          if (cond()) {
            waiters.delete(check);
            resolve();
          }
        };
        waiters.add(check);
      });
      return within(ms, `${what} (${log.summary()})`, p).finally(() => waiters.delete(check));
    },
    callbacks: {
      onHits(hits, info) {
        if (typeof info?.connection !== "number") fail(`onHits info without a connection: ${show(info)}`);
        log.hitCalls++;
        log.hits.push(...hits);
        log.notify();
      },
      onBatch(batch) {
        log.batches.push(batch);
        log.notify();
      },
      onStatus(status) {
        log.statuses.push({ t: now(), status });
        log.notify();
      },
      onError(error) {
        log.errors.push(error);
        log.notify();
      },
    },
  };
  return log;
}

/** Options for `url` with recording callbacks and a short reconnect delay. */
export function options(url, log, extra = {}) {
  return {
    url,
    token: "test-token",
    reconnectDelayMs: 200,
    reconnectJitterMs: 0,
    seed: 7,
    ...log.callbacks,
    ...extra,
  };
}

export const hitIds = (hits) => hits.map((h) => [h.hitIdHigh, h.hitIdLow]);

export function batchIds(batches) {
  const out = [];
  for (const b of batches) {
    for (let i = 0; i < b.length; i++) {
      const id = b.id(i);
      out.push(id ? [id.hitIdHigh, id.hitIdLow] : [undefined, undefined]);
    }
  }
  return out;
}

// ---- fake fetch -----------------------------------------------------------------------------

/**
 * A fake fetch serving `specs` in turn (the last one repeats). A spec is `{status?, body?:
 * Uint8Array, chunkSize?, chunks?: Uint8Array[], chunkDelayMs?, hold?, headers?, reject?,
 * respond?}`: the body is enqueued `chunkSize` bytes per read (or as the given `chunks`),
 * `chunkDelayMs` apart; `hold` keeps it open after the last byte; `reject` is an error to
 * reject with; `respond()` returns the value to resolve with. `f.state` records `calls`,
 * `aborted` signals, `cancelled` bodies and `pulled` chunks.
 */
export function fakeFetch(specs) {
  const state = { calls: [], aborted: 0, cancelled: 0, pulled: 0 };
  const f = (url, init) => {
    const spec = specs[Math.min(state.calls.length, specs.length - 1)];
    state.calls.push({ url, init });
    if (spec.reject) return Promise.reject(typeof spec.reject === "function" ? spec.reject() : spec.reject);
    if (spec.respond) return Promise.resolve(spec.respond());
    const chunks = spec.chunks ? spec.chunks.slice() : null;
    const body = chunks ? new Uint8Array(0) : spec.body || new Uint8Array(0);
    const size = spec.chunkSize || Math.max(body.length, 1);
    const signal = init?.signal;
    let sent = 0;
    let pos = 0;
    const stream = new ReadableStream({
      start(c) {
        signal?.addEventListener("abort", () => {
          state.aborted++;
          try {
            c.error(new DOMException("The operation was aborted.", "AbortError"));
          } catch {
            // already closed
          }
        });
      },
      pull(c) {
        const more = chunks ? chunks.length > 0 : pos < body.length;
        if (more) {
          const send = () => {
            if (chunks) c.enqueue(chunks.shift());
            else {
              c.enqueue(body.slice(pos, pos + size));
              pos += size;
            }
            sent++;
            state.pulled++;
          };
          if (spec.chunkDelayMs && sent > 0) return sleep(spec.chunkDelayMs).then(send);
          send();
          return undefined;
        }
        if (spec.hold) return new Promise(() => {});
        c.close();
        return undefined;
      },
      cancel() {
        state.cancelled++;
      },
    }, { highWaterMark: 0 });
    return Promise.resolve(new Response(stream, { status: spec.status || 200, headers: spec.headers || {} }));
  };
  f.state = state;
  return f;
}

/**
 * A fake fetch whose one 200 body the test writes: `push(bytes)` enqueues a chunk when the
 * reader asks for it; `pulled(n)` resolves once the reader has taken `n` chunks.
 */
export function pushFetch() {
  const queue = [];
  const waiters = [];
  let wake = null;
  const state = { calls: [], pulled: 0, aborted: 0 };
  const f = (url, init) => {
    state.calls.push({ url, init });
    init?.signal?.addEventListener("abort", () => state.aborted++);
    const stream = new ReadableStream({
      async pull(c) {
        while (queue.length === 0) await new Promise((r) => { wake = r; });
        c.enqueue(queue.shift());
        state.pulled++;
        for (const w of waiters.filter((w) => state.pulled >= w.n)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      },
    }, { highWaterMark: 0 });
    return Promise.resolve(new Response(stream, { status: 200 }));
  };
  f.state = state;
  f.push = (chunk) => {
    queue.push(chunk);
    const w = wake;
    wake = null;
    w?.();
  };
  f.pulled = (n) => (state.pulled >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve })));
  return f;
}

/** The value of header `name` in the `headers` a fetch was called with (array of pairs or object). */
export function header(init, name) {
  const h = init?.headers;
  if (Array.isArray(h)) return h.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
  if (h && typeof h.get === "function") return h.get(name) ?? undefined;
  return h?.[name];
}

// ---- the emulator ---------------------------------------------------------------------------

export function emulator(server) {
  const http = async (method, path, body) => {
    const res = await fetch(`${server}${path}`, {
      method,
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (res.status !== 200) fail(`${method} ${path} answered ${res.status}: ${text}`);
    return JSON.parse(text);
  };
  const emu = {
    url: (name) => `${server}/api/1/stream/${name}`,
    script: (name, script) => http("PUT", `/admin/streams/${name}`, script),
    stats: (name) => http("GET", `/admin/stats?stream=${name}`),
    /** The stream's counters (`live`, `requests`, …), or undefined before its first request. */
    async stream(name) {
      return (await emu.stats(name)).streams[name];
    },
    /** Resolves with the closed connection once the emulator saw the client close it. */
    async sawClose(name, ms = 10_000) {
      let last;
      try {
        return await poll(`the emulator to see the connection of ${name} closed`, async () => {
          last = await emu.stats(name);
          const conns = last.connections;
          const live = last.streams[name]?.live;
          if (live === 0 && conns.length > 0 && conns.every((c) => c.closed_ms !== null)) return conns;
          return null;
        }, ms);
      } catch (e) {
        fail(`${e.message}; last stats: ${show(last)}`);
      }
    },
  };
  return emu;
}
