/**
 * A verified `Packages` index kept decompressed on disk, with a compact table that says where each
 * package's stanzas are; stanzas are read back (pread) and parsed only when a package is asked for.
 *
 * Why: Debian's main index is ~50 MB decompressed with ~63,000 stanzas, and a patch needs the few
 * hundred the image has installed. Holding the decompressed bytes was the peak of a patch's memory,
 * and decompressing or re-reading them cost most of a warm run's `repositories` step. Now the bytes
 * are streamed once, when the index is first verified, to `<key>.plain`, and the same pass builds
 * `<key>.names`; later runs read the table (~3 MB for main) and nothing else until asked.
 *
 * The table (`<key>.names`, one file, little-endian u32s; no JS object per package):
 * - a header: magic, counts, the plain file's size, the key both files are named by;
 * - per stanza, grouped by package name and in index order within a name: offset, length and
 *   CRC-32 of its bytes in the plain file;
 * - the package names, sorted, as offsets into one UTF-8 blob, each with the range of its stanzas
 *   (a lookup is a binary search, no Map is built);
 * - the virtual names that stanzas' `Provides` list, the same way, each with its providers' stanzas;
 * - a SHA-256 of all of the above.
 * A table that is missing, cut short, of another format or key, or whose plain file has another
 * size is not used: the caller derives both files again. A stanza whose bytes no longer match their
 * CRC when read (the plain file damaged after the table was checked) is an IO error that removes
 * the table, so the next run derives it again; it is never parsed. The CRC guards against damage
 * only: whoever can write the cache can rewrite the table too (the cache is written only by suture,
 * from verified data; see docs/security.md).
 */
