import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { decompressAuto } from "../archive/compression.ts";
import { type ExtractOptions, extractTar } from "../archive/tar/extract.ts";
import { asSutureError, SutureError } from "../errors/errors.ts";
import { placeDirectory } from "../fs/atomic.ts";
import { type PathFacts, parsePathFacts, serializePathFacts } from "../fs/owners.ts";
import { digestHex } from "../image/digest.ts";
import type { Image } from "../image/image.ts";
import type { BlobProvider } from "../image/source.ts";
import type { Descriptor } from "../oci/manifest.ts";
import type { ProgressSink } from "../progress/events.ts";
import { inUserNamespace, overlayFlavour, overlayXattrPrefix } from "./userns.ts";

/** Bumped when the on-disk form of an extracted layer changes; older entries are re-extracted. */
const CACHE_FORMAT = 1;

/** Layers extracted at the same time unless told otherwise: extraction is CPU- and disk-bound. */
export const LAYERS_AT_ONCE = 2;

export interface MaterializeOptions {
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** Layers extracted at the same time (default LAYERS_AT_ONCE). */
  concurrency?: number;
}

/** What `<cacheDir>/layers/<hex>/complete` records about an extracted layer. */
export interface LayerCacheMarker {
  format: number;
  diffID: string;
  /** The compressed blob it was extracted from (any blob with this diff_id gives the same tree). */
  digest: string;
  extractedAt: string;
  entries: number;
  bytes: number;
}

/**
 * Where a layer lives in the cache. Layout, per uncompressed digest (diff_id):
 *
 *     <cacheDir>/layers/<hex>/diff/      the extracted tree: an overlayfs lower dir
 *     <cacheDir>/layers/<hex>/complete   JSON LayerCacheMarker, present once extraction finished
 *     <cacheDir>/tmp/                    extractions in progress (same filesystem, for rename)
 *
 * The tree is built in tmp/ and renamed into place together with its marker, so a reader never
 * sees a partial layer; the marker is inside the renamed directory, so "directory exists" and
 * "extraction complete" cannot disagree.
 */
export function layerCacheDir(cacheDir: string, diffID: string): string {
  return join(cacheDir, layersDirName(), digestHex(diffID));
}

/**
 * Root mode's trees mark opaque dirs with `trusted.overlay.opaque`, user-namespace mode's with
 * `user.overlay.opaque` (and their owners are mapped ids): the two never share a tree.
 */
function layersDirName(): string {
  const flavour = overlayFlavour();
  return flavour === "root" ? "layers" : flavour === "plain" ? "layers-plain" : "layers-userxattr";
}

/** Mode 3's record of a cached layer's real owners, modes, devices and xattrs (see PathFacts). */
const FACTS_FILE = "owners.json";

/**
 * The real facts of a mode-3 cached layer, by path (its tree on disk has the caller's owner and
 * placeholders for devices and whiteouts). Undefined for layers of the other modes.
 */
export async function readLayerFacts(lowerDir: string): Promise<Map<string, PathFacts> | undefined> {
  const text = await readFile(join(dirname(lowerDir), FACTS_FILE), "utf8").catch(() => undefined);
  return text === undefined ? undefined : parsePathFacts(text);
}

/** The overlay lower dir of a cached layer. */
export function layerLowerDir(cacheDir: string, diffID: string): string {
  return join(layerCacheDir(cacheDir, diffID), "diff");
}

/**
 * Extract every layer of an image into the content-addressed cache (once per diff_id) and return
 * the lower dirs, bottom layer first.
 *
 * Each layer blob is read through the blob provider (which verifies the compressed digest while
 * streaming), decompressed by sniffing, hashed uncompressed and compared with the config's
 * diff_id (DIGEST_MISMATCH on difference), and extracted safely (UNSAFE_LAYER on escapes; see
 * extractTar). Nothing reaches the cache unless both digests matched.
 *
 * Concurrency: safe between callers in this process (shared in-flight work) and between
 * processes (each extracts into its own temp dir; the first rename wins and the others discard
 * their copy). Cached layers are read-only by contract: never mount one as an upper dir.
 *
 * A diff_id listed twice is fetched and extracted once, and keeps only its topmost occurrence in
 * the returned list: overlayfs refuses the same lower dir twice, and the lower copy can never show
 * through the upper one (everything it contributes the upper copy contributes too, from higher
 * up). More than MAX_LOWER_DIRS distinct layers are refused before anything is fetched.
 */
