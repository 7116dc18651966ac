import { type BigIntStats, lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { SutureError } from "../errors/errors.ts";
import { type PathFacts, withFacts } from "../fs/owners.ts";
import { isWhiteout, readOpaque } from "./overlay.ts";

/** The entry a path resolves to in the lower layers. */
export interface LowerEntry {
  /** Absolute path on disk, inside the lower dir that supplies it. */
  path: string;
  /** As the layer says: for a mode-3 layer, with the recorded type, mode, owner and device. */
  stat: BigIntStats;
  /** A mode-3 layer's recorded content xattrs (its files carry none); undefined: read the file's. */
  xattrs?: ReadonlyMap<string, Buffer>;
}

interface Contributor {
  path: string;
  /** Index into the top-first layer list. */
  layer: number;
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
  readonly #facts: readonly (ReadonlyMap<string, PathFacts> | undefined)[];
  readonly #upperDir: string | undefined;
  readonly #dirs = new Map<string, Contributor[]>();

  /**
   * `lowerDirs` bottom first, as overlayfs' lowerdir= lists them reversed. `facts` (mode 3, one
   * per lower dir, same order): each layer's recorded facts by path, which replace what the
   * filesystem says (owners, modes, devices and whiteouts stored as placeholders, opaque dirs).
   */
  constructor(
    lowerDirs: readonly string[],
    options: { upperDir?: string; facts?: readonly (ReadonlyMap<string, PathFacts> | undefined)[] } = {},
  ) {
    this.#topFirst = [...lowerDirs].reverse();
    this.#facts = options.facts ? [...options.facts].reverse() : [];
    this.#upperDir = options.upperDir;
  }

  /** lstat of `rel` in one layer, with its recorded facts when the layer has a record. */
  #stat(c: Contributor, name: string, rel: string): LowerEntry | undefined {
    const path = join(c.path, name);
    const stat = lstatOrUndefined(path);
    if (!stat) return undefined;
    const facts = this.#facts[c.layer]?.get(rel);
    if (!facts) return { path, stat };
    return { path, stat: withFacts(stat, facts), xattrs: facts.xattrs ?? new Map() };
  }

  #opaque(c: Contributor, rel: string): boolean {
    const facts = this.#facts[c.layer];
    return facts ? facts.get(rel)?.opaque === true : readOpaque(c.path);
  }

  /**
   * The names the lowers show in directory `rel` (whiteouts and what they hide left out), in no
   * particular order. Used where no upper dir records deletions (mode 3's plain working tree).
   */
  names(rel: string): string[] {
    const seen = new Set<string>();
    const visible: string[] = [];
    for (const c of this.#contributors(rel)) {
      let names: string[];
      try {
        names = readdirSync(c.path);
      } catch (e) {
        throw new SutureError("IO", `cannot list ${c.path}: ${(e as Error).message}`, { cause: e });
      }
      for (const name of names) {
        if (seen.has(name)) continue;
        seen.add(name);
        const entry = this.#stat(c, name, rel === "" ? name : `${rel}/${name}`);
        if (entry && !isWhiteout(entry.stat)) visible.push(name);
      }
    }
    return visible;
  }

  /** The topmost visible lower entry at `rel`, or undefined when the lowers show nothing there. */
  lookup(rel: string): LowerEntry | undefined {
    if (rel === "") return undefined;
    const slash = rel.lastIndexOf("/");
    const parent = slash === -1 ? "" : rel.slice(0, slash);
    const name = rel.slice(slash + 1);
    for (const c of this.#contributors(parent)) {
      const entry = this.#stat(c, name, rel);
      if (!entry) continue;
      if (isWhiteout(entry.stat)) return undefined;
      return entry;
    }
    return undefined;
  }

  /** The on-disk directories, top first, whose contents merge into directory `rel`. */
  #contributors(rel: string): Contributor[] {
    let cached = this.#dirs.get(rel);
    if (!cached) {
      cached = this.#resolveContributors(rel);
      this.#dirs.set(rel, cached);
    }
    return cached;
  }

  #resolveContributors(rel: string): Contributor[] {
    if (this.#upperDir !== undefined && rel !== "" && upperIsOpaque(join(this.#upperDir, rel))) return [];
    if (rel === "") {
      const roots = this.#topFirst.map((path, layer) => ({ path, layer }));
      // A layer's root can be opaque too; nothing below it shows.
      const cut = roots.findIndex((c) => this.#opaque(c, ""));
      return cut === -1 ? roots : roots.slice(0, cut + 1);
    }
    const merged: Contributor[] = [];
    for (const parent of this.#contributors(parentOf(rel))) {
      const entry = this.#stat(parent, baseOf(rel), rel);
      if (!entry) continue;
      if (!entry.stat.isDirectory()) break; // a whiteout or a file hides the layers below
      const c = { path: entry.path, layer: parent.layer };
      merged.push(c);
      if (this.#opaque(c, rel)) break;
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
