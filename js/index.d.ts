// Types of livestream-wasm. The option list is checked against the core's schema
// (src/core/config.rs OPTIONS) and the error codes against ErrorCode::ALL by `cargo test`
// (tests/schema.rs).

/** A hit: the Live Stream record as a plain object, every field kept (unknown ones too). */
export interface Hit {
  /** Exact decimal string (JSON.parse would round the number). */
  hitIdHigh?: string;
  hitIdLow?: string;
  visIdHigh?: string;
  visIdLow?: string;
  mcVisIdHigh?: string;
  mcVisIdLow?: string;
  /** Unix seconds. */
  timeGMT?: number;
  receivedTimeGMT?: number;
  reportSuite?: string;
  pageName?: string;
  pageURL?: string;
  referrer?: string;
  geoCountry?: string;
  geoRegion?: string;
  geoCity?: string;
  browser?: string;
  operatingSystem?: string;
  ip?: string;
  visIdType?: number;
  bot?: string;
  truncated?: boolean;
  evars?: Record<string, unknown>;
  props?: Record<string, unknown>;
  events?: Record<string, unknown>;
  products?: Array<Record<string, unknown>>;
  [field: string]: unknown;
}

/** The second argument of `onHits` and `onBatch`. */
export interface HitInfo {
  /** The connection slot the hits came from, 0-based. */
  connection: number;
}

interface StatusBase {
  /** The connection slot, 0-based. */
  connection: number;
  /** The HTTP status behind the change, when there is one. */
  httpStatus?: number;
  /** Why, in words a user can act on (while waiting, it ends with when the next attempt is). */
  reason: string;
  /** Why, without when the next attempt is: `reason` except while waiting, for a page that shows `retryInMs` as a live countdown beside it. */
  cause: string;
}

/** A connection's change of state, for `onStatus`; `retryInMs` comes with `waiting`. */
export type StatusEvent =
  | (StatusBase & { state: "connecting" | "open" | "closed" | "failed" })
  | (StatusBase & { state: "waiting"; /** The wait actually scheduled. */ retryInMs: number });

/** Every `code` an `onError` event can carry. */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "not_acceptable"
  | "conflict"
  | "too_many_requests"
  | "server_error"
  | "unavailable"
  | "http_version_not_supported"
  | "unexpected_status"
  | "too_many_redirects"
  | "bad_redirect"
  | "cross_origin_redirect"
  | "network_error"
  | "idle_timeout"
  | "stream_ended"
  | "token_error"
  | "malformed_record"
  | "oversized_record"
  | "invalid_utf8"
  | "truncated_record"
  | "gzip_error"
  | "callback_error"
  | "internal_error"
  | "consumer_overflow";

/** A problem, for `onError`. Bad records and network losses are not fatal. */
export interface ErrorEvent {
  code: ErrorCode;
  message: string;
  connection?: number;
  httpStatus?: number;
  /** True when the client stopped for good. */
  fatal: boolean;
}

/** One connection slot in `stats.slots`. */
export interface SlotStats {
  connection: number;
  state: "idle" | "connecting" | "open" | "waiting" | "closed" | "failed";
  /** Unix ms when the slot entered its state. */
  since: number;
  httpStatus?: number;
  /** While waiting: ms until the next attempt. */
  nextAttemptInMs?: number;
  reason: string;
  hits: number;
  bytes: number;
  connects: number;
}

/** `stream.stats`: a fresh object on each read. */
export interface Stats {
  hits: number;
  bytes: number;
  duplicates: number;
  malformed: number;
  oversized: number;
  invalidUtf8: number;
  truncated: number;
  reconnects: number;
  connects: number;
  /** Hits dropped because the async iterator's consumer fell behind (maxBufferedHits). */
  overflowed: number;
  slots: SlotStats[];
  /** With `share: true`: whether this instance holds the connections or follows the one that does. */
  role?: "leader" | "follower";
}

/** Passed to a token function. */
export interface TokenRequest {
  /** The connection slot asking. */
  connection: number;
  /** True right after a 401: return a fresh token, not a cached one. */
  refresh: boolean;
}

