import type { OsRelease } from "../distro/os-release.ts";
import { SutureError } from "../errors/errors.ts";
import { canonicalOsFamily } from "./os-family.ts";
import type { UpdatePlan } from "./plan.ts";

/** What the image being patched is, as found in its files and config. */
export interface ImageIdentity {
  /** How to name the image in messages. */
  name: string;
  osRelease?: OsRelease;
  /** Installed packages by name → version (the image's package database). */
  installed?: ReadonlyMap<string, string>;
  architecture: string;
  variant?: string;
}

/**
 * Check that a report describes this image before its plan is used. A report of another OS or
 * release filters down to "nothing installed needs this", which would read as "up to date": so a
 * different OS family, release or architecture is refused (INVALID_REPORT, naming both sides).
 * Installed versions that differ from the image's only make the report stale, not wrong: they
 * come back as one warning (the image's own versions are what the patch goes by).
 */
export function checkReportMatchesImage(plan: UpdatePlan, image: ImageIdentity): string[] {
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
  if (plan.arch && plan.arch !== image.architecture) {
    const reportPlatform = [plan.arch, plan.variant].filter(Boolean).join("/");
    const imagePlatform = [image.architecture, image.variant].filter(Boolean).join("/");
    throw new SutureError(
      "INVALID_REPORT",
      `report ${file} is for linux/${reportPlatform}, image ${image.name} is linux/${imagePlatform}: ${fix}`,
    );
  }
  const warnings: string[] = [];
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

/**
 * Whether a report's release string names the image's release. Scanners write more or less of the
 * version than os-release's VERSION_ID (Trivy reads /etc/debian_version: "10.1" for Debian 10,
 * Alpine's "3.10.2" for VERSION_ID 3.10.2, "trixie/sid" on testing), so releases are compared at
 * the granularity the distribution numbers them: Debian by its major number, the others by
 * major.minor (or fewer, when one side has fewer); a release given by codename matches the image's
 * codename. An empty side matches.
 */
function sameRelease(family: string, reportVersion: string, os: OsRelease): boolean {
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
