import { checkReportedPackage } from "../distro/package-syntax.ts";
import { SutureError } from "../errors/errors.ts";
import { type PackageType, versionSchemeFor } from "./versions.ts";

/** Where a plan came from: the report's format and the file it was read from. */
export type ReportFormat = "trivy" | "grype" | "copa-v1alpha1" | "copa-v1alpha2" | `plugin:${string}`;

/**
 * Why a finding is not part of the update set.
 * - `no-fix`: the report names no fixed version (or the scanner says it will not be fixed).
 * - `language-package`: an application dependency (pip, npm, Go, …); suture patches OS packages.
 * - `unsupported-package-type`: an OS-level artifact no package manager owns (binary, kernel).
 * - `invalid-version`: the installed or fixed version is not valid for the package format.
 * - `not-installed`: the image does not have the package (filterPlanByInstalled).
 * - `already-fixed`: the installed version is already at or past the fix.
 */
export type SkipReason =
  | "no-fix"
  | "language-package"
  | "unsupported-package-type"
  | "invalid-version"
  | "not-installed"
  | "already-fixed";

/** One OS package to update, merged from every finding against it. */
export interface PlannedUpdate {
  name: string;
  /** The lowest installed version any finding reported (or, after filtering, the image's own). */
  installedVersion: string;
  /** The version that fixes every listed vulnerability: the highest any single finding needs. */
  fixedVersion: string;
  /** Vulnerability IDs this update fixes, sorted and unique. */
  vulnerabilities: string[];
  /** The distro the scanner matched against (Trivy `Result.Type`, e.g. "debian"). */
  type: string;
  class: "os-pkgs";
  /** Package format: selects the version order and the VEX purl type. Absent when unknown. */
  packageType?: PackageType;
  /** The scanner's own purl for the installed package, when the report carried one. */
  purl?: string;
}

/** One finding (vulnerability × package) that produces no update, and why. */
export interface SkippedFinding {
  name: string;
  installedVersion: string;
  vulnerabilityId: string;
  reason: SkipReason;
  fixedVersion?: string;
  type?: string;
  class?: string;
  /** For language packages: where the scanner found it (Trivy `PkgPath`). */
  pkgPath?: string;
}

/**
 * A scanner report reduced to what patching needs. `findings` is the number of findings
 * (vulnerability × package entries) the report lists for OS and language packages; as parsed,
 * it equals the findings merged into `updates` plus `skipped.length`. Filtering keeps it.
 */
export interface UpdatePlan {
  source: { format: ReportFormat; file: string };
  /** The image the scanner says it scanned, when the report names it (see ReportedImage). */
  image?: ReportedImage;
  /** copa's canonical family name (see canonicalOsFamily) and the report's version string. */
  os?: { family: string; version: string; eosl?: boolean };
  /** OCI architecture of the scanned image (amd64, arm64, arm, …). */
  arch?: string;
  variant?: string;
  /** Sorted by package name. */
  updates: PlannedUpdate[];
  /** Sorted by package name, then vulnerability ID. */
  skipped: SkippedFinding[];
  findings: number;
}

/**
 * What a report says about the image it was made for. `configDigest` (Trivy `Metadata.ImageID`,
 * Grype `source.target.imageID`) is the digest of the image config: it stays the same whichever
 * transport the image is read from. Manifest digests change with conversion (schema 2 → OCI) and
 * re-pushes; the name is what the user typed to the scanner. Only well-formed digests are kept.
 */
export interface ReportedImage {
  configDigest?: string;
  manifestDigests?: string[];
  name?: string;
}

const DIGEST = /^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

/**
 * The ReportedImage of a report's raw fields, or undefined when it names nothing usable. Digests
 * that are not `sha256:<64 hex>` (or sha512) are dropped rather than refused: they are only ever
 * compared, and a scanner writing something else there (an SBOM input's ID) is not a damaged report.
 * A manifest digest may come as `repo@sha256:…` (Trivy RepoDigests).
 */
