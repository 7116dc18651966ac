import { spawn } from "node:child_process";
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fchownSync,
  constants as fsConstants,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { setAttributeSync } from "@napi-rs/xattr";
import { asSutureError, describeCause, quoteUntrusted, SutureError } from "../errors/errors.ts";

// ---------------------------------------------------------------------------------------------
// Reading
//
// We parse tar ourselves instead of using tar-stream: tar-stream decodes PAX values as UTF-8
// (which corrupts binary xattrs such as security.capability) and ignores PAX uid/gid/mtime.
// ---------------------------------------------------------------------------------------------

export type TarEntryType = "file" | "directory" | "symlink" | "hardlink" | "char" | "block" | "fifo";

/** One archive member, with PAX and GNU long-name extensions already applied. */
export interface TarHeader {
  /** The member name exactly as recorded (not normalised). */
  path: string;
  type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (& 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch; fractional when a PAX record carries sub-second precision. */
  mtime: number;
  /** Link target for symlinks and hardlinks. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*` records, values as raw bytes. */
  xattrs: Map<string, Buffer>;
  /**
   * PAX records this reader does not interpret (e.g. apk's `APK-TOOLS.checksum.SHA1`), raw
   * bytes by key; absent when there are none.
   */
  otherPax?: Map<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /**
   * The member's data (empty for everything but files). Consume it before asking for the next
   * entry; whatever is left unread is skipped.
   */
  body: AsyncIterable<Buffer>;
}

const BLOCK = 512;
/** PAX and GNU long-name records are metadata; anything this large is an attack or corruption. */
const MAX_META_BYTES = 1024 * 1024;

/** Chunks of a byte stream: a Readable, an async generator, or an array of buffers. */
export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/** Pulls exact byte counts out of a chunk source. */
class ByteReader {
  readonly #it: AsyncIterator<Uint8Array>;
  #buf: Buffer = Buffer.alloc(0);
  #done = false;

  constructor(source: ByteSource) {
    this.#it =
      Symbol.asyncIterator in source
        ? source[Symbol.asyncIterator]()
        : (async function* () {
            yield* source;
          })();
  }

  async #fill(): Promise<boolean> {
    if (this.#done) return false;
    const n = await this.#it.next();
    if (n.done) {
      this.#done = true;
      return false;
    }
    const chunk = Buffer.isBuffer(n.value) ? n.value : Buffer.from(n.value);
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    return true;
  }

