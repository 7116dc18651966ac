/**
 * The scaled-out queue (BullMQ) against a real redis-server: what a user of `suture serve --redis`
 * and `suture worker` relies on — one job per image digest, retries with growing delays, errors a
 * retry cannot fix failing at once, cancel and retry, progress seen from another process, rate
 * limits per registry, and a worker killed with SIGKILL in the middle of a job losing nothing.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SutureError } from "../../src/errors/errors.ts";
import type {
  JobEvent,
  JobOutcome,
  JobQueue,
  JobRecord,
  JobState,
  PatchJobSpec,
} from "../../src/serve/queue.ts";
import { BullmqJobQueue, type BullmqQueueOptions } from "../../src/serve/queue-bullmq.ts";
import { type LabRedis, startRedis } from "../lab/redis.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, describe, test } = await requiring("loopback", "tool:redis-server");

let redis: LabRedis;
let scratch: string;
const opened: BullmqJobQueue[] = [];

before(async () => {
  redis = await startRedis();
  scratch = await mkdtemp(join(tmpdir(), "suture-queue-test-"));
});
after(async () => {
  await Promise.all(opened.map((q) => q.close()));
  await redis?.stop();
  await rm(scratch, { recursive: true, force: true });
});

/** A queue (producer or worker side) on its own Redis connections, as a separate process would have. */
async function openQueue(name: string, options: Partial<BullmqQueueOptions> = {}): Promise<BullmqJobQueue> {
  const queue = new BullmqJobQueue({
    url: redis.url,
    name,
    backoffMs: 200,
    lockDurationMs: 2000,
    stalledIntervalMs: 1000,
    ...options,
  });
  opened.push(queue);
  await queue.ready();
  return queue;
}

function spec(tag: string, registry = "127.0.0.1:5000"): PatchJobSpec {
  const digest = `sha256:${createHash("sha256").update(`${registry}/${tag}`).digest("hex")}`;
  return {
    ruleId: "app",
    source: `${registry}/app:${tag}@${digest}`,
    target: `${registry}/app:${tag}-patched`,
    reason: "new-tag",
  };
}

const patched = (job: JobRecord): JobOutcome => ({
  status: "patched",
  target: job.spec.target,
  changed: [],
  cves: [],
});

async function waitFor(
  queue: JobQueue,
  id: string,
  states: JobState[],
  timeoutMs = 20_000,
): Promise<JobRecord> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const job = await queue.get(id);
    if (job && states.includes(job.state)) return job;
    await sleep(50);
  }
  throw new Error(
    `job ${id} did not reach ${states.join("/")} within ${timeoutMs} ms: ${JSON.stringify(await queue.get(id))}`,
  );
}

