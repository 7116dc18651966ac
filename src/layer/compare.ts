import { type BigIntStats, closeSync, constants, openSync, readSync } from "node:fs";
import { SutureError } from "../errors/errors.ts";

/**
 * Whether two entries look the same to a user of the image, apart from times: same file type,
 * permission bits (setuid/setgid/sticky included), owner, group, and for devices the device
 * number. Size and content are separate checks (see {@link sameContent}).
 *
 * mtime is deliberately ignored: dpkg rewrites every file of a package it reinstalls or upgrades
 * and gives it the mtime recorded in the .deb, so a byte-identical file with a new mtime is not a
 * change anyone can act on, and keeping it would copy megabytes into the layer for nothing.
 * rpm is the exception: `rpm -V` compares mtimes, so the layer builder keeps such files for rpm
 * images (`keepTouchedFiles`).
 */
export function sameMetadata(a: BigIntStats, b: BigIntStats): boolean {
  return (
    (a.mode & 0o170000n) === (b.mode & 0o170000n) &&
    (a.mode & 0o7777n) === (b.mode & 0o7777n) &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    ((!a.isCharacterDevice() && !a.isBlockDevice()) || a.rdev === b.rdev)
  );
}

/** Same names and byte-identical values (both maps already hold content xattrs only). */
export function sameXattrs(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, value] of a) {
    const other = b.get(name);
    if (!other?.equals(value)) return false;
  }
  return true;
}

const CHUNK = 256 * 1024;

/**
 * Compare two regular files of equal, known size; stops at the first differing chunk. A file that
 * turns out shorter than `size` compares unequal. Synchronous: most files compared are small, and
 * for those the open/read/close round trips through the threadpool cost more than the reads.
 */
export function sameContent(pathA: string, pathB: string, size: number): boolean {
  if (size === 0) return true;
  const a = open(pathA);
  try {
    const b = open(pathB);
    try {
      const bufA = Buffer.allocUnsafe(Math.min(CHUNK, size));
      const bufB = Buffer.allocUnsafe(bufA.length);
      for (let offset = 0; offset < size; ) {
        const want = Math.min(bufA.length, size - offset);
        if (readFully(a, bufA, want, offset) !== want || readFully(b, bufB, want, offset) !== want)
          return false;
        if (bufA.compare(bufB, 0, want, 0, want) !== 0) return false;
        offset += want;
      }
      return true;
    } finally {
      closeSync(b);
    }
  } finally {
    closeSync(a);
  }
}

function open(path: string): number {
  try {
    // Never through a symlink: the path was lstat-ed as a regular file.
    return openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    throw new SutureError("IO", `cannot open ${path} to compare it: ${(e as Error).message}`, { cause: e });
  }
}

/** Read `want` bytes at `position` into `buf`, fewer only at the end of the file; returns the count. */
export function readFully(fd: number, buf: Buffer, want: number, position: number): number {
  let got = 0;
  while (got < want) {
    const n = readSync(fd, buf, got, want - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}
