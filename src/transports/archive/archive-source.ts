import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline as pipelineCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { sniffCompression } from "../../archive/compression.ts";
import { type IndexedEntry, TarIndex } from "../../archive/tar/random-access.ts";
import { asSutureError, SutureError } from "../../errors/errors.ts";
import { DescriptorVerifyingStream, sha256Digest, verifyBytes } from "../../image/digest.ts";
import { checkBlobSize, DEFAULT_MAX_BLOB_SIZE } from "../../image/limits.ts";
import type { ImageSource } from "../../image/source.ts";
import {
  type Descriptor,
  ImageConfigSchema,
  type ImageManifest,
  ImageManifestSchema,
  type Index,
  IndexSchema,
  parseJson,
  type RawManifest,
  sniffManifestMediaType,
} from "../../oci/manifest.ts";
import { Annotation, isImageManifestMediaType, isIndexMediaType, MediaType } from "../../oci/media-types.ts";
import type { ImageReference } from "../../ref/reference.ts";
import { selectFromLayoutIndex } from "../layout/select.ts";
import {
  type ArchiveItem,
  ArchiveManifestSchema,
  repoTagMatches,
  selectArchiveItem,
} from "./archive-manifest.ts";

const MAX_JSON_BYTES = 64 * 1024 * 1024;
const MAX_MANIFEST_BYTES = 8 * 1024 * 1024;
const DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar";

export interface ArchiveSourceOptions {
  /** Name in messages; default `docker-archive:FILE[:REF]`. */
  name?: string;
  /** Scratch space for decompressing a compressed archive. */
  tmpDir?: string;
  /** Remove this path (a spool file or directory we own) on close. */
  removeOnClose?: string;
  /** A reference that matches nothing still selects the archive's only image (daemon exports). */
  acceptSingle?: boolean;
  /** Refuse blobs whose descriptor claims more (default DEFAULT_MAX_BLOB_SIZE). */
  maxBlobSize?: number;
  /** Stops decompressing a compressed archive. */
  signal?: AbortSignal;
}

/**
 * Open a `docker save` archive (legacy layout, or Docker 25+ with an OCI layout inside) or a
 * tarred OCI layout for reading. The tar is indexed once (headers only) and members are read by
 * range, never extracted. For docker archives the manifest is the archive's own OCI manifest when
 * Docker 25+ wrote a consistent one, else a Docker schema 2 manifest synthesised from
 * manifest.json: the config descriptor from the config bytes, each layer as stored (digest of the
 * member's bytes, media type from its compression). Every blob read is verified.
 */
