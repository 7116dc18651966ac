import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { checkPackageFields } from "../package-syntax.ts";

/**
 * rpm's header format: the structure every rpm database stores per installed package and every
 * .rpm file carries twice (signature header, then main header). Facts from rpm's lib/header.cc
 * (hdrblobInit, hdrblobVerifyLengths, hdrblobVerifyRegion, hdrblobVerifyInfo, dataLength,
 * hdrblobImport), lib/header_internal.hh and include/rpm/rpmtag.h.
 *
 * A header blob, all integers big-endian:
 *
 *   il (int32)   number of index entries
 *   dl (int32)   length of the data store
 *   il × 16 B    index entries: tag, type, offset (into the data store), count
 *   dl bytes     the data store
 *
 * In a .rpm file each header is preceded by the 8-byte magic `8e ad e8 01 00 00 00 00` and the
 * signature header is padded with zeros to a multiple of 8 bytes (magic included); rpm's
 * databases store the bare blob, without the magic.
 *
 * A header usually starts with a region entry (tag 61 HEADERIMAGE, 62 HEADERSIGNATURES or 63
 * HEADERIMMUTABLE; type BIN; count 16) whose offset points to a 16-byte trailer in the data
 * store: an index entry of the same tag, type BIN, count 16 and offset `-(ril × 16)`, where ril
 * is the number of index entries the region covers (the region entry included). The region is
 * what the package's signatures cover, and rpm stores it unchanged; entries after it ("dribbles",
 * e.g. INSTALLTIME in a database) were added on install and replace region entries of the same
 * tag. A header without a region entry is a legacy (v3) header and is read as a whole.
 *
 * Everything here is untrusted: every count, offset and length is checked against the blob as
 * rpm checks it, and a violation is an INVALID_ARCHIVE naming the entry and what is wrong.
 */

/** The 8 bytes before a header in a .rpm file (rpm_header_magic). */
export const RPM_HEADER_MAGIC: Uint8Array = Uint8Array.of(0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0);

/** Data types of header entries (rpmTagType). */
export const RpmType = {
  NULL: 0,
  CHAR: 1,
  INT8: 2,
  INT16: 3,
  INT32: 4,
  INT64: 5,
  STRING: 6,
  BIN: 7,
  STRING_ARRAY: 8,
  I18NSTRING: 9,
} as const;

const TYPE_NAMES = [
  "NULL",
  "CHAR",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "STRING",
  "BIN",
  "STRING_ARRAY",
  "I18NSTRING",
];
/** Bytes per element of the fixed-size types (typeSizes); -1: NUL-terminated strings. */
const TYPE_SIZES = [0, 1, 1, 2, 4, 8, -1, 1, -1, -1];
/** Alignment of each type's data in the store (typeAlign). */
const TYPE_ALIGN = [1, 1, 1, 2, 4, 8, 1, 1, 1, 1];