export async function materializeLayers(
  image: Image,
  cacheDir: string,
  options: MaterializeOptions = {},
): Promise<string[]> {
  const diffIDs = image.config.rootfs.diff_ids;
  const layers = distinctLayers(image);
  await pruneStaleTemp(cacheDir);
  const dirs = new Array<string>(layers.length);
  await forEachAtOnce(layers, options.concurrency ?? LAYERS_AT_ONCE, options.signal, async (l, slot) => {
    dirs[slot] = await materializeLayer(image.blobs, l.descriptor, l.diffID, cacheDir, {
      ...options,
      label: `layer ${l.index + 1}/${diffIDs.length}`,
    });
  });
  return dirs;
}

/** One layer of an image as the sandbox stacks it. */
export interface StackedLayer {
  descriptor: Descriptor;
  diffID: string;
  /** Its position in the manifest (0 = bottom). */
  index: number;
}

/**
 * The layers an overlay stacks, bottom first: each diff_id once, at its topmost occurrence (see
 * materializeLayers). INVALID_MANIFEST when the config's diff_ids do not match the layers;
 * TOO_LARGE past overlayfs' stacking limit, before anything is fetched.
 */
export function distinctLayers(image: Image): StackedLayer[] {
  const diffIDs = image.config.rootfs.diff_ids;
  if (diffIDs.length !== image.parsed.layers.length) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `image has ${image.parsed.layers.length} layers but its config lists ${diffIDs.length} diff_ids`,
    );
  }
  // Topmost occurrence of each diff_id, bottom first.
  const topmost = new Map<string, number>();
  diffIDs.forEach((diffID, i) => {
    topmost.delete(diffID);
    topmost.set(diffID, i);
  });
  if (topmost.size > MAX_LOWER_DIRS) {
    throw new SutureError(
      "TOO_LARGE",
      `image has ${topmost.size} distinct layers; overlayfs stacks at most ${MAX_LOWER_DIRS}: squash the image`,
    );
  }
  return [...topmost.values()].map((i) => ({
    descriptor: image.parsed.layers[i]!,
    diffID: diffIDs[i]!,
    index: i,
  }));
}

/** Run `fn` over `items`, at most `concurrency` at a time; the first failure rejects. */
export async function forEachAtOnce<T>(
  items: readonly T[],
  concurrency: number,
  signal: AbortSignal | undefined,
  fn: (item: T, slot: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const slot = next++;
      signal?.throwIfAborted();
      await fn(items[slot]!, slot);
    }
  };
  const n = Math.max(1, Math.min(concurrency, items.length));
  await Promise.all(Array.from({ length: n }, worker));
}

/** The kernel's overlayfs stacks at most this many lower dirs (OVL_MAX_STACK). */
const MAX_LOWER_DIRS = 500;

const inFlight = new Map<string, Promise<string>>();

/** Extractions older than this in tmp/ belong to a process that died; they are removed. */
const STALE_TEMP_MS = 24 * 60 * 60 * 1000;

export async function pruneStaleTemp(cacheDir: string): Promise<void> {
  const tmpRoot = join(cacheDir, "tmp");
  const names = await readdir(tmpRoot).catch(() => [] as string[]);
  const now = Date.now();
  for (const name of names) {
    const st = await stat(join(tmpRoot, name)).catch(() => undefined);
    if (st && now - st.mtimeMs > STALE_TEMP_MS)
      await rm(join(tmpRoot, name), { recursive: true, force: true });
  }
}

