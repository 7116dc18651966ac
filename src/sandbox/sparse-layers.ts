import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { DeferredMember } from "../archive/tar/extract.ts";
import type { Image } from "../image/image.ts";
import type { ProgressSink } from "../progress/events.ts";
import type { EarlyLayerView } from "./early-view.ts";
import {
  commitExtraction,
  distinctLayers,
  extractLayerBlob,
  forEachAtOnce,
  isLayerCached,
  LAYERS_AT_ONCE,
  layerLowerDir,
  newExtraction,
  pruneStaleTemp,
  type StackedLayer,
} from "./layer-cache.ts";

/**
 * Sparse lowers (issue 15): the image's layers extracted metadata-complete but content-sparse, for
 * a patch that runs none of the image's programs (the native dpkg engine with native hooks).
 *
 * WANTED is a static rule on a member's path, the same in every layer so that overlay precedence
 * between layers stays what it is (a path is either extracted in every layer or in none). Every
 * directory, symlink, whiteout, opaque marker and device is always extracted with its real
 * metadata: path resolution, overlay semantics and the layer builder's directory comparisons
 * depend on them, and they cost no content. Regular files (and hardlinks) are deferred where
 * Debian packages never ship files (Debian Policy 9.1, the FHS): /usr/local, /opt, /home, /srv,
 * /root, /tmp, /var/tmp, and top-level directories the FHS does not name (/app, /workspace,
 * /models …), which is where application stacks (Python site-packages, models, JDKs) live.
 *
 * Exceptions, because native code that replaces maintainer scripts reads them:
 * - the direct children of ldconfig's default search dirs below /usr/local (/usr/local/lib and
 *   its multiarch dir, as libc6's ld.so.conf.d names them) and their glibc-hwcaps subdirs: the
 *   native ldconfig (engines/dpkg/native/hooks/ld-so-cache.ts) reads every library there. Dirs
 *   other ld.so.conf.d files name are brought in when the sandbox is made (sandbox.ts);
 * - /usr/local/share/ca-certificates: update-ca-certificates (and its native equivalent) adds the
 *   local certificates found there to the bundle;
 * - /root's direct children (a base layer's dotfiles; see below).
 *
 * Anything else that reads a deferred file is made sound by completion on demand: `ensure` brings
 * named paths in (the packages being replaced, the upper dir's paths before the layer is built),
 * and running a program of the image (runc) completes every layer first (sandbox.ts).
 */
export function wantedInSparseLower(rel: string): boolean {
  const slash = rel.indexOf("/");
  const top = slash === -1 ? rel : rel.slice(0, slash);
  // /root's own dotfiles (.bashrc, .profile) are in nearly every Debian base layer: leaving them
  // out would cost that whole layer a second pass when the image's programs run. What lives
  // deeper (.cache/pip, …) stays out.
  if (top === "root") return !rel.slice("root/".length).includes("/");
  if (!FHS_TOP_LEVEL.has(top)) return false;
  if (top === "usr") return !rel.startsWith("usr/local/") || wantedBelowUsrLocal(rel);
  if (top === "var") return !rel.startsWith("var/tmp/");
  return true;
}

/**
 * Top-level directories Debian packages ship files in (the FHS's, without /opt, /home, /srv,
 * /root and /tmp, which Policy leaves to the local administrator and to programs at run time).
 */
const FHS_TOP_LEVEL = new Set([
  "bin",
  "boot",
  "dev",
  "etc",
  "lib",
  "lib32",
  "lib64",
  "libx32",
  "media",
  "mnt",
  "proc",
  "run",
  "sbin",
  "sys",
  "usr",
  "var",
]);

/** usr/local/lib/F, usr/local/lib/TRIPLET/F, and either's glibc-hwcaps/NAME/F; local CA certificates. */
const WANTED_BELOW_USR_LOCAL =
  /^usr\/local\/(?:lib\/(?:[a-z0-9_]+-linux-[a-z0-9_]+\/)?(?:glibc-hwcaps\/[^/]+\/)?[^/]+|share\/ca-certificates\/.+)$/;

function wantedBelowUsrLocal(rel: string): boolean {
  return WANTED_BELOW_USR_LOCAL.test(rel);
}

/** One lower dir of a sparse stack. */
export interface SparseLower {
  layer: StackedLayer;
  /** The overlay lower dir: the layer cache's full tree, or this run's sparse tree (`<tmp>/diff`). */
  dir: string;
  /** Members left out, by layer path; undefined for a full layer from the cache. */
  deferred?: Map<string, DeferredMember>;
  /** A sparse tree's extraction dir in the cache's tmp/ (removed by dispose, or committed when complete). */
  tmp?: string;
  /** What the first pass extracted, plus what came in since (the cache marker's figures). */
  stats?: { entries: number; bytes: number };
}

