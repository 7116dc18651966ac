import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { checkPackageFields, isValidPackageVersionText } from "../package-syntax.ts";

/**
 * What an APKINDEX and /lib/apk/db/installed have in common: records of `X:value` lines (one
 * letter, a colon, the value to the end of the line) separated by blank lines, and the package
 * fields apk writes in both (apk-tools' `apk_pkg_write_index_header`).
 */

/** One `X:value` line: the field letter and its value. */
export type ApkField = readonly [letter: string, value: string];

/** The lines of one record in order, and the line number (1-based) it starts at, for messages. */
export interface ApkRecord {
  line: number;
  fields: ApkField[];
}

/** No real field value comes near this (descriptions are one line, dependency lists a few kB). */
const MAX_LINE_BYTES = 1024 * 1024;

/**
 * Split apk's record text into records. A line that is not `X:value` (X a letter) is
 * INVALID_ARCHIVE naming `what` and the line number.
 */
export function parseApkRecords(text: string, what: string): ApkRecord[] {
  const records: ApkRecord[] = [];
  let current: ApkRecord | undefined;
  let lineNo = 0;
  let pos = 0;
  while (pos < text.length) {
    let nl = text.indexOf("\n", pos);
    if (nl === -1) nl = text.length;
    const line = text.slice(pos, nl);
    pos = nl + 1;
    lineNo++;
    if (line === "") {
      current = undefined;
      continue;
    }
    if (line.length > MAX_LINE_BYTES)
      throw new SutureError("INVALID_ARCHIVE", `${what} line ${lineNo} is longer than any apk field`);
    const letter = line[0]!;
    if (line[1] !== ":" || !/^[A-Za-z]$/.test(letter))
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${what} line ${lineNo} ${quoteUntrusted(line, 60)} is not an apk field (a letter, a colon, the value)`,
      );
    if (!current) {
      current = { line: lineNo, fields: [] };
      records.push(current);
    }
    current.fields.push([letter, line.slice(2)]);
  }
  return records;
}

/** A dependency, provide, install_if or replaces word: `[!]name[op version]`. */
export interface ApkDependency {
  name: string;
  /** `!name`: the package conflicts with `name`. */
  conflict: boolean;
  /** The version constraint, when there is one. */
  op?: ApkVersionOp;
  /** The version (a Q1/Q2 checksum for `><`, apk's pin to one exact build). */
  version?: string;
}

export type ApkVersionOp = "<" | "<=" | ">" | ">=" | "=" | "~" | "~=" | "><";

const OPS = new Set<string>(["<", "<=", ">", ">=", "=", "~", "~=", "><"]);

/**
 * Dependency names: package names, `so:`/`cmd:`/`pc:` names and absolute paths (`/bin/sh`).
 * Printable ASCII without apk's operator characters, not starting with `-` (a command-line
 * option) or `!` (the conflict mark, already taken off).
 */
const DEPENDENCY_NAME = /^["-,.-;?-}][!-;?-}]*$/;
const OPERATOR_CHARS = /[<>=~]/;
export const APK_CHECKSUM = /^Q[12][A-Za-z0-9+/]+={0,2}$/;

/** Parse one dependency word; `where` names the field for messages. */
export function parseApkDependency(word: string, where: string): ApkDependency {
  const bad = (why: string) =>
    new SutureError("INVALID_ARCHIVE", `${where} has a dependency ${quoteUntrusted(word)} that ${why}`);
  const conflict = word.startsWith("!");
  const body = conflict ? word.slice(1) : word;
  const at = body.search(OPERATOR_CHARS);
  const name = at === -1 ? body : body.slice(0, at);
  if (name.length === 0 || name.length > 256 || !DEPENDENCY_NAME.test(name) || name.includes("!"))
    throw bad("is not a valid apk dependency name");
  if (at === -1) return { name, conflict };
  const opText = /^[<>=~]+/.exec(body.slice(at))![0];
  const version = body.slice(at + opText.length);
  if (!OPS.has(opText)) throw bad(`has an unknown version operator ${quoteUntrusted(opText)}`);
  const op = opText as ApkVersionOp;
  if (op === "><" ? !APK_CHECKSUM.test(version) : !isValidPackageVersionText("apk", version))
    throw bad("has an invalid version");
  return { name, conflict, op, version };
}

/** A space-separated list of dependency words (`D:`, `p:`, `i:`, `r:`, `.PKGINFO`'s `depend`). */
export function parseApkDependencies(text: string, where: string): ApkDependency[] {
  return text
    .split(" ")
    .filter((w) => w !== "")
    .map((w) => parseApkDependency(w, where));
}

export function formatApkDependency(d: ApkDependency): string {
  return `${d.conflict ? "!" : ""}${d.name}${d.op ? `${d.op}${d.version}` : ""}`;
}

/** A package's identity and relations as an index, an installed db or a `.PKGINFO` gives them. */
export interface ApkPackageInfo {
  name: string;
  version: string;
  arch?: string;
  /** `C:`: the checksum of the package's control segment (`Q1` + base64 SHA-1, or `Q2` SHA-256). */
  checksum?: string;
  /** `S:`: the .apk file's size. */
  size?: number;
  /** `I:`: the installed size. */
  installedSize?: number;
  description?: string;
  url?: string;
  license?: string;
  origin?: string;
  maintainer?: string;
  /** `t:`: build time, seconds since the epoch. */
  buildTime?: number;
  /** `c:`: the aports commit. */
  commit?: string;
  /** `k:`: provider priority. */
  providerPriority?: number;
  /** `q:`: replaces priority. */
  replacesPriority?: number;
  depends: ApkDependency[];
  provides: ApkDependency[];
  installIf: ApkDependency[];
  replaces: ApkDependency[];
}

function apkNumber(value: string, where: string, field: string): number {
  const n = /^\d{1,15}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n))
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${where} has ${field} ${quoteUntrusted(value)}, which is not a non-negative integer`,
    );
  return n;
}

