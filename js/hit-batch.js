// One chunk's hits as JavaScript values. The engine (src/crossing.rs) wrote them as JSON text
// with the 64-bit ids quoted, in three regions by text class (all ASCII, Latin-1, wider): three
// JSON arrays back to back. The host (live-stream.js) hands over that text as bytes, copied out
// of wasm memory once together with the key columns, and nothing is decoded until a consumer
// asks for records: a dashboard that reads the typed columns alone never pays for decoding.
// (In Chromium, decoding the text into strings up front cost ~10 % of an onBatch consumer's
// time on top of the copy the columns need anyway.)

const decoder = new TextDecoder();

/** Bit in `flags`: the record has hitIdHigh and hitIdLow. */
const HAS_HIT_ID = 1;

/**
 * The text of a batch: `bytes` is the engine's text (`[ascii…][latin1…][wide…]`), byte
 * offsets as in the engine's `starts`/`ends`; the Latin-1 array starts at `latin1At`, the wide
 * one at `wideAt`. `ascii` caches the first array decoded (byte offsets there are string
 * offsets), filled on first use.
 */
export function batchText(bytes, latin1At, wideAt) {
  return { bytes, latin1At, wideAt, ascii: null };
}

/** The ASCII records' array as a string, decoded once per batch. */
function asciiText(t) {
  if (t.ascii === null) t.ascii = decoder.decode(t.bytes.subarray(0, t.latin1At));
  return t.ascii;
}

/** One region (`[from, to)` of the text) parsed, or [] when it holds no record (`[]`). */
function parseRegion(t, from, to) {
  return to - from > 2 ? JSON.parse(decoder.decode(t.bytes.subarray(from, to))) : [];
}

/**
 * The hits of one chunk as plain objects, in stream order. `starts`/`ends` are the byte range
 * of each record in the engine's text (`starts[i]` says which region hit `i` is in).
 *
 * One JSON.parse per region instead of per record (a binding call costs much in Blink). The
 * regions keep each record in its fastest form: pure ASCII decodes at memcpy speed (one
 * Latin-1 character would slow the decoding of a whole string), and only the last region is
 * made of two-byte strings, which slow JSON.parse.
 */
export function hitsFromText(t, starts, ends) {
  const n = starts.length;
  const ascii = JSON.parse(asciiText(t));
  if (ascii.length === n) return ascii;
  const latin1 = parseRegion(t, t.latin1At, t.wideAt);
  if (latin1.length === n) return latin1;
  const wide = parseRegion(t, t.wideAt, t.bytes.length);
  if (wide.length === n) return wide;
  const hits = new Array(n);
  let a = 0;
  let b = 0;
  let c = 0;
  for (let i = 0; i < n; i++) {
    const s = starts[i];
    hits[i] = s < t.latin1At ? ascii[a++] : s < t.wideAt ? latin1[b++] : wide[c++];
  }
  return hits;
}

/**
 * One chunk's new hits for `onBatch`: the key fields as typed arrays, the records as text
 * parsed only when asked for. Everything is copied out of wasm memory, so a batch stays valid
 * after the callback returns.
 */
export class HitBatch {
  #text;
  #starts;
  #ends;

  constructor(connection, text, starts, ends, hitIdHigh, hitIdLow, visIdHigh, visIdLow,
    timeGMT, receivedTimeGMT, flags) {
    // The text (see batchText) and the arrays are the host's own copies: kept as they are.
    this.#text = text;
    this.#starts = starts;
    this.#ends = ends;
    /** Slot index the chunk came from. */
    this.connection = connection;
    /** Number of hits. */
    this.length = starts.length;
    /** hitIdHigh of each hit (0n when absent: see `flags`). */
    this.hitIdHigh = hitIdHigh;
    /** hitIdLow of each hit (0n when absent). */
    this.hitIdLow = hitIdLow;
    /** visIdHigh of each hit (0n when absent). */
    this.visIdHigh = visIdHigh;
    /** visIdLow of each hit (0n when absent). */
    this.visIdLow = visIdLow;
    /** timeGMT of each hit in Unix seconds (NaN when absent). */
    this.timeGMT = timeGMT;
    /** receivedTimeGMT of each hit in Unix seconds (NaN when absent). */
    this.receivedTimeGMT = receivedTimeGMT;
    /** Per hit: bit 1 = has hitIdHigh/hitIdLow, bit 2 = has visIdHigh/visIdLow. */
    this.flags = flags;
    Object.freeze(this);
  }

  #check(i) {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) {
      throw new RangeError(`HitBatch index ${i} is out of range (length ${this.length})`);
    }
  }

  /** The hit id of hit `i` as exact decimal strings, or undefined when the record has none. */
  id(i) {
    this.#check(i);
    if ((this.flags[i] & HAS_HIT_ID) === 0) return undefined;
    return { hitIdHigh: this.hitIdHigh[i].toString(), hitIdLow: this.hitIdLow[i].toString() };
  }

  /** The JSON text of hit `i`, ids quoted. */
  text(i) {
    this.#check(i);
    const t = this.#text;
    const s = this.#starts[i];
    const e = this.#ends[i];
    if (s < t.latin1At && t.ascii !== null) return t.ascii.slice(s, e);
    return decoder.decode(t.bytes.subarray(s, e));
  }

  /** Hit `i` as a plain object (parsed now, on each call). */
  get(i) {
    return JSON.parse(this.text(i));
  }

  /** Every hit as a plain object. */
  toArray() {
    return hitsFromText(this.#text, this.#starts, this.#ends);
  }

  /** Iterates the hits as plain objects, parsing each when reached. */
  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i++) yield this.get(i);
  }
}
