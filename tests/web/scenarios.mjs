// The behaviour of the `LiveStream` package, as scenarios that run unchanged in Node
// (node.test.mjs, the "node" entry, requests through node:http) and in headless Chromium
// (chromium.test.mjs, the browser entry after `await init()`, requests through the page's
// fetch), against the real emulator and against injected fetch functions.
//
// Each scenario is `async (ctx) => {}` with ctx = {
//   LiveStream,   the package's class
//   server,       the emulator (--rate 50 --seed 1 --slot-hold-secs 0.3), same origin as the page
//   tokenServer,  a second emulator started with --token right
//   env,          "node" or "chromium"
//   unhandled,    every unhandled promise rejection seen while the scenario ran (live array)
// }
// and throws an Error with a readable message when the behaviour is wrong.

import {
  assert, BIG_ID, MAX_ID, batchIds, bytes, crlf, emulator, fakeFetch, gzip, header, hitIds,
  now, options, poll, pushFetch, record, recorder, sleep, unique, within,
} from "./harness.mjs";

const EXAMPLE = "https://example.test/api/1/stream";

/** `new LiveStream(o)` must throw a `kind` whose message contains every needle. */
function refuses(LiveStream, o, kind, needles) {
  const e = assert.throws(() => new LiveStream(o), `new LiveStream(${JSON.stringify(o)})`);
  assert.equal(e?.constructor?.name, kind, `the class of the error for ${JSON.stringify(o)} (${e?.message})`);
  for (const n of needles) assert.includes(e.message, n, `the message for ${JSON.stringify(o)}`);
}

const withUrl = (key, value) => ({ url: `${EXAMPLE}/x`, [key]: value });

export const scenarios = [];
const scenario = (name, run, only) => scenarios.push({ name, run, only });

// ---- ported from the wasm-bindgen tests (tests/web.rs) ---------------------------------------

scenario("constructor errors name the option, the value and the range", async ({ LiveStream }) => {
  refuses(LiveStream, {}, "TypeError", ["url", "missing"]);
  refuses(LiveStream, withUrl("maxConnections", 9), "RangeError", ["maxConnections", "9", "1 to 8"]);
  refuses(LiveStream, withUrl("maxConection", 2), "TypeError", ["maxConection", "did you mean maxConnections"]);
  refuses(LiveStream, withUrl("reconnectDelayMs", "60000"), "TypeError", ["reconnectDelayMs", '"60000"', "not a string", "10 to 3600000"]);
  refuses(LiveStream, withUrl("token", 42), "TypeError", ["token", "42", "a string or a function"]);
  refuses(LiveStream, withUrl("token", "  "), "RangeError", ["token", "empty"]);
  refuses(LiveStream, withUrl("onHits", "nope"), "TypeError", ["onHits", '"nope"', "a function"]);
  refuses(LiveStream, withUrl("idleTimeoutMs", 5), "RangeError", ["idleTimeoutMs", "5", "at least 10", "0 turns it off"]);
  refuses(LiveStream, withUrl("maxBufferedHits", 0), "RangeError", ["maxBufferedHits", "0", "1 to"]);
  refuses(LiveStream, withUrl("signal", "abort"), "TypeError", ["signal", "AbortSignal"]);
  // Not started: no request, state idle; close() is idempotent.
  const f = fakeFetch([{ status: 200 }]);
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/x`, log, { fetch: f }));
  assert.equal(ls.state, "idle");
  ls.close();
  ls.close();
  assert.equal(ls.state, "closed");
  ls.start();
  await sleep(20);
  assert.equal(f.state.calls.length, 0, "requests after close() and start()");
});

scenario("injected fetch, 1-byte chunks: each record once, exact ids", async ({ LiveStream }) => {
  const lines = [
    record(BIG_ID, "4948646782672799561", "caf\u00e9 \u65e5\u672c"),
    "",
    record(MAX_ID, MAX_ID, "max"),
    record(BIG_ID, "4948646782672799561", "duplicate"),
    '{"pageName":"no ids"}',
  ];
  const body = bytes(crlf(lines));
  const f = fakeFetch([{ status: 200, body, chunkSize: 1, hold: true }]);
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/x`, log, { fetch: f }));
  ls.start();
  await log.until("3 hits", () => log.hits.length >= 3);
  await sleep(50); // the duplicate and the record without ids came before the 3rd hit; nothing more may come
  assert.deepEqual(hitIds(log.hits), [[BIG_ID, "4948646782672799561"], [MAX_ID, MAX_ID], [undefined, undefined]], "onHits ids");
  const first = log.hits[0];
  assert.equal(first.pageName, "caf\u00e9 \u65e5\u672c");
  assert.equal(first.visIdHigh, BIG_ID);
  assert.equal(first.timeGMT, 1372782179);
  assert.deepEqual(first.newField, [1, 2], "unknown fields are kept");
  // onBatch saw the same hits, with exact typed arrays.
  assert.deepEqual(batchIds(log.batches), hitIds(log.hits), "onBatch ids");
  const maxBatch = log.batches.find((b) => b.length > 0 && b.id(0)?.hitIdLow === MAX_ID);
  assert.ok(maxBatch, "a batch with the max id");
  assert.ok(maxBatch.hitIdHigh instanceof BigUint64Array, "hitIdHigh is a BigUint64Array");
  assert.equal(maxBatch.hitIdHigh[0].toString(), MAX_ID);
  assert.equal(maxBatch.hitIdLow[0], 2n ** 64n - 1n);
  assert.equal(maxBatch.get(0).pageName, "max");
  const stats = ls.stats;
  assert.equal(stats.hits, 3, "stats.hits");
  assert.equal(stats.duplicates, 1, "stats.duplicates");
  assert.equal(stats.bytes, body.length, "stats.bytes");
  assert.deepEqual(log.states(), ["connecting", "open"]);
  // The request carried the token and the managed parameters.
  const call = f.state.calls[0];
  assert.ok(call.url.endsWith("/api/1/stream/x?maxConnections=1"), call.url);
  assert.equal(header(call.init, "Authorization"), "Bearer test-token");
  assert.equal(call.init.cache, "no-store");
  // close(): one `closed` status inside close(), the body aborted, then silence.
  const before = log.total();
  ls.close();
  assert.equal(log.total(), before + 1, "callbacks inside close()");
  assert.equal(log.states().at(-1), "closed");
  assert.atLeast(f.state.aborted + f.state.cancelled, 1, "the body was aborted");
  await sleep(300);
  assert.equal(log.total(), before + 1, "a callback fired after close()");
  assert.equal(ls.state, "closed");
});

