import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import zlib from "node:zlib";
import { type GzipMember, readGzipMember } from "../../archive/gzip-members.ts";
import { readTar, type TarMember } from "../../archive/tar/read.ts";
import { describeCause, isSutureError, quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { formatBytes } from "../../image/limits.ts";
import { type ApkField, type ApkPackageInfo, packageInfoFromFields } from "./records.ts";
import { type ApkKeyring, type ApkSignature, readApkSignatures, verifyApkSignature } from "./signature.ts";

/**
 * An apk v2 package (`.apk`): gzip members concatenated into one tar stream, as abuild builds
 * it: a signature segment (absent from unsigned packages), the control segment (`.PKGINFO` and
 * the install scripts) and the data archive. The index's `C:` is the checksum of the control
 * member's raw bytes, the signature signs the same bytes, and `.PKGINFO`'s `datahash` is the
 * SHA-256 of the data member's raw bytes: that chain is what makes the data trusted.
 */

/** apk-tools' install scripts, as the control segment names them. */
export const APK_SCRIPT_NAMES = [
  ".pre-install",
  ".post-install",
  ".pre-upgrade",
  ".post-upgrade",
  ".pre-deinstall",
  ".post-deinstall",
  ".trigger",
] as const;
export type ApkScriptName = (typeof APK_SCRIPT_NAMES)[number];

export type ApkFileChecksumAlgorithm = "md5" | "sha1" | "sha256";

/** A data archive member and the checksum apk recorded for it (`APK-TOOLS.checksum.*`). */
export interface ApkDataEntry extends TarMember {
  checksum?: { algorithm: ApkFileChecksumAlgorithm; hex: string };
}

export interface ApkPackage {
  /** The .apk on disk, for messages. */
  path: string;
  /** `.PKGINFO` as shipped. */
  pkginfoText: string;
  /** `.PKGINFO`'s identity and relations, as an index entry has them (`size` is the installed size). */
  info: ApkPackageInfo;
  /** `.PKGINFO`'s `datahash` (lower-case hex SHA-256 of the data member), when it has one. */
  datahash?: string;
  /** `.PKGINFO`'s `triggers`: the paths whose changes run the package's `.trigger`. */
  triggers: string[];
  /** Install scripts by name. */
  scripts: ReadonlyMap<ApkScriptName, Buffer>;
  /** The signature segment's signatures (none: an unsigned package). */
  signatures: readonly ApkSignature[];
  /** What the index's `C:` must say: `Q1` + base64 SHA-1 of the control member's raw bytes. */
  controlChecksum: string;
  /** The same as `Q2` + base64 SHA-256, as apk-tools 3 indexes have it. */
  controlChecksumSha256: string;
  /** Byte range of the data member in the file. */
  dataOffset: number;
  dataSize: number;
  /** Check the control segment's signature against `keyring` (see verifyApkSignature); the key name. */
  verifySignature(keyring: ApkKeyring): string;
  /** Check the data member's SHA-256 against `datahash` without decompressing it (UNTRUSTED). */
  checkData(): Promise<void>;
  /**
   * The data archive's members in order. Each call reads the file afresh; consume each entry's
   * body before asking for the next. The data member's SHA-256 is checked against `datahash`
   * once the archive has been read to its end: the iteration throws UNTRUSTED then, so nothing
   * read may be kept unless the iteration completes.
   */
  dataEntries(): AsyncGenerator<ApkDataEntry>;
}

export interface OpenApkOptions {
  /** Largest data member accepted, compressed (default 4 GiB; TOO_LARGE beyond). */
  maxDataBytes?: number;
  /** Largest data archive accepted, decompressed (default 16 GiB; TOO_LARGE beyond). */
  maxUnpackedBytes?: number;
}

/** The signature segment is one header and one RSA signature per key. */
const MAX_SIGNATURE_SEGMENT_BYTES = 64 * 1024;
/** `.PKGINFO` and scripts; the largest real ones (many `so:` provides) are a few hundred kB. */
const MAX_CONTROL_BYTES = 16 * 1024 * 1024;
/** Signature and control members are read from the first bytes of the file. */
const MAX_HEAD_BYTES = 2 * MAX_CONTROL_BYTES;
const DEFAULT_MAX_DATA_BYTES = 4 * 1024 ** 3;
const DEFAULT_MAX_UNPACKED_BYTES = 16 * 1024 ** 3;

const MIRROR_FIX = "remove it from the repository or use another mirror";
const FIX =
  "it is not a valid apk package (malformed or hostile); remove it from the repository or use another mirror";

/** `.PKGINFO` keys with their index letter: the fields both carry, parsed by one code path. */
const PKGINFO_LETTERS: Record<string, string> = {
  pkgname: "P",
  pkgver: "V",
  arch: "A",
  size: "I",
  pkgdesc: "T",
  url: "U",
  license: "L",
  origin: "o",
  maintainer: "m",
  builddate: "t",
  commit: "c",
  provider_priority: "k",
  replaces_priority: "q",
  depend: "D",
  provides: "p",
  install_if: "i",
  replaces: "r",
};

/**
 * Parse `.PKGINFO` (`key = value` lines, `#` comments) as apk does: lines without ` = ` and
 * unknown keys are ignored, repeated keys (`depend`, `provides`) accumulate.
 */
export function parsePkginfo(
  text: string,
  where: string,
): { info: ApkPackageInfo; datahash?: string; triggers: string[] } {
  const fields: ApkField[] = [];
  let datahash: string | undefined;
  const triggers: string[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const eq = line.indexOf(" = ");
    if (eq === -1) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 3);
    if (key === "datahash") {
      if (!/^[0-9a-f]{64}$/.test(value))
        throw new SutureError(
          "INVALID_ARCHIVE",
          `${where}: .PKGINFO datahash ${quoteUntrusted(value)} is not a SHA-256; ${FIX}`,
        );
      datahash = value;
    } else if (key === "triggers") {
      for (const t of value.split(" ").filter((w) => w !== "")) {
        if (!t.startsWith("/") || /[\0-\x1f]/.test(t))
          throw new SutureError(
            "INVALID_ARCHIVE",
            `${where}: .PKGINFO trigger ${quoteUntrusted(t)} is not an absolute path; ${FIX}`,
          );
        triggers.push(t);
      }
    } else if (Object.hasOwn(PKGINFO_LETTERS, key)) {
      fields.push([PKGINFO_LETTERS[key]!, value]);
    }
  }
  const info = packageInfoFromFields(fields, `${where}: .PKGINFO`, FIX);
  return datahash === undefined ? { info, triggers } : { info, datahash, triggers };
}

