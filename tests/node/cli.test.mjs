// The package's command line, `livestream-wasm tail <url>`, as npx runs it: the packed
// package installed into a fresh project, its bin run against the emulator (which requires a
// token and an API key, so the environment variables must reach it).
//
// Needs what package.test.mjs needs (pkg/ built, the emulator binary). Run: node --test tests/node/
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BIG_ID, MAX_ID, cleanup, packedApp, record, repo, script, startEmulator } from "./support.mjs";

const TOKEN = "cli-test-token";
const API_KEY = "cli-test-key";
const ENV = { ...process.env, LIVESTREAM_TOKEN: TOKEN, LIVESTREAM_API_KEY: API_KEY };

// Records as the service sends them, and what the command line must print for each: the line
// itself (without surrounding whitespace), except where noted. Two are duplicates.
const WIRE = [
  [record(BIG_ID, "4948646782672799561", "first"), "same"],
  ["", null], // an empty record: ignored
  [`  {"hitIdHigh":${MAX_ID},"hitIdLow":${MAX_ID},"visIdHigh":0,"visIdLow":null,"mcVisIdHigh":9007199254740993,"mcVisIdLow":1}  `, "same"],
  // Nested id fields and id-like text inside strings are not the top-level ids: untouched.
  [`{"pageName":"x\\",\\"hitIdLow\\":\\"7\\"","a":{"hitIdHigh":"5","hitIdLow":[1,{"visIdLow":"2"}]},"hitIdHigh":11,"hitIdLow":12,"z":"\\\\"}`, "same"],
  // Whitespace around the colon and an escaped member name (still hitIdHigh).
  [`{ "hitId\\u0048igh" : 21 , "hitIdLow"\t:\t22 , "pageName" : "日本語 🎉" }`, "same"],
  // Ids that were already strings on the wire come out bare (documented).
  [`{"hitIdHigh":"31","hitIdLow":"32","visIdHigh":"33","visIdLow":34}`, `{"hitIdHigh":31,"hitIdLow":32,"visIdHigh":33,"visIdLow":34}`],
  [record(BIG_ID, "4948646782672799561", "duplicate"), null],
  // A record without ids is delivered (and never de-duplicated).
  [`{"pageName":"no ids","evars":{"evars":{}}}`, "same"],
  [`{ "hitIdHigh" : 21 , "hitIdLow" : 22 }`, null],
];
const EXPECTED = WIRE.filter(([, out]) => out !== null).map(([line, out]) => (out === "same" ? line.trim() : out));

