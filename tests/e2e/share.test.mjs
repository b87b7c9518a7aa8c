// `share: true` in a real browser: several pages of one headless Chromium context (tabs of one
// origin) against the emulator with maxConnections 1 and a held slot shorter than the delay.
//
//   node --test tests/e2e/share.test.mjs
//
// Needs pkg/ (bash scripts/build-pkg.sh) and the emulator (cargo build --release -p
// livestream-emulator). Prints the emulator's connection log of the hand-over run and the
// cost of the BroadcastChannel hop.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.LIVESTREAM_EMULATOR_BIN ||
  ["native", "release"].map((p) => join(ROOT, `target/${p}/livestream-emulator`)).find((f) => existsSync(f)) ||
  join(ROOT, "target/native/livestream-emulator");
const PKG = process.env.LIVESTREAM_PKG_DIR || join(ROOT, "pkg");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const DELAY = 2000;
const HOLD_SECS = 1.5;

let emulator = null;
let base = "";
let browser = null;
const emulatorLog = [];

function startEmulator() {
  for (const [what, path] of [["emulator", BIN], ["package", join(PKG, "index.js")], ["chromium", CHROMIUM]]) {
    assert.ok(existsSync(path), `${what} not found at ${path}`);
  }
  emulator = spawn(BIN, [
    "--listen", "127.0.0.1:0", "--rate", "100", "--seed", "11", "--slot-hold-secs", String(HOLD_SECS),
    "--mount", `/pkg/=${PKG}`, "--mount", `/share-test/=${join(ROOT, "tests/e2e/share-page")}`,
  ], { stdio: ["ignore", "pipe", "pipe"] });
  createInterface({ input: emulator.stderr }).on("line", (l) => emulatorLog.push(l));
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`the emulator did not start:\n${emulatorLog.join("\n")}`)), 30_000);
    createInterface({ input: emulator.stdout }).on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        ok(m[1].replace(/\/$/, ""));
      }
    });
  });
}

async function stats(stream) {
  const res = await fetch(`${base}/admin/stats?stream=${stream}`);
  assert.equal(res.status, 200);
  return res.json();
}

