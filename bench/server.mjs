// The benchmark's local HTTP server, run as a child process of bench/run.mjs so that serving
// never competes with the measured code for the client's thread:
//   node bench/server.mjs --hits 100000 --seed 1      prints "listening <port>" when ready
// Routes: GET /data (the data set, chunked, 64 KiB writes at full speed), GET /soak?hits=N
// (records generated on the fly), GET / (the bench page), /bench/* and /pkg/* (static).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { generate, streamingSource } from "./data.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const hits = Number(args.hits ?? 100_000);
const seed = Number(args.seed ?? 1);
const pkgDir = path.resolve(args.pkg ?? path.join(root, "pkg"));
const data = generate(hits, seed).bytes;
const CHUNK = 64 * 1024;
const TYPES = { ".html": "text/html", ".mjs": "text/javascript", ".js": "text/javascript",
  ".wasm": "application/wasm", ".json": "application/json" };

async function stream(res, pull) {
  res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
  for (;;) {
    const chunk = pull();
    if (chunk === null) break;
    if (!res.write(chunk)) {
      await new Promise((r) => {
        const done = () => {
          res.off("drain", done);
          res.off("close", done);
          r();
        };
        res.on("drain", done);
        res.on("close", done);
      });
      if (res.destroyed) return;
    }
  }
  res.end();
}

const server = http.createServer((req, res) => {
  const u = new URL(req.url, "http://x");
  if (u.pathname.startsWith("/api/1/stream/data") || u.pathname === "/data") {
    let at = 0;
    stream(res, () => {
      if (at >= data.length) return null;
      const c = data.subarray(at, Math.min(at + CHUNK, data.length));
      at += c.length;
      return c;
    });
    return;
  }
  if (u.pathname.startsWith("/api/1/stream/soak") || u.pathname === "/soak") {
    const gen = streamingSource(Number(u.searchParams.get("hits") ?? 1_000_000), seed + 1000, CHUNK);
    stream(res, gen.pull);
    return;
  }
  let file;
  if (u.pathname === "/") file = path.join(root, "bench", "page.html");
  else if (u.pathname.startsWith("/bench/")) file = path.join(root, u.pathname);
  else if (u.pathname.startsWith("/pkg/")) file = path.join(pkgDir, u.pathname.slice(5));
  const allowed = (dir) => file && path.normalize(file).startsWith(dir + path.sep);
  if (!(allowed(path.join(root, "bench")) || allowed(pkgDir)) || !fs.existsSync(file)) {
    res.writeHead(404).end("not found");
    return;
  }
  res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
  fs.createReadStream(file).pipe(res);
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on("SIGTERM", () => process.exit(0));
