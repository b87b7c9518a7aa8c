// Hand-written JavaScript imported by the wasm shell (src/web/batch.rs): turns one chunk's
// hits, which the Rust core wrote as JSON text with the 64-bit ids already quoted, into
// JavaScript values. wasm-bindgen copies this file into pkg/snippets/.
//
// The byte arrays handed in are views of wasm memory, valid only during the call: everything
// kept is copied first.

const decoder = new TextDecoder();

/** Bit in `flags`: the record has hitIdHigh and hitIdLow. */
const HAS_HIT_ID = 1;

/**
 * The hits of one chunk as plain objects. `text` is the batch's JSON text (`[r,r,…]`),
 * `starts`/`ends` the byte range of each record in it.
 *
 * Each record is decoded on its own (bench/crossing.mjs measured this against one
 * `JSON.parse` of the whole array): a record stays a compact one-byte string unless it
 * holds a character above U+00FF itself, which makes `JSON.parse` faster.
 */
export function hitsFromText(text, starts, ends) {
  const n = starts.length;
  const hits = new Array(n);
  for (let i = 0; i < n; i++) {
    hits[i] = JSON.parse(decoder.decode(text.subarray(starts[i], ends[i])));
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
    // Re-base the records on a copy of just their bytes (without the enclosing brackets).
    const n = starts.length;
    const base = n > 0 ? starts[0] : 0;
    const end = n > 0 ? ends[n - 1] : 0;
    this.#text = text.slice(base, end);
    this.#starts = new Uint32Array(n);
    this.#ends = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      this.#starts[i] = starts[i] - base;
      this.#ends[i] = ends[i] - base;
    }
    /** Slot index the chunk came from. */
    this.connection = connection;
    /** Number of hits. */
    this.length = n;
    /** hitIdHigh of each hit (0n when absent: see `flags`). */
    this.hitIdHigh = hitIdHigh.slice();
    /** hitIdLow of each hit (0n when absent). */
    this.hitIdLow = hitIdLow.slice();
    /** visIdHigh of each hit (0n when absent). */
    this.visIdHigh = visIdHigh.slice();
    /** visIdLow of each hit (0n when absent). */
    this.visIdLow = visIdLow.slice();
    /** timeGMT of each hit in Unix seconds (NaN when absent). */
    this.timeGMT = timeGMT.slice();
    /** receivedTimeGMT of each hit in Unix seconds (NaN when absent). */
    this.receivedTimeGMT = receivedTimeGMT.slice();
    /** Per hit: bit 1 = has hitIdHigh/hitIdLow, bit 2 = has visIdHigh/visIdLow. */
    this.flags = flags.slice();
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
    return hitsFromText(this.#text, this.#starts, this.#ends);
  }

  /** Iterates the hits as plain objects, parsing each when reached. */
  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i++) yield this.get(i);
  }
}
