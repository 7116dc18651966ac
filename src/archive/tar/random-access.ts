import { type FileHandle, open } from "node:fs/promises";
import { posix } from "node:path";
import { Readable } from "node:stream";
import { isSutureError, quoteUntrusted, SutureError } from "../../errors/errors.ts";
import type { TarEntry } from "./entry.ts";
import { BLOCK, paddedSize, TarHeaderDecoder } from "./header.ts";
import { normaliseEntryPath } from "./member-path.ts";

/**
 * One member of an indexed tar file and where its data lies in the file. `path` is normalised
 * (indexedPath: no leading `./` or `/`, no trailing `/`, no `..`), and so is a hardlink's
 * `linkname`; a symlink's `linkname` is as written.
 */
export interface IndexedEntry extends Readonly<TarEntry> {
  /** Byte offset of the entry's data in the tar file. */
  readonly offset: number;
}

/** Members are streamed in pieces of this size (what the decompressors emit too). */
const CHUNK = 256 * 1024;

/**
 * Random access to the members of an uncompressed tar file, found by reading only the headers
 * (one pass, seeking over data). Contract:
 * - Every member name is checked: absolute names and names whose `..` climbs above the root make
 *   `open` fail with INVALID_ARCHIVE, so nothing from an unsafe archive is ever used.
 * - Later members with the same name replace earlier ones (tar semantics).
 * - Reads use one file handle opened at index time, so they see the file that was indexed even if
 *   the path is replaced meanwhile. `close()` releases it; it is safe to call twice.
 * - The file is only ever read.
 */
export class TarIndex {
  readonly path: string;
  /** How the archive is named in messages. */
  readonly what: string;
  readonly entries: ReadonlyMap<string, IndexedEntry>;
  readonly #handle: FileHandle;
  #closed = false;

  private constructor(path: string, what: string, handle: FileHandle, entries: Map<string, IndexedEntry>) {
    this.path = path;
    this.what = what;
    this.#handle = handle;
    this.entries = entries;
  }

  /** Index the tar file at `path`. `what` names it in errors. */
  static async open(path: string, what = path): Promise<TarIndex> {
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new SutureError(
        code === "ENOENT" ? "NOT_FOUND" : "IO",
        code === "ENOENT"
          ? `${what} does not exist: check the archive path`
          : `cannot open ${what}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    try {
      const entries = await readHeaders(handle, what);
      return new TarIndex(path, what, handle, entries);
    } catch (e) {
      await handle.close().catch(() => {});
      throw e;
    }
  }

  /** The entry at `name`, following symlinks and hard links inside the archive; undefined if absent. */
  resolve(name: string): IndexedEntry | undefined {
    let current = indexedPath(name, this.what);
    for (let hops = 0; hops < 40; hops++) {
      const entry = this.entries.get(current);
      if (!entry) return undefined;
      if (entry.type === "hardlink") {
        current = entry.linkname;
      } else if (entry.type === "symlink") {
        const target = entry.linkname;
        const symlink = entry.path;
        current = normaliseEntryPath(
          target.startsWith("/") ? target : `${posix.dirname(symlink)}/${target}`,
          target,
          (_, why) =>
            new SutureError(
              "INVALID_ARCHIVE",
              `${this.what}: ${quoteUntrusted(symlink)} is a symlink to ${quoteUntrusted(target)}, which ${why}: refusing to follow it out of the archive`,
            ),
        ).join("/");
      } else {
        return entry;
      }
    }
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${this.what}: too many links resolving ${quoteUntrusted(name)}`,
    );
  }

