// The behaviour scenarios (scenarios.mjs) in headless Chromium, through the package's browser
// entry (pkg/index.js after `await init()`, requests through the page's fetch). The emulator
// serves the page, the package and the stream from one origin:
//   --mount /pkg/=pkg --mount /tests/=tests/web
// Each scenario runs in the page (page.evaluate) and is reported here as a test, with the
// page's error message on failure; console errors of the page are collected and checked.
//
//   node --test tests/web/chromium.test.mjs
//
// Needs pkg/ (bash scripts/build-pkg.sh), the emulator (cargo build --release -p
// livestream-emulator) and Debian's chromium (CHROMIUM_BIN points elsewhere).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { PKG, ROOT, startEmulator } from "./emulator.mjs";
import { scenarios } from "./scenarios.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_BIN)`);

let main;
let tokenEmu;
let browser;
let page;
let consoleErrors = [];

/** A page of the emulator's origin, with its console errors collected into `sink`. */
async function openPage(sink) {
  const p = await browser.newPage();
  p.on("console", (m) => {
    if (m.type() !== "error") return;
    sink.push(`${m.text()} (${m.location()?.url ?? ""})`);
  });
  p.on("pageerror", (e) => sink.push(`uncaught: ${e.message}`));
  const res = await p.goto(`${main.url}/tests/index.html`, { waitUntil: "load" });
  assert.equal(res.status(), 200, "the test page loads");
  return p;
}

before(async () => {
  [main, tokenEmu] = await Promise.all([
    startEmulator(["--mount", `/pkg/=${PKG}`, "--mount", `/tests/=${join(ROOT, "tests/web")}`]),
    startEmulator(["--token", "right"]),
  ]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  await Promise.all([main?.stop(), tokenEmu?.stop()]);
});

test("the browser entry before init() throws an error that names init()", { timeout: 30_000 }, async () => {
  const errors = [];
  const p = await openPage(errors);
  try {
    const r = await p.evaluate(async () => {
      const m = await import("/pkg/index.js");
      const url = `${location.origin}/api/1/stream/before-init`;
      let before = null;
      try {
        new m.LiveStream({ url, token: "t" });
      } catch (e) {
        before = { name: e.name, message: e.message };
      }
      await m.default();
      const ls = new m.LiveStream({ url, token: "t" });
      const state = ls.state;
      ls.close();
      return { before, state };
    });
    assert.ok(r.before, "new LiveStream(...) before init() threw");
    assert.match(r.before.message, /init\(\)/, "the error names init()");
    assert.equal(r.state, "idle", "after init() the same import works");
    assert.deepEqual(errors, [], "console errors");
  } finally {
    await p.close();
  }
});

/** Console errors the browser logs for failed requests (a 401/404/409 scenario), which are expected. */
const networkNoise = (line) => /^Failed to load resource: the server responded with a status of (302|401|404|409)\b/.test(line);

test("the scenarios in Chromium", { timeout: 300_000 }, async (t) => {
  page = await openPage(consoleErrors);
  await page.evaluate(async () => {
    const m = await import("/pkg/index.js");
    await m.default();
    const unhandled = [];
    window.addEventListener("unhandledrejection", (e) => unhandled.push(String(e.reason?.message ?? e.reason)));
    window.__ctx = { LiveStream: m.LiveStream, unhandled };
    window.__scenarios = (await import("/tests/scenarios.mjs")).scenarios;
  });
  for (const s of scenarios) {
    if (s.only && s.only !== "chromium") continue;
    await t.test(s.name, { timeout: 30_000 }, async () => {
      consoleErrors.length = 0;
      const result = await page.evaluate(async ({ name, tokenServer }) => {
        const s = window.__scenarios.find((x) => x.name === name);
        const ctx = { ...window.__ctx, server: location.origin, tokenServer, env: "chromium" };
        ctx.unhandled.length = 0;
        try {
          await s.run(ctx);
          await new Promise((r) => setTimeout(r, 0));
          return { ok: true, unhandled: ctx.unhandled.slice() };
        } catch (e) {
          return { ok: false, message: e?.message ?? String(e), stack: e?.stack ?? "", unhandled: ctx.unhandled.slice() };
        }
      }, { name: s.name, tokenServer: tokenEmu.url });
      const errors = consoleErrors.filter((l) => !networkNoise(l));
      if (!result.ok) {
        assert.fail(`${result.message}\n--- in the page:\n${result.stack}\n--- page console errors:\n${consoleErrors.join("\n") || "(none)"}`);
      }
      assert.deepEqual(result.unhandled, [], "unhandled rejections in the page");
      assert.deepEqual(errors, [], "page console errors");
    });
  }
  await page.close();
});
