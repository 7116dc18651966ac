/**
 * The one job code of `suture serve` and `suture worker`: patch the pinned source (update-all, or
 * what the rule's scanner reports), push it under the rule's tag, keep the VEX, record the result.
 * Whichever queue runs it, the store is the only state it touches, so one node and many workers
 * patch alike.
 */
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { isSutureError, quoteUntrusted, SutureError } from "../errors/errors.ts";
import { parsePlatform } from "../oci/platform.ts";
import type { PatchOptions } from "../patch/patch.ts";
import { patchImage } from "../patch/patch.ts";
import type { ProgressSink } from "../progress/events.ts";
import { parseReference } from "../ref/reference.ts";
import { DEFAULT_MAX_REPORT_BYTES } from "../report/limits.ts";
import type { JobHandler, JobOutcome, JobRecord } from "./queue.ts";
import { type PatchRecord, type Rule, type ServiceStore, seenKey } from "./store.ts";

/** What every job of a service shares: `suture patch`'s global options that are not about one image. */
export interface JobContext
  extends Pick<
    PatchOptions,
    | "cacheDir"
    | "compression"
    | "mirrors"
    | "engine"
    | "keyringFiles"
    | "allowInsecureRepositories"
    | "transport"
  > {
  store: ServiceStore;
  /** Where a job's scratch files (scanner report, VEX) go; each job removes its own. */
  workDir: string;
  /** Each job's deadline (default none). */
  timeoutMs?: number;
}

/** Failures another attempt would meet the same way: the digest counts as handled (an API retry can still run it). */
const PERMANENT = new Set([
  "UNSUPPORTED_OS",
  "UNSUPPORTED_PLATFORM",
  "INVALID_MANIFEST",
  "INVALID_REPORT",
  "UNSAFE_LAYER",
  "UNTRUSTED",
  "PATCH_FAILED",
  "USAGE",
]);

/** The source's repository and tag, from `registry/repo:tag@sha256:…`. */
export function sourceParts(source: string): { repository: string; tag: string; digest: string } {
  const ref = parseReference(source, { defaultTag: false });
  if (!ref.digest || !ref.tag)
    throw new SutureError(
      "USAGE",
      `job source ${quoteUntrusted(source)} must name a tag and pin a digest (repo:tag@sha256:…)`,
    );
  return { repository: `${ref.registry}/${ref.repository}`, tag: ref.tag, digest: ref.digest };
}

export function patchJobHandler(context: JobContext): JobHandler {
  return async (job, { progress, signal }) => {
    const started = Date.now();
    const { store } = context;
    const parts = sourceParts(job.spec.source);
    const record = (r: Pick<PatchRecord, "state" | "outcome" | "error">): PatchRecord => ({
      jobId: job.id,
      ruleId: job.spec.ruleId,
      repository: parts.repository,
      tag: parts.tag,
      source: job.spec.source,
      reason: job.spec.reason,
      durationMs: Date.now() - started,
      finishedAt: new Date().toISOString(),
      ...r,
    });
    try {
      const rule = await store.rules.get(job.spec.ruleId);
      if (!rule)
        throw new SutureError(
          "NOT_FOUND",
          `rule ${job.spec.ruleId} no longer exists: the job has nothing to follow`,
        );
      const outcome = await patchJob(job, rule, context, progress, signal);
      const { vex, ...kept } = outcome;
      if (vex) await store.vex.put(job.id, vex);
      await store.results.add(record({ state: "succeeded", outcome: kept }));
      await store.seen.set(seenKey(job.spec.ruleId, parts.repository, parts.tag), parts.digest);
      return outcome;
    } catch (e) {
      const error = signal.aborted && signal.reason ? signal.reason : e;
      const code = isSutureError(error) ? error.code : "INTERNAL";
      await store.results.add(
        record({
          state: "failed",
          error: { code, message: error instanceof Error ? error.message : String(error) },
        }),
      );
      if (PERMANENT.has(code))
        await store.seen.set(seenKey(job.spec.ruleId, parts.repository, parts.tag), parts.digest);
      throw error;
    }
  };
}