/**
 * The package fields of a record (letters apk writes in an index entry, and `r:`/`q:` of the
 * installed db); other letters are left to the caller. Identity fields are checked with
 * package-syntax's apk rules; a missing name or version, a malformed number, checksum or
 * dependency is INVALID_ARCHIVE naming `where` and the package. `fix` ends identity errors.
 */
export function packageInfoFromFields(
  fields: readonly ApkField[],
  where: string,
  fix: string,
): ApkPackageInfo {
  const get = (letter: string) => {
    const values = fields.filter(([l]) => l === letter);
    // apk keeps the last of repeated lines; a record that names two identities is not one
    // anybody wrote, and reading it differently from apk is worse than refusing it.
    if (values.length > 1)
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${where} has a record with ${values.length} ${letter}: lines: ${fix}`,
      );
    return values[0]?.[1];
  };
  const name = get("P");
  const version = get("V");
  if (name === undefined)
    throw new SutureError("INVALID_ARCHIVE", `${where} has a package without P: (name)`);
  if (version === undefined)
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${where} has package ${quoteUntrusted(name)} without V: (version)`,
    );
  const arch = get("A");
  get("C");
  checkPackageFields(
    "apk",
    { name, versionText: version, ...(arch === undefined ? {} : { architecture: arch }) },
    where,
    fix,
  );
  const what = `${where} package ${name} ${version}`;
  const info: ApkPackageInfo = { name, version, depends: [], provides: [], installIf: [], replaces: [] };
  if (arch !== undefined) info.arch = arch;
  for (const [letter, value] of fields) {
    switch (letter) {
      case "C":
        if (!APK_CHECKSUM.test(value))
          throw new SutureError(
            "INVALID_ARCHIVE",
            `${what} has a malformed C: checksum ${quoteUntrusted(value)}`,
          );
        info.checksum = value;
        break;
      case "S":
        info.size = apkNumber(value, what, "S:");
        break;
      case "I":
        info.installedSize = apkNumber(value, what, "I:");
        break;
      case "T":
        info.description = value;
        break;
      case "U":
        info.url = value;
        break;
      case "L":
        info.license = value;
        break;
      case "o":
        checkPackageFields("apk", { name: value }, `${what} origin`, fix);
        info.origin = value;
        break;
      case "m":
        info.maintainer = value;
        break;
      case "t":
        info.buildTime = apkNumber(value, what, "t:");
        break;
      case "c":
        info.commit = value;
        break;
      case "k":
        info.providerPriority = apkNumber(value, what, "k:");
        break;
      case "q":
        info.replacesPriority = apkNumber(value, what, "q:");
        break;
      case "D":
        info.depends.push(...parseApkDependencies(value, what));
        break;
      case "p":
        info.provides.push(...parseApkDependencies(value, what));
        break;
      case "i":
        info.installIf.push(...parseApkDependencies(value, what));
        break;
      case "r":
        info.replaces.push(...parseApkDependencies(value, what));
        break;
    }
  }
  return info;
}