  /** Exactly `n` bytes, or null at a clean end of input; a short read is a truncated archive. */
  async read(n: number): Promise<Buffer | null> {
    while (this.#buf.length < n) {
      if (!(await this.#fill())) {
        if (this.#buf.length === 0) return null;
        throw new SutureError("INVALID_ARCHIVE", "tar archive is truncated: the layer blob is incomplete");
      }
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Stream `n` bytes in whatever chunks arrive. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.#buf.length === 0 && !(await this.#fill())) {
        throw new SutureError("INVALID_ARCHIVE", "tar archive is truncated inside a file's data");
      }
      const take = Math.min(left, this.#buf.length);
      const out = this.#buf.subarray(0, take);
      this.#buf = this.#buf.subarray(take);
      left -= take;
      yield out;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.chunks(n)) {
      // discard
    }
  }

  /** Read and discard everything left, so upstream digests cover the whole stream. */
  async drain(): Promise<void> {
    this.#buf = Buffer.alloc(0);
    while (await this.#fill()) this.#buf = Buffer.alloc(0);
  }
}

function cString(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const nul = field.indexOf(0);
  return (nul === -1 ? field : field.subarray(0, nul)).toString("utf8");
}

/** Octal (NUL/space padded) or GNU base-256 numeric field. */
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

function typeFromFlag(
  flag: string,
  name: string,
): TarEntryType | "pax" | "global" | "longname" | "longlink" | "skip" {
  switch (flag) {
    case "0":
    case "\0":
    case "7":
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

function applyPax(header: TarHeader, pax: Map<string, Buffer>): void {
  for (const [key, raw] of pax) {
    const text = () => raw.toString("utf8");
    const num = (what: string) => {
      const n = Number(text());
      if (!Number.isFinite(n) || n < 0)
        throw new SutureError("INVALID_ARCHIVE", `PAX ${what} ${quoteUntrusted(text())} is not a number`);
      return n;
    };
    if (key === "path") header.path = text();
    else if (key === "linkpath") header.linkname = text();
    else if (key === "size") header.size = num("size");
    else if (key === "uid") header.uid = num("uid");
    else if (key === "gid") header.gid = num("gid");
    else if (key === "mtime") header.mtime = num("mtime");
    else if (key.startsWith("SCHILY.xattr.")) header.xattrs.set(key.slice("SCHILY.xattr.".length), raw);
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
      header.xattrs.set(name, Buffer.from(text(), "base64"));
    } else if (key.startsWith("GNU.sparse.")) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `tar member ${quoteUntrusted(header.path)} is a PAX sparse file, which layers must not contain: rebuild the layer without --sparse`,
      );
    } else {
      header.otherPax ??= new Map();
      header.otherPax.set(key, raw);
    }
  }
  if (!Number.isSafeInteger(header.size)) {
    throw new SutureError("INVALID_ARCHIVE", `tar member ${quoteUntrusted(header.path)} has an invalid size`);
  }
}

/**
 * Parse a tar stream (ustar, PAX, GNU long names, base-256 numbers) into entries. Checksums are
 * verified; after the end-of-archive marker the rest of the input is read and discarded, so a
 * digest computed upstream covers every byte.
 */
export async function* readTar(source: ByteSource): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(source);
  const globalPax = new Map<string, Buffer>();
  let pax = new Map<string, Buffer>();
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    const block = await reader.read(BLOCK);
    if (block === null) return; // no end-of-archive blocks: tolerated, as GNU tar does
    if (block.every((b) => b === 0)) {
      await reader.drain();
      return;
    }
    if (!checksumOk(block)) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        "tar header checksum mismatch: the layer is corrupt or not a tar archive",
      );
    }
    const magic = block.subarray(257, 263).toString("latin1");
    let name = cString(block, 0, 100);
    // The ustar prefix field; GNU tar uses those bytes for other things.
    if (magic === "ustar\0") {
      const prefix = cString(block, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    const flag = String.fromCharCode(block[156]!);
    const size = tarNumber(block, 124, 12, "size");
    const kind = typeFromFlag(flag, name);
    const padded = Math.ceil(size / BLOCK) * BLOCK;

    if (kind === "pax" || kind === "global" || kind === "longname" || kind === "longlink") {
      if (size > MAX_META_BYTES)
        throw new SutureError("INVALID_ARCHIVE", `tar metadata record of ${size} bytes is too large`);
      const data = size > 0 ? await reader.read(padded) : Buffer.alloc(0);
      if (data === null)
        throw new SutureError("INVALID_ARCHIVE", "tar archive is truncated inside a metadata record");
      const body = data.subarray(0, size);
      if (kind === "pax") parsePax(body, pax);
      else if (kind === "global") parsePax(body, globalPax);
      else if (kind === "longname") longName = cString(body, 0, body.length);
      else longLink = cString(body, 0, body.length);
      continue;
    }
    if (kind === "skip") {
      await reader.skip(padded);
      continue;
    }

    const header: TarHeader = {
      path: longName ?? name,
      type: kind,
      mode: tarNumber(block, 100, 8, "mode") & 0o7777,
      uid: tarNumber(block, 108, 8, "uid"),
      gid: tarNumber(block, 116, 8, "gid"),
      size,
      mtime: tarNumber(block, 136, 12, "mtime"),
      linkname: longLink ?? cString(block, 157, 100),
      devmajor: kind === "char" || kind === "block" ? tarNumber(block, 329, 8, "devmajor") : 0,
      devminor: kind === "char" || kind === "block" ? tarNumber(block, 337, 8, "devminor") : 0,
      xattrs: new Map(),
    };
    applyPax(header, new Map([...globalPax, ...pax]));
    pax = new Map();
    longName = undefined;
    longLink = undefined;
    // Only regular files carry data. As in Go's archive/tar, the size field of header-only types
    // (links, devices, directories, fifos) is ignored: no data follows them.
    const dataSize = header.type === "file" ? header.size : 0;
    const dataPadded = Math.ceil(dataSize / BLOCK) * BLOCK;
    let delivered = 0;
    const body = (async function* () {
      for await (const chunk of reader.chunks(dataSize)) {
        delivered += chunk.length;
        yield chunk;
      }
    })();
    yield { header, body };
    await body.return(undefined); // the consumer may have stopped early, or never started
    await reader.skip(dataPadded - delivered);
  }
}

// ---------------------------------------------------------------------------------------------
// Extracting
// ---------------------------------------------------------------------------------------------

export interface ExtractOptions {
  /**
   * What to do with OCI whiteouts: "overlay" turns `.wh.NAME` into a 0/0 character device NAME and
   * `.wh..wh..opq` into xattr trusted.overlay.opaque=y on its directory (an overlayfs lower dir);
   * "keep" writes them as the plain files they are in the archive.
   */
  whiteouts: "overlay" | "keep";
  signal?: AbortSignal;
}

export interface ExtractStats {
  entries: number;
  files: number;
  bytes: number;
  whiteouts: number;
  opaqueDirs: number;
  /** Device nodes and fifos (whiteouts not counted). */
  specialFiles: number;
  /** xattrs in the archive we refused to set (trusted.overlay.*: they would steer overlayfs). */
  ignoredXattrs: string[];
}

interface PendingNode {
  rel: string;
  kind: "c" | "b" | "p";
  major: number;
  minor: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  xattrs: Map<string, Buffer>;
}

function unsafe(entry: string, why: string): SutureError {
  return new SutureError(
    "UNSAFE_LAYER",
    `layer entry ${quoteUntrusted(entry)} ${why}: refusing to extract a layer that could write outside its root`,
  );
}

/**
 * Normalise an archive path to components relative to the root. `./a//b/` → ["a","b"]; `.`/`./`
 * → [] (the root). Absolute paths and `..` that climbs above the root are refused.
 */
export function normaliseEntryPath(raw: string, what = raw): string[] {
  if (raw.startsWith("/")) throw unsafe(what, "is an absolute path");
  const out: string[] = [];
  for (const part of raw.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length === 0) throw unsafe(what, "climbs out of the layer root with '..'");
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}

function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** O_NOFOLLOW|O_EXCL: the final component is created fresh, never reached through a symlink. */
const CREATE_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/**
 * Extract a layer tar into `root` (an existing, private, empty directory) for use as an overlayfs
 * lower dir. Contract:
 * - Writes only below `root`: absolute member names and `..` escapes are refused (UNSAFE_LAYER),
 *   parents are walked with lstat and a symlinked parent is refused, files are created with
 *   O_NOFOLLOW|O_EXCL, and hardlink targets must resolve inside the layer.
 * - Preserves type, content, numeric ownership, mode bits (incl. setuid/setgid/sticky), mtimes
 *   (directories fixed up after their contents) and PAX xattrs (except trusted.overlay.*).
 * - Device nodes and fifos are created with the host's `mknod`, batched; whiteouts per `whiteouts`.
 * - Later members replace earlier ones at the same path, as tar does.
 * - Reads the input to its end (see readTar) and leaves a partial tree behind on error: the caller
 *   owns `root` and removes it.
 * Must run as root (ownership, devices, trusted.* xattrs).
 */
export async function extractTar(
  source: ByteSource,
  root: string,
  options: ExtractOptions,
): Promise<ExtractStats> {
  const ex = new Extractor(root, options);
  for await (const entry of readTar(source)) {
    options.signal?.throwIfAborted();
    try {
      await ex.entry(entry);
    } catch (e) {
      // What the archive asks for may be refused by the kernel (a uid past 2^32, a malformed
      // capability): still one clear error naming the entry, never a bare fs exception.
      throw asSutureError(e, "IO", `cannot extract layer entry ${quoteUntrusted(entry.header.path)}`);
    }
  }
  await ex.finish();
  return ex.stats;
}

// Filesystem calls below are synchronous on purpose: each entry needs several tiny syscalls, and
// a threadpool round trip per call made extraction 8x slower than GNU tar. The event loop still
// turns between data chunks, which are read asynchronously.
class Extractor {
  readonly stats: ExtractStats = {
    entries: 0,
    files: 0,
    bytes: 0,
    whiteouts: 0,
    opaqueDirs: 0,
    specialFiles: 0,
    ignoredXattrs: [],
  };
  readonly #root: string;
  readonly #options: ExtractOptions;
  /** Directories (relative, "" = root) already verified to be real directories. */
  readonly #knownDirs = new Set<string>([""]);
  /**
   * Paths this extraction created (besides #knownDirs). The root starts empty (the contract), so
   * any other path holds nothing yet and needs no lstat before it is created: that lstat was a
   * tenth of the syscalls of a base layer. Creation stays O_EXCL, so a wrong belief fails loudly.
   */
  readonly #created = new Set<string>();
  readonly #dirTimes = new Map<string, number>();
  readonly #pending = new Map<string, PendingNode>();