/** Tags of the main header (include/rpm/rpmtag.h), the ones suture reads. */
export const RpmTag = {
  HEADERIMAGE: 61,
  HEADERSIGNATURES: 62,
  HEADERIMMUTABLE: 63,
  HEADERREGIONS: 64,
  HEADERI18NTABLE: 100,
  // Signature tags as copied into the main header (RPMTAG_SIG_BASE + n).
  SIGSIZE: 257,
  SIGPGP: 259,
  SIGMD5: 261,
  SIGGPG: 262,
  PUBKEYS: 266,
  DSAHEADER: 267,
  RSAHEADER: 268,
  SHA1HEADER: 269,
  LONGSIGSIZE: 270,
  LONGARCHIVESIZE: 271,
  SHA256HEADER: 273,
  VERITYSIGNATURES: 276,
  VERITYSIGNATUREALGO: 277,
  OPENPGP: 278,
  SHA3_256HEADER: 279,
  NAME: 1000,
  VERSION: 1001,
  RELEASE: 1002,
  EPOCH: 1003,
  SUMMARY: 1004,
  DESCRIPTION: 1005,
  BUILDTIME: 1006,
  INSTALLTIME: 1008,
  SIZE: 1009,
  DISTRIBUTION: 1010,
  VENDOR: 1011,
  LICENSE: 1014,
  GROUP: 1016,
  URL: 1020,
  OS: 1021,
  ARCH: 1022,
  PREIN: 1023,
  POSTIN: 1024,
  PREUN: 1025,
  POSTUN: 1026,
  OLDFILENAMES: 1027,
  FILESIZES: 1028,
  FILESTATES: 1029,
  FILEMODES: 1030,
  FILERDEVS: 1033,
  FILEMTIMES: 1034,
  FILEDIGESTS: 1035,
  FILELINKTOS: 1036,
  FILEFLAGS: 1037,
  FILEUSERNAME: 1039,
  FILEGROUPNAME: 1040,
  SOURCERPM: 1044,
  FILEVERIFYFLAGS: 1045,
  ARCHIVESIZE: 1046,
  PROVIDENAME: 1047,
  REQUIREFLAGS: 1048,
  REQUIRENAME: 1049,
  REQUIREVERSION: 1050,
  CONFLICTFLAGS: 1053,
  CONFLICTNAME: 1054,
  CONFLICTVERSION: 1055,
  RPMVERSION: 1064,
  TRIGGERSCRIPTS: 1065,
  TRIGGERNAME: 1066,
  TRIGGERVERSION: 1067,
  TRIGGERFLAGS: 1068,
  TRIGGERINDEX: 1069,
  VERIFYSCRIPT: 1079,
  PREINPROG: 1085,
  POSTINPROG: 1086,
  PREUNPROG: 1087,
  POSTUNPROG: 1088,
  OBSOLETENAME: 1090,
  VERIFYSCRIPTPROG: 1091,
  TRIGGERSCRIPTPROG: 1092,
  FILEDEVICES: 1095,
  FILEINODES: 1096,
  FILELANGS: 1097,
  PREFIXES: 1098,
  INSTPREFIXES: 1099,
  PROVIDEFLAGS: 1112,
  PROVIDEVERSION: 1113,
  OBSOLETEFLAGS: 1114,
  OBSOLETEVERSION: 1115,
  DIRINDEXES: 1116,
  BASENAMES: 1117,
  DIRNAMES: 1118,
  PAYLOADFORMAT: 1124,
  PAYLOADCOMPRESSOR: 1125,
  PAYLOADFLAGS: 1126,
  INSTALLCOLOR: 1127,
  INSTALLTID: 1128,
  FILECOLORS: 1140,
  PRETRANS: 1151,
  POSTTRANS: 1152,
  PRETRANSPROG: 1153,
  POSTTRANSPROG: 1154,
  LONGFILESIZES: 5008,
  LONGSIZE: 5009,
  FILECAPS: 5010,
  FILEDIGESTALGO: 5011,
  PREINFLAGS: 5020,
  POSTINFLAGS: 5021,
  PREUNFLAGS: 5022,
  POSTUNFLAGS: 5023,
  PRETRANSFLAGS: 5024,
  POSTTRANSFLAGS: 5025,
  RECOMMENDNAME: 5046,
  RECOMMENDVERSION: 5047,
  RECOMMENDFLAGS: 5048,
  SUGGESTNAME: 5049,
  SUGGESTVERSION: 5050,
  SUGGESTFLAGS: 5051,
  SUPPLEMENTNAME: 5052,
  SUPPLEMENTVERSION: 5053,
  SUPPLEMENTFLAGS: 5054,
  ENHANCENAME: 5055,
  ENHANCEVERSION: 5056,
  ENHANCEFLAGS: 5057,
  ENCODING: 5062,
  PAYLOADDIGEST: 5092,
  PAYLOADDIGESTALGO: 5093,
  MODULARITYLABEL: 5096,
  PAYLOADDIGESTALT: 5097,
  PREUNTRANS: 5103,
  POSTUNTRANS: 5104,
  PREUNTRANSPROG: 5105,
  POSTUNTRANSPROG: 5106,
  PREUNTRANSFLAGS: 5107,
  POSTUNTRANSFLAGS: 5108,
} as const;

/**
 * Tags of a .rpm file's signature header (RPMSIGTAG_*): 1000–1008 collide with main-header tag
 * numbers (1000 is SIZE here, NAME there), so a signature header is read with these names.
 */
export const RpmSigTag = {
  SIZE: 1000,
  PGP: 1002,
  MD5: 1004,
  GPG: 1005,
  PAYLOADSIZE: 1007,
  RESERVEDSPACE: 1008,
  DSA: 267,
  RSA: 268,
  SHA1: 269,
  LONGSIZE: 270,
  LONGARCHIVESIZE: 271,
  SHA256: 273,
  FILESIGNATURES: 274,
  FILESIGNATURELENGTH: 275,
  VERITYSIGNATURES: 276,
  VERITYSIGNATUREALGO: 277,
  OPENPGP: 278,
  SHA3_256: 279,
} as const;

/** FILEFLAGS bits (rpmfileAttrs in include/rpm/rpmfiles.h). */
export const RpmFileFlag = {
  CONFIG: 1 << 0,
  DOC: 1 << 1,
  MISSINGOK: 1 << 3,
  NOREPLACE: 1 << 4,
  GHOST: 1 << 6,
  LICENSE: 1 << 7,
  README: 1 << 8,
  PUBKEY: 1 << 11,
  ARTIFACT: 1 << 12,
} as const;

