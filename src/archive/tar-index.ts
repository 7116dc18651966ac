import { type FileHandle, open } from "node:fs/promises";
import { posix } from "node:path";
import { Readable } from "node:stream";
import { quoteUntrusted, SutureError } from "../errors/errors.ts";

/** One member of an indexed tar file: where its data lies in the file. */
export interface TarEntry {
  /** Normalised relative path: no leading `./` or `/`, no trailing `/`, no `..`. */
  readonly name: string;
  readonly type: "file" | "directory" | "symlink" | "hardlink" | "other";
  /** Byte offset of the entry's data in the tar file. */
  readonly offset: number;
  readonly size: number;
  /** Target of a symlink (as written) or hard link (archive path). */
  readonly linkname?: string;
}

const BLOCK = 512;
const CHUNK = 256 * 1024;
/** Extended headers (PAX, GNU long names) are small; a huge one means a corrupt or hostile file. */
const MAX_EXTENDED_HEADER = 1024 * 1024;

/**
 * Random access to the members of an uncompressed tar file, found by reading only the headers
 * (one pass, seeking over data). Contract:
 * - Every member name is checked: absolute names and names with a `..` component make `open`
 *   fail with INVALID_ARCHIVE, so nothing from an unsafe archive is ever used.
 * - Later members with the same name replace earlier ones (tar semantics).
 * - Reads use one file handle opened at index time, so they see the file that was indexed even if
 *   the path is replaced meanwhile. `close()` releases it; it is safe to call twice.
 * - The file is only ever read.
 */
export class TarIndex {
  readonly path: string;
  /** How the archive is named in messages. */
  readonly what: string;
  readonly entries: ReadonlyMap<string, TarEntry>;
  readonly #handle: FileHandle;
  #closed = false;

