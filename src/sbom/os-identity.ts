import type { DistroInfo } from "../distro/detect.ts";
import { canonicalOsFamily } from "../report/os-family.ts";

/**
 * The OS of an image as Trivy names it (its `Metadata.OS`: Family and Name), because purls carry
 * it (`distro=debian-12.5`) and an SBOM whose purls differ from the scanner's by the release
 * string would not match its findings. Trivy does not take os-release's VERSION_ID for every
 * family: Debian's release is /etc/debian_version (`12.5`, not `12`), Alpine's /etc/alpine-release,
 * the Red Hat family's the `release N` of its own release file (CentOS `7.6.1810`), Amazon Linux's
 * /etc/system-release after `Amazon Linux ` (`2 (Karoo)`, `AMI release 2018.03`).
 */
export interface OsIdentity {
  /** Trivy's family (copa's canonical names: debian, alpine, redhat, amazon, cbl-mariner, …). */
  family: string;
  /** The release as the family's scanner reads it; "" when the image says none. */
  release: string;
  prettyName?: string;
}

/** Files Trivy reads the release from, beside os-release (sbomWants adds them to detection's). */
export const RELEASE_FILES: readonly string[] = [
  "/etc/debian_version",
  "/etc/alpine-release",
  "/etc/redhat-release",
  "/etc/centos-release",
  "/etc/rocky-release",
  "/etc/almalinux-release",
  "/etc/oracle-release",
  "/etc/system-release",
];

/** Red Hat family: the file naming `… release 8.5 (Green Obsidian)`. */
const RH_RELEASE_FILE: Record<string, string> = {
  redhat: "/etc/redhat-release",
  centos: "/etc/centos-release",
  rocky: "/etc/rocky-release",
  alma: "/etc/almalinux-release",
  oracle: "/etc/oracle-release",
};

export function osIdentity(distro: DistroInfo, files: Map<string, Buffer>): OsIdentity | undefined {
  const os = distro.osRelease;
  const text = (path: string) => files.get(path)?.toString("utf8").split("\n")[0]?.trim() || undefined;
  const family = os
    ? canonicalOsFamily(os.id)
    : distro.packageDb === "apk" && text("/etc/alpine-release")
      ? "alpine"
      : undefined;
  if (family === undefined) return undefined;
  const versionId = os?.versionId ?? "";
  let release = versionId;
  if (family === "debian") release = text("/etc/debian_version") ?? versionId;
  else if (family === "alpine") release = text("/etc/alpine-release") ?? versionId;
  else if (family === "amazon") {
    const line = text("/etc/system-release");
    const m = line ? /^Amazon Linux (?:release )?(.+)$/.exec(line) : null;
    // "Amazon Linux release 2 (Karoo)" → "2 (Karoo)"; "Amazon Linux AMI release 2018.03" → "AMI release 2018.03".
    if (m) release = line!.startsWith("Amazon Linux release ") ? m[1]! : line!.slice("Amazon Linux ".length);
  } else if (RH_RELEASE_FILE[family]) {
    const line = text(RH_RELEASE_FILE[family]!) ?? text("/etc/redhat-release");
    const m = line ? /\brelease\s+(\S+)/.exec(line) : null;
    if (m) release = m[1]!;
  }
  return { family, release, ...(os?.prettyName ? { prettyName: os.prettyName } : {}) };
}
