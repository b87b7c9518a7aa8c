// The behaviour scenarios (scenarios.mjs) in Node, through the package's "node" entry
// (pkg/node.js: the .wasm read from disk, requests through node:http), plus what only Node
// can show: process exit, the default fetch, panic containment, redirects to other origins.
//
//   node --test tests/web/node.test.mjs
//
// Needs pkg/ (bash scripts/build-pkg.sh) and the emulator (cargo build --release -p
// livestream-emulator); LIVESTREAM_PKG_DIR and LIVESTREAM_EMULATOR_BIN point elsewhere.

import { test, before, after } from "node:test";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { PKG, startEmulator, needBuilt } from "./emulator.mjs";
import { scenarios } from "./scenarios.mjs";
import { assert, BIG_ID, crlf, emulator, options, poll, record, recorder, sleep, unique, within } from "./harness.mjs";

needBuilt();
const NODE_ENTRY = pathToFileURL(join(PKG, "node.js")).href;
const { LiveStream } = await import(NODE_ENTRY);

let main;
let tokenEmu;
const unhandled = [];
const onUnhandled = (reason) => unhandled.push(reason);

before(async () => {
  [main, tokenEmu] = await Promise.all([startEmulator(), startEmulator(["--token", "right"])]);
  process.on("unhandledRejection", onUnhandled);
});

after(async () => {
  process.off("unhandledRejection", onUnhandled);
  await Promise.all([main?.stop(), tokenEmu?.stop()]);
});

for (const s of scenarios) {
  if (s.only && s.only !== "node") continue;
  test(s.name, { timeout: 30_000 }, async () => {
    unhandled.length = 0;
    await s.run({ LiveStream, server: main.url, tokenServer: tokenEmu.url, env: "node", unhandled });
    assert.deepEqual(unhandled.map(String), [], "unhandled rejections while the scenario ran");
  });
}

// ---- Node only ---------------------------------------------------------------------------

/**
 * Runs `code` (an ES module) in a child Node process with `env`; resolves with its output and
 * the time each stdout line came and the process exited (ms since spawn). Killed after `ms`.
 */
