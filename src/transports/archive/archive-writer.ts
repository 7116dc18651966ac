import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, readFile, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, type Transform } from "node:stream";
import { decompressor, sniffCompression } from "../../archive/compression.ts";
import { type TarWriteEntry, writeTar } from "../../archive/tar/write.ts";
import { asSutureError, SutureError } from "../../errors/errors.ts";
import { placeFile, streamToFile, tempPathBeside } from "../../fs/atomic.ts";
import { DigestingStream, digestHex, sinkVerifiers, verifyBytes } from "../../image/digest.ts";
import type { ImageSink, WriteBlobOptions } from "../../image/source.ts";
import { WriteTracker } from "../../image/write-tracker.ts";
import {
  ImageConfigSchema,
  type ImageManifest,
  ImageManifestSchema,
  parseJson,
  type RawManifest,
} from "../../oci/manifest.ts";
import { isImageManifestMediaType, layerCompression } from "../../oci/media-types.ts";
import type { ProgressSink } from "../../progress/events.ts";
import { familiarName, type ImageReference } from "../../ref/reference.ts";
import { repoTagFor } from "./archive-manifest.ts";

interface SpooledLayer {
  /** Uncompressed layer tar. */
  path: string;
  size: number;
  diffId: string;
}

/** One layer member of the archive to write. */
interface PlannedLayer extends SpooledLayer {
  member: string;
}

/** What `commit` will write: every member's source, checked against the config beforehand. */
export interface ArchivePlan {
  manifestJson: Buffer;
  repositories?: Buffer;
  configMember: string;
  config: Buffer;
  layers: PlannedLayer[];
}

/**
 * Blobs for a docker-archive, spooled to a private scratch directory: each layer is verified
 * against its descriptor while downloaded, then kept uncompressed (docker load wants tars, and an
 * uncompressed layer's digest is its diff_id); configs are kept as they are. Safe for
 * concurrent `writeBlob` calls of different or equal digests.
 */
export class ArchiveSpool {
  readonly #name: string;
  readonly #base: string;
  #dir?: Promise<string>;
  readonly #raw = new Map<string, string>();
  readonly #layers = new Map<string, SpooledLayer>();
  readonly #inflight = new Map<string, Promise<void>>();
  readonly #writes = new WriteTracker();

  constructor(name: string, tmpDir: string | undefined) {
    this.#name = name;
    this.#base = tmpDir ?? tmpdir();
  }