async function patchJob(
  job: JobRecord,
  rule: Rule,
  context: JobContext,
  progress: ProgressSink,
  signal: AbortSignal,
): Promise<JobOutcome> {
  await mkdir(context.workDir, { recursive: true });
  const scratch = await mkdtemp(join(context.workDir, "job-"));
  try {
    const vexFile = join(scratch, "vex.json");
    const report = rule.scanner
      ? await runScanner(rule.scanner.command, job.spec.source, scratch, signal)
      : undefined;
    const result = await patchImage({
      image: `docker://${job.spec.source}`,
      tag: job.spec.target,
      push: true,
      platforms: job.spec.platforms?.map((p) => parsePlatform(p)),
      report,
      scanner: report ? (rule.scanner?.format ?? "auto") : undefined,
      vexFile,
      cacheDir: context.cacheDir,
      compression: context.compression,
      mirrors: context.mirrors,
      engine: context.engine,
      keyringFiles: context.keyringFiles,
      allowInsecureRepositories: context.allowInsecureRepositories,
      timeoutMs: context.timeoutMs,
      transport: context.transport,
      progress,
      signal,
    });
    const patched = result.status === "patched";
    const vex = patched ? await readFile(vexFile, "utf8").catch(() => undefined) : undefined;
    const changed = new Map<string, { name: string; from?: string; to: string }>();
    for (const p of result.platforms) for (const c of p.changed) changed.set(`${c.name}\n${c.to}`, c);
    return {
      status: patched ? "patched" : "up-to-date",
      target: patched ? job.spec.target : undefined,
      digest: result.digest,
      changed: [...changed.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
      platforms: result.platforms.map((p) => ({
        platform: p.platform,
        status: p.status,
        ...(p.reason ? { reason: p.reason } : {}),
        changed: p.changed.length,
        failed: p.failed.length,
        ...(p.digest ? { digest: p.digest } : {}),
      })),
      cves: vex ? fixedIn(vex) : [],
      vex,
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The vulnerabilities an OpenVEX document (ours, already checked when written) says are fixed. */
function fixedIn(vex: string): string[] {
  const doc = JSON.parse(vex) as { statements?: { status?: string; vulnerability?: { name?: string } }[] };
  const ids = new Set<string>();
  for (const s of doc.statements ?? [])
    if (s.status === "fixed" && s.vulnerability?.name) ids.add(s.vulnerability.name);
  return [...ids].sort();
}

/**
 * Run a rule's scanner command with `{image}` replaced by the pinned source; its stdout (capped
 * like any report) is the report. No shell: the command is an argument list.
 */
async function runScanner(
  command: string[],
  source: string,
  dir: string,
  signal: AbortSignal,
): Promise<string> {
  const file = join(dir, "report.json");
  const args = command.map((a) => a.replaceAll("{image}", source));
  const child = spawn(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], signal });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => {
    if (stderr.length < 4096) stderr += s;
  });
  let bytes = 0;
  child.stdout.on("data", (b: Buffer) => {
    bytes += b.length;
    if (bytes > DEFAULT_MAX_REPORT_BYTES) child.kill("SIGKILL");
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve(code));
  });
  try {
    await pipeline(child.stdout, createWriteStream(file));
    const code = await exited;
    if (bytes > DEFAULT_MAX_REPORT_BYTES)
      throw new SutureError(
        "TOO_LARGE",
        `the scanner ${quoteUntrusted(args[0]!)} wrote more than ${DEFAULT_MAX_REPORT_BYTES} bytes: check its command`,
      );
    if (code !== 0)
      throw new SutureError(
        "INVALID_REPORT",
        `the scanner ${quoteUntrusted(args[0]!)} exited with ${code}: ${quoteUntrusted(stderr.trim().split("\n").at(-1) ?? "")}; check the rule's scanner command`,
      );
  } catch (e) {
    if (signal.aborted) throw signal.reason;
    if (isSutureError(e)) throw e;
    throw new SutureError(
      "INVALID_REPORT",
      `cannot run the scanner ${quoteUntrusted(args[0]!)}: ${(e as Error).message}; check the rule's scanner command`,
    );
  }
  return file;
}