function child(code, env, ms = 20_000) {
  return new Promise((resolve) => {
    const start = performance.now();
    const p = spawn(process.execPath, ["--input-type=module", "-e", code], {
      env: { ...process.env, ...env, NODE_ENTRY },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lines = [];
    let stderr = "";
    let partial = "";
    p.stdout.on("data", (d) => {
      partial += d;
      const parts = partial.split("\n");
      partial = parts.pop();
      for (const text of parts) lines.push({ text, at: performance.now() - start });
    });
    p.stderr.on("data", (d) => (stderr += d));
    const kill = setTimeout(() => p.kill("SIGKILL"), ms);
    p.once("exit", (code, signal) => {
      clearTimeout(kill);
      resolve({ code, signal, lines, stderr, exitAt: performance.now() - start, killed: signal === "SIGKILL" });
    });
  });
}

function lineAt(r, text) {
  const l = r.lines.find((x) => x.text.startsWith(text));
  assert.ok(l, `the child printed ${JSON.stringify(text)}; stdout ${JSON.stringify(r.lines.map((x) => x.text))}, stderr ${r.stderr}`);
  return l;
}

test("after a fatal 404 the Node process exits promptly", { timeout: 30_000 }, async () => {
  const emu = emulator(main.url);
  const name = unique("node-404-exit");
  await emu.script(name, { rate: 0, responses: [{ status: 404 }] });
  const r = await child(`
    const { LiveStream } = await import(process.env.NODE_ENTRY);
    const ls = new LiveStream({ url: process.env.URL, token: "t", onStatus(s) { if (s.state === "failed") console.log("failed"); } });
    ls.start();
  `, { URL: emu.url(name) });
  const failed = lineAt(r, "failed");
  assert.ok(!r.killed, `the process was still running 20 s after the fatal 404 (idleTimeoutMs or a socket keeps it alive); stderr ${r.stderr}`);
  assert.equal(r.code, 0, `exit code (stderr ${r.stderr})`);
  assert.atMost(r.exitAt - failed.at, 2000, "ms from the failed status to the process exit");
});

for (const how of ["free", "dispose"]) {
  test(`after ${how === "free" ? "free()" : "[Symbol.dispose]()"} the Node process exits and the server saw the close`, { timeout: 30_000 }, async () => {
    const emu = emulator(main.url);
    const name = unique(`node-${how}-exit`);
    const r = await child(`
      const { LiveStream } = await import(process.env.NODE_ENTRY);
      let done = false;
      const ls = new LiveStream({
        url: process.env.URL, token: "t",
        onHits(hits) {
          if (done) return;
          done = true;
          console.log("hits");
          process.env.HOW === "free" ? ls.free() : ls[Symbol.dispose]();
          console.log("freed " + ls.state);
        },
      });
      ls.start();
    `, { URL: emu.url(name), HOW: how });
    const freed = lineAt(r, "freed");
    assert.equal(freed.text, "freed closed");
    assert.ok(!r.killed, `the process was still running 20 s after ${how}; stderr ${r.stderr}`);
    assert.equal(r.code, 0, `exit code (stderr ${r.stderr})`);
    assert.atMost(r.exitAt - freed.at, 2000, `ms from ${how} to the process exit`);
    const conns = await emu.sawClose(name);
    assert.equal(conns[0].close_reason, "client_closed");
  });
}

test("the browser entry before init() throws an error that names init()", { timeout: 30_000 }, async () => {
  const r = await child(`
    const { LiveStream } = await import(process.env.NODE_ENTRY.replace(/node\\.js$/, "index.js"));
    try {
      new LiveStream({ url: "http://127.0.0.1:9/api/1/stream/x" });
      console.log("no error");
    } catch (e) {
      console.log("error " + e.message);
    }
  `, {});
  const l = lineAt(r, "error ");
  assert.includes(l.text, "init()");
});

test("the Node entry's default fetch is node:http, not the global fetch (gzip reaches the core)", { timeout: 30_000 }, async () => {
  const emu = emulator(main.url);
  const name = unique("node-fetch");
  const lines = Array.from({ length: 30 }, (_, i) => record(BIG_ID, String(i + 1), `page ${i}`));
  await emu.script(name, { rate: 0, body: { lines, gzip: true, chunk_size: 100, then: "hold" } });
  const global = globalThis.fetch;
  let globalCalls = 0;
  globalThis.fetch = (...args) => {
    globalCalls++;
    return global(...args);
  };
  const log = recorder();
  let ls;
  try {
    ls = new LiveStream(options(emu.url(name), log));
    ls.start();
    await log.until("30 hits", () => log.hits.length >= 30);
  } finally {
    globalThis.fetch = global;
  }
  assert.equal(globalCalls, 0, "calls of the global fetch");
  // The body reached the core gzip-compressed (the global fetch would have inflated it).
  const sent = await poll("the emulator's bytes_sent to match the client's bytes", async () => {
    const conn = (await emu.stats(name)).connections[0];
    return conn && conn.bytes_sent === ls.stats.bytes ? conn : null;
  }, 5000).catch((e) => assert.ok(false, `${e.message}: client bytes ${ls.stats.bytes}`));
  assert.ok(sent.bytes_sent < crlf(lines).length, `the body came compressed: ${sent.bytes_sent} bytes for ${crlf(lines).length} of text`);
  ls.close();
});

test("idleTimeoutMs: 0 keeps a silent connection open (3 s)", { timeout: 30_000 }, async () => {
  const emu = emulator(main.url);
  const name = unique("node-silent");
  await emu.script(name, { rate: 0, body: { lines: [], then: "hold" } });
  const log = recorder();
  const ls = new LiveStream(options(emu.url(name), log, { idleTimeoutMs: 0 }));
  ls.start();
  await log.until("open", () => log.states().includes("open"));
  await sleep(3000);
  assert.deepEqual(log.states(), ["connecting", "open"]);
  assert.deepEqual(log.codes(), []);
  assert.equal((await emu.stream(name)).live, 1, "live connections on the server");
  ls.close();
});

test("a panic inside the engine fails that stream alone; a new LiveStream works", { timeout: 30_000 }, async () => {
  const wasm = await import(pathToFileURL(join(PKG, "livestream_wasm.js")).href);
  const { Engine, __testPanic } = wasm;
  assert.equal(typeof __testPanic, "function", "__testPanic is exported");
  const emu = emulator(main.url);
  const name = unique("node-panic");
  await emu.script(name, { rate: 0, body: { lines: [record(BIG_ID, "1", "a")], then: "hold" } });
  const feed = Engine.prototype.feed;
  let armed = true;
  Engine.prototype.feed = function (...args) {
    if (armed) {
      armed = false;
      __testPanic("boom");
    }
    return feed.apply(this, args);
  };
  const log = recorder();
  const consoleError = console.error;
  const printed = [];
  console.error = (...a) => printed.push(a.join(" "));
  let ls;
  try {
    ls = new LiveStream(options(emu.url(name), log));
    ls.start();
    await log.until("the internal error", () => log.codes().includes("internal_error"));
  } finally {
    Engine.prototype.feed = feed;
    console.error = consoleError;
  }
  const conns = await emu.sawClose(name);
  assert.equal(conns[0].close_reason, "client_closed", "the request was aborted");
  await sleep(100);
  const fatal = log.errors.filter((e) => e.fatal);
  assert.equal(fatal.length, 1, `fatal errors (${log.summary()})`);
  assert.equal(fatal[0].code, "internal_error");
  assert.includes(fatal[0].message, "internal error");
  assert.ok(printed.some((p) => p.includes("boom")), `the panic message went to the console: ${JSON.stringify(printed)}`);
  assert.equal(log.hits.length, 0);
  assert.equal(log.states().at(-1), "failed");
  assert.equal(ls.state, "failed");
  const stats = assert.notThrows(() => ls.stats, "stats after the panic");
  assert.equal(stats.slots[0]?.state, "failed", "the slot's state in stats");
  await within(2000, "close() after the panic", assert.notThrows(() => ls.close(), "close() after the panic"));
  assert.notThrows(() => ls.free(), "free() after the panic");
  // A new client works.
  const log2 = recorder();
  const after = new LiveStream(options(emu.url(unique("node-after-panic")), log2));
  after.start();
  await log2.until("hits on a new LiveStream", () => log2.hits.length >= 3);
  assert.deepEqual(log2.codes(), []);
  await after.close();
});

test("a redirect to another origin is fatal (cross_origin_redirect) and the token never goes there", { timeout: 30_000 }, async () => {
  const seen = [];
  const other = createServer((req, res) => {
    seen.push({ url: req.url, authorization: req.headers.authorization, apiKey: req.headers["x-api-key"] });
    res.writeHead(200, { "content-type": "application/json" });
    res.write(crlf([record(BIG_ID, "77", "elsewhere")]));
  });
  await new Promise((r) => other.listen(0, "127.0.0.1", r));
  const otherOrigin = `http://127.0.0.1:${other.address().port}`;
  try {
    const emu = emulator(main.url);
    const name = unique("node-xorigin");
    const location = `${otherOrigin}/api/1/stream/${name}?maxConnections=1`;
    await emu.script(name, { rate: 0, responses: [{ status: 302, location }] });
    const log = recorder();
    const ls = new LiveStream(options(emu.url(name), log, { apiKey: "key", reconnectDelayMs: 50 }));
    ls.start();
    await log.until("failed", () => log.states().includes("failed"));
    await sleep(200);
    assert.deepEqual(log.codes(), ["cross_origin_redirect"]);
    assert.equal(log.errors[0].fatal, true);
    assert.includes(log.errors[0].message, location);
    assert.includes(log.errors[0].message, "redirectOrigins");
    assert.equal(ls.state, "failed");
    assert.deepEqual(seen, [], "requests the other origin received");
    ls.close();

    // With the other origin listed in redirectOrigins the redirect is followed, credentials included.
    const name2 = unique("node-xorigin-ok");
    await emu.script(name2, { rate: 0, responses: [{ status: 302, location: `${otherOrigin}/api/1/stream/${name2}?maxConnections=1` }] });
    const log2 = recorder();
    const ok = new LiveStream(options(emu.url(name2), log2, { apiKey: "key", redirectOrigins: [otherOrigin] }));
    ok.start();
    await log2.until("a hit from the other origin", () => log2.hits.length > 0);
    assert.equal(log2.hits[0].pageName, "elsewhere");
    assert.deepEqual(seen.map((s) => [s.authorization, s.apiKey]), [["Bearer test-token", "key"]]);
    await ok.close();
  } finally {
    other.closeAllConnections();
    await new Promise((r) => other.close(r));
  }
});

test("share: true is refused in Node (no Web Locks) with a message that says why", () => {
  let thrown;
  try {
    new LiveStream({ url: "https://example.test/api/1/stream/x", share: true });
  } catch (e) {
    thrown = e;
  }
  assert.ok(thrown instanceof TypeError, `expected a TypeError, got ${thrown}`);
  for (const words of ["share", "Web Locks", "BroadcastChannel", "Node"]) {
    assert.ok(String(thrown.message).includes(words), `the message lacks "${words}": ${thrown.message}`);
  }
  // Without share the same options are fine.
  new LiveStream({ url: "https://example.test/api/1/stream/x" }).free();
});
