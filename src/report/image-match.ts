import type { DistroInfo } from "../distro/detect.ts";
import type { OsRelease } from "../distro/os-release.ts";
import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import { parseReference } from "../ref/reference.ts";
import { canonicalOsFamily } from "./os-family.ts";
import type { UpdatePlan } from "./plan.ts";
import type { PackageType } from "./versions.ts";

/** What the image being patched is, as found in its files and config. */
export interface ImageIdentity {
  /** How to name the image in messages. */
  name: string;
  osRelease?: OsRelease;
  /** The image's package database format, as detected (what its packages' versions are). */
  packageDb?: DistroInfo["packageDb"];
  /** Installed packages by name → version (the image's package database). */
  installed?: ReadonlyMap<string, string>;
  architecture: string;
  variant?: string;
  /** What identifies the image itself, for reports that name the image they were made for. */
  digests?: ImageDigests;
  /** The registry repository the image was read from (`library/nginx`); absent for files and layouts. */
  repository?: string;
}

/** The digests a report naming its image is compared with. */
export interface ImageDigests {
  /** The digest of the image's config as read (the same through every transport). */
  config: string;
  /** The digest of its manifest as read. */
  manifest: string;
  /**
   * Other digests that name this image where it was read: the index it was selected from, the
   * Docker daemon's image ID (with the containerd image store, what Trivy reports as ImageID).
   */
  aliases?: readonly string[];
  /**
   * Set for an image carrying a suture patch layer: the config digest of the image before suture
   * first patched it, or null when that was not recorded (images patched by older versions).
   */
  original?: string | null;
}

export interface ReportMatchOptions {
  /** `--ignore-report-image`: a report naming another image is used anyway (with a warning). */
  ignoreReportImage?: boolean;
}

/**
 * Check that a report describes this image before its plan is used. A report of another OS or
 * release filters down to "nothing installed needs this", which would read as "up to date": so a
 * different OS family, release or architecture is refused (INVALID_REPORT, naming both sides).
 * A report naming the image it scanned by config digest must name this one (see checkReportImage).
 * Installed versions that differ from the image's only make the report stale, not wrong: they
 * come back as one warning (the image's own versions are what the patch goes by).
 */
export function checkReportMatchesImage(
  plan: UpdatePlan,
  image: ImageIdentity,
  options: ReportMatchOptions = {},
): string[] {
  const file = plan.source.file;
  const fix = `scan ${image.name} and pass that report`;
  const os = image.osRelease;
  if (plan.os && os) {
    const reportFamily = canonicalOsFamily(plan.os.family);
    const imageFamily = canonicalOsFamily(os.id);
    const imageRelease = os.versionId ?? os.versionCodename ?? "";
    const imageSays = `${imageFamily}${imageRelease ? ` ${imageRelease}` : ""}`;
    const reportSays = `${reportFamily}${plan.os.version ? ` ${plan.os.version}` : ""}`;
    const sameFamily =
      reportFamily === imageFamily || os.idLike.some((like) => canonicalOsFamily(like) === reportFamily);
    if (!sameFamily || !sameRelease(reportFamily, plan.os.version, os)) {
      throw new SutureError(
        "INVALID_REPORT",
        `report ${file} is for ${reportSays}, image ${image.name} is ${imageSays}: ${fix}`,
      );
    }
  }
  checkPackageFormat(plan, image, fix);
  if (plan.arch && plan.arch !== image.architecture) {
    const reportPlatform = [plan.arch, plan.variant].filter(Boolean).join("/");
    const imagePlatform = [image.architecture, image.variant].filter(Boolean).join("/");
    throw new SutureError(
      "INVALID_REPORT",
      `report ${file} is for linux/${reportPlatform}, image ${image.name} is linux/${imagePlatform}: ${fix}`,
    );
  }
  const warnings = checkReportImage(plan, image, options);
  if (image.installed) {
    const differ = plan.updates.filter((u) => {
      const have = image.installed!.get(u.name);
      return u.installedVersion !== "" && have !== undefined && have !== u.installedVersion;
    });
    if (differ.length) {
      const shown = differ
        .slice(0, 3)
        .map(
          (u) => `${u.name} ${u.installedVersion} in the report, ${image.installed!.get(u.name)} installed`,
        )
        .join("; ");
      warnings.push(
        `report ${file} lists other installed versions than the image has for ${differ.length} ${differ.length === 1 ? "package" : "packages"} (${shown}${differ.length > 3 ? "; …" : ""}): it was made for another build of this image; the installed versions are used`,
      );
    }
  }
  return warnings;
}

/** The package format of a detected package database. */
const DB_FORMAT: Partial<Record<DistroInfo["packageDb"], PackageType>> = {
  dpkg: "deb",
  "dpkg-status.d": "deb",
  apk: "apk",
  rpm: "rpm",
};

/**
 * A report's packages must be of the image's package format. The OS check above catches this
 * when both name an OS; an image with no os-release (distroless apk or Debian images) names none,
 * and a Debian report on it would compare deb versions against apk's database.
 */
function checkPackageFormat(plan: UpdatePlan, image: ImageIdentity, fix: string): void {
  const imageFormat = image.packageDb ? DB_FORMAT[image.packageDb] : undefined;
  if (!imageFormat) return;
  const other = plan.updates.find((u) => u.packageType !== undefined && u.packageType !== imageFormat);
  if (!other) return;
  throw new SutureError(
    "INVALID_REPORT",
    `report ${plan.source.file} lists ${other.packageType} packages (${other.name}), image ${image.name} has ${imageFormat} packages (${image.packageDb} database): ${fix}`,
  );
}

