// Bounded, allocation-light aggregates fed from the client's callbacks.
// Nothing here touches the DOM: callbacks only update these, and app.js renders them at
// most once per animation frame. Every structure has a fixed upper bound on its memory.

/** Hits per second over a fixed window of one-second buckets (a ring). */
export class RateSeries {
  constructor(seconds = 300) {
    this.n = seconds;
    this.counts = new Float64Array(seconds);
    // Per second: bit 1 = a connection was open at some point, bit 2 = none was open.
    this.flags = new Uint8Array(seconds);
    this.head = -1; // the newest second (Unix seconds) the ring holds
    this.firstSec = -1; // the second data collection started (for short averages)
  }

  reset() {
    this.counts.fill(0);
    this.flags.fill(0);
    this.head = -1;
    this.firstSec = -1;
  }

  /** Moves the ring forward to `sec`, clearing the seconds skipped. */
  advance(sec) {
    if (this.head < 0) {
      this.head = sec;
      this.counts[sec % this.n] = 0;
      this.flags[sec % this.n] = 0;
      return;
    }
    if (sec <= this.head) return;
    const steps = Math.min(sec - this.head, this.n);
    for (let i = 1; i <= steps; i++) {
      const j = (sec - steps + i) % this.n;
      this.counts[j] = 0;
      this.flags[j] = 0;
    }
    this.head = sec;
  }

  start(nowMs) {
    const sec = Math.floor(nowMs / 1000);
    this.advance(sec);
    if (this.firstSec < 0) this.firstSec = sec;
  }

  add(count, nowMs) {
    const sec = Math.floor(nowMs / 1000);
    this.advance(sec);
    if (this.firstSec < 0) this.firstSec = sec;
    if (sec > this.head - this.n) this.counts[sec % this.n] += count;
  }

  /** Records whether any connection is open right now (for shading the gaps). */
  noteOpen(nowMs, anyOpen) {
    const sec = Math.floor(nowMs / 1000);
    this.advance(sec);
    this.flags[sec % this.n] |= anyOpen ? 1 : 2;
  }

  /** Average hits/s over the last `window` complete seconds (fewer right after the start). */
  rate(nowMs, window = 10) {
    const sec = Math.floor(nowMs / 1000);
    this.advance(sec);
    if (this.firstSec < 0) return 0;
    const span = Math.min(window, sec - this.firstSec, this.n - 1);
    if (span <= 0) return 0;
    let sum = 0;
    for (let s = sec - span; s < sec; s++) sum += this.counts[s % this.n];
    return sum / span;
  }

  /**
   * The chart columns, oldest first, ending with the last complete second: the whole
   * window once it has filled, before that the time since the start (at least `minSeconds`).
   * Writes into the given arrays (reused between calls) and returns them.
   */
  fill(nowMs, xs, ys, gaps, minSeconds = 60) {
    const sec = Math.floor(nowMs / 1000);
    this.advance(sec);
    const full = this.n - 1; // the current second is still filling up
    const since = this.firstSec >= 0 ? sec - this.firstSec : 0;
    const n = Math.max(minSeconds, Math.min(full, since));
    xs.length = ys.length = gaps.length = n;
    for (let i = 0; i < n; i++) {
      const s = sec - n + i;
      const j = ((s % this.n) + this.n) % this.n;
      const inRange = this.firstSec >= 0 && s >= this.firstSec && s > sec - this.n;
      xs[i] = s;
      ys[i] = inRange ? this.counts[j] : null;
      gaps[i] = inRange && this.flags[j] === 2 ? 1 : 0;
    }
    return { xs, ys, gaps };
  }
}

/**
 * Counts of a key (page, country) over a sliding window of one-second buckets.
 * Memory is bounded: each bucket tracks at most `maxKeys` distinct keys, later ones in the
 * same second are folded into `otherKey`.
 */
export class SlidingTop {
  constructor({ seconds = 60, maxKeys = 500, otherKey = "Other" } = {}) {
    this.n = seconds;
    this.maxKeys = maxKeys;
    this.otherKey = otherKey;
    this.buckets = Array.from({ length: seconds }, () => new Map());
    this.totals = new Map();
    this.head = -1;
  }