import { createHash } from "node:crypto";
import { closeSync, fstatSync, openSync, readSync, unlinkSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { crc32 } from "node:zlib";
import { SutureError } from "../../errors/errors.ts";
import { BatchedWriter } from "../../fs/batched-writer.ts";
import type { ExpectedChecksum } from "../../stream/checksum.ts";
import { paragraphOf, parseFields } from "./control.ts";
import {
  type PackageEntry,
  type PackagesByName,
  type PackagesIndex,
  packageEntryOf,
  parseRelations,
} from "./packages-index.ts";

/** The two files of a cached index, named by the verified hash they derive from. */
export interface PackagesCacheFiles {
  /** The decompressed index, byte for byte. */
  plain: string;
  /** Its name table. */
  table: string;
}

/** `<dir>/<key>.plain` and `<dir>/<key>.names`. */
export function packagesCacheFiles(dir: string, key: string): PackagesCacheFiles {
  return { plain: `${dir}/${key}.plain`, table: `${dir}/${key}.names` };
}

export type PackagesIndexMeta = Omit<PackagesIndex, "entries" | "byName" | "byProvides">;

export interface PackagesCacheOptions {
  /** Repository base URI the entries' .debs are fetched from. */
  repoUri: string;
  /** The index, for messages (its URL). */
  what?: string;
}

const MAGIC = Buffer.from("SUTPKGT1", "latin1");
/** Written in the machine's byte order: a table from a machine of the other order is not used. */
const BYTE_ORDER = 0x01020304;
const HEADER_WORDS = 9;
const HEADER_BYTES = MAGIC.length + HEADER_WORDS * 4 + 32;
/** Offsets are u32: an index that decompresses to more is refused (Debian's largest is ~50 MB). */
const MAX_PLAIN_BYTES = 0xffff_ffff;
/** Longest stanza accepted (Debian's longest is a few tens of kB): bounds what one stanza holds in memory. */
const MAX_STANZA_BYTES = 8 * 1024 * 1024;
const NONE = 0xffff_ffff;
/** What ends a stanza, as bytes: a string needle is converted on every search. */
const BLANK_LINE = Buffer.from("\n\n", "latin1");

/**
 * Decompressed index pieces -> `files.plain` (written here) and the name table's bytes (returned;
 * the caller writes it, atomically, once it has checked `checksum`). `hash`: also compute the
 * plain bytes' SHA-256 (when the signed Release lists the uncompressed index). Throws
 * INVALID_MANIFEST when the index has stanzas but none names a package, TOO_LARGE past 4 GiB or
 * for a stanza over 8 MiB.
 */
export async function buildPackagesCache(
  pieces: AsyncIterable<Buffer>,
  plainFile: string,
  options: { key: string; hash: boolean; what?: string },
): Promise<{ table: Buffer; checksum: ExpectedChecksum | undefined; size: number }> {
  const what = options.what ?? "Packages index";
  const builder = new TableBuilder(what);
  const splitter = new StanzaSplitter(what, (bytes, offset) => builder.add(bytes, offset));
  const hash = options.hash ? createHash("sha256") : undefined;
  const out = new BatchedWriter(await open(plainFile, "wx", 0o644), plainFile);
  let size = 0;
  try {
    for await (const piece of pieces) {
      size += piece.length;
      if (size > MAX_PLAIN_BYTES)
        throw new SutureError(
          "TOO_LARGE",
          `${what} decompresses to more than 4 GiB, the most suture indexes: the repository is malformed`,
        );
      await out.add(piece);
      splitter.push(piece);
      hash?.update(piece);
    }
    splitter.end();
    await out.end();
  } finally {
    await out.close();
  }
  const table = builder.encode(options.key, size);
  return { table, size, checksum: hash ? { size, sha256: hash.digest("hex") } : undefined };
}

/**
 * Stanza boundaries of a streamed `Packages` index, by the rule parsePackagesIndex uses on the
 * whole text: blank lines (`\n`, `\r`) before a stanza are skipped, a stanza ends before the next
 * `\n\n`, and the last one at the end of the input (with or without a trailing newline). Stanzas
 * within one piece are handed out as views of it; only one that spans pieces is copied.
 */
export class StanzaSplitter {
  readonly #what: string;
  readonly #emit: (bytes: Buffer, offset: number) => void;
  /** Pieces of the stanza that started in an earlier input piece. */
  #pieces: Buffer[] = [];
  #pending = 0;
  /** Absolute offset of the current stanza's first byte; -1 between stanzas. */
  #start = -1;
  /** Absolute offset of the next input piece. */
  #offset = 0;
  /** The last piece of the current stanza ended with `\n` (half of a `\n\n`). */
  #lastNewline = false;

  constructor(what: string, emit: (bytes: Buffer, offset: number) => void) {
    this.#what = what;
    this.#emit = emit;
  }

  push(chunk: Buffer): void {
    const n = chunk.length;
    let pos = 0;
    if (this.#start >= 0 && this.#lastNewline && n > 0 && chunk[0] === 0x0a) {
      // The `\n\n` straddles the pieces: the stanza ended before the previous piece's last byte.
      const whole = Buffer.concat(this.#pieces);
      this.#finish(whole.subarray(0, whole.length - 1));
      pos = 1;
    }
    while (pos < n) {
      if (this.#start < 0) {
        while (pos < n && (chunk[pos] === 0x0a || chunk[pos] === 0x0d)) pos++;
        if (pos >= n) break;
        this.#start = this.#offset + pos;
      }
      const end = chunk.indexOf(BLANK_LINE, pos);
      if (end < 0) {
        this.#pieces.push(chunk.subarray(pos));
        this.#pending += n - pos;
        this.#lastNewline = chunk[n - 1] === 0x0a;
        if (this.#pending > MAX_STANZA_BYTES)
          throw new SutureError(
            "TOO_LARGE",
            `${this.#what} has a stanza longer than ${MAX_STANZA_BYTES} bytes at offset ${this.#start}: the repository is malformed`,
          );
        break;
      }
      const last = chunk.subarray(pos, end);
      this.#finish(this.#pieces.length ? Buffer.concat([...this.#pieces, last]) : last);
      pos = end + 2;
    }
    this.#offset += n;
  }

  /** The input ended: a stanza still open is the last one (no blank line after it). */
  end(): void {
    if (this.#start >= 0) this.#finish(Buffer.concat(this.#pieces));
  }

  #finish(bytes: Buffer): void {
    const start = this.#start;
    this.#pieces = [];
    this.#pending = 0;
    this.#start = -1;
    this.#lastNewline = false;
    this.#emit(bytes, start);
  }
}

/** Growable u32 column. */
class U32List {
  data = new Uint32Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const grown = new Uint32Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    this.data[this.length++] = v;
  }
}

/** Collects the stanzas of one pass and lays the table out. */
class TableBuilder {
  readonly #what: string;
  readonly #offset = new U32List();
  readonly #length = new U32List();
  readonly #crc = new U32List();
  /** Per stanza: its slot in #names, NONE for a stanza without a package name. */
  readonly #nameOf = new U32List();
  readonly #names = new NameArena();
  /** The virtual names stanzas provide, one slot per name and stanza (a stanza may repeat one). */
  readonly #virtuals = new NameArena();
  /** Per slot of #virtuals: the stanza providing it. */
  readonly #providedBy = new U32List();
  /** The stanza being added, for #addVirtual. */
  #stanza = 0;
  readonly #addVirtual = (source: Buffer, from: number, to: number): void => {
    this.#virtuals.add(source, from, to);
    this.#providedBy.push(this.#stanza);
  };

  constructor(what: string) {
    this.#what = what;
  }

  add(bytes: Buffer, offset: number): void {
    const stanza = this.#offset.length;
    this.#offset.push(offset);
    this.#length.push(bytes.length);
    this.#crc.push(crc32(bytes));
    const value = packageValueAt(bytes);
    if (value < 0) {
      this.#nameOf.push(NONE);
      return;
    }
    const end = bytes.indexOf(0x0a, value);
    this.#nameOf.push(this.#names.add(bytes, value, end < 0 ? bytes.length : end));
    this.#stanza = stanza;
    providedNames(bytes, this.#addVirtual);
  }

  /** The table file's bytes, laid out in place in one buffer (what it costs in memory is its size). */
  encode(key: string, plainSize: number): Buffer {
    const stanzas = this.#offset.length;
    if (stanzas > 0 && this.#names.count === 0) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${this.#what} has ${stanzas} stanzas but none with a Package field`,
      );
    }
    const names = this.#names.sorted();
    const virtuals = this.#virtuals.sorted();
    const placed = this.#names.count;
    const providers = providerLinks(virtuals, this.#providedBy.data);
    const links = providers.stanza.length;
    const nameBytes = names.textOffsets[names.count]!;
    const virtualBytes = virtuals.textOffsets[virtuals.count]!;
    const words = 3 * placed + 2 * (names.count + 1) + 2 * (virtuals.count + 1) + links;
    const bodyLength = HEADER_BYTES + words * 4 + nameBytes + virtualBytes;
    // Buffer.alloc: a buffer of its own, so the u32 views below are aligned.
    const out = Buffer.alloc(bodyLength + 32);
    MAGIC.copy(out, 0);
    let at = out.byteOffset + MAGIC.length;
    const take = (count: number) => {
      const view = new Uint32Array(out.buffer, at, count);
      at += count * 4;
      return view;
    };
    take(HEADER_WORDS).set([
      BYTE_ORDER,
      placed,
      names.count,
      virtuals.count,
      links,
      plainSize,
      nameBytes,
      virtualBytes,
      0,
    ]);
    out.write(key, MAGIC.length + HEADER_WORDS * 4, "hex");
    at = out.byteOffset + HEADER_BYTES;
    const offsets = take(placed);
    const lengths = take(placed);
    const crcs = take(placed);
    const nameFirst = take(names.count + 1);
    take(names.count + 1).set(names.textOffsets);
    const virtualFirst = take(virtuals.count + 1);
    take(virtuals.count + 1).set(virtuals.textOffsets);
    const linkTo = take(links);
    // Stanzas grouped by name rank, index order kept within a name (a counting sort). The columns
    // are read through locals: this runs once per index, mostly before the JIT has optimised it.
    const nameOf = this.#nameOf.data;
    const rankOf = names.rankOf;
    for (let s = 0; s < stanzas; s++) {
      const id = nameOf[s]!;
      if (id !== NONE) nameFirst[rankOf[id]! + 1]!++;
    }
    for (let r = 0; r < names.count; r++) nameFirst[r + 1]! += nameFirst[r]!;
    const next = nameFirst.slice(0, names.count);
    const position = new Uint32Array(stanzas);
    const offset = this.#offset.data;
    const length = this.#length.data;
    const crc = this.#crc.data;
    for (let s = 0; s < stanzas; s++) {
      const id = nameOf[s]!;
      if (id === NONE) continue;
      const p = next[rankOf[id]!]!++;
      position[s] = p;
      offsets[p] = offset[s]!;
      lengths[p] = length[s]!;
      crcs[p] = crc[s]!;
    }
    virtualFirst.set(providers.first);
    const linkStanza = providers.stanza;
    for (let l = 0; l < links; l++) linkTo[l] = position[linkStanza[l]!]!;
    const textAt = HEADER_BYTES + words * 4;
    names.text.copy(out, textAt);
    virtuals.text.copy(out, textAt + nameBytes);
    createHash("sha256").update(out.subarray(0, bodyLength)).digest().copy(out, bodyLength);
    return out;
  }
}

/**
 * The table's links, grouped in one place: each virtual name's providers in index order (its
 * slots sort so), a stanza once per name. `stanza` is each link's stanza (index order), `first`
 * each name's first link by rank, and the link count after the last.
 */
function providerLinks(
  virtuals: SortedNames,
  providedBy: ArrayLike<number>,
): { stanza: Uint32Array; first: Uint32Array } {
  const stanzaOf = new Uint32Array(virtuals.order.length);
  const first = new Uint32Array(virtuals.count + 1);
  const rankOf = virtuals.rankOf;
  let links = 0;
  for (let i = 0, rank = -1, stanza = -1; i < virtuals.order.length; i++) {
    const slot = virtuals.order[i]!;
    if (rankOf[slot] === rank && providedBy[slot] === stanza) continue;
    if (rankOf[slot] !== rank) {
      rank = rankOf[slot]!;
      first[rank] = links;
    }
    stanza = providedBy[slot]!;
    stanzaOf[links++] = stanza;
  }
  first[virtuals.count] = links;
  return { stanza: stanzaOf.subarray(0, links), first };
}

/**
 * Sorted distinct names as the table stores them: sorted as JS compares strings (UTF-16 code
 * units; lookups compare the same way), one UTF-8 blob with offsets, and each slot's rank.
 */
interface SortedNames {
  count: number;
  /** By slot: the rank of its name. */
  rankOf: Uint32Array;
  /** The slots by rank, a name's slots in the order they were added. */
  order: readonly number[];
  textOffsets: Uint32Array;
  text: Buffer;
}

/**
 * Names of one pass, one slot per occurrence (a named stanza's package name; each name a stanza's
 * `Provides` lists), kept as the UTF-8 bytes the table stores them in, back to back in one growing
 * buffer: no JS string or Map entry per name (for Debian's main index, Maps of its 63,000 names
 * and 35,000 virtual names cost more main-thread CPU than the scan).
 *
 * A name is its bytes decoded as UTF-8 and trimmed as String#trim does. An ASCII name (every real
 * one) is trimmed and compared as bytes, which orders it as JS orders strings; a name with another
 * byte is decoded, trimmed and compared as a JS string, as it always was.
 */
class NameArena {
  #bytes = Buffer.allocUnsafe(1 << 16);
  #used = 0;
  readonly #start = new U32List();
  readonly #end = new U32List();
  /** A slot's first four bytes and the next four, big-endian, zero-padded: most comparisons end there. */
  readonly #head = new U32List();
  readonly #next = new U32List();
  /** Slots whose name is not ASCII. */
  readonly #wide = new Set<number>();

  get count(): number {
    return this.#start.length;
  }

  /** The slot of the name in `bytes[from, to)`, as written (a `Package:` value, a virtual name). */
  add(bytes: Buffer, from: number, to: number): number {
    let a = from;
    let b = to;
    while (a < b && isAsciiBlank(bytes[a]!)) a++;
    while (b > a && isAsciiBlank(bytes[b - 1]!)) b--;
    let source = bytes;
    const slot = this.#start.length;
    for (let i = a; i < b; i++) {
      if (bytes[i]! >= 0x80) {
        // Trimmed here of Unicode blanks too; written back as UTF-8 from the string, as before.
        source = Buffer.from(bytes.toString("utf8", from, to).trim(), "utf8");
        a = 0;
        b = source.length;
        this.#wide.add(slot);
        break;
      }
    }
    const length = b - a;
    if (this.#used + length > this.#bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.#bytes.length * 2, this.#used + length));
      this.#bytes.copy(grown, 0, 0, this.#used);
      this.#bytes = grown;
    }
    const arena = this.#bytes;
    const at = this.#used;
    if (length > 32) source.copy(arena, at, a, b);
    else for (let i = 0; i < length; i++) arena[at + i] = source[a + i]!;
    this.#used += length;
    this.#start.push(at);
    this.#end.push(at + length);
    let head = 0;
    let next = 0;
    for (let i = 0; i < 4; i++) {
      head = head * 256 + (i < length ? source[a + i]! : 0);
      next = next * 256 + (i + 4 < length ? source[a + i + 4]! : 0);
    }
    this.#head.push(head);
    this.#next.push(next);
    return slot;
  }

  sorted(): SortedNames {
    const count = this.#start.length;
    const arena = this.#bytes;
    const start = this.#start.data;
    const end = this.#end.data;
    const head = this.#head.data;
    const next = this.#next.data;
    const wide = this.#wide;
    const text = (slot: number) => arena.toString("utf8", start[slot], end[slot]);
    // Equal names end up side by side, in slot (index) order. An Array, not a Uint32Array: its sort
    // (TimSort) takes the runs an index sorted by source package has, half the comparisons.
    const order: number[] = [];
    for (let i = 0; i < count; i++) order.push(i);
    order.sort((x, y) => {
      if (wide.size > 0 && (wide.has(x) || wide.has(y))) {
        const tx = text(x);
        const ty = text(y);
        return tx < ty ? -1 : tx > ty ? 1 : x - y;
      }
      if (head[x] !== head[y]) return head[x]! - head[y]!;
      if (next[x] !== next[y]) return next[x]! - next[y]!;
      const ax = start[x]!;
      const ay = start[y]!;
      const lx = end[x]! - ax;
      const ly = end[y]! - ay;
      const n = Math.min(lx, ly);
      for (let k = n >= 8 ? 8 : 0; k < n; k++) {
        const d = arena[ax + k]! - arena[ay + k]!;
        if (d !== 0) return d;
      }
      return lx - ly || x - y;
    });
    const rankOf = new Uint32Array(count);
    const firstOf = new Uint32Array(count);
    let distinct = 0;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const slot = order[i]!;
      if (i === 0 || !this.#same(order[i - 1]!, slot)) {
        firstOf[distinct++] = slot;
        bytes += end[slot]! - start[slot]!;
      }
      rankOf[slot] = distinct - 1;
    }
    const textOffsets = new Uint32Array(distinct + 1);
    const out = Buffer.allocUnsafe(bytes);
    for (let r = 0, at = 0; r < distinct; r++) {
      const slot = firstOf[r]!;
      const from = start[slot]!;
      const length = end[slot]! - from;
      if (length > 32) arena.copy(out, at, from, from + length);
      else for (let k = 0; k < length; k++) out[at + k] = arena[from + k]!;
      at += length;
      textOffsets[r + 1] = at;
    }
    return { count: distinct, rankOf, order, textOffsets, text: out };
  }

  #same(x: number, y: number): boolean {
    const arena = this.#bytes;
    const ax = this.#start.data[x]!;
    const ay = this.#start.data[y]!;
    const length = this.#end.data[x]! - ax;
    if (length !== this.#end.data[y]! - ay) return false;
    for (let k = 0; k < length; k++) if (arena[ax + k] !== arena[ay + k]) return false;
    return true;
  }
}

/** The blanks String#trim removes that are ASCII (tab, line feed, vertical tab, form feed, carriage return, space). */
function isAsciiBlank(byte: number): boolean {
  return byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);
}

