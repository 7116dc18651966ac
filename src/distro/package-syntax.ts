import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import { isValidApkVersion } from "../report/apk-version.ts";
import { isValidRpmVersion } from "../report/rpm-version.ts";
import { isValidDebVersion } from "./dpkg/version.ts";

/**
 * What a package name, version and architecture may look like for each package manager. Names,
 * versions and architectures come from reports, package indexes, package control files and image
 * databases — all untrusted — and end up in file names (`info/<name>:<arch>.list`), command lines
 * and tables. Anything outside the format's own syntax is refused before it is used, so no later
 * code has to think about `/`, `..`, newlines or a leading `-`.
 */
export type PackageFormat = "deb" | "apk" | "rpm";

/** No package format allows names or versions this long; a longer one is hostile or broken. */
const MAX_FIELD_LENGTH = 256;

interface FormatSyntax {
  name: RegExp;
  version: (v: string) => boolean;
  architecture: RegExp;
  /** How the format's own documentation names the rules, for messages. */
  rules: string;
  /**
   * The alphabet of the format's versions, whatever their grammar: what a version may contain to
   * be shown or compared at all. Starts with a letter or digit, so never reads as an option.
   */
  versionText: RegExp;
  /** The name and version alphabets in words, for messages. */
  nameAlphabet: string;
  versionAlphabet: string;
}

const SYNTAX: Record<PackageFormat, FormatSyntax> = {
  // Debian Policy §5.6.1 (Package: lower-case alphanumerics and + - ., at least two characters,
  // starting with an alphanumeric), §5.6.12 (Version), §11.1 / dpkg-architecture (Architecture:
  // lower-case alphanumerics and -, e.g. amd64, arm64, all, linux-any).
  deb: {
    name: /^[a-z0-9][a-z0-9+.-]+$/,
    version: (v) => isValidDebVersion(v) && /^[A-Za-z0-9.+~:-]+$/.test(v),
    architecture: /^[a-z0-9][a-z0-9-]*$/,
    rules: "Debian Policy §5.6",
    versionText: /^[A-Za-z0-9][A-Za-z0-9.+~:-]*$/,
    nameAlphabet: "a-z 0-9 + - . only, starting with a-z or 0-9",
    versionAlphabet: "A-Z a-z 0-9 . + ~ : - only, starting with a letter or digit",
  },
  // apk-tools (package names: alphanumerics and _ - + .; versions as apk_version_validate).
  apk: {
    name: /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/,
    version: (v) => isValidApkVersion(v),
    architecture: /^[a-z0-9_]+$/,
    rules: "apk-tools' package syntax",
    versionText: /^[A-Za-z0-9][A-Za-z0-9._~+-]*$/,
    nameAlphabet: "A-Z a-z 0-9 _ . + - only, starting with a letter, digit or _",
    versionAlphabet: "A-Z a-z 0-9 . _ ~ + - only, starting with a letter or digit",
  },
  // rpm (Name: no whitespace, no leading '-'; EVR without whitespace or '/'; arch like x86_64).
  rpm: {
    name: /^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$/,
    version: (v) => isValidRpmVersion(v) && /^[A-Za-z0-9._+~^:-]+$/.test(v),
    architecture: /^[A-Za-z0-9_]+$/,
    rules: "rpm's package syntax",
    versionText: /^[A-Za-z0-9][A-Za-z0-9._+~^:-]*$/,
    nameAlphabet: "A-Z a-z 0-9 _ . + - only, starting with a letter, digit, _ or +",
    versionAlphabet: "A-Z a-z 0-9 . _ + ~ ^ : - only, starting with a letter or digit",
  },
};

/**
 * For a package of a format suture does not know (a report about an OS it cannot patch): what
 * at least one of the formats would accept, so such entries can still be listed safely.
 */
const ANY_FORMAT = {
  name: /^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$/,
  versionText: /^[A-Za-z0-9][A-Za-z0-9._+~^:-]*$/,
  rules: "the package syntax of deb, apk and rpm",
  nameAlphabet: "A-Z a-z 0-9 _ . + - only, starting with a letter, digit, _ or +",
  versionAlphabet: "A-Z a-z 0-9 . _ + ~ ^ : - only, starting with a letter or digit",
};

