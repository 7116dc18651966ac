import { constants } from "node:fs";
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
  const handle = await open(path, flags);
  try {
    const st = await handle.stat();
    if (options.regularOnly && !st.isFile())
      throw new SutureError("IO", `${options.what} is not a regular file`);
    if (st.isFile() && st.size > limit) throw tooLarge(st.size, limit);
    // A regular file's size is known; anything else is read in pieces until EOF or the limit.
    const chunks: Buffer[] = [];
    let total = 0;
    const piece = st.isFile() && st.size > 0 ? st.size + 1 : 1024 * 1024;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(piece, limit + 1 - total));
      const { bytesRead } = await handle.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
      // A file that grew since the stat, or a stream, past the limit.
      if (total > limit) throw tooLarge(undefined, limit);
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
  } finally {
    await handle.close();
  }
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