/**
 * Where the `Package:` value of a stanza starts (normally on its first line): the first line that
 * is longer than `Package:` and starts with it in any case, as the index scanner always read it;
 * -1 without one. The value runs to the end of that line.
 */
function packageValueAt(bytes: Buffer): number {
  const end = bytes.length;
  let lineStart = 0;
  while (lineStart < end) {
    let nl = bytes.indexOf(0x0a, lineStart);
    if (nl < 0) nl = end;
    if (nl - lineStart > 8 && bytes[lineStart + 7] === 0x3a && hasWordAt(bytes, lineStart, "package")) {
      return lineStart + 8;
    }
    lineStart = nl + 1;
  }
  return -1;
}

/** Whether `bytes` holds `word` (lower-case ASCII letters) at `at`, in any case. */
function hasWordAt(bytes: Buffer, at: number, word: string): boolean {
  if (at < 0 || at + word.length > bytes.length) return false;
  // `| 0x20` folds exactly the ASCII upper-case letters onto their lower case (for a letter
  // target no other byte lands on it), which is what the `i` regexps here match in latin1 text.
  for (let i = 0; i < word.length; i++) if ((bytes[at + i]! | 0x20) !== word.charCodeAt(i)) return false;
  return true;
}

/**
 * Lines that may start a Provides field, in any case: anything before the first colon that holds
 * "provides" (the real reader trims Unicode blanks around a name; this looks at bytes as latin1).
 */
