import { randomBytes } from "node:crypto";
import { constants, createWriteStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { asSutureError } from "../errors/errors.ts";

/**
 * The one way suture makes a file or directory appear: written under a temporary name in the
 * same directory (so the rename is atomic and never crosses a filesystem), then renamed into
 * place. A reader sees the old content or the whole new one, never a part; a failure leaves the
 * destination as it was and removes the temporary.
 */

/** A fresh name beside `path` (same directory, so a rename onto `path` is atomic). */
export function tempPathBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
}

export interface AtomicWriteOptions {
  /** Mode of the new file (default 0644), narrowed by the umask unless `exactMode`. */
  mode?: number;
  /** Set `mode` as it is, whatever the umask (a document meant to be world-readable, a dpkg file). */
  exactMode?: boolean;
  /** Flush the file to disk before the rename (default true): what a crash must not leave half-written. */
  fsync?: boolean;
  /** The start of the error message, before its cause (default `cannot write <path>`). */
  failure?: string;
}

/**
 * Write `data` to `path` so that readers see either the old file or the whole new one. The
 * temporary is created exclusively and never through a symlink, and renamed over `path`, so an
 * existing symlink at `path` is replaced rather than followed. Errors are IO.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const mode = options.mode ?? 0o644;
  const tmp = tempPathBeside(path);
  try {
    const handle = await open(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      mode,
    );
    try {
      await handle.writeFile(data);
      if (options.exactMode) await handle.chmod(mode);
      if (options.fsync ?? true) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw asSutureError(e, "IO", options.failure ?? `cannot write ${path}`);
  }
}

/**
 * Stream `input` (through optional transforms) into `tmp`, flushed to disk. The caller renames it
 * into place (placeFile) once it has checked what was written; on failure `tmp` is removed and
 * the error (e.g. a DIGEST_MISMATCH from a verifying transform) is rethrown.
 */
export async function streamToFile(input: Readable, transforms: Transform[], tmp: string): Promise<void> {
  try {
    const out = createWriteStream(tmp, { flags: "wx", mode: 0o644 });
    await pipeline([input, ...transforms, out]);
    const handle = await open(tmp, "r+");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (e) {
    input.destroy();
    await rm(tmp, { force: true }).catch(() => {});
    throw asSutureError(e, "IO", `cannot write ${tmp}`);
  }
}

/**
 * Rename a finished temporary file (same filesystem) onto `path`; on failure the temporary is
 * removed and the error is IO `<failure>: <cause>` (default `cannot write <path>`).
 */
export async function placeFile(tmp: string, path: string, failure = `cannot write ${path}`): Promise<void> {
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw asSutureError(e, "IO", failure);
  }
}

export interface PlaceDirectoryOptions {
  /**
   * When `path` already exists: whether it is as good as `built` (another process finished the
   * same work first). Then it is kept and `built` is left for the caller to remove; otherwise it
   * is replaced.
   */
  keepExisting?: (path: string) => Promise<boolean>;
  /** Where a replaced directory is moved before it is removed (default beside `path`). */
  asideDir?: string;
  /** The start of the error message, before its cause (default `cannot write <path>`). */
  failure?: string;
}

/**
 * Rename the directory `built` (finished aside, on the same filesystem) into place at `path`:
 * a reader sees the old directory, nothing, or the whole new one. An existing `path` is kept when
 * `keepExisting` says so, else moved aside (atomic), replaced, and removed. Returns whether
 * `built` was placed.
 */
export async function placeDirectory(
  built: string,
  path: string,
  options: PlaceDirectoryOptions = {},
): Promise<boolean> {
  const failure = options.failure ?? `cannot write ${path}`;
  try {
    await rename(built, path);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EEXIST" && code !== "ENOTEMPTY") throw asSutureError(e, "IO", failure);
  }
  if (await options.keepExisting?.(path)) return false;
  const aside = join(
    options.asideDir ?? dirname(path),
    `.${basename(path)}.old-${randomBytes(6).toString("hex")}`,
  );
  await rename(path, aside).catch(() => {});
  try {
    await rename(built, path);
  } catch (e) {
    // Of two processes replacing the same directory, the other one won.
    if (await options.keepExisting?.(path)) return false;
    throw asSutureError(e, "IO", failure);
  } finally {
    await rm(aside, { recursive: true, force: true });
  }
  return true;
}