/** Dependency flag bits (rpmsenseFlags in include/rpm/rpmds.h). */
export const RpmSense = {
  LESS: 1 << 1,
  GREATER: 1 << 2,
  EQUAL: 1 << 3,
  /** LESS | GREATER | EQUAL: the comparison part of a dependency's flags. */
  SENSEMASK: 15,
  POSTTRANS: 1 << 5,
  PREREQ: 1 << 6,
  PRETRANS: 1 << 7,
  INTERP: 1 << 8,
  SCRIPT_PRE: 1 << 9,
  SCRIPT_POST: 1 << 10,
  SCRIPT_PREUN: 1 << 11,
  SCRIPT_POSTUN: 1 << 12,
  MISSINGOK: 1 << 19,
  RPMLIB: 1 << 24,
} as const;

/** FILEDIGESTALGO values (PGPHASHALGO_*); absent means MD5, rpm's historical default. */
export const RpmDigestAlgo = { MD5: 1, SHA1: 2, SHA256: 8, SHA384: 9, SHA512: 10 } as const;

/** One index entry, as stored (offset into the data store). */
export interface RpmHeaderEntry {
  tag: number;
  type: number;
  offset: number;
  count: number;
  /** Bytes of data the entry occupies. */
  length: number;
  /** Whether the entry is covered by the header's region (false for dribbles and legacy headers). */
  inRegion: boolean;
}

/** rpm's limits (HEADER_TAGS_MAX, HEADER_DATA_MAX, HEADER_ARRAY_MAX, headerMaxbytes). */
const TAGS_MAX = 0xffff;
const DATA_MAX = 0x0fffffff;
const ARRAY_MAX = 0x000fffff;
const BLOB_MAX = 256 * 1024 * 1024;
/** A signature header is small (hdrblobVerifyLengths). */
const SIG_TAGS_MAX = 32;
const SIG_DATA_MAX = 64 * 1024 * 1024;
const ENTRY_SIZE = 16;

export interface ParseRpmHeaderOptions {
  /**
   * The region the header must have (HEADERSIGNATURES for a signature header, HEADERIMMUTABLE for
   * a package's main header); by default whichever region it starts with, or none (legacy).
   * Unlike rpm, which also reads v3 headers without the region asked for, a header without it is
   * refused here: every package rpm ≥ 4 built has one, and only a region can carry signatures.
   */
  regionTag?: number;
  /** The region must cover the whole header, as in a .rpm file (no dribbles). */
  exactSize?: boolean;
}

const utf8 = new TextDecoder("utf-8", { fatal: false });

/**
 * A parsed header over its blob. Accessors check the entry's type and return undefined (or an
 * empty array) for an absent tag; a present tag of the wrong type is an INVALID_ARCHIVE, since a
 * header that disagrees with rpm's tag table is damaged or hostile.
 */
export class RpmHeader {
  /** The bare blob (il, dl, index, data), exactly as rpm stores it in a database. */
  readonly blob: Uint8Array;
  /** The region tag (61, 62, 63), or undefined for a legacy header without one. */
  readonly regionTag: number | undefined;
  /** Index entries and data bytes the region covers (the whole header when there is none). */
  readonly regionEntryCount: number;
  readonly regionDataLength: number;
  /** Every index entry in blob order (the region entry included). */
  readonly entries: readonly RpmHeaderEntry[];
  readonly #byTag: Map<number, RpmHeaderEntry>;
  readonly #data: DataView;
  readonly #dataStart: number;
  readonly #what: string;

  /** Use parseRpmHeader / readRpmHeaderAt. */
  constructor(
    blob: Uint8Array,
    parsed: { regionTag: number | undefined; ril: number; rdl: number; entries: RpmHeaderEntry[] },
    what: string,
  ) {
    this.blob = blob;
    this.regionTag = parsed.regionTag;
    this.regionEntryCount = parsed.ril;
    this.regionDataLength = parsed.rdl;
    this.entries = parsed.entries;
    this.#what = what;
    this.#dataStart = 8 + parsed.entries.length * ENTRY_SIZE;
    this.#data = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    // A dribble replaces the region's entry of its tag, as in hdrblobImport ("Dribble entries
    // replace duplicate region entries"); verify() refused any other repeated tag.
    this.#byTag = new Map();
    for (const e of parsed.entries) {
      if (e.tag === parsed.regionTag && e === parsed.entries[0]) continue;
      this.#byTag.set(e.tag, e);
    }
  }

  has(tag: number): boolean {
    return this.#byTag.has(tag);
  }

  entry(tag: number): RpmHeaderEntry | undefined {
    return this.#byTag.get(tag);
  }

  /** A STRING tag (an I18NSTRING or a one-element STRING_ARRAY gives its first string, as rpm does). */
  string(tag: number): string | undefined {
    const e = this.#byTag.get(tag);
    if (e === undefined) return undefined;
    this.#expect(e, [RpmType.STRING, RpmType.I18NSTRING, RpmType.STRING_ARRAY]);
    return this.#strings(e, 1)[0];
  }

