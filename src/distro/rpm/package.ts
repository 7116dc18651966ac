import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { Readable } from "node:stream";
import { type DecodeFormat, decompress } from "../../archive/compression.ts";
import {
  describeCause,
  formatBytes,
  isSutureError,
  quoteUntrusted,
  SutureError,
} from "../../errors/errors.ts";
import { VerifyingStream, verifyAlongside } from "../../stream/verifying-stream.ts";
import { readCpio } from "./cpio.ts";
import {
  RpmDigestAlgo,
  RpmFileFlag,
  type RpmHeader,
  type RpmNevra,
  RpmSigTag,
  RpmTag,
  readRpmHeaderAt,
  rpmHeaderNevra,
} from "./header.ts";
import { type RpmFileEntry, rpmHeaderFiles } from "./header-contents.ts";

/**
 * A .rpm package file (rpm's lib/package.c, lib/rpmlead.c, lib/signature.c):
 *
 *   lead (96 bytes)      magic ed ab ee db, version 3.0, type 0 (binary), name, signature type 5
 *   signature header     digests and signatures of what follows, padded to a multiple of 8
 *   main header          the package's metadata (header.ts reads both headers)
 *   payload              a compressed cpio archive of the package's files
 *
 * What covers what: the signature header's SHA256/SHA1 digests and its RSA/DSA (OpenPGP v4, RSA
 * or EdDSA) signature cover the main header; its MD5, SIZE and legacy PGP/GPG signature cover
 * header and payload. rpm ≥ 4.14 puts the payload's own digest (PAYLOADDIGEST) into the main
 * header, so a header signature vouches for the payload too. `openRpm` checks the header digests
 * and the size; `verifyRpmSignature` (signature.ts) the OpenPGP signatures; `rpmPayloadEntries` the
 * payload digest, the MD5 and every file's digest while it streams the files.
 */

export type RpmFileType = "file" | "directory" | "symlink" | "char" | "block" | "fifo" | "socket";

/**
 * One file as the main header lists it (header-contents.ts's entry: `linkTo`, `digest` and
 * `caps` are "" when none), with what installing it needs on top.
 */
export interface RpmFileInfo extends RpmFileEntry {
  /** Position in the header's file arrays (what a stripped cpio member names). */
  index: number;
  /** Checked to be a plain absolute path: never `..`, `.`, `//` or a NUL. */
  path: string;
  type: RpmFileType;
  config: boolean;
  /** `%config(noreplace)`: an edited file is kept and the new one written as `.rpmnew`. */
  noreplace: boolean;
  /** `%ghost`: owned, but not in the payload. */
  ghost: boolean;
  /** Files with the same inode and device numbers are hard links of each other. */
  inode: number;
  device: number;
}

export interface RpmPackage {
  /** The file on disk, for messages. */
  path: string;
  fileSize: number;
  /** The lead's name (informational: rpm ignores it). */
  leadName: string;
  signatureHeader: RpmHeader;
  header: RpmHeader;
  nevra: RpmNevra;
  /** Where the main header (its magic) starts, and where the payload starts. */
  headerOffset: number;
  payloadOffset: number;
  /** PAYLOADCOMPRESSOR (`gzip` when absent, as rpm assumes). */
  payloadCompressor: string;
  /** The payload's own digest from the main header (rpm ≥ 4.14), when it has one. */
  payloadDigest?: { algorithm: DigestName; hex: string };
  /** Hash of the file contents' digests (FILEDIGESTALGO; MD5 when absent). */
  fileDigestAlgorithm: DigestName;
  files: RpmFileInfo[];
}

export type DigestName = "md5" | "sha1" | "sha256" | "sha384" | "sha512";

export interface OpenRpmOptions {
  /** Largest main header accepted (default 64 MiB; the largest real ones are a few MB). */
  maxHeaderBytes?: number;
}

const LEAD_SIZE = 96;
const LEAD_MAGIC = [0xed, 0xab, 0xee, 0xdb];
/** RPMSIGTYPE_HEADERSIG: the lead says a signature header follows. */
const SIGTYPE_HEADERSIG = 5;
const DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 ** 3;

