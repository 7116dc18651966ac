import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { isSutureError } from "../../src/errors/errors.ts";
import { copyImage } from "../../src/image/copy.ts";
import { sha256Digest } from "../../src/image/digest.ts";
import { openImage, readAll } from "../../src/image/image.ts";
import { parseReference } from "../../src/ref/reference.ts";
import { openArchiveSink, openArchiveSource } from "../../src/transports/archive/docker-archive.ts";
import { type LabDockerd, startDockerd } from "../lab/dockerd.ts";
import { buildRandomImage, memorySource, type RandomImage } from "../lab/random-image.ts";
import { requiring } from "../lab/requirements.ts";
import { tarOf } from "../lab/tar.ts";

const { after, before, describe, test } = await requiring("root", "dockerd", "tool:skopeo");

const run = promisify(execFile);
const amd64 = { os: "linux", architecture: "amd64" };

async function writeArchive(image: RandomImage, file: string, ref?: string): Promise<void> {
  const sink = await openArchiveSink(file, ref ? parseReference(ref) : undefined, {});
  await copyImage(memorySource("memory", image.manifest, image.blobs), sink);
}

/** Pack files (name → content) into a tar, in order, exactly as named. */
async function packTar(file: string, entries: [string, Buffer | { symlink: string }][]): Promise<void> {
  await writeFile(
    file,
    await tarOf(
      entries.map(([name, content]) =>
        Buffer.isBuffer(content) ? { name, content } : { name, type: "symlink", linkname: content.symlink },
      ),
    ),
  );
}

/**
 * Rewrite a legacy `docker save` archive the way Docker 25+ writes it: every blob under
 * blobs/sha256, an OCI index.json (ref.name and io.containerd.image.name annotations) and manifest,
 * manifest.json pointing into blobs/. `dropOciLayers` reproduces Docker 25.0.0, whose OCI manifest
 * listed no layers.
 */
async function toDocker25Archive(legacy: string, out: string, dropOciLayers = false): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "suture-d25-"));
  await run("tar", ["-xf", legacy, "-C", dir]);
  const items = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as {
    Config: string;
    RepoTags: string[];
    Layers: string[];
  }[];
  const blobs = new Map<string, Buffer>();
  const indexEntries: unknown[] = [];
  const manifestJson: unknown[] = [];
  for (const item of items) {
    const config = await readFile(join(dir, item.Config));
    const configDigest = sha256Digest(config);
    blobs.set(configDigest, config);
    const layers = [];
    for (const l of item.Layers) {
      const bytes = await readFile(join(dir, l));
      const digest = sha256Digest(bytes);
      blobs.set(digest, bytes);
      layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest, size: bytes.length });
    }
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: configDigest,
          size: config.length,
        },
        layers: dropOciLayers ? [] : layers,
      }),
    );
    const manifestDigest = sha256Digest(manifest);
    blobs.set(manifestDigest, manifest);
    for (const tag of item.RepoTags) {
      const ref = parseReference(tag);
      indexEntries.push({
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: manifestDigest,
        size: manifest.length,
        annotations: {
          "io.containerd.image.name": `${ref.registry}/${ref.repository}:${ref.tag}`,
          "org.opencontainers.image.ref.name": ref.tag,
        },
      });
    }
    manifestJson.push({
      Config: `blobs/sha256/${configDigest.slice(7)}`,
      RepoTags: item.RepoTags,
      Layers: layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
    });
  }
  const entries: [string, Buffer][] = [...blobs].map(([d, b]) => [`blobs/sha256/${d.slice(7)}`, b]);
  entries.push(["index.json", Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: indexEntries }))]);
  entries.push(["manifest.json", Buffer.from(JSON.stringify(manifestJson))]);
  entries.push(["oci-layout", Buffer.from(`{"imageLayoutVersion":"1.0.0"}`)]);
  await packTar(out, entries);
  await rm(dir, { recursive: true, force: true });
  return out;
}

