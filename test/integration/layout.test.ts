import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { isSutureError } from "../../src/errors/errors.ts";
import { copyImage } from "../../src/image/copy.ts";
import { sha256Digest } from "../../src/image/digest.ts";
import { openImage, readAll } from "../../src/image/image.ts";
import type { ImageSource } from "../../src/image/source.ts";
import { openArchiveSource } from "../../src/transports/archive/docker-archive.ts";
import {
  committedLayoutManifest,
  openLayoutSink,
  openLayoutSource,
} from "../../src/transports/layout/layout.ts";
import { buildIndex, buildRandomImage, memorySource, type RandomImage } from "../lab/random-image.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, describe, test } = await requiring("root", "tool:skopeo", "tool:umoci");

const run = promisify(execFile);

async function writeToLayout(image: RandomImage, dir: string, tag: string | undefined): Promise<void> {
  const sink = await openLayoutSink(dir, tag, {});
  await copyImage(memorySource("memory", image.manifest, image.blobs), sink);
}

async function skopeoInspect(
  ref: string,
): Promise<{ Digest: string; Layers: string[]; Architecture: string }> {
  const { stdout } = await run("skopeo", ["inspect", ref]);
  return JSON.parse(stdout);
}

/** Every file under a directory, relative, sorted: to prove a failed write left nothing behind. */
async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return entries.map(String).sort();
}

async function readEverything(source: ImageSource): Promise<string[]> {
  const image = await openImage(source, { os: "linux", architecture: "amd64" });
  const digests: string[] = [];
  for (const layer of image.parsed.layers) {
    const bytes = await readAll(await source.blob(layer), 1 << 30);
    digests.push(sha256Digest(bytes));
  }
  return digests;
}

