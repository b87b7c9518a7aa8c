// The packed package in the bundlers and hosts of docs/bundlers.md, each exactly as documented
// there: esbuild (two ways), webpack 5, Rollup, a dedicated module Worker importing the package
// by URL, CommonJS `require` in Node, Deno and Bun. Every one gets exact hits from the
// emulator; the bundles run in headless Chromium, served by the emulator (same origin).
//
// Needs what package.test.mjs needs (pkg/ built, the emulator binary, /usr/bin/chromium) and
// the devDependencies esbuild, webpack, rollup (+ plugins), deno and bun. Run: node --test tests/node/
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import * as esbuild from "esbuild";
import webpack from "webpack";
import { rollup } from "rollup";
import { nodeResolve } from "@rollup/plugin-node-resolve";
import { importMetaAssets } from "@web/rollup-plugin-import-meta-assets";
import { BIG_ID, MAX_ID, cleanup, firstTwoHitsScript, packedApp, record, repo, run, script, startEmulator } from "./support.mjs";

const LINES = [record(BIG_ID, "4948646782672799561", "first"), "", record(MAX_ID, MAX_ID, "max"),
  record(BIG_ID, "4948646782672799561", "duplicate")];
const EXPECTED = [[BIG_ID, "4948646782672799561"], [MAX_ID, MAX_ID]];

/** A page's module: `setup` imports and initialises the package, then a stream collects hits. */
function pageModule(setup, stream) {
  return `${setup}
window.__hits = [];
window.__errors = [];
const stream = new LiveStream({
  url: "/api/1/stream/${stream}",
  token: "any-token",
  onHits(hits) { window.__hits.push(...hits); if (window.__hits.length === 2) { stream.close(); window.__done = true; } },
  onError(e) { window.__errors.push(e); },
});
stream.start();
`;
}

