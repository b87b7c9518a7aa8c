#!/usr/bin/env node
// The package's command line: `npx livestream-wasm tail <url>` prints a Live Stream's records
// as NDJSON on stdout, exactly as received (ids bare, duplicates dropped), and the status on
// stderr. It uses nothing but the package's public API.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const NAME = "livestream-wasm";

const USAGE = `Usage: ${NAME} tail <url> [options]

Prints each new record of the Live Stream at <url> as one JSON line on stdout, as it
arrives: every field as sent, the 64-bit ids as bare numbers with their exact digits,
duplicates dropped. Status changes and errors go to stderr, one line each.

Credentials come from the environment only (flags would show in \`ps\`):
  LIVESTREAM_TOKEN     OAuth access token, sent as Authorization: Bearer
  LIVESTREAM_API_KEY   client id, sent as x-api-key

Options:
  --limit N                 exit (status 0) after N records, closing the connection first
  --max-connections N       the stream's maxConnections, 1 to 8 (default 1); every client
                            of the stream must use the same value
  --reconnect-delay-ms N    minimum wait after a lost connection (default 60000); below
                            ~60000 the real service answers 409/503
  -h, --help                this text
  -V, --version             the package version

Exit status: 0 after --limit records, Ctrl-C (SIGINT), SIGTERM or a closed stdout
(e.g. \`| head\`), always after closing the connection; 1 on a fatal error of the stream
(e.g. 404: wrong endpoint); 2 on bad arguments.

Example:
  LIVESTREAM_TOKEN=... LIVESTREAM_API_KEY=... \\
    npx ${NAME} tail https://livestream.adobe.net/api/1/stream/my-endpoint --limit 10
`;

/** The six top-level id fields that the package hands out as strings (the core's ID_FIELDS:
 * tests/schema.rs checks they agree). */
const ID_FIELDS = new Set(["hitIdHigh", "hitIdLow", "visIdHigh", "visIdLow", "mcVisIdHigh", "mcVisIdLow"]);

/** Index of the quote that closes the JSON string opening at `start`. */
function stringEnd(text, start) {
  let q = text.indexOf('"', start + 1);
  for (;;) {
    let backslashes = 0;
    while (text.charCodeAt(q - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return q;
    q = text.indexOf('"', q + 1);
  }
}

function skipWhitespace(text, i) {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return i;
    i++;
  }
}

/**
 * Undoes exactly what the package does to a record: the six id fields of the top-level
 * object hold their digits as JSON strings (`"hitIdHigh":"2948027281753079808"`); they are
 * written bare again. Everything else (nested objects, other fields, whitespace) is kept
 * byte for byte. `text` is one valid JSON object (the package validated it).
 */
function unquoteIds(text) {
  let out = "";
  let copiedTo = 0;
  let depth = 0;
  let atKey = false; // the next string at depth 1 is a member name
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const end = stringEnd(text, i);
      const isKey = depth === 1 && atKey;
      const start = i;
      i = end + 1;
      if (!isKey) continue;
      atKey = false;
      // Member names may be escaped (`"hitId\u0048igh"` is hitIdHigh too).
      const key = text.slice(start + 1, end);
      const name = key.includes("\\") ? JSON.parse(`"${key}"`) : key;
      if (!ID_FIELDS.has(name)) continue;
      const value = skipWhitespace(text, skipWhitespace(text, i) + 1); // past the ':'
      if (text.charCodeAt(value) !== 0x22) continue; // a bare number or null: as sent
      const valueEnd = stringEnd(text, value);
      const digits = text.slice(value + 1, valueEnd);
      if (/^[0-9]+$/.test(digits)) {
        out += text.slice(copiedTo, value) + digits;
        copiedTo = valueEnd + 1;
      }
      i = valueEnd + 1;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      depth++;
      atKey = depth === 1;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    } else if (c === 0x2c && depth === 1) {
      atKey = true;
    }
    i++;
  }
  return copiedTo === 0 ? text : out + text.slice(copiedTo);
}

/** Exits with status 2 and `message` about the arguments. */
function badArguments(message) {
  process.stderr.write(`${NAME}: ${message}\nRun \`${NAME} --help\` for the usage.\n`);
  process.exit(2);
}

