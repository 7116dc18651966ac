/**
 * `suture bulk`: every tag a PatchConfig names, patched as its own job (update-all, as copa's bulk
 * mode), a few at a time. A job that fails is recorded and the others go on; they share the layer,
 * package and repository caches of one `cacheDir`. The library never prints: what happens arrives
 * as typed `BulkEvent`s.
 */
import { availableParallelism } from "node:os";
import { isSutureError, SutureError } from "../errors/errors.ts";
import { formatPlatform } from "../oci/platform.ts";
import { type PatchOptions, type PlatformResult, patchImage } from "../patch/patch.ts";
import type { ProgressEvent } from "../progress/events.ts";
import { formatReference, type ImageReference } from "../ref/reference.ts";
import type { UpdatePlan } from "../report/plan.ts";
import { versionSchemeFor } from "../report/versions.ts";
import { daemonAvailable } from "../transports/daemon/daemon.ts";
import type { TransportOptions } from "../transports/index.ts";
import type { BulkConfig, BulkImageSpec } from "./config.ts";
import { DISCOVERY_CONCURRENCY, discoverTags, mapLimited } from "./discover.ts";
import { decideSkip, indexReports, type ReportIndex } from "./skip.ts";

/** One source tag to patch. */
export interface BulkJob {
  /** `<source> → <base target>`: unique within a run (the same pair listed twice runs once). */
  id: string;
  /** The config's display name of the image. */
  name: string;
  /** The source image (`registry/repo:tag`). */
  source: string;
  /** The template's tag for this source tag; the job patches under it or `<base>-N`. */
  baseTarget: string;
  /** Platforms the config names (undefined: every linux platform). */
  requestedPlatforms?: string[];
}

export type BulkJobStatus = "patched" | "up-to-date" | "skipped" | "would-patch" | "failed";

export interface BulkPlatformResult {
  platform: string;
  status: PlatformResult["status"];
  reason?: string;
  /** Packages updated. */
  packages: { name: string; from?: string; to: string }[];
  failedPackages: { name: string; reason: string }[];
  /**
   * Vulnerabilities a report of the source image in `-r DIR` lists whose fix the update reached;
   * undefined when no such report exists (bulk patches update-all: no report says what to fix).
   */
  cvesFixed?: string[];
  digest?: string;
}

export interface BulkJobResult extends BulkJob {
  status: BulkJobStatus;
  /** The patched reference written (patched), that would be (would-patch), or that is kept (skipped). */
  target?: string;
  /** Why it was skipped or failed. */
  reason?: string;
  /** The SutureError code of a failure. */
  code?: string;
  digest?: string;
  platforms: BulkPlatformResult[];
  warnings: string[];
  durationMs: number;
}

export type BulkJobState = "queued" | "checking" | "patching" | "writing";

export type BulkEvent =
  | { type: "discovered"; jobs: BulkJob[] }
  /** Something the user should know that is about an image or the run, not one job's patch. */
  | { type: "warning"; message: string; image?: string }
  | { type: "job-state"; job: string; state: BulkJobState; target?: string; detail?: string }
  /** The job's own patch progress, as `suture patch` reports it (with `platform` on index platforms). */
  | { type: "job-progress"; job: string; event: ProgressEvent }
  | { type: "job-done"; job: string; result: BulkJobResult };

/** What every job of a run shares: patch's global options, without those naming one image's output. */
export interface BulkOptions
  extends Pick<
    PatchOptions,
    | "push"
    | "ignoreErrors"
    | "cacheDir"
    | "compression"
    | "mirrors"
    | "engine"
    | "keyringFiles"
    | "allowInsecureRepositories"
    | "maxReportBytes"
    | "scanner"
  > {
  /** `-r DIR`: reports that decide whether a tag patched before is patched again (never what is patched). */
  reportDir?: string;
  /** Jobs at once (default: the number of CPUs, as copa). */
  jobs?: number;
  /** Each job's own deadline (`--timeout`, per job as in copa). */
  timeoutMs?: number;
  /** Decide and name every job's tag, patch nothing. */
  dryRun?: boolean;
  transport?: TransportOptions;
  onEvent?: (event: BulkEvent) => void;
  signal?: AbortSignal;
}

export interface BulkResult {
  jobs: BulkJobResult[];
  /** Discovery and report warnings (job warnings are on each job). */
  warnings: string[];
}

/**
 * Run a PatchConfig. Resolves with every job's result, whatever happened to each one; rejects
 * only when `signal` aborts (interrupt), after the running jobs have unwound.
 */
