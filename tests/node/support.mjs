// Helpers of the package tests: start the emulator, pack and install the package, run
// commands. Needs a built pkg/ (scripts/build-pkg.sh) and the emulator binary
// (LIVESTREAM_EMULATOR_BIN, else target/native, target/release or target/debug).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repo = resolve(fileURLToPath(new URL("../..", import.meta.url)));

export const MAX_ID = "18446744073709551615";
export const BIG_ID = "2948027281753079808";

/** One Live Stream record line with bare 64-bit ids, as the service sends it. */
export function record(high, low, page) {
  return `{"reportSuite":"rs","hitIdHigh":${high},"hitIdLow":${low},"visIdHigh":${high},"visIdLow":1,` +
    `"timeGMT":1372782179,"receivedTimeGMT":1372782180,"pageName":${JSON.stringify(page)}}`;
}

/** A fresh temporary directory, removed by `cleanup()`. */
export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), `livestream-${prefix}-`));
}

/** Runs a command; throws with its output when it fails. */
export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 120_000, ...opts });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

function emulatorBinary() {
  const candidates = [
    process.env.LIVESTREAM_EMULATOR_BIN,
    join(repo, "target/native/livestream-emulator"),
    join(repo, "target/release/livestream-emulator"),
    join(repo, "target/debug/livestream-emulator"),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`no livestream-emulator binary: build it (cargo build --profile native -p livestream-emulator) or set LIVESTREAM_EMULATOR_BIN; looked at ${candidates.join(", ")}`);
  }
  return found;
}

/** Starts an emulator on a free port with `args`; resolves to { url, stop() }. */
export async function startEmulator(args = []) {
  const child = spawn(emulatorBinary(), ["--listen", "127.0.0.1:0", "--quiet", "--rate", "0", "--seed", "1", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`the emulator did not start:\n${out}`)), 10_000);
    const onData = (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`the emulator exited (${code}):\n${out}`)));
  });
  return {
    url,
    stop: () => new Promise((done) => {
      if (child.exitCode !== null) return done();
      child.once("exit", () => done());
      child.kill("SIGTERM");
    }),
  };
}

/** Installs an emulator script for stream `name`. */
export async function script(server, name, body) {
  const res = await fetch(`${server}/admin/streams/${name}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`script ${name}: ${res.status} ${await res.text()}`);
}

/** `npm pack` of the repository into `dir`; returns the tarball's path and file list. */
export function pack(dir) {
  if (!existsSync(join(repo, "pkg/livestream_wasm_bg.wasm"))) {
    throw new Error("pkg/ is not built: run scripts/build-pkg.sh first");
  }
  const r = run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: repo });
  const [info] = JSON.parse(r.stdout);
  return { tarball: join(dir, info.filename), files: info.files.map((f) => f.path), size: info.size };
}

/** A project in `dir` with the tarball installed (offline: the package has no dependencies). */
export function installInto(dir, tarball, extra = {}) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module", ...extra }, null, 2));
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], { cwd: dir });
}

/** A fresh temporary folder with the package packed into it and installed into its `app/`. */
export function packedApp(prefix) {
  const work = tempDir(prefix);
  const packed = pack(work);
  const app = join(work, "app");
  installInto(app, packed.tarball);
  return { work, app, packed };
}

/**
 * A Node-style script (Node, Deno, Bun): `importLines`, then a LiveStream on the URL in
 * argv[2] that prints the ids of the first two hits as JSON and closes the stream.
 */
export function firstTwoHitsScript(importLines) {
  return `${importLines}
const hits = [];
const stream = new LiveStream({
  url: process.argv[2],
  token: "any-token",
  onHits(batch) {
    hits.push(...batch);
    if (hits.length === 2) {
      stream.close();
      console.log(JSON.stringify(hits.map((h) => [h.hitIdHigh, h.hitIdLow])));
    }
  },
  onError(e) { console.error(JSON.stringify(e)); },
});
stream.start();
`;
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}
