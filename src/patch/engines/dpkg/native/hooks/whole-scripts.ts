import { rmSync, symlinkSync } from "node:fs";
import { walkInRoot } from "../../../../../fs/in-root.ts";
import { lchownOrRecord } from "../../../../../fs/owners.ts";

/** What a whole-script equivalent did, or why the real script must run instead. */
export type ScriptOutcome = { done: true; detail: string } | { done: false; unsupported: string };

/**
 * openssl's postinst, done natively. The script (every bookworm build so far) is
 *
 *     if [ ! -e /usr/lib/ssl ]; then echo …; ln -sf /etc/ssl /usr/lib/ssl; fi
 *
 * whatever its arguments: `-e` follows symlinks, so a dangling link at /usr/lib/ssl is replaced
 * by `ln -sf`, and a link to anything that exists stays. The link is made root-owned, as the
 * script run by dpkg as root makes it. A path the script would fail on (/usr/lib missing or not a
 * directory) or that loops is left to the real script, which reports it as dpkg would.
 */
export function linkUsrLibSsl(root: string): ScriptOutcome {
  let followed: ReturnType<typeof walkInRoot>;
  try {
    followed = walkInRoot(root, "/usr/lib/ssl", { followFinal: true, mustExist: true });
  } catch (e) {
    return { done: false, unsupported: `/usr/lib/ssl cannot be resolved (${(e as Error).message})` };
  }
  if (followed.kind === "found") return { done: true, detail: "/usr/lib/ssl exists, left as it is" };
  const link = walkInRoot(root, "/usr/lib/ssl", { followFinal: false, mustExist: false });
  if (link.kind === "not-directory" || (link.kind === "missing" && link.missing.length > 1))
    return { done: false, unsupported: "/usr/lib is not a directory of the image" };
  // What is there now is a dangling (or looping) symlink, or nothing: `ln -sf` replaces it.
  rmSync(link.host, { force: true });
  symlinkSync("/etc/ssl", link.host);
  lchownOrRecord(link.host, 0, 0);
  return { done: true, detail: "/usr/lib/ssl linked to /etc/ssl" };
}