describe("the command line: livestream-wasm tail", () => {
  let work;
  let app;
  let bin;
  let emulator;

  before(async () => {
    ({ work, app } = packedApp("cli"));
    bin = join(app, "node_modules/.bin/livestream-wasm");
    emulator = await startEmulator(["--token", TOKEN, "--api-key", API_KEY]);
  });

  after(async () => {
    await emulator?.stop();
    if (work) cleanup(work);
  });

  /** Runs the installed bin to completion. */
  function tail(args, opts = {}) {
    return spawnSync(bin, args, { cwd: app, env: ENV, encoding: "utf8", timeout: 20_000, ...opts });
  }

  const streamUrl = (name) => `${emulator.url}/api/1/stream/${name}`;

  async function stats(name) {
    return (await fetch(`${emulator.url}/admin/stats?stream=${name}`)).json();
  }

  test("npm installs the bin; --help and --version", () => {
    assert.ok(existsSync(bin), `${bin} is missing`);
    const help = tail(["--help"]);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^Usage: livestream-wasm tail <url> \[options\]/);
    for (const flag of ["--limit N", "--reconnect-delay-ms N", "--max-connections N", "LIVESTREAM_TOKEN", "LIVESTREAM_API_KEY"]) {
      assert.ok(help.stdout.includes(flag), `the usage lacks ${flag}`);
    }
    const version = tail(["--version"]);
    assert.equal(version.status, 0, version.stderr);
    const expected = `${JSON.parse(readFileSync(join(repo, "package.json"), "utf8")).version}\n`;
    assert.equal(version.stdout, expected);
    // As the README says to run it.
    const npx = spawnSync("npx", ["--no-install", "livestream-wasm", "--version"], { cwd: app, encoding: "utf8", timeout: 20_000 });
    assert.equal(npx.status, 0, npx.stderr);
    assert.equal(npx.stdout, expected);
  });

  test("each record is printed once, as sent: ids bare with their exact digits, every other byte kept", async () => {
    await script(emulator.url, "exact", { rate: 0, body: { lines: WIRE.map(([line]) => line), chunk_size: 7, then: "hold" } });
    const r = tail(["tail", streamUrl("exact"), "--limit", String(EXPECTED.length), "--reconnect-delay-ms", "1000"]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assert.equal(lines.pop(), "", "stdout ends with a newline");
    assert.deepEqual(lines, EXPECTED);
    const first = lines.map((l) => l.match(/^\{"reportSuite":"rs","hitIdHigh":(\d+),"hitIdLow":(\d+)/)).filter(Boolean);
    assert.deepEqual(first.map((m) => [m[1], m[2]]), [[BIG_ID, "4948646782672799561"]]);
    for (const line of lines) JSON.parse(line);
    assert.match(r.stderr, /connection 0 open \(HTTP 200\)/);
    // --limit closed the connection before exiting.
    assert.match(r.stderr, /connection 0 closed: /);
    const s = await stats("exact");
    assert.equal(s.streams.exact.live, 0);
    assert.deepEqual(s.connections.map((c) => c.close_reason), ["client_closed"]);
  });

  test("--limit N prints exactly N records of a busy stream and exits 0", async () => {
    await script(emulator.url, "busy", { rate: 400 });
    const r = tail(["tail", streamUrl("busy"), "--limit", "25"]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 25);
    const keys = new Set();
    for (const line of lines) {
      const m = line.match(/[{,]"hitIdHigh":(\d+),"hitIdLow":(\d+),"visIdHigh":(\d+),"visIdLow":(\d+)/);
      assert.ok(m, `ids not bare in ${line.slice(0, 120)}`);
      assert.equal(JSON.parse(line).reportSuite, "examplecomprod");
      keys.add(`${m[1]}/${m[2]}`);
    }
    assert.equal(keys.size, 25, "a duplicate was printed");
    await script(emulator.url, "busy", { rate: 0 });
  });

  test("--max-connections and --reconnect-delay-ms reach the stream (a 503 is retried after 200 ms, not 60 s)", async () => {
    await script(emulator.url, "options", {
      // Both slots get a 503: the record comes only after a retry.
      responses: [{ status: 503, error_description: "no hits yet" }, { status: 503, error_description: "no hits yet" }],
      body: { lines: [record(BIG_ID, "7", "after the retry")], then: "hold" },
    });
    const started = Date.now();
    const r = tail(["tail", streamUrl("options"), "--max-connections", "2", "--reconnect-delay-ms", "200", "--limit", "1"]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
    assert.equal(r.stdout, `${record(BIG_ID, "7", "after the retry")}\n`);
    assert.match(r.stderr, /error unavailable \(connection \d, HTTP 503\): /);
    assert.match(r.stderr, /connection \d waiting \(HTTP 503\): /);
    const s = await stats("options");
    assert.equal(s.status_counts["503"], 2);
    assert.ok(s.status_counts["200"] >= 1, JSON.stringify(s.status_counts));
    for (const c of s.connections) assert.equal(c.maxConnections, 2);
    assert.equal(s.streams.options.live, 0);
  });

  for (const signal of ["SIGINT", "SIGTERM"]) {
    test(`${signal} closes the connection (the server sees it end), then exits 0`, async () => {
      const name = `signal-${signal.toLowerCase()}`;
      await script(emulator.url, name, { rate: 0, body: { lines: [record(BIG_ID, "1", "a")], then: "hold" } });
      const child = spawn(bin, ["tail", streamUrl(name)], { cwd: app, env: ENV, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stderr.on("data", (d) => { stderr += d; });
      const exited = new Promise((resolve) => child.on("exit", (code, sig) => resolve({ code, sig })));
      try {
        await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no record within 10 s; stderr: ${stderr}`)), 10_000);
          child.stdout.on("data", (d) => {
            stdout += d;
            if (stdout.endsWith("\n")) { clearTimeout(timer); resolve(); }
          });
        });
        assert.equal(stdout, `${record(BIG_ID, "1", "a")}\n`);
        assert.equal((await stats(name)).streams[name].live, 1);
        child.kill(signal);
        const { code, sig } = await Promise.race([exited, new Promise((r) => setTimeout(() => r({ code: "still running after 10 s" }), 10_000).unref())]);
        assert.deepEqual({ code, sig }, { code: 0, sig: null }, stderr);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }
      assert.match(stderr, new RegExp(`${signal}: closing the connection\\n[^]*connection 0 closed`));
      const s = await stats(name);
      assert.equal(s.streams[name].live, 0);
      assert.deepEqual(s.connections.map((c) => c.close_reason), ["client_closed"]);
    });
  }

  test("| head: a closed stdout ends the program quietly, status 0", async () => {
    await script(emulator.url, "piped", { rate: 400 });
    const r = spawnSync("bash", ["-c", `set -o pipefail; "$0" tail "$1" | head -n 2`, bin, streamUrl("piped")], {
      cwd: app, env: ENV, encoding: "utf8", timeout: 20_000,
    });
    await script(emulator.url, "piped", { rate: 0 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trimEnd().split("\n").length, 2);
    assert.doesNotMatch(r.stderr, /EPIPE|Error|at /);
    assert.equal((await stats("piped")).streams.piped.live, 0);
  });

  test("a fatal error (404) exits 1 at once with the reason on stderr", async () => {
    await script(emulator.url, "gone", { responses: [{ status: 404, error_description: "stream gone\r\nfor good" }] });
    const started = Date.now();
    const r = tail(["tail", streamUrl("gone")]);
    assert.equal(r.status, 1, `status ${r.status}, stderr: ${r.stderr}`);
    assert.ok(Date.now() - started < 10_000, "the program lingered after the fatal error");
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /fatal error not_found \(connection 0, HTTP 404\): .*stream gone for good\n/);
    for (const line of r.stderr.trimEnd().split("\n")) assert.match(line, /^livestream-wasm: /);
    assert.match(r.stderr, /connection 0 failed/);
  });

  test("the token and API key come from the environment: without the key the server refuses (403), fatal", () => {
    const { LIVESTREAM_API_KEY: _, ...noKey } = ENV;
    const r = tail(["tail", streamUrl("no-key")], { env: noKey });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /fatal error forbidden \(connection 0, HTTP 403\)/);
  });

  test("without LIVESTREAM_TOKEN it says so on stderr, and connects without one", async () => {
    // The scripted 404 answers before the token check: the request was made.
    await script(emulator.url, "no-token", { responses: [{ status: 404 }] });
    const { LIVESTREAM_TOKEN: _, ...noToken } = ENV;
    const r = tail(["tail", streamUrl("no-token")], { env: noToken });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^livestream-wasm: LIVESTREAM_TOKEN is not set: connecting without a token/);
    assert.equal((await stats("no-token")).status_counts["404"], 1);
    await script(emulator.url, "no-token", { responses: [{ status: 404 }] });
    const withToken = tail(["tail", streamUrl("no-token")]);
    assert.equal(withToken.status, 1, withToken.stderr);
    assert.doesNotMatch(withToken.stderr, /LIVESTREAM_TOKEN/);
  });

  test("bad arguments: usage errors with status 2", () => {
    const cases = [
      [[], /no command: the command is `tail <url>`/],
      [["tail"], /tail needs the stream's URL/],
      [["follow", "http://x"], /unknown command "follow"/],
      [["tail", streamUrl("x"), "--limit", "0"], /--limit must be an integer of at least 1, not "0"/],
      [["tail", streamUrl("x"), "--limit", "ten"], /--limit must be an integer of at least 1, not "ten"/],
      [["tail", streamUrl("x"), "--token", "secret"], /Unknown option '--token'/],
      [["tail", streamUrl("x"), "--max-connections", "9"], /invalid option maxConnections: 9/],
      [["tail", streamUrl("x"), "extra"], /unexpected argument "extra" after the URL/],
    ];
    for (const [args, message] of cases) {
      const r = tail(args);
      assert.equal(r.status, 2, `${args.join(" ")}: status ${r.status}, stderr: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
      assert.match(r.stderr, /Run `livestream-wasm --help` for the usage\./);
      assert.equal(r.stdout, "");
    }
  });
});
