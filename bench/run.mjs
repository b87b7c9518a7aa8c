// `npm run bench`: livestream-wasm against the plain-JS baseline, in Node and in headless
// Chromium, fed from memory and from a local server; a soak; sizes; goals met or missed.
//
//   node bench/run.mjs [--records N] [--runs R] [--seed S] [--quick] [--only node|chromium]
//                      [--no-soak] [--soak-records N] [--profile] [--no-profile] [--pkg DIR]
//                      [--bench-pkg DIR] [--no-core]
//
// Prints figures only (no timed assertions). The contenders of one environment and feed run
// interleaved, round by round (a warm-up round first); "× base" is the median of the
// per-round ratios, so drift of a shared machine hits baseline and contender alike.
// Where a speed goal is missed, the slowest LiveStream contender is profiled in Node
// (--cpu-prof) and the top functions by self time are printed (bench/profile-summary.mjs).
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { CORE_ONLY, median } from "./contenders.mjs";
import { summarize } from "./profile-summary.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");

// ---- options ---------------------------------------------------------------------------
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const quick = flag("quick");
const hits = Number(opt("records", quick ? 20_000 : 100_000));
const runs = Number(opt("runs", quick ? 3 : 5));
const seed = Number(opt("seed", 1));
const only = opt("only", "all");
const soakRecords = Number(opt("soak-records", quick ? 100_000 : 1_000_000));
const doSoak = !flag("no-soak");
const pkgDir = path.resolve(opt("pkg", path.join(root, "pkg")));
const outDir = path.join(here, "out");
fs.mkdirSync(outDir, { recursive: true });

const CONTENDER_NAMES = ["baseline", "split", "onHits", "onBatch"];
/**
 * (r) runs in a pass of its own, interleaved with the baseline only: a body read as fast as
 * possible changed how the next contenders of the same round read theirs (Chromium from a
 * server: onBatch and c2 ~8 % lower beside it), so the main rounds stay as they were.
 */
const READ_PASS = ["baseline", "read"];
const LABEL = {
  baseline: "(a) baseline: TextDecoder+split+JSON.parse",
  split: "(a0) baseline without JSON.parse (counted)",
  read: "(r) reading the body alone (nothing decoded)",
  onHits: "(b) LiveStream onHits (objects)",
  onBatch: "(b2) LiveStream onBatch (ids+time)",
  framing: "(c) framing alone (wasm, counted)",
  scan: "(c1) framing + record scan (wasm)",
  core: "(c2) core alone: frame+scan+dedup+batch",
};
const SOURCES = ["mem", "net"];
/**
 * The data profiles of the sweep (Node, from memory): a ratio that holds on one profile only
 * is not a result. Record size, share of non-Latin-1 text and chunk size vary one at a time
 * around the typical profile (1.2 KB records, 10 % of visitors with non-Latin-1 text, 64 KiB
 * chunks); the worst case is reported beside the typical one.
 */
const SWEEP = [
  { name: "typical (1.2 KB, 10 % intl, 64 KiB)", hits: 40_000, profile: {} },
  { name: "small records (~0.3 KB)", hits: 100_000, profile: { small: true } },
  { name: "large records (~5 KB)", hits: 10_000, profile: { pad: 4000 } },
  { name: "no non-ASCII text", hits: 40_000, profile: { intl: 0 } },
  { name: "60 % intl visitors", hits: 40_000, profile: { intl: 0.6 } },
  { name: "4 KiB chunks", hits: 40_000, profile: { chunk: 4096 } },
  { name: "1 MiB chunks", hits: 40_000, profile: { chunk: 1 << 20 } },
];

for (const f of ["node.js", "index.js", "livestream_wasm.js", "livestream_wasm_bg.wasm"]) {
  if (!fs.existsSync(path.join(pkgDir, f))) {
    console.error(`bench: ${path.join(pkgDir, f)} is missing: build the package first (npm run build)`);
    process.exit(1);
  }
}

const log = (...a) => process.stderr.write(a.join(" ") + "\n");