const MAYBE_PROVIDES = /^[^:\n]*provides[^:\n]*:/gim;

/**
 * Where "provides" occurs in `bytes` in any case: the first and the last occurrence's offsets, or
 * undefined. Found by its `v` (a byte search each for `v` and `V`, then the seven bytes around):
 * most stanzas hold a few (`Version`, `-dev`), and no JS string is made of the stanza.
 */
function providesSpan(bytes: Buffer): { first: number; last: number } | undefined {
  let first = -1;
  let last = -1;
  for (const v of [0x76, 0x56]) {
    for (let i = bytes.indexOf(v, 3); i >= 0; i = bytes.indexOf(v, i + 1)) {
      if (!hasWordAt(bytes, i - 3, "provides")) continue;
      if (first < 0 || i - 3 < first) first = i - 3;
      if (i - 3 > last) last = i - 3;
    }
  }
  return first < 0 ? undefined : { first, last };
}

/**
 * The virtual names a stanza's `Provides` lists, by the reader the entry is parsed with later
 * (parseFields, paragraphOf, parseRelations), so the table names every stanza whose entry
 * provides a name (a few more at worst: lookups check the entry). Only the lines that can make the
 * field's value are parsed: from the first line that may start it (an earlier line cannot change
 * it; parsed first, a continuation line would at worst add names) to the first field after the last
 * such line (a later line can only start another field or continue one). A malformed field
 * indexes nothing: reading that entry fails anyway.
 *
 * Most stanzas hold no "provides" at all and cost two byte searches. For the others, MAYBE_PROVIDES
 * runs only over the lines from the one holding the first occurrence to the one holding the last:
 * a match starts at a line start with no newline before its "provides", so none starts before
 * that first line, and none can end past the last line.
 */
