// The package's TypeScript types, compiled with `tsc --strict` as a user's project would:
// the README's usage (token function, callbacks, the StatusEvent union narrowed by `state`,
// HitBatch columns, `for await`, `using`, optionSchema) must type-check, and a mistake the
// union exists to catch (`retryInMs` on an `open` status) must not (`@ts-expect-error`).
import { test } from "node:test";
import { cpSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { repo, run, tempDir, cleanup } from "./support.mjs";

test("the public types compile under tsc --strict, and the status union catches a misuse", () => {
  const dir = tempDir("types");
  try {
    cpSync(join(repo, "tests/node/types/use.ts"), join(dir, "use.ts"));
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, target: "es2022", module: "nodenext", moduleResolution: "nodenext",
        lib: ["es2022", "dom", "esnext.disposable"], skipLibCheck: false,
      },
      files: ["use.ts"],
    }));
    mkdirSync(join(dir, "node_modules"));
    symlinkSync(repo, join(dir, "node_modules/livestream-wasm"), "dir");
    run(process.execPath, [join(repo, "node_modules/typescript/bin/tsc"), "-p", dir]);
  } finally {
    cleanup(dir);
  }
});
