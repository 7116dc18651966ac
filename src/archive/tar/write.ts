/**
 * A small deterministic tar writer (POSIX ustar headers, with PAX extended headers when a field
 * does not fit). The same entries always give the same bytes: no atime/ctime, no user or group
 * names, no host-dependent padding, PAX records in byte order of their keys.
 *
 * Format facts relied on (POSIX.1-2001 "pax" interchange format):
 * - every header and every data area is padded to 512-byte blocks; the archive ends with two
 *   zero blocks;
 * - numeric header fields are octal, NUL-terminated; the checksum is the byte sum of the header
 *   with the checksum field read as eight spaces, written as six octal digits, NUL, space;
 * - a PAX header (typeflag `x`) precedes the entry it describes; its body is records
 *   `"<len> <key>=<value>\n"` where `<len>` counts the whole record in bytes, itself included;
 * - `SCHILY.xattr.<name>` records carry extended attributes, value as raw bytes (what GNU tar,
 *   Go's archive/tar, containerd and umoci read and write).
 */
import type { Readable } from "node:stream";
import { SutureError } from "../../errors/errors.ts";
import type { TarEntry } from "./entry.ts";
import { BLOCK } from "./header.ts";

/**
 * What the writer takes: a TarEntry's fields, of which `size` (files only), `linkname`, device
 * numbers and xattrs may be left out, plus the body of a regular file.
 */
export interface TarWriteEntry
  extends Pick<TarEntry, "path" | "type" | "mode" | "uid" | "gid" | "mtime">,
    Partial<Pick<TarEntry, "size" | "linkname" | "devmajor" | "devminor">> {
  /** Extended attributes, written as `SCHILY.xattr.<name>` PAX records (values are raw bytes). */
  xattrs?: ReadonlyMap<string, Uint8Array>;
  /**
   * Other PAX records, written as given (e.g. apk's `APK-TOOLS.checksum.SHA1`): the reader's
   * `TarEntry.otherPax`. Keys the writer sets itself (path, size, xattrs…) are not for this.
   */
  otherPax?: ReadonlyMap<string, Uint8Array>;
  /**
   * The body of a regular file, opened only when the writer reaches it. It must yield exactly
   * `size` bytes: more or fewer is an error (the file changed while it was archived).
   */
  body?: () => Readable | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

const TYPEFLAG: Record<TarEntry["type"] | "pax", number> = {
  file: 0x30, // '0'
  hardlink: 0x31,
  symlink: 0x32,
  char: 0x33,
  block: 0x34,
  directory: 0x35,
  fifo: 0x36,
  pax: 0x78, // 'x'
};
/** PAX records the writer derives from the entry's own fields; `otherPax` may not set them. */
const WRITER_PAX_KEYS = /^(?:path|linkpath|uid|gid|size|mtime|SCHILY\.xattr\..*)$/;
/** Largest value of an octal field of `width` bytes (width - 1 digits, then NUL). */
const octalMax = (width: number): number => 8 ** (width - 1) - 1;

/** Byte-order comparison of two strings as UTF-8 (JS `<` compares UTF-16 units, which differs). */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Zero bytes that pad `size` bytes of data up to a whole number of blocks. */
export function tarPadding(size: number): Buffer {
  const rest = size % BLOCK;
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest);
}

/** The two zero blocks that end every archive. */
export const TAR_END: Buffer = Buffer.alloc(2 * BLOCK);

/**
 * The header blocks for one entry: an optional PAX header and its padded records, then the ustar
 * header. Throws INVALID_ARCHIVE for values no tar header can hold (a device number over 2^21).
 */