export interface SparseOptions {
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** Layers extracted at the same time (default LAYERS_AT_ONCE, as the layer cache). */
  concurrency?: number;
  /** Told where each layer is written and how far its extraction got (early-view.ts). */
  early?: EarlyLayerView;
  /** Layers whose blob is at most this many bytes are extracted whole (default SMALL_LAYER_BYTES). */
  wholeLayersUpTo?: number;
}

/**
 * A layer blob this small is extracted whole: whatever it could leave out costs next to nothing to
 * write, and a complete layer goes into the layer cache, where the next patch of the same base
 * finds it instead of streaming the layer again (the nginx lab image's third layer, 5.5 KB with one
 * 35-byte file in /srv, was extracted on every layer-rebuilt patch). What it expands to is bounded
 * only as any full extraction's is (deflate's ratio is about 1:1000; zstd's is far higher), which
 * every layer that goes into the cache gets anyway.
 */
export const SMALL_LAYER_BYTES = 64 * 1024;

/**
 * The lower dirs of a sparse sandbox, and what each left out. A layer already complete in the
 * layer cache is used as it is; every other layer is streamed once (the layer cache's own
 * decompress + diff_id verification, extractLayerBlob) into an extraction dir of the cache's tmp/.
 * A layer that left nothing out is a full extraction and is committed to the cache at once (the
 * next patch finds it); one that left something out stays private to this run until `complete`
 * brings the rest in and commits it: a sparse tree never enters the shared cache, where a reader
 * would take it for the layer.
 */
export class SparseLayers {
  readonly lowers: readonly SparseLower[];
  readonly #image: Image;
  readonly #options: SparseOptions;

  readonly #cacheDir: string;

  private constructor(image: Image, cacheDir: string, lowers: SparseLower[], options: SparseOptions) {
    this.#image = image;
    this.#cacheDir = cacheDir;
    this.lowers = lowers;
    this.#options = options;
  }

  static async extract(image: Image, cacheDir: string, options: SparseOptions = {}): Promise<SparseLayers> {
    const layers = distinctLayers(image);
    const count = image.config.rootfs.diff_ids.length;
    const lowers = new Array<SparseLower>(layers.length);
    const progress = options.progress ?? (() => {});
    const made = new SparseLayers(image, cacheDir, lowers, options);
    // A run that died leaves its sparse trees in tmp/ too; they go as the layer cache's do.
    await pruneStaleTemp(cacheDir);
    try {
      await forEachAtOnce(
        layers,
        options.concurrency ?? LAYERS_AT_ONCE,
        options.signal,
        async (layer, slot) => {
          if (await isLayerCached(cacheDir, layer.diffID)) {
            lowers[slot] = { layer, dir: layerLowerDir(cacheDir, layer.diffID) };
            options.early?.done(slot, lowers[slot].dir);
            return;
          }
          const label = `layer ${layer.index + 1}/${count}`;
          const whole = layer.descriptor.size <= (options.wholeLayersUpTo ?? SMALL_LAYER_BYTES);
          const tmp = await newExtraction(cacheDir, layer.diffID);
          const lower: SparseLower = { layer, dir: join(tmp, "diff"), tmp, deferred: new Map() };
          lowers[slot] = lower;
          options.early?.started(slot, lower.dir);
          const started = performance.now();
          progress({
            type: "step",
            step: "extract-layer",
            message: `extracting ${label} ${layer.descriptor.digest.slice(0, 19)} (${whole ? "whole: a small layer" : "sparse"})`,
          });
          const stats = await extractLayerBlob(image.blobs, layer.descriptor, layer.diffID, lower.dir, {
            signal: options.signal,
            label,
            sparse: {
              deferred: lower.deferred!,
              select: (rel, type) => {
                options.early?.member(slot, rel);
                return !whole && (type === "file" || type === "hardlink") && !wantedInSparseLower(rel)
                  ? "defer"
                  : "extract";
              },
            },
          });
          lower.stats = { entries: stats.entries, bytes: stats.bytes };
          let deferredBytes = 0;
          for (const m of lower.deferred!.values()) deferredBytes += m.size;
          progress({
            type: "step-done",
            step: "extract-layer",
            message: `${label}: ${stats.entries} entries, ${stats.bytes} bytes; ${lower.deferred!.size} files (${deferredBytes} bytes) left out until needed`,
            elapsedMs: Math.round(performance.now() - started),
          });
          if (lower.deferred!.size === 0) {
            options.early?.moving(slot);
            await made.#commit(lower);
          }
          options.early?.done(slot, lower.dir);
        },
      );
    } catch (e) {
      await made.dispose();
      throw e;
    }
    return made;
  }

  /** A sparse tree that left nothing out (any more) is the layer's: it becomes the cache's entry. */
  async #commit(lower: SparseLower): Promise<void> {
    const { layer, tmp, stats } = lower;
    if (!tmp || !stats) return;
    lower.dir = await commitExtraction(tmp, this.#cacheDir, layer.descriptor, layer.diffID, stats);
    lower.tmp = undefined;
    lower.deferred = undefined;
    await rm(tmp, { recursive: true, force: true });
  }