export const PACKAGE_FIX =
  "the package is damaged or was tampered with; remove it from the repository or use another mirror";

const DIGEST_NAMES: Record<number, DigestName> = {
  [RpmDigestAlgo.MD5]: "md5",
  [RpmDigestAlgo.SHA1]: "sha1",
  [RpmDigestAlgo.SHA256]: "sha256",
  [RpmDigestAlgo.SHA384]: "sha384",
  [RpmDigestAlgo.SHA512]: "sha512",
};

const COMPRESSORS: Record<string, DecodeFormat> = {
  gzip: "gzip",
  xz: "xz",
  lzma: "lzma",
  zstd: "zstd",
  bzip2: "bzip2",
};

function untrusted(what: string, detail: string): SutureError {
  return new SutureError("UNTRUSTED", `${what} ${detail}: ${PACKAGE_FIX}`);
}

function invalid(what: string, detail: string): SutureError {
  return new SutureError("INVALID_ARCHIVE", `${what} ${detail}: ${PACKAGE_FIX}`);
}

function digestName(algo: number | undefined, what: string, field: string): DigestName {
  const name = DIGEST_NAMES[algo ?? RpmDigestAlgo.MD5];
  if (!name) throw invalid(what, `names ${field} algorithm ${algo}, which rpm does not define`);
  return name;
}

function fileType(mode: number): RpmFileType | undefined {
  switch (mode & 0o170000) {
    case 0o100000:
      return "file";
    case 0o040000:
      return "directory";
    case 0o120000:
      return "symlink";
    case 0o020000:
      return "char";
    case 0o060000:
      return "block";
    case 0o010000:
      return "fifo";
    case 0o140000:
      return "socket";
  }
  return undefined;
}

/** A header path that must stay a plain absolute path (it names a place in an image). */
function checkFilePath(path: string, what: string): string {
  const parts = path.split("/");
  if (
    path.length > 4096 ||
    !path.startsWith("/") ||
    path.includes("\0") ||
    (path !== "/" && parts.slice(1).some((p) => p === "" || p === "." || p === ".."))
  ) {
    throw new SutureError(
      "UNSAFE_LAYER",
      `${what} lists file ${quoteUntrusted(path)}, which is not a plain absolute path; the package is malformed or hostile, so nothing was written`,
    );
  }
  return path;
}

async function readExactly(fh: FileHandle, offset: number, length: number, what: string): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw invalid(what, `is cut short (${offset + bytesRead} bytes)`);
  return buf;
}

/**
 * The files of a package's main header (header-contents.ts reads the parallel arrays), checked
 * for what installing them needs: plain absolute paths (UNSAFE_LAYER otherwise), each listed
 * once, a file type in every mode, hex digests.
 */
export function packageFiles(header: RpmHeader, what: string): RpmFileInfo[] {
  const entries = rpmHeaderFiles(header, what);
  const inodes = header.numberArray(RpmTag.FILEINODES);
  const devices = header.numberArray(RpmTag.FILEDEVICES);
  if (
    (inodes.length && inodes.length !== entries.length) ||
    (devices.length && devices.length !== entries.length)
  ) {
    throw invalid(what, `has FILEINODES or FILEDEVICES of another length than its ${entries.length} files`);
  }
  const seen = new Set<string>();
  return entries.map((entry, index) => {
    const path = checkFilePath(entry.path, what);
    if (seen.has(path)) throw invalid(what, `lists file ${quoteUntrusted(path)} twice`);
    seen.add(path);
    const type = fileType(entry.mode);
    if (!type)
      throw invalid(
        what,
        `gives file ${quoteUntrusted(path)} mode ${entry.mode.toString(8)}, of no file type`,
      );
    if (type === "file" && entry.digest !== "" && !/^[0-9a-f]+$/.test(entry.digest))
      throw invalid(what, `gives file ${quoteUntrusted(path)} digest ${quoteUntrusted(entry.digest)}`);
    return {
      ...entry,
      index,
      path,
      type,
      config: (entry.flags & RpmFileFlag.CONFIG) !== 0,
      noreplace: (entry.flags & RpmFileFlag.NOREPLACE) !== 0,
      ghost: (entry.flags & RpmFileFlag.GHOST) !== 0,
      inode: inodes[index] ?? 0,
      device: devices[index] ?? 0,
    };
  });
}

