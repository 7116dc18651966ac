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

/** The directories dpkg requires on a maintainer script's PATH, in its order. */
const SCRIPT_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/**
 * A script whose only effect is running `update-mime` when `which` finds it (unzip's postinst
 * for `configure` and its postrm): without an executable `update-mime` on the path there is
 * nothing to do; with one, the real script runs (update-mime rewrites /etc/mailcap from every
 * package's entries, which is not reproduced here).
 */
export function updateMimeIfPresent(root: string, args: readonly string[], onlyFor?: string): ScriptOutcome {
  if (onlyFor !== undefined && args[0] !== onlyFor)
    return { done: true, detail: `nothing to do for ${args[0]}` };
  for (const dir of SCRIPT_PATH) {
    let found: ReturnType<typeof walkInRoot>;
    try {
      found = walkInRoot(root, `${dir}/update-mime`, { followFinal: true, mustExist: true });
    } catch {
      return { done: false, unsupported: `${dir}/update-mime cannot be resolved` };
    }
    // `which` takes the first regular file with an execute bit.
    if (found.kind === "found" && found.stat.isFile() && (found.stat.mode & 0o111) !== 0)
      return { done: false, unsupported: `the image has ${dir}/update-mime` };
  }
  return { done: true, detail: "no update-mime in the image: nothing to do" };
}
