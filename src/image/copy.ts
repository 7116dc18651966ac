import type { Readable } from "node:stream";
import { SutureError } from "../errors/errors.ts";
import type { Descriptor, Platform, RawManifest } from "../oci/manifest.ts";
import { isImageManifestMediaType, isIndexMediaType } from "../oci/media-types.ts";
import { formatPlatform, hostPlatform } from "../oci/platform.ts";
import type { ProgressSink } from "../progress/events.ts";
import { type Image, parseImageManifest, parseIndex, selectPlatform } from "./image.ts";
import { checkBlobSize, checkConfigSize, DEFAULT_MAX_BLOB_SIZE } from "./limits.ts";
import type { BlobProvider, ImageSink, ImageSource, WriteBlobOptions } from "./source.ts";

export interface CopyOptions {
  /** For sinks that cannot hold an index: which platform to write (default: the host's). */
  platform?: Platform;
  progress?: ProgressSink;
  mountFrom?: WriteBlobOptions["mountFrom"];
  /** Blobs copied at once. */
  concurrency?: number;
  /**
   * Aborting stops the copy: no new transfer starts, the ones in flight are broken off, and the
   * sink is aborted (it removes what it wrote). The copy then rejects with the abort reason.
   */
  signal?: AbortSignal;
  /**
   * Blobs whose descriptors claim more bytes are refused before anything is transferred
   * (default DEFAULT_MAX_BLOB_SIZE; configs are held to MAX_CONFIG_SIZE).
   */
  maxBlobSize?: number;
}

/**
 * Copy what a source's reference names to a sink: a whole index with every platform (blobs shared
 * between platforms, or repeated within an image, are written once), or a single image. Every
 * manifest is read and checked (layer count, claimed sizes) before the first blob moves; nothing
 * is visible at the sink until the final commit; on failure or abort the sink is aborted.
 */
export async function copyImage(
  source: ImageSource,
  sink: ImageSink,
  options: CopyOptions = {},
): Promise<RawManifest> {
  try {
    options.signal?.throwIfAborted();
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
    const plan = await planManifestTree(source, root, options);
    await writeBlobs(source, sink, plan.blobs, options);
    for (const m of plan.manifests) {
      options.signal?.throwIfAborted();
      await sink.writeManifest(m);
    }
    options.signal?.throwIfAborted();
    await sink.commit(root);
    return root;
  } catch (e) {
    await sink.abort().catch(() => {});
    throw abortReason(options.signal, e);
  }
}

/** Once aborted, the abort reason is what failed, not whichever transfer it broke off. */
function abortReason(signal: AbortSignal | undefined, e: unknown): unknown {
  return signal?.aborted && signal.reason !== undefined ? signal.reason : e;
}

/** What copying a manifest tree writes: its blobs (each once) and child manifests, children first. */
interface TreePlan {
  blobs: Descriptor[];
  manifests: RawManifest[];
}

/**
 * Read every manifest under `m` (not `m` itself) and list what must be written, checking each
 * image's layer count and claimed blob sizes: a hostile manifest is refused before any transfer.
 */
async function planManifestTree(
  source: ImageSource,
  m: RawManifest,
  options: CopyOptions,
  plan: TreePlan = { blobs: [], manifests: [] },
  seen = new Set<string>(),
): Promise<TreePlan> {
  options.signal?.throwIfAborted();
  if (isIndexMediaType(m.mediaType)) {
    const index = parseIndex(m, `${source.name} index`);
    for (const child of index.manifests) {
      if (!isImageManifestMediaType(child.mediaType) && !isIndexMediaType(child.mediaType)) {
        throw new SutureError(
          "INVALID_MANIFEST",
          `${source.name} index lists a ${child.mediaType}, which suture cannot copy`,
        );
      }
      // An index may name the same manifest twice (two tags of one image): write it once.
      if (seen.has(child.digest)) continue;
      seen.add(child.digest);
      const childManifest = await source.manifest(child);
      await planManifestTree(source, childManifest, options, plan, seen);
      plan.manifests.push(childManifest);
    }
    return plan;
  }
  if (!isImageManifestMediaType(m.mediaType)) {
    throw new SutureError("INVALID_MANIFEST", `${source.name} is a ${m.mediaType}, which suture cannot copy`);
  }
  const what = `${source.name} manifest ${m.digest}`;
  const parsed = parseImageManifest(m, what);
  checkConfigSize(parsed.config, what);
  for (const layer of parsed.layers) checkBlobSize(layer, options.maxBlobSize ?? DEFAULT_MAX_BLOB_SIZE, what);
  plan.blobs.push(parsed.config, ...parsed.layers);
  return plan;
}