  #scratch(): Promise<string> {
    this.#dir ??= mkdtemp(join(this.#base, "suture-spool-")).catch((e) => {
      this.#dir = undefined;
      throw asSutureError(e, "IO", `cannot create scratch space in ${this.#base}`);
    });
    return this.#dir;
  }

  has(digest: string): boolean {
    return this.#raw.has(digest) || this.#layers.has(digest);
  }

  async write(
    descriptor: RawDescriptor,
    openBlob: () => Promise<Readable>,
    progress?: ProgressSink,
  ): Promise<void> {
    if (this.has(descriptor.digest)) return;
    let pending = this.#inflight.get(descriptor.digest);
    if (!pending) {
      pending = this.#download(descriptor, openBlob, progress).finally(() =>
        this.#inflight.delete(descriptor.digest),
      );
      this.#inflight.set(descriptor.digest, pending);
    }
    await pending;
  }

  async #download(d: RawDescriptor, openBlob: () => Promise<Readable>, progress?: ProgressSink) {
    await this.#writes.run(`${this.#name} blob ${d.digest}`, async (track) => {
      const dir = await this.#scratch();
      const raw = join(dir, `${digestHex(d.digest)}.${randomBytes(4).toString("hex")}.blob`);
      const input = track(await openBlob());
      await streamToFile(input, sinkVerifiers(input, d, `${this.#name} blob ${d.digest}`), raw);
      if (layerCompression(d.mediaType) !== undefined) await this.#toLayer(d.digest, raw, track);
      else this.#raw.set(d.digest, raw);
    });
    progress?.({ type: "blob", action: "upload", digest: d.digest, bytes: d.size, total: d.size });
  }

  /**
   * Turn a verified blob into an uncompressed layer tar, learning its diff_id. `track` registers
   * the read with the write tracker, so an abort breaks off a long decompression too.
   */
  async #toLayer(
    digest: string,
    raw: string,
    track: (s: Readable) => Readable = (s) => s,
  ): Promise<SpooledLayer> {
    const existing = this.#layers.get(digest);
    if (existing) return existing;
    const head = Buffer.alloc(8);
    const handle = await open(raw, "r");
    try {
      await handle.read(head, 0, head.length, 0);
    } finally {
      await handle.close();
    }
    const kind = sniffCompression(head);
    let layer: SpooledLayer;
    if (kind === "none") {
      const path = `${raw}.tar`;
      await rename(raw, path);
      layer = { path, size: (await stat(path)).size, diffId: digest };
    } else {
      let decoder: Transform;
      if (kind === "gzip" || kind === "zstd") decoder = decompressor(kind);
      else {
        await rm(raw, { force: true });
        throw new SutureError(
          "INVALID_ARCHIVE",
          `${this.#name}: layer ${digest} is ${kind}-compressed; only gzip and zstd layers can be converted`,
        );
      }
      const path = `${raw}.tar`;
      const digester = new DigestingStream();
      try {
        await streamToFile(track(createReadStream(raw)), [decoder, digester], path);
      } catch (e) {
        throw asSutureError(e, "INVALID_ARCHIVE", `${this.#name}: layer ${digest} does not decompress`);
      } finally {
        await rm(raw, { force: true });
      }
      layer = { path, size: digester.size, diffId: digester.digest };
    }
    this.#layers.set(digest, layer);
    this.#raw.delete(digest);
    return layer;
  }

  /**
   * Check the image against what was spooled and lay out the archive: every blob present, each
   * layer decompressing to the diff_id its config names. `ref` gives RepoTags (none when absent).
   */
  async plan(root: RawManifest, ref: ImageReference | undefined): Promise<ArchivePlan> {
    if (!isImageManifestMediaType(root.mediaType)) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${this.#name} holds a single image, not a ${root.mediaType}: select one platform first`,
      );
    }
    const manifest: ImageManifest = parseJson(ImageManifestSchema, root.bytes, `${this.#name} manifest`);
    const configPath = this.#raw.get(manifest.config.digest);
    if (!configPath) {
      throw new SutureError("INTERNAL", `${this.#name}: config ${manifest.config.digest} was not written`);
    }
    const config = await readFile(configPath);
    verifyBytes(config, manifest.config, `${this.#name} config`);
    const diffIds = parseJson(ImageConfigSchema, config, `${this.#name} config`).rootfs.diff_ids;
    if (diffIds.length !== manifest.layers.length) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${this.#name}: the manifest has ${manifest.layers.length} layers but the config lists ${diffIds.length} diff_ids`,
      );
    }
    const layers: PlannedLayer[] = [];
    for (const [i, d] of manifest.layers.entries()) {
      let layer = this.#layers.get(d.digest);
      const raw = this.#raw.get(d.digest);
      if (!layer && raw) layer = await this.#toLayer(d.digest, raw);
      if (!layer) throw new SutureError("INTERNAL", `${this.#name}: layer ${d.digest} was not written`);
      if (layer.diffId !== diffIds[i]) {
        throw new SutureError(
          "INVALID_MANIFEST",
          `${this.#name}: layer ${i + 1} (${d.digest}) decompresses to ${layer.diffId} but the config says ${diffIds[i]}: the image is inconsistent`,
        );
      }
      layers.push({ ...layer, member: `${digestHex(layer.diffId)}/layer.tar` });
    }
    const configMember = `${digestHex(manifest.config.digest)}.json`;
    const repoTag = ref ? repoTagFor(ref) : undefined;
    const manifestJson = Buffer.from(
      JSON.stringify([
        { Config: configMember, RepoTags: repoTag ? [repoTag] : null, Layers: layers.map((l) => l.member) },
      ]),
    );
    const top = layers.at(-1);
    const repositories =
      ref?.tag && top
        ? Buffer.from(JSON.stringify({ [familiarName(ref)]: { [ref.tag]: digestHex(top.diffId) } }))
        : undefined;
    return { manifestJson, repositories, configMember, config, layers };
  }

  /** Stop writes in flight, then delete the scratch directory. The spool is unusable afterwards. */
  async cleanup(): Promise<void> {
    await this.#writes.close();
    const dir = this.#dir;
    this.#dir = undefined;
    this.#raw.clear();
    this.#layers.clear();
    if (dir) await rm(await dir.catch(() => ""), { recursive: true, force: true }).catch(() => {});
  }
}

