/**
 * buildPatchLayer's upload tap (issue 15): the upload receives exactly the bytes written to the
 * file, in order, and is finished with their digest; an upload that gives up does not fail the
 * build; a build that fails cancels its upload and never finishes it.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type TestContext, test } from "node:test";
import type { StreamingBlobUpload } from "../image/source.ts";
import { buildPatchLayer } from "./patch-layer.ts";

async function tree(t: TestContext): Promise<{ dir: string; lower: string; upper: string }> {
  const dir = await fs.mkdtemp(join(tmpdir(), "suture-layer-upload-"));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const lower = join(dir, "lower");
  const upper = join(dir, "upper");
  await fs.mkdir(lower, { recursive: true });
  for (let i = 0; i < 40; i++) {
    const path = join(upper, `usr/lib/p${i}.so`);
    await fs.mkdir(dirname(path), { recursive: true });
    // Incompressible enough that gzip emits many pieces.
    await fs.writeFile(path, createHash("sha512").update(String(i)).digest().toString("hex").repeat(2000));
  }
  return { dir, lower, upper };
}

class RecordingUpload implements StreamingBlobUpload {
  readonly chunks: Buffer[] = [];
  finished: { digest: string; size: number } | undefined;
  cancelled = 0;
  readonly accepts: boolean;
  constructor(accepts: boolean) {
    this.accepts = accepts;
  }
  async write(chunk: Buffer): Promise<void> {
    this.chunks.push(Buffer.from(chunk));
  }
  async finish(blob: { digest: string; size: number }): Promise<boolean> {
    this.finished = blob;
    return this.accepts;
  }
  async cancel(): Promise<void> {
    this.cancelled++;
  }
}

test("the upload gets the file's bytes and is finished with their digest", async (t) => {
  const { dir, lower, upper } = await tree(t);
  const upload = new RecordingUpload(true);
  const out = join(dir, "layer.tar.gz");
  const layer = await buildPatchLayer({
    upperDir: upper,
    lowerDirs: [lower],
    outFile: out,
    compression: "gzip",
    upload: () => upload,
  });
  const file = await fs.readFile(out);
  assert.ok(upload.chunks.length > 1, "several pieces, sent as they were produced");
  assert.ok(Buffer.concat(upload.chunks).equals(file));
  assert.deepEqual(upload.finished, layer.descriptorFields);
  assert.equal(layer.descriptorFields.digest, `sha256:${createHash("sha256").update(file).digest("hex")}`);
  assert.equal(layer.uploaded, true);
  assert.equal(upload.cancelled, 0);

  // The same tree without an upload gives the same blob.
  const plain = await buildPatchLayer({
    upperDir: upper,
    lowerDirs: [lower],
    outFile: join(dir, "plain.tar.gz"),
    compression: "gzip",
  });
  assert.deepEqual(plain.descriptorFields, layer.descriptorFields);
  assert.equal(plain.uploaded, undefined);
});

test("an upload that gave up leaves the build as it was: the file is written, uploaded is false", async (t) => {
  const { dir, lower, upper } = await tree(t);
  const out = join(dir, "layer.tar.gz");
  const layer = await buildPatchLayer({
    upperDir: upper,
    lowerDirs: [lower],
    outFile: out,
    compression: "gzip",
    upload: () => new RecordingUpload(false),
  });
  assert.equal(layer.uploaded, false);
  assert.equal((await fs.stat(out)).size, layer.descriptorFields.size);
});

test("a build that fails cancels its upload and never finishes it", async (t) => {
  const { dir, lower, upper } = await tree(t);
  await fs.writeFile(join(upper, "usr/lib/.wh.evil"), "x");
  const upload = new RecordingUpload(true);
  await assert.rejects(
    buildPatchLayer({
      upperDir: upper,
      lowerDirs: [lower],
      outFile: join(dir, "layer.tar.gz"),
      compression: "gzip",
      upload: () => upload,
    }),
    /named like an OCI whiteout/,
  );
  assert.equal(upload.cancelled, 1);
  assert.equal(upload.finished, undefined);
});