/**
 * Open an apk v2 package: split its gzip members at their raw byte offsets, read the signature
 * and control segments and parse `.PKGINFO`; the data member is streamed on demand. Malformed:
 * INVALID_ARCHIVE naming the file; a member past its cap: TOO_LARGE. Nothing here decides trust:
 * the caller checks `controlChecksum` against the index's `C:` or `verifySignature`, and the
 * data is checked against `datahash` as it is read. The file must not change while in use.
 */
export async function openApk(path: string, options: OpenApkOptions = {}): Promise<ApkPackage> {
  const maxDataBytes = options.maxDataBytes ?? DEFAULT_MAX_DATA_BYTES;
  const maxUnpackedBytes = options.maxUnpackedBytes ?? DEFAULT_MAX_UNPACKED_BYTES;
  const bad = (why: string, cause?: unknown) =>
    new SutureError(
      "INVALID_ARCHIVE",
      `${path} is not a valid apk package: ${why}; ${MIRROR_FIX}`,
      cause === undefined ? {} : { cause },
    );

  let head: Buffer;
  let fileSize: number;
  try {
    const handle = await open(path, "r");
    try {
      fileSize = (await handle.stat()).size;
      head = Buffer.alloc(Math.min(fileSize, MAX_HEAD_BYTES));
      const { bytesRead } = await handle.read(head, 0, head.length, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (e) {
    throw new SutureError("IO", `cannot read ${path}: ${describeCause(e)}`, { cause: e });
  }
  const headIsWhole = head.length === fileSize;
  const member = (start: number, max: number, what: string): GzipMember => {
    const prefix = `${path} ${what}`;
    try {
      return readGzipMember(head, start, max, prefix, !headIsWhole);
    } catch (e) {
      if (!isSutureError(e, "INVALID_ARCHIVE")) throw e;
      throw bad(`its ${what} is not a gzip member (${e.message.slice(prefix.length + 2)})`, e);
    }
  };

  // The first member is the signature segment when its first file is a `.SIGN.*`; an unsigned
  // package (melange without a key) starts with its control segment.
  let first: GzipMember;
  let signatures: ApkSignature[] = [];
  try {
    first = member(0, MAX_SIGNATURE_SEGMENT_BYTES, "signature or control segment");
    signatures = await readApkSignatures(first.data, path);
  } catch (e) {
    if (!isSutureError(e, "TOO_LARGE")) throw e;
    first = { start: 0, end: 0, data: Buffer.alloc(0) };
  }
  const isSigned = signatures.length > 0 || (await startsWithSignature(first.data));
  const control = isSigned
    ? member(first.end, MAX_CONTROL_BYTES, "control segment")
    : member(0, MAX_CONTROL_BYTES, "control segment");
  const dataOffset = control.end;
  const dataSize = fileSize - dataOffset;
  if (dataSize <= 0) throw bad("it has no data archive after its control segment");
  if (dataSize > maxDataBytes)
    throw new SutureError(
      "TOO_LARGE",
      `${path}: its data archive is ${formatBytes(dataSize)}, more than the ${formatBytes(maxDataBytes)} accepted`,
    );

  const members: { path: string; type: string; data: Buffer }[] = [];
  try {
    for await (const entry of readTar([control.data])) {
      const chunks: Buffer[] = [];
      for await (const c of entry.body) chunks.push(c);
      members.push({ path: entry.header.path, type: entry.header.type, data: Buffer.concat(chunks) });
    }
  } catch (e) {
    throw bad(`its control segment cannot be read (${describeCause(e)})`, e);
  }
  let pkginfoText: string | undefined;
  const scripts = new Map<ApkScriptName, Buffer>();
  for (const { path: name, type, data } of members) {
    if (type !== "file" || !name.startsWith(".") || name.includes("/"))
      throw bad(`control segment member ${quoteUntrusted(name)} is not a top-level control file`);
    if (name === ".PKGINFO") pkginfoText = data.toString("utf8");
    else if ((APK_SCRIPT_NAMES as readonly string[]).includes(name)) scripts.set(name as ApkScriptName, data);
    // Other dot-files (.SIGN.* in a control segment, future additions) are ignored, as by apk.
  }
  if (pkginfoText === undefined) throw bad("its control segment has no .PKGINFO");
  const { info, datahash, triggers } = parsePkginfo(pkginfoText, path);
  const controlRaw = head.subarray(control.start, control.end);
  const controlChecksum = formatApkChecksum("sha1", createHash("sha1").update(controlRaw).digest());
  const controlChecksumSha256 = formatApkChecksum("sha256", createHash("sha256").update(controlRaw).digest());
  const noDatahash = () =>
    new SutureError(
      "UNTRUSTED",
      `${path} (${info.name} ${info.version}) has no datahash in its .PKGINFO, so its data cannot be verified: rebuild it with a current abuild or melange`,
    );
  const dataMismatch = (actual: string) =>
    new SutureError(
      "UNTRUSTED",
      `${path} (${info.name} ${info.version}) has data with SHA-256 ${actual} where its .PKGINFO says ${datahash}: the package was changed after it was built; fetch it again from a trusted mirror`,
    );

  const pkg: ApkPackage = {
    path,
    pkginfoText,
    info,
    triggers,
    scripts,
    signatures,
    controlChecksum,
    controlChecksumSha256,
    dataOffset,
    dataSize,
    verifySignature: (keyring) => verifyApkSignature(signatures, controlRaw, keyring, `package ${path}`),
    checkData: async () => {
      if (datahash === undefined) throw noDatahash();
      const hash = createHash("sha256");
      for await (const c of createReadStream(path, { start: dataOffset })) hash.update(c as Buffer);
      const actual = hash.digest("hex");
      if (actual !== datahash) throw dataMismatch(actual);
    },
    dataEntries: async function* () {
      if (datahash === undefined) throw noDatahash();
      const hash = createHash("sha256");
      const raw = createReadStream(path, { start: dataOffset });
      raw.on("data", (c) => hash.update(c as Buffer));
      const gunzip = zlib.createGunzip({ chunkSize: 256 * 1024 });
      raw.on("error", (e) => gunzip.destroy(e));
      raw.pipe(gunzip);
      // Data that does not decompress or untar is most likely data that was changed: say so when
      // its hash shows it, rather than blame the format. Errors surface while headers are read
      // and while the consumer reads a body, so both paths go through here.
      let explained: SutureError | undefined;
      const explain = async (e: unknown): Promise<SutureError> => {
        if (!explained) explained = await explanation(e);
        return explained;
      };
      const explanation = async (e: unknown): Promise<SutureError> => {
        if (isSutureError(e, "TOO_LARGE")) return e;
        try {
          await pkg.checkData();
        } catch (mismatch) {
          return mismatch as SutureError;
        }
        return bad(`its data archive cannot be read (${describeCause(e)})`, e);
      };
      let unpacked = 0;
      const tarBytes = (async function* () {
        try {
          for await (const c of gunzip as Readable) {
            unpacked += (c as Buffer).length;
            if (unpacked > maxUnpackedBytes)
              throw new SutureError(
                "TOO_LARGE",
                `${path}: its data archive unpacks to more than the ${formatBytes(maxUnpackedBytes)} accepted`,
              );
            yield c as Buffer;
          }
        } catch (e) {
          throw await explain(e);
        }
      })();
      try {
        for await (const entry of readTar(tarBytes)) {
          const body = entry.body;
          yield withChecksum(
            {
              header: entry.header,
              body: (async function* () {
                try {
                  yield* body;
                } catch (e) {
                  throw await explain(e);
                }
              })(),
            },
            bad,
          );
        }
      } catch (e) {
        throw await explain(e);
      } finally {
        raw.destroy();
        gunzip.destroy();
      }
      const actual = hash.digest("hex");
      if (actual !== datahash) throw dataMismatch(actual);
    },
  };
  if (datahash !== undefined) pkg.datahash = datahash;
  return pkg;
}

/** Whether a segment's first member is named `.SIGN.*` (a signature segment of a kind apk ignores). */
async function startsWithSignature(segment: Buffer): Promise<boolean> {
  if (segment.length === 0) return false;
  try {
    for await (const entry of readTar([segment])) return entry.header.path.startsWith(".SIGN.");
  } catch {
    return false;
  }
  return false;
}

const CHECKSUM_KEYS: Record<string, { algorithm: ApkFileChecksumAlgorithm; hexLength: number }> = {
  "APK-TOOLS.checksum.MD5": { algorithm: "md5", hexLength: 32 },
  "APK-TOOLS.checksum.SHA1": { algorithm: "sha1", hexLength: 40 },
  "APK-TOOLS.checksum.SHA256": { algorithm: "sha256", hexLength: 64 },
};

function withChecksum(entry: TarMember, bad: (why: string) => SutureError): ApkDataEntry {
  const out: ApkDataEntry = entry;
  for (const [key, raw] of entry.header.otherPax ?? []) {
    const kind = CHECKSUM_KEYS[key];
    if (!kind) continue;
    const hex = raw.toString("latin1");
    if (hex.length !== kind.hexLength || !/^[0-9a-f]+$/.test(hex))
      throw bad(
        `data member ${quoteUntrusted(entry.header.path)} has a malformed ${key} ${quoteUntrusted(hex)}`,
      );
    out.checksum = { algorithm: kind.algorithm, hex };
  }
  return out;
}

/**
 * A file checksum as apk's databases write it (`Z:` lines, index `C:`): `Q1` + base64 for SHA-1,
 * `Q2` + base64 for SHA-256, plain hex for MD5.
 */
export function formatApkChecksum(algorithm: ApkFileChecksumAlgorithm, digest: Buffer): string {
  if (algorithm === "md5") return digest.toString("hex");
  return `${algorithm === "sha1" ? "Q1" : "Q2"}${digest.toString("base64")}`;
}

/** What a downloaded package must be: the signed index entry it was resolved from. */
export interface ApkIdentity {
  name: string;
  version: string;
  /** The index's `C:`. */
  checksum: string;
}

/**
 * Refuse a package that is not the one its signed index entry describes (UNTRUSTED): a control
 * segment whose checksum differs from `C:` (so its datahash, and the data, are not the ones
 * the repository signed), or a `.PKGINFO` naming another package or version.
 */
export function checkApkAgainstIndex(pkg: ApkPackage, expected: ApkIdentity): void {
  const what = `package ${quoteUntrusted(expected.name)} ${quoteUntrusted(expected.version)} (${pkg.path})`;
  // apk-tools 3 indexes carry SHA-256 (Q2) control checksums; apk-tools 2 ones SHA-1 (Q1).
  const actual = expected.checksum.startsWith("Q2") ? pkg.controlChecksumSha256 : pkg.controlChecksum;
  if (actual !== expected.checksum)
    throw new SutureError(
      "UNTRUSTED",
      `${what} has control checksum ${actual} where its signed index says ${quoteUntrusted(expected.checksum)}: the repository serves a package that is not the one its index describes; use another mirror`,
    );
  for (const [field, got, want] of [
    ["pkgname", pkg.info.name, expected.name],
    ["pkgver", pkg.info.version, expected.version],
  ] as const) {
    if (got !== want)
      throw new SutureError(
        "UNTRUSTED",
        `${what} says ${field} ${quoteUntrusted(got)} where its signed index says ${quoteUntrusted(want)}: the repository serves a package that is not the one its index describes; use another mirror`,
      );
  }
}
