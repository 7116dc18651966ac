import { stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { dirname, resolve } from "node:path";
import { type Command, Option } from "@commander-js/extra-typings";
import { SutureError } from "../../errors/errors.ts";
import { writeFileAtomic } from "../../fs/atomic.ts";
import type { Compression } from "../../oci/media-types.ts";
import type { EngineChoice } from "../../patch/engines/engine.ts";
import { parseReportSizeLimit } from "../../report/limits.ts";
import { runSandboxCleanups } from "../../sandbox/cleanup.ts";
import { reexecOrSettleMode } from "../../sandbox/no-namespaces.ts";
import { abortReasonOr, cancelOnSignals } from "../cancel.ts";
import {
  addPatchJobOptions,
  addTransportOptions,
  type CommonFlags,
  parseDuration,
  parseMaxBlobSize,
  parseMirrors,
} from "../options.ts";
import { progressMode } from "../progress-render.ts";

/** The flags a bulk run takes: `suture patch`'s global ones (as copa's bulk mode takes copa's). */
export interface BulkFlags extends CommonFlags {
  /** `-r DIR`: reports of patched images, for skip detection only. */
  report?: string;
  scanner: string;
  maxReportSize?: string;
  push?: boolean;
  ignoreErrors?: boolean;
  timeout: string;
  dryRun?: boolean;
  cacheDir?: string;
  compression: "gzip" | "zstd" | "uncompressed";
  mirror?: string[];
  engine: EngineChoice;
  keyring?: string[];
  allowInsecureRepositories?: boolean;
  addr?: string;
  loglevel?: string;
  jobs?: string;
  summary?: string;
}

function parseJobs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9]\d{0,3}$/.test(value))
    throw new SutureError(
      "USAGE",
      `invalid --jobs ${JSON.stringify(value)}: give a number of jobs at once, e.g. 4`,
    );
  return Number(value);
}

/** `-r` in bulk mode is a directory of reports (copa's skip detection), never one report. */
async function checkReportDir(dir: string | undefined): Promise<void> {
  if (dir === undefined) return;
  const s = await stat(dir).catch(() => undefined);
  if (!s?.isDirectory())
    throw new SutureError(
      "USAGE",
      `-r ${dir} ${s ? "is a file" : "does not exist"}: in bulk mode -r is a directory of reports of the patched images, used to decide whether they are patched again`,
    );
}

async function checkSummaryFile(file: string | undefined): Promise<void> {
  if (file === undefined) return;
  const s = await stat(file).catch(() => undefined);
  if (s?.isDirectory()) throw new SutureError("USAGE", `--summary ${file} is a directory: give a file name`);
  const dir = dirname(resolve(file));
  if (!(await stat(dir).catch(() => undefined))?.isDirectory())
    throw new SutureError(
      "USAGE",
      `--summary ${file}: ${dir} does not exist; create it or choose another path`,
    );
}

/**
 * Bulk's implementation, loaded when a bulk run starts: the program registers every command, so
 * what a command's module imports at its top every other command loads too (bulk's YAML parser,
 * semver and tag discovery are about 130 modules `suture patch` never runs).
 */
async function loadBulk() {
  const [config, run, summary, table] = await Promise.all([
    import("../../bulk/config.ts"),
    import("../../bulk/run.ts"),
    import("../../bulk/summary.ts"),
    import("./bulk-table.ts"),
  ]);
  return { ...config, ...run, ...summary, ...table };
}

/**
 * Run a PatchConfig as `suture bulk CONFIG` and `suture patch --config CONFIG` do: everything is
 * checked (config, flags, output paths) before the first registry request; the final table goes to
 * stdout, progress to stderr. Failed jobs make the exit code 1 unless --ignore-errors (copa).
 */
