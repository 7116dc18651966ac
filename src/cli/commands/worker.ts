/**
 * `suture worker --redis URL`: consume the service's jobs on this machine with the same job code as
 * `suture serve`. Runs until SIGINT/SIGTERM; then its running jobs unwind and go back to the queue
 * for another worker, and it exits 0.
 */
import type { Command } from "@commander-js/extra-typings";
import { redact, SutureError } from "../../errors/errors.ts";
import { runSandboxCleanups } from "../../sandbox/cleanup.ts";
import { reexecOrSettleMode } from "../../sandbox/no-namespaces.ts";
import type { JobHandler } from "../../serve/queue.ts";
import { addTransportOptions, type CommonFlags } from "../options.ts";
import {
  addJobOptions,
  addQueueOptions,
  type JobFlags,
  jobContextFrom,
  type QueueFlags,
  queueChoiceFrom,
} from "../service-options.ts";

export interface WorkerFlags extends QueueFlags, JobFlags, CommonFlags {
  stateDir?: string;
  concurrency: string;
}

export async function runWorker(flags: WorkerFlags): Promise<void> {
  if (flags.redis === undefined)
    throw new SutureError(
      "USAGE",
      "suture worker needs the service's queue: give --redis redis://HOST:6379 (the one suture serve --redis uses)",
    );
  if (!/^[1-9]\d{0,2}$/.test(flags.concurrency))
    throw new SutureError(
      "USAGE",
      `invalid --concurrency ${JSON.stringify(flags.concurrency)}: give a number of jobs at once, e.g. 1`,
    );
  // Not root: the worker runs again as root of a user namespace, as `suture patch` does (issue 16).
  const reran = await reexecOrSettleMode();
  if (reran !== undefined) {
    process.exitCode = reran;
    return;
  }
  const choice = queueChoiceFrom(flags);
  // Loaded by this command only, like the service and the patch pipeline (other commands start faster).
  const { openServiceQueue, openServiceStore } = await import("../../serve/backends.ts");
  const store = await openServiceStore({ database: flags.database, stateDir: flags.stateDir });
  try {
    const context = jobContextFrom(flags, store);
    const queue = await openServiceQueue(choice);
    // The patch pipeline is loaded by this command only (other commands start faster).
    const { patchJobHandler } = await import("../../serve/job.ts");
    const handler = patchJobHandler(context);
    // One line per job start and end: what an operator tails; progress itself goes to the queue.
    const logged: JobHandler = async (job, ctx) => {
      process.stderr.write(
        `job ${job.id} started (attempt ${job.attempts}): ${job.spec.source} -> ${job.spec.target}\n`,
      );
      try {
        const outcome = await handler(job, ctx);
        process.stderr.write(
          `job ${job.id} ${outcome.status}: ${outcome.changed.length} packages, ${outcome.cves.length} CVEs fixed\n`,
        );
        return outcome;
      } catch (e) {
        const code = e instanceof SutureError ? ` [${e.code}]` : "";
        process.stderr.write(`job ${job.id} failed: ${e instanceof Error ? e.message : String(e)}${code}\n`);
        throw e;
      }
    };
    queue.work(logged, { concurrency: Number(flags.concurrency) });
    // The signals are ours before the line below says the worker runs: a supervisor (or a test)
    // may stop it the moment it reads that line, and a SIGTERM before this would kill it outright.
    const stopped = new Promise<void>((resolve) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        process.stderr.write("suture worker: stopping; running jobs go back to the queue\n");
        resolve();
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
    process.stderr.write(
      `suture worker: taking jobs from ${redact(flags.redis)} (queue ${choice.name}), ${flags.concurrency} at once\n`,
    );
    await stopped;
    await queue.close();
  } finally {
    await store.close();
    await runSandboxCleanups();
  }
}

export function registerWorker(program: Command): void {
  addJobOptions(
    addQueueOptions(
      addTransportOptions(
        program
          .command("worker")
          .description(
            "take patch jobs from suture serve's queue on Redis (BullMQ) and run them here; start any number, on any machines",
          )
          .option(
            "--state-dir <dir>",
            "without --database: the embedded store of a suture serve on this machine",
          )
          .option("-c, --concurrency <n>", "jobs at once on this worker", "1"),
      ),
    ),
  ).action(async (flags) => runWorker(flags));
}
