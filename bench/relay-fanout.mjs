// Fan-out benchmark of livestream-relay: one upstream from the emulator at a steady rate,
// fanned out to 10, 100 and 1000 downstream gzip clients on this machine; the relay's CPU
// (user+sys seconds per second, /proc/<pid>/stat) and RSS, for the shared compress-once
// stream against a naive relay that compresses per client (--naive-per-client-gzip), in the
// same run. Prints a table (and JSON with --json).
//
//   node bench/relay-fanout.mjs [--quick] [--json]
//
// Builds the relay, the emulator and the load client with `--profile native` (target/native).
// The load client decodes 10 clients fully (exact records/s) and counts bytes for the others.
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(fileURLToPath(new URL("..", import.meta.url)));
const args = new Set(process.argv.slice(2));
const quick = args.has("--quick");
// The emulator generates at most 10 000 hits/s per stream (its --rate cap).
const RATES = quick ? [2000] : [2000, 10000];
const CLIENTS = quick ? [10, 100] : [10, 100, 1000];
const MODES = ["shared", "naive"];
const WARMUP = 2;
const MEASURE = quick ? 3 : 5;
const TICK = 100; // USER_HZ on Linux

function sh(cmd, argv) {
  const r = spawnSync(cmd, argv, { cwd: repo, stdio: ["ignore", "inherit", "inherit"] });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(" ")} failed (${r.status})`);
}

sh("cargo", ["build", "--profile", "native", "-p", "livestream-relay", "-p", "livestream-emulator", "--bins", "--examples"]);
const bin = (n) => join(repo, "target/native", n);

/** Starts a server binary; resolves to { child, url } once it printed "listening on". */
function startServer(path, argv, env = {}) {
  return new Promise((ok, fail) => {
    const child = spawn(path, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    const timer = setTimeout(() => fail(new Error(`${path} did not start: ${out}`)), 20_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        ok({ child, url: m[1] });
      }
    });
    child.on("exit", (code) => fail(new Error(`${path} exited (${code}): ${out}`)));
  });
}

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / TICK; // utime, stime (fields 14, 15)
}

function rssMb(pid) {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) / 1024 : NaN;
}

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{"));
  return line ? Number(line.split(" ").pop()) : NaN;
}

async function runOne(rate, clients, mode) {
  const emu = await startServer(bin("livestream-emulator"), ["--listen", "127.0.0.1:0", "--quiet", "--seed", "1", "--rate", String(rate)]);
  const relayArgs = ["--listen", "127.0.0.1:0", "--quiet", "--replay", "0", "--reconnect-delay-ms", "1000",
    "--upstream", `${emu.url}/api/1/stream/bench`];
  if (mode === "naive") relayArgs.push("--naive-per-client-gzip");
  const relay = await startServer(bin("livestream-relay"), relayArgs, { LIVESTREAM_TOKEN: "bench" });
  const pid = relay.child.pid;
  const addr = relay.url.replace("http://", "");
  try {
    const rssStart = rssMb(pid);
    const load = spawn("bash", ["-c", `ulimit -n 20000 2>/dev/null || ulimit -n $(ulimit -Hn); exec "$0" "$@"`,
      bin("examples/fanout_load"), addr, "/api/1/stream/bench", String(clients), String(Math.min(10, clients)),
      String(WARMUP), String(MEASURE)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    let cpu0, cpu1, rec0, rec1, rssMid;
    const done = new Promise((ok) => load.on("exit", ok));
    load.stdout.on("data", async (d) => {
      const before = out.length;
      out += d;
      const fresh = out.slice(before);
      if (fresh.includes("measure-start")) {
        cpu0 = { t: performance.now(), s: cpuSeconds(pid) };
        rec0 = metric(relay.url, "livestream_relay_records_in_total");
      }
      if (fresh.includes("measure-end")) {
        cpu1 = { t: performance.now(), s: cpuSeconds(pid) };
        rssMid = rssMb(pid);
        rec1 = metric(relay.url, "livestream_relay_records_in_total");
      }
    });
    await done;
    const result = JSON.parse(out.trim().split("\n").pop());
    const secs = (cpu1.t - cpu0.t) / 1000;
    const upstreamRate = ((await rec1) - (await rec0)) / secs;
    const cut = await metric(relay.url, "livestream_relay_clients_cut_total");
    const v = result.verifier_records_per_s;
    return {
      rate, clients, mode,
      upstream_records_per_s: upstreamRate,
      client_records_per_s_min: Math.min(...v),
      client_records_per_s_max: Math.max(...v),
      client_bytes_per_s_min: result.bytes_per_s.min,
      client_bytes_per_s_median: result.bytes_per_s.median,
      alive: result.alive,
      cut,
      relay_cpu: (cpu1.s - cpu0.s) / secs,
      rss_start_mb: rssStart,
      rss_end_mb: rssMid,
    };
  } finally {
    relay.child.kill("SIGTERM");
    emu.child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
  }
}

const rows = [];
for (const rate of RATES) {
  for (const clients of CLIENTS) {
    for (const mode of MODES) {
      process.stderr.write(`relay-fanout: ${rate} records/s, ${clients} clients, ${mode} ...\n`);
      rows.push(await runOne(rate, clients, mode));
    }
  }
}

const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "-");
console.log("\nlivestream-relay fan-out (one upstream from the emulator; CPU = relay user+sys s per s; 2-core VM, shared)\n");
console.log("| rate/s | clients | mode | upstream rec/s | rec/s per client (10 decoded, min-max) | KB/s per client (min / median) | alive | cut | relay CPU | RSS MB start -> end |");
console.log("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) {
  console.log(`| ${r.rate} | ${r.clients} | ${r.mode} | ${f(r.upstream_records_per_s)} | ${f(r.client_records_per_s_min)}-${f(r.client_records_per_s_max)} | ${f(r.client_bytes_per_s_min / 1024)} / ${f(r.client_bytes_per_s_median / 1024)} | ${r.alive}/${r.clients} | ${r.cut} | ${f(r.relay_cpu, 2)} | ${f(r.rss_start_mb, 1)} -> ${f(r.rss_end_mb, 1)} |`);
}
if (args.has("--json")) console.log(JSON.stringify(rows, null, 1));