  constructor(root: string, options: ExtractOptions) {
    this.#root = root;
    this.#options = options;
  }

  #abs(rel: string): string {
    return rel === "" ? this.#root : join(this.#root, rel);
  }

  /** Create missing parents; refuse a parent that is a symlink or not a directory. */
  #ensureDir(parts: string[], entryName: string): void {
    let rel = "";
    for (const part of parts) {
      rel = rel === "" ? part : `${rel}/${part}`;
      if (this.#knownDirs.has(rel)) continue;
      if (this.#pending.has(rel))
        throw unsafe(entryName, `has parent ${quoteUntrusted(rel)} that is a device node`);
      const st = this.#created.has(rel) ? lstatSync(this.#abs(rel), { throwIfNoEntry: false }) : undefined;
      if (st === undefined) {
        mkdirSync(this.#abs(rel), { mode: 0o755 });
      } else if (st.isSymbolicLink()) {
        throw unsafe(entryName, `would be written through the symlink ${quoteUntrusted(rel)}`);
      } else if (!st.isDirectory()) {
        throw unsafe(entryName, `has parent ${quoteUntrusted(rel)} that is not a directory`);
      }
      this.#knownDirs.add(rel);
    }
  }

  /** Like #ensureDir, for paths that must already exist (hardlink targets, queued nodes). */
  #checkExistingParents(parts: string[], entryName: string): void {
    let rel = "";
    for (const part of parts) {
      rel = rel === "" ? part : `${rel}/${part}`;
      if (this.#knownDirs.has(rel)) continue;
      const st = lstatSync(this.#abs(rel), { throwIfNoEntry: false });
      if (!st)
        throw new SutureError(
          "INVALID_ARCHIVE",
          `layer entry ${quoteUntrusted(entryName)} refers below ${quoteUntrusted(rel)}, which does not exist`,
        );
      if (st.isSymbolicLink())
        throw unsafe(entryName, `refers to a path through the symlink ${quoteUntrusted(rel)}`);
      if (!st.isDirectory())
        throw unsafe(entryName, `refers to a path below ${quoteUntrusted(rel)}, which is not a directory`);
      this.#knownDirs.add(rel);
    }
  }

  /**
   * Make room for a new member at `rel`: tar semantics, a later member replaces an earlier one.
   * Returns whether a directory stays at `rel` (only with keepDir).
   */
  #clear(rel: string, keepDir: boolean): boolean {
    if (this.#pending.size)
      for (const p of [...this.#pending.keys()])
        if (p === rel || p.startsWith(`${rel}/`)) this.#pending.delete(p);
    if (!this.#created.has(rel) && !this.#knownDirs.has(rel)) return false;
    const path = this.#abs(rel);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st) return false;
    if (st.isDirectory()) {
      if (keepDir) return true;
      rmSync(path, { recursive: true, force: true });
      const under = (d: string) => d === rel || d.startsWith(`${rel}/`);
      for (const d of [...this.#knownDirs]) if (under(d)) this.#knownDirs.delete(d);
      for (const d of [...this.#dirTimes.keys()]) if (under(d)) this.#dirTimes.delete(d);
      return false;
    }
    unlinkSync(path);
    return false;
  }

  async entry({ header, body }: TarEntry): Promise<void> {
    this.stats.entries++;
    const name = header.path;
    const parts = normaliseEntryPath(name);
    const base = parts.at(-1);

    if (this.#options.whiteouts === "overlay" && base?.startsWith(".wh.")) {
      this.#whiteout(parts, name);
      return;
    }
    if (parts.length === 0) {
      // The layer root itself ("./"): only its metadata applies.
      if (header.type !== "directory") throw unsafe(name, "replaces the layer root with a non-directory");
      this.#applyDirMeta("", header);
      return;
    }
    const rel = parts.join("/");
    this.#ensureDir(parts.slice(0, -1), name);
    const path = this.#abs(rel);

    switch (header.type) {
      case "directory": {
        if (!this.#clear(rel, true)) mkdirSync(path, { mode: 0o700 });
        this.#knownDirs.add(rel);
        this.#applyDirMeta(rel, header);
        return;
      }
      case "file": {
        this.#clear(rel, false);
        const fd = openSync(path, CREATE_FLAGS, 0o600);
        this.#created.add(rel);
        try {
          for await (const chunk of body) {
            for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
            this.stats.bytes += chunk.length;
          }
          // chown clears setuid/setgid and capabilities, so: owner, then mode, then xattrs.
          fchownSync(fd, header.uid, header.gid);
          fchmodSync(fd, header.mode);
          this.#setXattrs(path, rel, header.xattrs, false);
          futimesSync(fd, header.mtime, header.mtime);
        } finally {
          closeSync(fd);
        }
        this.stats.files++;
        return;
      }
      case "symlink": {
        // symlink(2) refuses an empty target (ENOENT); it is the archive that is broken.
        if (header.linkname === "")
          throw new SutureError("INVALID_ARCHIVE", `symlink ${quoteUntrusted(name)} has an empty target`);
        this.#clear(rel, false);
        symlinkSync(header.linkname, path);
        this.#created.add(rel);
        lchownSync(path, header.uid, header.gid);
        this.#setXattrs(path, rel, header.xattrs, true);
        lutimesSync(path, header.mtime, header.mtime);
        return;
      }
      case "hardlink": {
        const targetParts = normaliseEntryPath(header.linkname, `${name} -> ${header.linkname}`);
        if (targetParts.length === 0) throw unsafe(name, "is a hardlink to the layer root");
        const target = targetParts.join("/");
        if (target === rel) return;
        this.#checkExistingParents(targetParts.slice(0, -1), name);
        if (this.#pending.has(target)) await this.#flushPending();
        const st = lstatSync(this.#abs(target), { throwIfNoEntry: false });
        if (!st) {
          throw new SutureError(
            "INVALID_ARCHIVE",
            `hardlink ${quoteUntrusted(name)} points to ${quoteUntrusted(header.linkname)}, which the layer does not contain before it`,
          );
        }
        if (st.isDirectory()) throw unsafe(name, "is a hardlink to a directory");
        this.#clear(rel, false);
        linkSync(this.#abs(target), path);
        this.#created.add(rel);
        return;
      }
      case "char":
      case "block":
      case "fifo": {
        this.#clear(rel, false);
        this.#pending.set(rel, {
          rel,
          kind: header.type === "char" ? "c" : header.type === "block" ? "b" : "p",
          major: header.devmajor,
          minor: header.devminor,
          mode: header.mode,
          uid: header.uid,
          gid: header.gid,
          mtime: header.mtime,
          xattrs: header.xattrs,
        });
        this.stats.specialFiles++;
        return;
      }
    }
  }

  #whiteout(parts: string[], name: string): void {
    const base = parts.at(-1)!;
    const dirParts = parts.slice(0, -1);
    const dirRel = dirParts.join("/");
    if (base === ".wh..wh..opq") {
      this.#ensureDir(dirParts, name);
      setAttributeSync(this.#abs(dirRel), "trusted.overlay.opaque", "y");
      this.stats.opaqueDirs++;
      return;
    }
    // Other .wh..wh. names are AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here.
    if (base.startsWith(".wh..wh.")) return;
    const hidden = base.slice(".wh.".length);
    if (hidden === "" || hidden === "." || hidden === "..")
      throw unsafe(name, "is a whiteout of an invalid name");
    this.#ensureDir(dirParts, name);
    const rel = dirRel === "" ? hidden : `${dirRel}/${hidden}`;
    this.#clear(rel, false);
    this.#pending.set(rel, {
      rel,
      kind: "c",
      major: 0,
      minor: 0,
      mode: 0,
      uid: 0,
      gid: 0,
      mtime: 0,
      xattrs: new Map(),
    });
    this.stats.whiteouts++;
  }

  #applyDirMeta(rel: string, header: TarHeader): void {
    const path = this.#abs(rel);
    lchownSync(path, header.uid, header.gid);
    chmodSync(path, header.mode);
    this.#setXattrs(path, rel, header.xattrs, false);
    this.#dirTimes.set(rel, header.mtime);
  }

  #setXattrs(path: string, rel: string, xattrs: Map<string, Buffer>, isSymlink: boolean): void {
    for (const [key, value] of xattrs) {
      // Overlay's own xattrs would steer the mount (opaque, redirect, metacopy): never from a layer.
      if (key.startsWith("trusted.overlay.")) {
        this.stats.ignoredXattrs.push(`${rel}: ${key}`);
        continue;
      }
      // The kernel forbids user.* xattrs on symlinks; archives from other systems may carry them.
      if (isSymlink && key.startsWith("user.")) {
        this.stats.ignoredXattrs.push(`${rel}: ${key}`);
        continue;
      }
      try {
        setAttributeSync(path, key, value);
      } catch (e) {
        throw new SutureError(
          "IO",
          `cannot set xattr ${quoteUntrusted(key)} on layer entry ${quoteUntrusted(rel)}: ${describeCause(e)}`,
          {
            cause: e,
          },
        );
      }
    }
  }

  /** Create queued device nodes, fifos and whiteouts with one `sh` running `mknod` per node. */
  async #flushPending(): Promise<void> {
    if (this.#pending.size === 0) return;
    const nodes = [...this.#pending.values()];
    this.#pending.clear();
    const script: string[] = ["set -e"];
    for (const n of nodes) {
      // Re-check the parents now: nothing else writes into root, so this check cannot go stale.
      this.#checkExistingParents(n.rel.split("/").slice(0, -1), n.rel);
      const dev = n.kind === "p" ? "p" : `${n.kind} ${n.major} ${n.minor}`;
      script.push(`mknod -m ${(n.mode & 0o777).toString(8).padStart(4, "0")} -- ${shQuote(n.rel)} ${dev}`);
    }
    await runScript(`${script.join("\n")}\n`, this.#root);
    for (const n of nodes) {
      const path = this.#abs(n.rel);
      this.#created.add(n.rel);
      if (lstatSync(path).isSymbolicLink())
        throw unsafe(n.rel, "was replaced by a symlink during extraction");
      lchownSync(path, n.uid, n.gid);
      if (n.mode & 0o7000) chmodSync(path, n.mode);
      this.#setXattrs(path, n.rel, n.xattrs, false);
      lutimesSync(path, n.mtime, n.mtime);
    }
  }

  async finish(): Promise<void> {
    await this.#flushPending();
    // Deepest first, so setting a directory's times is not undone by touching its parent's entries.
    const dirs = [...this.#dirTimes.entries()].sort((a, b) => depth(b[0]) - depth(a[0]));
    for (const [rel, mtime] of dirs) lutimesSync(this.#abs(rel), mtime, mtime);
  }
}

function depth(rel: string): number {
  return rel === "" ? 0 : rel.split("/").length;
}

function runScript(script: string, cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-s"], { cwd, stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on("error", (e) =>
      reject(
        new SutureError("IO", `cannot run mknod to create device nodes: ${describeCause(e)}`, { cause: e }),
      ),
    );
    child.on("close", (code) => {
      if (code === 0) resolve();
      else
        reject(
          new SutureError(
            "IO",
            `mknod failed creating device nodes, whiteouts or fifos in a layer (exit ${code}): ${stderr.trim().split("\n")[0]}`,
          ),
        );
    });
    child.stdin.end(script);
  });
}