  /** A STRING_ARRAY (or I18NSTRING, or single STRING) tag; [] when absent. */
  stringArray(tag: number): string[] {
    const e = this.#byTag.get(tag);
    if (e === undefined) return [];
    this.#expect(e, [RpmType.STRING_ARRAY, RpmType.I18NSTRING, RpmType.STRING]);
    return this.#strings(e, e.count);
  }

  /**
   * A string tag's strings as the bytes the header holds, without decoding: file names are bytes
   * to rpm, and a name that is not UTF-8 must still name the same file.
   */
  stringArrayBytes(tag: number): Uint8Array[] {
    const e = this.#byTag.get(tag);
    if (e === undefined) return [];
    this.#expect(e, [RpmType.STRING_ARRAY, RpmType.I18NSTRING, RpmType.STRING]);
    const out: Uint8Array[] = [];
    let at = this.#dataStart + e.offset;
    for (let i = 0; i < e.count; i++) {
      const end = this.blob.indexOf(0, at);
      out.push(this.blob.subarray(at, end));
      at = end + 1;
    }
    return out;
  }

  /** The first value of an integer tag (CHAR, INT8/16/32, INT64 when it fits a double exactly). */
  number(tag: number): number | undefined {
    const e = this.#byTag.get(tag);
    if (e === undefined) return undefined;
    return this.#numbers(e, 1)[0];
  }

  /** Every value of an integer tag; [] when absent. INT32 values are unsigned, as rpm prints them. */
  numberArray(tag: number): number[] {
    const e = this.#byTag.get(tag);
    if (e === undefined) return [];
    return this.#numbers(e, e.count);
  }

  /** A BIN tag's bytes (a view into the blob). */
  binary(tag: number): Uint8Array | undefined {
    const e = this.#byTag.get(tag);
    if (e === undefined) return undefined;
    this.#expect(e, [RpmType.BIN]);
    const start = this.#dataStart + e.offset;
    return this.blob.subarray(start, start + e.count);
  }

  /** The region as rpm digests and signs it (with the magic), for header digests and signatures. */
  regionBytes(): Uint8Array {
    const out = new Uint8Array(8 + 8 + this.regionEntryCount * ENTRY_SIZE + this.regionDataLength);
    out.set(RPM_HEADER_MAGIC, 0);
    const view = new DataView(out.buffer);
    view.setUint32(8, this.regionEntryCount);
    view.setUint32(12, this.regionDataLength);
    out.set(this.blob.subarray(8, 8 + this.regionEntryCount * ENTRY_SIZE), 16);
    out.set(
      this.blob.subarray(this.#dataStart, this.#dataStart + this.regionDataLength),
      16 + this.regionEntryCount * ENTRY_SIZE,
    );
    return out;
  }

  #expect(e: RpmHeaderEntry, types: readonly number[]): void {
    if (!types.includes(e.type)) {
      throw invalid(
        this.#what,
        `tag ${e.tag} is of type ${TYPE_NAMES[e.type] ?? e.type}, expected ${types.map((t) => TYPE_NAMES[t]).join(" or ")}`,
      );
    }
  }

  #strings(e: RpmHeaderEntry, count: number): string[] {
    const out: string[] = [];
    let at = this.#dataStart + e.offset;
    for (let i = 0; i < count; i++) {
      // Termination was checked at parse time: every string of the entry ends inside the store.
      const end = this.blob.indexOf(0, at);
      out.push(utf8.decode(this.blob.subarray(at, end)));
      at = end + 1;
    }
    return out;
  }

  #numbers(e: RpmHeaderEntry, count: number): number[] {
    this.#expect(e, [RpmType.CHAR, RpmType.INT8, RpmType.INT16, RpmType.INT32, RpmType.INT64]);
    const size = TYPE_SIZES[e.type]!;
    const base = this.#dataStart + e.offset;
    const out = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      const at = base + i * size;
      if (size === 1) out[i] = this.#data.getUint8(at);
      else if (size === 2) out[i] = this.#data.getUint16(at);
      else if (size === 4) out[i] = this.#data.getUint32(at);
      else {
        const big = this.#data.getBigUint64(at);
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw invalid(this.#what, `tag ${e.tag} holds a 64-bit value larger than 2^53 (${big})`);
        }
        out[i] = Number(big);
      }
    }
    return out;
  }
}

function invalid(what: string, detail: string): SutureError {
  return new SutureError(
    "INVALID_ARCHIVE",
    `the rpm header of ${what} is damaged: ${detail}; rebuild the package or database from a trusted source`,
  );
}

