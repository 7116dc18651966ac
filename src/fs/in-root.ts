import { lstatSync, mkdirSync, readlinkSync, type Stats } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { describeCause, SutureError } from "../errors/errors.ts";
import { type ReadCappedOptions, readFileCapped, readFileCappedSync } from "./read-capped.ts";

/**
 * Paths of an image's root filesystem resolved the way the image itself would see them, on the
 * host, without ever leaving the root: symlinks (absolute or relative) are followed relative to
 * the root, `..` stops at the root, and nothing on the host outside it is looked at. This is the
 * one resolver: file reads, the native unpacker and the runtime's mount-point checks all use it,
 * each with a named policy.
 */

/** Symlinks followed in one resolution before giving up: Linux's MAXSYMLINKS. */
export const MAX_SYMLINK_HOPS = 40;

export interface InRootPolicy {
  /** A symlink in the last component: followed (true) or the result itself (false). */
  followFinal: boolean;
  /**
   * With `followFinal: false`, a last component that is a symlink to a directory is followed all
   * the same (and so kept, never replaced), as dpkg and umoci's KeepDirlinks treat a directory
   * written where the image has a symlink to one (usrmerge's /lib -> usr/lib). A symlink to
   * anything else, or to nothing, is the result itself.
   */
  keepDirlinks?: boolean;
  /** For resolveInRoot: a path that does not exist resolves to undefined (else to where it would be). */
  mustExist?: boolean;
  /**
   * Create missing directories (root-owned, 0755 before the umask) on the way: "parents" all but
   * the last component, "all" the last one too.
   */
  create?: "parents" | "all";
}

/** Reading a file or directory as the image sees it: every symlink followed; it must exist. */
export const READ_POLICY: Readonly<InRootPolicy> = Object.freeze({ followFinal: true, mustExist: true });
/** Where a mount destination lands (what runc does): every symlink followed; it need not exist. */
export const MOUNT_POLICY: Readonly<InRootPolicy> = Object.freeze({ followFinal: true, mustExist: false });

/** One lookup of a tree being walked, by absolute image path whose parents are resolved. */
export interface PathTree<E> {
  /** What is at `path`, or undefined when nothing is. */
  lookup(path: string): E | undefined;
  isDirectory(entry: E): boolean;
  /** The target of the symlink `entry` at `path`, or undefined when it is no symlink. */
  linkTarget(path: string, entry: E): string | undefined;
  /** Create the directory `path` (its parent exists); only trees that support `create`. */
  mkdir?(path: string): E;
}

export type PathWalk<E> =
  /** `path` (absolute, no symlinks, no `..`) exists; `entry` is what is there. */
  | { kind: "found"; path: string; entry: E }
  /** `path` is where the path would be; `missing` are its components that do not exist, shallowest first. */
  | { kind: "missing"; path: string; missing: string[] }
  /** `path` exists but is not a directory, and the path goes on below it. */
  | { kind: "not-directory"; path: string; entry: E };

function components(path: string): string[] {
  return path.split("/").filter((p) => p !== "" && p !== ".");
}

function joinImage(parts: readonly string[]): string {
  return `/${parts.join("/")}`;
}

/**
 * Walk `path` through `tree` with `policy`: the one algorithm behind every in-root resolution.
 * `..` is taken where it stands (after the symlinks before it), as the kernel does, and never
 * climbs above `/`. Throws UNSAFE_LAYER after MAX_SYMLINK_HOPS symlinks.
 */
export function walkPath<E>(tree: PathTree<E>, path: string, policy: InRootPolicy): PathWalk<E> {
  const hops = { count: 0 };
  return walkFrom(tree, path, [], components(path), policy, hops);
}