  /** Read a whole (small) member into memory; refuses members larger than `limit`. */
  async readFile(entry: IndexedEntry, limit = 64 * 1024 * 1024): Promise<Buffer> {
    if (entry.size > limit) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${this.what}: ${quoteUntrusted(entry.path)} is ${entry.size} bytes, more than the ${limit} expected`,
      );
    }
    return this.readRange(entry.offset, entry.size);
  }

  /** Read `length` bytes at `position` of the tar file. */
  async readRange(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#handle.read(buf, done, length - done, position + done);
      if (bytesRead === 0) {
        throw new SutureError("INVALID_ARCHIVE", `${this.what} is truncated (it changed after indexing?)`);
      }
      done += bytesRead;
    }
    return buf;
  }

  /** A stream of a member's data. The caller must consume or destroy it. */
  stream(entry: IndexedEntry): Readable {
    const handle = this.#handle;
    const path = this.what;
    async function* chunks(): AsyncGenerator<Buffer> {
      let position = entry.offset;
      const end = entry.offset + entry.size;
      while (position < end) {
        const want = Math.min(CHUNK, end - position);
        const buf = Buffer.allocUnsafe(want);
        const { bytesRead } = await handle.read(buf, 0, want, position);
        if (bytesRead === 0) {
          throw new SutureError("INVALID_ARCHIVE", `${path} is truncated in ${quoteUntrusted(entry.path)}`);
        }
        position += bytesRead;
        yield bytesRead === want ? buf : buf.subarray(0, bytesRead);
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#handle.close();
  }
}

/**
 * A member name as the index keys it (member-path.ts), refusing unsafe ones: absolute paths and
 * `..` that climbs above the root are INVALID_ARCHIVE (an archive naming them is either broken or
 * trying to reach outside its root).
 */
export function indexedPath(raw: string, archive: string): string {
  return normaliseEntryPath(
    raw,
    raw,
    (what, why) =>
      new SutureError(
        "INVALID_ARCHIVE",
        `${archive} has an entry ${quoteUntrusted(what)} that ${why}: refusing an unsafe archive`,
      ),
  ).join("/");
}

async function readHeaders(handle: FileHandle, what: string): Promise<Map<string, IndexedEntry>> {
  const { size: fileSize } = await handle.stat();
  const entries = new Map<string, IndexedEntry>();
  const decoder = new TarHeaderDecoder();
  const block = Buffer.alloc(BLOCK);
  let position = 0;
  let sawEntry = false;

  for (;;) {
    if (position + BLOCK > fileSize) {
      // A tar without end-of-archive blocks still ends cleanly at a block boundary.
      if (position === fileSize && sawEntry) break;
      throw position === 0 ? new SutureError("INVALID_ARCHIVE", `${what} is empty`) : truncated(what);
    }
    const { bytesRead } = await handle.read(block, 0, BLOCK, position);
    if (bytesRead < BLOCK) throw truncated(what);
    const step = namedAfter(what, () => decoder.decode(block));
    const dataOffset = position + BLOCK;
    if (step.kind === "end") break;
    if (step.kind === "extension") {
      if (dataOffset + step.size > fileSize) throw truncated(what);
      const data = Buffer.alloc(step.size);
      await handle.read(data, 0, step.size, dataOffset);
      namedAfter(what, () => decoder.extension(data));
      position = dataOffset + paddedSize(step.size);
      continue;
    }
    if (step.kind === "skip") {
      position = dataOffset + paddedSize(step.size);
      continue;
    }
    const { entry } = step;
    const path = indexedPath(entry.path, what);
    if (entry.type === "hardlink") entry.linkname = indexedPath(entry.linkname, what);
    if (dataOffset + entry.size > fileSize) throw truncated(what);
    // The root itself ("./") is no member one could ask for.
    if (path !== "") entries.set(path, { ...entry, path, offset: dataOffset });
    sawEntry = true;
    position = dataOffset + paddedSize(entry.size);
  }
  return entries;
}

/** The decoder's errors say what is wrong with a tar; prefix which archive it is. */
function namedAfter<T>(what: string, decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (!isSutureError(e, "INVALID_ARCHIVE")) throw e;
    throw new SutureError("INVALID_ARCHIVE", `${what}: ${e.message}`, { cause: e });
  }
}

function truncated(what: string): SutureError {
  return new SutureError("INVALID_ARCHIVE", `${what} is truncated or not a tar archive`);
}
