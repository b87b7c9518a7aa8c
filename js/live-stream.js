// The public `LiveStream` class: the JavaScript host of the wasm engine.
//
// The engine (Rust, src/web + src/core) decides everything about a connection: when to
// connect, with which URL and headers, what a status means, how long to wait, what a record
// is, which hits are duplicates. This host only carries out its outputs — `fetch`, the body
// reader loop, one timer, abort — and delivers what it produced to the user's callbacks or
// to an async iterator. It keeps no copy of the connection state.

import { Engine, wasmMemory } from "./livestream_wasm.js";
import { HitBatch, batchText, hitsFromText, referencedText, NOT_IN_CHUNK } from "./hit-batch.js";
import { TabShare, canShare } from "./tab-share.js";

/** The options this host reads itself; every other option is the engine's (the core's schema). */
const HOST_OPTIONS = ["fetch", "onHits", "onBatch", "onStatus", "onError", "seed", "signal", "maxBufferedHits", "share"];

/** The largest piece of a body chunk fed at once (Chromium hands up to 2 MiB). */
const SLICE_BYTES = 256 * 1024;

/** Default bound of the async iterator's buffer, in hits (~12 MB of typical records). */
const DEFAULT_MAX_BUFFERED_HITS = 10_000;
/** Largest `maxBufferedHits` accepted. */
const MAX_MAX_BUFFERED_HITS = 10_000_000;

/** Error codes produced by this host (the core defines the same names). */
const CALLBACK_ERROR = "callback_error";
const INTERNAL_ERROR = "internal_error";
const CONSUMER_OVERFLOW = "consumer_overflow";

let ready = false;
let defaultFetch = null;
let memory = null;

/** Called by the package's entries once the .wasm is instantiated. */
export function markReady(fetchImpl) {
  ready = true;
  if (fetchImpl) defaultFetch = fetchImpl;
}

const now = () => Math.floor(performance.now());

/** A readable text for a thrown value; never throws (getters of user errors may). */
export function describeError(e) {
  try {
    if (e instanceof Error) {
      let text = e.message ? `${e.name}: ${e.message}` : String(e.name);
      try {
        const cause = e.cause;
        if (cause instanceof Error && cause.message) text += ` (${cause.message})`;
        else if (typeof cause === "string") text += ` (${cause})`;
      } catch {
        // A cause getter that throws says nothing more.
      }
      return text;
    }
    if (typeof e === "string") return e;
    return describeValue(e);
  } catch {
    return "an unprintable value";
  }
}

function describeValue(v) {
  try {
    if (v === null) return "null";
    if (Array.isArray(v)) return "an array";
    switch (typeof v) {
      case "string":
        return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
      case "number":
      case "boolean":
      case "bigint":
        return String(v);
      case "undefined":
        return "undefined";
      case "function":
        return "a function";
      case "symbol":
        return "a symbol";
      default:
        return "an object";
    }
  } catch {
    return "an unprintable value";
  }
}

function optionError(Kind, name, value, expected) {
  return new Kind(`invalid option ${name}: ${describeValue(value)} (${expected})`);
}

/**
 * True when `bytes` views shared memory (a SharedArrayBuffer, e.g. a shared
 * WebAssembly.Memory; the global may be absent while such buffers exist): browsers'
 * TextDecoder refuses shared views, and another thread may write into the memory after
 * handing it over, so a batch never keeps such a chunk.
 */
function isShared(bytes) {
  const buffer = bytes.buffer;
  return !(buffer instanceof ArrayBuffer) && Object.prototype.toString.call(buffer) === "[object SharedArrayBuffer]";
}

/** True in a page or a worker: redirects are followed by the platform, Accept-Encoding is its own. */
function isBrowser() {
  return typeof globalThis.document !== "undefined" || typeof globalThis.WorkerGlobalScope !== "undefined";
}

/**
 * Where each packed column of `n` hits starts, from the columns' start: the layout of
 * src/crossing.rs `Batch::pack_columns` (u64 ids, f64 times, u32 starts/ends, u8 flags, then,
 * with references, u32 chunkStarts, quoteAt (n + 1) and quotes from a multiple of 4).
 */
function columnOffsets(n) {
  const refs = (57 * n + 3) & ~3;
  return {
    hitIdHigh: 0, hitIdLow: 8 * n, visIdHigh: 16 * n, visIdLow: 24 * n,
    timeGMT: 32 * n, receivedTimeGMT: 40 * n, starts: 48 * n, ends: 52 * n, flags: 56 * n,
    chunkStarts: refs, quoteAt: refs + 4 * n, quotes: refs + 8 * n + 4,
  };
}

/** Words of the engine's layout (src/crossing.rs LAYOUT_WORDS): where a batch lies in wasm memory. */
const LAYOUT_WORDS = 9;

/**
 * How the engine writes a chunk's hits, by who takes them (LiveStream #textForm): the batch's
 * text (TEXT), no text, the batch referring to the chunk (REFERENCED), or one all-ASCII
 * array that is only parsed (OBJECTS).
 */
