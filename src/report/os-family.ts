import type { PackageType } from "./versions.ts";

/**
 * copa's canonical OS family names (its `CanonicalOSType`), which suture keeps so plans and
 * copa UpdateManifests speak the same language.
 */
export const OS_FAMILIES = [
  "alpine",
  "debian",
  "ubuntu",
  "amazon",
  "centos",
  "cbl-mariner",
  "azurelinux",
  "redhat",
  "rocky",
  "oracle",
  "alma",
  "sles",
  "opensuse-leap",
  "opensuse-tumbleweed",
] as const;

/** Exact spellings scanners use that the substring rules below would miss. */
const ALIASES: Record<string, string> = {
  rhel: "redhat",
  ol: "oracle",
  amzn: "amazon",
  mariner: "cbl-mariner",
  "opensuse.leap": "opensuse-leap",
  "opensuse leap": "opensuse-leap",
  "opensuse.tumbleweed": "opensuse-tumbleweed",
  "opensuse tumbleweed": "opensuse-tumbleweed",
  "suse linux enterprise server": "sles",
};

/**
 * Map a scanner's OS family spelling (Trivy `Metadata.OS.Family`, Grype `distro.name`, a copa
 * manifest's `metadata.os.type`) to copa's canonical name. Unknown families (photon, wolfi,
 * slem, …) come back lower-cased rather than empty, so the plan still says what the report said.
 */
export function canonicalOsFamily(raw: string): string {
  const s = raw.trim().toLowerCase();
  // Own keys only: a family spelled "constructor" must not find Object.prototype's members.
  if (Object.hasOwn(ALIASES, s)) return ALIASES[s]!;
  // Same precedence as copa: the first family whose name occurs in the string wins.
  const rules: [string, string[]][] = [
    ["alpine", ["alpine"]],
    ["debian", ["debian"]],
    ["ubuntu", ["ubuntu"]],
    ["amazon", ["amazon"]],
    ["centos", ["centos"]],
    ["cbl-mariner", ["cbl-mariner", "mariner"]],
    ["azurelinux", ["azurelinux", "azure linux"]],
    ["redhat", ["redhat", "red hat"]],
    ["rocky", ["rocky"]],
    ["oracle", ["oracle"]],
    ["alma", ["alma"]],
    ["sles", ["sles", "suse linux enterprise server"]],
    ["opensuse-leap", ["opensuse-leap", "opensuse leap", "opensuse.leap"]],
    ["opensuse-tumbleweed", ["opensuse-tumbleweed", "opensuse tumbleweed", "opensuse.tumbleweed"]],
  ];
  for (const [family, needles] of rules) if (needles.some((n) => s.includes(n))) return family;
  return s;
}

const DEB = new Set(["debian", "ubuntu"]);
const APK = new Set(["alpine", "wolfi", "chainguard"]);
const RPM = new Set([
  "amazon",
  "centos",
  "cbl-mariner",
  "azurelinux",
  "redhat",
  "rocky",
  "oracle",
  "alma",
  "sles",
  "opensuse-leap",
  "opensuse-tumbleweed",
  "opensuse",
  "photon",
  "fedora",
  "slem",
  "suse",
]);

/** The package format of a (canonical) OS family, or undefined when suture does not know it. */
export function packageTypeForFamily(family: string | undefined): PackageType | undefined {
  if (!family) return undefined;
  if (DEB.has(family)) return "deb";
  if (APK.has(family)) return "apk";
  if (RPM.has(family)) return "rpm";
  return undefined;
}