/** Materialise one layer (see materializeLayers); returns its lower dir. */
export function materializeLayer(
  blobs: BlobProvider,
  descriptor: Descriptor,
  diffID: string,
  cacheDir: string,
  options: MaterializeOptions & { label?: string } = {},
): Promise<string> {
  const dir = layerCacheDir(cacheDir, diffID);
  const running = inFlight.get(dir);
  if (running) return running;
  const p = materializeUncached(blobs, descriptor, diffID, cacheDir, dir, options).finally(() =>
    inFlight.delete(dir),
  );
  inFlight.set(dir, p);
  return p;
}

async function readMarker(dir: string): Promise<LayerCacheMarker | undefined> {
  try {
    const m = JSON.parse(await readFile(join(dir, "complete"), "utf8")) as LayerCacheMarker;
    return m.format === CACHE_FORMAT ? m : undefined;
  } catch {
    return undefined;
  }
}

async function materializeUncached(
  blobs: BlobProvider,
  descriptor: Descriptor,
  diffID: string,
  cacheDir: string,
  dir: string,
  options: MaterializeOptions & { label?: string },
): Promise<string> {
  const lower = join(dir, "diff");
  if (await readMarker(dir)) return lower;

  const progress = options.progress ?? (() => {});
  const started = performance.now();
  const label = options.label ?? "layer";
  const short = descriptor.digest.slice(0, 19);
  progress({ type: "step", step: "extract-layer", message: `extracting ${label} ${short}` });

  const tmp = await newExtraction(cacheDir, diffID);
  try {
    const record = overlayFlavour() === "plain" ? new Map<string, PathFacts>() : undefined;
    const stats = await extractLayerBlob(blobs, descriptor, diffID, join(tmp, "diff"), {
      signal: options.signal,
      label,
      record,
    });
    if (record) await writeFile(join(tmp, FACTS_FILE), serializePathFacts(record));
    await commitExtraction(tmp, cacheDir, descriptor, diffID, stats);
    progress({
      type: "step-done",
      step: "extract-layer",
      message: `${label}: ${stats.entries} entries, ${stats.bytes} bytes`,
      elapsedMs: Math.round(performance.now() - started),
    });
    return lower;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * A fresh extraction dir in the cache's tmp/ (the same filesystem, so it can be renamed into
 * place): `<tmp>/diff` is the empty root to extract into. The caller removes `<tmp>` unless
 * commitExtraction moved it.
 */
export async function newExtraction(cacheDir: string, diffID: string): Promise<string> {
  const tmpRoot = join(cacheDir, "tmp");
  await mkdir(tmpRoot, { recursive: true, mode: 0o700 });
  await mkdir(join(cacheDir, layersDirName()), { recursive: true, mode: 0o755 });
  const tmp = join(tmpRoot, `${digestHex(diffID).slice(0, 16)}-${randomBytes(6).toString("hex")}`);
  await mkdir(tmp, { mode: 0o700 });
  await mkdir(join(tmp, "diff"), { mode: 0o755 });
  return tmp;
}

/**
 * Make a finished extraction (newExtraction's dir, its `diff` now the layer's whole tree) the
 * cache's entry for `diffID`, marker included; returns the cached lower dir. If another process
 * got there first, theirs is kept (and used). Only for a tree that is exactly the layer's: an
 * extraction that left anything out never comes here.
 */
export async function commitExtraction(
  tmp: string,
  cacheDir: string,
  descriptor: Descriptor,
  diffID: string,
  stats: { entries: number; bytes: number },
): Promise<string> {
  const marker: LayerCacheMarker = {
    format: CACHE_FORMAT,
    diffID,
    digest: descriptor.digest,
    extractedAt: new Date().toISOString(),
    entries: stats.entries,
    bytes: stats.bytes,
  };
  await writeFile(join(tmp, "complete"), JSON.stringify(marker));
  await mkdir(join(cacheDir, layersDirName()), { recursive: true, mode: 0o755 });
  const dir = layerCacheDir(cacheDir, diffID);
  await commit(tmp, dir, join(cacheDir, "tmp"));
  return join(dir, "diff");
}

/**
 * Rename the finished extraction into place; if another process got there first, keep theirs. A
 * directory without a current marker (an older cache format or damage) is replaced: nothing can be
 * mounting it, since nobody uses a layer without its marker.
 */
async function commit(tmp: string, dir: string, tmpRoot: string): Promise<void> {
  await placeDirectory(tmp, dir, {
    keepExisting: async (existing) => (await readMarker(existing)) !== undefined,
    asideDir: tmpRoot,
    failure: `cannot store layer in ${dir}`,
  });
}

/**
 * Stream one layer blob into `into` with extractTar: decompressed by sniffing, its uncompressed
 * digest checked against `diffID` at the end (DIGEST_MISMATCH), errors named by `label`. `sparse`
 * passes extractTar's select/deferred/rootHasEntries through (sandbox/sparse-layers.ts).
 */
export async function extractLayerBlob(
  blobs: BlobProvider,
  descriptor: Descriptor,
  diffID: string,
  into: string,
  {
    signal,
    label,
    record,
    sparse,
  }: {
    signal?: AbortSignal;
    label: string;
    record?: Map<string, PathFacts>;
    sparse?: Pick<ExtractOptions, "select" | "deferred" | "rootHasEntries">;
  },
) {
  digestHex(diffID);
  signal?.throwIfAborted();
  const blob = await blobs.blob(descriptor);
  const plain = decompressAuto(blob);
  // decompressAuto pipes with .pipe(), which does not forward errors: a digest mismatch at the
  // end of the blob must fail the extraction, not go unheard.
  blob.on("error", (e) => plain.destroy(e));
  const onAbort = () => {
    const reason = new SutureError("CANCELLED", `extraction of ${label} was cancelled`);
    blob.destroy(reason);
    plain.destroy(reason);
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const hash = createHash("sha256");
  async function* hashed(stream: Readable) {
    for await (const chunk of stream) {
      hash.update(chunk as Buffer);
      yield chunk as Buffer;
    }
  }
  try {
    const stats = await extractTar(hashed(plain), into, {
      whiteouts: "overlay",
      opaqueXattr: `${overlayXattrPrefix()}opaque`,
      record,
      signal,
      ...sparse,
    });
    const actual = `sha256:${hash.digest("hex")}`;
    if (actual !== diffID) {
      throw new SutureError(
        "DIGEST_MISMATCH",
        `${label} (${descriptor.digest}) uncompresses to ${actual}, but the image config says its diff_id is ${diffID}: the image is corrupt or was tampered with`,
      );
    }
    return stats;
  } catch (e) {
    if (signal?.aborted)
      throw new SutureError("CANCELLED", `extraction of ${label} was cancelled`, { cause: e });
    if (e instanceof SutureError && (e.code === "UNSAFE_LAYER" || e.code === "INVALID_ARCHIVE")) {
      throw new SutureError(e.code, `${label} (${descriptor.digest}): ${e.message}`, { cause: e });
    }
    if (inUserNamespace() && isUnmappableOwner(e)) {
      throw new SutureError(
        "SANDBOX",
        `${label} has files of owners this user namespace cannot map (it maps only your own id): add a range for your user to /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER)`,
        { cause: e },
      );
    }
    throw asSutureError(e, "IO", `cannot extract ${label} (${descriptor.digest})`);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    blob.destroy();
    plain.destroy();
  }
}

/** chown(2) to an id the namespace does not map fails with EINVAL. */
function isUnmappableOwner(e: unknown): boolean {
  for (let c: unknown = e; c instanceof Error; c = c.cause) {
    const errno = c as NodeJS.ErrnoException;
    if (errno.code === "EINVAL" && /chown/.test(errno.syscall ?? "")) return true;
  }
  return false;
}

/** Whether a layer is already in the cache (marker present and current). */
export async function isLayerCached(cacheDir: string, diffID: string): Promise<boolean> {
  const dir = layerCacheDir(cacheDir, diffID);
  return (
    (await readMarker(dir)) !== undefined &&
    (await stat(join(dir, "diff")).catch(() => undefined)) !== undefined
  );
}