function providedNames(bytes: Buffer, add: (source: Buffer, from: number, to: number) => void): void {
  const span = providesSpan(bytes);
  if (!span) return;
  const n = bytes.length;
  // The shape of every real Provides: one `Provides:` line, followed by another field or nothing.
  // Its value is read here when it is a plain list (simpleRelationNames); the reader below would
  // parse the same line alone, and give the same names.
  if (
    span.first === span.last &&
    (span.first === 0 || bytes[span.first - 1] === 0x0a) &&
    bytes[span.first + 8] === 0x3a
  ) {
    let lineEnd = bytes.indexOf(0x0a, span.first);
    if (lineEnd < 0) lineEnd = n;
    if (lineEnd + 1 >= n || startsField(bytes, lineEnd + 1)) {
      RANGES.length = 0;
      if (simpleRelationNames(bytes, span.first + 9, lineEnd, RANGES)) {
        for (let i = 0; i < RANGES.length; i += 2) add(bytes, RANGES[i]!, RANGES[i + 1]!);
        return;
      }
    }
  }
  const from = bytes.lastIndexOf(0x0a, span.first) + 1;
  let to = bytes.indexOf(0x0a, span.last);
  if (to < 0) to = n;
  const text = bytes.toString("latin1", from, to);
  MAYBE_PROVIDES.lastIndex = 0;
  let first = -1;
  let last = -1;
  for (let m = MAYBE_PROVIDES.exec(text); m; m = MAYBE_PROVIDES.exec(text)) {
    if (first < 0) first = from + m.index;
    last = from + m.index;
  }
  if (first < 0) return;
  // The end: the first line after the last candidate that starts a field.
  let end = n;
  for (let line = bytes.indexOf(0x0a, last) + 1; line > 0 && line < n; ) {
    if (startsField(bytes, line)) {
      end = line;
      break;
    }
    const nl = bytes.indexOf(0x0a, line);
    line = nl < 0 ? n : nl + 1;
  }
  const value = paragraphOf(parseFields(bytes.toString("utf8", first, end))).get("provides");
  let names: string[];
  try {
    names = parseRelations(value).flatMap((group) => group.map((r) => r.name));
  } catch {
    return;
  }
  for (const name of names) {
    const utf8 = Buffer.from(name, "utf8");
    add(utf8, 0, utf8.length);
  }
}