describe("oci: layout transport", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "suture-layout-test-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  test("an OCI image written to a layout passes skopeo and umoci and reads back identically", async () => {
    const image = await buildRandomImage({ layers: 3 });
    const dir = join(work, "oci-image");
    await writeToLayout(image, dir, "v1");

    const inspected = await skopeoInspect(`oci:${dir}:v1`);
    assert.equal(inspected.Digest, image.manifest.digest);
    assert.deepEqual(inspected.Layers, image.layerDigests);

    const bundle = join(work, "bundle");
    await run("umoci", ["unpack", "--image", `${dir}:v1`, bundle]);
    for (const [path, content] of image.files.flatMap((f) => [...f])) {
      assert.deepEqual(await readFile(join(bundle, "rootfs", path)), content, `${path} unpacked by umoci`);
    }

    const source = await openLayoutSource(dir, "v1", {});
    assert.equal((await source.rootManifest()).digest, image.manifest.digest);
    assert.deepEqual(await readEverything(source), image.layerDigests);
    await source.close();

    // Nothing but the layout itself is left behind (no temp dirs, no lock).
    assert.deepEqual((await readdir(dir)).sort(), ["blobs", "index.json", "oci-layout"]);
  });

  test("a Docker-media-type image is stored in OCI form that skopeo and umoci read, with the same blobs", async () => {
    const image = await buildRandomImage({ format: "docker" });
    const dir = join(work, "docker-types");
    const sink = await openLayoutSink(dir, "latest", {});
    await copyImage(memorySource("memory", image.manifest, image.blobs), sink);
    const stored = committedLayoutManifest(sink)!;
    assert.equal(stored.mediaType, "application/vnd.oci.image.manifest.v1+json");

    const inspected = await skopeoInspect(`oci:${dir}:latest`);
    assert.equal(inspected.Digest, stored.digest);
    assert.deepEqual(inspected.Layers, image.layerDigests);
    await run("umoci", ["unpack", "--image", `${dir}:latest`, join(work, "bundle-docker")]);

    const source = await openLayoutSource(dir, undefined, {});
    const loaded = await openImage(source, { os: "linux", architecture: "amd64" });
    assert.equal(loaded.manifest.digest, stored.digest);
    assert.equal(loaded.parsed.config.digest, image.configDigest);
    assert.deepEqual(Buffer.from(loaded.rawConfig), image.config);
    assert.deepEqual(await readEverything(source), image.layerDigests);
  });

  test("two tags live side by side; re-tagging replaces only that entry", async () => {
    const a = await buildRandomImage();
    const b = await buildRandomImage({ layers: 1 });
    const c = await buildRandomImage({ compression: "none" });
    const dir = join(work, "two-tags");
    await writeToLayout(a, dir, "a");
    await writeToLayout(b, dir, "b");
    assert.equal((await skopeoInspect(`oci:${dir}:a`)).Digest, a.manifest.digest);
    assert.equal((await skopeoInspect(`oci:${dir}:b`)).Digest, b.manifest.digest);

    await writeToLayout(c, dir, "a");
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
    const tags = Object.fromEntries(
      index.manifests.map((m: { digest: string; annotations: Record<string, string> }) => [
        m.annotations["org.opencontainers.image.ref.name"],
        m.digest,
      ]),
    );
    assert.deepEqual(tags, { a: c.manifest.digest, b: b.manifest.digest });
    assert.equal((await skopeoInspect(`oci:${dir}:a`)).Digest, c.manifest.digest);
    await run("umoci", ["unpack", "--image", `${dir}:b`, join(work, "bundle-b")]);

    // Without a tag, a layout of several images is ambiguous; the error lists the tags.
    await assert.rejects(openLayoutSource(dir, undefined, {}), (e) => {
      assert.ok(isSutureError(e, "INVALID_REFERENCE"));
      assert.match(e.message, /b, a|a, b/);
      return true;
    });
  });

  test("a missing tag is NOT_FOUND and names the tags there are", async () => {
    const dir = join(work, "missing-tag");
    await writeToLayout(await buildRandomImage(), dir, "present");
    await assert.rejects(openLayoutSource(dir, "absent", {}), (e) => {
      assert.ok(isSutureError(e, "NOT_FOUND"));
      assert.match(e.message, /"absent"/);
      assert.match(e.message, /present/);
      return true;
    });
    await assert.rejects(openLayoutSource(join(work, "no-such-dir"), "x", {}), (e) =>
      isSutureError(e, "NOT_FOUND"),
    );
  });

  test("a corrupted blob fails with DIGEST_MISMATCH and nothing is written at the destination", async () => {
    const image = await buildRandomImage({ layers: 2, fileBytes: 64 * 1024 });
    const good = join(work, "corrupt-src");
    await writeToLayout(image, good, "v1");
    const blobPath = join(good, "blobs", "sha256", image.layerDigests[1]!.slice(7));
    const bytes = await readFile(blobPath);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await writeFile(blobPath, bytes);

    // Into a new directory: it must not exist afterwards.
    const fresh = join(work, "corrupt-dst-new");
    await assert.rejects(
      copyImage(await openLayoutSource(good, "v1", {}), await openLayoutSink(fresh, "v1", {})),
      (e) => isSutureError(e, "DIGEST_MISMATCH"),
    );
    await assert.rejects(stat(fresh), { code: "ENOENT" });

    // Into an existing layout: index.json and the set of files stay exactly as they were.
    const existing = join(work, "corrupt-dst-existing");
    await writeToLayout(await buildRandomImage(), existing, "keep");
    const indexBefore = await readFile(join(existing, "index.json"));
    const filesBefore = await listTree(existing);
    await assert.rejects(
      copyImage(await openLayoutSource(good, "v1", {}), await openLayoutSink(existing, "v1", {})),
      (e) => isSutureError(e, "DIGEST_MISMATCH"),
    );
    assert.deepEqual(await readFile(join(existing, "index.json")), indexBefore);
    assert.deepEqual(await listTree(existing), filesBefore);
    assert.equal((await skopeoInspect(`oci:${existing}:keep`)).Layers.length, 2);

    // The source layout was only read.
    assert.deepEqual(await readFile(blobPath), bytes);
  });

  test("a multi-platform index round-trips with its nested manifests", async () => {
    const amd = await buildRandomImage({ architecture: "amd64" });
    const arm = await buildRandomImage({ architecture: "arm64" });
    const index = buildIndex([
      { image: amd, architecture: "amd64" },
      { image: arm, architecture: "arm64" },
    ]);
    const dir = join(work, "multi");
    const sink = await openLayoutSink(dir, "multi", {});
    await copyImage(memorySource("memory", index.manifest, index.blobs), sink);

    const source = await openLayoutSource(dir, "multi", {});
    assert.equal((await source.rootManifest()).digest, index.manifest.digest);
    const armImage = await openImage(source, { os: "linux", architecture: "arm64" });
    assert.equal(armImage.manifest.digest, arm.manifest.digest);
    const raw = JSON.parse((await run("skopeo", ["inspect", "--raw", `oci:${dir}:multi`])).stdout);
    assert.equal(raw.manifests.length, 2);

    // skopeo copies the whole index into a layout of its own, which we read back.
    const theirs = join(work, "skopeo-written");
    await run("skopeo", ["copy", "--all", `oci:${dir}:multi`, `oci:${theirs}:copied`]);
    const back = await openLayoutSource(theirs, "copied", {});
    const amdBack = await openImage(back, { os: "linux", architecture: "amd64" });
    assert.equal(amdBack.manifest.digest, amd.manifest.digest);
  });

  test("a Docker manifest list is stored as an OCI index over OCI manifests that skopeo copies whole", async () => {
    const amd = await buildRandomImage({ format: "docker", architecture: "amd64" });
    const arm = await buildRandomImage({ format: "docker", architecture: "arm64" });
    const list = buildIndex(
      [
        { image: amd, architecture: "amd64" },
        { image: arm, architecture: "arm64" },
      ],
      "docker",
    );
    const dir = join(work, "docker-list");
    const sink = await openLayoutSink(dir, "list", {});
    await copyImage(memorySource("memory", list.manifest, list.blobs), sink);
    const stored = committedLayoutManifest(sink)!;
    assert.equal(stored.mediaType, "application/vnd.oci.image.index.v1+json");
    const raw = JSON.parse((await run("skopeo", ["inspect", "--raw", `oci:${dir}:list`])).stdout);
    assert.equal(raw.mediaType, "application/vnd.oci.image.index.v1+json");
    assert.deepEqual(
      raw.manifests.map((m: { mediaType: string }) => m.mediaType),
      ["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.manifest.v1+json"],
    );
    await run("skopeo", ["copy", "--all", `oci:${dir}:list`, `oci:${join(work, "docker-list-copy")}:x`]);
    const source = await openLayoutSource(dir, "list", {});
    const armImage = await openImage(source, { os: "linux", architecture: "arm64" });
    assert.equal(armImage.parsed.config.digest, arm.configDigest);
    assert.deepEqual(await readEverything(source), amd.layerDigests);
  });

  test("writers of different tags into one layout at the same time all land", async () => {
    const dir = join(work, "concurrent");
    const images = await Promise.all([1, 2, 3, 4].map(() => buildRandomImage({ layers: 1 })));
    await Promise.all(images.map((image, i) => writeToLayout(image, dir, `t${i}`)));
    for (const [i, image] of images.entries()) {
      assert.equal((await skopeoInspect(`oci:${dir}:t${i}`)).Digest, image.manifest.digest);
    }
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
    assert.equal(index.manifests.length, 4);
  });

  test("skopeo copies our layout into a docker-archive that our archive source reads", async () => {
    const image = await buildRandomImage();
    const dir = join(work, "to-archive");
    await writeToLayout(image, dir, "v1");
    const archive = join(work, "skopeo.tar");
    await run("skopeo", ["copy", `oci:${dir}:v1`, `docker-archive:${archive}:example.com/test:v1`]);
    const source = await openArchiveSource(archive, undefined, {});
    const loaded = await openImage(source, { os: "linux", architecture: "amd64" });
    assert.equal(loaded.parsed.config.digest, image.configDigest);
    assert.deepEqual(loaded.config.rootfs.diff_ids, image.diffIds);
    await source.close();
  });

  test("a layout copied into another layout keeps every digest", async () => {
    const image = await buildRandomImage();
    const a = join(work, "copy-a");
    const b = join(work, "copy-b");
    await writeToLayout(image, a, "x");
    await copyImage(await openLayoutSource(a, "x", {}), await openLayoutSink(b, "y", {}));
    const source = await openLayoutSource(b, "y", {});
    assert.equal((await source.rootManifest()).digest, image.manifest.digest);
    assert.deepEqual(await readEverything(source), image.layerDigests);
    // A non-layout directory is refused rather than filled with blobs.
    const notLayout = join(work, "not-layout");
    await cp(a, notLayout, { recursive: true });
    await rm(join(notLayout, "oci-layout"));
    await assert.rejects(openLayoutSink(notLayout, "z", {}), (e) => isSutureError(e, "IO"));
  });
});
