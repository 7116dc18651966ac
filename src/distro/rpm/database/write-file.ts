import { constants } from "node:fs";
import { type FileHandle, lchown, lstat, open } from "node:fs/promises";
import { describeCause, SutureError } from "../../../errors/errors.ts";
import { writeFileAtomic } from "../../../fs/atomic.ts";

/**
 * Replace the image's file at `host` (a path the in-root resolver gave) with `data`, atomically
 * (src/fs/atomic.ts: a symlink put there meanwhile is replaced, never followed), keeping the
 * mode and owner `stat` says it had. `what` names it (its image path) in errors.
 */
export async function replaceImageFile(
  host: string,
  stat: { mode: number; uid: number; gid: number },
  data: Uint8Array,
  what: string,
): Promise<void> {
  await writeFileAtomic(host, data, {
    mode: stat.mode & 0o7777,
    exactMode: true,
    failure: `cannot write ${what} in the image`,
  });
  const now = await lstat(host);
  if (now.uid !== stat.uid || now.gid !== stat.gid) {
    await lchown(host, stat.uid, stat.gid).catch((e) => {
      throw new SutureError("IO", `cannot set the owner of ${what} in the image: ${describeCause(e)}`, {
        cause: e,
      });
    });
  }
}

/**
 * Overwrite the content of the image's regular file at `host` in place, as rpm's SQLite writes
 * its database: the same inode, so its mode, owner and extended attributes (an SELinux label)
 * stay; in the overlay's merged dir the first write copies the file up with all of them. The
 * last component is opened with O_NOFOLLOW: a symlink put there meanwhile is refused, never
 * followed. `what` names it (its image path) in errors.
 */
export async function overwriteImageFile(host: string, data: Uint8Array, what: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(host, constants.O_WRONLY | constants.O_NOFOLLOW);
    if (!(await handle.stat()).isFile()) throw new Error("it is no longer a regular file");
    await handle.write(data, 0, data.length, 0);
    await handle.truncate(data.length);
  } catch (e) {
    throw new SutureError("IO", `cannot write ${what} in the image: ${describeCause(e)}`, { cause: e });
  } finally {
    await handle?.close();
  }
}