/**
 * The report's own account of which image it scanned, against the image. The config digest is the
 * reliable identity: a report naming another config was made for another image (or another build
 * of it) and is refused, unless the user says to use it anyway. A patched image also answers to the
 * config it had before suture patched it (the usual report is of the unpatched image); when that
 * was not recorded, the check cannot be made and says so. Digests that name the image where it was
 * read (its manifest, the index, the daemon's image ID) confirm too. A manifest digest the report
 * names only ever confirms: conversion to OCI and registries change it. Names differ for many good reasons (mirrors, tags,
 * digests, file paths), so a clearly different repository is only a warning.
 */
function checkReportImage(plan: UpdatePlan, image: ImageIdentity, options: ReportMatchOptions): string[] {
  const reported = plan.image;
  const digests = image.digests;
  if (!reported || !digests) return [];
  const file = plan.source.file;
  const wanted = reported.configDigest;
  const confirmed =
    (wanted !== undefined &&
      (wanted === digests.config ||
        wanted === digests.original ||
        wanted === digests.manifest ||
        (digests.aliases ?? []).includes(wanted))) ||
    (reported.manifestDigests ?? []).includes(digests.manifest);
  if (confirmed) return [];
  if (wanted !== undefined) {
    const ours =
      typeof digests.original === "string"
        ? `config ${digests.config}, before suture patched it ${digests.original}`
        : `config ${digests.config}`;
    if (digests.original === null) {
      return [
        `report ${file} was made for image ${wanted} (config), not for ${image.name} as it is now (${ours}): it may be the report of the image before suture patched it, whose config this image does not record, so which image it was made for is not checked`,
      ];
    }
    const message = `report ${file} was made for image ${wanted} (config), not for ${image.name} (${ours})`;
    if (options.ignoreReportImage) return [`${message}: used anyway (--ignore-report-image)`];
    throw new SutureError(
      "INVALID_REPORT",
      `${message}: scan ${image.name} and pass that report, or pass --ignore-report-image to use it anyway`,
    );
  }
  const theirs = reported.name === undefined ? undefined : repositoryName(reported.name);
  const ours = image.repository === undefined ? undefined : lastComponent(image.repository);
  if (theirs !== undefined && ours !== undefined && theirs !== ours) {
    return [
      `report ${file} names the image ${quoteUntrusted(reported.name!)}, and ${image.name} is another repository (${ours}): check that the report is of this image`,
    ];
  }
  return [];
}

/**
 * The last component of the repository a scanner's image name names (`nginx` of
 * `mirror.example/library/nginx:1.25@sha256:…`), or undefined when the name is not a registry
 * reference (a file path or an archive the scanner read).
 */
function repositoryName(name: string): string | undefined {
  const ref = name.replace(/^(?:docker|registry):(?:\/\/)?/, "");
  if (/^[./~]|\.(?:tar|tgz|gz|zst)$/i.test(ref)) return undefined;
  if (/^(?:oci|oci-archive|docker-archive|docker-daemon|dir|containers-storage|podman|file|sbom):/.test(ref))
    return undefined;
  try {
    return lastComponent(parseReference(ref).repository);
  } catch {
    return undefined;
  }
}

function lastComponent(repository: string): string {
  return repository.slice(repository.lastIndexOf("/") + 1);
}

/**
 * Rolling distributions: their VERSION_ID is the date the base layout was cut (Wolfi's 20230201,
 * Chainguard's 20230214), the same for every image, so it names no release a report could be for.
 */
const ROLLING = new Set(["wolfi", "chainguard"]);

/**
 * Whether a report's release string names the image's release. Scanners write more or less of the
 * version than os-release's VERSION_ID (Trivy reads /etc/debian_version: "10.1" for Debian 10,
 * Alpine's "3.10.2" for VERSION_ID 3.10.2, "trixie/sid" on testing), so releases are compared at
 * the granularity the distribution numbers them: Debian by its major number, the others by
 * major.minor (or fewer, when one side has fewer); a release given by codename matches the image's
 * codename. An empty side matches.
 */
function sameRelease(family: string, reportVersion: string, os: OsRelease): boolean {
  if (ROLLING.has(family)) return true;
  const report = reportVersion.trim().toLowerCase();
  const imageVersion = (os.versionId ?? "").trim().toLowerCase();
  const codename = (os.versionCodename ?? "").trim().toLowerCase();
  if (report === "" || (imageVersion === "" && codename === "")) return true;
  if (report === imageVersion) return true;
  const numbers = (v: string) => /^\d+(?:\.\d+)*/.exec(v)?.[0].split(".");
  const reportRelease = numbers(report);
  const imageRelease = numbers(imageVersion);
  if (reportRelease && imageRelease) {
    // As many components as both sides have, at most the release's own (CentOS's VERSION_ID is "7"
    // where Trivy writes "7.9.2009").
    const parts = Math.min(family === "debian" ? 1 : 2, reportRelease.length, imageRelease.length);
    return reportRelease.slice(0, parts).join(".") === imageRelease.slice(0, parts).join(".");
  }
  // A codename on either side ("bookworm", "trixie/sid") against the image's codename.
  if (codename !== "") return report.split(/[/\s]+/).includes(codename);
  return false;
}
