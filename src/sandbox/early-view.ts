import { readlink } from "node:fs/promises";
import { posix } from "node:path";
import { SutureError } from "../errors/errors.ts";
import { type ImageFileAccess, MAX_IMAGE_FILE_BYTES } from "../fs/in-root.ts";
import { readFileCapped } from "../fs/read-capped.ts";
import { LowerView } from "../layer/lower-view.ts";

/**
 * The image's files while its layers are still being extracted, so that work needing a few small
 * files (the apt configuration and keyrings) can start before the large layers end.
 *
 * Each layer's extraction reports the member it is at. Layer tars are written in tar order (names
 * sorted within each directory, depth first: `tar --sort=name`, BuildKit, mmdebstrap), so once a
 * layer has moved past a path in that order, the layer's copy of the path is on disk and final. A
 * read waits until the layers it waits for have moved past the path or ended, then looks it up top
 * layer first, as overlayfs would (a whiteout hides the layers below).
 *
 * It waits for the bottom `waitFor` layers only, the extraction's first wave, where a Debian
 * image's base system is; a layer above them is looked at once it is complete and assumed until
 * then not to hold the path. Waiting for every layer would hold the reads until the last layer
 * had streamed past `/usr/share/keyrings`: in an image whose upper layers are an application's
 * (`/usr/local`, `/opt`), all but the end of the extraction.
 *
 * Nothing here is trusted to be the image's final view: an archive in another order, an opaque
 * directory, a symlinked parent or a file replaced while read can make an answer differ. Whoever
 * uses it records what it read and compares every read with the merged tree afterwards
 * (patch/early-work.ts); a difference discards the early result.
 */
export class EarlyLayerView implements ImageFileAccess {
  readonly #layers: { dir?: string; at?: string[]; done: boolean }[];
  readonly #waitFor: number;
  #waiters: { rel: string[]; subtree: boolean; wake: () => void; fail: (e: unknown) => void }[] = [];
  #closed?: SutureError;

  /** `count` layers, bottom first (the overlay's stacking order); reads wait for the bottom `waitFor`. */
  constructor(count: number, { waitFor = count }: { waitFor?: number } = {}) {
    this.#layers = Array.from({ length: count }, () => ({ done: false }));
    this.#waitFor = waitFor;
  }

  /** Layer `slot` (0 = bottom) is being written into `dir`. */
  started(slot: number, dir: string): void {
    const layer = this.#layers[slot];
    if (layer) layer.dir = dir;
  }

  /** Layer `slot`'s extraction reached the member at layer path `rel`; every member before it is written. */
  member(slot: number, rel: string): void {
    const layer = this.#layers[slot];
    if (!layer || layer.done) return;
    layer.at = rel === "" ? [] : rel.split("/");
    if (this.#waiters.length) this.#wake();
  }

  /**
   * Layer `slot` is complete and about to move into the layer cache: reads wait for `done` with its
   * new dir, rather than look it up at the old one while it is renamed away (which would discard
   * the early result).
   */
  moving(slot: number): void {
    const layer = this.#layers[slot];
    if (layer && !layer.done) layer.at = undefined;
  }

  /** Layer `slot` is complete, now in `dir` (where the layer cache committed it). */
  done(slot: number, dir: string): void {
    const layer = this.#layers[slot];
    if (!layer) return;
    layer.dir = dir;
    layer.done = true;
    this.#wake();
  }

  /** No more progress will come (the extraction ended, failed, or the sandbox is gone): waiting reads fail. */
  close(): void {
    this.#closed ??= new SutureError("CANCELLED", "the layers' early view was closed");
    for (const w of this.#waiters) w.fail(this.#closed);
    this.#waiters = [];
  }

  async readFile(path: string, depth = 0): Promise<Uint8Array | undefined> {
    const parts = relOf(path);
    await this.#waitPast(parts, false);
    const entry = this.#view().lookup(parts.join("/"));
    if (!entry || entry.stat.isDirectory()) return undefined;
    if (entry.stat.isSymbolicLink()) {
      // Followed through the layers, as the merged tree would; the target may sit in another layer.
      if (depth >= 16) return undefined;
      const target = await readlink(entry.path);
      return this.readFile(posix.resolve(`/${parts.slice(0, -1).join("/")}`, target), depth + 1);
    }
    if (!entry.stat.isFile()) return undefined;
    return readFileCapped(entry.path, {
      limit: MAX_IMAGE_FILE_BYTES,
      what: `${path} in the image`,
      noFollow: true,
      regularOnly: true,
    });
  }

  async listDir(path: string): Promise<string[]> {
    const parts = relOf(path);
    await this.#waitPast(parts, true);
    return this.#view().names(parts.join("/")).sort();
  }

  /**
   * The layers as overlayfs would stack them (whiteouts, opaque dirs). Made per read: a layer's
   * directory moves when the layer cache commits it, and the view caches directories.
   */
  #view(): LowerView {
    const dirs: string[] = [];
    for (const [slot, l] of this.#layers.entries()) {
      if (slot < this.#waitFor) dirs.push(l.dir ?? this.#missing(slot));
      else if (l.done && l.dir !== undefined) dirs.push(l.dir);
    }
    return new LowerView(dirs);
  }

  #missing(slot: number): never {
    throw new SutureError("INTERNAL", `layer ${slot + 1} has no directory in the early view`);
  }

  #waitPast(rel: string[], subtree: boolean): Promise<void> {
    if (this.#allPast(rel, subtree)) return Promise.resolve();
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((wake, fail) => this.#waiters.push({ rel, subtree, wake, fail }));
  }

  #wake(): void {
    this.#waiters = this.#waiters.filter((w) => {
      if (!this.#allPast(w.rel, w.subtree)) return true;
      w.wake();
      return false;
    });
  }

  #allPast(rel: string[], subtree: boolean): boolean {
    return this.#layers.every(
      (l, slot) =>
        slot >= this.#waitFor ||
        l.done ||
        (l.dir !== undefined && l.at !== undefined && isPast(l.at, rel, subtree)),
    );
  }
}

function relOf(path: string): string[] {
  const normal = posix.normalize(`/${path}`).replace(/^\/+|\/+$/g, "");
  return normal === "" ? [] : normal.split("/");
}

/**
 * Whether a layer at member `at` has written `rel` (and, for a directory's listing, all of it):
 * `at` comes after `rel` in tar order (component by component) and is not inside it.
 */
function isPast(at: readonly string[], rel: readonly string[], subtree: boolean): boolean {
  const n = Math.min(at.length, rel.length);
  for (let i = 0; i < n; i++) {
    if (at[i] === rel[i]) continue;
    return at[i]! > rel[i]!;
  }
  // One is a prefix of the other: `at` is `rel` itself or inside it (not past it when the whole
  // directory is wanted), or an ancestor of `rel` (not there yet).
  return at.length > rel.length && !subtree;
}
