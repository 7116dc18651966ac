/**
 * The JSON a bulk run leaves behind (`--summary FILE`): one entry per job with its platforms, for
 * CI pipelines and dashboards to read instead of parsing the table.
 */
import type { BulkJobResult, BulkJobStatus, BulkResult } from "./run.ts";

export const SUMMARY_API_VERSION = "suture.dev/v1alpha1";

export interface BulkSummary {
  apiVersion: typeof SUMMARY_API_VERSION;
  kind: "BulkSummary";
  config: string;
  startedAt: string;
  finishedAt: string;
  dryRun: boolean;
  /** Jobs by status. */
  counts: Record<BulkJobStatus, number>;
  jobs: {
    name: string;
    source: string;
    status: BulkJobStatus;
    target: string | null;
    digest: string | null;
    reason: string | null;
    code: string | null;
    durationMs: number;
    /** Distinct vulnerabilities fixed on any platform; null when no report of the source was given. */
    cvesFixed: number | null;
    platforms: {
      platform: string;
      status: string;
      reason: string | null;
      packages: { name: string; from: string | null; to: string }[];
      failedPackages: { name: string; reason: string }[];
      cvesFixed: string[] | null;
      digest: string | null;
    }[];
    warnings: string[];
  }[];
  warnings: string[];
}

/** Distinct vulnerabilities a job fixed on any platform, or undefined when nothing could say. */
export function jobCvesFixed(job: BulkJobResult): string[] | undefined {
  const known = job.platforms.filter((p) => p.cvesFixed !== undefined);
  if (known.length === 0) return undefined;
  return [...new Set(known.flatMap((p) => p.cvesFixed!))].sort();
}

export function bulkSummary(
  result: BulkResult,
  run: { config: string; startedAt: Date; finishedAt: Date; dryRun?: boolean },
): BulkSummary {
  const counts: Record<BulkJobStatus, number> = {
    patched: 0,
    "up-to-date": 0,
    skipped: 0,
    "would-patch": 0,
    failed: 0,
  };
  for (const j of result.jobs) counts[j.status]++;
  return {
    apiVersion: SUMMARY_API_VERSION,
    kind: "BulkSummary",
    config: run.config,
    startedAt: run.startedAt.toISOString(),
    finishedAt: run.finishedAt.toISOString(),
    dryRun: run.dryRun ?? false,
    counts,
    jobs: result.jobs.map((j) => ({
      name: j.name,
      source: j.source,
      status: j.status,
      target: j.target ?? null,
      digest: j.digest ?? null,
      reason: j.reason ?? null,
      code: j.code ?? null,
      durationMs: j.durationMs,
      cvesFixed: jobCvesFixed(j)?.length ?? null,
      platforms: j.platforms.map((p) => ({
        platform: p.platform,
        status: p.status,
        reason: p.reason ?? null,
        packages: p.packages.map((c) => ({ name: c.name, from: c.from ?? null, to: c.to })),
        failedPackages: p.failedPackages,
        cvesFixed: p.cvesFixed ?? null,
        digest: p.digest ?? null,
      })),
      warnings: j.warnings,
    })),
    warnings: result.warnings,
  };
}
