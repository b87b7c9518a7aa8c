//! The TypeScript declarations of the public surface, appended to the generated `.d.ts`,
//! and the extern types that make the generated signatures use them (no `any`).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/**
 * One hit: the record exactly as Live Stream sent it (every field kept, unknown ones too),
 * except that the six top-level 64-bit id fields are decimal strings with the exact digits.
 */
export interface Hit {
  hitIdHigh?: string;
  hitIdLow?: string;
  visIdHigh?: string;
  visIdLow?: string;
  mcVisIdHigh?: string;
  mcVisIdLow?: string;
  /** Unix seconds. */
  timeGMT?: number;
  /** Unix seconds. */
  receivedTimeGMT?: number;
  reportSuite?: string;
  [field: string]: unknown;
}

/** The second argument of `onHits` and `onBatch`. */
export interface HitInfo {
  /** Index of the connection slot the hits came from (0 .. connections-1). */
  connection: number;
}

/** The exact hit id of one hit of a `HitBatch`. */
export interface HitId {
  hitIdHigh: string;
  hitIdLow: string;
}

/**
 * The new hits of one received chunk, for `onBatch`: the key fields as typed arrays, the
 * records parsed only when asked for. It stays valid after the callback returns.
 */
export interface HitBatch extends Iterable<Hit> {
  /** Index of the connection slot. */
  readonly connection: number;
  /** Number of hits. */
  readonly length: number;
  /** hitIdHigh per hit (0n when the record has none: see `flags`). */
  readonly hitIdHigh: BigUint64Array;
  /** hitIdLow per hit (0n when absent). */
  readonly hitIdLow: BigUint64Array;
  /** visIdHigh per hit (0n when absent). */
  readonly visIdHigh: BigUint64Array;
  /** visIdLow per hit (0n when absent). */
  readonly visIdLow: BigUint64Array;
  /** timeGMT per hit, Unix seconds (NaN when absent). */
  readonly timeGMT: Float64Array;
  /** receivedTimeGMT per hit, Unix seconds (NaN when absent). */
  readonly receivedTimeGMT: Float64Array;
  /** Per hit: bit 1 = has hitIdHigh/hitIdLow, bit 2 = has visIdHigh/visIdLow. */
  readonly flags: Uint8Array;
  /** The hit id of hit `i` as exact decimal strings, or undefined when it has none. */
  id(i: number): HitId | undefined;
  /** The JSON text of hit `i` (ids quoted). */
  text(i: number): string;
  /** Hit `i` as a plain object, parsed on each call. */
  get(i: number): Hit;
  /** Every hit as a plain object. */
  toArray(): Hit[];
  [Symbol.iterator](): Iterator<Hit>;
}

/** The state of one connection slot. */
export type ConnectionState = "idle" | "connecting" | "open" | "waiting" | "closed" | "failed";

/** The state of the whole client (`stream.state`). */
export type LiveStreamState = "idle" | "running" | "closed" | "failed";

/** A change of a connection slot's state, for `onStatus`. */
export interface StatusEvent {
  /** Slot index. */
  connection: number;
  state: ConnectionState;
  /** The HTTP status behind the change, when there is one. */
  httpStatus?: number;
  /** While `waiting`: the wait actually scheduled before the next attempt, in ms. */
  retryInMs?: number;
  /** Why, in words a user can act on. */
  reason: string;
}

/** The `code` of an `ErrorEvent`. */
export type ErrorCode =
  | "bad_request" | "unauthorized" | "forbidden" | "not_found" | "method_not_allowed"
  | "not_acceptable" | "conflict" | "too_many_requests" | "server_error" | "unavailable"
  | "http_version_not_supported" | "unexpected_status" | "too_many_redirects"
  | "bad_redirect" | "cross_origin_redirect" | "network_error" | "idle_timeout"
  | "stream_ended" | "token_error" | "malformed_record" | "oversized_record"
  | "invalid_utf8" | "truncated_record" | "gzip_error" | "callback_error";

/** A problem, for `onError`. Only `fatal` ones stop the client. */
export interface ErrorEvent {
  code: ErrorCode;
  /** What happened and what to do. */
  message: string;
  /** Slot index, when it concerns one connection. */
  connection?: number;
  /** HTTP status, when there is one. */
  httpStatus?: number;
  fatal: boolean;
}

