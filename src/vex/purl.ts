import { PackageURL } from "packageurl-js";
import { SutureError } from "../errors/errors.ts";
import type { PackageType } from "../report/versions.ts";

/**
 * Package URLs (purls) for VEX documents, built with packageurl-js (the purl project's own
 * JavaScript implementation: per-type normalisation such as lower-cased deb and apk names,
 * component validation, qualifiers sorted by key and empty ones dropped).
 *
 * Its encoder departs from the purl specification (ECMA-427, "Character encoding") in two ways,
 * corrected here so the strings are the canonical ones the specification's own test suite expects
 * (`pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64`,
 * `pkg:oci/debian@sha256:244f…?repository_url=docker.io%2Flibrary%2Fdebian`):
 * - a colon is never percent-encoded, whatever component it is in (packageurl-js encodes it in
 *   names and qualifier values);
 * - only letters, digits, `.-_~` and separators used as separators stay literal, so `+` and
 *   `!'()*` are percent-encoded (packageurl-js keeps them in versions and names).
 * Both corrections are safe on the whole string: packageurl-js encodes a literal `%` as `%25`,
 * so `%3A` only ever stands for an encoded colon, and none of `+!'()*` is a purl separator.
 */
function canonical(purl: PackageURL): string {
  return purl
    .toString()
    .replaceAll("%3A", ":")
    .replace(/[+!'()*]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`);
}

export interface PurlParts {
  type: string;
  namespace?: string;
  name: string;
  version?: string;
  qualifiers?: Record<string, string | undefined>;
}

/**
 * Build `pkg:type/namespace/name@version?k=v&…` in canonical form. Qualifiers without a value are
 * left out. A part the purl specification forbids (no name, a bad type or qualifier key) is a bug
 * in the caller: INTERNAL.
 */
export function formatPurl(p: PurlParts): string {
  const qualifiers = Object.fromEntries(
    Object.entries(p.qualifiers ?? {}).filter(
      (e): e is [string, string] => e[1] !== undefined && e[1] !== "",
    ),
  );
  let purl: PackageURL;
  try {
    purl = new PackageURL(
      p.type,
      p.namespace || undefined,
      p.name,
      p.version || undefined,
      Object.keys(qualifiers).length ? qualifiers : undefined,
    );
  } catch (e) {
    throw new SutureError(
      "INTERNAL",
      `cannot build a package URL for ${JSON.stringify(p.name)}: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  return canonical(purl);
}

/**
 * Whether `text` is a purl of the given type that packageurl-js can parse: a scanner's own purl
 * is used in VEX only then (never one of another type, or one a consumer could not read).
 */
export function isPurlOfType(text: string, type: string): boolean {
  try {
    return PackageURL.fromString(text).type === type;
  } catch {
    return false;
  }
}

const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * The purl of an image: `pkg:oci/<last repository segment>@<digest>?repository_url=<registry/repo>`
 * (purl `oci` type: the name is lower-cased, the digest is the version). `arch` is added for
 * per-platform images of a multi-platform patch.
 */
export function ociPurl(image: { repository: string; digest: string; architecture?: string }): string {
  if (!DIGEST.test(image.digest)) {
    throw new SutureError("INTERNAL", `VEX product digest ${JSON.stringify(image.digest)} is not a digest`);
  }
  const repository = image.repository.replace(/^[a-z]+:\/\//, "").replace(/\/+$/, "");
  const name = repository.split("/").pop()!.toLowerCase();
  if (!name)
    throw new SutureError("INTERNAL", `VEX product repository ${JSON.stringify(image.repository)} is empty`);
  return formatPurl({
    type: "oci",
    name,
    version: image.digest,
    qualifiers: { repository_url: repository, arch: image.architecture },
  });
}

/**
 * purl namespaces of rpm distributions whose family name is not the vendor's: the purl
 * specification's rpm namespace is the vendor (Trivy writes `pkg:rpm/opensuse/…` with
 * `distro=opensuse-leap-15.1`; SUSE's own packages are `pkg:rpm/suse/…`).
 */
const RPM_NAMESPACE: Readonly<Record<string, string>> = {
  "opensuse-leap": "opensuse",
  "opensuse-tumbleweed": "opensuse",
  sles: "suse",
  slem: "suse",
};

/**
 * An installed rpm's purl as Trivy writes it: `pkg:rpm/<vendor>/<name>@<version>-<release>` with
 * the epoch as a qualifier (the purl specification's rpm rule: the version has no epoch),
 * `arch=` and `distro=<family>-<release>`, e.g.
 * `pkg:rpm/rocky/openssl-libs@1.1.1k-4.el8?arch=x86_64&distro=rocky-8.5&epoch=1`.
 * `evr` is `[epoch:]version-release`, as suture and the scanners write an rpm's version.
 */
export function rpmPurl(p: {
  family?: string;
  osVersion?: string;
  name: string;
  evr: string;
  arch?: string;
}): string {
  const m = /^(\d+):(.*)$/.exec(p.evr);
  const epoch = m && Number(m[1]) !== 0 ? String(Number(m[1])) : undefined;
  return formatPurl({
    type: "rpm",
    namespace: p.family ? (RPM_NAMESPACE[p.family] ?? p.family) : undefined,
    name: p.name,
    version: m ? m[2] : p.evr,
    qualifiers: {
      arch: p.arch,
      epoch,
      distro: p.family && p.osVersion ? `${p.family}-${p.osVersion}` : undefined,
    },
  });
}

/** OCI architecture (+ variant) → the architecture name each package format uses. */
const NATIVE_ARCH: Record<PackageType, Record<string, string>> = {
  deb: {
    amd64: "amd64",
    arm64: "arm64",
    "arm/v7": "armhf",
    "arm/v6": "armel",
    "arm/v5": "armel",
    arm: "armhf",
    "386": "i386",
    ppc64le: "ppc64el",
    s390x: "s390x",
    riscv64: "riscv64",
    mips64le: "mips64el",
  },
  apk: {
    amd64: "x86_64",
    arm64: "aarch64",
    "arm/v7": "armv7",
    "arm/v6": "armhf",
    arm: "armv7",
    "386": "x86",
    ppc64le: "ppc64le",
    s390x: "s390x",
    riscv64: "riscv64",
  },
  rpm: {
    amd64: "x86_64",
    arm64: "aarch64",
    "arm/v7": "armv7hl",
    arm: "armv7hl",
    "386": "i686",
    ppc64le: "ppc64le",
    s390x: "s390x",
    riscv64: "riscv64",
  },
};

/** The package format's name for an OCI platform's architecture (OCI name when unknown). */
export function nativeArch(
  type: PackageType | undefined,
  arch: string | undefined,
  variant?: string,
): string | undefined {
  if (!arch) return undefined;
  if (!type) return arch;
  const table = NATIVE_ARCH[type];
  return (variant ? table[`${arch}/${variant}`] : undefined) ?? table[arch] ?? arch;
}
