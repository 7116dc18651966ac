import { z } from "zod";
import { sniffReportFormat, unsupportedFormatError } from "./detect.ts";
import { parseWith } from "./json.ts";
import { canonicalOsFamily } from "./os-family.ts";
import { assemblePlan, type OsFinding, reportedImage, type SkippedFinding, type UpdatePlan } from "./plan.ts";
import type { PackageType } from "./versions.ts";

const MatchSchema = z.object({
  vulnerability: z.object({
    id: z.string(),
    fix: z
      .object({
        versions: z.array(z.string()).nullish(),
        state: z.string().optional(),
      })
      .nullish(),
  }),
  artifact: z.object({
    name: z.string(),
    version: z.string(),
    type: z.string(),
    purl: z.string().optional(),
  }),
});

const GrypeReportSchema = z.object({
  matches: z.array(MatchSchema).nullable(),
  source: z
    .object({
      type: z.string().optional(),
      target: z.unknown().optional(),
    })
    .nullish(),
  distro: z.object({ name: z.string().optional(), version: z.string().optional() }).nullish(),
});

/** Grype artifact types that are OS packages suture can patch. */
const OS_ARTIFACT_TYPES: Record<string, PackageType> = { deb: "deb", rpm: "rpm", apk: "apk" };

/** OS-level artifacts no supported package manager owns: skipped, but not as language packages. */
const NON_LANGUAGE_TYPES = new Set([
  "binary",
  "linux-kernel",
  "linux-kernel-module",
  "alpm",
  "portage",
  "nix",
  "msrc-kb",
]);

/**
 * Read Grype's JSON output (`grype -o json`) into a plan. Each match is a finding against
 * `artifact.name@artifact.version`; `vulnerability.fix.versions` are its fix candidates when
 * `fix.state` is "fixed" (anything else, or no versions, is `no-fix`). Matches of one
 * vulnerability on one package found by several matchers count once. The OS comes from `distro`;
 * the architecture from the image source when Grype recorded it.
 */
export function parseGrypeReport(doc: unknown, file: string): UpdatePlan {
  const sniffed = sniffReportFormat(doc);
  if (sniffed !== "grype") throw unsupportedFormatError(file, sniffed, "Grype");
  const report = parseWith(GrypeReportSchema, doc, file, "Grype JSON report");
  const family = report.distro?.name ? canonicalOsFamily(report.distro.name) : undefined;
  const os = family ? { family, version: report.distro?.version ?? "" } : undefined;

  const seen = new Set<string>();
  const osFindings: OsFinding[] = [];
  const skipped: SkippedFinding[] = [];
  for (const [i, m] of (report.matches ?? []).entries()) {
    const { artifact, vulnerability } = m;
    const key = [artifact.type, artifact.name, artifact.version, vulnerability.id].join("\0");
    if (seen.has(key)) continue;
    seen.add(key);
    const fixed = vulnerability.fix?.state === "fixed" ? (vulnerability.fix.versions ?? []) : [];
    // Own keys only: an artifact type "__proto__" must not find Object.prototype.
    const packageType = Object.hasOwn(OS_ARTIFACT_TYPES, artifact.type)
      ? OS_ARTIFACT_TYPES[artifact.type]
      : undefined;
    if (packageType) {
      osFindings.push({
        entry: `$.matches[${i}]`,
        name: artifact.name,
        installedVersion: artifact.version,
        fixedVersions: fixed.map((v) => v.trim()).filter((v) => v !== ""),
        vulnerabilityId: vulnerability.id,
        type: family ?? artifact.type,
        packageType,
        ...(artifact.purl ? { purl: artifact.purl } : {}),
      });
    } else {
      const language = !NON_LANGUAGE_TYPES.has(artifact.type);
      skipped.push({
        name: artifact.name,
        installedVersion: artifact.version,
        vulnerabilityId: vulnerability.id,
        reason: language ? "language-package" : "unsupported-package-type",
        ...(fixed.length ? { fixedVersion: fixed.join(", ") } : {}),
        type: artifact.type,
        ...(language ? { class: "lang-pkgs" } : {}),
      });
    }
  }

  const target = report.source?.target;
  const fields = (typeof target === "object" && target !== null ? target : {}) as Record<string, unknown>;
  const arch = typeof fields.architecture === "string" ? fields.architecture : "";
  // Only an image source names an image (a directory or SBOM source's target is something else).
  const image =
    report.source?.type === "image"
      ? reportedImage({
          configDigest: fields.imageID,
          manifestDigests: [
            fields.manifestDigest,
            ...(Array.isArray(fields.repoDigests) ? fields.repoDigests : []),
          ],
          name: fields.userInput,
        })
      : undefined;
  return assemblePlan(
    {
      source: { format: "grype", file },
      ...(image ? { image } : {}),
      ...(os ? { os } : {}),
      ...(arch ? { arch } : {}),
    },
    osFindings,
    skipped,
  );
}
