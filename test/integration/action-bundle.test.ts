/**
 * The Action's bundle is committed (a runner neither installs nor builds), so it must be what the
 * sources build to: rebuild into a temporary directory and compare every file, byte for byte.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const repo = join(import.meta.dirname, "../..");
const committed = join(repo, "dist", "action");
const FIX = "run npm run build:action and commit dist/action";

test("the committed dist/action is what the sources build to", async () => {
  const out = await mkdtemp(join(tmpdir(), "suture-action-bundle-"));
  try {
    await run(process.execPath, [join(repo, "scripts/build-action.ts"), "--outdir", out], { cwd: repo });
    const built = (await readdir(out)).sort();
    const have = (await readdir(committed).catch(() => [] as string[])).sort();
    assert.deepEqual(have, built, `dist/action holds other files than the build writes: ${FIX}`);
    for (const name of built) {
      const same =
        Buffer.compare(await readFile(join(out, name)), await readFile(join(committed, name))) === 0;
      assert.ok(same, `dist/action/${name} differs from what the sources build to: ${FIX}`);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
