/**
 * Vulnerability IDs named in a package's changelog text (Debian's changelog.Debian, RPM's
 * %changelog): every `CVE-YYYY-NNNN…` mention, sorted and unique. Only CVE IDs: other schemes
 * (DSA, DLA, RHSA, bug numbers) name advisories or bugs, not vulnerabilities a scanner matches.
 * The ID must stand alone (`xCVE-…` or `CVE-2024-12345a` is not one), so a mention glued to other
 * text cannot yield an ID nobody wrote.
 */
export function cveIdsIn(text: string): string[] {
  const ids = new Set<string>();
  for (const m of text.matchAll(/(?<![A-Za-z0-9-])CVE-(\d{4})-(\d{4,7})(?![A-Za-z0-9])/g)) {
    ids.add(`CVE-${m[1]}-${m[2]}`);
  }
  return [...ids].sort(compareCveIds);
}

/** CVE IDs in numeric order (year, then number), so `CVE-2024-9999` sorts before `CVE-2024-10000`. */
export function compareCveIds(a: string, b: string): number {
  const [, ya = "", na = ""] = a.split("-");
  const [, yb = "", nb = ""] = b.split("-");
  return Number(ya) - Number(yb) || Number(na) - Number(nb) || (a < b ? -1 : a > b ? 1 : 0);
}

/** Where the IDs a package fixes were read, as the VEX's status notes name it. */
export type FixSource = "debian-changelog" | "rpm-changelog" | "alpine-secfixes";