export function isValidPackageName(format: PackageFormat, name: string): boolean {
  return name.length <= MAX_FIELD_LENGTH && SYNTAX[format].name.test(name);
}

export function isValidPackageVersion(format: PackageFormat, version: string): boolean {
  return version.length <= MAX_FIELD_LENGTH && SYNTAX[format].version(version);
}

/**
 * A version in the format's alphabet, whatever its grammar: repositories publish versions their
 * own grammar rejects (Alpine's `aspell-ru` 0.99f7-r0), which apk keeps and orders as best it can.
 */
export function isValidPackageVersionText(format: PackageFormat, version: string): boolean {
  return version.length <= MAX_FIELD_LENGTH && SYNTAX[format].versionText.test(version);
}

export function isValidPackageArchitecture(format: PackageFormat, arch: string): boolean {
  return arch.length <= 64 && SYNTAX[format].architecture.test(arch);
}

// One quoting helper for every message (archive, distro and report code all need it).
export { quoteUntrusted };

/**
 * Check the identity fields of one package as read from `where` (an index, a package file, a
 * report, an image's database). Throws `code` (default INVALID_ARCHIVE) naming the field, the
 * value and the rule; `fix` says what the user can do.
 */
export function checkPackageFields(
  format: PackageFormat,
  fields: {
    name: string;
    version?: string;
    /** A version checked only against the format's alphabet (see isValidPackageVersionText). */
    versionText?: string;
    architecture?: string;
  },
  where: string,
  fix: string,
  code: "INVALID_ARCHIVE" | "INVALID_REPORT" | "UNTRUSTED" | "UNSAFE_LAYER" = "INVALID_ARCHIVE",
): void {
  const bad = (field: string, value: string) =>
    new SutureError(
      code,
      `${where} has a package ${field} ${quoteUntrusted(value)} that breaks ${SYNTAX[format].rules}; ${fix}`,
    );
  if (!isValidPackageName(format, fields.name)) throw bad("name", fields.name);
  if (fields.version !== undefined && !isValidPackageVersion(format, fields.version))
    throw bad("version", fields.version);
  if (fields.versionText !== undefined && !isValidPackageVersionText(format, fields.versionText))
    throw bad("version", fields.versionText);
  if (fields.architecture !== undefined && !isValidPackageArchitecture(format, fields.architecture))
    throw bad("architecture", fields.architecture);
}

/**
 * Check a package as a scanner report lists it: its name and every version the report gives for
 * it (installed, fix candidates). Throws INVALID_REPORT naming `where`, the field, the value and
 * the rule; `fix` says what the user can do. The name must be valid for the format. A version
 * need only be harmless text in the format's alphabet: reports do name versions a format cannot
 * order (those findings are skipped as invalid-version, not refused), but nothing that could
 * break a table line, a file name or a command line gets further than here. `format` undefined
 * (an OS suture cannot patch): whatever one of the formats would accept.
 */
export function checkReportedPackage(
  format: PackageFormat | undefined,
  fields: { name: string; versions: readonly string[] },
  where: string,
  fix: string,
): void {
  const syntax = format ? SYNTAX[format] : ANY_FORMAT;
  const bad = (field: string, value: string, alphabet: string) =>
    new SutureError(
      "INVALID_REPORT",
      `${where} has a package ${field} ${quoteUntrusted(value)} that breaks ${syntax.rules} (${alphabet}, at most ${MAX_FIELD_LENGTH} characters); ${fix}`,
    );
  const name = fields.name;
  if (name.length > MAX_FIELD_LENGTH || !syntax.name.test(name)) throw bad("name", name, syntax.nameAlphabet);
  for (const v of fields.versions) {
    if (v.length > MAX_FIELD_LENGTH || !syntax.versionText.test(v))
      throw bad("version", v, syntax.versionAlphabet);
  }
}
