/**
 * A `suture worker`-like process for the queue tests: consumes the BullMQ queue with a light job
 * handler that writes `start ID PID` when a run begins and `done ID PID` when it ends (appends to
 * one shared journal file, so the test can count runs across processes), taking SUTURE_LAB_JOB_MS
 * per job. The test SIGKILLs one of these in the middle of a job.
 *
 *   node test/lab/queue-worker-process.ts REDIS_URL QUEUE_NAME JOURNAL
 */
import { appendFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { BullmqJobQueue } from "../../src/serve/queue-bullmq.ts";

const [url, name, journal] = process.argv.slice(2);
if (!url || !name || !journal) throw new Error("usage: queue-worker-process.ts REDIS_URL QUEUE_NAME JOURNAL");
const jobMs = Number(process.env.SUTURE_LAB_JOB_MS ?? 1500);
const queue = new BullmqJobQueue({
  url,
  name,
  lockDurationMs: 2000,
  stalledIntervalMs: 1000,
  backoffMs: 200,
});
await queue.ready();
queue.work(
  async (job, { progress, signal }) => {
    appendFileSync(journal, `start ${job.id} ${process.pid}\n`);
    progress({ type: "step", step: "patch", message: `patching ${job.spec.source}` });
    await sleep(jobMs, undefined, { signal });
    appendFileSync(journal, `done ${job.id} ${process.pid}\n`);
    return { status: "patched", target: job.spec.target, changed: [], cves: [] };
  },
  { concurrency: Number(process.env.SUTURE_LAB_CONCURRENCY ?? 1) },
);
process.stdout.write("ready\n");
process.on("SIGTERM", () => {
  void queue.close().then(() => process.exit(0));
});
