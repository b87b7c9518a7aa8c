// The demo page in a real browser: Debian's chromium driven by playwright-core, against a
// real emulator started here (target/release/livestream-emulator, or LIVESTREAM_EMULATOR_BIN).
//
//   node --test tests/e2e/
//
// Needs the built package in pkg/ (bash scripts/build-pkg.sh; LIVESTREAM_PKG_DIR points
// elsewhere) and the emulator binary (cargo build --release -p livestream-emulator).
// Writes screenshots of the running dashboard to test-output/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.LIVESTREAM_EMULATOR_BIN ||
  ["native", "release"].map((p) => join(ROOT, `target/${p}/livestream-emulator`)).find((f) => existsSync(f)) ||
  join(ROOT, "target/native/livestream-emulator");
const PKG = process.env.LIVESTREAM_PKG_DIR || join(ROOT, "pkg");
const UPLOT = join(ROOT, "node_modules/uplot/dist");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const OUT = join(ROOT, "test-output");
const STREAM = "e2e";
// Generous: this must not flake on a loaded two-core machine.
const T = { start: 30_000, hits: 30_000, state: 30_000, recover: 45_000 };

let emulator = null;
let emulatorLog = [];
let base = "";
let browser = null;

function startEmulator() {
  for (const [what, path, hint] of [
    ["emulator binary", BIN, "cargo build --release -p livestream-emulator"],
    ["npm package", join(PKG, "livestream_wasm.js"), "bash scripts/build-pkg.sh"],
    ["uPlot", join(UPLOT, "uPlot.esm.js"), "npm install"],
    ["chromium", CHROMIUM, "apt-get install chromium"],
  ]) {
    assert.ok(existsSync(path), `${what} not found at ${path}; build it first: ${hint}`);
  }
  const args = [
    "--listen", "127.0.0.1:0",
    "--rate", "150",
    "--seed", "7",
    "--slot-hold-secs", "1",
    "--www", join(ROOT, "www"),
    "--mount", `/pkg/=${PKG}`,
    "--mount", `/vendor/uplot/=${UPLOT}`,
  ];
  emulator = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  createInterface({ input: emulator.stderr }).on("line", (l) => {
    emulatorLog.push(l);
    if (emulatorLog.length > 200) emulatorLog.shift();
  });
  return new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`emulator printed no URL within ${T.start} ms:\n${emulatorLog.join("\n")}`)), T.start);
    emulator.once("exit", (code) => reject(new Error(`emulator exited (${code}):\n${emulatorLog.join("\n")}`)));
    const rl = createInterface({ input: emulator.stdout });
    rl.on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1].replace(/\/$/, ""));
      }
    });
  });
}

/** Opens the page and waits until it has filled in and wired its form (it asks `/status` and
 * loads the package first): reading the form before that would race it. */
async function gotoReady(page, url) {
  const res = await page.goto(url, { waitUntil: "load", timeout: T.start });
  await page.waitForSelector("html[data-ready]", { state: "attached", timeout: T.start });
  return res;
}

