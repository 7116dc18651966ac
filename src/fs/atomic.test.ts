import assert from "node:assert/strict";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { placeDirectory, writeFileAtomic } from "./atomic.ts";

const work = mkdtempSync(join(tmpdir(), "suture-atomic-"));
after(() => rmSync(work, { recursive: true, force: true }));

test("writeFileAtomic replaces a symlink at the destination instead of writing through it", async () => {
  const dir = join(work, "symlink");
  mkdirSync(dir);
  writeFileSync(join(dir, "victim"), "untouched");
  symlinkSync(join(dir, "victim"), join(dir, "status"));
  await writeFileAtomic(join(dir, "status"), "new", { mode: 0o640, exactMode: true });
  assert.equal(readFileSync(join(dir, "victim"), "utf8"), "untouched");
  assert.ok(lstatSync(join(dir, "status")).isFile());
  assert.equal(readFileSync(join(dir, "status"), "utf8"), "new");
  assert.equal(lstatSync(join(dir, "status")).mode & 0o777, 0o640);
  assert.deepEqual(readdirSync(dir).sort(), ["status", "victim"], "no temporary is left");
});

test("a failed atomic write is IO with the caller's wording, and leaves nothing behind", async () => {
  const dir = join(work, "fail");
  mkdirSync(join(dir, "target"), { recursive: true });
  writeFileSync(join(dir, "target/keep"), "");
  await assert.rejects(
    writeFileAtomic(join(dir, "target"), "x", { failure: "cannot write VEX document target" }),
    (e: unknown) => isSutureError(e, "IO") && e.message.startsWith("cannot write VEX document target: "),
  );
  assert.deepEqual(readdirSync(dir), ["target"]);
});

test("placeDirectory replaces an existing directory whole, or keeps one another process finished", async () => {
  const dir = join(work, "dirs");
  const final = join(dir, "lists");
  mkdirSync(final, { recursive: true });
  writeFileSync(join(final, "old"), "");
  const fresh = join(dir, "lists.new");
  mkdirSync(fresh);
  writeFileSync(join(fresh, "new"), "");
  assert.equal(await placeDirectory(fresh, final), true);
  assert.deepEqual(readdirSync(final), ["new"]);
  assert.deepEqual(readdirSync(dir), ["lists"], "the old directory is gone, nothing is left aside");

  const other = join(dir, "lists.other");
  mkdirSync(other);
  writeFileSync(join(other, "other"), "");
  assert.equal(await placeDirectory(other, final, { keepExisting: async () => true }), false);
  assert.deepEqual(readdirSync(final), ["new"], "the existing directory is kept");
});
