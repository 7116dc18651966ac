import { SutureError } from "../errors/errors.ts";
import type { Descriptor, Platform, RawManifest } from "../oci/manifest.ts";
import { isImageManifestMediaType, isIndexMediaType } from "../oci/media-types.ts";
import { formatPlatform, hostPlatform } from "../oci/platform.ts";
import type { ProgressSink } from "../progress/events.ts";
import { type Image, parseImageManifest, parseIndex, selectPlatform } from "./image.ts";
import type { BlobProvider, ImageSink, ImageSource, WriteBlobOptions } from "./source.ts";

export interface CopyOptions {
  /** For sinks that cannot hold an index: which platform to write (default: the host's). */
  platform?: Platform;
  progress?: ProgressSink;
  mountFrom?: WriteBlobOptions["mountFrom"];
  /** Blobs copied at once. */
  concurrency?: number;
}

/**
 * Copy what a source's reference names to a sink: a whole index with every platform (blobs shared
 * between platforms are written once), or a single image. Nothing is visible at the sink until
 * the final commit; on failure the sink is aborted.
 */
export async function copyImage(
  source: ImageSource,
  sink: ImageSink,
  options: CopyOptions = {},
): Promise<RawManifest> {
  try {
    let root = await source.rootManifest();
    if (isIndexMediaType(root.mediaType) && !sink.acceptsIndex) {
      const index = parseIndex(root, `${source.name} index`);
      const d = selectPlatform(index, options.platform ?? hostPlatform(), source.name);
      options.progress?.({
        type: "info",
        message: `${sink.name} holds one platform: writing ${formatPlatform(d.platform!)}`,
      });
      root = await source.manifest(d);
    }
    const written = new Set<string>();
    await copyManifestTree(source, sink, root, options, written);
    await sink.commit(root);
    return root;
  } catch (e) {
    await sink.abort().catch(() => {});
    throw e;
  }
}

/** Write everything a manifest (image or index) references, then child manifests; not the root itself. */
export async function copyManifestTree(
  source: ImageSource,
  sink: ImageSink,
  m: RawManifest,
  options: CopyOptions,
  written: Set<string>,
): Promise<void> {
  if (isIndexMediaType(m.mediaType)) {
    const index = parseIndex(m, `${source.name} index`);
    for (const child of index.manifests) {
      if (!isImageManifestMediaType(child.mediaType) && !isIndexMediaType(child.mediaType)) {
        throw new SutureError(
          "INVALID_MANIFEST",
          `${source.name} index lists a ${child.mediaType}, which suture cannot copy`,
        );
      }
      const childManifest = await source.manifest(child);
      await copyManifestTree(source, sink, childManifest, options, written);
      await sink.writeManifest(childManifest);
    }
    return;
  }
  if (!isImageManifestMediaType(m.mediaType)) {
    throw new SutureError("INVALID_MANIFEST", `${source.name} is a ${m.mediaType}, which suture cannot copy`);
  }
  const parsed = parseImageManifest(m, `${source.name} manifest`);
  await writeBlobs(source, sink, [parsed.config, ...parsed.layers], options, written);
}

/** Write blobs not yet at the sink, a few at a time; config first so sinks can use it. */
export async function writeBlobs(
  blobs: BlobProvider,
  sink: ImageSink,
  descriptors: Descriptor[],
  options: CopyOptions,
  written = new Set<string>(),
): Promise<void> {
  const todo = descriptors.filter((d) => {
    if (written.has(d.digest)) return false;
    written.add(d.digest);
    return true;
  });
  const limit = Math.max(1, options.concurrency ?? 4);
  let next = 0;
  const worker = async () => {
    while (next < todo.length) {
      const d = todo[next++]!;
      if (await sink.hasBlob(d)) {
        options.progress?.({ type: "blob", action: "exists", digest: d.digest, bytes: 0, total: d.size });
        continue;
      }
      await sink.writeBlob(d, () => blobs.blob(d), {
        mountFrom: options.mountFrom,
        progress: options.progress,
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, todo.length) }, worker));
}

/** Write one image value (e.g. a patched image) to a sink and commit it. */
export async function writeImage(image: Image, sink: ImageSink, options: CopyOptions = {}): Promise<void> {
  try {
    await writeBlobs(image.blobs, sink, [image.parsed.config, ...image.parsed.layers], options);
    await sink.commit(image.manifest);
  } catch (e) {
    await sink.abort().catch(() => {});
    throw e;
  }
}
