/**
 * Whether a bulk job patches, and under which tag (copa's skip and re-patch tags): the first patch
 * of a source tag gets the template's tag (`<base>`); once that exists, the next one gets
 * `<base>-1`, `<base>-2`, …, so a patched tag once pushed is never overwritten. With a report
 * directory, a scan of the newest patched tag that finds nothing fixable skips the job.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { asSutureError, isSutureError, quoteUntrusted } from "../errors/errors.ts";
import { formatReference, type ImageReference, parseReference } from "../ref/reference.ts";
import type { UpdatePlan } from "../report/plan.ts";
import { type ReadReportOptions, readReport } from "../report/read.ts";
import { listTags, type RegistryOptions } from "../transports/registry/registry.ts";
import { COPA_PLATFORMS } from "./config.ts";

/**
 * Per-architecture tags copa writes beside a multi-platform patch (`<base>-arm64`, `<base>-arm-v7`):
 * they are not re-patch tags, even the one that looks like one (`<base>-386`).
 */
const ARCH_SUFFIXES = new Set(COPA_PLATFORMS.map((p) => p.split("/").slice(1).join("-")));

/** The existing patch tags of `base` among a repository's tags, by their number (`<base>` is 0). */
export function existingPatchTags(base: string, tags: readonly string[]): { tag: string; n: number }[] {
  const out: { tag: string; n: number }[] = [];
  for (const tag of tags) {
    if (tag === base) out.push({ tag, n: 0 });
    else if (tag.startsWith(`${base}-`)) {
      const suffix = tag.slice(base.length + 1);
      if (/^[1-9]\d{0,8}$/.test(suffix) && !ARCH_SUFFIXES.has(suffix)) out.push({ tag, n: Number(suffix) });
    }
  }
  return out.sort((a, b) => a.n - b.n);
}

/** The tag a new patch of `base` goes under, given the patch tags that exist. */
export function nextPatchTag(base: string, existing: readonly { n: number }[]): string {
  if (existing.length === 0) return base;
  return `${base}-${Math.max(...existing.map((e) => e.n)) + 1}`;
}

/** The reports of a `-r DIR`, by the image each names (normalised as a registry reference). */
export interface ReportIndex {
  /** The plans of reports naming `ref` (one per platform scanned), or undefined when none does. */
  lookup(ref: ImageReference): UpdatePlan[] | undefined;
  /** Files that could not be used, and why. */
  warnings: string[];
}

function referenceKey(ref: ImageReference): string {
  return formatReference({ registry: ref.registry, repository: ref.repository, tag: ref.tag ?? "latest" });
}

/**
 * Read every top-level `*.json` report in `dir`. A file that is no report, or names no image, is
 * left out with a warning: a job without a matching report is patched (fail-open, as copa).
 */
export async function indexReports(dir: string, options: ReadReportOptions = {}): Promise<ReportIndex> {
  const byName = new Map<string, UpdatePlan[]>();
  const warnings: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch((e) => {
    throw asSutureError(e, "IO", `cannot list report directory ${dir}`);
  });
  const names = entries
    .filter((e) => e.isFile() && e.name.endsWith(".json"))
    .map((e) => e.name)
    .sort();
  for (const name of names) {
    const file = join(dir, name);
    let plan: UpdatePlan;
    try {
      plan = await readReport(file, options);
    } catch (e) {
      if (options.signal?.aborted) throw e;
      warnings.push(`report ${file} is not used: ${e instanceof Error ? e.message : String(e)}`);
      continue;
    }
    const named = plan.image?.name;
    let key: string | undefined;
    try {
      key = named ? referenceKey(parseReference(named)) : undefined;
    } catch {
      key = undefined;
    }
    if (!key) {
      warnings.push(
        `report ${file} names no image${named ? ` it can be matched by (${quoteUntrusted(named)})` : ""}: it is not used`,
      );
      continue;
    }
    byName.set(key, [...(byName.get(key) ?? []), plan]);
  }
  return { lookup: (ref) => byName.get(referenceKey(ref)), warnings };
}

export type SkipDecision =
  /** Patch under `tag`; `previous` is the newest patched tag there was. */
  | { action: "patch"; tag: string; previous?: string; note?: string }
  /** A report of `tag`, the newest patched tag, finds nothing fixable. */
  | { action: "skip"; tag: string; reason: string };

/**
 * copa's decision for one job. Listing the target repository's tags may fail (no repository yet:
 * none exist; anything else: patch under the base tag, saying why, as copa does).
 */
export async function decideSkip(
  target: ImageReference,
  base: string,
  reports: ReportIndex | undefined,
  options: RegistryOptions,
): Promise<SkipDecision> {
  let tags: string[];
  try {
    tags = await listTags(target, options);
  } catch (e) {
    if (options.signal?.aborted) throw e;
    if (isSutureError(e) && e.code === "NOT_FOUND") tags = [];
    else
      return {
        action: "patch",
        tag: base,
        note: `could not list the tags of ${target.registry}/${target.repository} to find earlier patches (${e instanceof Error ? e.message : String(e)}): patching as ${base}`,
      };
  }
  const existing = existingPatchTags(base, tags);
  const next = nextPatchTag(base, existing);
  const latest = existing.at(-1)?.tag;
  if (!latest || !reports) return { action: "patch", tag: next, previous: latest };
  const plans = reports.lookup({ ...target, tag: latest });
  if (!plans)
    return {
      action: "patch",
      tag: next,
      previous: latest,
      note: `no report in the report directory names ${formatReference({ ...target, tag: latest })}: patching again`,
    };
  // Only OS packages are suture's to fix; language findings cannot make a re-patch change anything.
  if (plans.every((p) => p.updates.length === 0))
    return {
      action: "skip",
      tag: latest,
      reason: `its report finds no fixable OS vulnerabilities in ${formatReference({ ...target, tag: latest })}`,
    };
  return { action: "patch", tag: next, previous: latest };
}
