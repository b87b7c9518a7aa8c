// The package's own fetch for Node (pkg/node-fetch.js): its body hands over the socket's
// chunks one by one, keeps what arrived before a cut, and stops reading the socket while the
// client does not read (bounded memory).
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { nodeFetch } from "../../pkg/node-fetch.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An HTTP server on 127.0.0.1 running `handler`; resolves to its base URL and a stop(). */
async function serve(handler) {
  const server = http.createServer(handler);
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}/`;
  const stop = () => new Promise((r) => {
    server.closeAllConnections();
    server.close(r);
  });
  return { url, stop };
}

/** Every chunk of `reader` until it ends, or until it rejects (then `error` is set). */
async function readAll(reader) {
  const chunks = [];
  for (;;) {
    let r;
    try {
      r = await reader.read();
    } catch (error) {
      return { chunks, error };
    }
    if (r.done) return { chunks, error: null };
    assert.ok(r.value instanceof Uint8Array, "each chunk is a Uint8Array");
    chunks.push(r.value);
  }
}

const joined = (chunks) => Buffer.concat(chunks).toString();

test("chunks that arrived while nobody read are handed over one by one, not joined", async () => {
  const parts = Array.from({ length: 8 }, (_, i) => `${i}`.repeat(1000 + i));
  const { url, stop } = await serve(async (req, res) => {
    res.writeHead(200);
    for (const p of parts) {
      res.write(p);
      await sleep(20);
    }
    res.end();
  });
  try {
    const response = await nodeFetch(url);
    assert.equal(response.status, 200);
    await sleep(400); // every part is buffered by now
    const { chunks, error } = await readAll(response.body.getReader());
    assert.equal(error, null);
    assert.equal(joined(chunks), parts.join(""));
    assert.equal(Math.max(...chunks.map((c) => c.length)), 1007, "no chunk is larger than one part");
  } finally {
    await stop();
  }
});

test("a body cut mid-stream gives every byte that arrived, then rejects", async () => {
  const { url, stop } = await serve(async (req, res) => {
    res.writeHead(200);
    res.write("first\n");
    await sleep(20);
    res.write("second\n");
    await sleep(50);
    req.socket.destroy();
  });
  try {
    const response = await nodeFetch(url);
    const { chunks, error } = await readAll(response.body.getReader());
    assert.equal(joined(chunks), "first\nsecond\n");
    assert.ok(error instanceof Error, `the read after the cut rejects (${error})`);
  } finally {
    await stop();
  }
});

test("while the client does not read, the socket is paused: a fast server cannot fill memory", async () => {
  let written = 0;
  let stopWriting = false;
  const block = Buffer.alloc(64 * 1024, 120);
  const { url, stop } = await serve((req, res) => {
    res.writeHead(200);
    const pump = () => {
      while (!stopWriting && written < 512 * 1024 * 1024) {
        written += block.length;
        if (!res.write(block)) {
          res.once("drain", pump);
          return;
        }
      }
    };
    pump();
  });
  try {
    const response = await nodeFetch(url);
    const reader = response.body.getReader();
    const first = await reader.read();
    assert.equal(first.done, false);
    await sleep(800); // no read: the body must stop taking data
    const stalled = written;
    assert.ok(stalled < 32 * 1024 * 1024, `the server wrote ${stalled} bytes while nobody read`);
    // Reading again resumes the flow: the server writes again once the reads have drained
    // what the sockets hold (loopback buffers can hold several MiB, so a fixed amount read
    // first was not always enough under load). Were the body never resumed, the reads would
    // run dry at `stalled` bytes.
    let got = first.value.length;
    const until = Date.now() + 15_000;
    while (written === stalled) {
      const next = await Promise.race([reader.read(), sleep(Math.max(0, until - Date.now())).then(() => null)]);
      assert.ok(next !== null, `reading did not resume the body: the server stood at ${stalled} bytes after ${got} were read`);
      got += next.value.length;
    }
    stopWriting = true;
    await reader.cancel();
  } finally {
    stopWriting = true;
    await stop();
  }
});