export async function runBulk(config: BulkConfig, options: BulkOptions = {}): Promise<BulkResult> {
  const emit = options.onEvent ?? (() => {});
  // Each job would fail on it after its discovery: say it once, before any registry is asked.
  const uid = process.getuid?.();
  if (!options.dryRun && uid !== undefined && uid !== 0)
    throw new SutureError(
      "SANDBOX",
      `suture bulk patches images, which needs root (layers extracted with their owners, overlayfs, runc), and runs as uid ${uid}: run it as root, or pass --dry-run to see the jobs`,
    );
  const dockerHost = options.transport?.dockerHost ?? process.env.DOCKER_HOST;
  // Without --push every job loads its image into the daemon (copa's default): with none there,
  // say it once instead of failing every job the same way after its discovery.
  if (
    !options.dryRun &&
    !options.push &&
    !(await daemonAvailable({ ...options.transport, signal: options.signal }))
  )
    throw new SutureError(
      "DAEMON",
      `no Docker daemon is reachable${dockerHost ? ` at ${dockerHost}` : ""} to load the patched images into: pass --push to push them to their target registry, or start dockerd (DOCKER_HOST)`,
    );
  const warnings: string[] = [];
  const warn = (message: string, image?: string) => {
    warnings.push(image ? `${image}: ${message}` : message);
    emit({ type: "warning", message, image });
  };
  const access = { ...options.transport, signal: options.signal };
  const reports = options.reportDir
    ? await indexReports(options.reportDir, {
        scanner: options.scanner,
        maxReportBytes: options.maxReportBytes,
        signal: options.signal,
      })
    : undefined;
  for (const w of reports?.warnings ?? []) warn(w);

  // Discovery: a repository that cannot be listed is a warning and no jobs, as in copa.
  const discovered = await mapLimited(config.images, DISCOVERY_CONCURRENCY, async (spec) => {
    try {
      const found = await discoverTags(spec.repository, spec.tags, access);
      for (const w of found.warnings) warn(w, spec.name);
      return found.tags.map((tag) => jobFor(spec, tag));
    } catch (e) {
      if (options.signal?.aborted) throw options.signal.reason ?? e;
      warn(`cannot discover tags: ${e instanceof Error ? e.message : String(e)}`, spec.name);
      return [];
    }
  });
  const jobs = dedupe(discovered.flat(), warn);
  emit({ type: "discovered", jobs: jobs.map((j) => j.job) });
  if (jobs.length === 0) warn("no tags to patch");

  const results = new Map<string, BulkJobResult>();
  const finish = (result: BulkJobResult) => {
    results.set(result.id, result);
    emit({ type: "job-done", job: result.id, result });
  };
  // copa's collision: two images whose patched tags land on one target would overwrite each other.
  const runnable = jobs.filter((j) => {
    if (!j.collidesWith) return true;
    finish({
      ...j.job,
      status: "failed",
      code: "USAGE",
      reason: `its patched tag ${j.baseTargetRef} is also the target of ${j.collidesWith}: give one of them its own target.registry or target.tag`,
      platforms: [],
      warnings: [],
      durationMs: 0,
    });
    return false;
  });

  let next = 0;
  const worker = async () => {
    while (next < runnable.length && !options.signal?.aborted) {
      const job = runnable[next++]!;
      const result = await runJob(job, reports, options, emit);
      // A job broken off by the interrupt is not a result: the run as a whole was cancelled.
      if (options.signal?.aborted) return;
      finish(result);
    }
  };
  const width = Math.max(1, Math.min(options.jobs ?? availableParallelism(), runnable.length));
  await Promise.all(Array.from({ length: width }, worker));
  options.signal?.throwIfAborted();
  return {
    jobs: jobs.map((j) => results.get(j.job.id)!).filter((r) => r !== undefined),
    warnings,
  };
}

interface PlannedJob {
  job: BulkJob;
  spec: BulkImageSpec;
  sourceRef: ImageReference;
  targetRepository: ImageReference;
  baseTargetRef: string;
  collidesWith?: string;
}

function jobFor(spec: BulkImageSpec, tag: string): PlannedJob {
  const sourceRef = { ...spec.repository, tag };
  const source = formatReference(sourceRef);
  const baseTarget = spec.tagTemplate.render(tag);
  const baseTargetRef = formatReference({ ...spec.targetRepository, tag: baseTarget });
  return {
    job: {
      id: `${source} → ${baseTargetRef}`,
      name: spec.name,
      source,
      baseTarget,
      requestedPlatforms: spec.platforms?.map(formatPlatform),
    },
    spec,
    sourceRef,
    targetRepository: spec.targetRepository,
    baseTargetRef,
  };
}

/**
 * The same source patched to the same target (listed twice, or by two entries) runs once; two
 * different sources aiming at one patched tag are a conflict.
 */
function dedupe(jobs: PlannedJob[], warn: (message: string, image?: string) => void): PlannedJob[] {
  const byId = new Set<string>();
  const byTarget = new Map<string, string>();
  const out: PlannedJob[] = [];
  for (const j of jobs) {
    if (byId.has(j.job.id)) {
      warn(`${j.job.source} is listed twice for ${j.baseTargetRef}: patched once`, j.job.name);
      continue;
    }
    byId.add(j.job.id);
    const other = byTarget.get(j.baseTargetRef);
    if (other) j.collidesWith = other;
    else byTarget.set(j.baseTargetRef, j.job.source);
    out.push(j);
  }
  return out;
}

