// One chunk's hits as JavaScript values. The engine (src/crossing.rs) wrote them as JSON text
// with the 64-bit ids quoted, in three regions by text class; the host (live-stream.js) copies
// the text and the key columns out of wasm memory and hands the copies in here.

const decoder = new TextDecoder();

/** Bit in `flags`: the record has hitIdHigh and hitIdLow. */
const HAS_HIT_ID = 1;

/**
 * The hits of one chunk as plain objects, in stream order. `text` is the batch's JSON text:
 * three arrays back to back, `[r,…][r,…][r,…]`: `text[0, latin1At)` holds the records that
 * are all ASCII, `text[latin1At, wideAt)` those with characters up to U+00FF, and
 * `text[wideAt, end)` the others. `starts`/`ends` are the byte range of each record in
 * `text` (`starts[i]` says which array hit `i` is in).
 *
 * Each region is decoded and parsed in one go: one TextDecoder call and one JSON.parse per
 * region instead of per record (a binding call costs much in Blink). The regions keep each
 * record in its fastest form: pure ASCII decodes at memcpy speed (one Latin-1 character
 * would slow the decoding of the whole string), and only the last region is made of
 * two-byte strings, which slow JSON.parse.
 */
export function hitsFromText(text, starts, ends, latin1At, wideAt) {
  const n = starts.length;
  const ascii = JSON.parse(decoder.decode(text.subarray(0, latin1At)));
  if (ascii.length === n) return ascii;
  const latin1 = wideAt - latin1At > 2 ? JSON.parse(decoder.decode(text.subarray(latin1At, wideAt))) : [];
  const wide = text.length - wideAt > 2 ? JSON.parse(decoder.decode(text.subarray(wideAt))) : [];
  if (latin1.length === n) return latin1;
  if (wide.length === n) return wide;
  const hits = new Array(n);
  let a = 0;
  let b = 0;
  let c = 0;
  for (let i = 0; i < n; i++) {
    const s = starts[i];
    hits[i] = s < latin1At ? ascii[a++] : s < wideAt ? latin1[b++] : wide[c++];
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
  #latin1At;
  #wideAt;

  constructor(connection, text, latin1At, wideAt, starts, ends, hitIdHigh, hitIdLow, visIdHigh, visIdLow,
    timeGMT, receivedTimeGMT, flags) {
    // The arrays are the host's own copies (out of wasm memory): kept as they are.
    this.#text = text;
    this.#latin1At = latin1At;
    this.#wideAt = wideAt;
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
    return decoder.decode(this.#text.subarray(this.#starts[i], this.#ends[i]));
  }

  /** Hit `i` as a plain object (parsed now, on each call). */
  get(i) {
    return JSON.parse(this.text(i));
  }

  /** Every hit as a plain object. */
  toArray() {
    return hitsFromText(this.#text, this.#starts, this.#ends, this.#latin1At, this.#wideAt);
  }

  /** Iterates the hits as plain objects, parsing each when reached. */
  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i++) yield this.get(i);
  }
}