async function admin(method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.equal(res.status, 200, `${method} ${path} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Reads the dashboard's visible state in one go. */
function snapshot(page) {
  return page.evaluate(() => {
    const num = (id) => Number((document.getElementById(id)?.textContent || "0").replace(/[^\d]/g, "")) || 0;
    const slot = document.querySelector('.slot[data-slot="0"]');
    const rows = [...document.querySelectorAll("#hits tbody tr:not([hidden])")];
    return {
      summary: document.getElementById("summary")?.dataset.state,
      summaryText: document.getElementById("summary-text")?.textContent,
      hits: num("kpi-hits"),
      dups: num("kpi-dups"),
      reconnects: num("kpi-reconnects"),
      slotState: slot?.dataset.state,
      slotHttp: slot?.querySelector('[data-role="http"]')?.textContent,
      slotReason: slot?.querySelector('[data-role="reason"]')?.textContent,
      countdown: slot?.querySelector('[data-role="countdown"]:not([hidden])')?.textContent ?? null,
      rows: rows.length,
      ids: rows.map((r) => r.querySelector(".c-id")?.textContent),
      pages: rows.map((r) => r.querySelector(".c-page")?.textContent),
      topPages: document.querySelectorAll("#top-pages li:not([hidden]):not(.empty)").length,
      topCountries: document.querySelectorAll("#top-countries li:not([hidden]):not(.empty)").length,
      chartLabel: document.getElementById("chart")?.getAttribute("aria-label"),
      chartCanvas: !!document.querySelector("#chart canvas"),
      errors: [...document.querySelectorAll("#errors li")].map((li) => li.textContent),
      // The role as rendered (the share card), not the page's state: the card and the slots'
      // countdown are drawn in the same frame, so a snapshot never pairs a new role with the
      // countdown text of the frame before (seen once in a fresh-clone run).
      role: document.getElementById("share")?.dataset.role || null,
      shareTitle: document.querySelector("#share:not([hidden]) #share-title")?.textContent ?? null,
      shareDetail: document.querySelector("#share:not([hidden]) #share-detail")?.textContent ?? null,
    };
  });
}

/** Polls `check(snapshot)` until it returns a truthy value; fails with the last snapshot. */
async function until(page, what, timeout, check) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await snapshot(page);
    const v = check(last);
    if (v) return { value: v, snap: last };
    if (Date.now() > deadline) {
      assert.fail(`timed out after ${timeout} ms waiting for: ${what}\nlast page state: ${JSON.stringify(last, null, 2)}\nemulator log tail:\n${emulatorLog.slice(-15).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  mkdirSync(OUT, { recursive: true });
  base = await startEmulator();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  if (emulator && emulator.exitCode === null) {
    emulator.kill("SIGTERM");
    await new Promise((r) => { emulator.once("exit", r); setTimeout(r, 3000); });
    if (emulator.exitCode === null) emulator.kill("SIGKILL");
  }
});

test("demo page: live hits, a drop and reconnect, a 409 explained and recovered", { timeout: 240_000 }, async (t) => {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1100 }, colorScheme: "light" });
  const page = await context.newPage();
  let secondTab = null;

  // Console errors: none at all while loading and streaming. After the test drops the
  // connection on purpose, the browser itself may log the failed stream request
  // ("Failed to load resource: … 409"); only that, for the stream URL, is allowed then.
  let expectNetworkNoise = false;
  const consoleErrors = [];
  const tolerated = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const url = m.location()?.url || "";
    const streamNoise = /^Failed to load resource/.test(m.text()) && url.includes(`/api/1/stream/${STREAM}`);
    if (streamNoise && expectNetworkNoise) { tolerated.push(m.text()); return; }
    consoleErrors.push(`${m.text()} (${url})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message}`));

  const url = `${base}/?autoconnect=1&stream=${STREAM}&reconnectDelayMs=1500&reconnectJitterMs=200&maxReconnectDelayMs=4000`;

  await t.test("loads and shows hits, totals, chart and top lists", async () => {
    const res = await gotoReady(page, url);
    assert.equal(res.status(), 200);
    assert.equal(await page.title(), "Live Stream · livestream-wasm demo");
    // The form was prefilled from the query and the advanced warning is shown (1500 < 60000).
    assert.equal(await page.inputValue("#url"), `${base}/api/1/stream/${STREAM}`);
    assert.equal(await page.inputValue("#reconnectDelayMs"), "1500");
    assert.equal(await page.isVisible("#delay-warning"), true);

    const { snap: first } = await until(page, "the first hits in the table", T.hits, (s) => s.slotState === "open" && s.rows > 0 && s.hits > 0);
    assert.equal(first.summary, "open");
    // Exact 64-bit ids, as decimal strings: high:low.
    for (const id of first.ids) assert.match(id, /^\d{1,20}:\d{1,20}$/);
    const { snap } = await until(page, "totals growing, 50 rows, top lists and the chart", T.hits, (s) =>
      s.hits > first.hits + 50 && s.rows === 50 && s.topPages > 0 && s.topCountries > 0 && /peak [1-9]/.test(s.chartLabel || ""),
    );
    assert.ok(snap.chartCanvas, "the chart canvas exists");
    const big = snap.ids.flatMap((id) => id.split(":")).filter((x) => BigInt(x) > 2n ** 53n);
    assert.ok(big.length > 0, `ids above 2^53 are shown exactly: ${snap.ids.slice(0, 3)}`);
    assert.deepEqual(consoleErrors, [], "no console errors while loading and streaming");
  });

  await t.test("a dropped connection waits with a countdown, reconnects, and hits resume", async () => {
    expectNetworkNoise = true;
    const before = await snapshot(page);
    const dropped = await admin("POST", "/admin/drop");
    assert.ok(dropped.dropped >= 1, `the emulator dropped the page's connection: ${JSON.stringify(dropped)}`);
    const { snap: waiting } = await until(page, "the slot waiting with a countdown", T.state, (s) => s.slotState === "waiting" && s.countdown);
    assert.match(waiting.countdown, /Reconnecting (in \d+ s|now)/);
    assert.match(waiting.countdown, /KA-16598/);
    assert.equal(waiting.summary, "waiting");
    const { snap: back } = await until(page, "open again", T.recover, (s) => s.slotState === "open");
    await until(page, "hits after the reconnect", T.hits, (s) => s.hits > back.hits + 20 && s.hits > before.hits);
    // (Duplicates are likely here, since the emulator re-sends the last records it wrote,
    // but not certain: records lost in flight with the dropped connection are not duplicates.)
    await until(page, "the reconnect counted", T.state, (s) => s.reconnects >= 1);
  });

  await t.test("a 409 from a still-held slot is explained, waited out, and recovered", async () => {
    // Make this stream hold a dropped client's slot for 6 s: the page's reconnect after
    // 1.5 s meets a real 409 ("slot still held", KA-16598) and must keep waiting.
    await admin("PUT", `/admin/streams/${STREAM}`, { slot_hold_secs: 6 });
    await until(page, "open before the second drop", T.recover, (s) => s.slotState === "open");
    await admin("POST", "/admin/drop");
    const { snap: conflict } = await until(page, "a 409 shown on the slot while it waits", T.recover, (s) => s.slotState === "waiting" && s.slotHttp === "409" && s.countdown);
    assert.match(conflict.countdown, /409/);
    assert.match(conflict.slotReason, /409/);
    await until(page, "the 409 in the error list", T.state, (s) => s.errors.some((e) => /409/.test(e)));
    await page.screenshot({ path: join(OUT, "demo-409.png"), fullPage: true });
    const { snap: back } = await until(page, "open again after the held slot was freed", T.recover, (s) => s.slotState === "open");
    await until(page, "hits after the 409", T.hits, (s) => s.hits > back.hits + 20);
    await admin("DELETE", `/admin/streams/${STREAM}`);
  });

  await t.test("screenshots of the running dashboard", async () => {
    await until(page, "a full table", T.hits, (s) => s.rows === 50 && s.slotState === "open");
    await page.waitForTimeout(2500); // let the chart scroll a bit past the gaps
    await page.screenshot({ path: join(OUT, "demo.png"), fullPage: true });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.waitForTimeout(500);
    await page.screenshot({ path: join(OUT, "demo-dark.png"), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(500);
    await page.screenshot({ path: join(OUT, "demo-mobile.png"), fullPage: false });
    await page.setViewportSize({ width: 1440, height: 1100 });
    await page.emulateMedia({ colorScheme: "light" });
  });

  await t.test("a second tab follows: the same hits, its role shown, one connection at the emulator", async () => {
    const second = await context.newPage();
    second.on("pageerror", (e) => consoleErrors.push(`second tab, uncaught: ${e.message}`));
    second.on("console", (m) => {
      if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) consoleErrors.push(`second tab: ${m.text()}`);
    });
    await gotoReady(second, url);
    const { snap } = await until(second, "the second tab following with hits", T.hits, (s) => s.role === "follower" && s.rows > 10 && s.slotState === "open");
    assert.match(snap.summaryText, /following another tab/);
    assert.match(snap.shareTitle, /Following the tab that holds the connection/);
    assert.match(snap.shareDetail, /takes over: it waits 2 s first/);
    assert.equal(await second.textContent("#disconnect"), "Stop following");
    const first = await snapshot(page);
    assert.equal(first.role, "leader");
    assert.match(first.shareTitle, /This tab holds the connection/);
    // The same hits: what the second tab shows, the first tab received too.
    const shown = snap.ids;
    const firstIds = new Set(await page.evaluate(() => window.liveStreamDemo.recentHitIds()));
    const missing = shown.filter((id) => !firstIds.has(id));
    assert.deepEqual(missing, [], "every hit the second tab shows came through the first tab's connection");
    await until(second, "the leader's totals in the follower", T.state, (s) => s.hits > 0 && Math.abs(s.hits - first.hits) < first.hits);
    // One connection at the emulator, ever: no second one opened, not even for a moment.
    const stats = await admin("GET", `/admin/stats?stream=${STREAM}`);
    assert.equal(stats.streams[STREAM].peak_live, 1, `one live connection at most: ${JSON.stringify(stats.streams[STREAM])}`);
    assert.equal(stats.streams[STREAM].live, 1);
    await second.screenshot({ path: join(OUT, "demo-follower.png"), fullPage: false });
    secondTab = second;
  });

  await t.test("disconnecting the first tab hands over: the follower waits for the held slot, then holds the connection", async () => {
    const second = secondTab;
    assert.ok(second, "the second tab is open");
    await page.click("#disconnect");
    await until(page, "the first tab closed", T.state, (s) => s.slotState === "closed" && s.summary === "closed");
    const { snap: waiting } = await until(second, "the second tab taking over, waiting with a countdown", T.state, (s) => s.role === "leader" && s.slotState === "waiting" && s.countdown);
    assert.match(waiting.countdown, /took over the connection from a tab that left/);
    assert.match(waiting.countdown, /KA-16598/);
    await until(second, "the second tab open and receiving hits", T.recover, (s) => s.role === "leader" && s.slotState === "open" && /This tab took over/.test(s.shareTitle));
    const before = await snapshot(second);
    await until(second, "hits after the hand-over", T.hits, (s) => s.hits > before.hits + 20);
    const stats = await admin("GET", `/admin/stats?stream=${STREAM}`);
    assert.equal(stats.streams[STREAM].peak_live, 1, `never two live connections: ${JSON.stringify(stats.streams[STREAM])}`);

    await second.click("#disconnect");
    await until(second, "all slots closed", T.state, (s) => s.slotState === "closed" && s.summary === "closed");
    const deadline = Date.now() + T.state;
    let live;
    do {
      live = (await admin("GET", `/admin/stats?stream=${STREAM}`)).streams[STREAM].live;
      if (live === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    } while (Date.now() < deadline);
    assert.equal(live, 0, "no live connection left once every tab disconnected");
    assert.equal(await second.isEnabled("#connect"), true);
    await second.close();
    assert.deepEqual(consoleErrors, [], "no unexpected console errors");
    t.diagnostic(`browser network log lines tolerated after the deliberate drops: ${tolerated.length}${tolerated.length ? ` (e.g. ${JSON.stringify(tolerated[0])})` : ""}`);
  });

  await t.test("a fatal status and a bad option are shown, and the form is usable again", async () => {
    await admin("PUT", "/admin/streams/e2e-fatal", { responses: [{ status: 404, error_description: "no stream e2e-fatal (e2e)" }] });
    await gotoReady(page, `${base}/?autoconnect=1&stream=e2e-fatal&reconnectDelayMs=1500`);
    const { snap } = await until(page, "the slot failed and the form enabled again", T.state, (s) => s.slotState === "failed" && s.summary === "failed");
    assert.match(snap.slotReason, /404/);
    assert.equal(await page.locator("#errors li.fatal").count(), 1, "the fatal error is highlighted");
    assert.match(await page.textContent("#errors li.fatal"), /not found \(404\)/);
    await page.waitForFunction(() => !document.getElementById("connect").disabled, null, { timeout: T.state });
    await page.screenshot({ path: join(OUT, "demo-fatal.png"), fullPage: false });

    await page.fill("#maxConnections", "9");
    await page.click("#connect");
    await page.waitForSelector("#form-error:not([hidden])", { timeout: T.state });
    assert.match(await page.textContent("#form-error"), /maxConnections/);
    assert.equal(await page.isEnabled("#connect"), true);
    assert.deepEqual(consoleErrors.filter((e) => !/Failed to load resource.*404/.test(e)), [], "no console errors");
  });

  await context.close();
});

