import { SutureError } from "../errors/errors.ts";
import type { PackageType } from "../report/versions.ts";

/**
 * Package URL (purl) construction in the canonical form of the purl specification: components
 * percent-encoded except for unreserved characters (`A-Z a-z 0-9 . - _ ~`), qualifiers with
 * lower-case keys sorted by key, empty qualifiers dropped.
 */

function encode(s: string, keep = ""): string {
  let out = "";
  for (const ch of s) {
    if (/[A-Za-z0-9._~-]/.test(ch) || keep.includes(ch)) out += ch;
    else
      for (const byte of Buffer.from(ch, "utf8"))
        out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export interface PurlParts {
  type: string;
  namespace?: string;
  name: string;
  version?: string;
  qualifiers?: Record<string, string | undefined>;
}

/** Build `pkg:type/namespace/name@version?k=v&…`. Qualifier values keep `/` (as in the spec's examples). */
export function formatPurl(p: PurlParts): string {
  let s = `pkg:${p.type.toLowerCase()}/`;
  if (p.namespace)
    s += `${p.namespace
      .split("/")
      .map((seg) => encode(seg))
      .join("/")}/`;
  s += encode(p.name);
  if (p.version) s += `@${encode(p.version)}`;
  const qualifiers = Object.entries(p.qualifiers ?? {})
    .filter((e): e is [string, string] => e[1] !== undefined && e[1] !== "")
    .map(([k, v]) => [k.toLowerCase(), v] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (qualifiers.length) s += `?${qualifiers.map(([k, v]) => `${k}=${encode(v, "/")}`).join("&")}`;
  return s;
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
