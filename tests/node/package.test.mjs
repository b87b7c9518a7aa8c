// The npm package as users get it: `npm pack`, install the tarball into a fresh project,
// then (1) a Node script that does exactly what the README shows, (2) a Vite build of a
// page importing the package, and (3) a plain <script type="module"> page in headless
// Chromium (served by the emulator), each against the emulator with exact hits.
//
// Needs: pkg/ built (scripts/build-pkg.sh), the emulator binary (LIVESTREAM_EMULATOR_BIN
// or target/{release,debug}/livestream-emulator), /usr/bin/chromium. Run: node --test tests/node/
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  BIG_ID, MAX_ID, cleanup, firstTwoHitsScript, installInto, packedApp, record, repo, run, script, startEmulator,
} from "./support.mjs";

const LINES = [record(BIG_ID, "4948646782672799561", "first"), "", record(MAX_ID, MAX_ID, "max"),
  record(BIG_ID, "4948646782672799561", "duplicate")];
const EXPECTED = [[BIG_ID, "4948646782672799561"], [MAX_ID, MAX_ID]];

describe("the packed npm package", () => {
  let work;
  let packed;
  let app;
  let emulator;

  before(async () => {
    ({ work, app, packed } = packedApp("pkg"));
    // The browser page and the Vite output are served by the emulator, same origin as the API.
    mkdirSync(join(work, "site"));
    mkdirSync(join(work, "vite-app/dist"), { recursive: true });
    emulator = await startEmulator([
      "--www", join(work, "site"),
      "--mount", `/pkg/=${join(app, "node_modules/livestream-wasm/pkg")}`,
      "--mount", `/vite/=${join(work, "vite-app/dist")}`,
    ]);
  });

  after(async () => {
    await emulator?.stop();
    if (work) cleanup(work);
  });

  test("the tarball holds the built package only", () => {
    const files = [...packed.files].sort();
    // npm always adds package.json, README and LICENSE files; bin/ holds the command line.
    assert.deepEqual(files.filter((f) => !f.startsWith("pkg/") && !/^(README|LICEN[CS]E)/i.test(f)), ["bin/livestream-wasm.js", "package.json"]);
    for (const f of ["pkg/index.js", "pkg/index.d.ts", "pkg/live-stream.js", "pkg/hit-batch.js", "pkg/tab-share.js", "pkg/node-fetch.js",
      "pkg/livestream_wasm.js", "pkg/livestream_wasm_bg.wasm", "pkg/node.js", "pkg/node.d.ts"]) {
      assert.ok(files.includes(f), `${f} is missing from ${files.join(", ")}`);
    }
    assert.ok(!files.some((f) => f.endsWith(".rs")), "sources are packed");
  });

  test("the types name every error code of the core, and no `any` in the public API", () => {
    const dts = readFileSync(join(app, "node_modules/livestream-wasm/pkg/index.d.ts"), "utf8");
    const policy = readFileSync(join(repo, "src/core/policy.rs"), "utf8");
    const asStr = policy.slice(policy.indexOf("pub fn as_str"), policy.indexOf("impl fmt::Display for ErrorCode"));
    const codes = [...asStr.matchAll(/=> "([a-z0-9_]+)"/g)].map((m) => m[1]);
    assert.ok(codes.length >= 20, `found only ${codes.length} codes in policy.rs`);
    const union = dts.slice(dts.indexOf("export type ErrorCode"), dts.indexOf("export interface ErrorEvent"));
    for (const code of codes) {
      assert.ok(union.includes(`"${code}"`), `ErrorCode lacks "${code}"`);
    }
    const publicPart = dts;
    assert.ok(!/\bany\b/.test(publicPart.replace(/\/\*\*[\s\S]*?\*\//g, "")), "`any` in the public declarations");
    for (const t of ["constructor(options: LiveStreamOptions)", "readonly stats: Stats", "readonly state: \"idle\" | \"running\" | \"closed\" | \"failed\""]) {
      assert.ok(dts.includes(t), `the .d.ts lacks ${t}`);
    }
  });

  test("Node: the README's import gets exact hits from the emulator, and the process exits after close()", async () => {
    await script(emulator.url, "node-readme", { rate: 0, body: { lines: LINES, chunk_size: 3, then: "hold" } });
    // The README's import, then a stream that prints its first two hits' ids.
    writeFileSync(join(app, "main.mjs"), firstTwoHitsScript(`import init, { LiveStream } from "livestream-wasm";
await init();`));
    const r = run(process.execPath, ["main.mjs", `${emulator.url}/api/1/stream/node-readme`], { cwd: app, timeout: 20_000 });
    assert.deepEqual(JSON.parse(r.stdout.trim()), EXPECTED);
    assert.equal(r.stderr, "");
  });

  test("Vite builds a page that imports the package, and emits the .wasm", () => {
    const dir = join(work, "vite-app");
    installInto(dir, packed.tarball);
    writeFileSync(join(dir, "index.html"), `<!doctype html><title>vite</title><script type="module" src="./main.js"></script>`);
    writeFileSync(join(dir, "main.js"), `
import init, { LiveStream } from "livestream-wasm";
await init();
window.__hits = [];
const stream = new LiveStream({
  url: "/api/1/stream/vite-page",
  token: "any-token",
  onHits(hits) { window.__hits.push(...hits); if (window.__hits.length === 2) { stream.close(); window.__done = true; } },
});
stream.start();
`);
    run(process.execPath, [join(repo, "node_modules/vite/bin/vite.js"), "build", "--base", "/vite/", "--logLevel", "warn"], { cwd: dir });
    const assets = readdirSync(join(dir, "dist/assets"));
    const wasm = assets.filter((f) => f.endsWith(".wasm"));
    assert.equal(wasm.length, 1, `assets: ${assets.join(", ")}`);
    const js = assets.filter((f) => f.endsWith(".js")).map((f) => readFileSync(join(dir, "dist/assets", f), "utf8")).join("\n");
    assert.ok(js.includes(wasm[0]), "the bundle does not reference the emitted .wasm");
  });

  test("browser: a plain <script type=module> page and the Vite build both get exact hits (headless Chromium)", async () => {
    writeFileSync(join(work, "site/index.html"), `<!doctype html><title>plain</title>
<script type="importmap">{ "imports": { "livestream-wasm": "/pkg/index.js" } }</script>
<script type="module">
import init, { LiveStream } from "livestream-wasm";
await init();
window.__hits = [];
const stream = new LiveStream({
  url: "/api/1/stream/browser-page",
  token: "any-token",
  onHits(hits) { window.__hits.push(...hits); if (window.__hits.length === 2) { stream.close(); window.__done = true; } },
  onError(e) { window.__errors = [...(window.__errors || []), e]; },
});
stream.start();
</script>`);
    await script(emulator.url, "browser-page", { rate: 0, body: { lines: LINES, chunk_size: 5, then: "hold" } });
    await script(emulator.url, "vite-page", { rate: 0, body: { lines: LINES, chunk_size: 5, then: "hold" } });
    const browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    try {
      for (const path of ["/index.html", "/vite/index.html"]) {
        const page = await browser.newPage();
        const problems = [];
        page.on("pageerror", (e) => problems.push(String(e)));
        page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(m.text()); });
        page.on("response", (r) => { if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) problems.push(`${r.status()} ${r.url()}`); });
        await page.goto(`${emulator.url}${path}`);
        await page.waitForFunction(() => window.__done === true, null, { timeout: 15_000 })
          .catch((e) => { throw new Error(`${path}: ${e.message}; problems: ${problems.join("; ")}`); });
        const ids = await page.evaluate(() => window.__hits.map((h) => [h.hitIdHigh, h.hitIdLow]));
        assert.deepEqual(ids, EXPECTED, path);
        assert.deepEqual(problems, [], path);
        await page.close();
      }
    } finally {
      await browser.close();
    }
  });
});