test("remembered credentials stay with their origin: a link to another server gets no token and no API key", { timeout: 120_000 }, async (t) => {
  // A stand-in for an attacker's server on another port: it records every request and
  // answers CORS preflights as generously as possible, so the page would send whatever it had.
  const seen = [];
  const attacker = createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    res.setHeader("access-control-allow-origin", req.headers.origin || "*");
    res.setHeader("access-control-allow-headers", req.headers["access-control-request-headers"] || "*");
    res.setHeader("access-control-allow-methods", "GET, OPTIONS");
    if (req.method === "OPTIONS") { res.writeHead(204); res.end(); return; }
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"error":"not_found","error_description":"no such stream"}');
  });
  await new Promise((r) => attacker.listen(0, "127.0.0.1", r));
  const other = `http://127.0.0.1:${attacker.address().port}`;
  t.after(() => new Promise((r) => attacker.close(r)));

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const TOKEN = "s3cret-token-for-the-emulator";
  const KEY = "s3cret-api-key";

  // Save credentials for the emulator's origin ("remember" ticked, connect, disconnect).
  await gotoReady(page, `${base}/?stream=${STREAM}-creds&reconnectDelayMs=1500`);
  await page.waitForFunction(() => window.liveStreamDemo && document.getElementById("reconnectDelayMs").value === "1500", null, { timeout: T.start });
  assert.equal(await page.isChecked("#remember"), false, "nothing is remembered unless asked");
  await page.fill("#token", TOKEN);
  await page.fill("#apiKey", KEY);
  await page.check("#remember");
  await page.click("#connect");
  await until(page, "connected with the remembered credentials", T.hits, (s) => s.slotState === "open" && s.hits > 0);
  await page.click("#disconnect");
  const stored = await page.evaluate(() => ({ ...localStorage }));
  assert.ok(!JSON.stringify(JSON.parse(stored["livestream-wasm-demo:settings"] || "{}")).includes("s3cret"), "no secret in the general settings");
  assert.deepEqual(Object.keys(JSON.parse(stored["livestream-wasm-demo:credentials"])), [base], "credentials are kept under the emulator's origin only");

  // The same origin fills them in again.
  await gotoReady(page, `${base}/?stream=${STREAM}-creds`);
  await page.waitForFunction((tok) => document.getElementById("token").value === tok, TOKEN, { timeout: T.start });
  assert.equal(await page.inputValue("#apiKey"), KEY);
  assert.equal(await page.isChecked("#remember"), true);

  // A link to another origin with autoconnect: no token, no key, not even in the preflight.
  const link = `${base}/?url=${encodeURIComponent(`${other}/api/1/stream/x`)}&autoconnect=1&reconnectDelayMs=1500`;
  await gotoReady(page, link);
  await until(page, "the page tried the other server and stopped", T.state, (s) => s.slotState === "failed");
  assert.equal(await page.inputValue("#url"), `${other}/api/1/stream/x`);
  assert.equal(await page.inputValue("#token"), "", "no remembered token filled in for another origin");
  assert.equal(await page.inputValue("#apiKey"), "", "no remembered API key filled in for another origin");
  assert.equal(await page.isChecked("#remember"), false);
  assert.ok(seen.length > 0, "the page did connect to the other server (so the check below means something)");
  for (const r of seen) {
    assert.equal(r.headers.authorization, undefined, `no Authorization to ${other}: ${JSON.stringify(r)}`);
    assert.equal(r.headers["x-api-key"], undefined, `no x-api-key to ${other}: ${JSON.stringify(r)}`);
    assert.doesNotMatch(r.headers["access-control-request-headers"] || "", /authorization|x-api-key/i, "the preflight asks for neither");
    assert.ok(!JSON.stringify(r).includes("s3cret"), "no secret anywhere in the request");
  }

  // Typing the other origin by hand does not carry the credentials along either; going back
  // to the emulator's URL brings them back.
  await page.fill("#url", `${base}/api/1/stream/${STREAM}-creds`);
  assert.equal(await page.inputValue("#token"), TOKEN);
  await page.fill("#url", `${other}/api/1/stream/y`);
  assert.equal(await page.inputValue("#token"), "");
  assert.equal(await page.inputValue("#apiKey"), "");
  t.diagnostic(`requests the other server saw: ${seen.map((r) => `${r.method} ${r.url}`).join(", ")}`);
});

