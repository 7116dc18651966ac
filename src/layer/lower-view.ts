import { type BigIntStats, lstatSync } from "node:fs";
import { join } from "node:path";
import { SutureError } from "../errors/errors.ts";
import { isWhiteout, readOpaque } from "./overlay.ts";

/** The entry a path resolves to in the lower layers. */
export interface LowerEntry {
  /** Absolute path on disk, inside the lower dir that supplies it. */
  path: string;
  stat: BigIntStats;
}

/**
 * What the lower layers of an overlay show at a path, resolved the way overlayfs resolves it:
 * layers are searched top-down; a whiteout ends the search with "nothing here"; a non-directory
 * hides everything below it in lower layers; an opaque directory hides the same directory in the
 * layers below. When `upperDir` is given, its opaque directories hide the lowers as well (so the
 * answer is "what this path would show if the upper dir had not touched this very path").
 *
 * Paths are relative to the layer roots, "/"-separated, without leading "/" ("etc/passwd"; ""
 * is the root). Results of directory resolution are cached; the lower dirs must not change while
 * a view is in use. Lookups are synchronous: they are a few lstat calls each, made once per entry
 * of a layer walk, where a threadpool round trip per call dominated the time.
 */
export class LowerView {
  readonly #topFirst: readonly string[];
  readonly #upperDir: string | undefined;
  readonly #dirs = new Map<string, string[]>();

  /** `lowerDirs` bottom first, as overlayfs' lowerdir= lists them reversed. */
  constructor(lowerDirs: readonly string[], options: { upperDir?: string } = {}) {
    this.#topFirst = [...lowerDirs].reverse();
    this.#upperDir = options.upperDir;
  }

  /** The topmost visible lower entry at `rel`, or undefined when the lowers show nothing there. */
  lookup(rel: string): LowerEntry | undefined {
    if (rel === "") return undefined;
    const slash = rel.lastIndexOf("/");
    const parent = slash === -1 ? "" : rel.slice(0, slash);
    const name = rel.slice(slash + 1);
    for (const dir of this.#contributors(parent)) {
      const path = join(dir, name);
      const stat = lstatOrUndefined(path);
      if (!stat) continue;
      if (isWhiteout(stat)) return undefined;
      return { path, stat };
    }
    return undefined;
  }

  /** The on-disk directories, top first, whose contents merge into directory `rel`. */
  #contributors(rel: string): string[] {
    let cached = this.#dirs.get(rel);
    if (!cached) {
      cached = this.#resolveContributors(rel);
      this.#dirs.set(rel, cached);
    }
    return cached;
  }

  #resolveContributors(rel: string): string[] {
    if (this.#upperDir !== undefined && rel !== "" && upperIsOpaque(join(this.#upperDir, rel))) return [];
    const candidates =
      rel === "" ? this.#topFirst : this.#contributors(parentOf(rel)).map((d) => join(d, baseOf(rel)));
    const merged: string[] = [];
    for (const path of candidates) {
      const stat = lstatOrUndefined(path);
      if (!stat) continue;
      if (!stat.isDirectory()) break; // a whiteout or a file hides the layers below
      merged.push(path);
      if (readOpaque(path)) break;
    }
    return merged;
  }
}

function upperIsOpaque(path: string): boolean {
  const stat = lstatOrUndefined(path);
  return stat?.isDirectory() === true && readOpaque(path);
}

function lstatOrUndefined(path: string): BigIntStats | undefined {
  try {
    return lstatSync(path, { bigint: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new SutureError("IO", `cannot inspect ${path}: ${(e as Error).message}`, { cause: e });
  }
}

function parentOf(rel: string): string {
  const slash = rel.lastIndexOf("/");
  return slash === -1 ? "" : rel.slice(0, slash);
}

function baseOf(rel: string): string {
  return rel.slice(rel.lastIndexOf("/") + 1);
}