/** simpleRelationNames' output, reused: most stanzas with a Provides list a few names. */
const RANGES: number[] = [];

/**
 * Whether the line at `line` starts a field, as fieldsOfLines decides: not empty, not a comment,
 * not a continuation, a colon after its first byte.
 */
function startsField(bytes: Buffer, line: number): boolean {
  const c = bytes[line];
  if (c === undefined || c === 0x0a || c === 0x23 || c === 0x20 || c === 0x09 || c === 0x3a) return false;
  const colon = bytes.indexOf(0x3a, line + 1);
  if (colon < 0) return false;
  const nl = bytes.indexOf(0x0a, line);
  return nl < 0 || colon < nl;
}

/**
 * The names of a relation list in `bytes[from, to)` when it is a plain one: `name [(= version)]`
 * separated by commas, names and versions of the bytes Debian uses, blanks being spaces and tabs.
 * parseRelations reads such a list to the same names (no `|`, `[`, `<`, `:` qualifier or
 * other operator to handle). Pushes each name's start and end to `ranges` and says true; false
 * for anything else, which the caller parses in full.
 */
function simpleRelationNames(bytes: Buffer, from: number, to: number, ranges: number[]): boolean {
  let i = from;
  for (;;) {
    while (i < to && isBlank(bytes[i]!)) i++;
    const start = i;
    while (i < to && isNameByte(bytes[i]!)) i++;
    if (i === start) return false;
    ranges.push(start, i);
    while (i < to && isBlank(bytes[i]!)) i++;
    if (i < to && bytes[i] === 0x28) {
      i++;
      while (i < to && isBlank(bytes[i]!)) i++;
      if (bytes[i] !== 0x3d || i >= to) return false;
      i++;
      while (i < to && isBlank(bytes[i]!)) i++;
      const version = i;
      while (i < to && (isNameByte(bytes[i]!) || bytes[i] === 0x3a || bytes[i] === 0x7e)) i++;
      if (i === version) return false;
      while (i < to && isBlank(bytes[i]!)) i++;
      if (bytes[i] !== 0x29 || i >= to) return false;
      i++;
      while (i < to && isBlank(bytes[i]!)) i++;
    }
    if (i === to) return true;
    if (bytes[i] !== 0x2c) return false;
    i++;
  }
}