// The shape `npm start` runs: the emulator plays Adobe (Live Stream + IMS), livestream-relay
// holds the token and the one upstream connection and serves the page; the page reads the
// relay. Skipped when the relay is not built (cargo build --profile native -p livestream-relay).
const RELAY_BIN = process.env.LIVESTREAM_RELAY_BIN || join(ROOT, "target/native/livestream-relay");

function spawnListening(bin, args, env, what) {
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  const log = [];
  createInterface({ input: child.stderr }).on("line", (l) => { log.push(l); if (log.length > 100) log.shift(); });
  const url = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${what} printed no URL:\n${log.join("\n")}`)), T.start);
    child.once("exit", (code) => fail(new Error(`${what} exited (${code}):\n${log.join("\n")}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); ok(m[1].replace(/\/$/, "")); }
    });
  });
  const stop = async () => {
    if (child.exitCode !== null) return;
    child.kill("SIGTERM");
    await new Promise((r) => { child.once("exit", r); setTimeout(r, 5000); });
    if (child.exitCode === null) child.kill("SIGKILL");
  };
  return { child, url, log, stop };
}

test("through livestream-relay: the page says so, shows the relay's upstream state, and gets hits", { timeout: 120_000, skip: existsSync(RELAY_BIN) ? false : `no relay binary at ${RELAY_BIN}` }, async (t) => {
  const secret = "e2e-ims-secret";
  const emu = spawnListening(BIN, ["--listen", "127.0.0.1:0", "--rate", "100", "--seed", "9", "--ims-client-id", "demo", "--token-ttl-secs", "600", "--quiet"], { LIVESTREAM_EMULATOR_IMS_SECRET: secret }, "emulator (IMS)");
  t.after(emu.stop);
  const upstream = await emu.url;
  const relay = spawnListening(RELAY_BIN, [
    "--upstream", `${upstream}/api/1/stream/demo`, "--client-id", "demo", "--scope", "openid,AdobeID,read_organizations", "--ims-url", upstream,
    "--listen", "127.0.0.1:0", "--www", join(ROOT, "www"), "--mount", `/pkg/=${PKG}`, "--mount", `/vendor/uplot/=${UPLOT}`,
  ], { LIVESTREAM_CLIENT_SECRET: secret }, "relay");
  t.after(relay.stop);
  const site = await relay.url;

  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`uncaught: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await gotoReady(page, `${site}/?autoconnect=1`);
  await until(page, "hits through the relay", T.hits, (s) => s.slotState === "open" && s.rows > 10);
  // The form's defaults for a relay: its own stream, no token in the page, a short delay.
  assert.equal(await page.inputValue("#url"), `${site}/api/1/stream/demo`);
  assert.equal(await page.inputValue("#token"), "");
  assert.equal(await page.inputValue("#reconnectDelayMs"), "2000");
  assert.equal(await page.isVisible("#delay-warning"), false, "no 409 warning: the relay never answers 409");
  await page.waitForFunction(() => /UPSTREAM 1 OF 1 OPEN/i.test(document.getElementById("route-pill")?.textContent || ""), null, { timeout: T.state });
  assert.match(await page.textContent("#route-title"), /Through livestream-relay/);
  assert.match(await page.textContent("#route-detail"), /token from Adobe IMS/);
  assert.match(await page.textContent("#relay-upstream"), /Upstream 1\s*open · HTTP 200/);
  assert.match(await page.textContent("#lede-source"), /livestream-relay/);
  await page.waitForTimeout(2500);
  await page.screenshot({ path: join(OUT, "demo-relay.png"), fullPage: false });
  assert.deepEqual(errors, [], "no console errors");
});
