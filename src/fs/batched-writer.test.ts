import assert from "node:assert/strict";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { BatchedWriter } from "./batched-writer.ts";

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-batched-writer-"));
});
after(() => rm(work, { recursive: true, force: true }));

test("pieces land in order across batches, and a placeholder is rewritten at its position", async () => {
  const path = join(work, "out");
  const out = new BatchedWriter(await open(path, "wx"), path);
  const pieces = [Buffer.from("HEAD"), ...Array.from({ length: 40 }, (_, i) => Buffer.alloc(64 * 1024, i))];
  for (const p of pieces) await out.add(p);
  await out.rewriteAt(Buffer.from("head"), 0);
  await out.close();
  const expected = Buffer.concat([Buffer.from("head"), ...pieces.slice(1)]);
  assert.ok((await readFile(path)).equals(expected));
});

test("a write that fails is reported by end, and close still closes the file", async () => {
  const path = join(work, "read-only");
  await writeFile(path, "");
  const file = await open(path, "r");
  const out = new BatchedWriter(file, path);
  await out.add(Buffer.alloc(2 * 1024 * 1024, 1)).catch(() => {});
  await assert.rejects(out.end());
  await out.close();
  await assert.rejects(file.stat(), /closed|EBADF/);
});
