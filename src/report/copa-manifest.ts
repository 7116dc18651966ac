import { z } from "zod";
import { SutureError } from "../errors/errors.ts";
import { sniffReportFormat, unsupportedFormatError } from "./detect.ts";
import { parseWith } from "./json.ts";
import { canonicalOsFamily, packageTypeForFamily } from "./os-family.ts";
import {
  assemblePlan,
  type OsFinding,
  type ReportFormat,
  type SkippedFinding,
  splitFixedVersions,
  type UpdatePlan,
} from "./plan.ts";

// Go's encoding/json (what copa uses) leaves absent fields empty; so do we, but a field that is
// present must have the right type, and a package needs a name.
const UpdateV1alpha1 = z.object({
  name: z.string().min(1, "package name is empty"),
  installedVersion: z.string().default(""),
  fixedVersion: z.string().default(""),
  vulnerabilityID: z.string().default(""),
});

const UpdateV1alpha2 = UpdateV1alpha1.extend({
  type: z.string().default(""),
  class: z.string().default(""),
});

const OsSchema = z.object({ type: z.string().default(""), version: z.string().default("") });

const ManifestV1alpha1 = z.object({
  apiVersion: z.literal("v1alpha1"),
  metadata: z
    .object({ os: OsSchema.optional(), config: z.object({ arch: z.string().default("") }).optional() })
    .optional(),
  updates: z.array(UpdateV1alpha1).nullish(),
});

const ManifestV1alpha2 = z.object({
  apiVersion: z.literal("v1alpha2"),
  metadata: z
    .object({
      os: OsSchema.optional(),
      config: z.object({ arch: z.string().default(""), variant: z.string().default("") }).optional(),
    })
    .optional(),
  osupdates: z.array(UpdateV1alpha2).nullish(),
  langupdates: z.array(UpdateV1alpha2).nullish(),
});

/**
 * Read a copa UpdateManifest (`--scanner native`, or a scanner plugin's output). Dispatches on
 * `apiVersion` exactly like copa: "v1alpha1" or "v1alpha2", anything else (including a missing
 * apiVersion, as in copa's frontend fixtures) is rejected. v1alpha2 `langupdates` are listed as
 * skipped `language-package`. `origin` names the plan's source when a plugin produced it.
 */
export function parseUpdateManifest(doc: unknown, file: string, origin?: `plugin:${string}`): UpdatePlan {
  const what = origin
    ? `copa UpdateManifest (output of ${origin.replace("plugin:", "copa-")})`
    : "copa UpdateManifest";
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new SutureError("INVALID_REPORT", `${file} is not a ${what}: expected a JSON object`);
  }
  const apiVersion = (doc as { apiVersion?: unknown }).apiVersion;
  if (apiVersion === undefined) {
    // `--scanner native` given some other scanner's report: say which --scanner reads it.
    const sniffed = sniffReportFormat(doc);
    if (!origin && sniffed !== "copa-manifest" && sniffed !== "unknown") {
      throw unsupportedFormatError(file, sniffed, "copa UpdateManifest");
    }
    throw new SutureError(
      "INVALID_REPORT",
      `${file} is not a ${what}: $.apiVersion is missing; set "apiVersion" to "v1alpha1" or "v1alpha2"`,
    );
  }
  if (apiVersion !== "v1alpha1" && apiVersion !== "v1alpha2") {
    throw new SutureError(
      "INVALID_REPORT",
      `${file}: unsupported UpdateManifest apiVersion ${JSON.stringify(apiVersion)}; supported: "v1alpha1", "v1alpha2"`,
    );
  }

  if (apiVersion === "v1alpha1") {
    const m = parseWith(ManifestV1alpha1, doc, file, `${what} v1alpha1`);
    const family = m.metadata?.os?.type ? canonicalOsFamily(m.metadata.os.type) : "";
    return build(
      origin ?? "copa-v1alpha1",
      file,
      m.metadata?.os,
      m.metadata?.config?.arch,
      undefined,
      "updates",
      (m.updates ?? []).map((u) => ({ ...u, type: family, class: "os-pkgs" })),
      [],
    );
  }
  const m = parseWith(ManifestV1alpha2, doc, file, `${what} v1alpha2`);
  return build(
    origin ?? "copa-v1alpha2",
    file,
    m.metadata?.os,
    m.metadata?.config?.arch,
    m.metadata?.config?.variant,
    "osupdates",
    m.osupdates ?? [],
    m.langupdates ?? [],
  );
}

type Entry = z.infer<typeof UpdateV1alpha2>;

function build(
  format: ReportFormat,
  file: string,
  os: { type: string; version: string } | undefined,
  arch: string | undefined,
  variant: string | undefined,
  /** The manifest's key for its OS updates (`updates` in v1alpha1), for messages. */
  osKey: string,
  osUpdates: Entry[],
  langUpdates: Entry[],
): UpdatePlan {
  const family = os?.type ? canonicalOsFamily(os.type) : undefined;
  const osFindings: OsFinding[] = osUpdates.map((u, i) => {
    const type = u.type || family || "";
    const packageType = packageTypeForFamily(family) ?? packageTypeForFamily(canonicalOsFamily(type));
    return {
      entry: `$.${osKey}[${i}]`,
      name: u.name,
      installedVersion: u.installedVersion,
      fixedVersions: splitFixedVersions(u.fixedVersion),
      vulnerabilityId: u.vulnerabilityID,
      type,
      ...(packageType ? { packageType } : {}),
    };
  });
  const skipped: SkippedFinding[] = langUpdates.map((u) => ({
    name: u.name,
    installedVersion: u.installedVersion,
    vulnerabilityId: u.vulnerabilityID,
    reason: "language-package",
    ...(u.fixedVersion ? { fixedVersion: u.fixedVersion } : {}),
    ...(u.type ? { type: u.type } : {}),
    class: u.class || "lang-pkgs",
  }));
  return assemblePlan(
    {
      source: { format, file },
      ...(family ? { os: { family, version: os?.version ?? "" } } : {}),
      ...(arch ? { arch } : {}),
      ...(variant ? { variant } : {}),
    },
    osFindings,
    skipped,
  );
}
