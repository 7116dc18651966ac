import { z } from "zod";
import { sniffReportFormat, unsupportedFormatError } from "./detect.ts";
import { parseWith } from "./json.ts";
import { canonicalOsFamily, packageTypeForFamily } from "./os-family.ts";
import {
  assemblePlan,
  type OsFinding,
  reportedImage,
  type SkippedFinding,
  splitFixedVersions,
  type UpdatePlan,
} from "./plan.ts";

// Only the fields suture reads; everything else Trivy writes is tolerated and dropped.
const VulnerabilitySchema = z.object({
  VulnerabilityID: z.string(),
  PkgName: z.string(),
  PkgPath: z.string().optional(),
  PkgIdentifier: z.object({ PURL: z.string().optional() }).nullish(),
  InstalledVersion: z.string().optional(),
  FixedVersion: z.string().optional(),
});

const ResultSchema = z.object({
  Target: z.string(),
  Class: z.string().optional(),
  Type: z.string().optional(),
  Vulnerabilities: z.array(VulnerabilitySchema).nullish(),
});

const TrivyReportSchema = z.object({
  SchemaVersion: z.literal(2),
  ArtifactName: z.string().optional(),
  Metadata: z
    .object({
      ImageID: z.string().optional(),
      RepoDigests: z.array(z.string()).nullish(),
      OS: z
        .object({ Family: z.string(), Name: z.string().optional(), EOSL: z.boolean().optional() })
        .nullish(),
      ImageConfig: z
        .object({ architecture: z.string().optional(), variant: z.string().optional() })
        .nullish(),
    })
    .nullish(),
  Results: z.array(ResultSchema).nullish(),
});

export type TrivyReport = z.infer<typeof TrivyReportSchema>;

/**
 * Read a Trivy JSON report (SchemaVersion 2) into a plan. OS-package findings (`Class` os-pkgs)
 * become updates or `no-fix` skips; language-package findings (`lang-pkgs`) are skipped as
 * `language-package`; other result classes (secrets, misconfigurations, licenses) carry no
 * package vulnerabilities and are ignored. When the report lacks `Metadata.OS` (seen for some
 * images), the OS is taken from the os-pkgs result's Type and Target "(family version)".
 */
export function parseTrivyReport(doc: unknown, file: string): UpdatePlan {
  const sniffed = sniffReportFormat(doc);
  if (sniffed !== "trivy") throw unsupportedFormatError(file, sniffed, "Trivy");
  const version = (doc as { SchemaVersion?: unknown }).SchemaVersion;
  if (typeof version === "number" && version !== 2) {
    throw unsupportedFormatError(file, version < 2 ? "trivy-legacy" : "unknown", "Trivy SchemaVersion 2");
  }
  const report = parseWith(TrivyReportSchema, doc, file, "Trivy JSON report (SchemaVersion 2)");
  const results = report.Results ?? [];
  const osResult = results.find((r) => isOsResult(r));

  let os: UpdatePlan["os"];
  if (report.Metadata?.OS) {
    const o = report.Metadata.OS;
    os = { family: canonicalOsFamily(o.Family), version: o.Name ?? "", ...(o.EOSL ? { eosl: true } : {}) };
  } else if (osResult?.Type) {
    const fromTarget = /\(([^()\s]+) ([^()\s]+)\)$/.exec(osResult.Target);
    os = { family: canonicalOsFamily(osResult.Type), version: fromTarget?.[2] ?? "" };
  }

  const osFindings: OsFinding[] = [];
  const skipped: SkippedFinding[] = [];
  for (const [r, result] of results.entries()) {
    const vulns = result.Vulnerabilities ?? [];
    if (isOsResult(result)) {
      const type = result.Type ?? os?.family ?? "";
      const packageType = packageTypeForFamily(canonicalOsFamily(type)) ?? packageTypeForFamily(os?.family);
      for (const [i, v] of vulns.entries()) {
        osFindings.push({
          entry: `$.Results[${r}].Vulnerabilities[${i}]`,
          name: v.PkgName,
          installedVersion: v.InstalledVersion ?? "",
          fixedVersions: splitFixedVersions(v.FixedVersion),
          vulnerabilityId: v.VulnerabilityID,
          type,
          ...(packageType ? { packageType } : {}),
          ...(v.PkgIdentifier?.PURL ? { purl: v.PkgIdentifier.PURL } : {}),
        });
      }
    } else if (result.Class === "lang-pkgs") {
      for (const v of vulns) {
        skipped.push({
          name: v.PkgName,
          installedVersion: v.InstalledVersion ?? "",
          vulnerabilityId: v.VulnerabilityID,
          reason: "language-package",
          ...(v.FixedVersion ? { fixedVersion: v.FixedVersion } : {}),
          ...(result.Type ? { type: result.Type } : {}),
          class: "lang-pkgs",
          pkgPath: v.PkgPath || result.Target,
        });
      }
    }
  }

  const config = report.Metadata?.ImageConfig;
  const image = reportedImage({
    configDigest: report.Metadata?.ImageID,
    manifestDigests: report.Metadata?.RepoDigests ?? [],
    name: report.ArtifactName,
  });
  return assemblePlan(
    {
      source: { format: "trivy", file },
      ...(image ? { image } : {}),
      ...(os ? { os } : {}),
      ...(config?.architecture ? { arch: config.architecture } : {}),
      ...(config?.variant ? { variant: config.variant } : {}),
    },
    osFindings,
    skipped,
  );
}

function isOsResult(r: z.infer<typeof ResultSchema>): boolean {
  if (r.Class) return r.Class === "os-pkgs";
  // Reports from before Trivy had Class: an OS result's Type is the OS family.
  return r.Type !== undefined && packageTypeForFamily(canonicalOsFamily(r.Type)) !== undefined;
}