/**
 * Open a .rpm file: lead, signature header, main header. Checks the lead, the header digests the
 * signature header carries (SHA256, SHA1) and the size it records for header and payload; any
 * mismatch is UNTRUSTED, anything malformed INVALID_ARCHIVE (UNSAFE_LAYER for a file path that
 * could leave a root). The signatures are checked by signature.ts's verifyRpmSignature, the
 * payload by rpmPayloadEntries.
 */
export async function openRpm(path: string, options: OpenRpmOptions = {}): Promise<RpmPackage> {
  const what = path;
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (e) {
    throw new SutureError("IO", `cannot open ${path}: ${describeCause(e)}`, { cause: e });
  }
  try {
    const fileSize = (await fh.stat()).size;
    const lead = await readExactly(fh, 0, LEAD_SIZE, what);
    if (!LEAD_MAGIC.every((b, i) => lead[i] === b))
      throw invalid(what, "is not an rpm package (no rpm lead magic)");
    if (lead[4] !== 3 && lead[4] !== 4) throw invalid(what, `has rpm format version ${lead[4]}, not 3`);
    if (lead.readUInt16BE(6) !== 0) throw invalid(what, "is a source package, not a binary one");
    if (lead.readUInt16BE(78) !== SIGTYPE_HEADERSIG)
      throw invalid(what, "has no signature header (a pre-rpm-3 package)");
    const nameEnd = lead.indexOf(0, 10);
    const leadName = lead.subarray(10, nameEnd < 0 || nameEnd > 76 ? 76 : nameEnd).toString("latin1");

    // Signature header: its lengths first (header.ts bounds them), then the whole of it.
    const sigIntro = await readExactly(fh, LEAD_SIZE, 16, what);
    const sigLength = 16 + sigIntro.readUInt32BE(8) * 16 + sigIntro.readUInt32BE(12);
    if (sigLength > 64 * 1024 * 1024 + 16 * 32 + 16) throw invalid(what, "has an oversized signature header");
    const sigBytes = await readExactly(fh, LEAD_SIZE, Math.min(sigLength + 7, fileSize - LEAD_SIZE), what);
    const sig = readRpmHeaderAt(sigBytes, 0, `${what} (signature header)`, {
      regionTag: RpmTag.HEADERSIGNATURES,
    });
    const headerOffset = LEAD_SIZE + sig.end;

    const intro = await readExactly(fh, headerOffset, 16, what);
    const headerLength = 16 + intro.readUInt32BE(8) * 16 + intro.readUInt32BE(12);
    const maxHeader = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    if (headerLength > maxHeader) {
      throw new SutureError(
        "TOO_LARGE",
        `${what} has a ${formatBytes(headerLength)} header, more than the ${formatBytes(maxHeader)} accepted: ${PACKAGE_FIX}`,
      );
    }
    const headerBytes = await readExactly(fh, headerOffset, headerLength, what);
    const main = readRpmHeaderAt(headerBytes, 0, `${what} (header)`, {
      regionTag: RpmTag.HEADERIMMUTABLE,
      exactSize: true,
    });
    const payloadOffset = headerOffset + headerLength;
    checkHeaderDigests(sig.header, headerBytes, what);
    const recorded = sig.header.number(RpmSigTag.LONGSIZE) ?? sig.header.number(RpmSigTag.SIZE);
    if (recorded !== undefined && recorded !== fileSize - headerOffset) {
      throw untrusted(
        what,
        `is ${fileSize - headerOffset} bytes of header and payload where its signature header records ${recorded} (cut short or altered)`,
      );
    }
    const header = main.header;
    const nevra = rpmHeaderNevra(header, what, PACKAGE_FIX);
    const payloadFormat = header.string(RpmTag.PAYLOADFORMAT) ?? "cpio";
    if (payloadFormat !== "cpio") {
      throw new SutureError(
        "UNSUPPORTED_OS",
        `${what} has a ${quoteUntrusted(payloadFormat)} payload, not cpio: suture reads only cpio payloads (a delta rpm must be rebuilt with applydeltarpm first)`,
      );
    }
    const pkg: RpmPackage = {
      path,
      fileSize,
      leadName,
      signatureHeader: sig.header,
      header,
      nevra,
      headerOffset,
      payloadOffset,
      payloadCompressor: header.string(RpmTag.PAYLOADCOMPRESSOR) ?? "gzip",
      fileDigestAlgorithm: digestName(header.number(RpmTag.FILEDIGESTALGO), what, "file digest"),
      files: packageFiles(header, what),
    };
    const payloadDigest = header.stringArray(RpmTag.PAYLOADDIGEST)[0];
    if (payloadDigest !== undefined) {
      const algorithm = digestName(
        header.number(RpmTag.PAYLOADDIGESTALGO) ?? RpmDigestAlgo.SHA256,
        what,
        "payload digest",
      );
      if (!/^[0-9a-f]+$/.test(payloadDigest))
        throw invalid(what, `has payload digest ${quoteUntrusted(payloadDigest)}`);
      pkg.payloadDigest = { algorithm, hex: payloadDigest };
    }
    return pkg;
  } finally {
    await fh.close();
  }
}