function isBlank(byte: number): boolean {
  return byte === 0x20 || byte === 0x09;
}

/** ASCII letters, digits, `+`, `-`, `.`, `_`. */
function isNameByte(byte: number): boolean {
  return (
    (byte >= 0x61 && byte <= 0x7a) ||
    (byte >= 0x30 && byte <= 0x39) ||
    (byte >= 0x41 && byte <= 0x5a) ||
    byte === 0x2b ||
    byte === 0x2d ||
    byte === 0x2e ||
    byte === 0x5f
  );
}

/** A decoded table: typed views over the file's one buffer. */
interface Table {
  stanzaOffset: Uint32Array;
  stanzaLength: Uint32Array;
  stanzaCrc: Uint32Array;
  nameFirst: Uint32Array;
  nameText: Uint32Array;
  virtualFirst: Uint32Array;
  virtualText: Uint32Array;
  links: Uint32Array;
  names: Buffer;
  virtuals: Buffer;
  plainSize: number;
}

/** The table in `bytes` when it is whole, of this format and for `key`; else undefined. */
function decodeTable(bytes: Buffer, key: string): Table | undefined {
  if (bytes.length < HEADER_BYTES + 32 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const body = bytes.subarray(0, bytes.length - 32);
  if (
    !createHash("sha256")
      .update(body)
      .digest()
      .equals(bytes.subarray(bytes.length - 32))
  )
    return undefined;
  // Aligned for the u32 views (a small file's buffer may sit at any offset of Node's pool).
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : Buffer.from(bytes);
  const header = new Uint32Array(aligned.buffer, aligned.byteOffset + MAGIC.length, HEADER_WORDS);
  const [order, stanzas, names, virtuals, links, plainSize, nameBytes, virtualBytes] = header;
  if (order !== BYTE_ORDER) return undefined;
  if (!aligned.subarray(MAGIC.length + HEADER_WORDS * 4, HEADER_BYTES).equals(Buffer.from(key, "hex")))
    return undefined;
  const words = 3 * stanzas! + 2 * (names! + 1) + 2 * (virtuals! + 1) + links!;
  if (HEADER_BYTES + words * 4 + nameBytes! + virtualBytes! !== body.length) return undefined;
  let at = aligned.byteOffset + HEADER_BYTES;
  const take = (count: number) => {
    const view = new Uint32Array(aligned.buffer, at, count);
    at += count * 4;
    return view;
  };
  const table: Table = {
    stanzaOffset: take(stanzas!),
    stanzaLength: take(stanzas!),
    stanzaCrc: take(stanzas!),
    nameFirst: take(names! + 1),
    nameText: take(names! + 1),
    virtualFirst: take(virtuals! + 1),
    virtualText: take(virtuals! + 1),
    links: take(links!),
    names: Buffer.from(aligned.buffer, at, nameBytes),
    virtuals: Buffer.from(aligned.buffer, at + nameBytes!, virtualBytes),
    plainSize: plainSize!,
  };
  return table;
}

/**
 * Index of `name` among the table's sorted names (`text` offsets into `blob`), or -1. Probes are
 * decoded and compared as the names were sorted (names come from decoded UTF-8, so they survive
 * the round trip unchanged).
 */
function findName(blob: Buffer, text: Uint32Array, count: number, name: string): number {
  let lo = 0;
  let hi = count - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const probe = blob.toString("utf8", text[mid]!, text[mid + 1]!);
    if (name === probe) return mid;
    if (name < probe) hi = mid - 1;
    else lo = mid + 1;
  }
  return -1;
}

/**
 * The cached index at `files` when its table is whole and for `key` and its plain file has the
 * size the table was built for; undefined otherwise (missing, cut short, garbled, another format),
 * and the caller derives both again. `table` may be given when it was just built (not yet on disk).
 */
export async function openPackagesCache(
  files: PackagesCacheFiles,
  meta: PackagesIndexMeta & { key: string },
  options: PackagesCacheOptions & { table?: Buffer },
): Promise<PackagesIndex | undefined> {
  const bytes = options.table ?? (await readFile(files.table).catch(() => undefined));
  const table = bytes && decodeTable(bytes, meta.key);
  if (!table) return undefined;
  let fd: number;
  try {
    fd = openSync(files.plain, "r");
  } catch {
    return undefined;
  }
  if (fstatSync(fd).size !== table.plainSize) {
    closeSync(fd);
    return undefined;
  }
  const { key: _key, ...indexMeta } = meta;
  return new DiskPackagesIndex(indexMeta, table, fd, files, options);
}