/** A non-negative integer flag value, or a usage error naming the flag. */
function integerFlag(flag, value, min) {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value) || Number(value) < min || !Number.isSafeInteger(Number(value))) {
    badArguments(`--${flag} must be an integer of at least ${min}, not ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        limit: { type: "string" },
        "max-connections": { type: "string" },
        "reconnect-delay-ms": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (e) {
    badArguments(e.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (values.version) {
    const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    process.stdout.write(`${manifest.version}\n`);
    process.exit(0);
  }
  const [command, url, ...extra] = positionals;
  if (command === undefined) badArguments("no command: the command is `tail <url>`");
  if (command !== "tail") badArguments(`unknown command ${JSON.stringify(command)}: the command is \`tail <url>\``);
  if (url === undefined) badArguments("tail needs the stream's URL: `tail https://livestream.adobe.net/api/1/stream/<endpoint>`");
  if (extra.length > 0) badArguments(`unexpected argument ${JSON.stringify(extra[0])} after the URL`);
  return {
    url,
    limit: integerFlag("limit", values.limit, 1),
    maxConnections: integerFlag("max-connections", values["max-connections"], 0),
    reconnectDelayMs: integerFlag("reconnect-delay-ms", values["reconnect-delay-ms"], 0),
  };
}

function describeStatus(s) {
  const parts = [`connection ${s.connection} ${s.state}`];
  if (s.httpStatus !== undefined) parts.push(` (HTTP ${s.httpStatus})`);
  if (s.reason && s.reason !== s.state) parts.push(`: ${s.reason}`);
  return parts.join("");
}

function describeError(e) {
  const where = [e.connection !== undefined ? `connection ${e.connection}` : "", e.httpStatus !== undefined ? `HTTP ${e.httpStatus}` : ""]
    .filter(Boolean).join(", ");
  return `${e.fatal ? "fatal " : ""}error ${e.code}${where ? ` (${where})` : ""}: ${e.message}`;
}

async function main() {
  const args = parseCommandLine(process.argv.slice(2));
  let quiet = false; // set once stdout is gone: `| head` ends the program silently
  const log = (line) => {
    // One line each, whatever a server put into its error description.
    if (!quiet) process.stderr.write(`${NAME}: ${line.replace(/[\r\n]+/g, " ")}\n`);
  };
  let printed = 0;
  let stopping = false;
  let stream;

  /** Closes the stream (every request aborted), then exits with `code`. */
  async function stop(code) {
    if (stopping) return;
    stopping = true;
    try {
      await stream?.close();
    } catch (e) {
      log(`closing failed: ${e?.message ?? e}`);
      code ||= 1;
    }
    // Exit once stdout has taken everything written (pipes may still hold a backlog).
    process.exitCode = code;
    if (quiet || process.stdout.writableLength === 0) process.exit(code);
    process.stdout.once("drain", () => process.exit(code));
    process.stdout.once("error", () => process.exit(code));
  }

  process.stdout.on("error", (e) => {
    if (e.code === "EPIPE") {
      quiet = true;
      stop(0);
    } else {
      log(`cannot write to stdout: ${e.message}`);
      stop(1);
    }
  });
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      if (stopping) process.exit(130); // a second Ctrl-C while closing: leave at once
      log(`${signal}: closing the connection`);
      stop(0);
    });
  }

  const token = process.env.LIVESTREAM_TOKEN || undefined;
  const apiKey = process.env.LIVESTREAM_API_KEY || undefined;
  if (token === undefined) log("LIVESTREAM_TOKEN is not set: connecting without a token (only a relay that adds it itself accepts that)");

  // Loaded only now, so that --help, --version and argument errors need no WebAssembly.
  const { default: init, LiveStream } = await import("livestream-wasm");
  await init();
  try {
    stream = new LiveStream({
      url: args.url,
      token,
      apiKey,
      ...(args.maxConnections !== undefined && { maxConnections: args.maxConnections }),
      ...(args.reconnectDelayMs !== undefined && { reconnectDelayMs: args.reconnectDelayMs }),
      onBatch(batch) {
        if (stopping) return;
        const n = args.limit === undefined ? batch.length : Math.min(batch.length, args.limit - printed);
        let lines = "";
        for (let i = 0; i < n; i++) lines += `${unquoteIds(batch.text(i))}\n`;
        printed += n;
        if (lines) process.stdout.write(lines);
        if (printed === args.limit) stop(0);
      },
      onStatus(status) {
        log(describeStatus(status));
      },
      onError(error) {
        log(describeError(error));
        // After the `failed` status that follows, which says the same in the slot's words.
        if (error.fatal) setImmediate(() => stop(1));
      },
    });
  } catch (e) {
    badArguments(e.message);
  }
  stream.start();
}

await main();