// The core-only contenders (c, c2) need the `bench` build of the package (cargo feature
// `bench`): by default bench/out/pkg-bench, rebuilt when missing or older than the package.
const defaultBenchPkg = path.join(outDir, "pkg-bench");
const benchPkgDir = path.resolve(opt("bench-pkg", defaultBenchPkg));
let coreOnly = !flag("no-core");
if (coreOnly) {
  const wasmOf = (dir) => path.join(dir, "livestream_wasm_bg.wasm");
  const stale = !fs.existsSync(wasmOf(benchPkgDir)) ||
    fs.statSync(wasmOf(benchPkgDir)).mtimeMs < fs.statSync(wasmOf(pkgDir)).mtimeMs;
  if (stale && benchPkgDir === defaultBenchPkg) {
    log(`bench: building the bench package into ${path.relative(root, benchPkgDir)} (BENCH_FEATURES=bench)…`);
    const b = spawnSync("bash", [path.join(root, "scripts", "build-pkg.sh")], {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, BENCH_FEATURES: "bench", PKG_OUT_DIR: benchPkgDir },
    });
    if (b.status !== 0) coreOnly = false;
  } else if (!fs.existsSync(wasmOf(benchPkgDir))) {
    coreOnly = false;
  }
  if (!coreOnly) log("bench: no bench package: the core-only contenders (c, c2) are skipped");
  else CONTENDER_NAMES.push("framing", "scan", "core");
}
// The page loads the bench package through the server's /bench/ route.
const benchPkgUrl = "/" + path.relative(root, benchPkgDir).split(path.sep).join("/");

// ---- helpers ---------------------------------------------------------------------------
function runNode(args, extraNodeArgs = []) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ["--expose-gc", ...extraNodeArgs, path.join(here, "node-run.mjs"), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      cwd: outDir,
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("close", (code) => {
      if (code !== 0) reject(new Error(`node-run ${args.join(" ")} exited ${code}:\n${err}`));
      else {
        const lines = out.trim().split("\n").map((l) => JSON.parse(l));
        resolve(lines.length === 1 ? lines[0] : lines);
      }
    });
  });
}

function startServer() {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(here, "server.mjs"), "--hits", String(hits), "--seed", String(seed), "--pkg", pkgDir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let buf = "";
    p.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/listening (\d+)/);
      if (m) resolve({ proc: p, base: `http://127.0.0.1:${m[1]}` });
    });
    p.on("exit", (code) => reject(new Error(`bench server exited ${code}`)));
  });
}

const gz = (buf) => zlib.gzipSync(buf, { level: 9 }).length;
const mb = (b) => (b / 1e6).toFixed(1);
const mib = (b) => (b / 1048576).toFixed(1);
const kb = (b) => (b / 1000).toFixed(1);

/** Summarises the runs of one contender in one environment and source. */
function summarise(env, contender, source, results) {
  const ms = median(results.map((r) => r.ms));
  const r0 = results[0];
  const worst = (k) => Math.max(...results.map((r) => r[k] ?? 0));
  return {
    env, contender, source, ms,
    runs: results.length,
    msList: results.map((r) => r.ms),
    hits: r0.hits,
    hitsPerS: r0.hits / (ms / 1000),
    mbPerS: r0.bytes / 1e6 / (ms / 1000),
    wrong: worst("wrong"), collisions: worst("collisions"), duplicates: worst("duplicates"),
    missing: worst("missing"), errors: worst("errors"), firstError: results.find((r) => r.firstError)?.firstError,
    peakRss: median(results.map((r) => r.peakRss ?? 0)),
    peakHeap: median(results.map((r) => r.peakHeap ?? 0)),
    wasmBytes: worst("wasmBytes"),
    chunkKiB: r0.chunks ? r0.bytes / r0.chunks / 1024 : null,
    spread: `${(Math.min(...results.map((r) => r.ms)) / ms * 100).toFixed(0)}–${(Math.max(...results.map((r) => r.ms)) / ms * 100).toFixed(0)}%`,
  };
}