/** A PackagesIndex over a cached plain file and its table (see the module comment). */
class DiskPackagesIndex implements PackagesIndex {
  readonly uri: string;
  readonly suite: string;
  readonly component: string;
  readonly arch: string;
  readonly url: string;
  readonly sha256: string;
  readonly byName: PackagesByName;
  readonly byProvides: PackagesByName;
  #table: Table | undefined;
  #fd: number | undefined;
  readonly #files: PackagesCacheFiles;
  readonly #repoUri: string;
  readonly #what: string;
  /** Parsed entries by stanza position (null: not a usable entry). */
  readonly #parsed = new Map<number, PackageEntry | null>();
  readonly #byName = new Map<string, readonly PackageEntry[]>();
  readonly #byProvides = new Map<string, readonly PackageEntry[]>();

  constructor(
    meta: PackagesIndexMeta,
    table: Table,
    fd: number,
    files: PackagesCacheFiles,
    options: PackagesCacheOptions,
  ) {
    this.uri = meta.uri;
    this.suite = meta.suite;
    this.component = meta.component;
    this.arch = meta.arch;
    this.url = meta.url;
    this.sha256 = meta.sha256;
    this.#table = table;
    this.#fd = fd;
    this.#files = files;
    this.#repoUri = options.repoUri;
    this.#what = options.what ?? "Packages index";
    const byName = (name: string) => this.#lookup(name, "name");
    const byProvides = (name: string) => this.#lookup(name, "provides");
    this.byName = { get: byName, has: (name) => byName(name) !== undefined };
    this.byProvides = { get: byProvides, has: (name) => byProvides(name) !== undefined };
  }

  /** Every usable entry, reading every stanza: for listings and tests, never a patch's hot path. */
  get entries(): PackageEntry[] {
    const table = this.#open();
    const out: PackageEntry[] = [];
    for (let i = 0; i + 1 < table.nameText.length; i++) {
      const name = table.names.toString("utf8", table.nameText[i], table.nameText[i + 1]);
      out.push(...(this.byName.get(name) ?? []));
    }
    return out;
  }

  /**
   * Closes the plain file and drops the table. Entries already handed out stay valid; asking for a
   * package not asked for before is then an INTERNAL error.
   */
  release(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
    this.#table = undefined;
  }

  #open(): Table {
    if (!this.#table) throw new SutureError("INTERNAL", `${this.#what} was read after it was released`);
    return this.#table;
  }

  #lookup(name: string, by: "name" | "provides"): readonly PackageEntry[] | undefined {
    const memo = by === "name" ? this.#byName : this.#byProvides;
    const known = memo.get(name);
    if (known) return known.length ? known : undefined;
    const t = this.#open();
    const list: PackageEntry[] = [];
    if (by === "name") {
      const i = findName(t.names, t.nameText, t.nameText.length - 1, name);
      if (i >= 0) {
        for (let p = t.nameFirst[i]!; p < t.nameFirst[i + 1]!; p++) {
          const e = this.#entryAt(t, p);
          if (e && e.package === name) list.push(e);
        }
      }
    } else {
      const i = findName(t.virtuals, t.virtualText, t.virtualText.length - 1, name);
      if (i >= 0) {
        for (let l = t.virtualFirst[i]!; l < t.virtualFirst[i + 1]!; l++) {
          const e = this.#entryAt(t, t.links[l]!);
          if (e && parseRelations(e.provides).some((g) => g.some((r) => r.name === name))) list.push(e);
        }
      }
    }
    memo.set(name, list);
    return list.length ? list : undefined;
  }

  #entryAt(t: Table, p: number): PackageEntry | undefined {
    const known = this.#parsed.get(p);
    if (known !== undefined) return known ?? undefined;
    const offset = t.stanzaOffset[p]!;
    const length = t.stanzaLength[p]!;
    const bytes = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = readSync(this.#fd!, bytes, got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    if (got !== length || crc32(bytes) !== t.stanzaCrc[p]) this.#damaged(offset);
    const entry = packageEntryOf(bytes.toString("utf8"), this.#repoUri, this.#what) ?? null;
    this.#parsed.set(p, entry);
    return entry ?? undefined;
  }

  /** The plain file changed under a table that checked out: never parse it; make the next run derive both again. */
  #damaged(offset: number): never {
    try {
      unlinkSync(this.#files.table);
    } catch {
      // Already gone (another run saw it first): the next run derives it either way.
    }
    throw new SutureError(
      "IO",
      `the cached copy of ${this.#what} (${this.#files.plain}) is damaged at byte ${offset}: its table was removed so the next run derives it again from the verified index; run the command again`,
    );
  }
}
