import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { SutureError } from "../errors/errors.ts";
import { DescriptorVerifyingStream, sha256Digest } from "../image/digest.ts";
import type { Image } from "../image/image.ts";
import type { BlobProvider } from "../image/source.ts";
import type { Descriptor, History, ImageConfig, ImageManifest } from "../oci/manifest.ts";
import { MediaType } from "../oci/media-types.ts";

/** A layer that exists as a file on disk (e.g. a freshly built patch layer). */
export interface FileLayer {
  descriptor: Descriptor;
  diffID: string;
  path: string;
}

/**
 * Blobs of a derived image: new blobs (files or in-memory bytes) first, then the base image's.
 * Files are re-verified while streamed so a changed temp file cannot slip into an output.
 */
class OverlayBlobs implements BlobProvider {
  readonly #base: BlobProvider;
  readonly #files: Map<string, { path: string; descriptor: Descriptor }>;
  readonly #bytes: Map<string, Uint8Array>;

  constructor(
    base: BlobProvider,
    files: Map<string, { path: string; descriptor: Descriptor }>,
    bytes: Map<string, Uint8Array>,
  ) {
    this.#base = base;
    this.#files = files;
    this.#bytes = bytes;
  }

  async blob(descriptor: Descriptor): Promise<Readable> {
    const b = this.#bytes.get(descriptor.digest);
    if (b) return Readable.from([Buffer.from(b)]);
    const f = this.#files.get(descriptor.digest);
    if (f)
      return createReadStream(f.path).pipe(
        new DescriptorVerifyingStream(f.descriptor, `layer ${descriptor.digest}`),
      );
    return this.#base.blob(descriptor);
  }

  with(files: FileLayer[], bytes: Uint8Array[]): OverlayBlobs {
    const nf = new Map(this.#files);
    for (const l of files) nf.set(l.descriptor.digest, { path: l.path, descriptor: l.descriptor });
    const nb = new Map(this.#bytes);
    for (const x of bytes) nb.set(sha256Digest(x), x);
    return new OverlayBlobs(this.#base, nf, nb);
  }
}

function overlay(blobs: BlobProvider): OverlayBlobs {
  return blobs instanceof OverlayBlobs ? blobs : new OverlayBlobs(blobs, new Map(), new Map());
}

export interface ImageEdit {
  /** Produce the new config from the old one (a deep copy is passed; mutate freely). */
  config?: (config: ImageConfig) => void;
  /** Produce the new manifest from the old one (deep copy; config descriptor is fixed up after). */
  manifest?: (manifest: ImageManifest) => void;
  addLayers?: FileLayer[];
}

/**
 * The one primitive every transformation uses: returns a new Image with the edits applied and the
 * config descriptor, manifest bytes and digests recomputed. The input image is not touched.
 */
export function editImage(image: Image, edit: ImageEdit): Image {
  const config = structuredClone(image.config) as ImageConfig;
  const manifest = structuredClone(image.parsed) as ImageManifest;
  for (const l of edit.addLayers ?? []) {
    manifest.layers.push(l.descriptor);
    config.rootfs.diff_ids.push(l.diffID);
  }
  edit.config?.(config);
  edit.manifest?.(manifest);
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new SutureError("INTERNAL", "edited image has different numbers of layers and diff_ids");
  }
  const rawConfig = Buffer.from(JSON.stringify(config));
  manifest.config = { ...manifest.config, digest: sha256Digest(rawConfig), size: rawConfig.length };
  // An image with zstd layers must be an OCI manifest: Docker schema 2 has no zstd media type.
  if (
    manifest.mediaType === MediaType.dockerManifest &&
    manifest.layers.some((l) => l.mediaType.endsWith("+zstd"))
  ) {
    manifest.mediaType = MediaType.ociManifest;
    manifest.config.mediaType = MediaType.ociConfig;
    manifest.layers = manifest.layers.map((l) => ({ ...l, mediaType: toOciLayerType(l.mediaType) }));
  }
  const mediaType = manifest.mediaType ?? image.manifest.mediaType;
  const bytes = Buffer.from(JSON.stringify(manifest));
  return {
    manifest: { bytes, mediaType, digest: sha256Digest(bytes) },
    parsed: manifest,
    rawConfig,
    config,
    blobs: overlay(image.blobs).with(edit.addLayers ?? [], [rawConfig]),
  };
}

function toOciLayerType(mt: string): string {
  if (mt === MediaType.dockerLayerGzip) return MediaType.ociLayerGzip;
  if (mt === "application/vnd.docker.image.rootfs.diff.tar") return MediaType.ociLayer;
  if (mt === MediaType.dockerLayerForeignGzip) return MediaType.ociLayerNondistributableGzip;
  return mt;
}

/**
 * Drop the top `count` layers and their history entries (history entries with empty_layer do not
 * own a layer, so they are skipped when counting back).
 */
export function removeTopLayers(image: Image, count: number): Image {
  if (count <= 0) return image;
  if (count > image.parsed.layers.length)
    throw new SutureError("INTERNAL", "cannot remove more layers than the image has");
  return editImage(image, {
    config: (c) => {
      c.rootfs.diff_ids.splice(-count);
      if (c.history) c.history = trimHistory(c.history, count);
    },
    manifest: (m) => {
      m.layers.splice(-count);
    },
  });
}

function trimHistory(history: History[], layers: number): History[] {
  const out = [...history];
  let remaining = layers;
  while (remaining > 0 && out.length) {
    const h = out.pop()!;
    if (!h.empty_layer) remaining--;
  }
  return out;
}