describe("BullMQ job queue on a real redis-server", () => {
  test("one job per source digest while it is queued or running; a new job once it ended", async () => {
    const name = `dedupe-${randomUUID()}`;
    const producer = await openQueue(name);
    const first = await producer.enqueue(spec("1"));
    const again = await producer.enqueue({ ...spec("1"), reason: "hook" });
    const other = await producer.enqueue(spec("2"));
    assert.equal(first.duplicate, false);
    assert.equal(first.job.state, "queued");
    assert.equal(again.duplicate, true);
    assert.equal(again.job.id, first.job.id, "a second push of the same digest returns the queued job");
    assert.equal(other.duplicate, false);
    assert.notEqual(other.job.id, first.job.id);

    const worker = await openQueue(name);
    worker.work(async (job) => patched(job), { concurrency: 2 });
    const done = await waitFor(producer, first.job.id, ["succeeded"]);
    assert.equal(done.attempts, 1);
    assert.equal(done.result?.target, spec("1").target);
    assert.ok(done.startedAt && done.finishedAt);
    await waitFor(producer, other.job.id, ["succeeded"]);

    const later = await producer.enqueue(spec("1"));
    assert.equal(later.duplicate, false, "the digest's previous job ended, so a new one is queued");
    await waitFor(producer, later.job.id, ["succeeded"]);
    const listed = await producer.list({ state: "succeeded" });
    assert.deepEqual(new Set(listed.map((j) => j.id)), new Set([first.job.id, other.job.id, later.job.id]));
    assert.equal(listed[0].id, later.job.id, "newest first");
  });

  test("a failing job is retried with growing delays; an error a retry cannot fix fails at once", async () => {
    const name = `retry-${randomUUID()}`;
    const producer = await openQueue(name);
    const worker = await openQueue(name);
    const starts = new Map<string, number[]>();
    worker.work(
      async (job) => {
        const times = starts.get(job.id) ?? [];
        times.push(Date.now());
        starts.set(job.id, times);
        if (job.spec.source.includes(":flaky@") && times.length < 3) {
          throw new SutureError("NETWORK", "registry reset the connection", { retryable: true });
        }
        if (job.spec.source.includes(":alpine-on-rhel@")) {
          throw new SutureError("UNSUPPORTED_OS", "no package manager suture knows");
        }
        return patched(job);
      },
      { concurrency: 2 },
    );
    const flaky = (await producer.enqueue(spec("flaky"))).job;
    const hopeless = (await producer.enqueue(spec("alpine-on-rhel"))).job;

    const flakyDone = await waitFor(producer, flaky.id, ["succeeded", "failed"]);
    assert.equal(flakyDone.state, "succeeded");
    assert.equal(flakyDone.attempts, 3);
    const [t1, t2, t3] = starts.get(flaky.id) ?? [];
    assert.ok(t2 - t1 >= 180, `first retry after the backoff (${t2 - t1} ms)`);
    assert.ok(t3 - t2 >= 380, `second retry waits about twice as long (${t3 - t2} ms)`);

    const failed = await waitFor(producer, hopeless.id, ["failed"]);
    assert.equal(failed.attempts, 1, "not retried");
    assert.deepEqual(failed.error, { code: "UNSUPPORTED_OS", message: "no package manager suture knows" });
    const log = await producer.events(hopeless.id);
    assert.deepEqual(
      log.filter((e) => e.type === "job-state").map((e) => (e as { state: string }).state),
      ["queued", "running", "failed"],
    );
  });

  test("cancel: a queued job never runs, a running job's signal aborts; retry queues it again", async () => {
    const name = `cancel-${randomUUID()}`;
    const producer = await openQueue(name);
    const waiting = (await producer.enqueue(spec("waiting"))).job;
    assert.equal(await producer.cancel(waiting.id), true);
    const cancelledWaiting = await producer.get(waiting.id);
    assert.equal(cancelledWaiting?.state, "cancelled");
    assert.equal(cancelledWaiting?.error?.code, "CANCELLED");
    const requeued = await producer.enqueue(spec("waiting"));
    assert.equal(requeued.duplicate, false, "a cancelled job no longer holds its digest");
    assert.equal(await producer.cancel(requeued.job.id), true);

    const worker = await openQueue(name);
    const ran: string[] = [];
    let aborted = false;
    worker.work(
      async (job, { signal }) => {
        ran.push(job.id);
        if (job.spec.source.includes(":slow@")) {
          await new Promise<void>((_resolve, reject) => {
            signal.addEventListener("abort", () => {
              aborted = true;
              reject(signal.reason);
            });
          });
        }
        return patched(job);
      },
      { concurrency: 1 },
    );
    const slow = (await producer.enqueue(spec("slow"))).job;
    await waitFor(producer, slow.id, ["running"]);
    assert.equal(await producer.cancel(slow.id), true);
    const cancelledRunning = await waitFor(producer, slow.id, ["cancelled", "failed"]);
    assert.equal(cancelledRunning.state, "cancelled");
    assert.equal(aborted, true, "the handler's signal aborted");
    assert.equal(cancelledRunning.attempts, 1, "a cancelled job is not retried");
    assert.equal(await producer.cancel(slow.id), false, "an ended job cannot be cancelled");
    assert.ok(!ran.includes(waiting.id) && !ran.includes(requeued.job.id), "cancelled queued jobs never ran");

    const cancelledList = await producer.list({ state: "cancelled" });
    assert.deepEqual(
      new Set(cancelledList.map((j) => j.id)),
      new Set([waiting.id, requeued.job.id, slow.id]),
    );

    const retried = await producer.retry(waiting.id);
    assert.ok(retried);
    assert.notEqual(retried.id, waiting.id);
    assert.deepEqual(retried.spec, waiting.spec);
    assert.equal((await waitFor(producer, retried.id, ["succeeded"])).state, "succeeded");
    assert.equal(await producer.retry(retried.id), undefined, "a succeeded job is not retried");
  });

  test("progress and state reach a subscriber in another process's queue", async () => {
    const name = `events-${randomUUID()}`;
    const producer = await openQueue(name);
    await producer.eventsReady();
    const worker = await openQueue(name);
    const job = (await producer.enqueue(spec("progress"))).job;
    const seen: JobEvent[] = [];
    const ended = new Promise<void>((resolve) => {
      producer.subscribe(job.id, (e) => {
        seen.push(e);
        if (e.type === "job-state" && e.state === "succeeded") resolve();
      });
    });
    worker.work(
      async (j, { progress }) => {
        progress({ type: "step", step: "patch", message: "updating 3 packages" });
        progress({ type: "package", name: "libssl3", from: "3.0.11-1", to: "3.0.15-1", status: "updated" });
        return patched(j);
      },
      { concurrency: 1 },
    );
    await ended;
    assert.deepEqual(
      seen.filter((e) => e.type !== "job-state"),
      [
        { type: "step", step: "patch", message: "updating 3 packages" },
        { type: "package", name: "libssl3", from: "3.0.11-1", to: "3.0.15-1", status: "updated" },
      ],
    );
    assert.ok(seen.some((e) => e.type === "job-state" && e.state === "running"));
    // The job's log keeps the same events for a client that connects later.
    await sleep(100);
    const log = await producer.events(job.id);
    assert.deepEqual(
      log.map((e) => e.type),
      ["job-state", "job-state", "step", "package", "job-state"],
    );
  });

  test("a worker that stops hands its running job back at once; another worker finishes it", async () => {
    const name = `handback-${randomUUID()}`;
    const producer = await openQueue(name);
    const stopping = await openQueue(name);
    let abortedOnStop = false;
    let handlerStarted!: () => void;
    const inHandler = new Promise<void>((resolve) => {
      handlerStarted = resolve;
    });
    stopping.work(
      (_job, { signal }) =>
        new Promise<JobOutcome>((_resolve, reject) => {
          signal.addEventListener("abort", () => {
            abortedOnStop = true;
            reject(signal.reason);
          });
          handlerStarted();
        }),
      { concurrency: 1 },
    );
    const job = (await producer.enqueue(spec("handback"))).job;
    await inHandler;
    await stopping.close();
    assert.equal(abortedOnStop, true, "the running handler was aborted, so it cleaned up");
    assert.equal((await producer.get(job.id))?.state, "queued", "back in the queue, not failed or cancelled");

    const next = await openQueue(name);
    const started = Date.now();
    next.work(async (j) => patched(j), { concurrency: 1 });
    const done = await waitFor(producer, job.id, ["succeeded"]);
    assert.ok(Date.now() - started < 1500, "taken at once, not after a lock or a backoff expired");
    assert.equal(done.attempts, 2);
    assert.equal(done.error, undefined);
  });

  test("rate limit per registry: a registry over its limit waits for its window, others do not", async () => {
    const name = `rate-${randomUUID()}`;
    const producer = await openQueue(name);
    const worker = await openQueue(name, { registryRateLimit: { max: 2, windowMs: 1500 } });
    const starts = new Map<string, number>();
    worker.work(
      async (job) => {
        starts.set(job.id, Date.now());
        return patched(job);
      },
      { concurrency: 4 },
    );
    const t0 = Date.now();
    const busy = await Promise.all(
      ["a", "b", "c"].map(async (t) => (await producer.enqueue(spec(t, "busy.example"))).job),
    );
    const quiet = (await producer.enqueue(spec("q", "quiet.example"))).job;
    for (const j of [...busy, quiet]) await waitFor(producer, j.id, ["succeeded"]);
    const busyStarts = busy.map((j) => (starts.get(j.id) ?? 0) - t0).sort((a, b) => a - b);
    assert.ok(busyStarts[1] < 1000, `two jobs of busy.example start at once (${busyStarts})`);
    assert.ok(busyStarts[2] >= 1300, `the third waits for the next window (${busyStarts})`);
    assert.ok((starts.get(quiet.id) ?? 0) - t0 < 1000, "quiet.example is not held back");
    for (const j of busy)
      assert.equal((await producer.get(j.id))?.attempts, 1, "waiting for the limit spends no attempt");
  });

  test("30 queued jobs, two worker processes, one killed with SIGKILL in the middle of a job: the job is taken over, every job runs to its end exactly once", async (t) => {
    const name = `kill-${randomUUID()}`;
    const journal = join(scratch, `${name}.journal`);
    writeFileSync(journal, "");
    const producer = await openQueue(name);
    const workers: ChildProcess[] = [];
    const startWorker = async () => {
      const child = spawn(
        process.execPath,
        [join(import.meta.dirname, "../lab/queue-worker-process.ts"), redis.url, name, journal],
        { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, SUTURE_LAB_JOB_MS: "400" } },
      );
      workers.push(child);
      await new Promise<void>((resolve, reject) => {
        child.stdout?.once("data", () => resolve());
        child.once("exit", (code) => reject(new Error(`worker exited early (${code})`)));
      });
      return child;
    };
    try {
      const [victim, survivor] = [await startWorker(), await startWorker()];
      const queuedAt = Date.now();
      const jobs = await Promise.all(
        Array.from({ length: 30 }, async (_, i) => (await producer.enqueue(spec(`k${i}`))).job),
      );

      // Wait until the victim is in the middle of a job, then kill it without a chance to clean up.
      let killedJob: string | undefined;
      const deadline = Date.now() + 20_000;
      while (!killedJob && Date.now() < deadline) {
        const started = readFileSync(journal, "utf8")
          .split("\n")
          .filter((l) => l.startsWith("start ") && l.endsWith(` ${victim.pid}`));
        killedJob = started.at(-1)?.split(" ")[1];
        if (!killedJob) await sleep(50);
      }
      assert.ok(killedJob, "the victim started a job");
      await sleep(150);
      victim.kill("SIGKILL");
      const killedAt = Date.now();

      for (const j of jobs) await waitFor(producer, j.id, ["succeeded", "failed"], 60_000);
      const killedJobEnd = Date.parse((await producer.get(killedJob))?.finishedAt ?? "");
      t.diagnostic(
        `30 jobs of 400 ms, 2 workers, one killed: all done ${((Date.now() - queuedAt) / 1000).toFixed(1)} s after queueing; the killed job finished ${((killedJobEnd - killedAt) / 1000).toFixed(1)} s after the kill (lock 2 s, stalled check 1 s)`,
      );
      const lines = readFileSync(journal, "utf8").trim().split("\n");
      for (const j of jobs) {
        const record = await producer.get(j.id);
        assert.equal(record?.state, "succeeded", `${j.id} succeeded`);
        const done = lines.filter((l) => l.startsWith(`done ${j.id} `));
        assert.equal(done.length, 1, `${j.id} finished exactly once: ${done}`);
      }
      const killedRuns = lines.filter((l) => l.startsWith(`start ${killedJob} `));
      assert.equal(killedRuns.length, 2, "the killed job ran again");
      assert.equal(
        lines.find((l) => l.startsWith(`done ${killedJob} `)),
        `done ${killedJob} ${survivor.pid}`,
      );
      assert.equal(
        lines
          .filter((l) => l.startsWith("done ") && l.endsWith(` ${victim.pid}`))
          .every((l) => l.split(" ")[1] !== killedJob),
        true,
      );
      assert.equal((await producer.get(killedJob))?.attempts, 2);
    } finally {
      for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill("SIGKILL");
    }
  });
});
