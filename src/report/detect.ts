import { SutureError } from "../errors/errors.ts";

/** What a parsed JSON report looks like, judged from its top-level shape only. */
export type SniffedFormat =
  | "trivy"
  | "trivy-legacy"
  | "grype"
  | "copa-manifest"
  | "sarif"
  | "cyclonedx"
  | "spdx"
  | "unknown";

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function sniffReportFormat(doc: unknown): SniffedFormat {
  if (Array.isArray(doc)) {
    // Trivy before v0.20 printed a bare array of results (no SchemaVersion).
    return doc.length === 0 || (isObject(doc[0]) && "Target" in doc[0]) ? "trivy-legacy" : "unknown";
  }
  if (!isObject(doc)) return "unknown";
  if ("SchemaVersion" in doc || ("ArtifactName" in doc && "Results" in doc)) return "trivy";
  // copa's frontend fixtures are manifests without apiVersion: recognise them so the error says so.
  if ("apiVersion" in doc || ("metadata" in doc && ("updates" in doc || "osupdates" in doc)))
    return "copa-manifest";
  if ("matches" in doc && ("descriptor" in doc || "source" in doc || "distro" in doc)) return "grype";
  // Only a string $schema is looked at: String() of a nested array would recurse through it.
  if (
    "runs" in doc &&
    ((typeof doc.$schema === "string" && doc.$schema.includes("sarif")) || "version" in doc)
  )
    return "sarif";
  if (doc.bomFormat === "CycloneDX") return "cyclonedx";
  if ("spdxVersion" in doc) return "spdx";
  return "unknown";
}

/**
 * The error for a document that is a known format suture does not read (or not the one the
 * user named), with the command that produces something it does read.
 */
export function unsupportedFormatError(file: string, sniffed: SniffedFormat, expected?: string): SutureError {
  const hint: Record<SniffedFormat, string> = {
    sarif: "this is SARIF, which lacks installed versions; run trivy with --format json (or grype -o json)",
    cyclonedx: "this is a CycloneDX document; run trivy with --format json (or grype -o json)",
    spdx: "this is an SPDX SBOM, not a vulnerability report; scan the image with trivy --format json",
    "trivy-legacy":
      "this is Trivy JSON from before SchemaVersion 2 (Trivy < 0.20); re-scan with a current trivy --format json",
    trivy: "this looks like a Trivy report; use --scanner trivy",
    grype: "this looks like a Grype report; use --scanner grype",
    "copa-manifest": "this looks like a copa UpdateManifest; use --scanner native",
    unknown:
      "expected Trivy JSON (trivy --format json), Grype JSON (grype -o json) or a copa UpdateManifest (apiVersion v1alpha1/v1alpha2)",
  };
  const prefix = expected
    ? `${file} is not a ${expected} report`
    : `${file} is not a supported scan report format`;
  return new SutureError("INVALID_REPORT", `${prefix}: ${hint[sniffed]}`);
}
