import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join, posix } from "node:path";
import { SutureError } from "../errors/errors.ts";

/**
 * Resolve a path inside an unpacked root filesystem the way the image itself would see it:
 * symlinks (absolute or relative) are followed relative to `root`, never out of it.
 * Returns the host path, or undefined when it does not exist.
 */
export async function resolveInRoot(root: string, path: string): Promise<string | undefined> {
  let parts = posix.normalize(`/${path}`).split("/").filter(Boolean);
  let resolved: string[] = [];
  for (let hops = 0; parts.length; ) {
    const part = parts.shift()!;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    if (part === ".") continue;
    const candidate = join(root, ...resolved, part);
    let st: Awaited<ReturnType<typeof lstat>>;
    try {
      st = await lstat(candidate);
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      if (++hops > 40)
        throw new SutureError("UNSAFE_LAYER", `too many symlinks resolving ${path} in the image`);
      const target = await readlink(candidate);
      if (target.startsWith("/")) resolved = [];
      parts = [...target.split("/").filter(Boolean), ...parts];
      continue;
    }
    resolved.push(part);
  }
  return join(root, ...resolved);
}

export async function readFileInRoot(root: string, path: string): Promise<Buffer | undefined> {
  const p = await resolveInRoot(root, path);
  if (!p) return undefined;
  try {
    return await readFile(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EISDIR" || (e as NodeJS.ErrnoException).code === "ENOENT")
      return undefined;
    throw e;
  }
}

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