export async function openArchiveFile(
  file: string,
  ref: ImageReference | undefined,
  options: ArchiveSourceOptions = {},
): Promise<ImageSource> {
  const name = options.name ?? `docker-archive:${file}`;
  const cleanup: string[] = options.removeOnClose ? [options.removeOnClose] : [];
  let tar: TarIndex | undefined;
  try {
    const plain = await decompressedCopy(file, name, options.tmpDir, cleanup, options.signal);
    tar = await TarIndex.open(plain, name);
    const source = new ArchiveSource(name, tar, cleanup, options.maxBlobSize ?? DEFAULT_MAX_BLOB_SIZE);
    if (tar.entries.has("manifest.json")) await source.loadDockerArchive(ref, options.acceptSingle ?? false);
    else if (tar.entries.has("index.json")) await source.loadOciArchive(ref);
    else {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${name} is not a docker save archive or OCI layout (no manifest.json or index.json)`,
      );
    }
    return source;
  } catch (e) {
    await tar?.close().catch(() => {});
    for (const p of cleanup) await rm(p, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
}

/** A gzip/zstd-compressed archive (`docker save | gzip`) is decompressed once into scratch space. */
async function decompressedCopy(
  file: string,
  name: string,
  tmp: string | undefined,
  cleanup: string[],
  signal: AbortSignal | undefined,
) {
  const head = Buffer.alloc(8);
  try {
    const handle = await open(file, "r");
    try {
      await handle.read(head, 0, head.length, 0);
    } finally {
      await handle.close();
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT")
      throw new SutureError("NOT_FOUND", `${file} does not exist: check the path of ${name}`);
    throw asSutureError(e, "IO", `cannot read ${file}`);
  }
  const kind = sniffCompression(head);
  if (kind === "none") return file;
  if (kind !== "gzip" && kind !== "zstd") {
    throw new SutureError("INVALID_ARCHIVE", `${name} is ${kind}-compressed: decompress it first`);
  }
  const dir = await mkdtemp(join(tmp ?? tmpdir(), "suture-archive-"));
  cleanup.push(dir);
  const out = join(dir, "archive.tar");
  try {
    await pipeline(
      createReadStream(file),
      kind === "gzip" ? zlib.createGunzip() : zlib.createZstdDecompress(),
      createWriteStream(out),
      { signal },
    );
  } catch (e) {
    if (signal?.aborted) throw signal.reason;
    throw asSutureError(e, "INVALID_ARCHIVE", `cannot decompress ${name}`);
  }
  return out;
}

class ArchiveSource implements ImageSource {
  readonly name: string;
  readonly #tar: TarIndex;
  readonly #cleanup: string[];
  readonly #maxBlobSize: number;
  /** Blobs by digest (configs and layers named by manifest.json). */
  readonly #blobs = new Map<string, IndexedEntry>();
  #root?: RawManifest;
  #closed = false;

  constructor(name: string, tar: TarIndex, cleanup: string[], maxBlobSize: number) {
    this.name = name;
    this.#tar = tar;
    this.#cleanup = cleanup;
    this.#maxBlobSize = maxBlobSize;
  }

  #member(path: string, what: string): IndexedEntry {
    const entry = this.#tar.resolve(path);
    if (entry?.type !== "file") {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${this.name} lacks ${what} ${path}: the archive is incomplete`,
      );
    }
    return entry;
  }

  /** A blob of an OCI layout inside the archive, or undefined. */
  #layoutBlob(digest: string): IndexedEntry | undefined {
    const m = /^([a-z0-9]+)[+._-]?[a-z0-9]*:([a-zA-Z0-9=_-]+)$/.exec(digest);
    if (!m) return undefined;
    const entry = this.#tar.resolve(`blobs/${m[1]}/${m[2]}`);
    return entry?.type === "file" ? entry : undefined;
  }

  async #readVerified(entry: IndexedEntry, d: Descriptor, what: string): Promise<Buffer> {
    if (d.size > MAX_MANIFEST_BYTES) {
      throw new SutureError("INVALID_MANIFEST", `${this.name}: ${what} is ${d.size} bytes, too large`);
    }
    const bytes = await this.#tar.readFile(entry, MAX_MANIFEST_BYTES);
    verifyBytes(bytes, d, `${this.name} ${what}`);
    return bytes;
  }

  async loadDockerArchive(ref: ImageReference | undefined, acceptSingle: boolean): Promise<void> {
    const manifestJson = await this.#tar.readFile(this.#member("manifest.json", "file"), MAX_JSON_BYTES);
    const items = parseJson(ArchiveManifestSchema, manifestJson, `${this.name} manifest.json`);
    const configCache = new Map<string, Buffer>();
    const configBytes = async (item: ArchiveItem) => {
      let bytes = configCache.get(item.Config);
      if (!bytes) {
        bytes = await this.#tar.readFile(this.#member(item.Config, "image config"), MAX_JSON_BYTES);
        configCache.set(item.Config, bytes);
      }
      return bytes;
    };
    const item = await selectArchiveItem(items, ref, {
      name: this.name,
      acceptSingle,
      configDigest: async (i) => sha256Digest(await configBytes(i)),
    });
    const rawConfig = await configBytes(item);
    const configDigest = sha256Digest(rawConfig);
    const config = parseJson(ImageConfigSchema, rawConfig, `${this.name} config ${item.Config}`);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== item.Layers.length) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${this.name}: manifest.json lists ${item.Layers.length} layers but the config has ${diffIds.length} diff_ids`,
      );
    }
    const configEntry = this.#member(item.Config, "image config");
    this.#blobs.set(configDigest, configEntry);
    const layerEntries = item.Layers.map((l, i) => this.#member(l, `layer ${i + 1}`));

    // Docker 25+ stores an OCI layout beside manifest.json; its manifest keeps the image's identity.
    if (this.#tar.entries.has("index.json")) {
      const own = await this.#findOwnManifest(configDigest, layerEntries);
      if (own) {
        this.#root = own;
        return;
      }
    }

    const layers: Descriptor[] = [];
    let oci = false;
    for (const [i, entry] of layerEntries.entries()) {
      const head = await this.#tar.readRange(entry.offset, Math.min(8, entry.size));
      const kind = sniffCompression(head);
      let mediaType: string;
      if (kind === "none") mediaType = DOCKER_LAYER_TAR;
      else if (kind === "gzip") mediaType = MediaType.dockerLayerGzip;
      else if (kind === "zstd") {
        mediaType = MediaType.ociLayerZstd;
        oci = true;
      } else {
        throw new SutureError(
          "INVALID_ARCHIVE",
          `${this.name}: layer ${item.Layers[i]} is ${kind}-compressed, which images cannot carry`,
        );
      }
      // An uncompressed layer's digest is its diff_id (checked while streaming); a blobs/ path names
      // its digest; anything else is hashed once now.
      const named = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(entry.path)?.[1];
      let digest: string;
      if (kind === "none") digest = diffIds[i]!;
      else if (named) digest = `sha256:${named}`;
      else digest = await this.#hashEntry(entry);
      layers.push({ mediaType, digest, size: entry.size });
      this.#blobs.set(digest, entry);
    }
    if (oci) {
      for (const l of layers) {
        if (l.mediaType === DOCKER_LAYER_TAR) l.mediaType = MediaType.ociLayer;
        else if (l.mediaType === MediaType.dockerLayerGzip) l.mediaType = MediaType.ociLayerGzip;
      }
    }
    const manifest = {
      schemaVersion: 2,
      mediaType: oci ? MediaType.ociManifest : MediaType.dockerManifest,
      config: {
        mediaType: oci ? MediaType.ociConfig : MediaType.dockerConfig,
        size: rawConfig.length,
        digest: configDigest,
      },
      layers,
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    this.#root = { bytes, mediaType: manifest.mediaType, digest: sha256Digest(bytes) };
  }

  /**
   * The OCI manifest Docker 25+ wrote for this image, if it is consistent with manifest.json (same
   * config, one present layer per manifest.json layer). Docker 25.0.0 wrote manifests missing
   * their layers; those are ignored and the manifest is synthesised instead.
   */
  async #findOwnManifest(configDigest: string, layers: IndexedEntry[]): Promise<RawManifest | undefined> {
    const indexEntry = this.#member("index.json", "file");
    const index = parseJson(
      IndexSchema,
      await this.#tar.readFile(indexEntry, MAX_JSON_BYTES),
      `${this.name} index.json`,
    );
    const queue = [...index.manifests];
    const seen = new Set<string>();
    while (queue.length) {
      const d = queue.shift()!;
      if (seen.has(d.digest)) continue;
      seen.add(d.digest);
      const entry = this.#layoutBlob(d.digest);
      if (!entry) continue;
      if (isIndexMediaType(d.mediaType)) {
        const nested = parseJson(
          IndexSchema,
          await this.#readVerified(entry, d, `index ${d.digest}`),
          this.name,
        );
        queue.push(...nested.manifests);
        continue;
      }
      if (!isImageManifestMediaType(d.mediaType)) continue;
      const bytes = await this.#readVerified(entry, d, `manifest ${d.digest}`);
      let m: ImageManifest;
      try {
        m = parseJson(ImageManifestSchema, bytes, `${this.name} manifest ${d.digest}`);
      } catch {
        continue;
      }
      if (m.config.digest !== configDigest || m.layers.length !== layers.length) continue;
      const consistent = m.layers.every((l, i) => {
        const blob = this.#layoutBlob(l.digest);
        return blob !== undefined && blob.offset === layers[i]!.offset && blob.size === l.size;
      });
      if (!consistent) continue;
      return { bytes, mediaType: d.mediaType, digest: d.digest };
    }
    return undefined;
  }

  /** A tarred OCI layout (no manifest.json): select by the reference's tag like `oci:DIR:TAG`. */
  async loadOciArchive(ref: ImageReference | undefined): Promise<void> {
    const indexEntry = this.#member("index.json", "file");
    const index = parseJson(
      IndexSchema,
      await this.#tar.readFile(indexEntry, MAX_JSON_BYTES),
      `${this.name} index.json`,
    );
    let descriptor: Descriptor | undefined;
    if (ref) {
      descriptor = index.manifests.find((d) => {
        const full = d.annotations?.[Annotation.containerdImageName];
        const tag = d.annotations?.[Annotation.refName];
        return (full !== undefined && repoTagMatches(full, ref)) || (tag !== undefined && tag === ref.tag);
      });
    }
    if (!descriptor) {
      const selection = await selectFromLayoutIndex(
        index,
        ref ? (ref.tag ?? "latest") : undefined,
        async (d): Promise<Index | undefined> => {
          const entry = this.#layoutBlob(d.digest);
          if (!entry) return undefined;
          return parseJson(IndexSchema, await this.#readVerified(entry, d, `index ${d.digest}`), this.name);
        },
        this.name,
      );
      if (selection.kind === "index") {
        const bytes = await this.#tar.readFile(indexEntry, MAX_JSON_BYTES);
        this.#root = { bytes, mediaType: MediaType.ociIndex, digest: sha256Digest(bytes) };
        return;
      }
      descriptor = selection.descriptor;
    }
    this.#root = await this.manifest(descriptor);
  }

  async #hashEntry(entry: IndexedEntry): Promise<string> {
    const hash = createHash("sha256");
    for await (const chunk of this.#tar.stream(entry)) hash.update(chunk as Buffer);
    return `sha256:${hash.digest("hex")}`;
  }

  async rootManifest(): Promise<RawManifest> {
    if (!this.#root) throw new SutureError("INTERNAL", `${this.name} was not loaded`);
    return this.#root;
  }

  async manifest(descriptor: Descriptor): Promise<RawManifest> {
    if (this.#root && descriptor.digest === this.#root.digest) return this.#root;
    const entry = this.#blobs.get(descriptor.digest) ?? this.#layoutBlob(descriptor.digest);
    if (!entry) {
      throw new SutureError("NOT_FOUND", `${this.name} does not contain manifest ${descriptor.digest}`);
    }
    const bytes = await this.#readVerified(entry, descriptor, `manifest ${descriptor.digest}`);
    return {
      bytes,
      mediaType: descriptor.mediaType || sniffManifestMediaType(bytes),
      digest: descriptor.digest,
    };
  }

  async blob(descriptor: Descriptor): Promise<Readable> {
    checkBlobSize(descriptor, this.#maxBlobSize, this.name);
    const entry = this.#blobs.get(descriptor.digest) ?? this.#layoutBlob(descriptor.digest);
    if (!entry) {
      throw new SutureError(
        "NOT_FOUND",
        `${this.name} does not contain blob ${descriptor.digest}: the archive is incomplete`,
      );
    }
    const verifier = new DescriptorVerifyingStream(descriptor, `${this.name} blob ${descriptor.digest}`);
    pipelineCallback(this.#tar.stream(entry), verifier, () => {});
    return verifier;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#tar.close().catch(() => {});
    for (const p of this.#cleanup) await rm(p, { recursive: true, force: true }).catch(() => {});
  }
}