// ---- Node ----------------------------------------------------------------------------------
async function benchNode(server) {
  const rows = [];
  for (const source of SOURCES) {
    log(`bench: node ${source}: ${CONTENDER_NAMES.join(", ")} interleaved (${runs} rounds + warm-up, ${hits} records)…`);
    const outs = await runNode(["--contender", CONTENDER_NAMES.join(","), "--source", source, "--hits", String(hits),
      "--seed", String(seed), "--runs", String(runs), "--server", server.base, "--pkg", pkgDir,
      "--bench-pkg", benchPkgDir]);
    for (const out of [outs].flat()) rows.push(summarise("node", out.contender, source, out.results));
    log(`bench: node ${source}: ${READ_PASS.join(", ")} interleaved, a pass of their own…`);
    const pass = [await runNode(["--contender", READ_PASS.join(","), "--source", source, "--hits", String(hits),
      "--seed", String(seed), "--runs", String(runs), "--server", server.base, "--pkg", pkgDir])].flat();
    rows.push(readRow("node", source, pass));
  }
  return rows;
}

/**
 * The (r) row from its own pass (`outs`: the pass's baseline and read results), with that
 * pass's baseline runs kept for the per-round ratio (see ratioTo).
 */
function readRow(env, source, outs) {
  const byName = Object.fromEntries(outs.map((o) => [o.contender, o.results]));
  const row = summarise(env, "read", source, byName.read);
  row.pairedBaseMs = byName.baseline.map((r) => r.ms);
  return row;
}

// ---- Chromium ------------------------------------------------------------------------------
async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

