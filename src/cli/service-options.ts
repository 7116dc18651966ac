/**
 * The flags `suture serve` and `suture worker` share: where the queue and the state live (the
 * scaled-out mode), and the patch options every job of the service uses. One definition, so a
 * worker takes exactly the options serve does.
 */
import { tmpdir } from "node:os";
import { type Command, Option, type OptionValues } from "@commander-js/extra-typings";
import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import type { Compression } from "../oci/media-types.ts";
import type { EngineChoice } from "../patch/engines/engine.ts";
import type { QueueChoice } from "../serve/backends.ts";
import type { JobContext } from "../serve/job.ts";
import type { ServiceStore } from "../serve/store.ts";
import { addPatchJobOptions, parseDuration, parseMaxBlobSize, parseMirrors } from "./options.ts";

/** `--redis`, `--database` and the BullMQ queue's tuning. */
export function addQueueOptions<
  Args extends unknown[],
  Opts extends OptionValues,
  Globals extends OptionValues,
>(cmd: Command<Args, Opts, Globals>) {
  return cmd
    .option(
      "--redis <url>",
      "the job queue on Redis (BullMQ), shared by serve and every suture worker: redis://HOST:6379",
    )
    .option(
      "--database <url>",
      "the service's state in Postgres instead of the embedded store: postgres://USER@HOST/DB",
    )
    .option(
      "--queue-name <name>",
      "the BullMQ queue's name (services sharing one Redis use different names)",
      "suture-patch",
    )
    .option(
      "--attempts <n>",
      "runs of a job whose failure may pass (network, registry, timeout) before it fails",
      "3",
    )
    .option("--backoff <duration>", "the pause before a job's second run; doubled for each further one", "5s")
    .option(
      "--lock-duration <duration>",
      "with --redis: a killed worker's job is taken over after this long",
      "30s",
    )
    .option(
      "--stalled-interval <duration>",
      "with --redis: how often workers look for jobs of killed workers",
      "30s",
    )
    .option(
      "--registry-rate-limit <n/duration>",
      "with --redis: start at most N jobs per registry per window, across all workers, e.g. 20/1m",
    );
}

export interface QueueFlags {
  redis?: string;
  database?: string;
  queueName: string;
  attempts: string;
  backoff: string;
  lockDuration: string;
  stalledInterval: string;
  registryRateLimit?: string;
}

export function queueChoiceFrom(flags: QueueFlags): QueueChoice {
  const attempts = Number(flags.attempts);
  if (!/^[1-9]\d{0,2}$/.test(flags.attempts))
    throw new SutureError(
      "USAGE",
      `invalid --attempts ${quoteUntrusted(flags.attempts)}: give a number of runs, e.g. 3`,
    );
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(flags.queueName))
    throw new SutureError(
      "USAGE",
      `invalid --queue-name ${quoteUntrusted(flags.queueName)}: use letters, digits, '.', '_' and '-'`,
    );
  return {
    redis: flags.redis,
    name: flags.queueName,
    attempts,
    backoffMs: duration("--backoff", flags.backoff),
    lockDurationMs: duration("--lock-duration", flags.lockDuration),
    stalledIntervalMs: duration("--stalled-interval", flags.stalledInterval),
    registryRateLimit: flags.registryRateLimit === undefined ? undefined : rateLimit(flags.registryRateLimit),
  };
}

/** The patch options of every job (suture patch's, minus those naming one image or its output). */
export function addJobOptions<
  Args extends unknown[],
  Opts extends OptionValues,
  Globals extends OptionValues,
>(cmd: Command<Args, Opts, Globals>) {
  return addPatchJobOptions(cmd)
    .option("--timeout <duration>", "give up on a job after this long", "30m")
    .option("--work-dir <dir>", "where jobs keep their scratch files (scanner reports, VEX) while they run");
}

export interface JobFlags {
  timeout: string;
  workDir?: string;
  cacheDir?: string;
  compression: "gzip" | "zstd" | "uncompressed";
  mirror?: string[];
  engine: EngineChoice;
  keyring?: string[];
  allowInsecureRepositories?: boolean;
  insecure?: boolean;
  dockerConfig?: string;
  maxBlobSize?: string;
}

export function jobContextFrom(flags: JobFlags, store: ServiceStore): JobContext {
  const compression: Compression = flags.compression === "uncompressed" ? "none" : flags.compression;
  return {
    store,
    workDir: flags.workDir ?? tmpdir(),
    timeoutMs: duration("--timeout", flags.timeout),
    cacheDir: flags.cacheDir,
    compression,
    mirrors: parseMirrors(flags.mirror ?? []),
    engine: flags.engine,
    keyringFiles: flags.keyring,
    allowInsecureRepositories: flags.allowInsecureRepositories,
    transport: {
      insecure: flags.insecure,
      dockerConfig: flags.dockerConfig,
      maxBlobSize: flags.maxBlobSize === undefined ? undefined : parseMaxBlobSize(flags.maxBlobSize),
    },
  };
}

function duration(flag: string, text: string): number {
  try {
    return parseDuration(text);
  } catch {
    throw new SutureError("USAGE", `invalid ${flag} ${quoteUntrusted(text)}: use e.g. 5s, 2m, 1h`);
  }
}

/** `20/1m`: 20 job starts per registry per minute. */
function rateLimit(text: string): { max: number; windowMs: number } {
  const m = /^([1-9]\d{0,5})\/(.+)$/.exec(text);
  if (!m)
    throw new SutureError(
      "USAGE",
      `invalid --registry-rate-limit ${quoteUntrusted(text)}: give jobs per window, e.g. 20/1m`,
    );
  return { max: Number(m[1]), windowMs: duration("--registry-rate-limit", m[2]!) };
}
