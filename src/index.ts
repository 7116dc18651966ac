/**
 * suture as a library: the entry point `import … from "suture"` resolves to (package.json
 * `exports`). Four operations on image references written as on the command line
 * (`docker://REF` or a bare `REF`, `oci:DIR[:TAG]`, `docker-archive:FILE[:REF]`,
 * `docker-daemon:REF`):
 *
 * - `openImage`: one image (a platform of an index), manifest and config verified, blobs on demand;
 * - `inspectImage`: platforms, layers, config, OS and package database, as `suture inspect`;
 * - `copyImage`: an image or a whole index to another place, as `suture copy`;
 * - `patchImage`: `suture patch` (needs root: it extracts layers with their owners, mounts
 *   overlayfs and runs runc).
 *
 * And `runBulk` over a config from `readBulkConfig`: `suture bulk` (copa's PatchConfig), each job a
 * `patchImage`, its progress as typed `BulkEvent`s.
 *
 * The library never prints. What the CLI shows as progress arrives as typed events
 * (`ProgressEvent`) through the `progress` callback; failures are `SutureError`s whose stable
 * `code` (`ErrorCode`) says what went wrong, with a one-line message naming the cause and the fix.
 * Every operation takes an `AbortSignal`: aborting stops transfers and removes what was written.
 */

import { loadEolTable } from "./eol/table.ts";
import { copyImage as copyBetween } from "./image/copy.ts";
import { type Image, openImage as openPlatformImage } from "./image/image.ts";
import { type InspectResult, inspectSource } from "./inspect/inspect.ts";
import type { Platform } from "./oci/manifest.ts";
import { hostPlatform, parsePlatform } from "./oci/platform.ts";
import {
  defaultCacheDir,
  type PatchOptions,
  type PatchResult,
  patchImage as patchReference,
} from "./patch/patch.ts";
import { parseTransportReference } from "./ref/transport.ts";
import { openSink, openSource, type TransportOptions } from "./transports/index.ts";

export type { AttachResult } from "./attest/attach.ts";
export { PATCH_PREDICATE_TYPE, type PatchPredicate } from "./attest/statement.ts";
export type { BulkConfig, BulkImageSpec, TagStrategy } from "./bulk/config.ts";
export { parseBulkConfig, readBulkConfig } from "./bulk/config.ts";
export type {
  BulkEvent,
  BulkJob,
  BulkJobResult,
  BulkOptions,
  BulkPlatformResult,
  BulkResult,
} from "./bulk/run.ts";
/** `suture bulk` as a function: run a PatchConfig read with readBulkConfig (needs root unless dryRun). */
export { runBulk } from "./bulk/run.ts";
export { type BulkSummary, bulkSummary } from "./bulk/summary.ts";
export type { EolState, EolStatus, EolTable } from "./eol/table.ts";
export type { ErrorCode } from "./errors/errors.ts";
export { isSutureError, SutureError } from "./errors/errors.ts";
export type { Image } from "./image/image.ts";
export type { BlobProvider, ImageSource } from "./image/source.ts";
export type { ImageSummary, InspectResult, LayerSummary } from "./inspect/inspect.ts";
export type { Descriptor, ImageConfig, Platform, RawManifest } from "./oci/manifest.ts";
export type { Compression } from "./oci/media-types.ts";
export type { PackageFix } from "./patch/engines/engine.ts";
export type { PatchResult, PlatformResult } from "./patch/patch.ts";
export type { EngineChoice } from "./patch/platform.ts";
export type { ProgressEvent, ProgressSink } from "./progress/events.ts";
export type { PlannedUpdate, UpdatePlan } from "./report/plan.ts";
export type { TransportOptions } from "./transports/index.ts";
export type { OpenVexDocument } from "./vex/openvex.ts";

/**
 * How to reach images, shared by every operation: registry credentials and TLS, the Docker
 * engine, the blob size limit, plus the `progress` callback and the `signal` that stops the work.
 */
export type ImageAccessOptions = TransportOptions;

/** A platform as an object or as written on the command line (`linux/arm64/v8`). */
export type PlatformSpec = Platform | string;

function toPlatform(spec: PlatformSpec): Platform {
  return typeof spec === "string" ? parsePlatform(spec) : spec;
}

export interface OpenImageOptions extends ImageAccessOptions {
  /** Which image of an index (default: the host's platform). Ignored for a single image. */
  platform?: PlatformSpec;
}

/**
 * An image opened for reading. `image` holds the verified manifest and config; its blobs are
 * read from the source (and verified) when asked for, so `close()` it when done, or declare it
 * with `await using`.
 */