async function runJob(
  planned: PlannedJob,
  reports: ReportIndex | undefined,
  options: BulkOptions,
  emit: (event: BulkEvent) => void,
): Promise<BulkJobResult> {
  const { job } = planned;
  const started = performance.now();
  const warnings: string[] = [];
  const base = { ...job, platforms: [] as BulkPlatformResult[], warnings };
  const elapsed = () => Math.round(performance.now() - started);
  // The job's deadline aborts this job only; the run's signal (interrupt) aborts them all.
  const deadline = new AbortController();
  const timer =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(
          () =>
            deadline.abort(
              new SutureError(
                "TIMEOUT",
                `patching ${job.source} took longer than --timeout ${formatDuration(options.timeoutMs!)}: raise --timeout`,
              ),
            ),
          options.timeoutMs,
        );
  const signal = options.signal ? AbortSignal.any([options.signal, deadline.signal]) : deadline.signal;
  let target: string | undefined;
  try {
    emit({ type: "job-state", job: job.id, state: "checking" });
    const decision = await decideSkip(planned.targetRepository, job.baseTarget, reports, {
      ...options.transport,
      signal,
    });
    if (decision.action === "skip") {
      return {
        ...base,
        status: "skipped",
        target: formatReference({ ...planned.targetRepository, tag: decision.tag }),
        reason: decision.reason,
        durationMs: elapsed(),
      };
    }
    if (decision.note) {
      warnings.push(decision.note);
      emit({ type: "job-progress", job: job.id, event: { type: "warning", message: decision.note } });
    }
    target = formatReference({ ...planned.targetRepository, tag: decision.tag });
    if (options.dryRun) return { ...base, status: "would-patch", target, durationMs: elapsed() };
    emit({ type: "job-state", job: job.id, state: "patching", target });
    const result = await patchImage({
      image: `docker://${job.source}`,
      tag: target,
      push: options.push,
      platforms: planned.spec.platforms,
      ignoreErrors: options.ignoreErrors,
      timeoutMs: options.timeoutMs,
      cacheDir: options.cacheDir,
      compression: options.compression,
      mirrors: options.mirrors,
      engine: options.engine,
      keyringFiles: options.keyringFiles,
      allowInsecureRepositories: options.allowInsecureRepositories,
      transport: options.transport,
      progress: (event) => {
        if (event.type === "warning")
          warnings.push(event.platform ? `${event.platform}: ${event.message}` : event.message);
        if (event.type === "step" && event.step === "write")
          emit({ type: "job-state", job: job.id, state: "writing", target });
        emit({ type: "job-progress", job: job.id, event });
      },
      signal,
    });
    const sourcePlans = reports?.lookup(planned.sourceRef);
    return {
      ...base,
      status: result.status === "patched" ? "patched" : "up-to-date",
      // Nothing is written when nothing changed: there is no patched tag to name then.
      target: result.status === "patched" ? target : undefined,
      digest: result.digest,
      platforms: result.platforms.map((p) => platformResult(p, sourcePlans)),
      durationMs: elapsed(),
    };
  } catch (e) {
    const error = signal.aborted && signal.reason ? signal.reason : e;
    return {
      ...base,
      status: "failed",
      target,
      reason: error instanceof Error ? error.message : String(error),
      code: isSutureError(error) ? error.code : "INTERNAL",
      durationMs: elapsed(),
    };
  } finally {
    clearTimeout(timer);
  }
}

function platformResult(p: PlatformResult, plans: UpdatePlan[] | undefined): BulkPlatformResult {
  return {
    platform: p.platform,
    status: p.status,
    reason: p.reason,
    packages: p.changed,
    failedPackages: p.failed,
    cvesFixed: plans ? cvesFixed(p, plans) : undefined,
    digest: p.digest,
  };
}

/**
 * The vulnerabilities a report of the source image lists for this platform that the update fixed:
 * those of every package now at or past the version the report says fixes it.
 */
export function cvesFixed(
  p: Pick<PlatformResult, "platform" | "changed" | "failed">,
  plans: UpdatePlan[],
): string[] {
  const arch = p.platform.split("/").slice(1).join("/");
  const plan =
    plans.find((x) => x.arch && (x.variant ? `${x.arch}/${x.variant}` : x.arch) === arch) ??
    plans.find((x) => !x.arch);
  if (!plan) return [];
  const now = new Map(p.changed.map((c) => [c.name, c.to]));
  const failed = new Set(p.failed.map((f) => f.name));
  const fixed = new Set<string>();
  for (const u of plan.updates) {
    const to = now.get(u.name);
    if (!to || failed.has(u.name)) continue;
    const scheme = versionSchemeFor(u.packageType);
    if (scheme.isValid(to) && scheme.isValid(u.fixedVersion) && scheme.compare(to, u.fixedVersion) >= 0)
      for (const id of u.vulnerabilities) fixed.add(id);
  }
  return [...fixed].sort();
}

function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
