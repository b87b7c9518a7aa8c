// `share: true`: every LiveStream of one origin with the same stream (URL, parameters,
// connections, API key) shares one set of connections, across tabs, windows, iframes and
// workers. One leader, elected with a Web Lock, runs the connections; it broadcasts each batch,
// status and error on a BroadcastChannel, and every instance (the leader too) delivers them to
// its own callbacks.
//
// Hand-over follows the client's own rule (KA-16598): the service still holds the old
// connection's slot for about a minute, so a new leader connects no sooner than the reconnect
// delay after the previous holder's last loss — announced by the leader while it could
// ("leaving", heartbeats, and localStorage for a page reload), or, when it vanished without a
// word, counted from the moment the lock came free. The new leader also remembers the hit ids
// it received as a follower, so the records the service re-sends on resume are not delivered
// twice.

const HEARTBEAT_MS = 1000;

/** True when this environment can share: Web Locks and BroadcastChannel. */
export function canShare() {
  return typeof globalThis.navigator?.locks?.request === "function" && typeof globalThis.BroadcastChannel === "function";
}

function storage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}

/** A bounded ring of recent hit ids seen as a follower. */
class KeyRing {
  constructor(size) {
    this.size = Math.max(0, size);
    this.high = new BigUint64Array(this.size);
    this.low = new BigUint64Array(this.size);
    this.next = 0;
    this.count = 0;
  }

  add(high, low, flags) {
    if (this.size === 0) return;
    for (let i = 0; i < high.length; i++) {
      if ((flags[i] & 1) === 0) continue;
      this.high[this.next] = high[i];
      this.low[this.next] = low[i];
      this.next = (this.next + 1) % this.size;
      if (this.count < this.size) this.count++;
    }
  }

  /** The ids, oldest first. */
  take() {
    const n = this.count;
    const high = new BigUint64Array(n);
    const low = new BigUint64Array(n);
    const start = (this.next - n + this.size) % Math.max(1, this.size);
    for (let i = 0; i < n; i++) {
      const j = (start + i) % this.size;
      high[i] = this.high[j];
      low[i] = this.low[j];
    }
    return { high, low };
  }
}

/**
 * One instance's membership in a shared stream. `handlers.lead({ lastLossWall, keys })` is
 * called when this instance becomes the leader; `handlers.message(msg)` for every message of
 * the leader (when this instance follows).
 */
export class TabShare {
  #name;
  #channel;
  #handlers;
  #lockAbort = new AbortController();
  #release = null;
  #heartbeat = null;
  #announcedLoss = 0;
  #lastLeaderSeen = 0;
  #keys;
  #left = false;
  #leftCleanly = false;
  role = "follower";

  constructor(key, dedupWindow, handlers) {
    this.#name = `livestream-wasm:${key}`;
    this.#handlers = handlers;
    this.#keys = new KeyRing(Math.min(dedupWindow, 100_000));
    this.#channel = new BroadcastChannel(this.#name);
    this.#channel.onmessage = (ev) => this.#receive(ev.data);
  }

  /** Joins: follows whoever leads, and queues for the lock. */
  start() {
    navigator.locks
      .query()
      .catch(() => ({ held: [] }))
      .then((state) => {
        if (this.#left) return;
        const heldBefore = (state.held ?? []).some((l) => l.name === this.#name);
        navigator.locks
          .request(this.#name, { signal: this.#lockAbort.signal }, () => {
            if (this.#left) return undefined;
            const acquired = Date.now();
            return new Promise((resolve) => {
              this.#release = resolve;
              this.#lead(acquired, heldBefore);
            });
          })
          .catch(() => {
            // Aborted by detach(): this instance left before it led.
          });
      });
  }

  #lead(acquired, heldBefore) {
    this.role = "leader";
    const stored = Number(storage()?.getItem(`${this.#name}:lastLoss`) ?? 0) || 0;
    // A leader that vanished without "leaving" was alive until the lock came free.
    const vanished = heldBefore || this.#lastLeaderSeen > 0 ? acquired : 0;
    const lastLossWall = Math.max(this.#announcedLoss, stored, this.#leftCleanly ? 0 : vanished);
    this.#heartbeat = setInterval(() => this.#handlers.heartbeat?.(), HEARTBEAT_MS);
    this.#handlers.lead({ lastLossWall: lastLossWall || undefined, keys: this.#keys.take() });
  }

  #receive(msg) {
    if (this.#left || !msg || typeof msg !== "object") return;
    if (msg.t === "leaving") {
      this.#announcedLoss = Math.max(this.#announcedLoss, Number(msg.lastLoss) || 0);
      this.#leftCleanly = true;
      return;
    }
    this.#lastLeaderSeen = Date.now();
    this.#leftCleanly = false;
    if (typeof msg.lastLoss === "number") this.#announcedLoss = Math.max(this.#announcedLoss, msg.lastLoss);
    if (this.role === "leader") return;
    if (msg.t === "batch") this.#keys.add(msg.hh, msg.hl, msg.fl);
    this.#handlers.message(msg);
  }

  /** The leader sends `msg` to every other instance. */
  post(msg) {
    if (this.#left) return;
    try {
      this.#channel.postMessage(msg);
    } catch {
      // A closed channel (page unloading): nothing more to tell.
    }
  }

  /** The leader lost a connection now: remembered for whoever leads next. */
  noteLoss(at = Date.now()) {
    this.#announcedLoss = Math.max(this.#announcedLoss, at);
    try {
      storage()?.setItem(`${this.#name}:lastLoss`, String(this.#announcedLoss));
    } catch {
      // Storage full or disabled: the heartbeat and "leaving" still carry it.
    }
  }

  /** The last loss this instance knows of (wall-clock ms), for heartbeats. */
  get lastLoss() {
    return this.#announcedLoss;
  }

  /**
   * Leaves the group. A leader that had a connection says when it lost it (now) and frees the
   * lock so that a follower takes over; a follower just stops listening.
   */
  leave(hadConnection) {
    if (this.#left) return;
    if (this.role === "leader") {
      if (hadConnection) this.noteLoss();
      this.post({ t: "leaving", lastLoss: this.#announcedLoss });
    }
    this.#left = true;
    clearInterval(this.#heartbeat);
    this.#lockAbort.abort();
    this.#release?.();
    try {
      this.#channel.close();
    } catch {
      // Already closed.
    }
  }
}