/**
 * Parse a bare header blob (as stored in rpm's databases): its length must be exactly
 * 8 + 16·il + dl. `what` names it in errors (e.g. `package 12 of /var/lib/rpm/rpmdb.sqlite`).
 */
export function parseRpmHeader(
  blob: Uint8Array,
  what: string,
  options: ParseRpmHeaderOptions = {},
): RpmHeader {
  if (blob.length < 8) throw invalid(what, `only ${blob.length} bytes, a header has at least 8`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const il = view.getUint32(0);
  const dl = view.getUint32(4);
  checkLengths(what, il, dl, options.regionTag);
  const size = 8 + il * ENTRY_SIZE + dl;
  if (size >= BLOB_MAX || size !== blob.length) {
    throw invalid(
      what,
      `${blob.length} bytes, but its ${il} index entries and ${dl} data bytes make ${size}`,
    );
  }
  return new RpmHeader(blob, verify(view, il, dl, what, options), what);
}

/**
 * Read a header as it appears in a .rpm file, at `offset` in `bytes`: the 8-byte magic, then the
 * blob. A signature header (`regionTag: HEADERSIGNATURES`) is followed by zero padding to a
 * multiple of 8 bytes; `end` is where the next thing starts (after the padding). The returned
 * header's blob is a copy without the magic, as a database would store it.
 */
export function readRpmHeaderAt(
  bytes: Uint8Array,
  offset: number,
  what: string,
  options: ParseRpmHeaderOptions = {},
): { header: RpmHeader; end: number } {
  if (offset < 0 || bytes.length - offset < 16) {
    throw invalid(
      what,
      `it is cut short (${Math.max(0, bytes.length - offset)} bytes where the header starts)`,
    );
  }
  for (let i = 0; i < RPM_HEADER_MAGIC.length; i++) {
    if (bytes[offset + i] !== RPM_HEADER_MAGIC[i])
      throw invalid(what, "it does not start with rpm's header magic 8e ad e8 01");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset + 8, 8);
  const il = view.getUint32(0);
  const dl = view.getUint32(4);
  checkLengths(what, il, dl, options.regionTag);
  const size = 8 + il * ENTRY_SIZE + dl;
  const start = offset + 8;
  if (bytes.length - start < size) {
    throw invalid(what, `it is cut short (${bytes.length - start} of ${size} bytes)`);
  }
  let end = start + size;
  if (options.regionTag === RpmTag.HEADERSIGNATURES) {
    const pad = (8 - ((size + 8) % 8)) % 8;
    if (bytes.length - end < pad) throw invalid(what, "its padding is cut short");
    end += pad;
  }
  const header = parseRpmHeader(bytes.slice(start, start + size), what, options);
  return { header, end };
}

function checkLengths(what: string, il: number, dl: number, regionTag: number | undefined): void {
  const sig = regionTag === RpmTag.HEADERSIGNATURES;
  const ilMax = sig ? SIG_TAGS_MAX : TAGS_MAX;
  const dlMax = sig ? SIG_DATA_MAX : DATA_MAX;
  if (il > ilMax) throw invalid(what, `it claims ${il} index entries, more than rpm's limit of ${ilMax}`);
  if (dl > dlMax) throw invalid(what, `it claims ${dl} data bytes, more than rpm's limit of ${dlMax}`);
}

function isRegionTag(tag: number): boolean {
  return tag === RpmTag.HEADERIMAGE || tag === RpmTag.HEADERSIGNATURES || tag === RpmTag.HEADERIMMUTABLE;
}

function readEntry(view: DataView, i: number): { tag: number; type: number; offset: number; count: number } {
  const at = 8 + i * ENTRY_SIZE;
  return {
    tag: view.getInt32(at),
    type: view.getUint32(at + 4),
    offset: view.getInt32(at + 8),
    count: view.getUint32(at + 12),
  };
}

/** hdrblobVerifyRegion + hdrblobVerifyInfo, returning the entries with their lengths. */
function verify(
  view: DataView,
  il: number,
  dl: number,
  what: string,
  options: ParseRpmHeaderOptions,
): { regionTag: number | undefined; ril: number; rdl: number; entries: RpmHeaderEntry[] } {
  const dataStart = 8 + il * ENTRY_SIZE;
  let regionTag: number | undefined;
  let ril = il;
  let rdl = dl;
  const first = il > 0 ? readEntry(view, 0) : undefined;
  if (first === undefined) {
    if (options.regionTag !== undefined) throw invalid(what, "it has no index entries");
  } else if (options.regionTag !== undefined ? first.tag === options.regionTag : isRegionTag(first.tag)) {
    regionTag = first.tag;
    if (first.type !== RpmType.BIN || first.count !== ENTRY_SIZE) {
      throw invalid(
        what,
        `its region entry (tag ${first.tag}) has type ${first.type} and count ${first.count}, not BIN and 16`,
      );
    }
    if (first.offset < 0 || first.offset + ENTRY_SIZE > dl) {
      throw invalid(what, `its region trailer at offset ${first.offset} lies outside the ${dl} data bytes`);
    }
    const trailerAt = dataStart + first.offset;
    let trailerTag = view.getInt32(trailerAt);
    const trailerType = view.getUint32(trailerAt + 4);
    const trailerOffset = -view.getInt32(trailerAt + 8);
    const trailerCount = view.getUint32(trailerAt + 12);
    // rpm accepts old packages whose signature region trailer says HEADERIMAGE.
    if (regionTag === RpmTag.HEADERSIGNATURES && trailerTag === RpmTag.HEADERIMAGE) trailerTag = regionTag;
    if (trailerTag !== regionTag || trailerType !== RpmType.BIN || trailerCount !== ENTRY_SIZE) {
      throw invalid(
        what,
        `its region trailer (tag ${trailerTag}, type ${trailerType}, count ${trailerCount}) does not match region ${regionTag}`,
      );
    }
    rdl = first.offset + ENTRY_SIZE;
    ril = trailerOffset / ENTRY_SIZE;
    if (trailerOffset % ENTRY_SIZE !== 0 || ril < 0 || ril > il || !Number.isInteger(ril)) {
      throw invalid(
        what,
        `its region claims ${trailerOffset} bytes of index entries, not a multiple of 16 up to ${il * 16}`,
      );
    }
    if (ril < 1) throw invalid(what, "its region covers no index entries, not even its own");
    if (options.exactSize && (ril !== il || rdl !== dl)) {
      throw invalid(
        what,
        `its region covers ${ril} of ${il} entries and ${rdl} of ${dl} data bytes; a package's header is all region`,
      );
    }
  } else if (options.regionTag !== undefined) {
    throw invalid(what, `it starts with tag ${first.tag}, not the region tag ${options.regionTag}`);
  }

  const entries: RpmHeaderEntry[] = [];
  if (regionTag !== undefined) {
    entries.push({
      tag: regionTag,
      type: RpmType.BIN,
      offset: first!.offset,
      count: ENTRY_SIZE,
      length: ENTRY_SIZE,
      inRegion: true,
    });
  }
  let end = 0;
  const regionTags = new Set<number>();
  const dribbleTags = new Set<number>();
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  for (let i = entries.length; i < il; i++) {
    const e = readEntry(view, i);
    const where = `index entry ${i} (tag ${e.tag}, type ${e.type}, offset ${e.offset}, count ${e.count})`;
    if (e.tag < RpmTag.HEADERI18NTABLE)
      throw invalid(what, `${where}: tags below 100 are reserved for regions`);
    if (e.type < RpmType.CHAR || e.type > RpmType.I18NSTRING)
      throw invalid(what, `${where}: unknown data type`);
    if (e.count < 1 || e.count > dl) throw invalid(what, `${where}: count out of range`);
    if (e.type !== RpmType.BIN && e.count > ARRAY_MAX)
      throw invalid(what, `${where}: more than ${ARRAY_MAX} elements`);
    if (e.offset < 0 || e.offset > dl) throw invalid(what, `${where}: offset outside the ${dl} data bytes`);
    if (e.offset % TYPE_ALIGN[e.type]! !== 0)
      throw invalid(what, `${where}: offset not aligned for ${TYPE_NAMES[e.type]}`);
    // Data of successive entries may not overlap (rpm writes them in order).
    if (e.offset < end) throw invalid(what, `${where}: its data overlaps the previous entry's`);
    const length = dataLength(bytes, dataStart, dl, e.type, e.offset, e.count);
    if (length === undefined) {
      throw invalid(
        what,
        `${where}: its data runs past the ${dl} data bytes or a string is not NUL-terminated`,
      );
    }
    end = e.offset + length;
    // Data may not overlap the region trailer (which this loop does not visit).
    if (regionTag !== undefined && end > rdl - ENTRY_SIZE && e.offset < rdl) {
      throw invalid(what, `${where}: its data overlaps the region trailer`);
    }
    const inRegion = regionTag !== undefined && i < ril;
    // A tag twice in one part of the header would let two readers of the same bytes (rpm picks
    // one by binary search) see different values under one signature.
    const seen = inRegion ? regionTags : dribbleTags;
    if (seen.has(e.tag)) throw invalid(what, `${where}: tag ${e.tag} appears twice`);
    seen.add(e.tag);
    entries.push({ ...e, length, inRegion });
  }
  return {
    regionTag,
    ril: regionTag === undefined ? il : ril,
    rdl: regionTag === undefined ? dl : rdl,
    entries,
  };
}

/** Bytes an entry's data occupies, or undefined when it does not fit (dataLength, onDisk). */
function dataLength(
  bytes: Uint8Array,
  dataStart: number,
  dl: number,
  type: number,
  offset: number,
  count: number,
): number | undefined {
  const size = TYPE_SIZES[type]!;
  if (size >= 0) {
    const length = size * count;
    return length > 0 && length <= dl - offset ? length : undefined;
  }
  if (type === RpmType.STRING && count !== 1) return undefined;
  const storeEnd = dataStart + dl;
  let at = dataStart + offset;
  for (let i = 0; i < count; i++) {
    const nul = bytes.indexOf(0, at);
    if (nul < 0 || nul >= storeEnd) return undefined;
    at = nul + 1;
  }
  return at - (dataStart + offset);
}

/** A package's identity as rpm names it: NAME, EPOCH, VERSION, RELEASE, ARCH. */
export interface RpmNevra {
  name: string;
  /** Absent when the header has no EPOCH (rpm treats it as 0). */
  epoch?: number;
  version: string;
  release: string;
  /** Absent for gpg-pubkey pseudo-packages, which have no ARCH. */
  arch?: string;
}

/**
 * Read and check a header's identity (package-syntax.ts's rpm rules): these fields name files,
 * appear in tables and command lines, so a header whose identity breaks rpm's syntax is refused
 * as INVALID_ARCHIVE naming `what`; `fix` says what the user can do.
 */
export function rpmHeaderNevra(header: RpmHeader, what: string, fix: string): RpmNevra {
  const name = header.string(RpmTag.NAME);
  const version = header.string(RpmTag.VERSION);
  const release = header.string(RpmTag.RELEASE);
  const missing =
    name === undefined
      ? "NAME"
      : version === undefined
        ? "VERSION"
        : release === undefined
          ? "RELEASE"
          : undefined;
  if (missing !== undefined)
    throw new SutureError("INVALID_ARCHIVE", `${what} has a header without ${missing}; ${fix}`);
  const epoch = header.number(RpmTag.EPOCH);
  const arch = header.string(RpmTag.ARCH);
  const nevra: RpmNevra = {
    name: name!,
    version: version!,
    release: release!,
    ...(epoch === undefined ? {} : { epoch }),
    ...(arch === undefined ? {} : { arch }),
  };
  // Version and release may not contain '-' or ':' themselves, or the EVR would read differently.
  if (/[-:]/.test(nevra.version) || /[-:]/.test(nevra.release)) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what} has a package version ${quoteUntrusted(`${nevra.version}-${nevra.release}`)} whose parts contain '-' or ':'; ${fix}`,
    );
  }
  checkPackageFields(
    "rpm",
    { name: nevra.name, version: formatRpmEvr(nevra), ...(arch === undefined ? {} : { architecture: arch }) },
    what,
    fix,
  );
  return nevra;
}

/**
 * `[epoch:]version-release`, the epoch left out when absent or 0: the form Trivy reports as an
 * rpm package's InstalledVersion (its FormatVersion) and compareRpmVersions reads.
 */
export function formatRpmEvr(evr: { epoch?: number; version: string; release: string }): string {
  const vr = `${evr.version}-${evr.release}`;
  return evr.epoch ? `${evr.epoch}:${vr}` : vr;
}

/** `name-[epoch:]version-release.arch`, as rpm -q prints a package (with its epoch when not 0). */
export function formatRpmNevra(nevra: RpmNevra): string {
  return `${nevra.name}-${formatRpmEvr(nevra)}${nevra.arch === undefined ? "" : `.${nevra.arch}`}`;
}

/**
 * One entry to add to a header, as rpm's headerPut adds it: its tag, type, element count and the
 * data bytes as the data store holds them (big-endian integers, NUL-terminated strings).
 */
export interface RpmHeaderAddition {
  tag: number;
  type: number;
  count: number;
  data: Uint8Array;
}

/** An INT32 entry (values must be unsigned 32-bit integers). */
export function rpmInt32Addition(tag: number, values: readonly number[]): RpmHeaderAddition {
  const data = new Uint8Array(values.length * 4);
  const view = new DataView(data.buffer);
  values.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
      throw new SutureError("INTERNAL", `tag ${tag}: ${v} is not an unsigned 32-bit value`);
    view.setUint32(i * 4, v);
  });
  return { tag, type: RpmType.INT32, count: values.length, data };
}

/** A CHAR entry (values are bytes). */
export function rpmCharAddition(tag: number, values: readonly number[]): RpmHeaderAddition {
  for (const v of values) {
    if (!Number.isInteger(v) || v < 0 || v > 0xff)
      throw new SutureError("INTERNAL", `tag ${tag}: ${v} is not a byte`);
  }
  return { tag, type: RpmType.CHAR, count: values.length, data: Uint8Array.from(values) };
}

/** A STRING entry (one NUL-terminated string). */
export function rpmStringAddition(tag: number, value: string): RpmHeaderAddition {
  return { ...rpmStringsAddition(tag, [value]), type: RpmType.STRING };
}

/** A STRING_ARRAY entry. */
export function rpmStringsAddition(tag: number, values: readonly string[]): RpmHeaderAddition {
  const parts = values.map((v) => {
    if (v.includes("\0")) throw new SutureError("INTERNAL", `tag ${tag}: a string holds a NUL`);
    return Buffer.from(`${v}\0`, "utf8");
  });
  return {
    tag,
    type: RpmType.STRING_ARRAY,
    count: values.length,
    data: new Uint8Array(Buffer.concat(parts)),
  };
}

/**
 * The blob of `header` with `additions` appended, laid out as rpm's headerExport (lib/header.c
 * doExport) lays out a header read from a package and then added to: the region's index entries
 * and data byte for byte (what its signatures and digests cover), then the added entries sorted
 * by tag, each one's data aligned for its type from the start of the data store and the gaps
 * zero-filled. This is the blob an rpm database stores for an installed package.
 *
 * `header` must be all region (a package's main header as openRpm read it), and the additions'
 * tags new to it and to each other; anything else is a bug in the caller (INTERNAL).
 */
export function exportRpmHeader(header: RpmHeader, additions: readonly RpmHeaderAddition[]): Uint8Array {
  const il = header.entries.length;
  const dl = header.blob.length - 8 - il * ENTRY_SIZE;
  if (header.regionTag === undefined || header.regionEntryCount !== il || header.regionDataLength !== dl) {
    throw new SutureError("INTERNAL", "exportRpmHeader needs a header that is all region");
  }
  const sorted = [...additions].sort((a, b) => a.tag - b.tag);
  for (const [i, a] of sorted.entries()) {
    if (a.tag < RpmTag.HEADERI18NTABLE || header.has(a.tag) || sorted[i + 1]?.tag === a.tag)
      throw new SutureError("INTERNAL", `tag ${a.tag} cannot be added to the header twice`);
    checkAddition(a);
  }
  // Where each addition's data starts in the data store, after the region's data.
  const offsets: number[] = [];
  let end = dl;
  for (const a of sorted) {
    const align = TYPE_ALIGN[a.type]!;
    end += (align - (end % align)) % align;
    offsets.push(end);
    end += a.data.length;
  }
  const newIl = il + sorted.length;
  const out = new Uint8Array(8 + newIl * ENTRY_SIZE + end);
  const view = new DataView(out.buffer);
  view.setUint32(0, newIl);
  view.setUint32(4, end);
  out.set(header.blob.subarray(8, 8 + il * ENTRY_SIZE), 8);
  const dataStart = 8 + newIl * ENTRY_SIZE;
  out.set(header.blob.subarray(8 + il * ENTRY_SIZE), dataStart);
  sorted.forEach((a, i) => {
    const at = 8 + (il + i) * ENTRY_SIZE;
    view.setInt32(at, a.tag);
    view.setUint32(at + 4, a.type);
    view.setInt32(at + 8, offsets[i]!);
    view.setUint32(at + 12, a.count);
    out.set(a.data, dataStart + offsets[i]!);
  });
  return out;
}

/** An addition's data must be what its type and count say (dataLength's rules). */
function checkAddition(a: RpmHeaderAddition): void {
  const bad = (detail: string) => new SutureError("INTERNAL", `tag ${a.tag}: ${detail}`);
  if (a.type < RpmType.CHAR || a.type > RpmType.I18NSTRING) throw bad(`unknown type ${a.type}`);
  if (a.count < 1 || (a.type !== RpmType.BIN && a.count > ARRAY_MAX)) throw bad(`count ${a.count}`);
  const size = TYPE_SIZES[a.type]!;
  if (size >= 0) {
    if (a.data.length !== size * a.count) throw bad(`${a.data.length} bytes for ${a.count} elements`);
    return;
  }
  if (a.type === RpmType.STRING && a.count !== 1) throw bad("a STRING holds one string");
  let nuls = 0;
  for (const b of a.data) if (b === 0) nuls++;
  if (nuls !== a.count || a.data.at(-1) !== 0) throw bad(`not ${a.count} NUL-terminated strings`);
}

/** An entry's type, count and data bytes as stored (a view into the blob), for copying it. */
export function rpmHeaderRawEntry(
  header: RpmHeader,
  tag: number,
): { type: number; count: number; data: Uint8Array } | undefined {
  const e = header.entry(tag);
  if (e === undefined) return undefined;
  const dataStart = 8 + header.entries.length * ENTRY_SIZE;
  return {
    type: e.type,
    count: e.count,
    data: header.blob.subarray(dataStart + e.offset, dataStart + e.offset + e.length),
  };
}
