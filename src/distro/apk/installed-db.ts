import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { readFileInRoot } from "../../fs/in-root.ts";
import {
  APK_CHECKSUM,
  type ApkDependency,
  type ApkField,
  type ApkPackageInfo,
  formatApkDependency,
  packageInfoFromFields,
  parseApkRecords,
} from "./records.ts";

/**
 * apk's database of installed packages, `/lib/apk/db/installed`: one record per package, its
 * package fields as in an index entry (plus `r:` replaces, `q:` replaces priority, `s:`
 * repository tag, `f:` broken flags) and then what it owns: `F:` a directory (`M:` its owner
 * and mode when not root's 0755), `R:` a file in it (`a:` its owner and mode when not root's
 * 0644, `Z:` its checksum). Parsed and written back byte for byte as apk writes it, so a patch
 * changes only the records of the packages it replaced.
 */

/** `uid:gid:mode[:xattr checksum]`, as `M:` and `a:` lines carry it (mode in octal). */
export interface ApkAcl {
  uid: number;
  gid: number;
  mode: number;
  /** Checksum of the path's extended attributes (apk-tools ≥ 2.12), when it has any. */
  xattrChecksum?: string;
}

export interface InstalledFile {
  /** The file's name within its directory. */
  name: string;
  acl?: ApkAcl;
  /** `Z:`: `Q1` + base64 SHA-1 of the content (of the target text for a symlink). */
  checksum?: string;
}

export interface InstalledDir {
  /** Relative to the root, no leading or trailing `/` (`usr/lib`); "" is the root itself. */
  path: string;
  acl?: ApkAcl;
  files: InstalledFile[];
}

export interface InstalledPackage {
  /** The record's package lines in order, as written (the file list excluded). */
  fields: ApkField[];
  /** What `fields` say, parsed and checked. */
  info: ApkPackageInfo;
  dirs: InstalledDir[];
}

export const INSTALLED_DB_PATH = "/lib/apk/db/installed";

/** Letters of the file list; every other letter is a package field. */
const FILE_LIST_LETTERS = new Set(["F", "M", "R", "a", "Z"]);
const MAX_PATH_BYTES = 4096;
const MD5_HEX = /^[0-9a-f]{32}$/;

const DB_FIX = "the image's apk database is damaged or hostile; repair it with apk fix in the image";

function dbError(where: string, why: string): SutureError {
  return new SutureError("INVALID_ARCHIVE", `${where} ${why}: ${DB_FIX}`);
}

function parseAcl(value: string, where: string): ApkAcl {
  const m = /^(\d{1,10}):(\d{1,10}):([0-7]{1,6})(?::(Q[12][A-Za-z0-9+/]+={0,2}))?$/.exec(value);
  const uid = m ? Number(m[1]) : Number.NaN;
  const gid = m ? Number(m[2]) : Number.NaN;
  const mode = m ? Number.parseInt(m[3]!, 8) : Number.NaN;
  if (!m || uid > 0xffffffff || gid > 0xffffffff || mode > 0o7777)
    throw dbError(where, `has an owner and mode ${quoteUntrusted(value)} that is not uid:gid:octal-mode`);
  const acl: ApkAcl = { uid, gid, mode };
  if (m[4] !== undefined) acl.xattrChecksum = m[4];
  return acl;
}

export function formatApkAcl(acl: ApkAcl): string {
  return `${acl.uid}:${acl.gid}:${acl.mode.toString(8)}${acl.xattrChecksum === undefined ? "" : `:${acl.xattrChecksum}`}`;
}

/** A directory path from the database: relative, no `.`/`..`/empty components. */
function checkDirPath(path: string, where: string): void {
  if (path === "") return;
  if (
    path.length > MAX_PATH_BYTES ||
    path.includes("\0") ||
    path.split("/").some((c) => c === "" || c === "." || c === "..")
  )
    throw dbError(where, `has a directory ${quoteUntrusted(path)} that is not a plain relative path`);
}

function checkFileName(name: string, where: string): void {
  if (
    name === "" ||
    name === "." ||
    name === ".." ||
    name.includes("/") ||
    name.includes("\0") ||
    name.length > 255
  )
    throw dbError(where, `has a file name ${quoteUntrusted(name)} that is not a plain name`);
}

/**
 * A package record from its fields and file list, checked as the parser checks a record read
 * from an image (what an engine builds for a new version goes through here too).
 */
export function installedPackage(fields: ApkField[], dirs: InstalledDir[], where: string): InstalledPackage {
  for (const [letter] of fields)
    if (FILE_LIST_LETTERS.has(letter))
      throw new SutureError("INTERNAL", `${where}: ${letter}: is not a package field`);
  const info = packageInfoFromFields(fields, where, DB_FIX);
  for (const dir of dirs) {
    checkDirPath(dir.path, `${where} package ${info.name}`);
    for (const f of dir.files) checkFileName(f.name, `${where} package ${info.name}`);
  }
  return { fields, info, dirs };
}

/**
 * The installed packages of the apk database in `root` (an image's unpacked or merged root).
 * `whenMissing` is the error when there is none: what that means depends on the caller (no apk
 * image at all, or a database a package manager removed).
 */
export async function readInstalledDbInRoot(
  root: string,
  whenMissing: () => SutureError,
): Promise<InstalledPackage[]> {
  const text = await readFileInRoot(root, INSTALLED_DB_PATH);
  if (text === undefined) throw whenMissing();
  return parseInstalledDb(text.toString("utf8"));
}