function walkFrom<E>(
  tree: PathTree<E>,
  asked: string,
  start: string[],
  todo: string[],
  policy: InRootPolicy,
  hops: { count: number },
): PathWalk<E> {
  let parts = todo;
  let resolved = [...start];
  const missing: string[] = [];
  let entry: E | undefined;
  while (parts.length) {
    const part = parts.shift()!;
    if (part === "..") {
      resolved.pop();
      entry = undefined;
      continue;
    }
    const final = parts.length === 0;
    const path = joinImage([...resolved, part]);
    // Below a component that does not exist nothing does: no lookups, the rest is only named.
    let found = missing.length ? undefined : tree.lookup(path);
    if (found === undefined) {
      if (policy.create === "all" || (policy.create === "parents" && !final)) {
        if (!tree.mkdir) throw new SutureError("INTERNAL", "this tree cannot create directories");
        found = tree.mkdir(path);
      } else {
        missing.push(path);
        resolved.push(part);
        entry = undefined;
        continue;
      }
    }
    const target = tree.linkTarget(path, found);
    if (target !== undefined && (!final || policy.followFinal || policy.keepDirlinks)) {
      if (++hops.count > MAX_SYMLINK_HOPS)
        throw new SutureError("UNSAFE_LAYER", `too many symlinks resolving ${asked} in the image`);
      const base = target.startsWith("/") ? [] : resolved;
      if (final && !policy.followFinal) {
        // keepDirlinks: follow only to an existing directory, else the link is the answer.
        const through = walkFrom(tree, asked, base, components(target), READ_POLICY, hops);
        if (through.kind === "found" && tree.isDirectory(through.entry)) return through;
      } else {
        resolved = base;
        parts = [...components(target), ...parts];
        continue;
      }
    } else if (!final && !tree.isDirectory(found)) {
      return { kind: "not-directory", path, entry: found };
    }
    resolved.push(part);
    entry = found;
  }
  const path = joinImage(resolved);
  if (missing.length) return { kind: "missing", path, missing };
  // The path ended in `..`, or at the root (a link to `/`): look up where it landed.
  entry ??= tree.lookup(path);
  if (entry === undefined) return { kind: "missing", path, missing: [path] };
  return { kind: "found", path, entry };
}

/** The host's directory `root` as a tree; lookups never leave it (every path is joined below it). */
export function hostTree(root: string): PathTree<Stats> {
  const host = (path: string) => hostPathOf(root, path);
  return {
    lookup(path) {
      try {
        return lstatSync(host(path), { throwIfNoEntry: false });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOTDIR") return undefined;
        throw e;
      }
    },
    isDirectory: (st) => st.isDirectory(),
    linkTarget: (path, st) => (st.isSymbolicLink() ? readlinkSync(host(path)) : undefined),
    mkdir(path) {
      mkdirSync(host(path), { mode: 0o755 });
      return lstatSync(host(path));
    },
  };
}

/** Host path of the image path `path` (absolute, resolved) below `root`. */
export function hostPathOf(root: string, path: string): string {
  return path === "/" ? root : join(root, path);
}

export type InRootWalk =
  | { kind: "found"; path: string; host: string; stat: Stats }
  | { kind: "missing"; path: string; host: string; missing: string[] }
  | { kind: "not-directory"; path: string; host: string; stat: Stats };

/**
 * Resolve `path` inside the unpacked root filesystem `root` with `policy` (synchronous: a few
 * lstat calls, made per entry by the unpacker, where a threadpool round trip dominated). `path`
 * and `missing` in the answer are image paths; `host` is the host path below `root`.
 */
export function walkInRoot(root: string, path: string, policy: InRootPolicy): InRootWalk {
  const walk = walkPath(hostTree(root), path, policy);
  const host = hostPathOf(root, walk.path);
  switch (walk.kind) {
    case "found":
      return { kind: "found", path: walk.path, host, stat: walk.entry };
    case "not-directory":
      return { kind: "not-directory", path: walk.path, host, stat: walk.entry };
    case "missing":
      return { kind: "missing", path: walk.path, host, missing: walk.missing };
  }
}

/**
 * The host path `path` resolves to inside `root` (READ_POLICY unless told): undefined when it
 * does not exist (with mustExist) or goes on below a non-directory.
 */
export async function resolveInRoot(
  root: string,
  path: string,
  policy: InRootPolicy = READ_POLICY,
): Promise<string | undefined> {
  return resolveInRootSync(root, path, policy);
}

/** resolveInRoot for a caller that resolves path after path in synchronous calls. */
export function resolveInRootSync(
  root: string,
  path: string,
  policy: InRootPolicy = READ_POLICY,
): string | undefined {
  const walk = walkInRoot(root, path, policy);
  if (walk.kind === "found") return walk.host;
  if (walk.kind === "missing" && !policy.mustExist) return walk.host;
  return undefined;
}

