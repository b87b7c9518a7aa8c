// One chunk's hits as JavaScript values. The engine (src/crossing.rs) wrote them as JSON text
// with the 64-bit ids quoted, in three regions by text class (all ASCII, Latin-1, wider): three
// JSON arrays back to back. The host (live-stream.js) hands over that text as bytes, copied out
// of wasm memory once together with the key columns, and nothing is decoded until a consumer
// asks for records: a dashboard that reads the typed columns alone never pays for decoding.
// When onBatch is the only consumer, the batch does not copy the text at all: it refers to
// the chunk the records came from (referencedText). When onHits is, the engine writes every
// record into the first array, non-ASCII characters as \u escapes (the other two are []).
// (In Chromium, decoding the text into strings up front cost ~10 % of an onBatch consumer's
// time on top of the copy the columns need anyway.)

const decoder = new TextDecoder();

/** Bit in `flags`: the record has hitIdHigh and hitIdLow. */
const HAS_HIT_ID = 1;

/** A referenced batch's `chunkStarts` entry for a record that is not a slice of its chunk. */
export const NOT_IN_CHUNK = 0xffffffff;

/** The byte `"`, put back around bare ids when a referenced record is read. */
const QUOTE = 34;

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
 * The text of a batch that refers to the chunk it came from instead of holding a copy of
 * the engine's text (src/crossing.rs `Batch::reference_input`):
 * - `chunk`: the bytes fed; record `i` is `chunk` from `chunkStarts[i]` with a `"` put back
 *   before each offset `quotes[quoteAt[i] .. quoteAt[i + 1]]` (the engine's quoted ids);
 * - `own`: a Map from index to the engine's text of the records that are not slices of the
 *   chunk (`chunkStarts[i] === NOT_IN_CHUNK`: begun in an earlier chunk, inflated, repaired);
 * - `inPlace()`: the engine's text in wasm memory (three regions, as for batchText, split at
 *   `latin1At`/`wideAt`), built on the first call, while the chunk is still there; else null.
 */
export function referencedText({ chunk, own, chunkStarts, quoteAt, quotes, inPlace, latin1At, wideAt }) {
  return { ref: true, chunk, own, chunkStarts, quoteAt, quotes, inPlace, latin1At, wideAt };
}

/** The UTF-8 bytes of record `i` of a referenced text whose engine text spans `[s, e)`. */
function referencedBytes(t, i, s, e) {
  const own = t.own?.get(i);
  if (own !== undefined) return own;
  const q0 = t.quoteAt[i];
  const q1 = t.quoteAt[i + 1];
  const start = t.chunkStarts[i];
  const end = start + (e - s) - (q1 - q0);
  if (q0 === q1) return t.chunk.subarray(start, end);
  const out = new Uint8Array(e - s);
  let o = 0;
  let at = start;
  for (let k = q0; k < q1; k++) {
    const q = t.quotes[k];
    out.set(t.chunk.subarray(at, q), o);
    o += q - at;
    out[o++] = QUOTE;
    at = q;
  }
  out.set(t.chunk.subarray(at, end), o);
  return out;
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
 * parsed only when asked for. The columns are copied out of wasm memory and the text is a
 * copy or the chunk itself (read in wasm memory only while the engine has not moved on), so a
 * batch stays valid after the callback returns.
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
    if (t.ref) return decoder.decode(referencedBytes(t, i, s, e));
    if (s < t.latin1At && t.ascii !== null) return t.ascii.slice(s, e);
    return decoder.decode(t.bytes.subarray(s, e));
  }

  /** Hit `i` as a plain object (parsed now, on each call). */
  get(i) {
    return JSON.parse(this.text(i));
  }

  /**
   * Every hit as a plain object. A batch handed to `onBatch` alone parses them in a few
   * calls during the callback, record by record after it (see the README).
   */
  toArray() {
    const t = this.#text;
    if (!t.ref) return hitsFromText(t, this.#starts, this.#ends);
    const inPlace = t.inPlace();
    if (inPlace !== null) return hitsFromText(batchText(inPlace, t.latin1At, t.wideAt), this.#starts, this.#ends);
    const hits = new Array(this.length);
    for (let i = 0; i < this.length; i++) hits[i] = JSON.parse(decoder.decode(referencedBytes(t, i, this.#starts[i], this.#ends[i])));
    return hits;
  }

  /** Iterates the hits as plain objects, parsing each when reached. */
  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i++) yield this.get(i);
  }
}