export interface OpenedImage extends AsyncDisposable {
  /** The reference in canonical form (`docker://…`, `oci:DIR:TAG`, …). */
  readonly name: string;
  readonly image: Image;
  /** Digest of the image's manifest (the platform's, for an index). */
  readonly digest: string;
  close(): Promise<void>;
}

/** Open one image from any transport; an index gives the image of `options.platform`. */
export async function openImage(reference: string, options: OpenImageOptions = {}): Promise<OpenedImage> {
  const { platform, ...access } = options;
  // Everything given is checked before the source is opened (for a registry, a round trip).
  const wanted = platform === undefined ? hostPlatform() : toPlatform(platform);
  const source = await openSource(parseTransportReference(reference), access);
  try {
    const image = await openPlatformImage(source, wanted);
    const close = () => source.close();
    return { name: source.name, image, digest: image.manifest.digest, close, [Symbol.asyncDispose]: close };
  } catch (e) {
    await source.close();
    throw e;
  }
}

export interface InspectImageOptions extends ImageAccessOptions {
  /** Only these platforms of an index get a detailed summary (default: all). */
  platforms?: PlatformSpec[];
  /** Read manifests and configs only: no layer is fetched, so no OS or package detection. */
  noLayers?: boolean;
  /** Where `suture eol --update` wrote its table (default suture's cache dir); else the bundled table. */
  cacheDir?: string;
}

/** Describe an image or index: platforms, layers, config, OS and package database. */
export async function inspectImage(
  reference: string,
  options: InspectImageOptions = {},
): Promise<InspectResult> {
  const { platforms, noLayers, cacheDir, ...access } = options;
  const wanted = platforms?.map(toPlatform);
  const eolTable = await loadEolTable(cacheDir ?? defaultCacheDir());
  const source = await openSource(parseTransportReference(reference), access);
  try {
    return await inspectSource(source, {
      platforms: wanted,
      noLayers,
      eolTable,
      signal: access.signal,
    });
  } finally {
    await source.close();
  }
}

export interface CopyImageOptions extends ImageAccessOptions {
  /** For destinations that hold one image (docker-archive, daemon): which platform (default: the host's). */
  platform?: PlatformSpec;
  /** Blobs copied at once. */
  concurrency?: number;
}

export interface CopyImageResult {
  /** The destination in canonical form. */
  destination: string;
  /** Digest and media type of the root written: the index, or the one image. */
  digest: string;
  mediaType: string;
}

/**
 * Copy an image or a whole index between any two transports. Every manifest is checked before
 * the first blob moves; nothing is visible at the destination before the copy is complete, and a
 * failed or aborted copy leaves the destination as it was. The source is only read.
 */
export async function copyImage(
  source: string,
  destination: string,
  options: CopyImageOptions = {},
): Promise<CopyImageResult> {
  const { platform, concurrency, ...access } = options;
  const sourceRef = parseTransportReference(source);
  const destinationRef = parseTransportReference(destination);
  const wanted = platform === undefined ? undefined : toPlatform(platform);
  const from = await openSource(sourceRef, access);
  try {
    const to = await openSink(destinationRef, access);
    const root = await copyBetween(from, to, {
      platform: wanted,
      progress: access.progress,
      signal: access.signal,
      maxBlobSize: access.maxBlobSize,
      concurrency,
      // Within one registry, blobs the destination lacks are mounted from the source repository.
      mountFrom:
        sourceRef.transport === "registry"
          ? { registry: sourceRef.ref.registry, repository: sourceRef.ref.repository }
          : undefined,
    });
    return { destination: to.name, digest: root.digest, mediaType: root.mediaType };
  } finally {
    await from.close();
  }
}

/**
 * What `suture patch` takes besides the image: the report, where the result goes (`tag`, `push`,
 * `ociDir`, `archive`; default the local engine), the engine, the VEX file, the platforms.
 */
export interface PatchImageOptions
  extends Omit<PatchOptions, "image" | "platforms" | "transport" | "progress" | "signal">,
    ImageAccessOptions {
  /** Platforms of an index to patch (default: every linux platform). */
  platforms?: PlatformSpec[];
}

/**
 * Patch an image's OS packages as `suture patch` does: exactly one layer is added and the result
 * is written under a new name; the source image is never modified. Runs as root.
 */
export async function patchImage(reference: string, options: PatchImageOptions = {}): Promise<PatchResult> {
  const { platforms, insecure, dockerConfig, dockerHost, tmpDir, maxBlobSize, progress, signal, ...patch } =
    options;
  const wanted = platforms?.map(toPlatform);
  return patchReference({
    ...patch,
    image: reference,
    platforms: wanted,
    transport: { insecure, dockerConfig, dockerHost, tmpDir, maxBlobSize },
    progress,
    signal,
  });
}