scenario("an injected gzip body is inflated", async ({ LiveStream }) => {
  const highs = Array.from({ length: 50 }, (_, i) => (10n ** 18n + BigInt(i)).toString());
  const gz = await gzip(crlf(highs.map((h, i) => record(h, MAX_ID, `p${i}`))));
  assert.deepEqual([gz[0], gz[1]], [0x1f, 0x8b], "gzip magic");
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/gz`, log, { fetch: fakeFetch([{ status: 200, body: gz, chunkSize: 7, hold: true }]) }));
  ls.start();
  await log.until("50 hits", () => log.hits.length >= 50);
  assert.deepEqual(hitIds(log.hits), highs.map((h) => [h, MAX_ID]));
  assert.deepEqual(log.codes(), []);
  ls.close();
});

scenario("a malformed record is reported and the next one delivered", async ({ LiveStream }) => {
  const lines = [record(BIG_ID, "1", "before"), '{"hitIdHigh":12,', record(BIG_ID, "2", "after")];
  const log = recorder();
  const f = fakeFetch([{ status: 200, body: bytes(crlf(lines)), chunkSize: 5, hold: true }]);
  const ls = new LiveStream(options(`${EXAMPLE}/m`, log, { fetch: f }));
  ls.start();
  await log.until("2 hits", () => log.hits.length >= 2);
  assert.deepEqual(log.hits.map((h) => h.pageName), ["before", "after"]);
  const err = log.errors.find((e) => e.code === "malformed_record");
  assert.ok(err, `a malformed_record error (${log.summary()})`);
  assert.equal(err.fatal, false);
  assert.equal(err.connection, 0);
  assert.includes(err.message, "hitIdHigh");
  assert.equal(ls.stats.malformed, 1);
  assert.deepEqual(log.states(), ["connecting", "open"], "the connection stayed open");
  ls.close();
});

scenario("the idle timeout follows activity, then turns silence into a loss", async ({ LiveStream }) => {
  // CRLF keep-alives every 100 ms for ~1 s keep a 350 ms idle timeout from firing; then a
  // record, then silence: the connection is lost, the request aborted, and the client waits.
  const chunks = [...Array.from({ length: 10 }, () => bytes("\r\n")), bytes(crlf([record(BIG_ID, "5", "last")]))];
  const f = fakeFetch([{ status: 200, chunks, chunkDelayMs: 100, hold: true }]);
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/idle`, log, { fetch: f, idleTimeoutMs: 350, reconnectDelayMs: 60_000 }));
  const t0 = now();
  ls.start();
  await log.until("the record", () => log.hits.length === 1);
  assert.deepEqual(log.states(), ["connecting", "open"], "keep-alives are activity");
  assert.atLeast(now() - t0, 900, "ms before the record (after ~1 s of keep-alives)");
  await log.until("waiting after silence", () => log.states().at(-1) === "waiting", 5000);
  assert.deepEqual(log.codes(), ["idle_timeout"]);
  assert.atLeast(f.state.aborted + f.state.cancelled, 1, "the silent request is aborted");
  ls.close();
});

