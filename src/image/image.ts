import type { Readable } from "node:stream";
import { SutureError } from "../errors/errors.ts";
import {
  type Descriptor,
  type ImageConfig,
  ImageConfigSchema,
  type ImageManifest,
  ImageManifestSchema,
  type Index,
  IndexSchema,
  type Platform,
  parseJson,
  type RawManifest,
} from "../oci/manifest.ts";
import { isImageManifestMediaType, isIndexMediaType } from "../oci/media-types.ts";
import { formatPlatform, normalizePlatform, platformMatches } from "../oci/platform.ts";
import { verifyBytes } from "./digest.ts";
import { checkConfigSize, checkLayerCount, MAX_CONFIG_SIZE } from "./limits.ts";
import type { BlobProvider, ImageSource } from "./source.ts";

/**
 * An image as an immutable value: its manifest and config (bytes and parsed), and where its blobs
 * come from. Transformations (src/mutate) return new Image values; bytes flow only when a sink reads.
 */
export interface Image {
  readonly manifest: RawManifest;
  readonly parsed: ImageManifest;
  readonly rawConfig: Uint8Array;
  readonly config: ImageConfig;
  readonly blobs: BlobProvider;
}

export interface ImageIndex {
  readonly manifest: RawManifest;
  readonly parsed: Index;
}

export function parseIndex(raw: RawManifest, what = "index"): Index {
  return parseJson(IndexSchema, raw.bytes, what);
}

/** Parse an image manifest; one listing more than MAX_LAYERS layers is refused (TOO_LARGE). */
export function parseImageManifest(raw: RawManifest, what = "manifest"): ImageManifest {
  const parsed = parseJson(ImageManifestSchema, raw.bytes, what);
  checkLayerCount(parsed.layers.length, what);
  return parsed;
}

export async function readAll(stream: Readable, limit = 64 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > limit) {
      stream.destroy();
      throw new SutureError("INVALID_MANIFEST", `document is larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Load an image value from a manifest: fetches and verifies the config blob. */
export async function loadImage(blobs: BlobProvider, manifest: RawManifest, what = "image"): Promise<Image> {
  if (!isImageManifestMediaType(manifest.mediaType)) {
    throw new SutureError("INVALID_MANIFEST", `${what} is a ${manifest.mediaType}, not an image manifest`);
  }
  const parsed = parseImageManifest(manifest, `${what} manifest`);
  checkConfigSize(parsed.config, what);
  const rawConfig = await readAll(await blobs.blob(parsed.config), MAX_CONFIG_SIZE);
  verifyBytes(rawConfig, parsed.config, `${what} config`);
  const config = parseJson(ImageConfigSchema, rawConfig, `${what} config`);
  if (config.rootfs.diff_ids.length !== parsed.layers.length) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${what} has ${parsed.layers.length} layers but its config lists ${config.rootfs.diff_ids.length} diff_ids`,
    );
  }
  return { manifest, parsed, rawConfig, config, blobs };
}

/** The platform an image says it is for, from its config. */
export function imagePlatform(image: Image): Platform {
  const p: Platform = { os: image.config.os, architecture: image.config.architecture };
  if (image.config.variant) p.variant = image.config.variant;
  return normalizePlatform(p);
}

export type ResolvedRoot =
  | { kind: "image"; image: Image }
  | { kind: "index"; index: ImageIndex; source: ImageSource };

/** Read a source's root and, for an image manifest, its config. */
export async function resolveRoot(source: ImageSource): Promise<ResolvedRoot> {
  const root = await source.rootManifest();
  if (isIndexMediaType(root.mediaType)) {
    return {
      kind: "index",
      index: { manifest: root, parsed: parseIndex(root, `${source.name} index`) },
      source,
    };
  }
  return { kind: "image", image: await loadImage(source, root, source.name) };
}

/** Image manifests of an index that are real platform images (attestations and unknown os excluded). */
export function platformDescriptors(index: Index): Descriptor[] {
  return index.manifests.filter(
    (d) =>
      isImageManifestMediaType(d.mediaType) &&
      d.platform !== undefined &&
      d.platform.os !== "unknown" &&
      d.annotations?.["vnd.docker.reference.type"] !== "attestation-manifest",
  );
}

/** Pick the manifest of an index matching a platform; a clear error lists what is there. */
export function selectPlatform(index: Index, wanted: Platform, name: string): Descriptor {
  const candidates = platformDescriptors(index);
  const found = candidates.find((d) => platformMatches(wanted, d.platform!));
  if (!found) {
    const have = candidates.map((d) => formatPlatform(d.platform!)).join(", ") || "none";
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `${name} has no ${formatPlatform(wanted)} image (it has: ${have}): pass --platform with one of those`,
    );
  }
  return found;
}

/** Open one image from a source: the root image, or the platform's image of an index. */
export async function openImage(source: ImageSource, platform: Platform): Promise<Image> {
  const root = await resolveRoot(source);
  if (root.kind === "image") return root.image;
  const d = selectPlatform(root.index.parsed, platform, source.name);
  return loadImage(source, await source.manifest(d), `${source.name} (${formatPlatform(d.platform!)})`);
}
