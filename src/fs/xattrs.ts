import { setAttributeSync } from "@napi-rs/xattr";
import { describeCause, quoteUntrusted, SutureError } from "../errors/errors.ts";

/**
 * Set an archive entry's extended attributes on the file just written at `path` (the symlink
 * itself for a symlink: the setter does not follow links). Left out, and returned by name:
 * overlayfs's own attributes (`trusted.overlay.*`, and `user.overlay.*` of user-namespace mounts),
 * which would steer the mount (opaque dirs, redirects, metacopy) and must never come from an image
 * or a package; and `user.*` on a symlink, which the kernel refuses. A refusal (EPERM, ENOTSUP) is
 * IO naming `what`.
 */
export function applyXattrs(
  path: string,
  xattrs: ReadonlyMap<string, Buffer>,
  options: { isSymlink: boolean; what: string },
): string[] {
  const ignored: string[] = [];
  for (const [key, value] of xattrs) {
    if (
      key.startsWith("trusted.overlay.") ||
      key.startsWith("user.overlay.") ||
      (options.isSymlink && key.startsWith("user."))
    ) {
      ignored.push(key);
      continue;
    }
    try {
      setAttributeSync(path, key, value);
    } catch (e) {
      throw new SutureError(
        "IO",
        `cannot set xattr ${quoteUntrusted(key)} on ${options.what}: ${describeCause(e)}`,
        { cause: e },
      );
    }
  }
  return ignored;
}
