import { promisify } from "node:util";
import zlib from "node:zlib";
import { readGzipMember } from "../../archive/gzip-members.ts";
import { readTar } from "../../archive/tar/read.ts";
import { describeCause, formatBytes, isSutureError, SutureError } from "../../errors/errors.ts";
import { type ApkPackageInfo, packageInfoFromFields, parseApkRecords } from "./records.ts";
import { type ApkKeyring, type ApkSignature, readApkSignatures, verifyApkSignature } from "./signature.ts";

/** One package of an APKINDEX. */
export interface ApkIndexEntry extends ApkPackageInfo {
  /** `C:` is what a downloaded package's control segment is checked against: always present. */
  checksum: string;
}

export interface ApkIndex {
  /** The `DESCRIPTION` member (`v3.20.3-…`), when there is one. */
  description?: string;
  packages: ApkIndexEntry[];
  /** The name of the trusted key whose signature verified. */
  signedBy: string;
}

export interface OpenApkIndexOptions {
  /**
   * Largest decompressed index accepted (TOO_LARGE beyond). Alpine's edge community index is
   * about 12 MB and Wolfi's largest tens of MB; the default leaves room for them.
   */
  maxIndexBytes?: number;
}

const DEFAULT_MAX_INDEX_BYTES = 256 * 1024 * 1024;

/**
 * The largest `APKINDEX.tar.gz` file fetched or kept, compressed: Alpine's largest (edge
 * community) is about 2 MB, Wolfi's tens of MB.
 */
export const MAX_APKINDEX_FILE_BYTES = 128 * 1024 * 1024;
/** The signature segment is one tar header and one RSA signature. */
const MAX_SIGNATURE_SEGMENT_BYTES = 64 * 1024;

const gunzip = promisify(zlib.gunzip);

const INDEX_FIX = "the repository's index is broken or hostile; use another mirror";

/** Parse APKINDEX text (the `APKINDEX` member of an index tar). `what` names it in messages. */
export function parseApkIndex(text: string, what: string): ApkIndexEntry[] {
  return parseApkRecords(text, what).map((record) => {
    const where = `${what} (line ${record.line})`;
    const info = packageInfoFromFields(record.fields, where, INDEX_FIX);
    if (info.checksum === undefined)
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${where} lists package ${info.name} ${info.version} without a C: checksum, so its download could not be verified: ${INDEX_FIX}`,
      );
    return info as ApkIndexEntry;
  });
}

/**
 * Open an `APKINDEX.tar.gz` as apk does: its first gzip member is the signature segment, whose
 * `.SIGN.RSA[256].<key>` signs the raw bytes of the rest of the file; only once a signature by a
 * key in `keyring` verifies is the rest decompressed and parsed. Unsigned, signed by no trusted
 * key, or badly signed: UNTRUSTED; malformed: INVALID_ARCHIVE; too large: TOO_LARGE. `what`
 * names the index (its URL) in messages.
 */
export async function openApkIndex(
  bytes: Buffer,
  keyring: ApkKeyring,
  what: string,
  options: OpenApkIndexOptions = {},
): Promise<ApkIndex> {
  const maxIndexBytes = options.maxIndexBytes ?? DEFAULT_MAX_INDEX_BYTES;
  // An index without a signature segment starts with its index segment (too large for a
  // signature segment, or a tar of other members): there is nothing to check it against, and
  // apk refuses it the same way.
  let signatures: ApkSignature[] = [];
  let signedStart = 0;
  try {
    const first = readGzipMember(bytes, 0, MAX_SIGNATURE_SEGMENT_BYTES, what);
    signatures = await readApkSignatures(first.data, what);
    signedStart = first.end;
  } catch (e) {
    if (!isSutureError(e, "TOO_LARGE")) throw e;
  }
  const signedBy = verifyApkSignature(signatures, bytes.subarray(signedStart), keyring, what);

  let tar: Buffer;
  try {
    tar = await gunzip(bytes.subarray(signedStart), { maxOutputLength: maxIndexBytes });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE")
      throw new SutureError(
        "TOO_LARGE",
        `${what} decompresses to more than ${formatBytes(maxIndexBytes)}, more than any apk repository's index`,
      );
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what}: its index cannot be decompressed (${describeCause(e)})`,
      {
        cause: e,
      },
    );
  }
  let description: string | undefined;
  let text: string | undefined;
  try {
    for await (const entry of readTar([tar])) {
      const chunks: Buffer[] = [];
      for await (const c of entry.body) chunks.push(c);
      if (entry.header.type !== "file") continue;
      if (entry.header.path === "DESCRIPTION") description = Buffer.concat(chunks).toString("utf8").trim();
      else if (entry.header.path === "APKINDEX") text = Buffer.concat(chunks).toString("utf8");
    }
  } catch (e) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what}: its index archive cannot be read (${describeCause(e)})`,
      {
        cause: e,
      },
    );
  }
  if (text === undefined)
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what} has no APKINDEX member: it is not an apk repository index`,
    );
  const index: ApkIndex = { packages: parseApkIndex(text, what), signedBy };
  if (description !== undefined) index.description = description.slice(0, 200);
  return index;
}