  /**
   * Bring in everything every layer left out (one more pass over each such layer's blob, writing
   * only what the first left out) and commit the completed trees to the layer cache: the lowers
   * are then the full layers. The caller unmounts the overlay around this, as for `ensure`.
   */
  async complete(): Promise<void> {
    for (const lower of this.lowers)
      if (lower.deferred?.size) await this.ensureIn(lower, [...lower.deferred.keys()]);
    for (const lower of this.lowers) await this.#commit(lower);
  }

  /** Remove the sparse trees still private to this run. */
  async dispose(): Promise<void> {
    for (const lower of this.lowers)
      if (lower?.tmp) {
        await rm(lower.tmp, { recursive: true, force: true });
        lower.tmp = undefined;
      }
  }

  /** The lower dirs, bottom first (what overlayfs stacks). */
  get lowerDirs(): string[] {
    return this.lowers.map((l) => l.dir);
  }

  /** Members still left out, over all layers. */
  get deferredCount(): number {
    let n = 0;
    for (const l of this.lowers) n += l.deferred?.size ?? 0;
    return n;
  }

  /** Whether any layer left out the member at layer path `rel`. */
  isDeferred(rel: string): boolean {
    return this.lowers.some((l) => l.deferred?.has(rel));
  }

  /** Layer paths of left-out members directly in directory `dirRel` ("" is the root), in any layer. */
  deferredChildren(dirRel: string): string[] {
    const out = new Set<string>();
    const prefix = dirRel === "" ? "" : `${dirRel}/`;
    for (const l of this.lowers)
      for (const rel of l.deferred?.keys() ?? [])
        if (rel.startsWith(prefix) && !rel.slice(prefix.length).includes("/")) out.add(rel);
    return [...out];
  }

  /**
   * Bring the left-out members at these layer paths into every layer that left them out (with the
   * members they are hardlinks of), byte-exact, by a second pass over each such layer's blob,
   * fetched again through the image's blob provider and verified again. The caller unmounts the
   * overlay around this (overlayfs caches lookups; a changed lower dir is undefined behaviour).
   * Rare by the rule above: Debian packages own nothing where members are left out, so a patch
   * only comes here for what an image put under a package's path through a symlink, or for
   * package files written where the image already had a file.
   *
   * The pass is extractTar's own (same refusals: no write outside the dir, no symlinked parent,
   * O_NOFOLLOW|O_EXCL creation); it writes the named members only and sets the times of their
   * directories back to the archive's (creating an entry changes its directory's mtime, which a
   * copy-up would carry into the patch layer). Returns how many members came in.
   */
  async ensure(rels: Iterable<string>): Promise<number> {
    const asked = [...rels];
    let brought = 0;
    await forEachAtOnce(
      this.lowers.filter((l) => l.deferred?.size),
      this.#options.concurrency ?? LAYERS_AT_ONCE,
      this.#options.signal,
      async (lower) => {
        brought += await this.ensureIn(lower, asked);
      },
    );
    return brought;
  }

  /** `ensure` in one layer; returns how many members came in. */
  private async ensureIn(lower: SparseLower, asked: readonly string[]): Promise<number> {
    const deferred = lower.deferred;
    if (!deferred?.size) return 0;
    const want = new Set<string>();
    let bytes = 0;
    const add = (rel: string) => {
      // A hardlink needs its target first (it comes before it in the archive, as extraction requires).
      for (let r: string | undefined = rel; r !== undefined && !want.has(r); ) {
        const m = deferred.get(r);
        if (!m) break;
        want.add(r);
        bytes += m.size;
        r = m.linkname;
      }
    };
    for (const rel of asked) add(rel);
    if (want.size === 0) return 0;
    const ancestors = new Set<string>([""]);
    for (const rel of want)
      for (let i = rel.indexOf("/"); i !== -1; i = rel.indexOf("/", i + 1)) ancestors.add(rel.slice(0, i));
    const label = `layer ${lower.layer.index + 1}/${this.#image.config.rootfs.diff_ids.length}`;
    const started = performance.now();
    await extractLayerBlob(this.#image.blobs, lower.layer.descriptor, lower.layer.diffID, lower.dir, {
      signal: this.#options.signal,
      label,
      sparse: {
        rootHasEntries: true,
        // Directories on the way are visited only to set their times back (extractTar's finish).
        select: (rel, type) =>
          type === "directory"
            ? ancestors.has(rel)
              ? "extract"
              : "skip"
            : (type === "file" || type === "hardlink") && want.has(rel)
              ? "extract"
              : "skip",
      },
    });
    for (const rel of want) deferred.delete(rel);
    if (lower.stats) lower.stats.bytes += bytes;
    this.#options.progress?.({
      type: "info",
      message: `${label}: ${want.size} left-out files brought in (${Math.round(performance.now() - started)} ms)`,
    });
    return want.size;
  }
}
