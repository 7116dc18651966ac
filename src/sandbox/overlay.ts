import { mkdtemp, readFile, realpath, rm, stat, statfs, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeCause, SutureError } from "../errors/errors.ts";
import { execTool, firstLine } from "./exec.ts";
import { inUserNamespace } from "./userns.ts";

/**
 * An overlayfs mount. Contract of the resulting upper dir (what a layer builder reads back):
 * - It holds only what changed in the merged view: new and modified files (a modified file is
 *   copied up whole), directories on the way to them (copied up with their metadata, even when
 *   the directory itself did not change), and metadata-only changes (a chmod copies the file up).
 * - A deleted path that exists in a lower dir appears as a character device 0/0 of that name.
 * - A directory that replaced a lower one (rm -r then mkdir) carries xattr
 *   `trusted.overlay.opaque=y` (`user.overlay.opaque=y` in a user namespace, where we mount with
 *   `userxattr`): nothing below it shows through from the lower dirs.
 * - We mount with `redirect_dir=off,metacopy=off` so none of the other overlay xattrs
 *   (redirect, metacopy, which would need the lower dirs to interpret) ever appear: renaming a
 *   lower directory fails with EXDEV and tools fall back to copy+delete, metadata changes copy
 *   data up. `index=off` and `xino=off` keep the upper dir free of inode bookkeeping.
 * - `trusted.overlay.origin`/`impure` xattrs may still appear on copied-up entries; they carry no
 *   meaning for a layer and must be skipped when reading xattrs back.
 */
export interface OverlaySpec {
  /** Read-only layers, bottom first (the order materializeLayers returns). At least one. */
  lowerDirs: string[];
  /** Receives every change; must be empty, on the same filesystem as workDir, not on overlayfs. */
  upperDir: string;
  /** overlayfs scratch dir: empty, same filesystem as upperDir. */
  workDir: string;
  mergedDir: string;
}

export interface MountOptions {
  /**
   * Mount with `volatile`: overlayfs skips all fsync on the upper dir. Right for a throwaway
   * patching sandbox (dpkg fsyncs a lot); after a host crash the upper dir is garbage, which
   * does not matter since nothing reuses it. Default true; retried without on kernels < 5.10.
   */
  volatile?: boolean;
}

/** The kernel copies one page of mount data; longer option strings are cut off or refused. */
const MOUNT_DATA_LIMIT = 4096;

/** Characters that would split the option string or the lowerdir list. */
const UNSAFE_IN_OPTIONS = /[,:\\\s=]/;

/**
 * Mount `spec.mergedDir` as overlayfs. Many long lower paths overflow the page-sized mount data
 * (about 40 cache paths), so when the options would be too long (or a path holds `,` or `:`), we
 * make a temp dir of one-character symlinks to every dir and mount with relative paths from
 * there; overlayfs resolves paths at mount time, so the links are removed right after. In that
 * case /proc/mounts shows the short names.
 */
export async function mountOverlay(spec: OverlaySpec, options: MountOptions = {}): Promise<void> {
  if (spec.lowerDirs.length === 0) {
    throw new SutureError(
      "SANDBOX",
      "cannot mount an overlay without lower dirs: pass at least one (an empty dir will do)",
    );
  }
  if (spec.lowerDirs.length > 500) {
    throw new SutureError(
      "SANDBOX",
      `image has ${spec.lowerDirs.length} layers; overlayfs stacks at most 500: squash the image`,
    );
  }
  await checkDirs(spec);
  const volatile = options.volatile ?? true;
  try {
    await mountOnce(spec, volatile);
  } catch (e) {
    if (!volatile || !(e instanceof SutureError)) throw e;
    // Kernels before 5.10 do not know `volatile`; a real problem fails again without it.
    await mountOnce(spec, false);
  }
}

const OVERLAYFS_MAGIC = 0x794c7630;

/** mount(8) reports most overlay problems as "wrong fs type"; name the real cause first. */
async function checkDirs(spec: OverlaySpec): Promise<void> {
  const dirStat = async (path: string, role: string) => {
    const st = await stat(path).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new SutureError("SANDBOX", `cannot mount overlay: ${role} ${path} is not a directory (missing?)`);
    }
    return st;
  };
  for (const d of spec.lowerDirs) await dirStat(d, "lower dir");
  await dirStat(spec.mergedDir, "mount point");
  const upper = await dirStat(spec.upperDir, "upper dir");
  const work = await dirStat(spec.workDir, "work dir");
  if (upper.dev !== work.dev) {
    throw new SutureError(
      "SANDBOX",
      `cannot mount overlay: upper dir ${spec.upperDir} and work dir ${spec.workDir} are on different filesystems: put both under one directory`,
    );
  }
  const fs = await statfs(spec.upperDir).catch(() => undefined);
  if (fs?.type === OVERLAYFS_MAGIC) {
    throw new SutureError(
      "SANDBOX",
      `cannot mount overlay: upper dir ${spec.upperDir} is itself on overlayfs: use a work directory on a real filesystem (or tmpfs)`,
    );
  }
}