export function reportedImage(fields: {
  configDigest?: unknown;
  manifestDigests?: readonly unknown[];
  name?: unknown;
}): ReportedImage | undefined {
  const digest = (v: unknown) => {
    if (typeof v !== "string") return undefined;
    const d = v.slice(v.lastIndexOf("@") + 1).toLowerCase();
    return DIGEST.test(d) ? d : undefined;
  };
  const configDigest = digest(fields.configDigest);
  const manifestDigests = [
    ...new Set((fields.manifestDigests ?? []).map(digest).filter((d) => d !== undefined)),
  ];
  const name = typeof fields.name === "string" && fields.name.trim() !== "" ? fields.name.trim() : undefined;
  if (!configDigest && manifestDigests.length === 0 && !name) return undefined;
  return {
    ...(configDigest ? { configDigest } : {}),
    ...(manifestDigests.length ? { manifestDigests } : {}),
    ...(name ? { name } : {}),
  };
}

/** One OS-package finding as a parser extracted it, before fix selection. */
export interface OsFinding {
  name: string;
  installedVersion: string;
  /** Every fixed-version candidate the report gives (comma lists already split); may be empty. */
  fixedVersions: string[];
  vulnerabilityId: string;
  type: string;
  packageType?: PackageType;
  purl?: string;
  /**
   * Where the finding sits in the report, as a JSON path (`$.Results[0].Vulnerabilities[3]`), for
   * messages; without it a message counts findings from 1.
   */
  entry?: string;
}

