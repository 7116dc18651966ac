import { lchown, lstat } from "node:fs/promises";
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
