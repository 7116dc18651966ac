/**
 * The one decoder of tar headers, shared by the streaming reader (read.ts, and through it the
 * extractor) and the random-access index (random-access.ts): 512-byte ustar/GNU header blocks,
 * PAX extended records (binary-safe), GNU long names and link names, octal and GNU base-256
 * numbers, the header checksum and the typeflag mapping. How the bytes arrive (a stream, a file
 * read at offsets) is the caller's business; this file only turns blocks into entries.
 *
 * We decode tar ourselves instead of using tar-stream: tar-stream decodes PAX values as UTF-8
 * (which corrupts binary xattrs such as security.capability) and ignores PAX uid/gid/mtime.
 */
import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import type { TarEntry, TarEntryType } from "./entry.ts";

export const BLOCK = 512;
/** PAX and GNU long-name records are metadata; anything this large is an attack or corruption. */
export const MAX_EXTENSION_BYTES = 1024 * 1024;

/** `size` rounded up to whole blocks: the bytes a member's data occupies in the archive. */
export function paddedSize(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

/** What one header block asks of the caller. */
export type HeaderStep =
  /** A zero block: the end-of-archive marker. */
  | { kind: "end" }
  /** A PAX or GNU long-name record of `size` bytes follows: hand them to `extension()`. */
  | { kind: "extension"; size: number }
  /** A member that carries no file (a GNU volume label): skip `size` bytes of data. */
  | { kind: "skip"; size: number }
  /** A member; `entry.size` bytes of data follow (0 for everything but regular files). */
  | { kind: "entry"; entry: TarEntry };

type ExtensionKind = "pax" | "global" | "longname" | "longlink";

/**
 * Decodes the header blocks of one archive in order. It keeps the state that spans blocks: PAX
 * records (global and per member) and GNU long names waiting for the member they describe.
 */
export class TarHeaderDecoder {
  readonly #globalPax = new Map<string, Buffer>();
  #pax = new Map<string, Buffer>();
  #longName: string | undefined;
  #longLink: string | undefined;
  #pending: ExtensionKind | undefined;

  /** Decode one 512-byte header block. Throws INVALID_ARCHIVE for a corrupt or unsupported header. */
  decode(block: Buffer): HeaderStep {
    if (this.#pending) throw new SutureError("INTERNAL", "tar decoder: an extension record was not read");
    if (isZeroBlock(block)) return { kind: "end" };
    if (!checksumOk(block)) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        "tar header checksum mismatch: the archive is corrupt or not a tar archive",
      );
    }
    const magic = block.subarray(257, 263).toString("latin1");
    let name = cString(block, 0, 100);
    // The ustar prefix field; GNU tar ("ustar  ") uses those bytes for other things.
    if (magic === "ustar\0") {
      const prefix = cString(block, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    const flag = String.fromCharCode(block[156]!);
    const size = tarNumber(block, 124, 12, "size");
    const kind = typeFromFlag(flag, name);

    if (kind === "pax" || kind === "global" || kind === "longname" || kind === "longlink") {
      if (size > MAX_EXTENSION_BYTES)
        throw new SutureError("INVALID_ARCHIVE", `tar metadata record of ${size} bytes is too large`);
      this.#pending = kind;
      return { kind: "extension", size };
    }
    if (kind === "skip") return { kind: "skip", size };

    const entry: TarEntry = {
      path: this.#longName ?? name,
      type: kind,
      mode: tarNumber(block, 100, 8, "mode") & 0o7777,
      uid: tarNumber(block, 108, 8, "uid"),
      gid: tarNumber(block, 116, 8, "gid"),
      size,
      mtime: tarNumber(block, 136, 12, "mtime"),
      linkname: this.#longLink ?? cString(block, 157, 100),
      devmajor: kind === "char" || kind === "block" ? tarNumber(block, 329, 8, "devmajor") : 0,
      devminor: kind === "char" || kind === "block" ? tarNumber(block, 337, 8, "devminor") : 0,
      xattrs: new Map(),
    };
    if (magic.startsWith("ustar")) {
      const uname = cString(block, 265, 32);
      const gname = cString(block, 297, 32);
      if (uname) entry.uname = uname;
      if (gname) entry.gname = gname;
    }
    applyPax(entry, new Map([...this.#globalPax, ...this.#pax]));
    this.#pax = new Map();
    this.#longName = undefined;
    this.#longLink = undefined;
    // Only regular files carry data. As in Go's archive/tar, the size field of header-only types
    // (links, devices, directories, fifos) is ignored: no data follows them.
    if (entry.type !== "file") entry.size = 0;
    return { kind: "entry", entry };
  }

  /** The `size` bytes of the extension record the last `decode` announced (without padding). */
  extension(data: Buffer): void {
    const kind = this.#pending;
    this.#pending = undefined;
    if (kind === "pax") parsePax(data, this.#pax);
    else if (kind === "global") parsePax(data, this.#globalPax);
    else if (kind === "longname") this.#longName = cString(data, 0, data.length);
    else if (kind === "longlink") this.#longLink = cString(data, 0, data.length);
    else throw new SutureError("INTERNAL", "tar decoder: no extension record was announced");
  }
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function cString(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const nul = field.indexOf(0);
  return (nul === -1 ? field : field.subarray(0, nul)).toString("utf8");
}

/** Octal (NUL/space padded) or GNU base-256 numeric field (sizes of 8 GiB and more, big ids). */
function tarNumber(block: Buffer, start: number, length: number, what: string): number {
  const field = block.subarray(start, start + length);
  if (field[0]! & 0x80) {
    if (field[0] === 0xff) throw new SutureError("INVALID_ARCHIVE", `tar header has a negative ${what}`);
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    if (!Number.isSafeInteger(value))
      throw new SutureError("INVALID_ARCHIVE", `tar header ${what} is too large`);
    return value;
  }
  const text = field
    .toString("latin1")
    .replace(/[\0 ]+$/, "")
    .replace(/^[\0 ]+/, "");
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text))
    throw new SutureError("INVALID_ARCHIVE", `tar header has a malformed ${what} ${quoteUntrusted(text)}`);
  return Number.parseInt(text, 8);
}

/** The recorded checksum equals the header's byte sum, counted unsigned or (old tars) signed. */
function checksumOk(block: Buffer): boolean {
  const recorded = tarNumber(block, 148, 8, "checksum");
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return recorded === unsigned || recorded === signed;
}

/** PAX records ("LEN key=value\n"), binary-safe: values stay bytes until we know their meaning. */
function parsePax(data: Buffer, into: Map<string, Buffer>): void {
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw new SutureError("INVALID_ARCHIVE", "malformed PAX record: no length");
    const len = Number.parseInt(data.subarray(pos, space).toString("latin1"), 10);
    if (!Number.isSafeInteger(len) || len <= space - pos + 1 || pos + len > data.length) {
      throw new SutureError("INVALID_ARCHIVE", "malformed PAX record: bad length");
    }
    const record = data.subarray(space + 1, pos + len - 1); // drop the trailing newline
    const eq = record.indexOf(0x3d);
    if (eq === -1) throw new SutureError("INVALID_ARCHIVE", "malformed PAX record: no '='");
    into.set(record.subarray(0, eq).toString("utf8"), Buffer.from(record.subarray(eq + 1)));
    pos += len;
  }
}

/** The one typeflag mapping; unknown and sparse members are refused rather than misread. */
function typeFromFlag(flag: string, name: string): TarEntryType | ExtensionKind | "skip" {
  switch (flag) {
    case "0":
    case "\0":
    case "7":
      // Pre-POSIX tars mark directories only by the trailing slash.
      return name.endsWith("/") ? "directory" : "file";
    case "1":
      return "hardlink";
    case "2":
      return "symlink";
    case "3":
      return "char";
    case "4":
      return "block";
    case "5":
      return "directory";
    case "6":
      return "fifo";
    case "x":
      return "pax";
    case "g":
      return "global";
    case "L":
      return "longname";
    case "K":
      return "longlink";
    case "V":
      return "skip";
    case "S":
      throw new SutureError(
        "INVALID_ARCHIVE",
        `tar member ${quoteUntrusted(name)} is a GNU sparse file, which layers must not contain: rebuild the layer without --sparse`,
      );
    default:
      throw new SutureError(
        "INVALID_ARCHIVE",
        `tar member ${quoteUntrusted(name)} has unsupported type flag ${quoteUntrusted(flag)}: the layer was not written by a standard tar tool`,
      );
  }
}

function applyPax(entry: TarEntry, pax: Map<string, Buffer>): void {
  for (const [key, raw] of pax) {
    const text = () => raw.toString("utf8");
    const num = (what: string) => {
      const n = Number(text());
      if (!Number.isFinite(n) || n < 0)
        throw new SutureError("INVALID_ARCHIVE", `PAX ${what} ${quoteUntrusted(text())} is not a number`);
      return n;
    };
    if (key === "path") entry.path = text();
    else if (key === "linkpath") entry.linkname = text();
    else if (key === "size") entry.size = num("size");
    else if (key === "uid") entry.uid = num("uid");
    else if (key === "gid") entry.gid = num("gid");
    else if (key === "mtime") entry.mtime = num("mtime");
    else if (key === "uname") entry.uname = text();
    else if (key === "gname") entry.gname = text();
    else if (key.startsWith("SCHILY.xattr.")) entry.xattrs.set(key.slice("SCHILY.xattr.".length), raw);
    else if (key.startsWith("LIBARCHIVE.xattr.")) {
      // The name is percent-encoded; a malformed escape (`%zz`) makes decodeURIComponent throw a
      // URIError, which must surface as the archive's defect, not as a crash.
      let name: string;
      try {
        name = decodeURIComponent(key.slice("LIBARCHIVE.xattr.".length));
      } catch {
        throw new SutureError(
          "INVALID_ARCHIVE",
          `PAX record ${quoteUntrusted(key)} has a malformed percent-encoded xattr name`,
        );
      }
      entry.xattrs.set(name, Buffer.from(text(), "base64"));
    } else if (key.startsWith("GNU.sparse.")) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `tar member ${quoteUntrusted(entry.path)} is a PAX sparse file, which layers must not contain: rebuild the layer without --sparse`,
      );
    } else {
      entry.otherPax ??= new Map();
      entry.otherPax.set(key, raw);
    }
  }
  if (!Number.isSafeInteger(entry.size)) {
    throw new SutureError("INVALID_ARCHIVE", `tar member ${quoteUntrusted(entry.path)} has an invalid size`);
  }
}
