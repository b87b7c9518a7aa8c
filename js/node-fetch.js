// A minimal `fetch` for Node over node:http and node:https, used by default in Node because
// Node's own fetch cuts a body that is silent for 300 s ("Body Timeout Error") whatever the
// client's idleTimeoutMs says, and a quiet Live Stream can be silent for minutes. Here the
// client's idle rule is the only timeout on a body (`idleTimeoutMs: 0` means none).
//
// It does what the client needs and no more: GET with headers, `signal`, redirects never
// followed (the core judges them), the body passed through undecoded (the core sniffs and
// inflates gzip), and a Response-like object: `status`, `headers.get()`, `body` (a reader of
// the socket's chunks: `getReader().read()` / `cancel()`, all the client uses), `url`,
// `redirected`. The body hands over the response's chunks as its `data` events bring them
// (see nodeBody): `Readable.toWeb` would split every 64 KiB socket read into two 32 KiB
// chunks and cost a web stream on top.
import http from "node:http";
import https from "node:https";

export function nodeFetch(url, init = {}) {
  return new Promise((resolve, reject) => {
    let target;
    try {
      target = new URL(url);
    } catch {
      reject(new TypeError(`invalid URL: ${url}`));
      return;
    }
    const lib = target.protocol === "https:" ? https : target.protocol === "http:" ? http : null;
    if (!lib) {
      reject(new TypeError(`unsupported protocol ${target.protocol} (http: or https: only)`));
      return;
    }
    const headers = {};
    for (const [k, v] of Array.isArray(init.headers) ? init.headers : Object.entries(init.headers ?? {})) headers[k] = v;
    const signal = init.signal;
    if (signal?.aborted) {
      reject(new DOMException("This operation was aborted", "AbortError"));
      return;
    }
    const req = lib.request(target, { method: init.method ?? "GET", headers, signal });
    req.on("error", reject);
    req.on("response", (res) => {
      res.on("error", () => {});
      const body = nodeBody(res);
      resolve({
        status: res.statusCode ?? 0,
        url: target.href,
        redirected: false,
        headers: {
          get(name) {
            const v = res.headers[String(name).toLowerCase()];
            return v === undefined ? null : Array.isArray(v) ? v.join(", ") : String(v);
          },
        },
        body,
      });
    });
    req.end();
  });
}

/** Chunks a body may hold unread before the socket is paused (backpressure). */
const BUFFERED_CHUNKS = 4;

/**
 * A minimal body over a Node response: what `getReader()` of a web stream offers the client.
 * It takes the response's chunks as `data` events hand them over, one socket read each, and
 * pauses the response while BUFFERED_CHUNKS are unread. (The response's own async iterator
 * calls `read()`, which joins every chunk buffered so far into a new Buffer: a copy of most
 * of the body, ~7 % of an onBatch consumer's time from a local server.)
 */
function nodeBody(res) {
  const queue = [];
  let waiting = null;
  let ended = false;
  let failure = null;
  const settle = () => {
    const w = waiting;
    if (w === null) return;
    if (queue.length > 0) {
      waiting = null;
      w.resolve({ done: false, value: queue.shift() });
      if (queue.length < BUFFERED_CHUNKS) res.resume();
    } else if (failure !== null) {
      waiting = null;
      w.reject(failure);
    } else if (ended) {
      waiting = null;
      w.resolve({ done: true, value: undefined });
    }
  };
  res.on("data", (chunk) => {
    queue.push(chunk);
    if (queue.length >= BUFFERED_CHUNKS) res.pause();
    settle();
  });
  res.on("end", () => {
    ended = true;
    settle();
  });
  res.on("error", (e) => {
    failure ??= e;
    settle();
  });
  res.on("close", () => {
    // Closed before its end without an error event (a cancel, a cut connection).
    if (!ended) failure ??= Object.assign(new Error("the response closed before its end"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
    settle();
  });
  const cancel = () => {
    res.destroy();
    return Promise.resolve();
  };
  const reader = {
    read() {
      if (waiting !== null) return Promise.reject(new TypeError("a read is already pending"));
      return new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        settle();
      });
    },
    cancel,
    releaseLock() {},
  };
  return { getReader: () => reader, cancel };
}