export async function runBulkCommand(configFile: string, flags: BulkFlags): Promise<void> {
  // Not root: the whole run happens again as root of a user namespace (issue 16, mode 2).
  // A dry run changes nothing: it runs here, as whoever calls it.
  const reran = flags.dryRun ? undefined : await reexecOrSettleMode();
  if (reran !== undefined) {
    process.exitCode = reran;
    return;
  }
  const { readBulkConfig, runBulk, bulkSummary, createBulkRenderer, formatResultTable } = await loadBulk();
  const config = await readBulkConfig(configFile);
  const timeoutMs = parseDuration(flags.timeout);
  const jobs = parseJobs(flags.jobs);
  const mirrors = parseMirrors(flags.mirror ?? []);
  const maxBlobSize = flags.maxBlobSize === undefined ? undefined : parseMaxBlobSize(flags.maxBlobSize);
  const maxReportBytes = flags.maxReportSize ? parseReportSizeLimit(flags.maxReportSize) : undefined;
  const compression: Compression = flags.compression === "uncompressed" ? "none" : flags.compression;
  await checkReportDir(flags.report);
  await checkSummaryFile(flags.summary);

  const render = createBulkRenderer(progressMode(flags.progress));
  for (const [flag, value] of [
    ["--addr", flags.addr],
    ["--loglevel", flags.loglevel],
  ] as const) {
    if (value !== undefined)
      render({ type: "warning", message: `${flag} ${value} is ignored: suture runs without BuildKit` });
  }
  const controller = new AbortController();
  const releaseSignals = cancelOnSignals(controller, "containers, mounts, temp dirs");
  const startedAt = new Date();
  try {
    const result = await runBulk(config, {
      reportDir: flags.report,
      scanner: flags.scanner,
      maxReportBytes,
      jobs: jobs ?? availableParallelism(),
      push: flags.push,
      ignoreErrors: flags.ignoreErrors,
      timeoutMs,
      dryRun: flags.dryRun,
      cacheDir: flags.cacheDir,
      compression,
      mirrors,
      engine: flags.engine,
      keyringFiles: flags.keyring,
      allowInsecureRepositories: flags.allowInsecureRepositories,
      transport: { insecure: flags.insecure, dockerConfig: flags.dockerConfig, maxBlobSize },
      onEvent: render,
      signal: controller.signal,
    });
    render.finish();
    process.stdout.write(formatResultTable(result.jobs));
    if (flags.summary) {
      const summary = bulkSummary(result, {
        config: configFile,
        startedAt,
        finishedAt: new Date(),
        dryRun: flags.dryRun,
      });
      await writeFileAtomic(flags.summary, `${JSON.stringify(summary, null, 2)}\n`, {
        failure: `cannot write --summary ${flags.summary}`,
      });
    }
    const failed = result.jobs.filter((j) => j.status === "failed");
    if (failed.length && !flags.ignoreErrors) {
      const first = failed[0]!;
      throw new SutureError(
        "PATCH_FAILED",
        `${failed.length} of ${result.jobs.length} bulk jobs failed (first: ${first.source}: ${first.reason}): see the table above; --ignore-errors makes failed jobs exit 0`,
      );
    }
  } catch (e) {
    render.finish();
    throw abortReasonOr(controller.signal, e);
  } finally {
    releaseSignals();
    await runSandboxCleanups();
  }
}

/**
 * `suture patch --config CONFIG` (copa's bulk mode): patch's flags that name one image or its
 * output have no meaning for many images and are refused rather than ignored.
 */
export async function runBulkFromPatch(
  configFile: string,
  flags: BulkFlags & {
    image?: string;
    tag?: string;
    ociDir?: string;
    archive?: string;
    output?: string;
    platform?: string;
    ignoreReportImage?: boolean;
  },
): Promise<void> {
  for (const [flag, given] of [
    ["-i/--image", flags.image],
    ["-t/--tag", flags.tag],
    ["--oci-dir", flags.ociDir],
    ["--archive", flags.archive],
    ["-o/--output", flags.output],
    ["--platform", flags.platform],
    ["--ignore-report-image", flags.ignoreReportImage],
  ] as const) {
    if (given !== undefined)
      throw new SutureError(
        "USAGE",
        `${flag} cannot be combined with --config: the PatchConfig names the images, their platforms and target tags`,
      );
  }
  await runBulkCommand(configFile, flags);
}

/** The flags `suture bulk` adds to a command (patch's, minus those naming one image and its output). */
export function registerBulk(program: Command): void {
  addTransportOptions(
    addPatchJobOptions(
      program
        .command("bulk")
        .description(
          "patch every image and tag a copa PatchConfig (copa.sh/v1alpha1) names, as jobs at once (update-all, as copa's bulk mode); same as suture patch --config",
        )
        .argument("<config>", "the PatchConfig YAML file")
        .option(
          "-r, --report <dir>",
          "directory of reports of already patched images: a patched tag whose report finds nothing fixable is not patched again",
        )
        .option(
          "-s, --scanner <name>",
          "format of the -r reports: auto | trivy | grype | native | NAME (copa-NAME plugin)",
          "auto",
        )
        .option("--max-report-size <size>", "the largest report read, e.g. 64M")
        .option(
          "-p, --push",
          "push the patched images to their registry (default: load them into the Docker daemon)",
        )
        .option(
          "--ignore-errors",
          "exit 0 even if some jobs fail; packages that cannot be patched are left out",
        )
        .option("--timeout <duration>", "give up on a job after this long (each job has its own)", "5m")
        .option("--dry-run", "list the jobs and the tags they would write; patch and write nothing")
        .option(
          "-j, --jobs <n>",
          `jobs at once (default: the number of CPUs, here ${availableParallelism()})`,
        )
        .option("--summary <file>", "write a JSON summary of every job to this file"),
    )
      .option("-a, --addr <address>", "copa's BuildKit address: accepted and ignored")
      .option("--loglevel <level>", "copa's log level: accepted and ignored (see --progress)"),
  ).action(async (config, flags) => runBulkCommand(config, flags));
}