export function encodeTarHeader(entry: TarWriteEntry): Buffer {
  const isDir = entry.type === "directory";
  const name = isDir ? `${entry.path}/` : entry.path;
  const size = entry.type === "file" ? (entry.size ?? 0) : 0;
  const mtime = Math.trunc(entry.mtime);
  const pax = new Map<string, Uint8Array>();

  const nameBytes = Buffer.from(name, "utf8");
  if (nameBytes.length > 100 || !isPlainAscii(nameBytes)) pax.set("path", nameBytes);
  const linkBytes = Buffer.from(entry.linkname ?? "", "utf8");
  if (linkBytes.length > 100 || !isPlainAscii(linkBytes)) pax.set("linkpath", linkBytes);
  if (!fitsOctal(entry.uid, 8)) pax.set("uid", Buffer.from(String(entry.uid)));
  if (!fitsOctal(entry.gid, 8)) pax.set("gid", Buffer.from(String(entry.gid)));
  if (!fitsOctal(size, 12)) pax.set("size", Buffer.from(String(size)));
  if (!fitsOctal(mtime, 12)) pax.set("mtime", Buffer.from(String(mtime)));
  for (const [key, value] of entry.xattrs ?? []) {
    if (key.includes("=") || key.length === 0)
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${entry.path} has an xattr named "${key}", which tar cannot hold`,
      );
    pax.set(`SCHILY.xattr.${key}`, value);
  }
  for (const [key, value] of entry.otherPax ?? []) {
    if (key.includes("=") || key.length === 0 || WRITER_PAX_KEYS.test(key))
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${entry.path} has a PAX record named "${key}", which tar cannot hold`,
      );
    pax.set(key, value);
  }
  for (const [field, value] of [
    ["devmajor", entry.devmajor ?? 0],
    ["devminor", entry.devminor ?? 0],
  ] as const) {
    if (!fitsOctal(value, 8))
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${entry.path} has ${field} ${value}, larger than a tar header holds: such devices cannot be put in a layer`,
      );
  }

  const ustar = ustarHeader({
    name: pax.has("path") ? asciiFallback(nameBytes) : nameBytes,
    mode: entry.mode & 0o7777,
    uid: fitsOctal(entry.uid, 8) ? entry.uid : 0,
    gid: fitsOctal(entry.gid, 8) ? entry.gid : 0,
    size: fitsOctal(size, 12) ? size : 0,
    mtime: fitsOctal(mtime, 12) ? mtime : 0,
    typeflag: TYPEFLAG[entry.type],
    linkname: pax.has("linkpath") ? asciiFallback(linkBytes) : linkBytes,
    devmajor: entry.devmajor ?? 0,
    devminor: entry.devminor ?? 0,
  });
  if (pax.size === 0) return ustar;

  const records = encodePaxRecords(pax);
  const paxHeader = ustarHeader({
    // Readers ignore this name; a fixed prefix plus the base name keeps it deterministic.
    name: asciiFallback(Buffer.from(`PaxHeaders/${baseName(entry.path)}`, "utf8")),
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: records.length,
    mtime: fitsOctal(mtime, 12) ? mtime : 0,
    typeflag: TYPEFLAG.pax,
    linkname: Buffer.alloc(0),
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([paxHeader, records, tarPadding(records.length), ustar]);
}

/** PAX records in byte order of their keys, each `"<len> <key>=<value>\n"`. */
export function encodePaxRecords(records: ReadonlyMap<string, Uint8Array>): Buffer {
  const keys = [...records.keys()].sort(compareBytes);
  const parts: Buffer[] = [];
  for (const key of keys) {
    const value = records.get(key)!;
    const keyBytes = Buffer.from(key, "utf8");
    // " key=value\n" plus the decimal length, which counts its own digits.
    const rest = 1 + keyBytes.length + 1 + value.length + 1;
    let digits = String(rest).length;
    while (String(rest + digits).length > digits) digits++;
    parts.push(
      Buffer.from(`${rest + digits} `),
      keyBytes,
      Buffer.from("="),
      Buffer.from(value),
      Buffer.from("\n"),
    );
  }
  return Buffer.concat(parts);
}

/** writeTar yields its output in pieces of about this size (see writeTar). */
const OUTPUT_BATCH = 512 * 1024;

/**
 * Serialise entries into a tar stream. Backpressure is the consumer's: wrap it in
 * `Readable.from()` and pipe it. Bodies are opened one at a time, only when reached.
 *
 * Headers, padding and small bodies are gathered into pieces of about 512 KiB: a layer of
 * thousands of small files would otherwise reach the hash, the compressor and the file as
 * thousands of tiny writes, each a round trip to the threadpool.
 */
export async function* writeTar(
  entries: AsyncIterable<TarWriteEntry> | Iterable<TarWriteEntry>,
): AsyncGenerator<Buffer> {
  let batch: Buffer[] = [];
  let batched = 0;
  const add = (buf: Buffer): Buffer | undefined => {
    batch.push(buf);
    batched += buf.length;
    if (batched < OUTPUT_BATCH) return undefined;
    const out = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
    batch = [];
    batched = 0;
    return out;
  };
  for await (const entry of entries) {
    let out = add(encodeTarHeader(entry));
    if (out) yield out;
    if (entry.type !== "file") continue;
    const size = entry.size ?? 0;
    let written = 0;
    if (entry.body) {
      for await (const chunk of entry.body()) {
        const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
        written += buf.length;
        if (written > size) break;
        out = add(buf);
        if (out) yield out;
      }
    }
    if (written !== size)
      throw new SutureError(
        "IO",
        `${entry.path} was ${size} bytes when listed but ${written > size ? "grew" : `gave ${written} bytes`} while it was archived: nothing may write to the directory while a layer is built`,
      );
    const pad = tarPadding(size);
    if (pad.length > 0) {
      out = add(pad);
      if (out) yield out;
    }
  }
  batch.push(TAR_END);
  yield Buffer.concat(batch);
}

interface UstarFields {
  name: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: number;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
}

function ustarHeader(f: UstarFields): Buffer {
  const h = Buffer.alloc(BLOCK);
  f.name.copy(h, 0, 0, 100);
  writeOctal(h, 100, 8, f.mode);
  writeOctal(h, 108, 8, f.uid);
  writeOctal(h, 116, 8, f.gid);
  writeOctal(h, 124, 12, f.size);
  writeOctal(h, 136, 12, f.mtime);
  h.fill(0x20, 148, 156); // checksum field counts as spaces while summing
  h[156] = f.typeflag;
  f.linkname.copy(h, 157, 0, 100);
  h.write("ustar\u000000", 257, "latin1"); // magic "ustar\0", version "00"
  // uname (265) and gname (297) stay empty: ownership is numeric only.
  writeOctal(h, 329, 8, f.devmajor);
  writeOctal(h, 337, 8, f.devminor);
  // prefix (345) stays empty: long names go into PAX instead.
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, "0")}\u0000 `, 148, "latin1");
  return h;
}

function writeOctal(h: Buffer, offset: number, width: number, value: number): void {
  h.write(`${value.toString(8).padStart(width - 1, "0")}\u0000`, offset, "latin1");
}

function fitsOctal(value: number, width: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= octalMax(width);
}

function isPlainAscii(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b === 0 || b > 0x7e) return false;
  return true;
}

/** What readers without PAX support see: ASCII only, cut to the 100-byte field. */
function asciiFallback(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes.subarray(0, 100));
  for (let i = 0; i < out.length; i++) if (out[i]! > 0x7e || out[i] === 0) out[i] = 0x5f; // '_'
  return out;
}

function baseName(name: string): string {
  const i = name.lastIndexOf("/");
  return i === -1 ? name : name.slice(i + 1);
}
