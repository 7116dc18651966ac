import { randomBytes } from "node:crypto";
import { PassThrough, type Readable } from "node:stream";
import zlib from "node:zlib";
import { SutureError } from "../../src/errors/errors.ts";
import { DescriptorVerifyingStream, sha256Digest } from "../../src/image/digest.ts";
import type { ImageSource } from "../../src/image/source.ts";
import type { Descriptor, RawManifest } from "../../src/oci/manifest.ts";
import { MediaType } from "../../src/oci/media-types.ts";
import { type EntrySpec, tarOf } from "./tar.ts";

/** A generated image held in memory: every blob by digest, plus what tests compare against. */
export interface RandomImage {
  readonly manifest: RawManifest;
  readonly config: Buffer;
  readonly configDigest: string;
  readonly diffIds: string[];
  readonly layerDigests: string[];
  /** Each layer's files (path → content), to check unpacked root filesystems. */
  readonly files: Map<string, Buffer>[];
  readonly blobs: Map<string, Buffer>;
}

export interface RandomImageOptions {
  /** Number of layers (default 2). */
  layers?: number;
  /** Media type family (default OCI). */
  format?: "oci" | "docker";
  /** Layer compression (default gzip). */
  compression?: "gzip" | "none";
  architecture?: string;
  /** Config `os` (default linux). */
  os?: string;
  /** Size of each random file (default 4 KiB; two files per layer). */
  fileBytes?: number;
}

/** An uncompressed layer tar holding a directory and a few files of random bytes. */
export async function randomLayerTar(
  index: number,
  fileBytes: number,
): Promise<{ tar: Buffer; files: Map<string, Buffer> }> {
  const files = new Map<string, Buffer>();
  const mtime = 1_700_000_000;
  const entries: EntrySpec[] = [{ name: `layer${index}/`, type: "directory", mode: 0o755, mtime }];
  for (const n of [0, 1]) {
    const content = randomBytes(fileBytes);
    const name = `layer${index}/file${n}.bin`;
    files.set(name, content);
    entries.push({ name, content, mode: 0o644, mtime });
  }
  return { tar: await tarOf(entries), files };
}

/** Build a small random image (random layers, real tar/gzip, consistent config and manifest). */
export async function buildRandomImage(options: RandomImageOptions = {}): Promise<RandomImage> {
  const layers: Buffer[] = [];
  const files: Map<string, Buffer>[] = [];
  for (let i = 0; i < (options.layers ?? 2); i++) {
    const layer = await randomLayerTar(i, options.fileBytes ?? 4096);
    layers.push(layer.tar);
    files.push(layer.files);
  }
  return {
    ...imageOfLayers(layers, { ...options, labels: { "test.id": randomBytes(8).toString("hex") } }),
    files,
  };
}

/**
 * An image in memory of the given uncompressed layer tars (bottom first), with a config and
 * manifest that describe them; `files` is left empty (the caller knows what its tars hold).
 */
export function imageOfLayers(
  tars: readonly Buffer[],
  options: Omit<RandomImageOptions, "layers" | "fileBytes"> & { labels?: Record<string, string> } = {},
): RandomImage {
  const docker = options.format === "docker";
  const gzip = (options.compression ?? "gzip") === "gzip";
  const blobs = new Map<string, Buffer>();
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const tar of tars) {
    const blob = gzip ? zlib.gzipSync(tar) : tar;
    const digest = sha256Digest(blob);
    blobs.set(digest, blob);
    diffIds.push(sha256Digest(tar));
    let mediaType: string;
    if (docker) mediaType = gzip ? MediaType.dockerLayerGzip : "application/vnd.docker.image.rootfs.diff.tar";
    else mediaType = gzip ? MediaType.ociLayerGzip : MediaType.ociLayer;
    layers.push({ mediaType, digest, size: blob.length });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: options.architecture ?? "amd64",
      os: options.os ?? "linux",
      created: "2024-01-01T00:00:00Z",
      config: {
        Env: ["PATH=/usr/bin:/bin"],
        Cmd: ["/bin/true"],
        ...(options.labels ? { Labels: options.labels } : {}),
      },
      rootfs: { type: "layers", diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created: "2024-01-01T00:00:00Z", created_by: `layer ${i}` })),
    }),
  );
  const configDigest = sha256Digest(config);
  blobs.set(configDigest, config);
  const manifestDoc = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
    config: {
      mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig,
      digest: configDigest,
      size: config.length,
    },
    layers,
  };
  const bytes = Buffer.from(JSON.stringify(manifestDoc));
  const manifest: RawManifest = { bytes, mediaType: manifestDoc.mediaType, digest: sha256Digest(bytes) };
  blobs.set(manifest.digest, bytes);
  return {
    manifest,
    config,
    configDigest,
    diffIds,
    layerDigests: layers.map((l) => l.digest),
    files: tars.map(() => new Map()),
    blobs,
  };
}

/** An index over several images (each with its platform), sharing one blob map; OCI unless `docker`. */
export function buildIndex(
  images: { image: RandomImage; architecture: string }[],
  format: "oci" | "docker" = "oci",
): {
  manifest: RawManifest;
  blobs: Map<string, Buffer>;
} {
  const mediaType = format === "docker" ? MediaType.dockerManifestList : MediaType.ociIndex;
  const blobs = new Map<string, Buffer>();
  for (const { image } of images) for (const [d, b] of image.blobs) blobs.set(d, b);
  const doc = {
    schemaVersion: 2,
    mediaType,
    manifests: images.map(({ image, architecture }) => ({
      mediaType: image.manifest.mediaType,
      digest: image.manifest.digest,
      size: image.manifest.bytes.length,
      platform: { os: "linux", architecture },
    })),
  };
  const bytes = Buffer.from(JSON.stringify(doc));
  const manifest: RawManifest = { bytes, mediaType, digest: sha256Digest(bytes) };
  blobs.set(manifest.digest, bytes);
  return { manifest, blobs };
}

/** An ImageSource over blobs in memory, verifying like a real one. */
export function memorySource(name: string, root: RawManifest, blobs: Map<string, Buffer>): ImageSource {
  const get = (d: Descriptor) => {
    const b = blobs.get(d.digest);
    if (!b) throw new SutureError("NOT_FOUND", `${name} has no blob ${d.digest}`);
    return b;
  };
  return {
    name,
    rootManifest: async () => root,
    manifest: async (d) => ({ bytes: get(d), mediaType: d.mediaType, digest: d.digest }),
    blob: async (d): Promise<Readable> => {
      const s = new PassThrough();
      s.end(get(d));
      return s.pipe(new DescriptorVerifyingStream(d, `${name} blob ${d.digest}`));
    },
    close: async () => {},
  };
}