async function tarMembers(file: string): Promise<string[]> {
  return (await run("tar", ["-tf", file])).stdout.split("\n").filter(Boolean);
}

describe("docker-archive transport", () => {
  let work: string;
  let dockerd: LabDockerd;
  const docker = (...args: string[]) => run("docker", args, { env: dockerd.env, maxBuffer: 64 << 20 });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "suture-archive-test-"));
    dockerd = await startDockerd();
  });
  after(async () => {
    await dockerd?.stop();
    await rm(work, { recursive: true, force: true });
  });

  for (const format of ["oci", "docker"] as const) {
    test(`a ${format}-typed image written as an archive loads into dockerd and comes back identical`, async () => {
      const image = await buildRandomImage({ format, layers: 3 });
      const file = join(work, `ours-${format}.tar`);
      const ref = `example.com/suture/${format}:v1`;
      await writeArchive(image, file, ref);

      // skopeo reads it; its layers are the uncompressed diff_ids (docker load wants tars).
      const inspected = JSON.parse((await run("skopeo", ["inspect", `docker-archive:${file}`])).stdout);
      assert.deepEqual(inspected.Layers, image.diffIds);
      const members = await tarMembers(file);
      assert.ok(members.includes("manifest.json"));
      assert.ok(members.includes(`${image.configDigest.slice(7)}.json`));
      for (const diffId of image.diffIds) assert.ok(members.includes(`${diffId.slice(7)}/layer.tar`));

      const loaded = await docker("load", "-i", file);
      assert.match(loaded.stdout, new RegExp(`Loaded image: ${ref}`));
      const saved = join(work, `saved-${format}.tar`);
      await docker("save", "-o", saved, ref);

      const source = await openArchiveSource(saved, parseReference(ref), {});
      const back = await openImage(source, amd64);
      assert.equal(back.parsed.config.digest, image.configDigest);
      assert.deepEqual(Buffer.from(back.rawConfig), image.config);
      assert.deepEqual(back.config.rootfs.diff_ids, image.diffIds);
      assert.deepEqual(
        back.parsed.layers.map((l) => l.digest),
        image.diffIds,
        "an uncompressed layer's digest is its diff_id",
      );
      for (const layer of back.parsed.layers) {
        assert.equal(layer.mediaType, "application/vnd.docker.image.rootfs.diff.tar");
        assert.equal(sha256Digest(await readAll(await source.blob(layer), 1 << 30)), layer.digest);
      }
      await source.close();
    });
  }

  test("what this dockerd's `docker save` writes is read, and a Docker-25-style archive too", async () => {
    const image = await buildRandomImage({ layers: 2 });
    const ref = "localhost:5000/suture/d25:v2";
    const file = join(work, "for-d25.tar");
    await writeArchive(image, file, ref);
    await docker("load", "-i", file);
    const saved = join(work, "d25-legacy.tar");
    await docker("save", "-o", saved, ref);
    const members = await tarMembers(saved);
    // Docker before 25 writes the legacy layout only; 25+ adds an OCI layout (index.json, blobs/).
    const major = Number(dockerd.version.split(".")[0]);
    assert.equal(members.includes("index.json"), major >= 25, `docker ${dockerd.version} save layout`);

    const modern = await toDocker25Archive(saved, join(work, "d25.tar"));
    const source = await openArchiveSource(modern, parseReference(ref), {});
    const root = await source.rootManifest();
    // The archive's own OCI manifest is used, so the image keeps that identity.
    const index = JSON.parse((await run("tar", ["-xOf", modern, "index.json"], { encoding: "utf8" })).stdout);
    assert.equal(root.digest, index.manifests[0].digest);
    const back = await openImage(source, amd64);
    assert.equal(back.parsed.config.digest, image.configDigest);
    assert.deepEqual(back.config.rootfs.diff_ids, image.diffIds);
    for (const layer of back.parsed.layers) await readAll(await source.blob(layer), 1 << 30);
    await source.close();

    // Docker 25.0.0 wrote OCI manifests without layers: manifest.json is used instead.
    const buggy = await toDocker25Archive(saved, join(work, "d25-buggy.tar"), true);
    const fromBuggy = await openArchiveSource(buggy, undefined, {});
    const buggyImage = await openImage(fromBuggy, amd64);
    assert.equal(buggyImage.manifest.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
    assert.deepEqual(buggyImage.config.rootfs.diff_ids, image.diffIds);
    assert.deepEqual(
      buggyImage.parsed.layers.map((l) => l.digest),
      image.diffIds,
    );

    // The docker CLI loads our reading of it back: copy it to a fresh archive and load that.
    const again = join(work, "d25-again.tar");
    await copyImage(fromBuggy, await openArchiveSink(again, parseReference("suture/d25-again:1"), {}));
    assert.match((await docker("load", "-i", again)).stdout, /Loaded image: suture\/d25-again:1/);
  });

  test("a multi-image archive is selected by reference", async () => {
    const a = await buildRandomImage();
    const b = await buildRandomImage({ layers: 1 });
    await writeArchive(a, join(work, "multi-a.tar"), "suture/multi-a:1");
    await writeArchive(b, join(work, "multi-b.tar"), "suture/multi-b:2");
    await docker("load", "-i", join(work, "multi-a.tar"));
    await docker("load", "-i", join(work, "multi-b.tar"));
    const multi = join(work, "multi.tar");
    await docker("save", "-o", multi, "suture/multi-a:1", "suture/multi-b:2");

    const pick = async (ref: string) => {
      const source = await openArchiveSource(multi, parseReference(ref), {});
      const image = await openImage(source, amd64);
      await source.close();
      return image.parsed.config.digest;
    };
    assert.equal(await pick("suture/multi-a:1"), a.configDigest);
    assert.equal(await pick("docker.io/suture/multi-b:2"), b.configDigest);
    assert.equal(await pick(`suture/multi-b@${b.configDigest}`), b.configDigest, "by image ID");
    await assert.rejects(openArchiveSource(multi, undefined, {}), (e) => {
      assert.ok(isSutureError(e, "INVALID_REFERENCE"));
      assert.match(e.message, /suture\/multi-a:1/);
      assert.match(e.message, /suture\/multi-b:2/);
      return true;
    });
    await assert.rejects(openArchiveSource(multi, parseReference("suture/multi-c:3"), {}), (e) => {
      assert.ok(isSutureError(e, "NOT_FOUND"));
      assert.match(e.message, /suture\/multi-a:1/);
      return true;
    });
  });

  test("a gzip-compressed archive and gzip layers inside an archive are read", async () => {
    const image = await buildRandomImage();
    const plain = join(work, "to-gzip.tar");
    await writeArchive(image, plain, "suture/gz:1");
    const gz = join(work, "archive.tar.gz");
    await pipeline(createReadStream(plain), zlib.createGzip(), createWriteStream(gz));
    const source = await openArchiveSource(gz, undefined, {});
    assert.equal((await openImage(source, amd64)).parsed.config.digest, image.configDigest);
    await source.close();

    // An archive whose layer files are gzip (as some tools write) gets gzip layer descriptors whose
    // digests are those of the stored bytes.
    const gzipLayers: [string, Buffer][] = [];
    const names: string[] = [];
    for (const [i, digest] of image.layerDigests.entries()) {
      names.push(`layer${i}.tar.gz`);
      gzipLayers.push([`layer${i}.tar.gz`, image.blobs.get(digest)!]);
    }
    const custom = join(work, "gzip-layers.tar");
    await packTar(custom, [
      [
        "manifest.json",
        Buffer.from(JSON.stringify([{ Config: "config.json", RepoTags: ["x:1"], Layers: names }])),
      ],
      ["config.json", image.config],
      ...gzipLayers,
    ]);
    const fromCustom = await openArchiveSource(custom, undefined, {});
    const img = await openImage(fromCustom, amd64);
    assert.deepEqual(
      img.parsed.layers.map((l) => [l.mediaType, l.digest]),
      image.layerDigests.map((d) => ["application/vnd.docker.image.rootfs.diff.tar.gzip", d]),
    );
    for (const layer of img.parsed.layers) await readAll(await fromCustom.blob(layer), 1 << 30);
    // And it converts back into an archive docker loads (layers decompressed on the way).
    const out = join(work, "gzip-layers-out.tar");
    await copyImage(fromCustom, await openArchiveSink(out, parseReference("suture/gzip-layers:1"), {}));
    assert.match((await docker("load", "-i", out)).stdout, /Loaded image: suture\/gzip-layers:1/);
  });

  test("archives with ../ or absolute entries, or links out of the archive, are rejected", async () => {
    const image = await buildRandomImage({ layers: 1 });
    const manifest = Buffer.from(
      JSON.stringify([{ Config: "config.json", RepoTags: ["x:1"], Layers: ["l/layer.tar"] }]),
    );
    const layer = image.blobs.get(image.layerDigests[0]!)!;
    const cases: [string, [string, Buffer | { symlink: string }][]][] = [
      [
        "dotdot",
        [
          ["manifest.json", manifest],
          ["config.json", image.config],
          ["../evil", Buffer.from("x")],
        ],
      ],
      [
        "nested-dotdot",
        [
          ["manifest.json", manifest],
          ["a/../../evil", Buffer.from("x")],
        ],
      ],
      [
        "absolute",
        [
          ["manifest.json", manifest],
          ["/etc/evil", Buffer.from("x")],
        ],
      ],
      [
        "symlink-out",
        [
          ["manifest.json", manifest],
          ["config.json", image.config],
          ["l/layer.tar", { symlink: "../../../etc/passwd" }],
        ],
      ],
    ];
    for (const [label, entries] of cases) {
      const file = join(work, `evil-${label}.tar`);
      await packTar(file, entries);
      await assert.rejects(
        async () => {
          const source = await openArchiveSource(file, undefined, {});
          await openImage(source, amd64);
        },
        (e) => isSutureError(e, "INVALID_ARCHIVE"),
        label,
      );
    }
    // The same archive without the hostile entry is fine (the check is about the entry).
    const okFile = join(work, "not-evil.tar");
    await packTar(okFile, [
      ["manifest.json", manifest],
      ["config.json", image.config],
      ["l/layer.tar", zlib.gunzipSync(layer)],
    ]);
    const ok = await openArchiveSource(okFile, undefined, {});
    assert.deepEqual((await openImage(ok, amd64)).config.rootfs.diff_ids, image.diffIds);
  });

  test("a failing write leaves the destination archive untouched and no temp files", async () => {
    const image = await buildRandomImage({ fileBytes: 32 * 1024 });
    const out = join(work, "atomic");
    await mkdir(out);
    const file = join(out, "image.tar");
    await writeFile(file, "previous content");
    const corrupted = new Map(image.blobs);
    const layer = Buffer.from(corrupted.get(image.layerDigests[1]!)!);
    layer[layer.length >> 1]! ^= 0x01;
    corrupted.set(image.layerDigests[1]!, layer);
    await assert.rejects(
      copyImage(
        memorySource("memory", image.manifest, corrupted),
        await openArchiveSink(file, undefined, {}),
      ),
      (e) => isSutureError(e, "DIGEST_MISMATCH"),
    );
    assert.equal(await readFile(file, "utf8"), "previous content");
    assert.deepEqual(await readdir(out), ["image.tar"]);

    // A good write then replaces it in one step.
    await writeArchive(image, file, "suture/atomic:1");
    assert.deepEqual((await readdir(out)).sort(), ["image.tar"]);
    assert.match((await docker("load", "-i", file)).stdout, /suture\/atomic:1/);
  });
});