  private constructor(path: string, what: string, handle: FileHandle, entries: Map<string, TarEntry>) {
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
  resolve(name: string): TarEntry | undefined {
    let current = normaliseMemberName(name, this.what);
    for (let hops = 0; hops < 40; hops++) {
      const entry = this.entries.get(current);
      if (!entry) return undefined;
      if (entry.type === "hardlink") {
        current = normaliseMemberName(entry.linkname ?? "", this.what);
      } else if (entry.type === "symlink") {
        const target = entry.linkname ?? "";
        if (target.startsWith("/")) {
          throw new SutureError(
            "INVALID_ARCHIVE",
            `${this.what}: ${quoteUntrusted(entry.name)} is a symlink to the absolute path ${quoteUntrusted(target)}: refusing to follow it out of the archive`,
          );
        }
        const joined = posix.normalize(posix.join(posix.dirname(entry.name), target));
        if (joined === ".." || joined.startsWith("../")) {
          throw new SutureError(
            "INVALID_ARCHIVE",
            `${this.what}: ${quoteUntrusted(entry.name)} is a symlink to ${quoteUntrusted(target)}, outside the archive`,
          );
        }
        current = joined;
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
  async readFile(entry: TarEntry, limit = 64 * 1024 * 1024): Promise<Buffer> {
    if (entry.size > limit) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${this.what}: ${quoteUntrusted(entry.name)} is ${entry.size} bytes, more than the ${limit} expected`,
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
  stream(entry: TarEntry): Readable {
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
          throw new SutureError("INVALID_ARCHIVE", `${path} is truncated in ${quoteUntrusted(entry.name)}`);
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
 * Normalise a tar member name and refuse unsafe ones: absolute paths and any `..` component are
 * INVALID_ARCHIVE (an archive naming them is either broken or trying to write outside its root).
 */
export function normaliseMemberName(raw: string, archive: string): string {
  if (raw.startsWith("/")) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${archive} has an entry with the absolute path ${quoteUntrusted(raw)}: refusing an unsafe archive`,
    );
  }
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${archive} has an entry ${quoteUntrusted(raw)} that climbs out of the archive with "..": refusing an unsafe archive`,
    );
  }
  return parts.join("/");
}

async function readHeaders(handle: FileHandle, what: string): Promise<Map<string, TarEntry>> {
  const { size: fileSize } = await handle.stat();
  const entries = new Map<string, TarEntry>();
  const header = Buffer.alloc(BLOCK);
  let position = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: Record<string, string> = {};
  let sawEntry = false;

  const readExtended = async (offset: number, size: number): Promise<Buffer> => {
    if (size > MAX_EXTENDED_HEADER) {
      throw new SutureError("INVALID_ARCHIVE", `${what} has an extended tar header of ${size} bytes`);
    }
    if (offset + size > fileSize) throw truncated(what);
    const buf = Buffer.alloc(size);
    await handle.read(buf, 0, size, offset);
    return buf;
  };

  for (;;) {
    if (position + BLOCK > fileSize) {
      // A tar without end-of-archive blocks still ends cleanly at a block boundary.
      if (position === fileSize && sawEntry) break;
      throw position === 0 ? new SutureError("INVALID_ARCHIVE", `${what} is empty`) : truncated(what);
    }
    const { bytesRead } = await handle.read(header, 0, BLOCK, position);
    if (bytesRead < BLOCK) throw truncated(what);
    if (header.every((b) => b === 0)) break;
    verifyChecksum(header, what, position);
    const type = String.fromCharCode(header[156]!);
    const size = parseNumber(header.subarray(124, 136), what);
    const dataOffset = position + BLOCK;
    const next = dataOffset + Math.ceil(size / BLOCK) * BLOCK;

    if (type === "L") {
      longName = cString(await readExtended(dataOffset, size));
    } else if (type === "K") {
      longLink = cString(await readExtended(dataOffset, size));
    } else if (type === "x") {
      pax = { ...pax, ...parsePax(await readExtended(dataOffset, size), what) };
    } else if (type === "g") {
      // Global PAX headers carry defaults we do not need (comments, mtimes).
    } else {
      const magic = header.subarray(257, 263).toString("latin1");
      let name = cString(header.subarray(0, 100));
      // POSIX ustar keeps a prefix for long names; GNU tar ("ustar  ") uses those bytes otherwise.
      if (magic === "ustar\0") {
        const prefix = cString(header.subarray(345, 500));
        if (prefix) name = `${prefix}/${name}`;
      }
      name = pax.path ?? longName ?? name;
      const linkname = pax.linkpath ?? longLink ?? cString(header.subarray(157, 257));
      const realSize = pax.size !== undefined ? Number(pax.size) : size;
      if (!Number.isSafeInteger(realSize) || realSize < 0) {
        throw new SutureError("INVALID_ARCHIVE", `${what} has an entry with an invalid size`);
      }
      const normalised = normaliseMemberName(name, what);
      const kind = entryType(type);
      if (kind === "hardlink") normaliseMemberName(linkname, what);
      const dataSize = kind === "file" ? realSize : 0;
      if (dataOffset + dataSize > fileSize) throw truncated(what);
      if (normalised !== "") {
        entries.set(normalised, {
          name: normalised,
          type: kind,
          offset: dataOffset,
          size: dataSize,
          ...(kind === "symlink" || kind === "hardlink" ? { linkname } : {}),
        });
      }
      sawEntry = true;
      longName = undefined;
      longLink = undefined;
      pax = {};
      // A PAX size overrides the header's (files over 8 GiB); the data then spans realSize bytes.
      position = dataOffset + Math.ceil((type === "1" || type === "2" ? 0 : realSize) / BLOCK) * BLOCK;
      continue;
    }
    position = next;
  }
  return entries;
}

function entryType(flag: string): TarEntry["type"] {
  switch (flag) {
    case "0":
    case "\0":
    case "7":
      return "file";
    case "5":
      return "directory";
    case "2":
      return "symlink";
    case "1":
      return "hardlink";
    default:
      return "other";
  }
}

function truncated(what: string): SutureError {
  return new SutureError("INVALID_ARCHIVE", `${what} is truncated or not a tar archive`);
}

function cString(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString("utf8");
}

/** Octal, or GNU base-256 when the high bit of the first byte is set (sizes of 8 GiB and more). */
function parseNumber(field: Buffer, what: string): number {
  if (field[0]! & 0x80) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    if (!Number.isSafeInteger(value)) throw new SutureError("INVALID_ARCHIVE", `${what}: size too large`);
    return value;
  }
  const text = field.toString("latin1").replace(/\0.*$/s, "").trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what} is not a tar archive (bad number field ${quoteUntrusted(text)})`,
    );
  }
  return Number.parseInt(text, 8);
}

function verifyChecksum(header: Buffer, what: string, position: number): void {
  const stored = parseNumber(header.subarray(148, 156), what);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  if (sum !== stored) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what} is not a tar archive or is corrupt (bad header checksum at byte ${position})`,
    );
  }
}

/** PAX records: "<len> <key>=<value>\n", len counting the whole record. */
function parsePax(buf: Buffer, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < buf.length) {
    const space = buf.indexOf(0x20, i);
    if (space < 0) break;
    const len = Number.parseInt(buf.subarray(i, space).toString("latin1"), 10);
    if (!Number.isSafeInteger(len) || len <= 0 || i + len > buf.length) {
      throw new SutureError("INVALID_ARCHIVE", `${what} has a malformed PAX header`);
    }
    const record = buf.subarray(space + 1, i + len - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    i += len;
  }
  return out;
}