const TEXT = 0;
const REFERENCED = 1;
const OBJECTS = 2;

/**
 * Bytes of each block that referencing batches (see LiveStream #referencingBatch) copy what
 * they take out of wasm memory into (their columns, and the records that are not slices of
 * their chunk), one after another. Small batches are where a fresh ArrayBuffer each costs
 * most (allocation and its GC, not the copy): with 4 KiB chunks the blocks made onBatch
 * ~17 % faster in Node. A kept batch keeps its block, shared with its neighbours, beside its
 * chunk.
 */
const COPY_BLOCK_BYTES = 64 * 1024;

/**
 * Copies `bytes` into the current block of `blocks` (`{ buffer, at }`), starting a new block
 * when it does not fit; returns the copy, a view that starts at a multiple of 8 of its
 * buffer (so 64-bit views of columns align). A copy of more than a quarter block gets a
 * buffer of its own: with blocks shared by two or three such copies, Node's onBatch was ~5 %
 * slower on small records (~250 a batch, 24 KB of columns).
 */
function copyIntoBlock(blocks, bytes) {
  const len = bytes.length;
  if (len > COPY_BLOCK_BYTES / 4) return bytes.slice();
  if (blocks.at + len > blocks.buffer.byteLength) {
    blocks.buffer = new ArrayBuffer(COPY_BLOCK_BYTES);
    blocks.at = 0;
  }
  const copy = new Uint8Array(blocks.buffer, blocks.at, len);
  copy.set(bytes);
  blocks.at = (blocks.at + len + 7) & ~7;
  return copy;
}

/**
 * A HitBatch over `n` hits whose key columns are packed in `columns` from `at` (see
 * columnOffsets): views, not copies.
 */
function columnsBatch(connection, text, columns, at, n) {
  const o = columnOffsets(n);
  return new HitBatch(
    connection, text,
    new Uint32Array(columns, at + o.starts, n),
    new Uint32Array(columns, at + o.ends, n),
    new BigUint64Array(columns, at + o.hitIdHigh, n),
    new BigUint64Array(columns, at + o.hitIdLow, n),
    new BigUint64Array(columns, at + o.visIdHigh, n),
    new BigUint64Array(columns, at + o.visIdLow, n),
    new Float64Array(columns, at + o.timeGMT, n),
    new Float64Array(columns, at + o.receivedTimeGMT, n),
    new Uint8Array(columns, at + o.flags, n),
  );
}

/**
 * A Live Stream client: keeps `connections` requests to one stream open, waits at least
 * `reconnectDelayMs` after any loss before reconnecting (Adobe KA-16598), and hands over
 * de-duplicated hits with exact 64-bit ids. See the README for options and callbacks.
 */
export class LiveStream {
  #engine;
  #fetch;
  #token;
  #callbacks;
  #browser = isBrowser();
  #attempts = new Map();
  #timer = null;
  #timerAt = Infinity;
  #closing = null;
  #silenced = false;
  #dead = false;
  #lastStats = null;
  #fatal = null;
  #signal = null;
  #onAbort = null;
  #inputPtr = 0;
  #inputCap = 0;
  #layoutPtr = 0;
  #iterator = null;
  #maxBufferedHits;
  #overflowed = 0;
  #shareWanted = false;
  #share = null;
  #leaderStats = null;
  #pumping = false;
  #pumpAgain = false;
  /** Counts feeds and releases: a batch reads the engine's text in place only while the count is its own. */
  #epoch = { n: 0 };
  /** The block referencing batches copy their columns and cut records into (copyIntoBlock). */
  #copyBlocks = { buffer: new ArrayBuffer(0), at: 0 };