function checkHeaderDigests(sig: RpmHeader, headerBytes: Uint8Array, what: string): void {
  for (const [tag, algorithm] of [
    [RpmSigTag.SHA256, "sha256"],
    [RpmSigTag.SHA1, "sha1"],
  ] as const) {
    const expected = sig.string(tag);
    if (expected === undefined) continue;
    const actual = createHash(algorithm).update(headerBytes).digest("hex");
    if (actual !== expected.toLowerCase()) {
      throw untrusted(
        what,
        `has a header whose ${algorithm.toUpperCase()} is ${actual}, not the ${quoteUntrusted(expected)} its signature header records`,
      );
    }
  }
}

/** Bytes `offset`…`offset+length` of the file at `path` (INVALID_ARCHIVE when it is shorter). */
export async function readRange(path: string, offset: number, length: number, what: string): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    return await readExactly(fh, offset, length, what);
  } finally {
    await fh.close();
  }
}

/** One payload member, matched to the header's file it is. */
export interface RpmPayloadEntry {
  file: RpmFileInfo;
  /**
   * Bytes of data this member carries: a regular file's content (0 for a hard link whose content
   * comes with another member of its set), a symlink's target, nothing for the rest.
   */
  size: number;
  /**
   * The data. Consume it before asking for the next entry; a regular file's digest is checked
   * when its data has been read to the end (UNTRUSTED then).
   */
  body: AsyncIterable<Buffer>;
}

export interface PayloadOptions {
  /** Largest decompressed payload accepted (default: what the signature header records, else 32 GiB). */
  maxBytes?: number;
  signal?: AbortSignal;
}

/**
 * The payload's files in archive order, each matched to the header's file list: a member the
 * header does not list, listed twice, a ghost, or whose mode, size or link target differ from the
 * header is refused (INVALID_ARCHIVE); file digests, the payload digest and the signature
 * header's MD5 are checked as the bytes stream (UNTRUSTED). The last checks happen when the
 * archive ends: nothing read may be kept unless the iteration completes. Every non-ghost file of
 * the header must have come by then.
 */
