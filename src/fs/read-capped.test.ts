import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { readFileCapped } from "./read-capped.ts";

const work = mkdtempSync(join(tmpdir(), "suture-read-capped-"));
after(() => rmSync(work, { recursive: true, force: true }));

test("a file within the limit is read whole; one over it is TOO_LARGE naming the size, limit and flag", async () => {
  const file = join(work, "report.json");
  writeFileSync(file, "x".repeat(100));
  assert.equal((await readFileCapped(file, { limit: 100, what: "report" })).length, 100);
  await assert.rejects(
    readFileCapped(file, { limit: 99, what: "report report.json", flag: "--max-report-size" }),
    (e: unknown) =>
      isSutureError(e, "TOO_LARGE") &&
      e.message ===
        "report report.json is 100 bytes, more than the 99 bytes it may have: raise the limit with --max-report-size",
  );
});

test("an endless stream stops at the limit instead of filling memory; the caller's error is used", async () => {
  await assert.rejects(
    readFileCapped("/dev/zero", {
      limit: 1024 * 1024,
      what: "zero",
      tooLarge: (size, limit) => new Error(`custom ${size} ${limit}`),
    }),
    { message: `custom undefined ${1024 * 1024}` },
  );
});

test("noFollow refuses a symlink; regularOnly refuses a FIFO without blocking on it", async () => {
  const target = join(work, "target");
  writeFileSync(target, "secret");
  symlinkSync(target, join(work, "link"));
  await assert.rejects(readFileCapped(join(work, "link"), { limit: 100, what: "list", noFollow: true }), {
    code: "ELOOP",
  });
  assert.equal((await readFileCapped(join(work, "link"), { limit: 100, what: "list" })).toString(), "secret");
  const fifo = join(work, "fifo");
  execFileSync("mkfifo", [fifo]);
  await assert.rejects(
    readFileCapped(fifo, { limit: 100, what: "list", regularOnly: true }),
    (e: unknown) => isSutureError(e, "IO") && /not a regular file/.test(e.message),
  );
});