  /**
   * Checks the options and prepares the client; nothing is requested before `start()`.
   * Throws a `TypeError` (unknown option, wrong type) or a `RangeError` (bad value) whose
   * message names the option, the value and what is allowed.
   */
  constructor(options) {
    if (!ready) {
      throw new Error(
        "livestream-wasm is not initialized: call `await init()` (the package's default export) once before `new LiveStream(...)`",
      );
    }
    const o = options !== null && typeof options === "object" ? options : {};
    const read = (name) => {
      try {
        return o[name];
      } catch (e) {
        throw new TypeError(`invalid option ${name}: its getter threw (${describeError(e)})`);
      }
    };
    const fn = (name) => {
      const v = read(name);
      if (v === undefined || v === null) return null;
      if (typeof v !== "function") throw optionError(TypeError, name, v, `a function, not ${describeValue(v)}`);
      return v;
    };
    this.#callbacks = { onHits: fn("onHits"), onBatch: fn("onBatch"), onStatus: fn("onStatus"), onError: fn("onError") };
    const fetchImpl = fn("fetch") ?? defaultFetch ?? (typeof globalThis.fetch === "function" ? globalThis.fetch : null);
    let seed = read("seed");
    if (seed === undefined || seed === null) {
      seed = Math.floor(Math.random() * 2 ** 53);
    } else if (!Number.isSafeInteger(seed) || seed < 0) {
      throw optionError(RangeError, "seed", seed, "an integer from 0 to 2^53-1 (fixes the reconnect jitter, for tests)");
    }
    const maxBuffered = read("maxBufferedHits") ?? DEFAULT_MAX_BUFFERED_HITS;
    if (!Number.isSafeInteger(maxBuffered) || maxBuffered < 1 || maxBuffered > MAX_MAX_BUFFERED_HITS) {
      throw optionError(RangeError, "maxBufferedHits", maxBuffered, `an integer from 1 to ${MAX_MAX_BUFFERED_HITS} hits`);
    }
    this.#maxBufferedHits = maxBuffered;
    const share = read("share") ?? false;
    if (typeof share !== "boolean") throw optionError(TypeError, "share", share, "true or false");
    if (share && !canShare()) {
      throw new TypeError(
        "invalid option share: true (sharing one connection between tabs needs Web Locks and BroadcastChannel, which this environment lacks; share is for pages and workers of one browser origin: leave it out in Node)",
      );
    }
    this.#shareWanted = share;
    const signal = read("signal");
    if (signal !== undefined && signal !== null && (typeof signal !== "object" || typeof signal.addEventListener !== "function" || typeof signal.aborted !== "boolean")) {
      throw optionError(TypeError, "signal", signal, "an AbortSignal");
    }
    const token = read("token");
    const base = typeof globalThis.location?.href === "string" ? globalThis.location.href : undefined;
    // The engine checks the rest (url, token, every number) against the core's schema.
    this.#engine = new Engine(options, HOST_OPTIONS, base, seed);
    this.#token = token;
    if (!fetchImpl) {
      this.#engine.free();
      this.#engine = null;
      throw new TypeError("invalid option fetch: missing (a fetch function: this environment has no global fetch)");
    }
    this.#fetch = fetchImpl;
    memory ??= wasmMemory();
    this.#layoutPtr = this.#engine.layout();
    this.#lastStats = this.#engine.stats(now(), Date.now());
    if (signal) {
      this.#signal = signal;
      if (signal.aborted) {
        this.close();
      } else {
        this.#onAbort = () => this.close();
        signal.addEventListener("abort", this.#onAbort, { once: true });
      }
    }
  }

  /** Opens the connections. Calling it again, or after `close()`, does nothing. */
  start() {
    if (!this.#engine || this.#closing || this.#dead || this.#share) return;
    if (this.#call((e) => e.state()) !== "idle") return;
    if (this.#shareWanted) {
      const key = this.#call((e) => e.streamKey());
      const window = this.#call((e) => e.dedupWindow()) ?? 0;
      this.#share = new TabShare(key, window, {
        lead: (handover) => this.#lead(handover),
        message: (msg) => this.#follow(msg),
        heartbeat: () => this.#share?.post({ t: "hb", stats: this.#call((e) => e.stats(now(), Date.now())), lastLoss: this.#share.lastLoss }),
      });
      this.#share.start();
      return;
    }
    this.#call((e) => e.start(now(), undefined));
    this.#pump();
  }

  /** `share: true`: this instance won the lock; connect, after the previous holder's loss. */
  #lead({ lastLossWall, keys }) {
    if (this.#closing || this.#dead) return;
    if (keys.high.length > 0) this.#call((e) => e.rememberHits(keys.high, keys.low));
    const lastLoss = lastLossWall === undefined ? undefined : now() - (Date.now() - lastLossWall);
    this.#call((e) => e.start(now(), lastLoss));
    this.#pump();
  }

  /** `share: true`: what the leader broadcast, delivered here as if this instance read it. */
  #follow(msg) {
    if (this.#closing || this.#dead) return;
    switch (msg.t) {
      case "batch": {
        const batch = new HitBatch(msg.c, msg.text, msg.starts, msg.ends, msg.hh, msg.hl, msg.vh, msg.vl, msg.tg, msg.rg, msg.fl);
        this.#deliverBatch(batch, msg.c);
        break;
      }
      case "status":
        this.#invoke("onStatus", msg.v);
        break;
      case "error":
        if (msg.v.fatal) this.#fatal = msg.v;
        this.#invoke("onError", msg.v);
        if (msg.v.fatal) this.#finishIterator();
        break;
      case "hb":
        this.#leaderStats = msg.stats;
        break;
    }
  }

  /**
   * Aborts every request and cancels the timer. Emits at most one final `closed` status per
   * connection while it runs; no callback fires after it returns. Idempotent. The promise
   * settles once every request has ended (sockets released).
   */
  close() {
    if (this.#closing) return this.#closing;
    const engine = this.#engine;
    let outputs = [];
    let hadConnection = false;
    if (engine && !this.#dead) {
      try {
        hadConnection = this.#attempts.size > 0;
        engine.close(now());
        outputs = engine.drain();
        this.#lastStats = engine.stats(now(), Date.now());
        this.#epoch.n++;
        engine.release();
      } catch (e) {
        this.#contain(e);
      }
    }
    this.#disarm();
    for (const o of outputs) {
      if (o.type === "abort") this.#abort(o.attempt);
      else if (o.type === "status" && o.status.state === "closed") this.#invoke("onStatus", o.status);
    }
    this.#silenced = true;
    for (const a of this.#attempts.values()) this.#abortRecord(a);
    if (this.#signal && this.#onAbort) this.#signal.removeEventListener("abort", this.#onAbort);
    this.#finishIterator();
    this.#share?.leave(hadConnection);
    this.#closing = Promise.allSettled([...this.#attempts.values()].map((a) => a.finished)).then(() => undefined);
    return this.#closing;
  }

  /** Counters and the state of each connection, as a fresh plain object. */
  get stats() {
    if (this.#share && this.#share.role === "follower" && !this.#closing) {
      const s = this.#leaderStats ? structuredClone(this.#leaderStats) : this.#call((e) => e.stats(now(), Date.now()));
      s.overflowed = this.#overflowed;
      s.role = "follower";
      return s;
    }
    let s = this.#lastStats;
    if (this.#engine && !this.#dead) {
      s = this.#call((e) => e.stats(now(), Date.now())) ?? s;
    }
    if (!s) s = { hits: 0, bytes: 0, duplicates: 0, malformed: 0, oversized: 0, invalidUtf8: 0, truncated: 0, reconnects: 0, connects: 0, slots: [] };
    else if (s === this.#lastStats) s = structuredClone(s);
    s.overflowed = this.#overflowed;
    if (this.#share) s.role = "leader";
    if (this.#dead) for (const slot of s.slots) slot.state = "failed";
    return s;
  }

  /** `"idle"` before `start()`, `"running"`, `"failed"` after a fatal error, `"closed"` after `close()`. */
  get state() {
    if (this.#closing) return "closed";
    if (this.#dead) return "failed";
    if (!this.#engine) return "closed";
    return this.#call((e) => e.state()) ?? "failed";
  }

  /** Closes, then frees the wasm memory of this client. The object stays usable as a closed stream. */
  free() {
    this.close();
    const engine = this.#engine;
    this.#engine = null;
    this.#epoch.n++;
    if (engine && !this.#dead) {
      try {
        engine.free();
      } catch {
        // Already unusable: nothing to free.
      }
    }
  }

  /** `using stream = new LiveStream(…)`: closes and frees at the end of the scope. */
  [Symbol.dispose]() {
    this.free();
  }

  /** `await using`: closes, frees, and waits until every request has ended. */
  [Symbol.asyncDispose]() {
    const closed = this.close();
    this.free();
    return closed;
  }

  /**
   * `for await (const batch of stream)`: each chunk's new hits as a `HitBatch`, with a bounded
   * buffer (`maxBufferedHits`). Starts the stream if needed; ends when it is closed; throws the
   * fatal error if it fails; `break` closes the stream. When the consumer falls behind by more
   * than the bound, new batches are dropped, counted in `stats.overflowed` and reported once
   * per episode as a `consumer_overflow` error: memory stays bounded and no loss is silent.
   */
  [Symbol.asyncIterator]() {
    return this.batches();
  }

  /** The async iterator of `for await` (see above). One consumer at a time. */
  batches() {
    if (this.#iterator) throw new TypeError("this LiveStream is already being iterated: one consumer at a time");
    const it = { queue: [], buffered: 0, wake: null, overflowing: false, done: false };
    this.#iterator = it;
    if (this.#closing || this.#dead || this.#fatal) it.done = true;
    this.start();
    const next = async () => {
      for (;;) {
        if (it.queue.length > 0) {
          const value = it.queue.shift();
          it.buffered -= value.length;
          if (it.buffered < this.#maxBufferedHits / 2) it.overflowing = false;
          return { value, done: false };
        }
        if (it.done) {
          if (this.#fatal && !it.thrown) {
            it.thrown = true;
            const err = new Error(this.#fatal.message);
            err.code = this.#fatal.code;
            throw err;
          }
          return { value: undefined, done: true };
        }
        await new Promise((resolve) => {
          it.wake = resolve;
        });
      }
    };
    const ret = async () => {
      await this.close();
      return { value: undefined, done: true };
    };
    return { next, return: ret, [Symbol.asyncIterator]() { return this; } };
  }

  // ---- carrying out the engine's outputs -----------------------------------------------

  /** Calls the engine; a throw there is a bug (a Rust panic): contained, never propagated. */
  #call(f) {
    if (!this.#engine || this.#dead) return undefined;
    try {
      return f(this.#engine);
    } catch (e) {
      this.#contain(e);
      return undefined;
    }
  }

  /** After a panic inside this client's engine: abort every request, one fatal error, stop. */
  #contain(e) {
    if (this.#dead) return;
    const message = `livestream-wasm stopped this stream after an internal error (${describeError(e)}); every request was aborted. This is a bug: please report it. New LiveStream objects work.`;
    this.#dead = true;
    this.#fatal = { code: INTERNAL_ERROR, message };
    for (const a of this.#attempts.values()) this.#abortRecord(a);
    this.#disarm();
    const connections = new Set([...this.#attempts.values()].map((a) => a.connection));
    this.#engine = null;
    this.#epoch.n++;
    for (const c of connections) this.#invoke("onStatus", { connection: c, state: "failed", reason: message });
    this.#invoke("onError", { code: INTERNAL_ERROR, message, fatal: true });
    this.#finishIterator();
  }

  /**
   * Carries out every output the engine has queued, in the engine's order. Not re-entrant:
   * an output carried out here may make the engine queue more at once (a token function
   * that throws synchronously, a fetch that throws, a callback that calls `start()`); those
   * are drained after the current ones, so callbacks never see a later status first. Once
   * `close()` ran (inside a callback) or the engine was lost, nothing more is carried out:
   * no request is started after `close()`.
   */
  #pump() {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    let statuses = false;
    try {
      do {
        this.#pumpAgain = false;
        const outputs = this.#call((e) => e.drain());
        if (!outputs) return;
        for (const o of outputs) {
          if (this.#closing || this.#dead) return;
          if (o.type === "status") statuses = true;
          this.#carryOut(o);
        }
      } while (this.#pumpAgain);
    } finally {
      this.#pumping = false;
      // Keep the last known state of each slot, for `stats` after a panic.
      if (statuses && !this.#closing && !this.#dead) this.#lastStats = this.#call((e) => e.stats(now(), Date.now())) ?? this.#lastStats;
    }
  }

  #carryOut(o) {
    switch (o.type) {
      case "connect":
        this.#connect(o);
        break;
      case "read":
      case "readError": {
        const a = this.#attempts.get(o.attempt);
        if (a) a.next = o;
        break;
      }
      case "abort":
        this.#abort(o.attempt);
        break;
      case "status":
        if (this.#share) {
          if (o.status.state === "waiting") this.#share.noteLoss();
          this.#share.post({ t: "status", v: o.status, lastLoss: this.#share.lastLoss });
        }
        this.#invoke("onStatus", o.status);
        break;
      case "error":
        if (o.error.fatal) this.#fatal = o.error;
        this.#share?.post({ t: "error", v: o.error });
        this.#invoke("onError", o.error);
        if (o.error.fatal) this.#finishIterator();
        break;
      case "wait":
        this.#arm(o.at);
        break;
    }
  }

  #arm(at) {
    if (at === null || this.#closing) {
      this.#disarm();
      return;
    }
    // A later deadline is picked up when the armed timer fires (the idle deadline moves with
    // every chunk; re-arming each time would cost a clearTimeout and a setTimeout per chunk).
    if (this.#timer !== null && at >= this.#timerAt) return;
    this.#disarm();
    this.#timerAt = at;
    const wait = Math.min(Math.max(0, at - now()), 2 ** 31 - 1);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAt = Infinity;
      this.#call((e) => e.timeout(now()));
      this.#pump();
    }, wait);
  }

  #disarm() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
  }

  #live(a) {
    return !a.aborted && !this.#closing && !this.#dead && this.#engine !== null;
  }

  #abort(attempt) {
    const a = this.#attempts.get(attempt);
    if (a) this.#abortRecord(a);
  }

  #abortRecord(a) {
    if (a.aborted) return;
    a.aborted = true;
    try {
      a.controller.abort();
    } catch {
      // An injected fetch's signal may misbehave; the reader is cancelled below anyway.
    }
    const cancel = (target) => {
      try {
        const p = target?.cancel?.();
        if (p && typeof p.catch === "function") p.catch(() => {});
      } catch {
        // Nothing more can be done for a body that refuses to cancel.
      }
    };
    if (a.reader) cancel(a.reader);
    else if (a.response) {
      try {
        cancel(a.response.body);
      } catch {
        // A throwing body getter: nothing to cancel.
      }
    }
  }

  /** One attempt, from token to the end of its body. */
  #connect(o) {
    const a = {
      attempt: o.attempt,
      connection: o.connection,
      controller: new AbortController(),
      reader: null,
      response: null,
      aborted: false,
      next: null,
      finished: null,
    };
    this.#attempts.set(o.attempt, a);
    a.finished = this.#run(a, o).finally(() => this.#attempts.delete(a.attempt));
  }

  async #run(a, o) {
    // 1. The token.
    let token = this.#token;
    if (typeof token === "function") {
      try {
        token = await token({ connection: o.connection, refresh: o.refresh });
      } catch (e) {
        if (this.#live(a)) this.#report((en) => en.tokenError(a.attempt, `the token function threw or rejected: ${describeError(e)}`, now()));
        return;
      }
      if (!this.#live(a)) return;
      if (typeof token !== "string") {
        this.#report((en) => en.tokenError(a.attempt, `the token function returned ${describeValue(token)} instead of a string`, now()));
        return;
      }
    }
    let headers;
    try {
      headers = this.#engine.headers(typeof token === "string" ? token : undefined);
    } catch (e) {
      if (typeof e === "string") this.#report((en) => en.tokenError(a.attempt, e, now()));
      else this.#contain(e);
      return;
    }
    // 2. The request.
    if (this.#browser) headers = headers.filter(([k]) => k !== "Accept-Encoding");
    const init = {
      method: "GET",
      headers,
      redirect: this.#browser ? "follow" : "manual",
      cache: "no-store",
      signal: a.controller.signal,
    };
    let res;
    try {
      res = await this.#fetch.call(globalThis, o.url, init);
    } catch (e) {
      if (this.#live(a)) this.#report((en) => en.failure(a.attempt, describeError(e), now()));
      return;
    }
    a.response = res;
    if (!this.#live(a)) {
      this.#abortRecord(a);
      return;
    }
    // 3. The response head (every property of a look-alike Response may throw).
    let head;
    try {
      if (res === null || typeof res !== "object") throw new TypeError(`fetch resolved to ${describeValue(res)} instead of a Response`);
      const get = (name) => {
        try {
          const v = res.headers?.get?.(name);
          return typeof v === "string" ? v : undefined;
        } catch {
          return undefined;
        }
      };
      const status = Number(res.status);
      head = {
        status: Number.isInteger(status) && status >= 0 && status <= 999 ? status : 0,
        location: get("location"),
        retryAfter: get("retry-after"),
        date: get("date"),
        finalUrl: res.redirected === true && typeof res.url === "string" ? res.url : undefined,
      };
    } catch (e) {
      this.#report((en) => en.failure(a.attempt, describeError(e), now()));
      return;
    }
    this.#report((en) => en.response(a.attempt, head.status, head.location, head.retryAfter, head.date, head.finalUrl, Date.now(), now()));
    // 4. What the engine asked for next: read the body, or the first bytes of an error body.
    const next = a.next;
    if (!next || !this.#live(a)) {
      this.#abortRecord(a);
      return;
    }
    if (next.type === "readError") {
      const body = await this.#readSome(a, next.limit);
      if (this.#live(a)) this.#report((en) => en.errorBody(a.attempt, body, now()));
      return;
    }
    await this.#readBody(a);
  }

  /** Runs an engine call about an attempt, then carries out what it queued. */
  #report(f) {
    this.#call(f);
    this.#pump();
  }

  #reader(a) {
    try {
      const body = a.response.body;
      if (!body || typeof body.getReader !== "function") return null;
      a.reader = body.getReader();
      return a.reader;
    } catch {
      return null;
    }
  }

  async #readSome(a, limit) {
    const reader = this.#reader(a);
    const parts = [];
    let size = 0;
    if (reader) {
      let complete = false;
      try {
        while (size < limit) {
          const r = await reader.read();
          if (r.done) {
            complete = true;
            break;
          }
          if (!this.#live(a) || !(r.value instanceof Uint8Array)) break;
          parts.push(r.value.subarray(0, limit - size));
          size += Math.min(r.value.length, limit - size);
        }
      } catch {
        // What was read is the explanation there is.
      }
      if (!complete) {
        try {
          reader.cancel().catch(() => {});
        } catch {
          // A reader that refuses to cancel: the request is aborted with the attempt anyway.
        }
      }
    }
    const body = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      body.set(p, at);
      at += p.length;
    }
    return body;
  }

  async #readBody(a) {
    const reader = this.#reader(a);
    if (!reader) {
      this.#report((en) => en.end(a.attempt, now()));
      return;
    }
    for (;;) {
      let r;
      try {
        r = await reader.read();
      } catch (e) {
        if (this.#live(a)) this.#report((en) => en.failure(a.attempt, describeError(e), now()));
        return;
      }
      if (!this.#live(a)) return;
      let done;
      let chunk;
      try {
        done = r.done;
        chunk = r.value;
      } catch (e) {
        this.#abortRecord(a);
        this.#report((en) => en.failure(a.attempt, `the body reader returned an unreadable result (${describeError(e)})`, now()));
        return;
      }
      if (done) {
        this.#report((en) => en.end(a.attempt, now()));
        return;
      }
      if (!(chunk instanceof Uint8Array)) {
        this.#abortRecord(a);
        this.#report((en) => en.failure(a.attempt, `the response body yielded ${describeValue(chunk)} instead of a Uint8Array`, now()));
        return;
      }
      const shared = isShared(chunk);
      for (let at = 0; at < chunk.length; at += SLICE_BYTES) {
        const part = at === 0 && chunk.length <= SLICE_BYTES ? chunk : chunk.subarray(at, at + SLICE_BYTES);
        const form = this.#textForm(shared);
        const result = this.#feed(a, part, form);
        if (result === undefined) return;
        const hits = result & 0x7fffffff;
        if (hits > 0) {
          const pending = this.#deliver(a, hits, part, form);
          if (result & 0x80000000) this.#pump();
          if (pending) await pending;
        } else if (result & 0x80000000) {
          this.#pump();
        }
        if (!this.#live(a)) return;
      }
    }
  }

  /**
   * How the engine should write the next chunk's hits, by who takes them (null: nobody):
   * - OBJECTS when onHits is their only consumer: they are only parsed into objects, so the
   *   engine writes one all-ASCII JSON array, non-ASCII characters as \u escapes, which
   *   decodes and parses fastest (Chromium: ~10 % less time in decoding and JSON.parse than
   *   three arrays by text class). Nobody sees that text.
   * - REFERENCED when onBatch is: the batches refer to the chunk itself for their text rather
   *   than carry a copy of the engine's. Most onBatch consumers read the typed columns only,
   *   and copying ~64 KiB of text into fresh memory per chunk was ~30 % of their time (Node
   *   and Chromium, from memory). Not for a chunk in `shared` memory, which a batch never
   *   keeps (see isShared).
   * - TEXT otherwise: objects wanted now (onHits), later (the iterator) or elsewhere (tab
   *   sharing) are parsed fastest from the engine's text, so those batches carry a copy.
   */
  #textForm(shared) {
    const { onHits, onBatch } = this.#callbacks;
    const iterating = this.#iterating();
    const sharing = this.#share !== null;
    if (!onBatch && !iterating && !sharing) return onHits ? OBJECTS : null;
    return onBatch && !onHits && !iterating && !sharing && !shared ? REFERENCED : TEXT;
  }

  /** True while a `for await` consumer takes batches. */
  #iterating() {
    const it = this.#iterator;
    return it !== null && !it.done;
  }

  /** Copies a chunk into wasm memory and feeds it to be written in `form`; the engine's packed result. */
  #feed(a, bytes, form) {
    return this.#call((e) => {
      if (bytes.length > this.#inputCap) {
        this.#inputPtr = e.input(bytes.length);
        this.#inputCap = bytes.length;
      }
      new Uint8Array(memory.buffer, this.#inputPtr, bytes.length).set(bytes);
      this.#epoch.n++;
      return e.feed(a.attempt, bytes.length, now(), form === REFERENCED, form === OBJECTS);
    });
  }

  /**
   * Hands the batch the engine just laid out from `chunk`, written in `form` (see #textForm),
   * to the consumers. Returns a promise when a callback returned one (the next chunk of this
   * connection is read after it settles).
   */
  #deliver(a, n, chunk, form) {
    if (form === null) return undefined;
    // Out of wasm memory in one copy: the batch's text as bytes, then the key columns packed
    // by the engine (src/crossing.rs `append_columns`), with views on that copy. The text is
    // decoded only when asked for (hit-batch.js): a consumer of the typed columns alone never
    // pays for decoding. onHits alone parses in place instead, with no copy at all.
    const buf = memory.buffer;
    const L = new Uint32Array(buf, this.#layoutPtr, LAYOUT_WORDS);
    const latin1At = L[5];
    const wideAt = L[6];
    const o = columnOffsets(n);
    if (form === OBJECTS && (L[2] & 3) === 0) {
      // onHits alone: the hits are parsed now, before the next chunk reuses wasm memory, so
      // the text and the offsets are read in place; no copy, no HitBatch.
      const starts = new Uint32Array(buf, L[2] + o.starts, n);
      const ends = new Uint32Array(buf, L[2] + o.ends, n);
      const hits = hitsFromText(batchText(new Uint8Array(buf, L[0], L[1]), latin1At, wideAt), starts, ends);
      return this.#invoke("onHits", hits, { connection: a.connection });
    }
    if (form === REFERENCED) return this.#deliverBatch(this.#referencingBatch(a, n, chunk, buf, L), a.connection);
    // The text, then the columns from `at` (a multiple of 8, so the 64-bit views align).
    const at = L[2] - L[0];
    const copy = new Uint8Array(buf, L[0], at + L[3]).slice().buffer;
    const text = batchText(new Uint8Array(copy, 0, L[1]), latin1At, wideAt);
    const starts = new Uint32Array(copy, at + o.starts, n);
    const ends = new Uint32Array(copy, at + o.ends, n);
    if (form === OBJECTS) {
      return this.#invoke("onHits", hitsFromText(text, starts, ends), { connection: a.connection });
    }
    const batch = columnsBatch(a.connection, text, copy, at, n);
    if (this.#share !== null) {
      // Structured clone copies typed arrays as memcpy; followers rebuild the same HitBatch.
      this.#share.post({
        t: "batch", c: a.connection, text, starts, ends,
        hh: batch.hitIdHigh, hl: batch.hitIdLow, vh: batch.visIdHigh, vl: batch.visIdLow,
        tg: batch.timeGMT, rg: batch.receivedTimeGMT, fl: batch.flags,
      });
    }
    return this.#deliverBatch(batch, a.connection);
  }

  /**
   * The batch of a chunk written REFERENCED (see #textForm): only the columns and
   * the records that are not a slice of `chunk` are copied out of wasm memory; the rest of
   * the text is `chunk` itself, with the engine's quotes put back when a record is read.
   * The engine did not write the batch's text; while no other chunk has been fed, toArray()
   * has it built in wasm memory (Engine.materialize) and parses it there in a few calls.
   */
  #referencingBatch(a, n, chunk, buf, L) {
    const blocks = this.#copyBlocks;
    const packed = copyIntoBlock(blocks, new Uint8Array(buf, L[2], L[3]));
    const columns = packed.buffer;
    const at = packed.byteOffset;
    const o = columnOffsets(n);
    const chunkStarts = new Uint32Array(columns, at + o.chunkStarts, n);
    const starts = new Uint32Array(columns, at + o.starts, n);
    const ends = new Uint32Array(columns, at + o.ends, n);
    let own = null;
    // The engine keeps the records that are not slices of the chunk back to back, in order.
    let cut = L[0];
    for (let i = 0; i < n; i++) {
      if (chunkStarts[i] === NOT_IN_CHUNK) {
        own ??= new Map();
        const length = ends[i] - starts[i];
        own.set(i, copyIntoBlock(blocks, new Uint8Array(buf, cut, length)));
        cut += length;
      }
    }
    const epoch = this.#epoch;
    const fed = epoch.n;
    const textLen = L[8];
    let textPtr = 0;
    const inPlace = () => {
      if (epoch.n !== fed) return null;
      if (textPtr === 0) textPtr = this.#call((e) => e.materialize()) ?? 0;
      // The call may have grown wasm memory: view the buffer as it is now.
      return textPtr === 0 || epoch.n !== fed ? null : new Uint8Array(memory.buffer, textPtr, textLen);
    };
    const text = referencedText({
      chunk, own, chunkStarts, inPlace, latin1At: L[5], wideAt: L[6],
      quoteAt: new Uint32Array(columns, at + o.quoteAt, n + 1),
      quotes: new Uint32Array(columns, at + o.quotes, L[7]),
    });
    return columnsBatch(a.connection, text, columns, at, n);
  }

  /** Hands one batch to onHits, onBatch and the iterator; a promise when a callback returned one. */
  #deliverBatch(batch, connection) {
    const { onHits, onBatch } = this.#callbacks;
    const it = this.#iterator;
    const info = { connection };
    const waits = [];
    if (onHits) {
      const p = this.#invoke("onHits", batch.toArray(), info);
      if (p) waits.push(p);
    }
    if (onBatch && !this.#silenced) {
      const p = this.#invoke("onBatch", batch, info);
      if (p) waits.push(p);
    }
    if (it && !it.done && !this.#silenced) this.#enqueue(it, batch);
    if (waits.length === 0) return undefined;
    return Promise.all(waits);
  }

  #enqueue(it, batch) {
    if (it.buffered + batch.length > this.#maxBufferedHits) {
      this.#overflowed += batch.length;
      if (!it.overflowing) {
        it.overflowing = true;
        this.#invoke("onError", {
          code: CONSUMER_OVERFLOW,
          message: `the async iterator's consumer fell behind by more than maxBufferedHits (${this.#maxBufferedHits}) hits; ${batch.length} hits were dropped (stats.overflowed counts every dropped hit). Consume faster, raise maxBufferedHits, or use onBatch`,
          connection: batch.connection,
          fatal: false,
        });
      }
      return;
    }
    it.queue.push(batch);
    it.buffered += batch.length;
    const wake = it.wake;
    it.wake = null;
    wake?.();
  }

  #finishIterator() {
    const it = this.#iterator;
    if (!it || it.done) return;
    it.done = true;
    const wake = it.wake;
    it.wake = null;
    wake?.();
  }

  /**
   * Calls a user callback. What it throws, or a promise it returns that rejects, goes to
   * `onError` as `callback_error` (or to the console when that is impossible); the stream goes
   * on either way. Returns a promise (that never rejects) when the callback returned one.
   */
  #invoke(name, arg, info) {
    const f = this.#callbacks[name];
    if (!f || this.#silenced) return undefined;
    let r;
    try {
      r = info === undefined ? f.call(undefined, arg) : f.call(undefined, arg, info);
    } catch (e) {
      this.#callbackError(name, `threw: ${describeError(e)}`, e, info?.connection ?? arg?.connection);
      return undefined;
    }
    let then;
    try {
      then = r !== null && (typeof r === "object" || typeof r === "function") ? r.then : undefined;
    } catch (e) {
      this.#callbackError(name, `returned a value whose then getter threw: ${describeError(e)}`, e, undefined);
      return undefined;
    }
    if (typeof then !== "function") return undefined;
    return Promise.resolve(r).then(
      () => undefined,
      (e) => this.#callbackError(name, `returned a promise that rejected: ${describeError(e)}`, e, info?.connection),
    );
  }

  #callbackError(name, what, thrown, connection) {
    const message = `the ${name} callback ${what}; the stream goes on`;
    const onError = this.#callbacks.onError;
    if (name !== "onError" && onError && !this.#silenced) {
      const e = { code: CALLBACK_ERROR, message, fatal: false };
      if (Number.isInteger(connection)) e.connection = connection;
      try {
        const r = onError.call(undefined, e);
        if (r && typeof r.then === "function") Promise.resolve(r).catch((again) => console.error(`livestream-wasm: the onError callback rejected while reporting a callback error: ${describeError(again)}`));
        return;
      } catch (again) {
        console.error("livestream-wasm: the onError callback threw while reporting a callback error:", again);
      }
    }
    console.error(`livestream-wasm: ${message}`, thrown);
  }
}

export { HitBatch };