describe("bundlers and hosts", () => {
  let work;
  let app; // a project with the packed package installed
  let site; // served at / by the emulator
  let emulator;
  let browser;
  let streams = 0;

  before(async () => {
    ({ work, app } = packedApp("bundlers"));
    site = join(work, "site");
    mkdirSync(site);
    emulator = await startEmulator(["--www", site, "--mount", `/pkg/=${join(app, "node_modules/livestream-wasm/pkg")}`]);
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
  });

  after(async () => {
    await esbuild.stop();
    await browser?.close();
    await emulator?.stop();
    if (work) cleanup(work);
  });

  /** A fresh stream on the emulator that sends LINES then holds; returns its name. */
  async function newStream(label) {
    const name = `${label}-${++streams}`;
    await script(emulator.url, name, { rate: 0, body: { lines: LINES, chunk_size: 5, then: "hold" } });
    return name;
  }

  /** Writes `files` into the app project under `dir` (created). */
  function source(dir, files) {
    const at = join(app, dir);
    mkdirSync(at, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(at, name), text);
    return at;
  }

  /** Loads `path` from the emulator in Chromium; asserts the page got EXPECTED and nothing failed. */
  async function loadsExactHits(path) {
    const page = await browser.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(String(e)));
    // A failed load is reported by the response handler (which knows the URL; favicon aside).
    page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(m.text()); });
    page.on("response", (r) => { if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) problems.push(`${r.status()} ${r.url()}`); });
    try {
      await page.goto(`${emulator.url}${path}`);
      await page.waitForFunction(() => window.__done === true, null, { timeout: 15_000 })
        .catch(async (e) => {
          const reported = await page.evaluate(() => JSON.stringify(window.__errors)).catch(() => "?");
          throw new Error(`${path}: ${e.message}; problems: ${problems.join("; ")}; errors: ${reported}`);
        });
      assert.deepEqual(await page.evaluate(() => window.__hits.map((h) => [h.hitIdHigh, h.hitIdLow])), EXPECTED, path);
      assert.deepEqual(await page.evaluate(() => window.__errors), [], path);
      assert.deepEqual(problems, [], path);
    } finally {
      await page.close();
    }
  }

  const html = (script) => `<!doctype html><meta charset="utf-8"><title>bundle</title>${script}`;

  test("esbuild, the .wasm imported with --loader:.wasm=file and its URL passed to init()", async () => {
    const stream = await newStream("esbuild-loader");
    const dir = source("esbuild-loader", {
      "main.js": pageModule(`import init, { LiveStream } from "livestream-wasm";
import wasmUrl from "livestream-wasm/livestream_wasm_bg.wasm";
await init({ module_or_path: new URL(wasmUrl, import.meta.url) });`, stream),
    });
    // The page is not in the bundle's folder: the .wasm's URL is relative to the bundle.
    const out = join(site, "esbuild-loader/js");
    await esbuild.build({
      entryPoints: [join(dir, "main.js")], bundle: true, format: "esm", minify: true, outdir: out,
      loader: { ".wasm": "file" }, logLevel: "warning",
    });
    writeFileSync(join(site, "esbuild-loader/index.html"), html(`<script type="module" src="./js/main.js"></script>`));
    const wasm = readdirSync(out).filter((f) => f.endsWith(".wasm"));
    assert.equal(wasm.length, 1, `esbuild emitted ${readdirSync(out).join(", ")}`);
    assert.match(wasm[0], /^livestream_wasm_bg-[A-Z0-9]+\.wasm$/);
    await loadsExactHits("/esbuild-loader/index.html");
  });

  test("esbuild, plain `await init()` with the .wasm copied beside the bundle", async () => {
    const stream = await newStream("esbuild-copy");
    const dir = source("esbuild-copy", {
      "main.js": pageModule(`import init, { LiveStream } from "livestream-wasm";
await init();`, stream),
    });
    const out = join(site, "esbuild-copy");
    await esbuild.build({ entryPoints: [join(dir, "main.js")], bundle: true, format: "esm", outdir: out, logLevel: "warning" });
    copyFileSync(join(app, "node_modules/livestream-wasm/pkg/livestream_wasm_bg.wasm"), join(out, "livestream_wasm_bg.wasm"));
    writeFileSync(join(out, "index.html"), html(`<script type="module" src="./main.js"></script>`));
    await loadsExactHits("/esbuild-copy/index.html");
  });

  test("webpack 5 emits the .wasm as an asset with no configuration", async () => {
    const stream = await newStream("webpack");
    const dir = source("webpack", {
      "main.js": pageModule(`import init, { LiveStream } from "livestream-wasm";
await init();`, stream),
    });
    const out = join(site, "webpack");
    const compiler = webpack({ mode: "production", context: dir, entry: "./main.js", output: { path: out }, performance: { hints: false } });
    const stats = await new Promise((resolve, reject) => {
      compiler.run((err, s) => compiler.close(() => (err ? reject(err) : resolve(s))));
    });
    assert.ok(!stats.hasErrors() && !stats.hasWarnings(), stats.toString({ all: false, errors: true, warnings: true }));
    assert.equal(readdirSync(out).filter((f) => f.endsWith(".wasm")).length, 1, `webpack emitted ${readdirSync(out).join(", ")}`);
    writeFileSync(join(out, "index.html"), html(`<script src="./main.js"></script>`));
    await loadsExactHits("/webpack/index.html");
  });

  test("Rollup with @rollup/plugin-node-resolve and @web/rollup-plugin-import-meta-assets", async () => {
    const stream = await newStream("rollup");
    const dir = source("rollup", {
      "main.js": pageModule(`import init, { LiveStream } from "livestream-wasm";
await init();`, stream),
    });
    const out = join(site, "rollup");
    const warnings = [];
    const bundle = await rollup({
      input: join(dir, "main.js"),
      plugins: [nodeResolve({ browser: true }), importMetaAssets()],
      onwarn: (w) => warnings.push(String(w)),
    });
    await bundle.write({ dir: out, format: "es" });
    await bundle.close();
    assert.deepEqual(warnings, []);
    assert.equal(readdirSync(join(out, "assets")).filter((f) => f.endsWith(".wasm")).length, 1);
    writeFileSync(join(out, "index.html"), html(`<script type="module" src="./main.js"></script>`));
    await loadsExactHits("/rollup/index.html");
  });

  test("a dedicated module Worker imports the package by URL and posts its hits to the page", async () => {
    const stream = await newStream("worker");
    mkdirSync(join(site, "worker"));
    // The worker cannot see the page's import map: it imports the package's file by URL.
    writeFileSync(join(site, "worker/worker.js"), `
import init, { LiveStream } from "/pkg/index.js";
await init();
const stream = new LiveStream({
  url: "/api/1/stream/${stream}",
  token: "any-token",
  onHits(hits) { postMessage({ ids: hits.map((h) => [h.hitIdHigh, h.hitIdLow]) }); },
  onError(e) { postMessage({ error: e }); },
});
stream.start();
addEventListener("message", (e) => { if (e.data === "close") { stream.close(); postMessage({ closed: stream.state }); } });
`);
    writeFileSync(join(site, "worker/index.html"), html(`<script type="module">
window.__hits = [];
window.__errors = [];
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
worker.onerror = (e) => window.__errors.push(e.message ?? "worker error");
worker.onmessage = ({ data }) => {
  if (data.error) window.__errors.push(data.error);
  if (data.closed) window.__done = data.closed === "closed";
  if (!data.ids) return;
  window.__hits.push(...data.ids.map(([hitIdHigh, hitIdLow]) => ({ hitIdHigh, hitIdLow })));
  if (window.__hits.length === 2) worker.postMessage("close");
};
</script>`));
    await loadsExactHits("/worker/index.html");
  });

  test("Node CommonJS: require() works (Node >= 20.19); without require(esm), the documented import() does", async () => {
    const stream = await newStream("require");
    const url = `${emulator.url}/api/1/stream/${stream}`;
    writeFileSync(join(app, "required.cjs"), firstTwoHitsScript(`const { LiveStream } = require("livestream-wasm");`));
    const r = run(process.execPath, ["required.cjs", url], { cwd: app, timeout: 20_000 });
    assert.deepEqual(JSON.parse(r.stdout), EXPECTED);
    assert.equal(r.stderr, "");

    // Node before 20.19 has no require(esm); this flag gives today's Node that behaviour.
    const old = ["--no-experimental-require-module"];
    const refused = run(process.execPath, [...old, "-e", `try { require("livestream-wasm"); } catch (e) { console.log(e.code); }`], { cwd: app });
    assert.equal(refused.stdout.trim(), "ERR_REQUIRE_ESM");
    const stream2 = await newStream("import-from-cjs");
    writeFileSync(join(app, "imported.cjs"), `(async () => {
  const { default: init, LiveStream } = await import("livestream-wasm");
  await init();
${firstTwoHitsScript("").replace(/^/gm, "  ")}})();
`);
    const r2 = run(process.execPath, [...old, "imported.cjs", `${emulator.url}/api/1/stream/${stream2}`], { cwd: app, timeout: 20_000 });
    assert.deepEqual(JSON.parse(r2.stdout), EXPECTED);
    assert.equal(r2.stderr, "");
  });

  const denoBun = {
    deno: (file, url) => [join(repo, "node_modules/.bin/deno"), ["run", "--allow-read", "--allow-net=127.0.0.1", "--no-prompt", file, url]],
    bun: (file, url) => [join(repo, "node_modules/.bin/bun"), [file, url]],
  };
  for (const [host, command] of Object.entries(denoBun)) {
    test(`${host}: the README's import gets exact hits, and the process exits after close()`, async () => {
      const stream = await newStream(host);
      writeFileSync(join(app, `${host}.mjs`), firstTwoHitsScript(`import init, { LiveStream } from "livestream-wasm";
await init();`));
      const [cmd, args] = command(`${host}.mjs`, `${emulator.url}/api/1/stream/${stream}`);
      const r = run(cmd, args, {
        cwd: app, timeout: 30_000,
        env: { ...process.env, DENO_DIR: join(work, "deno-dir"), DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      });
      assert.deepEqual(JSON.parse(r.stdout), EXPECTED);
      assert.equal(r.stderr, "");
    });
  }
});
