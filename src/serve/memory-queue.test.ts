import assert from "node:assert/strict";
import { EventEmitter, once } from "node:events";
import { test } from "node:test";
import { SutureError } from "../errors/errors.ts";
import { MemoryQueue } from "./memory-queue.ts";
import type { JobOutcome, PatchJobSpec } from "./queue.ts";

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;
const spec = (digest: string, tag = "1.0"): PatchJobSpec => ({
  ruleId: "r",
  source: `127.0.0.1:5000/app:${tag}@${digest}`,
  target: `127.0.0.1:5000/app:${tag}-patched`,
  reason: "new-tag",
});
const outcome: JobOutcome = { status: "patched", changed: [], cves: [] };

async function settled(queue: MemoryQueue, id: string): Promise<string> {
  for (;;) {
    const j = await queue.get(id);
    if (j && ["succeeded", "failed", "cancelled"].includes(j.state)) return j.state;
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("one job per source digest while it is queued or running; another digest is its own job", async () => {
  const queue = new MemoryQueue();
  const a = await queue.enqueue(spec(D1));
  const again = await queue.enqueue(spec(D1, "latest"));
  const b = await queue.enqueue(spec(D2));
  assert.equal(a.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.job.id, a.job.id);
  assert.equal(b.duplicate, false);
  const gate = new EventEmitter();
  let running = 0;
  let most = 0;
  queue.work(
    async (_job, { signal }) => {
      most = Math.max(most, ++running);
      await once(gate, "go", { signal }).finally(() => running--);
      return outcome;
    },
    { concurrency: 1 },
  );
  await new Promise((r) => setTimeout(r, 20));
  assert.equal((await queue.enqueue(spec(D1))).duplicate, true, "running counts too");
  gate.emit("go");
  await settled(queue, a.job.id);
  await new Promise((r) => setTimeout(r, 20));
  gate.emit("go");
  assert.equal(await settled(queue, b.job.id), "succeeded");
  assert.equal(most, 1, "concurrency 1");
  // Once done, the same digest may be queued again (e.g. new fixes).
  assert.equal((await queue.enqueue(spec(D1))).duplicate, false);
  await queue.close();
});

test("a failure that may pass is retried with backoff; one that would fail again is not", async () => {
  const queue = new MemoryQueue({ backoffMs: 30, maxAttempts: 3 });
  const starts: number[] = [];
  queue.work(
    async (job) => {
      starts.push(Date.now());
      if (job.spec.source.includes(D2)) throw new SutureError("UNSUPPORTED_OS", "no package manager");
      if (job.attempts < 3) throw new SutureError("NETWORK", "connection reset");
      return outcome;
    },
    { concurrency: 2 },
  );
  const flaky = await queue.enqueue(spec(D1));
  assert.equal(await settled(queue, flaky.job.id), "succeeded");
  assert.equal((await queue.get(flaky.job.id))?.attempts, 3);
  assert.ok(starts[1]! - starts[0]! >= 25 && starts[2]! - starts[1]! >= 55, `backoff doubles: ${starts}`);
  const broken = await queue.enqueue(spec(D2));
  assert.equal(await settled(queue, broken.job.id), "failed");
  const failed = await queue.get(broken.job.id);
  assert.equal(failed?.attempts, 1);
  assert.equal(failed?.error?.code, "UNSUPPORTED_OS");
  await queue.close();
});

test("cancel aborts a running job; retry queues it again; subscribers see the states", async () => {
  const queue = new MemoryQueue();
  let fail = true;
  queue.work(
    async (_job, { signal, progress }) => {
      progress({ type: "info", message: "working" });
      if (!fail) return outcome;
      await new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
      return outcome;
    },
    { concurrency: 1 },
  );
  const { job } = await queue.enqueue(spec(D1));
  const seen: string[] = [];
  queue.subscribe(job.id, (e) => seen.push(e.type === "job-state" ? e.state : e.type));
  while ((await queue.get(job.id))?.state !== "running") await new Promise((r) => setTimeout(r, 5));
  assert.equal(await queue.cancel(job.id), true);
  assert.equal(await settled(queue, job.id), "cancelled");
  assert.equal(await queue.cancel(job.id), false);
  fail = false;
  const again = await queue.retry(job.id);
  assert.ok(again);
  assert.equal(again.spec.reason, "manual");
  assert.equal(await settled(queue, again.id), "succeeded");
  assert.deepEqual(seen.slice(-1), ["cancelled"]);
  assert.ok((await queue.events(again.id)).some((e) => e.type === "info"));
  await queue.close();
});