/** Split a fixed-version field such as Trivy's "1.2.3-1, 1.2.4-1" into trimmed candidates. */
export function splitFixedVersions(field: string | undefined | null): string[] {
  if (!field) return [];
  return field
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

type Choice = { version: string } | { skip: SkipReason };

/**
 * The version that fixes one finding: the lowest candidate above the installed version (a
 * comma list names fixes on several release lines; the next one up is the line the package is
 * on). A candidate equal to the installed version means the package is already fixed.
 */
export function chooseFixedVersion(
  installed: string,
  candidates: readonly string[],
  packageType: PackageType | undefined,
): Choice {
  if (candidates.length === 0) return { skip: "no-fix" };
  const scheme = versionSchemeFor(packageType);
  if (candidates.some((c) => !scheme.isValid(c))) return { skip: "invalid-version" };
  const sorted = [...candidates].sort(scheme.compare);
  // A report without the installed version (copa manifests allow it) cannot rule any fix out.
  if (installed === "") return { version: sorted[0]! };
  if (!scheme.isValid(installed)) return { skip: "invalid-version" };
  if (sorted.some((c) => scheme.compare(c, installed) === 0)) return { skip: "already-fixed" };
  const above = sorted.find((c) => scheme.compare(c, installed) > 0);
  return above === undefined ? { skip: "already-fixed" } : { version: above };
}

/** OCI architecture and variant values (amd64, arm64, 386, ppc64le; v7, v8). */
const ARCHITECTURE = /^[a-z0-9_]{1,32}$/;
const VARIANT = /^[a-z0-9]{1,16}$/;

/**
 * Refuse a report whose OS-package entries or platform could smuggle anything into a command
 * line, a file name or a table: every OS finding's name and versions must follow its format's
 * syntax (distro/package-syntax.ts), the architecture and variant OCI's. One bad entry refuses
 * the whole report: a report that lies about one package cannot be trusted about the others.
 * Language packages are only listed as skipped, never acted on, so they are not checked here.
 */
function checkReportEntries(
  header: Pick<UpdatePlan, "source" | "arch" | "variant">,
  osFindings: readonly OsFinding[],
): void {
  const { format, file } = header.source;
  const plugin = format.startsWith("plugin:") ? `copa-${format.slice("plugin:".length)}` : undefined;
  const report = plugin ? `the UpdateManifest ${plugin} made of ${file}` : file;
  const fix = plugin
    ? `the plugin ${plugin} wrote a damaged UpdateManifest; fix the plugin`
    : "the report is damaged or was not written by a scanner; scan the image again";
  for (const [field, value, rule] of [
    ["architecture", header.arch, ARCHITECTURE],
    ["variant", header.variant, VARIANT],
  ] as const) {
    if (value !== undefined && !rule.test(value)) {
      throw new SutureError(
        "INVALID_REPORT",
        `${report} names the image ${field} ${JSON.stringify(value.slice(0, 40))}, which is not an OCI ${field} (${rule.source}); ${fix}`,
      );
    }
  }
  osFindings.forEach((f, i) => {
    const versions = f.installedVersion === "" ? f.fixedVersions : [f.installedVersion, ...f.fixedVersions];
    const where = `${report}: ${f.entry ?? `finding ${i + 1}`}`;
    checkReportedPackage(f.packageType, { name: f.name, versions }, where, fix);
  });
}

/**
 * Turn extracted findings into a plan: check every entry (checkReportEntries), choose each
 * finding's fix, then merge per package name keeping the highest fix and the lowest installed
 * version.
 */
export function assemblePlan(
  header: Pick<UpdatePlan, "source" | "image" | "os" | "arch" | "variant">,
  osFindings: readonly OsFinding[],
  otherSkipped: readonly SkippedFinding[],
): UpdatePlan {
  checkReportEntries(header, osFindings);
  const skipped: SkippedFinding[] = [...otherSkipped];
  const byName = new Map<string, PlannedUpdate & { ids: Set<string> }>();
  for (const f of osFindings) {
    const choice = chooseFixedVersion(f.installedVersion, f.fixedVersions, f.packageType);
    if ("skip" in choice) {
      skipped.push({
        name: f.name,
        installedVersion: f.installedVersion,
        vulnerabilityId: f.vulnerabilityId,
        reason: choice.skip,
        ...(f.fixedVersions.length ? { fixedVersion: f.fixedVersions.join(", ") } : {}),
        type: f.type,
        class: "os-pkgs",
      });
      continue;
    }
    const scheme = versionSchemeFor(f.packageType);
    const existing = byName.get(f.name);
    if (!existing) {
      byName.set(f.name, {
        name: f.name,
        installedVersion: f.installedVersion,
        fixedVersion: choice.version,
        vulnerabilities: [],
        type: f.type,
        class: "os-pkgs",
        ...(f.packageType ? { packageType: f.packageType } : {}),
        ...(f.purl ? { purl: f.purl } : {}),
        ids: new Set([f.vulnerabilityId]),
      });
      continue;
    }
    existing.ids.add(f.vulnerabilityId);
    if (scheme.compare(choice.version, existing.fixedVersion) > 0) existing.fixedVersion = choice.version;
    if (
      f.installedVersion !== "" &&
      (existing.installedVersion === "" || scheme.compare(f.installedVersion, existing.installedVersion) < 0)
    ) {
      existing.installedVersion = f.installedVersion;
      if (f.purl) existing.purl = f.purl;
    }
  }
  const updates = [...byName.values()]
    .map(({ ids, ...u }) => ({ ...u, vulnerabilities: [...ids].filter((id) => id !== "").sort() }))
    .sort((a, b) => compareText(a.name, b.name));
  return {
    ...header,
    updates,
    skipped: sortSkipped(skipped),
    findings: osFindings.length + otherSkipped.length,
  };
}

/**
 * Restrict a plan to what the image really has: updates for packages that are not installed
 * become `not-installed`, those whose installed version already reaches the fix become
 * `already-fixed` (one skipped entry per vulnerability), and the rest take the image's
 * installed version (the report may be older than the image). Returns a new plan.
 */
export function filterPlanByInstalled(plan: UpdatePlan, installed: ReadonlyMap<string, string>): UpdatePlan {
  const updates: PlannedUpdate[] = [];
  const skipped = [...plan.skipped];
  const skip = (u: PlannedUpdate, reason: SkipReason, installedVersion: string) => {
    for (const id of u.vulnerabilities.length ? u.vulnerabilities : [""]) {
      skipped.push({
        name: u.name,
        installedVersion,
        vulnerabilityId: id,
        reason,
        fixedVersion: u.fixedVersion,
        type: u.type,
        class: u.class,
      });
    }
  };
  for (const u of plan.updates) {
    const have = installed.get(u.name);
    if (have === undefined) {
      skip(u, "not-installed", u.installedVersion);
      continue;
    }
    const scheme = versionSchemeFor(u.packageType);
    if (!scheme.isValid(have)) {
      skip(u, "invalid-version", have);
      continue;
    }
    if (scheme.compare(have, u.fixedVersion) >= 0) {
      skip(u, "already-fixed", have);
      continue;
    }
    updates.push(have === u.installedVersion ? u : { ...u, installedVersion: have, purl: undefined });
  }
  return { ...plan, updates: updates.map(dropUndefined), skipped: sortSkipped(skipped) };
}

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortSkipped(list: SkippedFinding[]): SkippedFinding[] {
  return list.sort(
    (a, b) => compareText(a.name, b.name) || compareText(a.vulnerabilityId, b.vulnerabilityId),
  );
}
