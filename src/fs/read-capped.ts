import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import { asSutureError, SutureError } from "../errors/errors.ts";

export interface ReadCappedOptions {
  /** The most bytes the file may have. */
  limit: number;
  /** What the file is, for messages ("report trivy.json", "layout index.json"). */
  what: string;
  /** The flag that raises the limit, named in the default TOO_LARGE error. */
  flag?: string;
  /** Refuse a symlink at the path itself (O_NOFOLLOW: ELOOP) instead of following it. */
  noFollow?: boolean;
  /**
   * Only a regular file: anything else is an IO error. Opened non-blocking, so a FIFO planted
   * where a file belongs cannot hang the open.
   */
  regularOnly?: boolean;
  /**
   * The error for a file over the limit; `size` is undefined when it is only known to be larger
   * (a stream, a file that grew since its size was read). Default: TOO_LARGE naming the limit and
   * the flag.
   */
  tooLarge?: (size: number | undefined, limit: number) => Error;
}

/**
 * Read a whole file that must not exceed `options.limit` bytes, refusing it before it is read
 * whole: a regular file by its size, anything else (a FIFO, /dev/zero) by stopping at
 * `limit + 1` bytes. Errors from opening or reading (ENOENT, ELOOP, …) are thrown as they are,
 * for the caller to decide on by their code.
 */
export async function readFileCapped(path: string, options: ReadCappedOptions): Promise<Buffer> {
  const read = cappedRead(options);
  const handle = await open(path, read.flags);
  try {
    const piece = read.pieceSize(await handle.stat());
    for (;;) {
      const buf = read.nextBuffer(piece);
      if (!read.took(buf, (await handle.read(buf, 0, buf.length, null)).bytesRead)) break;
    }
    return read.bytes();
  } finally {
    await handle.close();
  }
}

/**
 * readFileCapped in synchronous calls, for a caller that reads many small files one after the
 * other (a threadpool round trip per open, stat, read and close costs more than the work). Regular
 * files only: a FIFO opened without O_NONBLOCK would block the event loop, with no way to abort.
 */
export function readFileCappedSync(path: string, options: ReadCappedOptions & { regularOnly: true }): Buffer {
  const read = cappedRead(options);
  const fd = openSync(path, read.flags);
  try {
    const piece = read.pieceSize(fstatSync(fd));
    for (;;) {
      const buf = read.nextBuffer(piece);
      if (!read.took(buf, readSync(fd, buf, 0, buf.length, null))) break;
    }
    return read.bytes();
  } finally {
    closeSync(fd);
  }
}

/** What readFileCapped and readFileCappedSync share: the open flags, the checks, the pieces read. */
function cappedRead(options: ReadCappedOptions) {
  const { limit } = options;
  const tooLarge =
    options.tooLarge ??
    ((size: number | undefined) =>
      new SutureError(
        "TOO_LARGE",
        `${options.what} is ${size === undefined ? "more than" : `${size} bytes,`} more than the ${limit} bytes it may have${options.flag ? `: raise the limit with ${options.flag}` : ""}`,
      ));
  let flags = constants.O_RDONLY;
  if (options.noFollow) flags |= constants.O_NOFOLLOW;
  if (options.regularOnly) flags |= constants.O_NONBLOCK;
  const chunks: Buffer[] = [];
  let total = 0;
  return {
    flags,
    /** Checks the open file; the size of the pieces to read it in. */
    pieceSize(st: Stats): number {
      if (options.regularOnly && !st.isFile())
        throw new SutureError("IO", `${options.what} is not a regular file`);
      if (st.isFile() && st.size > limit) throw tooLarge(st.size, limit);
      // A regular file's size is known; anything else is read in pieces until EOF or the limit.
      return st.isFile() && st.size > 0 ? st.size + 1 : 1024 * 1024;
    },
    nextBuffer: (piece: number) => Buffer.allocUnsafe(Math.min(piece, limit + 1 - total)),
    /** Keeps what a read put in `buf`; false at EOF. */
    took(buf: Buffer, bytesRead: number): boolean {
      if (bytesRead === 0) return false;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
      // A file that grew since the stat, or a stream, past the limit.
      if (total > limit) throw tooLarge(undefined, limit);
      return true;
    },
    bytes: () => (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total)),
  };
}

/**
 * A configuration file the user names (a bulk config, serve's rules) as UTF-8 text: a regular
 * file of at most `limit` bytes; any failure to read it is IO, "cannot read <what>: <cause>".
 */
export async function readConfigText(path: string, limit: number, what: string): Promise<string> {
  try {
    return (await readFileCapped(path, { limit, what, regularOnly: true })).toString("utf8");
  } catch (e) {
    throw asSutureError(e, "IO", `cannot read ${what}`);
  }
}