/** The argument of a token function. */
export interface TokenRequest {
  /** Slot index of the connection about to be made. */
  connection: number;
  /** True right after a 401: the previous token was refused. */
  refresh: boolean;
}

/** A function giving an access token, called before each connect and after a 401. */
export type TokenProvider = (request: TokenRequest) => string | PromiseLike<string>;

/** The second argument the client passes to `fetch`. */
export interface LiveStreamRequestInit {
  method: "GET";
  headers: Record<string, string>;
  redirect: "manual" | "follow";
  cache: "no-store";
  signal?: AbortSignal;
}

/** What the client reads of a fetch `Response`. */
export interface LiveStreamResponse {
  readonly status: number;
  readonly url?: string;
  readonly redirected?: boolean;
  readonly headers: { get(name: string): string | null };
  readonly body: ReadableStream<Uint8Array> | null;
}

/** A fetch function (the global one, or one injected for proxies and tests). */
export type LiveStreamFetch = (url: string, init: LiveStreamRequestInit) => Promise<LiveStreamResponse>;

/** The options of `new LiveStream(options)`; see the README for defaults and ranges. */
export interface LiveStreamOptions {
  /** The stream URL, e.g. `https://livestream.adobe.net/api/1/stream/<endpoint>`; relative in a page. */
  url: string;
  /** An access token, or a function returning one (or a promise of one). */
  token?: string | TokenProvider;
  /** Sent as `x-api-key`. */
  apiKey?: string;
  /** 1..8, sent on every request. Default 1. */
  maxConnections?: number;
  /** Connections this client opens, 1..maxConnections. Default maxConnections. */
  connections?: number;
  smoothing?: boolean;
  /** Seconds, 1..7200, only with `smoothing: true`. */
  smoothingBucketSize?: number;
  /** Where a new stream starts; sent on the first connection only. */
  reset?: "smallest" | "largest";
  /** Minimum wait after any loss. Default 60000 (KA-16598); below that Adobe answers 409/503. */
  reconnectDelayMs?: number;
  /** Random extra wait on top of each reconnect delay (never less). */
  reconnectJitterMs?: number;
  /** Cap of the growing wait after repeated failures. */
  maxReconnectDelayMs?: number;
  /** Silence after which a connection counts as lost; 0 turns it off. */
  idleTimeoutMs?: number;
  /** Largest record accepted, in bytes. */
  maxRecordBytes?: number;
  /** Recent hit ids remembered to drop duplicates; 0 turns it off. */
  dedupWindow?: number;
  /** A fetch to use instead of the global one. */
  fetch?: LiveStreamFetch;
  /** Fixes the reconnect jitter (tests). */
  seed?: number;
  /** New hits as plain objects. */
  onHits?: (hits: Hit[], info: HitInfo) => void;
  /** New hits as a `HitBatch` (fast path: typed arrays, lazy parsing). */
  onBatch?: (batch: HitBatch, info: HitInfo) => void;
  onStatus?: (status: StatusEvent) => void;
  onError?: (error: ErrorEvent) => void;
}

/** One connection slot in `stream.stats`. */
export interface SlotStats {
  connection: number;
  state: ConnectionState;
  /** Unix time in ms when the slot entered `state`. */
  since: number;
  /** The last HTTP status seen. */
  httpStatus?: number;
  /** While `waiting`: ms until the next attempt. */
  nextAttemptInMs?: number;
  reason: string;
  hits: number;
  bytes: number;
  connects: number;
}

/** `stream.stats`: counters of the whole client and each slot. */
export interface Stats {
  /** Hits delivered (duplicates excluded). */
  hits: number;
  /** Body bytes received. */
  bytes: number;
  duplicates: number;
  malformed: number;
  oversized: number;
  invalidUtf8: number;
  truncated: number;
  /** Attempts made after a loss. */
  reconnects: number;
  /** Requests made in all (redirect hops included). */
  connects: number;
  slots: SlotStats[];
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The options object (`LiveStreamOptions` in TypeScript).
    #[wasm_bindgen(typescript_type = "LiveStreamOptions")]
    pub type LiveStreamOptions;

    /// The `stats` object (`Stats` in TypeScript).
    #[wasm_bindgen(typescript_type = "Stats")]
    pub type StatsObject;

    /// The `state` string (`LiveStreamState` in TypeScript).
    #[wasm_bindgen(typescript_type = "LiveStreamState")]
    pub type ClientState;
}