  reset() {
    for (const b of this.buckets) b.clear();
    this.totals.clear();
    this.head = -1;
  }

  advance(sec) {
    if (this.head < 0) { this.head = sec; return; }
    if (sec <= this.head) return;
    const steps = Math.min(sec - this.head, this.n);
    for (let i = 1; i <= steps; i++) {
      const b = this.buckets[(sec - steps + i) % this.n];
      if (b.size) {
        for (const [k, c] of b) {
          const t = this.totals.get(k) - c;
          if (t > 0) this.totals.set(k, t); else this.totals.delete(k);
        }
        b.clear();
      }
    }
    this.head = sec;
  }

  /** Counts one hit of `key` in second `sec` (call `advance(sec)` first). */
  addKey(key, sec) {
    const b = this.buckets[sec % this.n];
    let k = key;
    if (!b.has(k) && b.size >= this.maxKeys) k = this.otherKey;
    b.set(k, (b.get(k) || 0) + 1);
    this.totals.set(k, (this.totals.get(k) || 0) + 1);
  }

  /** The `k` largest counts, largest first, and the window's total. */
  top(k, nowMs) {
    this.advance(Math.floor(nowMs / 1000));
    const best = [];
    let total = 0;
    for (const [key, count] of this.totals) {
      total += count;
      if (best.length < k || count > best[best.length - 1][1]) {
        let i = best.length < k ? best.length : k - 1;
        best[i] = [key, count];
        while (i > 0 && best[i - 1][1] < count) { best[i] = best[i - 1]; best[--i] = [key, count]; }
      }
    }
    return { items: best, total };
  }
}

/** The newest `cap` items, newest first on read. */
export class LatestRing {
  constructor(cap = 50) {
    this.cap = cap;
    this.items = new Array(cap);
    this.next = 0;
    this.size = 0;
    this.version = 0;
  }

  reset() {
    this.items.fill(undefined);
    this.next = 0;
    this.size = 0;
    this.version++;
  }

  /** Pushes the tail of `list` (only the last `cap` can survive anyway). */
  pushAll(list) {
    const from = Math.max(0, list.length - this.cap);
    for (let i = from; i < list.length; i++) {
      this.items[this.next] = list[i];
      this.next = (this.next + 1) % this.cap;
    }
    this.size = Math.min(this.cap, this.size + list.length - from);
    if (list.length > from) this.version++;
  }

  /** i = 0 is the newest. */
  at(i) {
    if (i >= this.size) return undefined;
    return this.items[(this.next - 1 - i + this.cap * 2) % this.cap];
  }
}

/**
 * Errors grouped by (code, HTTP status, connection), newest first, at most `cap` groups.
 * A group shows its latest message: repeats of one problem often differ only in a number
 * ("frees in 4.5 s"), and one line with a count reads better than a column of near-copies.
 */
export class ErrorLog {
  constructor(cap = 25) {
    this.cap = cap;
    this.groups = new Map(); // key -> entry; Map order = least recently seen first
    this.total = 0;
    this.version = 0;
  }

  reset() {
    this.groups.clear();
    this.total = 0;
    this.version++;
  }

  add(error, nowMs) {
    const code = String(error?.code ?? "error");
    const message = String(error?.message ?? error ?? "");
    const connection = error?.connection ?? null;
    const httpStatus = error?.httpStatus ?? null;
    const key = `${code}\u0000${httpStatus}\u0000${connection}`;
    let e = this.groups.get(key);
    if (e) {
      this.groups.delete(key);
      e.count++;
      e.last = nowMs;
      e.message = message;
      e.fatal = e.fatal || !!error?.fatal;
    } else {
      e = { code, message, connection, httpStatus, fatal: !!error?.fatal, count: 1, first: nowMs, last: nowMs };
    }
    this.groups.set(key, e);
    while (this.groups.size > this.cap) this.groups.delete(this.groups.keys().next().value);
    this.total++;
    this.version++;
    return e;
  }

  /** Newest first. */
  list() {
    return [...this.groups.values()].reverse();
  }
}