function optionString(lowerTopFirst: string[], upper: string, work: string, volatile: boolean): string {
  const opts = [
    `lowerdir=${lowerTopFirst.join(":")}`,
    `upperdir=${upper}`,
    `workdir=${work}`,
    // In a user namespace the kernel refuses `redirect_dir=off` (EPERM) and `trusted.*` xattrs;
    // `nofollow` never writes a redirect either, and `userxattr` reads `user.overlay.*`.
    ...(inUserNamespace() ? ["userxattr", "redirect_dir=nofollow"] : ["redirect_dir=off"]),
    "metacopy=off",
    "index=off",
    "xino=off",
  ];
  if (volatile) opts.push("volatile");
  return opts.join(",");
}

async function mountOnce(spec: OverlaySpec, volatile: boolean): Promise<void> {
  const lowerTopFirst = [...spec.lowerDirs].reverse();
  const all = [...lowerTopFirst, spec.upperDir, spec.workDir];
  let opts = optionString(lowerTopFirst, spec.upperDir, spec.workDir, volatile);
  let cwd: string | undefined;
  let linkDir: string | undefined;
  if (opts.length >= MOUNT_DATA_LIMIT - 64 || all.some((p) => UNSAFE_IN_OPTIONS.test(p))) {
    linkDir = await mkdtemp(join(tmpdir(), "suture-ovl-"));
    const names = all.map((_, i) => i.toString(36));
    await Promise.all(all.map((p, i) => symlink(p, join(linkDir!, names[i]!))));
    const n = lowerTopFirst.length;
    opts = optionString(names.slice(0, n), names[n]!, names[n + 1]!, volatile);
    cwd = linkDir;
    if (opts.length >= MOUNT_DATA_LIMIT) {
      await rm(linkDir, { recursive: true, force: true });
      throw new SutureError(
        "SANDBOX",
        `overlay mount options for ${n} layers exceed ${MOUNT_DATA_LIMIT} bytes`,
      );
    }
  }
  try {
    // `--`: the paths come from --cache-dir, which may be relative and start with `-`.
    const r = await execTool("mount", ["-t", "overlay", "-o", opts, "--", "overlay", spec.mergedDir], {
      cwd,
    }).catch((e) => {
      throw new SutureError("SANDBOX", `cannot run mount(8): ${describeCause(e)}: apt-get install mount`, {
        cause: e,
      });
    });
    if (r.code !== 0) {
      throw new SutureError(
        "SANDBOX",
        `cannot mount overlay on ${spec.mergedDir}: ${firstLine(r.stderr) || `mount exited ${r.code}`} (needs root, overlayfs, and upper/work dirs on the same non-overlay filesystem; see dmesg)`,
      );
    }
  } finally {
    if (linkDir) await rm(linkDir, { recursive: true, force: true });
  }
}

/** Decode the octal escapes (\040 etc.) /proc/self/mountinfo uses in paths. */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Mount points currently visible to this process, from /proc/self/mountinfo. */
export async function listMountPoints(): Promise<string[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => unescapeMountPath(line.split(" ")[4]!));
}

/** Whether `dir` is a mount point (after resolving symlinks in its path). */
export async function isMountPoint(dir: string): Promise<boolean> {
  const real = await realpath(dir).catch(() => dir);
  return (await listMountPoints()).includes(real);
}

/**
 * Unmount `dir` (every mount stacked on it). Idempotent: a path that is not mounted is fine.
 * If the mount is busy (a process still has a file open there), falls back to a lazy unmount,
 * which detaches it now and frees it once the last user goes.
 */
export async function unmount(dir: string): Promise<void> {
  for (let i = 0; i < 8 && (await isMountPoint(dir)); i++) {
    const r = await execTool("umount", ["--", dir]);
    if (r.code === 0) continue;
    if (!(await isMountPoint(dir))) return;
    const lazy = await execTool("umount", ["-l", "--", dir]);
    if (lazy.code !== 0 && (await isMountPoint(dir))) {
      throw new SutureError("SANDBOX", `cannot unmount ${dir}: ${firstLine(lazy.stderr || r.stderr)}`);
    }
  }
}
