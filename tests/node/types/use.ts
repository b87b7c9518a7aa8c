import init, { LiveStream, HitBatch, optionSchema, type StatusEvent, type ErrorEvent, type Hit } from "livestream-wasm";
await init();
const s = new LiveStream({
  url: "https://livestream.adobe.net/api/1/stream/x",
  token: async ({ refresh }) => (refresh ? "a" : "b"),
  onHits(hits: Hit[], info) { const p: string | undefined = hits[0]?.pageName; void p; void info.connection; },
  onBatch(b: HitBatch) { const x: bigint = b.hitIdHigh[0]; void x; },
  onStatus(st: StatusEvent) { if (st.state === "waiting") { const n: number = st.retryInMs; void n; } },
  onError(e: ErrorEvent) { if (e.code === "conflict") void e.message; },
  share: true,
  signal: new AbortController().signal,
});
s.start();
for await (const batch of s) { void batch.length; break; }
{ using t = new LiveStream({ url: "x" }); void t.state; }
await s.close();
void optionSchema()[0].name;
// @ts-expect-error retryInMs exists only on a waiting status
const bad = (st: StatusEvent) => st.state === "open" && st.retryInMs;
void bad;