/** Name → installed version. */
export function installedVersionsOf(packages: readonly InstalledPackage[]): Map<string, string> {
  return new Map(packages.map((p) => [p.info.name, p.info.version]));
}

/** Parse `/lib/apk/db/installed`; `where` names it in messages. Malformed: INVALID_ARCHIVE. */
export function parseInstalledDb(
  text: string,
  where = `the image's ${INSTALLED_DB_PATH}`,
): InstalledPackage[] {
  const packages: InstalledPackage[] = [];
  const seen = new Set<string>();
  for (const record of parseApkRecords(text, where)) {
    const at = `${where} (line ${record.line})`;
    const fields: ApkField[] = [];
    const dirs: InstalledDir[] = [];
    let dir: InstalledDir | undefined;
    let file: InstalledFile | undefined;
    for (const [letter, value] of record.fields) {
      switch (letter) {
        case "F":
          checkDirPath(value, at);
          dir = { path: value, files: [] };
          dirs.push(dir);
          file = undefined;
          break;
        case "M":
          if (!dir) throw dbError(at, "has an M: line before any F: directory");
          dir.acl = parseAcl(value, at);
          break;
        case "R":
          if (!dir) throw dbError(at, "has an R: file before any F: directory");
          checkFileName(value, at);
          file = { name: value };
          dir.files.push(file);
          break;
        case "a":
          if (!file) throw dbError(at, "has an a: line before any R: file");
          file.acl = parseAcl(value, at);
          break;
        case "Z":
          if (!file) throw dbError(at, "has a Z: line before any R: file");
          if (!APK_CHECKSUM.test(value) && !MD5_HEX.test(value))
            throw dbError(at, `has a malformed Z: checksum ${quoteUntrusted(value)}`);
          file.checksum = value;
          break;
        default:
          // Package fields are written before the file list; one after it still belongs to the
          // package (apk reads it so), it is only written back in its place.
          fields.push([letter, value]);
      }
    }
    const pkg = installedPackage(fields, dirs, at);
    if (seen.has(pkg.info.name)) throw dbError(at, `lists package ${pkg.info.name} twice`);
    seen.add(pkg.info.name);
    packages.push(pkg);
  }
  return packages;
}

/** The database text, as apk writes it: each record's fields, its file list, a blank line. */
export function serializeInstalledDb(packages: readonly InstalledPackage[]): string {
  const out: string[] = [];
  for (const pkg of packages) {
    for (const [letter, value] of pkg.fields) out.push(`${letter}:${value}\n`);
    for (const dir of pkg.dirs) {
      out.push(`F:${dir.path}\n`);
      if (dir.acl) out.push(`M:${formatApkAcl(dir.acl)}\n`);
      for (const f of dir.files) {
        out.push(`R:${f.name}\n`);
        if (f.acl) out.push(`a:${formatApkAcl(f.acl)}\n`);
        if (f.checksum !== undefined) out.push(`Z:${f.checksum}\n`);
      }
    }
    out.push("\n");
  }
  return out.join("");
}

/** Every path a package owns, relative to the root: its directories, then its files. */
export function ownedPaths(pkg: InstalledPackage): { dirs: string[]; files: string[] } {
  return {
    dirs: pkg.dirs.map((d) => d.path).filter((p) => p !== ""),
    files: pkg.dirs.flatMap((d) => d.files.map((f) => (d.path === "" ? f.name : `${d.path}/${f.name}`))),
  };
}

/**
 * The package fields of an installed record as apk writes them for a package it installed from
 * an index (apk-tools' index header, then the installed db's own `r:`, `q:` and `s:`): `C:` the
 * index's checksum, `T:`/`U:`/`L:`/`S:`/`I:` always, the others when set.
 */
export function installedRecordFields(
  info: ApkPackageInfo & { checksum: string },
  extra: { replaces: readonly ApkDependency[]; replacesPriority?: number; repositoryTag?: string },
): ApkField[] {
  const fields: ApkField[] = [
    ["C", info.checksum],
    ["P", info.name],
    ["V", info.version],
  ];
  if (info.arch !== undefined) fields.push(["A", info.arch]);
  fields.push(
    ["S", String(info.size ?? 0)],
    ["I", String(info.installedSize ?? 0)],
    ["T", info.description ?? ""],
    ["U", info.url ?? ""],
    ["L", info.license ?? ""],
  );
  if (info.origin !== undefined) fields.push(["o", info.origin]);
  if (info.maintainer !== undefined) fields.push(["m", info.maintainer]);
  if (info.buildTime) fields.push(["t", String(info.buildTime)]);
  if (info.commit !== undefined) fields.push(["c", info.commit]);
  if (info.providerPriority) fields.push(["k", String(info.providerPriority)]);
  const deps = (letter: string, list: readonly ApkDependency[]) => {
    if (list.length) fields.push([letter, list.map(formatApkDependency).join(" ")]);
  };
  deps("D", info.depends);
  deps("p", info.provides);
  deps("i", info.installIf);
  deps("r", extra.replaces);
  if (extra.replacesPriority) fields.push(["q", String(extra.replacesPriority)]);
  if (extra.repositoryTag !== undefined) fields.push(["s", extra.repositoryTag]);
  return fields;
}