/** The options of `new LiveStream(options)`; see the README for defaults and ranges. */
export interface LiveStreamOptions {
  /** The stream, `…/api/1/stream/<endpoint-name>` (relative in a browser). */
  url: string;
  /** OAuth access token, or a function called before each connect and after a 401. */
  token?: string | ((request: TokenRequest) => string | Promise<string>);
  /** Sent as `x-api-key` (the client id). */
  apiKey?: string;
  /** 1–8, sent on every request; every client of the stream must send the same value. */
  maxConnections?: number;
  /** Connection slots this client opens, 1–maxConnections (default maxConnections). */
  connections?: number;
  smoothing?: boolean;
  /** 1–7200 s, only with `smoothing: true`. */
  smoothingBucketSize?: number;
  /** Where a new stream starts; sent on a slot's first connection only. */
  reset?: "smallest" | "largest";
  /** Minimum wait after any loss (default 60 000). Below ~60 000 Adobe answers 409/503. */
  reconnectDelayMs?: number;
  /** Random extra wait, only ever added (default delay / 4, at most 15 000). */
  reconnectJitterMs?: number;
  /** Cap of the doubling wait after failed attempts, and of Retry-After (default 240 000). */
  maxReconnectDelayMs?: number;
  /** Silence after which a connection is presumed dead (default 600 000; 0 = off). */
  idleTimeoutMs?: number;
  /** Larger records are skipped and reported (default 1 MiB). */
  maxRecordBytes?: number;
  /** Recent hit ids remembered to drop duplicates (default 100 000; 0 = off). */
  dedupWindow?: number;
  /** Origins besides the stream's own that may receive the credentials on a redirect. */
  redirectOrigins?: string[];
  /** For Node proxies, relays and tests (default: the platform's; node:http in Node). */
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  /** Seed of the reconnect jitter (reproducible tests). */
  seed?: number;
  /** Aborting it closes the stream. */
  signal?: AbortSignal;
  /** Bound of the async iterator's buffer, in hits (default 10 000). */
  maxBufferedHits?: number;
  /**
   * Share one set of connections with every LiveStream of this origin that has the same
   * stream options (tabs, windows, iframes, workers): one leader connects, everyone receives.
   * Needs Web Locks and BroadcastChannel (browsers); throws in Node.
   */
  share?: boolean;
  /** New hits of one chunk as plain objects. A returned promise is awaited before the next chunk of that connection. */
  onHits?: (hits: Hit[], info: HitInfo) => void | Promise<void>;
  /** The fast path: the same hits as a `HitBatch`. A returned promise is awaited likewise. */
  onBatch?: (batch: HitBatch, info: HitInfo) => void | Promise<void>;
  onStatus?: (status: StatusEvent) => void | Promise<void>;
  onError?: (error: ErrorEvent) => void | Promise<void>;
}

/**
 * One chunk's new hits: typed columns of the key fields, records parsed on demand. Valid
 * after the callback. From `onBatch` as the only consumer, a batch refers to the received
 * chunk rather than a copy of its text (keeping a batch keeps that chunk and, for a small
 * batch, the 64 KiB block its columns share with neighbouring batches), and `toArray()`
 * after the callback parses record by record.
 */
export class HitBatch implements Iterable<Hit> {
  private constructor();
  /** The connection slot the chunk came from. */
  readonly connection: number;
  readonly length: number;
  /**
   * 0n where the record has no hit id (see `flags`). The columns are views that share one
   * ArrayBuffer with each other (and, from `onBatch` alone, with neighbouring batches):
   * `slice()` a column before transferring its buffer to a worker.
   */
  readonly hitIdHigh: BigUint64Array;
  readonly hitIdLow: BigUint64Array;
  readonly visIdHigh: BigUint64Array;
  readonly visIdLow: BigUint64Array;
  /** Unix seconds, NaN when absent. */
  readonly timeGMT: Float64Array;
  readonly receivedTimeGMT: Float64Array;
  /** Per hit: bit 1 = has a hit id, bit 2 = has a visitor id. */
  readonly flags: Uint8Array;
  /** The hit id as exact decimal strings, or undefined when the record has none. */
  id(i: number): { hitIdHigh: string; hitIdLow: string } | undefined;
  /** The record's JSON text (ids as strings). */
  text(i: number): string;
  /** Hit `i` as a plain object, parsed on each call. */
  get(i: number): Hit;
  /** Every hit as a plain object. */
  toArray(): Hit[];
  [Symbol.iterator](): Iterator<Hit>;
}

/** A polite Live Stream client (Adobe KA-16598): connects once, keeps reading, waits after a loss. */
export class LiveStream implements AsyncIterable<HitBatch> {
  /** Throws a TypeError or RangeError naming the option, the value and what is allowed. */
  constructor(options: LiveStreamOptions);
  /** Opens the connections; again, or after close(), does nothing. */
  start(): void;
  /** Aborts every request and the timer; resolves once every request has ended. Idempotent. */
  close(): Promise<void>;
  /** Closes, then frees the wasm memory; the object stays usable as a closed stream. */
  free(): void;
  readonly stats: Stats;
  readonly state: "idle" | "running" | "closed" | "failed";
  [Symbol.dispose](): void;
  [Symbol.asyncDispose](): Promise<void>;
  /** Each chunk's hits; bounded buffer (maxBufferedHits); `break` closes the stream. */
  [Symbol.asyncIterator](): AsyncIterator<HitBatch>;
  batches(): AsyncIterableIterator<HitBatch>;
}

/** One option of the client, from the core's schema (the one definition of names, defaults and ranges). */
export interface OptionSpec {
  name: string;
  kind: "url" | "token" | "string" | "boolean" | "choice" | "integer" | "origins";
  /** The default, in words. */
  default: string;
  /** What is allowed, in words (the same text constructor errors use). */
  allowed: string;
  meaning: string;
  min?: number;
  max?: number;
  values?: string[];
}

/** The stream options the client checks, with defaults and ranges. Call after `init()`. */
export function optionSchema(): OptionSpec[];

/** What `init()` resolves to: the wasm instance's exports (rarely needed). */
export type InitOutput = WebAssembly.Exports;

/** Loads the .wasm; call once before `new LiveStream(…)`. Resolves at once in Node. */
export default function init(
  moduleOrPath?: { module_or_path: RequestInfo | URL | Response | BufferSource | WebAssembly.Module } | RequestInfo | URL,
): Promise<InitOutput>;

/** Instantiates the .wasm synchronously from bytes or a compiled module. */
export function initSync(module: { module: BufferSource | WebAssembly.Module } | BufferSource | WebAssembly.Module): InitOutput;
