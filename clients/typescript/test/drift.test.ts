// The committed generated code (src/gen) must be what the protos generate now: regenerates
// into a temporary directory with the package's own generator and compares every file.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";

import { paths } from "./fixtures.js";

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

test("src/gen matches the protos (run `npm run generate` after changing proto/)", () => {
  const out = mkdtempSync(join(tmpdir(), "rookery-gen-"));
  try {
    execFileSync(process.execPath, [join(paths.packageDir, "scripts", "generate.js"), out], { stdio: "inherit" });
    const committed = join(paths.packageDir, "src", "gen");
    assert.deepEqual(files(out), files(committed), "the same generated files");
    for (const file of files(out)) {
      assert.equal(readFileSync(join(out, file), "utf8"), readFileSync(join(committed, file), "utf8"), `${file} is up to date`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