/** The most bytes `readFileInRoot` reads by default: far above any configuration file or package database. */
export const MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024;

/**
 * A regular file of the image as the image reads it, or undefined when it is missing or something
 * else (a directory; a FIFO or device, which would hang or never end). Larger than `limit` is
 * TOO_LARGE: an image's files are untrusted, and a sparse one can claim any size.
 */
export async function readFileInRoot(
  root: string,
  path: string,
  options: { limit?: number } = {},
): Promise<Buffer | undefined> {
  const host = regularFileInRoot(root, path);
  if (!host) return undefined;
  try {
    return await readFileCapped(host, inRootReadOptions(path, options));
  } catch (e) {
    return readInRootFailed(path, e);
  }
}

/** readFileInRoot in synchronous calls, for a caller that reads many small files in a row. */
export function readFileInRootSync(
  root: string,
  path: string,
  options: { limit?: number } = {},
): Buffer | undefined {
  const host = regularFileInRoot(root, path);
  if (!host) return undefined;
  try {
    return readFileCappedSync(host, inRootReadOptions(path, options));
  } catch (e) {
    return readInRootFailed(path, e);
  }
}

/**
 * What `path` resolves to inside `root` (READ_POLICY): its host path and the walk's own lstat of
 * it, so a caller asking "is it a file / a directory" needs no second lstat. Undefined when
 * nothing is there.
 */
export function foundInRoot(root: string, path: string): { host: string; stat: Stats } | undefined {
  const walk = walkInRoot(root, path, READ_POLICY);
  return walk.kind === "found" ? { host: walk.host, stat: walk.stat } : undefined;
}

/** The host path of `path` when it resolves to a regular file. */
function regularFileInRoot(root: string, path: string): string | undefined {
  const found = foundInRoot(root, path);
  return found?.stat.isFile() ? found.host : undefined;
}

/** The file as resolved: a link put there since is refused, and so is anything but a regular file. */
function inRootReadOptions(
  path: string,
  options: { limit?: number },
): ReadCappedOptions & { regularOnly: true } {
  return {
    limit: options.limit ?? MAX_IMAGE_FILE_BYTES,
    what: `${path} in the image`,
    noFollow: true,
    regularOnly: true,
  };
}

/** A file gone since it was resolved reads as missing; TOO_LARGE stays; anything else is IO. */
function readInRootFailed(path: string, e: unknown): undefined {
  if (e instanceof SutureError && e.code === "TOO_LARGE") throw e;
  if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
  throw new SutureError("IO", `cannot read ${path} in the image: ${describeCause(e)}`, { cause: e });
}

/** Read access to an image's files, by absolute path as the image sees it. */
export interface ImageFileAccess {
  /** The file's bytes, or undefined when it does not exist (or is a directory). */
  readFile(path: string): Promise<Uint8Array | undefined>;
  /** Names (not paths) in a directory, sorted; empty when it does not exist. */
  listDir(path: string): Promise<string[]>;
}

/** File access over an unpacked or mounted root filesystem; symlinks never leave `root`. */
export function fileAccessFromRoot(root: string): ImageFileAccess {
  return {
    readFile: (path) => readFileInRoot(root, path),
    listDir: (path) => listDirInRoot(root, path),
  };
}

/** The names in a directory of the image, sorted; empty when it is missing or no directory. */
export async function listDirInRoot(root: string, path: string): Promise<string[]> {
  const p = await resolveInRoot(root, path);
  if (!p) return [];
  try {
    return (await readdir(p)).sort();
  } catch {
    return [];
  }
}

/**
 * `dir/name` for a name that must stay one entry of `dir` (a database file named after a package,
 * a cache entry named after a digest). A name with a `/`, a NUL, or that is `.`/`..`/empty would
 * reach outside `dir`; it is refused (UNSAFE_LAYER) rather than cleaned, since a hostile image or
 * package is the only source of such names.
 */
export function childPath(dir: string, name: string, what: string): string {
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0"))
    throw new SutureError(
      "UNSAFE_LAYER",
      `${what} ${JSON.stringify(name.slice(0, 80))} is not a plain file name; the image or package is malformed or hostile, so nothing was written`,
    );
  return join(dir, name);
}
