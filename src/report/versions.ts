import { compareApkVersions, isValidApkVersion } from "../distro/apk/version.ts";
import { compareDebVersions, isValidDebVersion } from "../distro/dpkg/version.ts";
import { compareRpmVersions, isValidRpmVersion, rpmvercmp } from "../distro/rpm/version.ts";

/** The package formats suture can order versions of; also the purl type of such a package. */
export type PackageType = "deb" | "apk" | "rpm";

/** How one package format validates and orders versions. */
export interface VersionScheme {
  readonly name: PackageType | "generic";
  isValid(version: string): boolean;
  /** -1, 0 or 1; only called with versions isValid accepted. */
  compare(a: string, b: string): -1 | 0 | 1;
}

const SCHEMES: Record<PackageType, VersionScheme> = {
  deb: { name: "deb", isValid: isValidDebVersion, compare: compareDebVersions },
  apk: { name: "apk", isValid: isValidApkVersion, compare: compareApkVersions },
  rpm: { name: "rpm", isValid: isValidRpmVersion, compare: compareRpmVersions },
};

/**
 * Used when a report names no package format we know: rpm's segment comparison over the whole
 * string (digits numerically, letters lexically, separators ignored) is the least surprising
 * general-purpose order, and such plans are refused later by the patcher anyway.
 */
const GENERIC: VersionScheme = {
  name: "generic",
  isValid: (v) => v !== "" && !/\s/.test(v),
  compare: rpmvercmp,
};

export function versionSchemeFor(type: PackageType | undefined): VersionScheme {
  return type ? SCHEMES[type] : GENERIC;
}
