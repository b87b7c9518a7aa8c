// Node-side helpers of the behaviour tests: where the package and the emulator are, and an
// emulator on a free port that the caller stops.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const PKG = process.env.LIVESTREAM_PKG_DIR || join(ROOT, "pkg");
export const BIN = process.env.LIVESTREAM_EMULATOR_BIN || join(ROOT, "target/release/livestream-emulator");

/** Fails with the command that builds what is missing. */
export function needBuilt() {
  for (const [what, path, hint] of [
    ["the npm package", join(PKG, "livestream_wasm_bg.wasm"), "bash scripts/build-pkg.sh"],
    ["the emulator binary", BIN, "cargo build --release -p livestream-emulator"],
  ]) {
    if (!existsSync(path)) throw new Error(`${what} is not at ${path}; build it first: ${hint}`);
  }
}

/**
 * Starts the emulator on 127.0.0.1 and a free port with the flags the wasm tests always used
 * (`--rate 50 --seed 1 --slot-hold-secs 0.3`) plus `args`. Resolves to `{ url, stop(), log }`.
 */
export async function startEmulator(args = []) {
  needBuilt();
  const child = spawn(BIN, ["--listen", "127.0.0.1:0", "--quiet", "--rate", "50", "--seed", "1", "--slot-hold-secs", "0.3", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the emulator printed no URL within 20 s:\n${out}`));
    }, 20_000);
    const onData = (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1].replace(/\/$/, ""));
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the emulator exited (${code}):\n${out}`));
    });
  });
  return {
    url,
    log: () => out,
    stop: () => new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done();
      const kill = setTimeout(() => child.kill("SIGKILL"), 3000);
      child.once("exit", () => {
        clearTimeout(kill);
        done();
      });
      child.kill("SIGTERM");
    }),
  };
}