export async function* rpmPayloadEntries(
  pkg: RpmPackage,
  options: PayloadOptions = {},
): AsyncGenerator<RpmPayloadEntry> {
  const what = pkg.path;
  const format = COMPRESSORS[pkg.payloadCompressor];
  if (!format) {
    throw new SutureError(
      "UNSUPPORTED_OS",
      `${what} has a ${quoteUntrusted(pkg.payloadCompressor)}-compressed payload; suture reads gzip, xz, lzma, zstd and bzip2 payloads`,
    );
  }
  if (pkg.payloadDigest?.algorithm === "md5") {
    throw invalid(what, "records an MD5 payload digest, which rpm never writes");
  }
  const md5Expected = pkg.signatureHeader.binary(RpmSigTag.MD5);
  const md5 = md5Expected ? createHash("md5") : undefined;
  if (md5) {
    md5.update(await readRange(pkg.path, pkg.headerOffset, pkg.payloadOffset - pkg.headerOffset, what));
  }
  const payloadLength = pkg.fileSize - pkg.payloadOffset;
  const verifier = new VerifyingStream(
    {
      ...(pkg.payloadDigest ? { sha256: pkg.payloadDigest.hex } : {}),
      ...(pkg.payloadDigest ? { algorithm: pkg.payloadDigest.algorithm } : {}),
      size: payloadLength,
    },
    {
      tooLarge: () => untrusted(what, "grew while it was read"),
      sizeMismatch: (actual, size) =>
        untrusted(what, `has a ${actual}-byte payload where ${size} were expected`),
      digestMismatch: (actual) =>
        untrusted(
          what,
          `has a payload whose ${pkg.payloadDigest?.algorithm} is ${actual}, not the ${pkg.payloadDigest?.hex} its header records`,
        ),
    },
  );
  const raw = createReadStream(pkg.path, { start: pkg.payloadOffset });
  const tapped = Readable.from(
    (async function* () {
      for await (const chunk of raw) {
        md5?.update(chunk as Buffer);
        yield chunk as Buffer;
      }
    })(),
  );
  const { copy, verified, settle } = verifyAlongside(tapped, verifier);

  const recordedArchive =
    pkg.signatureHeader.number(RpmSigTag.LONGARCHIVESIZE) ??
    pkg.signatureHeader.number(RpmSigTag.PAYLOADSIZE);
  const maxBytes = options.maxBytes ?? recordedArchive ?? DEFAULT_MAX_PAYLOAD_BYTES;
  const byPath = new Map(pkg.files.map((f) => [`.${f.path}`, f]));
  const delivered = new Set<number>();
  const payloadWhat = `the payload of ${what}`;
  try {
    const members = readCpio(
      decompress(copy, format, {
        what: payloadWhat,
        maxBytes,
        fix: PACKAGE_FIX,
        ...(options.signal ? { signal: options.signal } : {}),
      }),
      {
        what: payloadWhat,
        strippedSize: (i) => {
          const f = pkg.files[i];
          return f === undefined
            ? undefined
            : f.type === "symlink"
              ? Buffer.byteLength(f.linkTo)
              : f.type === "file"
                ? f.size
                : 0;
        },
      },
    );
    for await (const member of members) {
      const file =
        member.fileIndex !== undefined ? pkg.files[member.fileIndex] : byPath.get(member.name ?? "");
      const label = quoteUntrusted(member.name ?? `#${member.fileIndex}`);
      if (!file) throw invalid(what, `has payload member ${label}, which its header does not list`);
      if (delivered.has(file.index)) throw invalid(what, `has payload member ${label} twice`);
      if (file.ghost) throw invalid(what, `has payload member ${label}, which its header marks %ghost`);
      delivered.add(file.index);
      if (member.mode !== undefined && member.mode !== file.mode) {
        throw invalid(
          what,
          `has payload member ${label} with mode ${member.mode.toString(8)} where its header says ${file.mode.toString(8)}`,
        );
      }
      const expectedSize =
        file.type === "file" ? file.size : file.type === "symlink" ? Buffer.byteLength(file.linkTo) : 0;
      // A hard link set carries its content once, with the last of its names.
      const hardlinkWithoutData = file.type === "file" && member.size === 0 && (member.nlink ?? 1) > 1;
      if (member.size !== expectedSize && !hardlinkWithoutData) {
        throw invalid(
          what,
          `has payload member ${label} of ${member.size} bytes where its header says ${expectedSize}`,
        );
      }
      yield { file, size: member.size, body: checkedBody(member.body, file, member.size, pkg, what) };
    }
    await verified;
  } catch (e) {
    // The payload may have been altered: that, not what it broke, is the cause to report.
    if (!options.signal?.aborted && !isSutureError(e, "UNTRUSTED")) await settle();
    throw e;
  } finally {
    // Also when the consumer stops early: the rest of the file is not read for nothing.
    raw.destroy();
  }
  if (md5 && md5Expected && !md5.digest().equals(Buffer.from(md5Expected))) {
    throw untrusted(what, "does not match the MD5 its signature header records");
  }
  const missing = pkg.files.find((f) => !f.ghost && !delivered.has(f.index));
  if (missing)
    throw invalid(what, `lacks ${quoteUntrusted(missing.path)} in its payload, which its header lists`);
}