async function until(what, f, ms = 30_000) {
  const start = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    assert.ok(Date.now() - start < ms, `timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function openTab(context, query) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(`${base}/share-test/index.html?${query}`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: 30_000 });
  page.errors = errors;
  return page;
}

const hitsOf = (page) => page.evaluate(() => window.log.hits);
const roleOf = (page) => page.evaluate(() => window.stream.stats.role);

before(async () => {
  base = await startEmulator();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  emulator?.kill();
});

test("four tabs share one connection; the hand-over waits for the held slot", async () => {
  const context = await browser.newContext();
  const q = `stream=share&delay=${DELAY}`;
  const tabs = [];
  for (let i = 0; i < 4; i++) tabs.push(await openTab(context, q));
  for (const t of tabs) await until("hits in every tab", async () => (await hitsOf(t)).length >= 20);

  let s = await stats("share");
  assert.equal(s.streams.share.peak_live, 1, "one upstream connection for four tabs");
  assert.equal(s.status_counts["409"] ?? 0, 0, "no 409");
  const roles = await Promise.all(tabs.map(roleOf));
  assert.deepEqual(roles.filter((r) => r === "leader").length, 1, `one leader: ${roles}`);
  const leader = tabs[roles.indexOf("leader")];

  // Every tab receives the hits the leader received, once each, in the same order: a
  // follower's list (read first) is a contiguous run of the leader's (read after).
  const followerHits = await Promise.all(tabs.filter((t) => t !== leader).map(hitsOf));
  const leaderHits = await hitsOf(leader);
  for (const hits of [...followerHits, leaderHits]) {
    assert.equal(new Set(hits).size, hits.length, "no duplicates in a tab");
  }
  for (const hits of followerHits) {
    const at = leaderHits.indexOf(hits[0]);
    assert.ok(at >= 0, "the follower's first hit is one the leader had");
    assert.deepEqual(hits, leaderHits.slice(at, at + hits.length), "the same hits in the same order");
  }

  // The leader tab goes away without a word (closed): one follower takes over, no sooner
  // than the delay after the loss, and the others get hits again.
  const closedAt = Date.now();
  await leader.close();
  const rest = tabs.filter((t) => t !== leader);
  const counts = await Promise.all(rest.map(async (t) => (await hitsOf(t)).length));
  await until("a new leader", async () => (await Promise.all(rest.map(roleOf))).includes("leader"));
  for (const [i, t] of rest.entries()) {
    await until("hits again after the hand-over", async () => (await hitsOf(t)).length > counts[i] + 10);
  }
  s = await stats("share");
  const conns = s.connections.filter((c) => c.stream === "share").sort((a, b) => a.opened_ms - b.opened_ms);
  assert.equal(conns.length, 2, `two connections in all: ${JSON.stringify(conns)}`);
  const gap = conns[1].opened_ms - conns[0].closed_ms;
  assert.ok(gap >= DELAY - 100, `the new leader connected ${gap} ms after the loss (delay ${DELAY})`);
  assert.equal(s.status_counts["409"] ?? 0, 0, "no 409 after the hand-over");
  assert.equal(s.streams.share.peak_live, 1, "never two live connections");
  const waiting = await rest[0].evaluate(() => window.log.statuses.filter((x) => x.state === "waiting"));
  assert.ok(waiting.some((x) => x.retryInMs > 0), "every tab saw the wait");
  console.log("hand-over (emulator connection log, ms since the emulator started):");
  for (const c of conns) console.log(`  connection ${c.id}: opened ${c.opened_ms}, closed ${c.closed_ms ?? "-"} (${c.close_reason ?? "live"})`);
  console.log(`  leader tab closed at +${closedAt - closedAt} ms; new connection ${gap} ms after the old one closed (delay ${DELAY} ms, slot held ${HOLD_SECS * 1000} ms)`);

  // A clean close() of the new leader hands over again; closing every tab closes upstream.
  const roles2 = await Promise.all(rest.map(roleOf));
  const leader2 = rest[roles2.indexOf("leader")];
  await leader2.evaluate(() => window.stream.close());
  const rest2 = rest.filter((t) => t !== leader2);
  await until("a third leader", async () => (await Promise.all(rest2.map(roleOf))).includes("leader"));
  for (const t of rest2) await t.evaluate(() => window.stream.close());
  await until("upstream closed", async () => (await stats("share")).streams.share.live === 0);
  s = await stats("share");
  const all = s.connections.filter((c) => c.stream === "share").sort((a, b) => a.opened_ms - b.opened_ms);
  for (let i = 1; i < all.length; i++) {
    assert.ok(all[i].opened_ms - all[i - 1].closed_ms >= DELAY - 100, `hand-over ${i}: ${JSON.stringify(all.slice(i - 1, i + 1))}`);
  }
  assert.equal(s.status_counts["409"] ?? 0, 0);
  for (const t of tabs) if (!t.isClosed()) assert.deepEqual(t.errors, [], "no page errors");
  await context.close();
});

test("a tab with different options gets its own connection", async () => {
  const context = await browser.newContext();
  const a = await openTab(context, `stream=share2&max=2&delay=${DELAY}`);
  const b = await openTab(context, `stream=share2&max=2&delay=${DELAY}`);
  const c = await openTab(context, `stream=share2&max=2&delay=${DELAY}&apiKey=other`);
  for (const t of [a, b, c]) await until("hits", async () => (await hitsOf(t)).length >= 5);
  const s = await stats("share2");
  assert.equal(s.streams.share2.peak_live, 2, "a and b share one; c has its own");
  assert.deepEqual(await Promise.all([a, b, c].map(roleOf)).then((r) => r.sort()), ["follower", "leader", "leader"]);
  await context.close();
  await until("upstream closed", async () => (await stats("share2")).streams.share2.live === 0);
});

test("what a follower can take through the BroadcastChannel hop", async () => {
  const context = await browser.newContext();
  const n = 100_000;
  // The first tab leads; its bench fetch streams once the follower listens.
  const tabs = [
    await openTab(context, `stream=bench&mode=bench&n=${n}&delay=${DELAY}`),
    await openTab(context, `stream=bench&mode=bench&n=${n}&delay=${DELAY}`),
  ];
  await until("roles", async () => (await Promise.all(tabs.map(roleOf))).includes("leader"));
  const roles = await Promise.all(tabs.map(roleOf));
  const leader = tabs[roles.indexOf("leader")];
  const follower = tabs[roles.indexOf("follower")];
  await leader.evaluate(() => window.go());
  await until("the leader read every record", async () => (await leader.evaluate(() => window.log.count)) === n, 60_000);
  await until("the follower got every record", async () => (await follower.evaluate(() => window.log.count)) === n, 60_000);
  const rate = async (t) => t.evaluate(() => window.log.count / ((window.log.lastHitAt - window.log.firstHitAt) / 1000));
  const [lr, fr] = [await rate(leader), await rate(follower)];
  console.log(`BroadcastChannel hop: leader ${Math.round(lr)} hits/s, follower ${Math.round(fr)} hits/s (${n} records of ~140 B)`);
  assert.ok(fr > 0);
  await context.close();
});