type RawDescriptor = Parameters<ImageSink["writeBlob"]>[0];

/**
 * The archive as a tar stream (`docker save` layout): manifest.json, the config as `<hex>.json`,
 * each distinct layer as `<diff_id hex>/layer.tar`, and `repositories` when tagged. Timestamps
 * are zero so the same image always gives the same bytes.
 */
export function archiveStream(plan: ArchivePlan): Readable {
  const meta = { uid: 0, gid: 0, mtime: 0 };
  const buffer = (path: string, data: Buffer): TarWriteEntry => ({
    path,
    type: "file",
    mode: 0o644,
    ...meta,
    size: data.length,
    body: () => [data],
  });
  function* members(): Generator<TarWriteEntry> {
    yield buffer("manifest.json", plan.manifestJson);
    yield buffer(plan.configMember, plan.config);
    const done = new Set<string>();
    for (const layer of plan.layers) {
      if (done.has(layer.member)) continue;
      done.add(layer.member);
      const dir = layer.member.slice(0, layer.member.indexOf("/"));
      yield { path: dir, type: "directory", mode: 0o755, ...meta };
      yield {
        path: layer.member,
        type: "file",
        mode: 0o644,
        ...meta,
        size: layer.size,
        body: () => createReadStream(layer.path),
      };
    }
    if (plan.repositories) yield buffer("repositories", plan.repositories);
  }
  async function* bytes(): AsyncGenerator<Buffer> {
    try {
      yield* writeTar(members());
    } catch (e) {
      throw asSutureError(e, "IO", "cannot assemble the docker archive");
    }
  }
  return Readable.from(bytes(), { objectMode: false });
}

/**
 * Sink for a docker-archive file. Contract: blobs are verified and spooled to scratch space
 * (TransportOptions.tmpDir or the OS temp dir); `commit` checks the image (each layer's
 * uncompressed digest equals its diff_id) and writes the archive to a temporary file beside the
 * destination, renamed over it only when complete. `abort` deletes the spool; the destination is
 * untouched until the rename. An existing file at the destination is replaced, like `docker save -o`.
 */
export class ArchiveFileSink implements ImageSink {
  readonly name: string;
  readonly acceptsIndex = false;
  readonly #file: string;
  readonly #ref: ImageReference | undefined;
  readonly #spool: ArchiveSpool;
  readonly #progress?: ProgressSink;
  readonly #signal?: AbortSignal;

  constructor(
    file: string,
    ref: ImageReference | undefined,
    name: string,
    spool: ArchiveSpool,
    progress?: ProgressSink,
    signal?: AbortSignal,
  ) {
    this.#file = file;
    this.#ref = ref;
    this.name = name;
    this.#spool = spool;
    this.#progress = progress;
    this.#signal = signal;
  }

  async hasBlob(descriptor: RawDescriptor): Promise<boolean> {
    return this.#spool.has(descriptor.digest);
  }

  async writeBlob(descriptor: RawDescriptor, openBlob: () => Promise<Readable>, options?: WriteBlobOptions) {
    await this.#spool.write(descriptor, openBlob, options?.progress ?? this.#progress);
  }

  async writeManifest(_manifest: RawManifest): Promise<void> {
    // A docker-archive stores no manifests: manifest.json is derived from the root at commit.
  }

  async commit(root: RawManifest): Promise<void> {
    const plan = await this.#spool.plan(root, this.#ref);
    this.#signal?.throwIfAborted();
    const tmp = tempPathBeside(this.#file);
    // Writing gigabytes takes a while: an abort breaks it off, and streamToFile removes the
    // temporary file; the destination is untouched.
    const archive = archiveStream(plan);
    const signal = this.#signal;
    const onAbort = () => archive.destroy(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await streamToFile(archive, [], tmp);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    await placeFile(tmp, this.#file);
    await this.#spool.cleanup();
  }

  async abort(): Promise<void> {
    await this.#spool.cleanup();
  }
}