async function openPage(browser, server) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${server.base}/`);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 }).catch((e) => {
    throw new Error(`bench page did not load: ${pageErrors.join("; ") || e.message}`);
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  return { context, page, cdp };
}

async function heapUsed(cdp) {
  const { metrics } = await cdp.send("Performance.getMetrics");
  return metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? 0;
}

async function benchChromium(browser, server) {
  const rows = [];
  let fingerprint;
  const names = CONTENDER_NAMES.filter((c) => !(CORE_ONLY.has(c) && !benchPkgUrl.startsWith("/bench/")));
  for (const source of SOURCES) {
    log(`bench: chromium ${source}: ${names.join(", ")} interleaved (${runs} rounds + warm-up, ${hits} records)…`);
    const { context, page, cdp } = await openPage(browser, server);
    const prep = await page.evaluate(([h, s]) => window.bench.prepare(h, s), [hits, seed]);
    fingerprint = prep.fingerprint;
    // Rounds of `list` interleaved, a warm-up round first; each run after a forced GC, with
    // the page's heap polled for its peak.
    const rounds = async (list) => {
      const results = Object.fromEntries(list.map((c) => [c, []]));
      for (let r = 0; r <= runs; r++) {
        for (const contender of list) {
          await cdp.send("HeapProfiler.collectGarbage").catch(() => {});
          let peak = await heapUsed(cdp);
          let running = true;
          const poller = (async () => {
            while (running) {
              const v = await heapUsed(cdp).catch(() => 0);
              if (v > peak) peak = v;
              await new Promise((res) => setTimeout(res, 20));
            }
          })();
          const res = await page.evaluate(([c, s, u]) => window.bench.run(c, s, u), [contender, source, benchPkgUrl]);
          running = false;
          await poller;
          if (r === 0) continue; // warm-up round
          results[contender].push({ ...res, peakHeap: peak });
        }
      }
      return results;
    };
    const results = await rounds(names);
    log(`bench: chromium ${source}: ${READ_PASS.join(", ")} interleaved, a pass of their own…`);
    const pass = await rounds(READ_PASS);
    await context.close();
    for (const c of names) rows.push(summarise("chromium", c, source, results[c]));
    rows.push(readRow("chromium", source, READ_PASS.map((c) => ({ contender: c, results: pass[c] }))));
  }
  return { rows, fingerprint };
}

/**
 * Speed of `r` relative to the baseline `b`: the median of the per-round ratios when both ran
 * interleaved (same number of rounds), so drift of the machine cancels out; else the ratio of
 * the medians. A row measured in a pass of its own (`pairedBaseMs`, see READ_PASS) is paired
 * with that pass's baseline runs instead.
 */
function ratioTo(b, r) {
  if (r.pairedBaseMs) {
    // A row from a pass of its own: against the baseline runs of that pass.
    return median(r.pairedBaseMs.map((ms, i) => ms / r.msList[i]));
  }
  if (b.msList?.length && b.msList.length === r.msList?.length) {
    return median(b.msList.map((ms, i) => ms / r.msList[i]));
  }
  return b.ms / r.ms;
}

async function soakChromium(browser, server, contender) {
  log(`bench: chromium soak ${contender}, ${soakRecords} records through one connection…`);
  const { context, page, cdp } = await openPage(browser, server);
  await page.evaluate(() => window.bench.prepare(0, 1));
  const points = [];
  const mark = async (label) => {
    await cdp.send("HeapProfiler.collectGarbage");
    const delivered = await page.evaluate(() => window.soakState?.delivered ?? 0);
    points.push({ label, hits: delivered, heapUsed: await heapUsed(cdp), wasmBytes: await page.evaluate(() => window.bench.wasmBytes()) });
  };
  await mark("start");
  const done = page.evaluate(([n, c]) => window.bench.soak(n, c), [soakRecords, contender]);
  let finished = false;
  done.then(() => (finished = true), () => (finished = true));
  for (const frac of [0.05, 0.25, 0.5, 0.75]) {
    while (!finished) {
      const d = await page.evaluate(() => window.soakState?.delivered ?? 0);
      if (d >= frac * soakRecords) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (finished) break;
    await mark(`${Math.round(frac * 100)}%`);
  }
  const state = await done;
  await mark("end");
  await context.close();
  return { env: "chromium", contender, total: soakRecords, delivered: state.delivered, ms: state.ms, points };
}

// ---- sizes -----------------------------------------------------------------------------------
function sizes() {
  const wasm = fs.readFileSync(path.join(pkgDir, "livestream_wasm_bg.wasm"));
  // What a page loads: the wasm-bindgen glue, the entry and the JavaScript host.
  const glueFiles = ["livestream_wasm.js", "index.js", "live-stream.js", "hit-batch.js", "tab-share.js"]
    .map((f) => path.join(pkgDir, f));
  const glue = Buffer.concat(glueFiles.map((f) => fs.readFileSync(f)));
  const nodeEntry = Buffer.concat(["node.js", "node-fetch.js"].map((f) => fs.readFileSync(path.join(pkgDir, f))));
  return {
    wasmRaw: wasm.length, wasmGz: gz(wasm),
    glueRaw: glue.length, glueGz: gz(glue), glueFiles: glueFiles.map((f) => path.relative(pkgDir, f)),
    nodeRaw: nodeEntry.length,
  };
}

// ---- the report ------------------------------------------------------------------------------
function table(headers, rows, align) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (align?.[i] === "l" ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join("  ");
  return [line(headers), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line)].join("\n");
}

function speedTable(rows) {
  const base = (env, source) => rows.find((r) => r.env === env && r.source === source && r.contender === "baseline");
  const out = rows.map((r) => {
    const b = base(r.env, r.source);
    const ratio = b ? ratioTo(b, r) : NaN;
    const mem = r.env === "node"
      ? `rss ${mib(r.peakRss)} / heap ${mib(r.peakHeap)}`
      : `heap ${mib(r.peakHeap)}`;
    return [
      r.env, r.source, LABEL[r.contender],
      Math.round(r.hitsPerS).toLocaleString("en-US"), r.mbPerS.toFixed(0), `${ratio.toFixed(2)}×`,
      `${r.wrong}`, `${r.collisions}`, `${r.duplicates}`, r.missing ? `${r.missing}` : "0", r.errors,
      mem, mib(r.wasmBytes), r.spread, r.chunkKiB ? r.chunkKiB.toFixed(1) : "",
    ];
  });
  return table(["env", "feed", "contender", "hits/s", "MB/s", "× base", "ids wrong", "collide", "dups", "missing", "errors",
    "peak MiB (median)", "wasm MiB", "min–max", "avg chunk KiB"], out, ["l", "l", "l"]);
}

function crossingsText() {
  if (!crossings) return "";
  const lines = [`boundary crossings (JavaScript -> wasm calls) per body chunk, node/mem, ${(crossings.chunkBytes / 1024).toFixed(0)} KiB chunks ` +
    `(before the JS host: 21 per chunk, Rust driving the reader through bindings):`];
  for (const [c, v] of Object.entries(crossings.crossings)) {
    const per = (v.total / v.chunks).toFixed(2);
    const detail = Object.entries(v.calls).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(", ");
    lines.push(`  ${LABEL[c] ?? c}: ${per} per chunk (${v.total} calls over ${v.chunks} chunks: ${detail})`);
  }
  return lines.join("\n") + "\n";
}

function sweepText() {
  if (sweep.length === 0) return "";
  const out = sweep.map((p) => {
    const b = p.rows.baseline;
    const h = p.rows.onHits;
    const bb = p.rows.onBatch;
    return [p.name, Math.round(b.hitsPerS).toLocaleString("en-US"), `${ratioTo(b, h).toFixed(2)}×`, `${ratioTo(b, bb).toFixed(2)}×`,
      `${h.wrong + bb.wrong}`, `${b.wrong}`];
  });
  const worst = (k) => Math.min(...sweep.map((p) => ratioTo(p.rows.baseline, p.rows[k])));
  const worstName = (k) => sweep.reduce((a, p) => (ratioTo(p.rows.baseline, p.rows[k]) < ratioTo(a.rows.baseline, a.rows[k]) ? p : a)).name;
  return "profile sweep (node, from memory; one thing varied at a time):\n" +
    table(["profile", "baseline hits/s", "onHits × base", "onBatch × base", "ids wrong (ours)", "ids wrong (baseline)"], out, ["l"]) +
    `\nworst case: onHits ${worst("onHits").toFixed(2)}× (${worstName("onHits")}), onBatch ${worst("onBatch").toFixed(2)}× (${worstName("onBatch")}); ` +
    `typical: onHits ${ratioTo(sweep[0].rows.baseline, sweep[0].rows.onHits).toFixed(2)}×, onBatch ${ratioTo(sweep[0].rows.baseline, sweep[0].rows.onBatch).toFixed(2)}×\n`;
}

function verdict(ok, text) {
  return `${ok ? "MET   " : "MISSED"} ${text}`;
}

function goals(rows, soaks, sz) {
  const lines = [];
  const find = (env, source, c) => rows.find((r) => r.env === env && r.source === source && r.contender === c);
  let speedMissed = false;
  for (const env of ["node", "chromium"]) {
    for (const source of SOURCES) {
      const b = find(env, source, "baseline");
      const h = find(env, source, "onHits");
      const bb = find(env, source, "onBatch");
      if (!b) continue;
      // For reference, measured in the same rounds: reading the body and framing it (c), and
      // the whole core with nothing handed to JavaScript (c2). A LiveStream contender does
      // what c2 does and more; c2's harness copies each chunk in through wasm-bindgen (a
      // malloc and a free per chunk) where the host reuses one buffer, so within the noise
      // c2 is a bound, not to the percent.
      const c = find(env, source, "framing");
      const c2 = find(env, source, "core");
      const r = find(env, source, "read");
      const bound = (c && c2
        ? `; in the same rounds: core alone, nothing handed to JS (c2) ${ratioTo(b, c2).toFixed(2)}×, reading + framing alone (c) ${ratioTo(b, c).toFixed(2)}×`
        : "") + (r ? `; reading the body alone (r, in rounds of its own with the baseline) ${ratioTo(b, r).toFixed(2)}×, which no contender can beat` : "");
      // onHits hands out every hit parsed by JSON.parse, as the baseline does: the baseline's
      // time minus its time without JSON.parse (a0) is a floor for it.
      const a0 = find(env, source, "split");
      const parseShare = a0 ? 1 - a0.ms / b.ms : null;
      const hitsBound = parseShare
        ? `; JSON.parse is ${(100 * parseShare).toFixed(0)} % of the baseline's time, so a contender that parses every hit (and does nothing else) stays below ~${(1 / parseShare).toFixed(2)}×` + bound
        : bound;
      if (h) {
        const ratio = ratioTo(b, h);
        const exact = h.wrong === 0 && h.collisions === 0 && h.duplicates === 0 && h.missing === 0;
        const ok = ratio >= 1.2 && exact;
        if (ratio < 1.2) speedMissed = true;
        lines.push(verdict(ok, `onHits ≥ 1.2× baseline, ${env}/${source}: ${ratio.toFixed(2)}× ` +
          `(margin ${((ratio / 1.2 - 1) * 100).toFixed(0)} %); ` +
          `ids wrong ${h.wrong}/${h.hits}${exact ? " (exact)" : ""}; baseline gets ${b.wrong}/${b.hits} ids wrong ` +
          `(${(100 * b.wrong / b.hits).toFixed(1)} %), ${b.collisions} distinct ids collide` + (ok ? "" : hitsBound)));
      }
      if (bb) {
        const ratio = ratioTo(b, bb);
        const ok = ratio >= 3.0 && bb.wrong === 0;
        if (ratio < 3.0) speedMissed = true;
        lines.push(verdict(ok, `onBatch (ids+time only) ≥ 3.0× baseline, ${env}/${source}: ${ratio.toFixed(2)}× ` +
          `(margin ${((ratio / 3.0 - 1) * 100).toFixed(0)} %); ids wrong ${bb.wrong}` + (ok ? "" : bound)));
      }
    }
  }
  for (const s of soaks) {
    // The reference is the 25 % point: by then the dedup window (100 000 ids by default) is
    // full and the buffers have met the largest chunk; after it nothing may grow.
    const start = s.points.find((p) => p.label === "25%") ?? s.points[0];
    const end = s.points.find((p) => p.label === "end");
    const heapGrowth = end.heapUsed - start.heapUsed;
    const wasmGrowth = end.wasmBytes - start.wasmBytes;
    const allowed = Math.max(2 * 1048576, 0.1 * start.heapUsed);
    const ok = heapGrowth <= allowed && wasmGrowth === 0 && s.delivered === s.total;
    lines.push(verdict(ok, `memory flat over the soak, ${s.env} ${s.contender}, ${start.label} → end: heap after GC ${mib(start.heapUsed)} → ${mib(end.heapUsed)} MiB ` +
      `(${heapGrowth >= 0 ? "+" : ""}${mib(heapGrowth)} MiB, allowed +${mib(allowed)}), wasm ${mib(start.wasmBytes)} → ${mib(end.wasmBytes)} MiB, ` +
      `${s.delivered.toLocaleString("en-US")}/${s.total.toLocaleString("en-US")} hits`));
  }
  if (sz) {
    const limit = 100_000;
    lines.push(verdict(sz.wasmGz <= limit, `.wasm ≤ 100 KB gzipped: ${kb(sz.wasmGz)} KB (margin ${kb(limit - sz.wasmGz)} KB)`));
  }
  return { lines, speedMissed };
}

