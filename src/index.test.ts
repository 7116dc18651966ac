/**
 * The library entry point as a program using suture would see it: imported by the package's name
 * (Node resolves "suture" to src/index.ts through package.json `exports`), driving real OCI
 * layouts and docker-archives on disk. No root, no network, no daemon.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  copyImage,
  type ErrorCode,
  type InspectResult,
  inspectImage,
  isSutureError,
  openImage,
  type ProgressEvent,
  patchImage,
  SutureError,
} from "suture";
import { layoutWriter } from "../test/lab/oci-layout.ts";
import { buildIndex, buildRandomImage, type RandomImage } from "../test/lab/random-image.ts";

let work: string;
let layout: string;
let amd64: RandomImage;
let arm64: RandomImage;
let indexDigest: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-library-"));
  layout = join(work, "src");
  amd64 = await buildRandomImage({ architecture: "amd64" });
  arm64 = await buildRandomImage({ architecture: "arm64" });
  const index = buildIndex([
    { image: amd64, architecture: "amd64" },
    { image: arm64, architecture: "arm64" },
  ]);
  const writer = await layoutWriter(layout);
  for (const bytes of index.blobs.values()) await writer.put(bytes);
  await writer.tag(
    index.manifest.mediaType,
    { digest: index.manifest.digest, size: index.manifest.bytes.length },
    "v1",
  );
  indexDigest = index.manifest.digest;
});
after(() => rm(work, { recursive: true, force: true }));

/**
 * Run `fn` and return what it resolved to, with the text written to stdout and stderr meanwhile:
 * the library promises to print nothing. (The test runner's own messages to its parent pass
 * through stdout too, as serialized binary: only text counts.)
 */
async function silently<T>(fn: () => Promise<T>): Promise<{ value: T; printed: string }> {
  let printed = "";
  const saved = { stdout: process.stdout.write, stderr: process.stderr.write };
  const capture = ((chunk: unknown, ...rest: unknown[]) => {
    if (typeof chunk === "string") printed += chunk;
    else return (saved.stdout as (...a: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = capture;
  process.stderr.write = capture;
  try {
    return { value: await fn(), printed };
  } finally {
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
  }
}

async function rejectsWith(fn: () => Promise<unknown>, code: ErrorCode): Promise<SutureError> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof SutureError, `a SutureError, not ${String(e)}`);
    assert.ok(isSutureError(e, code), `${code}, not ${e.code}: ${e.message}`);
    assert.doesNotMatch(e.message, /\n/, "one line");
    return e;
  }
  assert.fail(`expected ${code}`);
}

function digestsOf(result: InspectResult) {
  return result.images.map((i) => ({
    platform: i.platform,
    digest: i.digest,
    layers: i.layers.map((l) => l.diffID),
  }));
}

test("inspectImage describes every platform of an OCI layout's index, printing nothing", async () => {
  const { value: result, printed } = await silently(() => inspectImage(`oci:${layout}:v1`));
  assert.equal(printed, "");
  assert.equal(result.digest, indexDigest);
  assert.deepEqual(result.platforms, ["linux/amd64", "linux/arm64"]);
  assert.deepEqual(digestsOf(result), [
    { platform: "linux/amd64", digest: amd64.manifest.digest, layers: amd64.diffIds },
    { platform: "linux/arm64", digest: arm64.manifest.digest, layers: arm64.diffIds },
  ]);
  // Platforms as written on the command line; manifests and configs only.
  const one = await inspectImage(`oci:${layout}:v1`, { platforms: ["linux/arm64"], noLayers: true });
  assert.deepEqual(
    one.images.map((i) => i.platform),
    ["linux/arm64"],
  );
});

test("openImage gives one platform's verified image; its blobs read until it is closed", async () => {
  const opened = await openImage(`oci:${layout}:v1`, { platform: "linux/arm64" });
  try {
    assert.equal(opened.digest, arm64.manifest.digest);
    assert.equal(opened.image.config.architecture, "arm64");
    assert.deepEqual(opened.image.config.rootfs.diff_ids, arm64.diffIds);
    const layer = opened.image.parsed.layers[0]!;
    const chunks: Buffer[] = [];
    for await (const chunk of await opened.image.blobs.blob(layer)) chunks.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(chunks), arm64.blobs.get(layer.digest));
  } finally {
    await opened.close();
  }
  // `await using` closes it too.
  {
    await using image = await openImage(`oci:${layout}:v1`, {
      platform: { os: "linux", architecture: "amd64" },
    });
    assert.equal(image.digest, amd64.manifest.digest);
  }
});

