import { createHash, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import zlib from "node:zlib";
import { encodeTarHeader, TAR_END, tarPadding } from "../../src/archive/tar/write.ts";

/**
 * Builders of apk v2 artefacts for tests (signed indexes and packages, laid out as abuild and
 * `apk index` lay them out): gzip members of tar segments, the signature segment signing the raw
 * compressed bytes after it.
 */

export interface ApkTestKey {
  /** The key's file name, as apk matches it. */
  name: string;
  privateKey: KeyObject;
  publicPem: string;
}

export function apkTestKey(name = "suture-test.rsa.pub", bits = 2048): ApkTestKey {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: bits });
  return { name, privateKey, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

export interface SegmentFile {
  name: string;
  data?: Buffer | string;
  type?: "file" | "directory" | "symlink" | "hardlink";
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  /** Seconds since the epoch (default 0). */
  mtime?: number;
  /** Extra PAX records (`APK-TOOLS.checksum.SHA1`). */
  pax?: Record<string, string>;
  /** Extended attributes (`SCHILY.xattr.*` records). */
  xattrs?: Record<string, string>;
}

/**
 * A tar segment of `files`. abuild cuts the end-of-archive blocks off the signature and control
 * segments (`end` false) so that the three concatenate into one tar stream.
 */
export function tarSegment(files: readonly SegmentFile[], end: boolean): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const data = Buffer.from(f.data ?? "");
    const type = f.type ?? "file";
    parts.push(
      encodeTarHeader({
        path: f.name,
        type,
        mode: f.mode ?? (type === "directory" ? 0o755 : 0o644),
        uid: f.uid ?? 0,
        gid: f.gid ?? 0,
        mtime: f.mtime ?? 0,
        size: type === "file" ? data.length : 0,
        ...(f.linkname === undefined ? {} : { linkname: f.linkname }),
        ...(f.pax ? { otherPax: new Map(Object.entries(f.pax).map(([k, v]) => [k, Buffer.from(v)])) } : {}),
        ...(f.xattrs
          ? { xattrs: new Map(Object.entries(f.xattrs).map(([k, v]) => [k, Buffer.from(v)])) }
          : {}),
      }),
    );
    if (type === "file") parts.push(data, tarPadding(data.length));
  }
  if (end) parts.push(TAR_END);
  return Buffer.concat(parts);
}

export function gzip(bytes: Buffer): Buffer {
  return zlib.gzipSync(bytes);
}

/** The gzip'd signature segment over `signed` (raw bytes), as abuild-sign writes it. */
export function signatureMember(
  signed: Buffer,
  key: ApkTestKey,
  algorithm: "sha1" | "sha256" = "sha1",
): Buffer {
  const signature = sign(algorithm, signed, key.privateKey);
  const name = `.SIGN.${algorithm === "sha1" ? "RSA" : "RSA256"}.${key.name}`;
  return gzip(tarSegment([{ name, data: signature }], false));
}

/** An `APKINDEX.tar.gz` of `text`, signed by `key` (unsigned without one). */
export function buildApkIndex(
  text: string,
  key?: ApkTestKey,
  algorithm: "sha1" | "sha256" = "sha1",
  description = "suture test repository",
): Buffer {
  const index = gzip(
    tarSegment(
      [
        { name: "DESCRIPTION", data: description },
        { name: "APKINDEX", data: text },
      ],
      true,
    ),
  );
  return key ? Buffer.concat([signatureMember(index, key, algorithm), index]) : index;
}

export interface ApkParts {
  /** `.PKGINFO` text; `datahash = …` is appended unless `datahash` is false. */
  pkginfo: string;
  /** Install scripts and other control files (`.post-upgrade`, `.trigger`). */
  scripts?: readonly SegmentFile[];
  files: readonly SegmentFile[];
  key?: ApkTestKey;
  algorithm?: "sha1" | "sha256";
  /** Write this datahash instead of the data member's real SHA-256; false: none. */
  datahash?: string | false;
}

export interface BuiltApk {
  bytes: Buffer;
  control: Buffer;
  data: Buffer;
  /** The index's `C:` for it: Q1 + base64 SHA-1 of the control member. */
  checksum: string;
}

/** An apk v2 package: [signature,] control (.PKGINFO and scripts), data; as abuild builds it. */
export function buildApk(parts: ApkParts): BuiltApk {
  const files = parts.files.map((f) =>
    (f.type ?? "file") === "file" && !f.pax
      ? {
          ...f,
          pax: {
            "APK-TOOLS.checksum.SHA1": createHash("sha1")
              .update(Buffer.from(f.data ?? ""))
              .digest("hex"),
          },
        }
      : f,
  );
  const data = gzip(tarSegment(files, true));
  const datahash = parts.datahash ?? createHash("sha256").update(data).digest("hex");
  const pkginfo = datahash === false ? parts.pkginfo : `${parts.pkginfo}datahash = ${datahash}\n`;
  const control = gzip(tarSegment([{ name: ".PKGINFO", data: pkginfo }, ...(parts.scripts ?? [])], false));
  const signature = parts.key ? signatureMember(control, parts.key, parts.algorithm) : Buffer.alloc(0);
  return {
    bytes: Buffer.concat([signature, control, data]),
    control,
    data,
    checksum: `Q1${createHash("sha1").update(control).digest("base64")}`,
  };
}
