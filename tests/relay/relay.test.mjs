// The relay with clients of the package: the emulator plays Adobe (with IMS, short-lived
// tokens), the relay holds the credentials, and three Node LiveStream clients of the built
// package plus a plain Node fetch and a raw node:http + zlib client read the relay's
// stream. Every client gets the same records, once, in order, with exact ids; the emulator
// sees one upstream connection; the demo page, served by the relay under its strict CSP,
// shows hits in headless Chromium; SIGTERM frees the upstream slot.
//
// Needs: pkg/ built (scripts/build-pkg.sh, or LIVESTREAM_PKG_DIR), /usr/bin/chromium, the relay and emulator binaries
// (LIVESTREAM_RELAY_BIN / LIVESTREAM_EMULATOR_BIN, else target/{native,release,debug}/).
// Run: node --test tests/relay/
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";
import { chromium } from "playwright-core";

const repo = resolve(fileURLToPath(new URL("../..", import.meta.url)));
// The built package (scripts/build-pkg.sh); LIVESTREAM_PKG_DIR points elsewhere.
const pkgDir = process.env.LIVESTREAM_PKG_DIR || join(repo, "pkg");
const N = 150;

function binary(name, envVar) {
  const candidates = [process.env[envVar], ...["native", "release", "debug"].map((p) => join(repo, "target", p, name))]
    .filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`no ${name} binary: cargo build -p ${name} (or set ${envVar}); looked at ${candidates.join(", ")}`);
  return found;
}