test("copyImage copies a whole index between layouts and one platform into a docker-archive, with typed progress", async () => {
  const events: ProgressEvent[] = [];
  const out = join(work, "copy");
  const { value: copied, printed } = await silently(() =>
    copyImage(`oci:${layout}:v1`, `oci:${out}:copied`, { progress: (e) => events.push(e) }),
  );
  assert.equal(printed, "");
  assert.equal(copied.digest, indexDigest, "an OCI layout holds the index byte for byte");
  assert.equal(copied.mediaType, "application/vnd.oci.image.index.v1+json");
  const blobEvents = events.filter((e) => e.type === "blob");
  const layers = [...amd64.layerDigests, ...arm64.layerDigests];
  for (const digest of layers)
    assert.ok(
      blobEvents.some((e) => e.digest === digest),
      `a blob event for ${digest}`,
    );
  assert.deepEqual(
    digestsOf(await inspectImage(`oci:${out}:copied`)),
    digestsOf(await inspectImage(`oci:${layout}:v1`)),
  );

  // A docker-archive holds one image: the platform asked for.
  const archive = join(work, "arm64.tar");
  const single = await copyImage(`oci:${layout}:v1`, `docker-archive:${archive}:app:arm64`, {
    platform: "linux/arm64",
  });
  const inArchive = await inspectImage(`docker-archive:${archive}`);
  assert.match(single.digest, /^sha256:[0-9a-f]{64}$/);
  assert.deepEqual(inArchive.platforms, ["linux/arm64"]);
  assert.deepEqual(
    inArchive.images[0]!.layers.map((l) => l.diffID),
    arm64.diffIds,
  );
});

test("bad input is a SutureError with a stable code, and nothing is written", async () => {
  await rejectsWith(() => openImage(`oci:${join(work, "nowhere")}:v1`), "NOT_FOUND");
  await rejectsWith(() => inspectImage("oci:"), "INVALID_REFERENCE");
  await rejectsWith(() => openImage(`oci:${layout}:v1`, { platform: "linux/" }), "INVALID_REFERENCE");
  const out = join(work, "never");
  const e = await rejectsWith(
    () => copyImage(`oci:${layout}:v1`, `docker-archive:${out}.tar`, { platform: "linux/s390x" }),
    "UNSUPPORTED_PLATFORM",
  );
  assert.match(e.message, /linux\/amd64, linux\/arm64/, "the message lists the platforms there are");
  assert.equal(existsSync(`${out}.tar`), false);
  assert.deepEqual(
    (await readdir(work)).filter((f) => f.startsWith("never")),
    [],
  );
  // patchImage checks what it is given before any work (and before asking for root): a target
  // that would replace the source is refused.
  await rejectsWith(() => patchImage(`oci:${layout}:v1`, { ociDir: layout, tag: "v1" }), "USAGE");
  // An aborted copy rejects with the abort reason and leaves no destination behind.
  const controller = new AbortController();
  controller.abort(new SutureError("CANCELLED", "stopped by the caller"));
  await rejectsWith(
    () => copyImage(`oci:${layout}:v1`, `oci:${join(work, "aborted")}:x`, { signal: controller.signal }),
    "CANCELLED",
  );
  assert.equal(existsSync(join(work, "aborted", "index.json")), false);
});
