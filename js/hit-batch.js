// One chunk's hits as JavaScript values. The engine (src/crossing.rs) wrote them as JSON text
// with the 64-bit ids quoted, in three regions by text class (all ASCII, Latin-1, wider). The
// host (live-stream.js) hands over a batch text: the ASCII region already decoded into a
// string (decoded straight from wasm memory: no copy of the bytes), and the other two regions
// as copied bytes, decoded only when needed. In Chromium a 64 KiB ArrayBuffer costs ~60 µs to
// allocate and fill, more than everything else the host does per chunk; a decoded one-byte
// string costs a fraction of that, and it is what JSON.parse needs anyway.

const decoder = new TextDecoder();

/** Bit in `flags`: the record has hitIdHigh and hitIdLow. */
const HAS_HIT_ID = 1;

/**
 * The text of a batch: `ascii` is the JSON array of the all-ASCII records as a string (bytes
 * `[0, latin1At)` of the engine's text, so byte offsets there are string offsets); `rest` holds
 * the bytes `[latin1At, end)`: the Latin-1 array up to `wideAt`, then the wider one.
 */
export function batchText(ascii, rest, latin1At, wideAt) {
  return { ascii, rest, latin1At, wideAt };
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
  const ascii = JSON.parse(t.ascii);
  if (ascii.length === n) return ascii;
  const split = t.wideAt - t.latin1At;
  const latin1 = split > 2 ? JSON.parse(decoder.decode(t.rest.subarray(0, split))) : [];
  const wide = t.rest.length - split > 2 ? JSON.parse(decoder.decode(t.rest.subarray(split))) : [];
  if (latin1.length === n) return latin1;
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
    if (s < t.latin1At) return t.ascii.slice(s, this.#ends[i]);
    return decoder.decode(t.rest.subarray(s - t.latin1At, this.#ends[i] - t.latin1At));
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