/** Write everything a manifest (image or index) references, then child manifests; not the root itself. */
export async function copyManifestTree(
  source: ImageSource,
  sink: ImageSink,
  m: RawManifest,
  options: CopyOptions,
  written: Set<string>,
): Promise<void> {
  const plan = await planManifestTree(source, m, options);
  await writeBlobs(source, sink, plan.blobs, options, written);
  for (const child of plan.manifests) await sink.writeManifest(child);
}

/**
 * Write blobs not yet at the sink (each distinct digest once, however often it is listed), a few
 * at a time, in the order given (configs first, so sinks can use them). The first failure, or an
 * abort of `options.signal`, stops the others: no new blob starts and the streams in flight are
 * destroyed, so the sink's writes fail promptly; it returns only once none is running, so the
 * sink's abort() finds nothing still writing.
 */
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
  options.signal?.throwIfAborted();
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const open = new Set<Readable>();
  const onAbort = () => {
    const reason = cancelled(signal.reason);
    for (const s of open) s.destroy(reason);
  };
  signal.addEventListener("abort", onAbort, { once: true });
  const limit = Math.max(1, options.concurrency ?? 4);
  let next = 0;
  const worker = async () => {
    while (next < todo.length) {
      signal.throwIfAborted();
      const d = todo[next++]!;
      if (await sink.hasBlob(d)) {
        options.progress?.({ type: "blob", action: "exists", digest: d.digest, bytes: 0, total: d.size });
        continue;
      }
      signal.throwIfAborted();
      await sink.writeBlob(
        d,
        async () => {
          signal.throwIfAborted();
          const stream = await blobs.blob(d);
          if (signal.aborted) stream.destroy(cancelled(signal.reason));
          else {
            open.add(stream);
            stream.once("close", () => open.delete(stream));
          }
          return stream;
        },
        { mountFrom: options.mountFrom, progress: options.progress },
      );
    }
  };
  let failure: { error: unknown } | undefined;
  try {
    // Every worker has settled before this returns or throws: a sink's abort() must not race
    // writes still creating files or upload sessions.
    await Promise.all(
      Array.from({ length: Math.min(limit, todo.length) }, () =>
        worker().catch((e) => {
          failure ??= { error: e };
          if (!stop.signal.aborted) stop.abort(e);
        }),
      ),
    );
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (failure) throw abortReason(options.signal, failure.error);
}

/** The error a broken-off transfer fails with: the abort's reason when it is one of ours. */
function cancelled(reason: unknown): SutureError {
  return reason instanceof SutureError
    ? reason
    : new SutureError("CANCELLED", "the copy was stopped", { cause: reason });
}

/** Write one image value (e.g. a patched image) to a sink and commit it. */
export async function writeImage(image: Image, sink: ImageSink, options: CopyOptions = {}): Promise<void> {
  try {
    await writeBlobs(image.blobs, sink, [image.parsed.config, ...image.parsed.layers], options);
    options.signal?.throwIfAborted();
    await sink.commit(image.manifest);
  } catch (e) {
    await sink.abort().catch(() => {});
    throw abortReason(options.signal, e);
  }
}