/** Starts a server; resolves to { url, child, stop() } once it printed its address. */
function start(path, args, env = {}) {
  const child = spawn(path, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${path} did not start:\n${out}`)), 15_000);
    const onData = (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        ok({
          url: m[1],
          child,
          log: () => out,
          stop: () => new Promise((done) => {
            if (child.exitCode !== null) return done(child.exitCode);
            child.once("exit", (code) => done(code));
            child.kill("SIGTERM");
          }),
        });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => fail(new Error(`${path} exited (${code}):\n${out}`)));
  });
}

/** The bare digits of an id field in a raw record line. */
const rawId = (line, field) => line.match(new RegExp(`"${field}":(\\d+)`))?.[1];

describe("the relay with Node clients of the package", () => {
  let emulator;
  let relay;
  let LiveStream;

  before(async () => {
    ({ LiveStream } = await import(join(pkgDir, "node.js")));
    emulator = await start(binary("livestream-emulator", "LIVESTREAM_EMULATOR_BIN"),
      ["--listen", "127.0.0.1:0", "--quiet", "--seed", "11", "--rate", "100", "--ims-client-id", "relay-node",
        "--token-ttl-secs", "3", "--slot-hold-secs", "0.5"],
      { LIVESTREAM_EMULATOR_IMS_SECRET: "node-secret" });
    relay = await start(binary("livestream-relay", "LIVESTREAM_RELAY_BIN"),
      ["--listen", "127.0.0.1:0", "--upstream", `${emulator.url}/api/1/stream/demo`, "--client-id", "relay-node",
        "--scope", "openid,AdobeID", "--ims-url", emulator.url, "--reconnect-delay-ms", "500", "--replay", "100000",
        "--www", join(repo, "www"), "--mount", `/pkg/=${pkgDir}`,
        "--mount", `/vendor/uplot/=${join(repo, "node_modules/uplot/dist")}`],
      { LIVESTREAM_CLIENT_SECRET: "node-secret" });
  });

  after(async () => {
    await relay?.stop();
    await emulator?.stop();
  });

  test("3 package clients, fetch and node:http+zlib get the same records, once, in order, exact ids", async () => {
    const url = `${relay.url}/api/1/stream/demo`;
    const lists = [[], [], []];
    const errors = [];
    const streams = lists.map((list, i) => new LiveStream({
      url,
      reconnectDelayMs: 200, // allowed: no Adobe slot is held downstream
      onHits(hits) { for (const h of hits) list.push(`${h.hitIdHigh}:${h.hitIdLow}`); },
      onError(e) { errors.push([i, e]); },
    }));
    streams.forEach((s) => s.start());

    // Node's own fetch (undici inflates gzip itself).
    const viaFetch = (async () => {
      const res = await fetch(url);
      assert.equal(res.headers.get("content-encoding"), "gzip");
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      const ids = [];
      while (ids.length < N) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let k;
        while ((k = buf.indexOf("\r\n")) >= 0 && ids.length < N) {
          const line = buf.slice(0, k);
          buf = buf.slice(k + 2);
          ids.push(`${rawId(line, "hitIdHigh")}:${rawId(line, "hitIdLow")}`);
        }
      }
      await reader.cancel();
      return ids;
    })();

    // node:http without decompression, through zlib: the raw gzip stream as sent.
    const viaZlib = new Promise((ok, fail) => {
      const req = http.get(url, { headers: { "accept-encoding": "gzip" } }, (res) => {
        const ids = [];
        let buf = "";
        const gunzip = zlib.createGunzip();
        res.pipe(gunzip);
        gunzip.setEncoding("utf8");
        gunzip.on("data", (s) => {
          buf += s;
          let k;
          while ((k = buf.indexOf("\r\n")) >= 0 && ids.length < N) {
            const line = buf.slice(0, k);
            buf = buf.slice(k + 2);
            ids.push(`${rawId(line, "hitIdHigh")}:${rawId(line, "hitIdLow")}`);
          }
          if (ids.length >= N) {
            req.destroy();
            ok(ids);
          }
        });
        gunzip.on("error", fail);
      });
      req.on("error", (e) => (e.code === "ECONNRESET" ? null : fail(e)));
    });

    const deadline = Date.now() + 30_000;
    while (lists.some((l) => l.length < N) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    streams.forEach((s) => s.close());
    const [fetched, zipped] = await Promise.all([viaFetch, viaZlib]);
    assert.deepEqual(errors, []);
    for (const l of lists) {
      assert.ok(l.length >= N, `a client got only ${l.length} hits`);
      assert.equal(new Set(l).size, l.length, "a hit was delivered twice");
      assert.deepEqual(l.slice(0, N), fetched, "package client and plain fetch disagree");
    }
    assert.deepEqual(zipped, fetched, "node:http + zlib disagrees");
    // Exact 64-bit ids: most are above 2^53, and the package's strings match the wire digits.
    assert.ok(fetched.filter((k) => BigInt(k.split(":")[0]) > 2n ** 53n).length > N / 2);

    const stats = await (await fetch(`${emulator.url}/admin/stats`)).json();
    assert.equal(stats.streams.demo.peak_live, 1, "one upstream connection for five clients");
    assert.ok(stats.ims.tokens_issued >= 1);
    const status = await (await fetch(`${relay.url}/status`)).json();
    assert.equal(status.healthy, true);
    assert.equal(status.tokenSource, "ims");
    assert.equal(status.streams[0].slots[0].state, "open");
  });

  test("the demo page, served by the relay, shows hits in Chromium without CSP or console errors", async () => {
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      args: ["--no-sandbox", "--headless=new", "--disable-gpu"],
    });
    try {
      const page = await browser.newPage();
      const problems = [];
      page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
      page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
      const res = await page.goto(`${relay.url}/?autoconnect=1&stream=demo&reconnectDelayMs=2000`, { waitUntil: "load" });
      assert.equal(res.status(), 200);
      assert.match(res.headers()["content-security-policy"], /script-src 'self' 'wasm-unsafe-eval' 'sha256-/);
      await page.waitForFunction(
        () => Number((document.getElementById("kpi-hits")?.textContent || "0").replace(/[^\d]/g, "")) > 20,
        null, { timeout: 30_000 });
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
    }
  });

  test("SIGTERM: the relay exits 0 and the emulator sees the upstream connection closed", async () => {
    const code = await relay.stop();
    assert.equal(code, 0, relay.log());
    const stats = await (await fetch(`${emulator.url}/admin/stats`)).json();
    assert.equal(stats.streams.demo.live, 0);
    assert.equal(stats.connections.at(-1).close_reason, "client_closed");
  });
});