scenario("the token function is called before each connect and after a 401; its errors are retried", async ({ LiveStream }) => {
  // 1st connect: the token function throws -> token_error, wait, retry.
  // 2nd connect: token "Bearer t2" -> 401 -> asked again at once with refresh=true.
  // 3rd connect: token t3 -> 200.
  const f = fakeFetch([
    { status: 401, body: bytes('{"error":"unauthorized","error_description":"expired"}'), chunkSize: 64 },
    { status: 200, body: bytes(crlf([record(BIG_ID, "3", "ok")])), chunkSize: 64, hold: true },
  ]);
  const asked = [];
  const token = (req) => {
    asked.push([req.connection, req.refresh]);
    if (asked.length === 1) throw new Error("vault unreachable");
    if (asked.length === 2) return Promise.resolve("Bearer t2");
    return `t${asked.length}`;
  };
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/t`, log, { fetch: f, reconnectDelayMs: 50, token }));
  ls.start();
  await log.until("a hit", () => log.hits.length > 0);
  assert.deepEqual(asked, [[0, false], [0, false], [0, true]], "token calls");
  assert.deepEqual(log.codes(), ["token_error", "unauthorized"]);
  assert.includes(log.errors[0].message, "vault unreachable");
  assert.equal(f.state.calls.length, 2, "no request without a token");
  assert.equal(header(f.state.calls[0].init, "Authorization"), "Bearer t2");
  assert.equal(header(f.state.calls[1].init, "Authorization"), "Bearer t3");
  assert.deepEqual(log.states(), ["connecting", "waiting", "connecting", "connecting", "open"]);
  ls.close();
});

scenario("callback errors are reported as callback_error and the stream goes on", async ({ LiveStream }) => {
  const lines = [0, 1, 2].map((i) => record(BIG_ID, String(i), "p"));
  const log = recorder();
  const o = options(`${EXAMPLE}/cb`, log, { fetch: fakeFetch([{ status: 200, body: bytes(crlf(lines)), chunkSize: 1, hold: true }]) });
  o.onHits = (hits) => {
    log.hits.push(...hits);
    log.notify();
    throw new Error("boom");
  };
  const ls = new LiveStream(o);
  ls.start();
  await log.until("3 hits", () => log.hits.length >= 3);
  assert.atLeast(log.errors.length, 1, "errors reported");
  for (const e of log.errors) {
    assert.equal(e.code, "callback_error");
    assert.includes(e.message, "onHits");
    assert.includes(e.message, "boom");
    assert.equal(e.fatal, false);
  }
  assert.equal(ls.state, "running");
  ls.close();
});

scenario("close() inside a callback stops everything", async ({ LiveStream }) => {
  const lines = [0, 1, 2, 3, 4].map((i) => record(BIG_ID, String(i), "p"));
  const f = fakeFetch([{ status: 200, body: bytes(crlf(lines)), chunkSize: 1, hold: true }]);
  const log = recorder();
  let ls;
  const o = options(`${EXAMPLE}/reentrant`, log, { fetch: f });
  o.onHits = (hits) => {
    log.hits.push(...hits);
    ls.close();
    ls.close();
    log.notify();
  };
  ls = new LiveStream(o);
  ls.start();
  await log.until("closed", () => log.states().at(-1) === "closed");
  await sleep(200);
  assert.equal(log.hits.length, 1, "hits after close()");
  assert.equal(log.batches.length, 0, "onBatch after close() inside onHits");
  assert.deepEqual(log.states(), ["connecting", "open", "closed"]);
  assert.atLeast(f.state.aborted + f.state.cancelled, 1, "the body was aborted");
});

scenario("close() inside the first onStatus: no request is started afterwards", async ({ LiveStream }) => {
  // Two slots: the engine queues connect 0, status 0, connect 1, status 1 at start().
  const f = fakeFetch([{ status: 200, hold: true }]);
  const log = recorder();
  let ls;
  const o = options(`${EXAMPLE}/two`, log, { fetch: f, maxConnections: 2 });
  o.onStatus = (status) => {
    log.statuses.push({ t: now(), status });
    if (status.state === "connecting") ls.close();
  };
  ls = new LiveStream(o);
  ls.start();
  const requested = f.state.calls.length;
  await sleep(100);
  assert.equal(f.state.calls.length, requested, "requests started after close()");
  assert.atMost(requested, 1, "requests started by start()");
  assert.deepEqual(log.states(), ["connecting", "closed", "closed"]);
  assert.equal(ls.state, "closed");
});

scenario("a token function that throws at once: statuses keep their order", async ({ LiveStream }) => {
  const f = fakeFetch([{ status: 200, body: bytes(crlf([record(BIG_ID, "4", "ok")])), hold: true }]);
  const log = recorder();
  let asked = 0;
  const ls = new LiveStream(options(`${EXAMPLE}/sync-throw`, log, {
    fetch: f,
    reconnectDelayMs: 50,
    token: () => {
      if (++asked === 1) throw new Error("no token yet");
      return "t";
    },
  }));
  ls.start();
  await log.until("a hit", () => log.hits.length > 0);
  assert.deepEqual(log.states(), ["connecting", "waiting", "connecting", "open"]);
  assert.deepEqual(log.codes(), ["token_error"]);
  ls.close();
});

scenario("emulator: 1-byte chunks, exact ids, and close() is seen by the server", async ({ LiveStream, server }) => {
  const emu = emulator(server);
  const name = unique("web-exact");
  const lines = [record(BIG_ID, "4948646782672799561", "a"), "", record(MAX_ID, MAX_ID, "b"), record(BIG_ID, "4948646782672799561", "a again")];
  await emu.script(name, { rate: 0, body: { lines, chunk_size: 1, gzip: true, then: "hold" } });
  const log = recorder();
  const ls = new LiveStream(options(emu.url(name), log));
  ls.start();
  await log.until("2 hits", () => log.hits.length >= 2);
  await poll("the duplicate to be counted", () => ls.stats.duplicates === 1, 5000, 10);
  assert.deepEqual(hitIds(log.hits), [[BIG_ID, "4948646782672799561"], [MAX_ID, MAX_ID]]);
  assert.deepEqual(batchIds(log.batches), hitIds(log.hits), "onBatch ids");
  assert.equal((await emu.stream(name)).live, 1, "live connections on the server");
  const before = log.total();
  ls.close();
  assert.equal(log.total(), before + 1, "exactly the closed status inside close()");
  const conns = await emu.sawClose(name);
  assert.equal(conns.length, 1);
  assert.equal(conns[0].close_reason, "client_closed");
  assert.equal(log.total(), before + 1, "a callback fired after close()");
});

scenario("emulator: a 409 waits at least the delay, then reconnects", async ({ LiveStream, server }) => {
  const emu = emulator(server);
  const name = unique("web-409");
  await emu.script(name, {
    rate: 0,
    responses: [{ status: 409, error_description: "too many clients" }],
    body: { lines: [record(BIG_ID, "9", "after 409")], then: "hold" },
  });
  const log = recorder();
  const ls = new LiveStream(options(emu.url(name), log, { reconnectDelayMs: 250 }));
  ls.start();
  await log.until("a hit after the 409", () => log.hits.length > 0);
  assert.deepEqual(log.states(), ["connecting", "waiting", "connecting", "open"]);
  const { t: tWait, status: waiting } = log.statuses[1];
  const { t: tNext } = log.statuses[2];
  assert.equal(waiting.httpStatus, 409);
  assert.atLeast(waiting.retryInMs, 250, "retryInMs");
  assert.includes(waiting.reason, "too many clients");
  assert.includes(waiting.reason, "next attempt in", "the reason says when");
  assert.includes(waiting.cause, "too many clients");
  assert.equal(waiting.cause.includes("next attempt"), false, `the cause leaves the schedule out: ${waiting.cause}`);
  const open = log.statuses[3].status;
  assert.equal(open.cause, open.reason, "outside waiting the cause is the reason");
  assert.atLeast(tNext - tWait, waiting.retryInMs - 2, "ms between waiting and the next connect");
  const err = log.errors[0];
  assert.equal(err.code, "conflict");
  assert.equal(err.httpStatus, 409);
  assert.equal(err.fatal, false);
  assert.equal(log.hits[0].pageName, "after 409");
  assert.equal(ls.stats.reconnects, 1);
  ls.close();
});

scenario("emulator: a 404 fails and requests nothing more", async ({ LiveStream, server }) => {
  const emu = emulator(server);
  const name = unique("web-404");
  await emu.script(name, { rate: 0, responses: [{ status: 404 }] });
  const log = recorder();
  const ls = new LiveStream(options(emu.url(name), log, { reconnectDelayMs: 50 }));
  ls.start();
  await log.until("failed", () => log.states().includes("failed"));
  await sleep(400); // several reconnect delays: nothing may be requested in them
  assert.equal((await emu.stream(name)).requests, 1, "requests the emulator received");
  assert.deepEqual(log.states(), ["connecting", "failed"]);
  assert.equal(log.statuses[1].status.httpStatus, 404);
  const err = log.errors[0];
  assert.equal(err.code, "not_found");
  assert.equal(err.fatal, true);
  assert.includes(err.message, "90 days");
  assert.equal(ls.state, "failed");
  ls.close();
});

scenario("emulator: the token function is asked again after a 401", async ({ LiveStream, server }) => {
  const emu = emulator(server);
  const name = unique("web-401");
  await emu.script(name, { rate: 0, responses: [{ status: 401 }], body: { lines: [record(MAX_ID, "1", "fresh")], then: "hold" } });
  const asked = [];
  const log = recorder();
  const ls = new LiveStream(options(emu.url(name), log, {
    token: (req) => {
      asked.push(req.refresh);
      return Promise.resolve(`token-${asked.length}`);
    },
  }));
  ls.start();
  await log.until("a hit after the 401", () => log.hits.length > 0);
  assert.deepEqual(asked, [false, true]);
  assert.deepEqual(log.codes(), ["unauthorized"]);
  assert.deepEqual(hitIds(log.hits), [[MAX_ID, "1"]]);
  ls.close();
});

scenario("emulator: a same-origin redirect is followed", async ({ LiveStream, server }) => {
  const emu = emulator(server);
  const name = unique("web-302");
  await emu.script(name, {
    rate: 0,
    responses: [{ status: 302, location: `/api/1/stream/${name}?maxConnections=1&_lb=1` }],
    body: { lines: [record(BIG_ID, "302", "moved")], then: "hold" },
  });
  const log = recorder();
  const ls = new LiveStream(options(emu.url(name), log));
  ls.start();
  await log.until("a hit after the redirect", () => log.hits.length > 0);
  assert.deepEqual(hitIds(log.hits), [[BIG_ID, "302"]]);
  assert.deepEqual(log.codes(), []);
  assert.equal(log.states().at(-1), "open");
  assert.equal((await emu.stream(name)).requests, 2, "the 302 and the redirected request");
  ls.close();
});

scenario("one large chunk of mixed text keeps stream order in every form", async ({ LiveStream }) => {
  // Records above and below U+00FF interleaved, in one chunk larger than the host's slice,
  // so it arrives as several batches each with ASCII, Latin-1 and wide regions.
  const pages = ["plain", "\u65e5\u672c", "caf\u00e9", "\u{1f600}", "\u00ff", "x\u0100"];
  const total = 2000;
  const max = 2n ** 64n - 1n;
  const want = Array.from({ length: total }, (_, i) => [String(i + 1), (max - BigInt(i)).toString()]);
  const page = (i) => `${pages[i % pages.length]} ${i}`;
  const body = bytes(crlf(want.map(([h, l], i) => record(h, l, page(i)))));
  assert.atLeast(body.length, 300 * 1024, "body bytes");
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/x`, log, { fetch: fakeFetch([{ status: 200, body, chunkSize: body.length, hold: true }]) }));
  ls.start();
  await log.until("all hits", () => log.hits.length >= total);
  ls.close();
  assert.deepEqual(hitIds(log.hits), want, "onHits order");
  assert.deepEqual(batchIds(log.batches), want, "onBatch order");
  assert.atLeast(log.batches.length, 2, "batches (the chunk is fed in slices)");
  log.hits.forEach((h, i) => assert.equal(h.pageName, page(i), `pageName of hit ${i}`));
  let k = 0;
  for (const b of log.batches) {
    const all = b.toArray();
    assert.equal(all.length, b.length, "toArray().length");
    const iterated = [...b];
    for (let i = 0; i < b.length; i++, k++) {
      assert.equal(all[i].pageName, page(k), `toArray()[${i}] (hit ${k})`);
      assert.equal(b.get(i).pageName, page(k), `get(${i}) (hit ${k})`);
      assert.equal(iterated[i].pageName, page(k), `iteration (hit ${k})`);
      assert.equal(all[i].hitIdLow, want[k][1], `toArray()[${i}].hitIdLow`);
    }
  }
  assert.equal(k, total, "hits in all batches");
});

