import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { asSutureError, SutureError } from "../errors/errors.ts";
import { parseUpdateManifest } from "./copa-manifest.ts";
import { sniffReportFormat, unsupportedFormatError } from "./detect.ts";
import { parseGrypeReport } from "./grype.ts";
import { parseReportJson } from "./json.ts";
import { DEFAULT_MAX_REPORT_BYTES, readReportFile } from "./limits.ts";
import type { UpdatePlan } from "./plan.ts";
import { PLUGIN_NAME_PATTERN, type RunPluginOptions, runScannerPlugin } from "./plugin.ts";
import { parseTrivyReport } from "./trivy.ts";

/** Scanner names with a built-in reader; any other valid name is a `copa-NAME` plugin. */
export const BUILTIN_SCANNERS = ["auto", "trivy", "grype", "native"] as const;
export type BuiltinScanner = (typeof BUILTIN_SCANNERS)[number];

export interface ReadReportOptions extends RunPluginOptions {
  /**
   * `trivy`, `grype`, `native` (a copa UpdateManifest), `auto` (default: recognise any of those
   * from the content), or a plugin name run as `copa-NAME REPORT`. A named built-in format
   * rejects other formats with a hint naming the right --scanner. Note: in copa `-s grype` runs
   * the `copa-grype` plugin; suture reads Grype JSON itself.
   */
  scanner?: string;
}

function isBuiltin(s: string): s is BuiltinScanner {
  return (BUILTIN_SCANNERS as readonly string[]).includes(s);
}

/** Read one report file into a plan (see ReadReportOptions.scanner). */
export async function readReport(file: string, options: ReadReportOptions = {}): Promise<UpdatePlan> {
  const scanner = options.scanner ?? "auto";
  if (!isBuiltin(scanner)) {
    if (!PLUGIN_NAME_PATTERN.test(scanner)) {
      throw new SutureError(
        "USAGE",
        `invalid --scanner ${JSON.stringify(scanner)}: use ${BUILTIN_SCANNERS.join(", ")}, or a plugin name matching ${PLUGIN_NAME_PATTERN.source}`,
      );
    }
    await assertReadableFile(file);
    return runScannerPlugin(scanner, file, options);
  }
  await assertReadableFile(file);
  const bytes = await readReportFile(file, options.maxReportBytes ?? DEFAULT_MAX_REPORT_BYTES);
  return parseReportDocument(parseReportJson(bytes, file), file, scanner);
}

/** Turn an already-parsed JSON document into a plan with a built-in reader. */
export function parseReportDocument(
  doc: unknown,
  file: string,
  scanner: BuiltinScanner = "auto",
): UpdatePlan {
  switch (scanner) {
    case "trivy":
      return parseTrivyReport(doc, file);
    case "grype":
      return parseGrypeReport(doc, file);
    case "native":
      return parseUpdateManifest(doc, file);
    case "auto": {
      const sniffed = sniffReportFormat(doc);
      if (sniffed === "trivy") return parseTrivyReport(doc, file);
      if (sniffed === "grype") return parseGrypeReport(doc, file);
      if (sniffed === "copa-manifest") return parseUpdateManifest(doc, file);
      throw unsupportedFormatError(file, sniffed);
    }
  }
}

/**
 * Read every `*.json` report in a directory (copa's multi-platform `-r DIR`), one plan per file,
 * sorted by file name. Each must name its architecture so the caller can match it to a platform;
 * two reports for the same platform are refused.
 */
export async function readReportDirectory(
  dir: string,
  options: ReadReportOptions = {},
): Promise<UpdatePlan[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith(".json")).sort();
  } catch (e) {
    throw asSutureError(e, "IO", `cannot list report directory ${dir}`);
  }
  if (names.length === 0) throw new SutureError("USAGE", `report directory ${dir} has no *.json reports`);
  const plans: UpdatePlan[] = [];
  const byPlatform = new Map<string, string>();
  for (const name of names) {
    const file = join(dir, name);
    const plan = await readReport(file, options);
    if (!plan.arch) {
      throw new SutureError(
        "INVALID_REPORT",
        `${file} does not say which architecture it scanned, so it cannot be matched to a platform; scan one platform per report (trivy image --platform …)`,
      );
    }
    const platform = plan.variant ? `${plan.arch}/${plan.variant}` : plan.arch;
    const other = byPlatform.get(platform);
    if (other)
      throw new SutureError("USAGE", `${other} and ${file} are both reports for linux/${platform}; keep one`);
    byPlatform.set(platform, file);
    plans.push(plan);
  }
  return plans;
}

async function assertReadableFile(file: string): Promise<void> {
  let s: Awaited<ReturnType<typeof stat>>;
  try {
    s = await stat(file);
  } catch (e) {
    throw asSutureError(e, "IO", `cannot read report ${file}`);
  }
  if (s.isDirectory()) {
    throw new SutureError(
      "USAGE",
      `${file} is a directory; a directory of per-platform reports is only for multi-platform images`,
    );
  }
}
