// Reads a V8 .cpuprofile (node --cpu-prof) and prints the top functions by self time.
//   node bench/profile-summary.mjs FILE.cpuprofile [N]
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The top `n` functions by self time, as a printable table. */
export function summarize(profile, n = 15) {
  const { nodes, samples, timeDeltas } = profile;
  const byId = new Map(nodes.map((node) => [node.id, node]));
  const self = new Map(); // node id -> µs
  // Each sample's time is the delta to the next sample (V8's convention: timeDeltas[i+1]).
  for (let i = 0; i < samples.length; i++) {
    const dt = i + 1 < timeDeltas.length ? timeDeltas[i + 1] : 0;
    self.set(samples[i], (self.get(samples[i]) ?? 0) + Math.max(0, dt));
  }
  let total = 0;
  const byFn = new Map();
  const byKind = new Map();
  for (const [id, us] of self) {
    const cf = byId.get(id).callFrame;
    total += us;
    const kind = kindOf(cf);
    byKind.set(kind, (byKind.get(kind) ?? 0) + us);
    const file = cf.url ? path.basename(cf.url.replace(/^file:\/\//, "")) : "";
    const where = file ? `${file}:${cf.lineNumber + 1}` : cf.url === "" && cf.functionName.startsWith("(") ? "" : "(native)";
    const key = `${cf.functionName || "(anonymous)"}  ${where}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
  }
  const top = [...byFn].sort((a, b) => b[1] - a[1]).slice(0, n);
  const lines = top.map(([k, us], i) =>
    `${String(i + 1).padStart(3)}. ${(us / 1000).toFixed(1).padStart(8)} ms ${(100 * us / total).toFixed(1).padStart(5)} %  ${k}`);
  const kinds = [...byKind].sort((a, b) => b[1] - a[1])
    .map(([k, us]) => `${k} ${(100 * us / total).toFixed(1)} %`).join(", ");
  return [...lines, `     ${(total / 1000).toFixed(1).padStart(8)} ms total sampled; by kind: ${kinds}`].join("\n");
}

/** Where a frame's time goes: the wasm core, the package's JS, the bench, Node, GC, idle. */
function kindOf(cf) {
  const u = cf.url ?? "";
  const f = cf.functionName ?? "";
  if (u.startsWith("wasm://") || f.startsWith("wasm-function") || f.startsWith("$")) return "wasm";
  if (f === "(garbage collector)") return "GC";
  if (f === "(idle)" || f === "(program)" || f === "(root)") return f.slice(1, -1);
  if (/\/(pkg|pkg-names)\/|snippets\//.test(u)) return "package JS";
  if (/\/bench\//.test(u)) return "bench JS (generator, consumer, checks)";
  if (u.startsWith("node:")) return "Node internals";
  if (u === "") return "native/builtins";
  return "other JS";
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node bench/profile-summary.mjs FILE.cpuprofile [N]");
    process.exit(2);
  }
  console.log(summarize(JSON.parse(fs.readFileSync(file, "utf8")), Number(process.argv[3] ?? 15)));
}