scenario("onBatch alone: batches decode their text only when asked, and stay right after later chunks", async ({ LiveStream }) => {
  // With onBatch as the only consumer nothing decodes the text during delivery: every batch is
  // kept and read only after the stream has moved on (later chunks reuse wasm memory), first
  // record by record (text/get before anything decoded the whole ASCII array), then whole.
  const pages = ["plain", "caf\u00e9", "\u65e5\u672c", "ascii again", "\u{1f600}", "\u00ff"];
  const total = 3000;
  const want = Array.from({ length: total }, (_, i) => [String(7 + i), String(2n ** 64n - 1n - BigInt(i))]);
  const page = (i) => `${pages[(i * 5) % pages.length]} ${i}`;
  const body = bytes(crlf(want.map(([h, l], i) => record(h, l, page(i)))));
  const batches = [];
  const ls = new LiveStream({
    url: `${EXAMPLE}/x`, token: "t",
    fetch: fakeFetch([{ status: 200, body, chunkSize: 50_000, hold: true }]),
    onBatch: (b) => { batches.push(b); },
  });
  ls.start();
  const until = Date.now() + 10_000;
  while (batches.reduce((n, b) => n + b.length, 0) < total && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  ls.close();
  assert.atLeast(batches.length, 3, "batches");
  let k = 0;
  for (const b of batches) {
    const texts = [];
    for (let i = 0; i < b.length; i++, k++) {
      assert.equal(b.get(i).pageName, page(k), `get(${i}) (hit ${k}) before toArray`);
      assert.deepEqual(b.id(i), { hitIdHigh: want[k][0], hitIdLow: want[k][1] }, `id(${i}) (hit ${k}) after later chunks`);
      texts.push(b.text(i));
      assert.equal(JSON.parse(texts[i]).hitIdLow, want[k][1], `text(${i}).hitIdLow (hit ${k})`);
    }
    const all = b.toArray();
    for (let i = 0; i < b.length; i++) {
      assert.equal(all[i].pageName, page(k - b.length + i), `toArray()[${i}]`);
      assert.equal(b.text(i), texts[i], `text(${i}) once the batch's text is decoded`);
    }
  }
  assert.equal(k, total, "hits in all batches");
});

/**
 * A body that exercises every way a record can lie in the chunks: large bare ids, string
 * ids, repeated and nested id keys, escapes, Latin-1, wide text and emoji, whitespace
 * around a record, records without ids, invalid UTF-8 (repaired by the engine) and records
 * longer than most chunks. Returns the bytes and chunk lengths that cut it everywhere.
 */
function mixedBody(n) {
  const parts = [];
  for (let i = 0; i < n; i++) {
    const big = String(2n ** 64n - 1n - BigInt(i));
    const mid = String(2n ** 53n + BigInt(i));
    const line = [
      `{"hitIdHigh":${big},"hitIdLow":${mid},"visIdHigh":${mid},"visIdLow":${big},"pageName":"plain ${i}"}`,
      `{"hitIdHigh":"${i}","hitIdLow":"${big}","geoCity":"Z\u00fcrich ${i}"}`,
      `{"hitIdHigh":1,"hitIdLow":${big},"hitIdHigh":${mid},"x":{"hitIdHigh":12345678901234567890},"t":"\u6771\u4eac \u{1f600} ${i}"}`,
      `  {"hitIdLow": ${mid} , "hitIdHigh" : ${big}, "e":"\\u00e9\\ud83d\\ude00 ${i}"}  `,
      null, // invalid UTF-8, below
      `{"hitIdHigh":${mid},"hitIdLow":${mid},"pad":"${"p".repeat(2500 + i)}"}`,
      `{"a":[1,2,{"b":null}],"i":${i}}`,
      `{"hitIdHigh":${big},"hitIdLow":${i},"p":"\u00ff\u00e9 ${i}"}`,
    ][i % 8];
    if (line === null) {
      const head = bytes(`{"hitIdHigh":${i},"hitIdLow":${big},"bad":"x`);
      const tail = bytes(` ${i}"}`);
      parts.push(head, Uint8Array.of(0xff), tail);
    } else parts.push(bytes(line));
    parts.push(bytes(i % 3 === 0 ? "\n" : "\r\n"));
  }
  const body = new Uint8Array(parts.reduce((k, p) => k + p.length, 0));
  let at = 0;
  for (const p of parts) {
    body.set(p, at);
    at += p.length;
  }
  return body;
}

/** `body` cut into chunks of lengths cycling through `sizes`. */
function cutInto(body, sizes) {
  const chunks = [];
  for (let at = 0, k = 0; at < body.length; k++) {
    const size = sizes[k % sizes.length];
    chunks.push(body.slice(at, at + size));
    at += size;
  }
  return chunks;
}

scenario("onBatch alone: batches that refer to their chunks give onHits' records, in the callback, after later chunks and after free()", async ({ LiveStream }) => {
  // With onBatch as the only consumer a batch keeps the chunk its records came from instead
  // of a copy of the engine's text, and puts the id quotes back when a record is read; during
  // the callback it reads the engine's text in place. Every way of reading must give what
  // onHits (the engine's text, copied) gives, for plain and gzip bodies.
  const n = 240;
  const body = mixedBody(n);
  const sizes = [1, 7, 64, 500, 1500, 4096, 30_000, 3];
  for (const gz of [false, true]) {
    // The gzip helper takes text: the bad byte arrives as U+FFFD there, already repaired.
    const wire = gz ? await gzip(new TextDecoder().decode(body)) : body;
    const what = gz ? "gzip body" : "plain body";
    const run = async (callbacks) => {
      const ls = new LiveStream({
        url: `${EXAMPLE}/x`, token: "t",
        fetch: fakeFetch([{ status: 200, chunks: cutInto(wire, sizes), hold: true }]),
        ...callbacks,
      });
      return ls;
    };
    const expected = [];
    const a = await run({ onHits: (hits) => { expected.push(...hits); } });
    a.start();
    await poll(`${what}: onHits gets all ${n} hits`, () => expected.length >= n, 10_000);
    a.free();
    assert.equal(expected.length, n, `${what}: hits by onHits`);

    const batches = [];
    const inCallback = [];
    const textsInCallback = [];
    // Every column of hit i as one string: kept batches share the blocks their columns were
    // copied into, so a later batch must never write over an earlier one's.
    const columnsOf = (batch, i) => [batch.flags[i], batch.hitIdHigh[i], batch.hitIdLow[i], batch.visIdHigh[i],
      batch.visIdLow[i], batch.timeGMT[i], batch.receivedTimeGMT[i]].join(" ");
    const columnsInCallback = [];
    const b = await run({
      onBatch: (batch) => {
        batches.push(batch);
        for (let i = 0; i < batch.length; i++) {
          textsInCallback.push(batch.text(i));
          columnsInCallback.push(columnsOf(batch, i));
        }
        inCallback.push(...batch.toArray());
      },
    });
    b.start();
    await poll(`${what}: onBatch gets all ${n} hits`, () => inCallback.length >= n, 10_000);
    assert.deepEqual(inCallback, expected, `${what}: toArray() in the callback`);
    assert.deepEqual(textsInCallback.map((t) => JSON.parse(t)), expected, `${what}: text(i) in the callback`);
    const readAll = (when) => {
      let k = 0;
      for (const batch of batches) {
        const all = batch.toArray();
        for (let i = 0; i < batch.length; i++, k++) {
          assert.equal(columnsOf(batch, i), columnsInCallback[k], `${what}, ${when}: the columns of hit ${k}`);
          const { hitIdHigh, hitIdLow } = expected[k];
          const id = hitIdHigh !== undefined && hitIdLow !== undefined ? { hitIdHigh, hitIdLow } : undefined;
          assert.deepEqual(batch.id(i), id, `${what}, ${when}: id(${i}) of hit ${k}`);
          assert.equal(batch.text(i), textsInCallback[k], `${what}, ${when}: text(${i}) of hit ${k}`);
          assert.deepEqual(batch.get(i), expected[k], `${what}, ${when}: get(${i}) of hit ${k}`);
          assert.deepEqual(all[i], expected[k], `${what}, ${when}: toArray()[${i}] of hit ${k}`);
        }
      }
      assert.equal(k, n, `${what}, ${when}: hits in all batches`);
    };
    readAll("after later chunks");
    b.free();
    readAll("after free()");
  }
});

scenario("onBatch alone: chunks in shared memory are copied, so kept batches read right and later writes to the memory do not show", async ({ LiveStream }) => {
  // A custom fetch may hand over views of shared memory (a shared WebAssembly.Memory, a
  // SharedArrayBuffer). A browser's TextDecoder refuses such views, and another thread may
  // reuse the memory once the chunk is handed over: batches must not keep those chunks.
  const n = 120;
  const body = mixedBody(n);
  const pages = Math.ceil(body.length / 65536) + 1;
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  assert.equal(Object.prototype.toString.call(memory.buffer), "[object SharedArrayBuffer]", "the test's chunks are shared memory");
  new Uint8Array(memory.buffer).set(body);
  const chunks = [];
  for (let at = 0, k = 0; at < body.length; k++) {
    const size = [700, 3, 5000, 64][k % 4];
    chunks.push(new Uint8Array(memory.buffer, at, Math.min(size, body.length - at)));
    at += size;
  }
  const expected = [];
  const a = new LiveStream({
    url: `${EXAMPLE}/x`, token: "t",
    fetch: fakeFetch([{ status: 200, chunks: cutInto(body, [700, 3, 5000, 64]), hold: true }]),
    onHits: (hits) => { expected.push(...hits); },
  });
  a.start();
  await poll("onHits gets every hit", () => expected.length >= n, 10_000);
  a.free();
  const batches = [];
  const b = new LiveStream({
    url: `${EXAMPLE}/x`, token: "t",
    fetch: fakeFetch([{ status: 200, chunks, hold: true }]),
    onBatch: (batch) => { batches.push(batch); },
  });
  b.start();
  await poll("onBatch gets every hit", () => batches.reduce((k, x) => k + x.length, 0) >= n, 10_000);
  // What another thread might do with memory it handed over.
  new Uint8Array(memory.buffer).fill(0x21);
  let k = 0;
  for (const batch of batches) {
    const all = batch.toArray();
    for (let i = 0; i < batch.length; i++, k++) {
      assert.deepEqual(JSON.parse(batch.text(i)), expected[k], `text(${i}) of hit ${k}`);
      assert.deepEqual(all[i], expected[k], `toArray()[${i}] of hit ${k}`);
    }
  }
  assert.equal(k, n, "hits in all batches");
  b.free();
});

scenario("onHits alone (hits read from wasm memory in place) keeps mixed text and stream order", async ({ LiveStream }) => {
  // With onHits as the only consumer the host parses each batch before the next chunk is fed
  // and reads the non-ASCII records and the offsets where the engine wrote them; a chunk of
  // many slices checks that nothing of one batch leaks into the next.
  const pages = ["caf\u00e9", "plain", "\u{1f600}", "\u65e5\u672c", "x\u0100", "\u00ff"];
  const total = 3000;
  const want = Array.from({ length: total }, (_, i) => [String(1000 + i), String(2n ** 63n + BigInt(i))]);
  const page = (i) => `${pages[(i * 7) % pages.length]} ${i}`;
  const body = bytes(crlf(want.map(([h, l], i) => record(h, l, page(i)))));
  const log = recorder();
  const { onBatch, ...onlyHits } = log.callbacks;
  assert.equal(typeof onBatch, "function", "the recorder has an onBatch to leave out");
  const ls = new LiveStream({ ...options(`${EXAMPLE}/x`, { callbacks: onlyHits }), fetch: fakeFetch([{ status: 200, body, chunkSize: 100_000, hold: true }]) });
  ls.start();
  await log.until("all hits", () => log.hits.length >= total);
  ls.close();
  assert.equal(log.batches.length, 0, "no batches were asked for");
  assert.deepEqual(hitIds(log.hits), want, "onHits order and ids");
  log.hits.forEach((h, i) => assert.equal(h.pageName, page(i), `pageName of hit ${i}`));
});

// ---- new cases -----------------------------------------------------------------------------------

/** A stream of generated hits (50/s) from the emulator: starts, waits for hits. */
async function flowing(LiveStream, server, prefix, extra = {}) {
  const emu = emulator(server);
  const name = unique(prefix);
  const log = recorder();
  const ls = new LiveStream(options(emu.url(name), log, extra));
  ls.start();
  await log.until("the first hits", () => log.hits.length > 0);
  return { emu, name, log, ls };
}

for (const [how, dispose] of [["free()", (ls) => ls.free()], ["[Symbol.dispose]()", (ls) => ls[Symbol.dispose]()]]) {
  scenario(`${how} closes first: the server sees the close, no hit after, the object stays usable`, async ({ LiveStream, server }) => {
    assert.equal(typeof LiveStream.prototype[Symbol.dispose], "function", "Symbol.dispose is implemented");
    const { emu, name, log, ls } = await flowing(LiveStream, server, "web-free");
    dispose(ls);
    const hits = log.hits.length;
    const total = log.total();
    assert.equal(log.states().at(-1), "closed", "a closed status while freeing");
    const conns = await emu.sawClose(name);
    assert.equal(conns[0].close_reason, "client_closed");
    await sleep(300); // ~15 hits would have come in this time
    assert.equal(log.hits.length, hits, "hits after the stream was freed");
    assert.equal(log.total(), total, "callbacks after the stream was freed");
    assert.notThrows(() => ls.close(), "close() after free");
    assert.equal(assert.notThrows(() => ls.state, "state after free"), "closed");
    const stats = assert.notThrows(() => ls.stats, "stats after free");
    assert.atLeast(stats.hits, hits, "stats.hits after free");
    assert.notThrows(() => ls.free(), "a second free()");
    assert.notThrows(() => ls.start(), "start() after free");
    assert.equal(ls.state, "closed");
  });
}

scenario("an async onHits that rejects: one callback_error per rejection; one onHits pending per connection", async ({ LiveStream, unhandled }) => {
  const n = 12;
  const lines = Array.from({ length: n }, (_, i) => record(BIG_ID, String(i + 1), `p${i}`));
  const log = recorder();
  let pending = 0;
  let maxPending = 0;
  let calls = 0;
  const o = options(`${EXAMPLE}/async`, log, { fetch: fakeFetch([{ status: 200, body: bytes(crlf(lines)), chunkSize: 40, hold: true }]) });
  delete o.onBatch;
  o.onHits = async (hits) => {
    calls++;
    pending++;
    maxPending = Math.max(maxPending, pending);
    log.hits.push(...hits);
    await sleep(15);
    pending--;
    log.notify();
    throw new Error(`rejected ${calls}`);
  };
  const ls = new LiveStream(o);
  ls.start();
  await log.until("every hit and a callback_error per call", () => log.hits.length >= n && log.errors.length >= calls && pending === 0);
  await sleep(50); // let any unhandled rejection surface
  assert.atLeast(calls, 2, "onHits calls");
  assert.equal(maxPending, 1, "onHits calls pending at once on one connection");
  assert.equal(log.errors.length, calls, `callback_error per rejected onHits (${log.summary()})`);
  for (const e of log.errors) {
    assert.equal(e.code, "callback_error");
    assert.includes(e.message, "rejected");
    assert.equal(e.fatal, false);
  }
  assert.deepEqual(hitIds(log.hits), lines.map((_, i) => [BIG_ID, String(i + 1)]), "hits in order");
  assert.deepEqual(unhandled.map(String), [], "unhandled rejections");
  assert.equal(ls.state, "running");
  ls.close();
});

scenario("401 messages: a token function's token refused twice; no token at all", async ({ LiveStream, tokenServer }) => {
  const emu = emulator(tokenServer);
  // A token function returning a wrong token: asked again after the first 401, refused again.
  const log = recorder();
  let asked = 0;
  const a = new LiveStream(options(emu.url(unique("web-tok")), log, {
    token: () => {
      asked++;
      return "wrong";
    },
    reconnectDelayMs: 60_000,
  }));
  a.start();
  await log.until("waiting after the second 401", () => log.states().includes("waiting"));
  a.close();
  assert.equal(asked, 2, "token function calls");
  assert.deepEqual(log.codes(), ["unauthorized", "unauthorized"]);
  for (const e of log.errors) {
    assert.notIncludes(e.message, "static", "a token function is not a static token");
    assert.notIncludes(e.message, "fixed token", "a token function is not a fixed token");
  }
  assert.includes(log.errors[1].message, "token source was refused too");
  // No token at all.
  const log2 = recorder();
  const o = options(emu.url(unique("web-notok")), log2, { reconnectDelayMs: 60_000 });
  delete o.token;
  const b = new LiveStream(o);
  b.start();
  await log2.until("waiting after the 401", () => log2.states().includes("waiting"));
  b.close();
  assert.deepEqual(log2.codes(), ["unauthorized"]);
  assert.includes(log2.errors[0].message, "no token is configured");
  // The right token works.
  const log3 = recorder();
  const c = new LiveStream(options(emu.url(unique("web-oktok")), log3, { token: () => "right" }));
  c.start();
  await log3.until("open", () => log3.states().includes("open"));
  c.close();
  assert.deepEqual(log3.codes(), []);
});

scenario("signal: abort() closes the stream; an already-aborted signal makes it closed at once", async ({ LiveStream, server }) => {
  const ac = new AbortController();
  const { emu, name, log, ls } = await flowing(LiveStream, server, "web-signal", { signal: ac.signal });
  ac.abort();
  assert.equal(ls.state, "closed", "state after abort()");
  assert.equal(log.states().at(-1), "closed", "a closed status on abort()");
  const total = log.total();
  const conns = await emu.sawClose(name);
  assert.equal(conns[0].close_reason, "client_closed");
  await sleep(200);
  assert.equal(log.total(), total, "callbacks after abort()");

  const f = fakeFetch([{ status: 200 }]);
  const log2 = recorder();
  const b = new LiveStream(options(`${EXAMPLE}/aborted`, log2, { fetch: f, signal: AbortSignal.abort() }));
  assert.equal(b.state, "closed", "state with an already-aborted signal");
  b.start();
  await sleep(50);
  assert.equal(f.state.calls.length, 0, "requests after start() with an aborted signal");
  assert.equal(b.state, "closed");
  assert.deepEqual(log2.codes(), []);
});

scenario("close() returns a promise that resolves once the request has ended", async ({ LiveStream, server }) => {
  const { emu, name, ls } = await flowing(LiveStream, server, "web-closep");
  const p = ls.close();
  assert.ok(p && typeof p.then === "function", "close() returns a promise");
  assert.equal(ls.close(), p, "close() again returns the same promise");
  await within(5000, "close() to resolve", p);
  // The request has ended on the client (its socket closed); the server notices within a
  // moment (hyper sees the EOF asynchronously: asking at once sometimes still shows it live).
  const conns = await emu.sawClose(name, 2000);
  assert.equal(conns[0].close_reason, "client_closed");
  // Closing an idle stream resolves too.
  const idle = new LiveStream(options(emu.url(unique("web-closep-idle")), recorder()));
  await within(1000, "close() of a stream never started", idle.close());
});

scenario("for await: batches arrive, and break closes the stream", async ({ LiveStream, server }) => {
  const emu = emulator(server);
  const name = unique("web-iter");
  await emu.script(name, { rate: 0, body: { lines: [1, 2, 3].map((i) => record(BIG_ID, String(i), `p${i}`)), chunk_size: 50, then: "hold" } });
  const ls = new LiveStream({ url: emu.url(name), token: "t", reconnectDelayMs: 200 });
  const ids = [];
  await within(10_000, "3 hits through for await", (async () => {
    for await (const batch of ls) {
      assert.equal(batch.constructor.name, "HitBatch");
      for (let i = 0; i < batch.length; i++) ids.push(batch.id(i).hitIdLow);
      if (ids.length >= 3) break;
    }
  })());
  assert.deepEqual(ids, ["1", "2", "3"]);
  assert.equal(ls.state, "closed", "state after break");
  const conns = await emu.sawClose(name);
  assert.equal(conns[0].close_reason, "client_closed");
});

scenario("for await: a fatal error makes the loop throw an Error with .code", async ({ LiveStream, server }) => {
  const emu = emulator(server);
  const name = unique("web-iter404");
  await emu.script(name, { rate: 0, responses: [{ status: 404 }] });
  const ls = new LiveStream({ url: emu.url(name), token: "t", reconnectDelayMs: 50 });
  let thrown = null;
  let batches = 0;
  await within(10_000, "the loop to end", (async () => {
    try {
      for await (const _ of ls) batches++;
    } catch (e) {
      thrown = e;
    }
  })());
  assert.ok(thrown instanceof Error, `the loop threw an Error (got ${thrown})`);
  assert.equal(thrown.code, "not_found");
  assert.includes(thrown.message, "90 days");
  assert.equal(batches, 0);
  assert.equal(ls.state, "failed");
  ls.close();
});

scenario("for await: a slow consumer gets consumer_overflow once per episode, and memory stays bounded", async ({ LiveStream }) => {
  const f = pushFetch();
  const log = recorder();
  const ls = new LiveStream({ url: `${EXAMPLE}/slow`, token: "t", fetch: f, maxBufferedHits: 5, onError: log.callbacks.onError });
  const it = ls[Symbol.asyncIterator]();
  let id = 0;
  const push = (n) => {
    for (let k = 0; k < n; k++) f.push(bytes(crlf([record(BIG_ID, String(++id), "p")])));
  };
  const next = async () => (await within(5000, "it.next()", it.next())).value.id(0).hitIdLow;
  // 20 one-hit chunks while the consumer takes nothing, then it takes what was kept: the
  // first 5, then the marker pushed afterwards (so nothing else was buffered).
  const episode = async () => {
    push(20);
    await within(5000, "the 20 chunks to be read", f.pulled(id));
    await poll("the hits to be counted", () => ls.stats.hits === id, 5000, 5);
    const first = id - 19;
    const got = [];
    for (let k = 0; k < 5; k++) got.push(await next());
    push(1);
    got.push(await next());
    return { want: [0, 1, 2, 3, 4, 20].map((k) => String(first + k)), got };
  };
  const one = await episode();
  assert.deepEqual(one.got, one.want, "the buffered hits of the first episode, then the marker");
  assert.deepEqual(log.codes(), ["consumer_overflow"], "errors after the first episode");
  assert.equal(log.errors[0].fatal, false);
  assert.includes(log.errors[0].message, "maxBufferedHits");
  assert.equal(ls.stats.overflowed, 15, "stats.overflowed after the first episode");
  // Caught up (the queue is empty): the next overflow is a new episode, reported again.
  const two = await episode();
  assert.deepEqual(two.got, two.want, "the buffered hits of the second episode, then the marker");
  assert.deepEqual(log.codes(), ["consumer_overflow", "consumer_overflow"], "one error per episode");
  assert.equal(ls.stats.overflowed, 30, "stats.overflowed after the second episode");
  await it.return();
  assert.equal(ls.state, "closed");
});

scenario("a fetch rejecting with an error whose cause getter throws: network_error, then a retry", async ({ LiveStream }) => {
  const nasty = () => {
    const e = new TypeError("fetch failed");
    Object.defineProperty(e, "cause", { get() { throw new Error("cause getter"); } });
    return e;
  };
  const f = fakeFetch([{ reject: nasty }, { status: 200, body: bytes(crlf([record(BIG_ID, "7", "ok")])), hold: true }]);
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/cause`, log, { fetch: f, reconnectDelayMs: 50 }));
  ls.start();
  await log.until("a hit after the retry", () => log.hits.length > 0, 5000);
  assert.deepEqual(log.codes(), ["network_error"]);
  assert.includes(log.errors[0].message, "fetch failed");
  assert.deepEqual(log.states(), ["connecting", "waiting", "connecting", "open"]);
  assert.equal(f.state.calls.length, 2);
  ls.close();
});

scenario("a Response whose status getter throws is a failure, not a hang", async ({ LiveStream }) => {
  let cancelled = 0;
  const weird = () => ({
    get status() { throw new Error("status getter"); },
    headers: new Headers(),
    body: new ReadableStream({ pull() { return new Promise(() => {}); }, cancel() { cancelled++; } }),
  });
  const f = fakeFetch([{ respond: weird }, { status: 200, body: bytes(crlf([record(BIG_ID, "8", "ok")])), hold: true }]);
  const log = recorder();
  const ls = new LiveStream(options(`${EXAMPLE}/status`, log, { fetch: f, reconnectDelayMs: 50 }));
  ls.start();
  await log.until("a hit after the retry", () => log.hits.length > 0, 5000);
  assert.deepEqual(log.states(), ["connecting", "waiting", "connecting", "open"]);
  assert.equal(log.errors.length, 1, `errors (${log.summary()})`);
  assert.includes(log.errors[0].message, "status getter");
  assert.equal(log.errors[0].fatal, false);
  ls.close();
});