function soakTable(soaks) {
  const rows = [];
  for (const s of soaks) {
    for (const p of s.points) {
      rows.push([s.env, s.contender, p.label, p.hits.toLocaleString("en-US"), mib(p.heapUsed), p.rss ? mib(p.rss) : "–", mib(p.wasmBytes)]);
    }
    rows.push([s.env, s.contender, "rate", `${Math.round(s.delivered / (s.ms / 1000)).toLocaleString("en-US")} hits/s`, "", "", `${(s.ms / 1000).toFixed(0)} s`]);
  }
  return table(["env", "contender", "point", "hits", "heap MiB (after GC)", "rss MiB", "wasm MiB"], rows, ["l", "l", "l"]);
}

// ---- main ----------------------------------------------------------------------------------
const t0 = Date.now();
const server = await startServer();
const rows = [];
const soaks = [];
const sweep = [];
let crossings = null;
let chaosSoak = "";
let fingerprint;
let browser;
const problems = [];
const save = () =>
  fs.writeFileSync(path.join(outDir, "last-results.json"), JSON.stringify({ rows, soaks, problems }, null, 1));
// Each step on its own: a failure is reported and the rest still runs and prints.
async function step(name, f) {
  try {
    await f();
  } catch (e) {
    problems.push(`${name}: ${e.stack ?? e}`);
    log(`bench: ${name} failed: ${e.message ?? e}`);
  }
  save();
}
try {
  if (only === "all" || only === "node") await step("node", async () => rows.push(...(await benchNode(server))));
  if (only === "all" || only === "chromium") {
    await step("chromium", async () => {
      browser = await launchChromium();
      const c = await benchChromium(browser, server);
      rows.push(...c.rows);
      fingerprint = c.fingerprint;
    });
  }
  if (only === "all" || only === "node") {
    await step("crossings", async () => {
      log("bench: counting JS -> wasm calls per chunk (node, mem, 64 KiB chunks)…");
      crossings = await runNode(["--crossings", "1", "--contender", "onHits,onBatch", "--hits", String(Math.min(hits, 20_000)),
        "--seed", String(seed), "--pkg", pkgDir]);
    });
    if (!flag("no-sweep")) {
      await step("profile sweep", async () => {
        for (const p of SWEEP) {
          log(`bench: profile sweep (node, mem): ${p.name}…`);
          const outs = await runNode(["--contender", "baseline,onHits,onBatch", "--source", "mem", "--hits", String(p.hits),
            "--seed", String(seed), "--runs", String(quick ? 2 : 3), "--pkg", pkgDir, "--profile", JSON.stringify(p.profile)]);
          const byC = Object.fromEntries([outs].flat().map((o) => [o.contender, summarise("node", o.contender, "mem", o.results)]));
          sweep.push({ name: p.name, rows: byC });
        }
      });
    }
  }
  if (doSoak && !flag("no-chaos") && (only === "all" || only === "node")) {
    await step("chaos soak", async () => {
      const secs = Number(opt("chaos-secs", quick ? 60 : 300));
      log(`bench: chaos soak, ${secs} s against the emulator's --chaos…`);
      chaosSoak = await new Promise((resolve, reject) => {
        const p = spawn(process.execPath, ["--test", path.join(root, "tests/node/chaos-soak.test.mjs")], {
          env: { ...process.env, LIVESTREAM_SOAK_SECS: String(secs) },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        p.stdout.on("data", (d) => (out += d));
        p.stderr.on("data", (d) => (out += d));
        p.on("close", (code) => {
          const line = out.split("\n").find((l) => l.includes("chaos soak") && l.includes("emulator wrote"));
          if (code === 0 && line) resolve(line.replace(/^#\s*/, ""));
          else reject(new Error(`the chaos soak failed (${code}):\n${out.slice(-3000)}`));
        });
      });
    });
  }
  if (doSoak) {
    if (only === "all" || only === "node") {
      await step("node soak", async () => {
        log(`bench: node soak onHits, ${soakRecords} records through one connection…`);
        soaks.push(await runNode(["--soak", String(soakRecords), "--contender", "onHits", "--seed", String(seed), "--pkg", pkgDir]));
      });
    }
    if (browser) await step("chromium soak", async () => soaks.push(await soakChromium(browser, server, "onHits")));
  }
} finally {
  await browser?.close();
  server.proc.kill("SIGTERM");
}
const sz = sizes();
const { lines: goalLines, speedMissed } = goals(rows, soaks, sz);

let profileText = "";
let profPkg;
if ((speedMissed || flag("profile")) && !flag("no-profile") && (only === "all" || only === "node")) await step("profile", async () => {
  // The slowest LiveStream contender in Node, from memory.
  const lsRows = rows.filter((r) => r.env === "node" && r.source === "mem" && (r.contender === "onHits" || r.contender === "onBatch"));
  const slowest = lsRows.sort((a, b) => a.hitsPerS - b.hitsPerS)[0];
  if (slowest) {
    log(`bench: profiling node mem ${slowest.contender} with --cpu-prof…`);
    const profDir = path.join(outDir, "profiles");
    fs.rmSync(profDir, { recursive: true, force: true });
    // bench/named-pkg.sh builds a copy of the package whose wasm keeps its function names.
    const named = path.join(outDir, "pkg-names");
    const namedWasm = path.join(named, "livestream_wasm_bg.wasm");
    const fresh = fs.existsSync(namedWasm) &&
      fs.statSync(namedWasm).mtimeMs >= fs.statSync(path.join(pkgDir, "livestream_wasm_bg.wasm")).mtimeMs;
    profPkg = fresh ? named : pkgDir;
    await runNode(["--contender", slowest.contender, "--source", "mem", "--hits", String(hits), "--seed", String(seed),
      "--runs", "3", "--pkg", profPkg], ["--cpu-prof", "--cpu-prof-dir", profDir]);
    const file = fs.readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"));
    profileText = `CPU profile of node/mem ${LABEL[slowest.contender]} (${path.relative(root, path.join(profDir, file))}; ` +
      `warm-up + 3 runs, data generation and checks included; package ${path.relative(root, profPkg)}` +
      `${profPkg === pkgDir ? ", wasm names stripped: run bench/named-pkg.sh for names" : ", wasm names kept, not wasm-opt'd"}), top 15 by self time:\n` +
      summarize(JSON.parse(fs.readFileSync(path.join(profDir, file), "utf8")), 15);
  }
});

const header = [
  `livestream-wasm bench — ${new Date().toISOString()} — node ${process.version}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}`,
  `data: ${hits.toLocaleString("en-US")} hits (seed ${seed}) + ~0.5 % empty records, CRLF, ~1.2 KB/record; ` +
    `contenders interleaved round by round in one process / page, medians of ${runs} rounds after a warm-up round, "× base" = median of the per-round ratios; feed "mem" = ReadableStream over memory in 64 KiB chunks, ` +
    `"net" = real fetch from a local server (child process, chunked, 64 KiB writes; in Node the baseline uses the global fetch, LiveStream, (r) and (c)/(c1)/(c2) the package's node:http one)` + (fingerprint ? `; data ${fingerprint}` : ""),
  `ids wrong = hits whose hitIdHigh/hitIdLow string differs from the generator's; collide = distinct true ids delivered as ` +
    `the same id as another; ` +
    (coreOnly
      ? `(c)/(c1)/(c2): the \`bench\` build (${path.relative(root, benchPkgDir)}) fed the same body, nothing handed to JS (counts only)`
      : "(c) framing alone: skipped (no bench package)"),
];
const report = [
  ...header, "",
  speedTable(rows), "",
  soaks.length ? soakTable(soaks) + "\n" : "",
  crossingsText(),
  sweepText(),
  chaosSoak ? chaosSoak + "\n" : "",
  `sizes: .wasm ${sz.wasmRaw.toLocaleString("en-US")} B raw, ${sz.wasmGz.toLocaleString("en-US")} B gzipped; ` +
    `JS glue (${sz.glueFiles.join(" + ")}) ${sz.glueRaw.toLocaleString("en-US")} B raw, ${sz.glueGz.toLocaleString("en-US")} B gzipped; ` +
    `node entry ${sz.nodeRaw} B`,
  "",
  "goals:",
  ...goalLines.map((l) => "  " + l),
  "",
  profileText,
  ...(problems.length ? ["problems:", ...problems.map((p) => "  " + p), ""] : []),
  `(bench took ${((Date.now() - t0) / 1000).toFixed(0)} s)`,
].join("\n");
console.log(report);
fs.writeFileSync(path.join(outDir, "last-report.txt"), report + "\n");
fs.writeFileSync(path.join(outDir, "last-results.json"), JSON.stringify({ rows, soaks, sizes: sz, problems }, null, 1));