async function* checkedBody(
  body: AsyncIterable<Buffer>,
  file: RpmFileInfo,
  size: number,
  pkg: RpmPackage,
  what: string,
): AsyncGenerator<Buffer> {
  if (file.type === "symlink") {
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk);
    const target = Buffer.concat(chunks);
    if (target.toString("utf8") !== file.linkTo) {
      throw invalid(
        what,
        `has symlink ${quoteUntrusted(file.path)} to ${quoteUntrusted(target.toString("utf8"))} where its header says ${quoteUntrusted(file.linkTo)}`,
      );
    }
    yield target;
    return;
  }
  const hash: Hash | undefined =
    file.type === "file" && file.digest && size > 0 ? createHash(pkg.fileDigestAlgorithm) : undefined;
  for await (const chunk of body) {
    hash?.update(chunk);
    yield chunk;
  }
  if (hash && hash.digest("hex") !== file.digest) {
    throw untrusted(
      what,
      `has file ${quoteUntrusted(file.path)} whose ${pkg.fileDigestAlgorithm} differs from its header's`,
    );
  }
}

/** What a repository's primary.xml says a package is (`RepoPackage` has these fields). */
export interface RpmIndexIdentity {
  name: string;
  arch: string;
  epoch: number;
  version: string;
  release: string;
  checksum: { type: "sha1" | "sha224" | "sha256" | "sha384" | "sha512"; value: string };
  packageSize: number;
  headerRange?: { start: number; end: number };
}

/**
 * Check a downloaded package against its repository's entry, before anything of it is used: the
 * file's size and checksum (the repository's trust in the package when its signature is not
 * checked, and the proof that the file is the one resolved), its identity and its header's place
 * in the file. Any difference is UNTRUSTED naming both.
 */
export async function checkRpmAgainstIndex(pkg: RpmPackage, expected: RpmIndexIdentity): Promise<void> {
  const what = pkg.path;
  const fix = "the mirror serves a different package than its metadata lists; use another mirror";
  if (pkg.fileSize !== expected.packageSize) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} is ${pkg.fileSize} bytes but the repository lists ${expected.packageSize}: ${fix}`,
    );
  }
  const hash = createHash(expected.checksum.type);
  for await (const chunk of createReadStream(pkg.path)) hash.update(chunk as Buffer);
  const actual = hash.digest("hex");
  if (actual !== expected.checksum.value) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} has ${expected.checksum.type} ${actual} but the repository lists ${expected.checksum.value}: ${fix}`,
    );
  }
  const got = `${pkg.nevra.name}-${pkg.nevra.epoch ?? 0}:${pkg.nevra.version}-${pkg.nevra.release}.${pkg.nevra.arch ?? ""}`;
  const listed = `${expected.name}-${expected.epoch}:${expected.version}-${expected.release}.${expected.arch}`;
  if (got !== listed) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} is ${quoteUntrusted(got)} but the repository lists ${quoteUntrusted(listed)}: ${fix}`,
    );
  }
  const range = expected.headerRange;
  if (range && (range.start !== pkg.headerOffset || range.end !== pkg.payloadOffset)) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} has its header at bytes ${pkg.headerOffset}-${pkg.payloadOffset} but the repository lists ${range.start}-${range.end}: ${fix}`,
    );
  }
}
