/**
 * The scaled-out JobQueue: BullMQ on Redis. `suture serve --redis URL` enqueues here and any number
 * of `suture worker --redis URL` processes (and serve itself) consume, running the same job code as
 * the embedded queue. What each requirement maps to:
 *
 * - retries with backoff: BullMQ `attempts` + exponential `backoff`, for the same failures the
 *   embedded queue retries; the others (bad input, cancellation) fail at once (`UnrecoverableError`);
 * - a killed worker's job taken over: BullMQ's lock (`lockDuration`) and stalled-job check
 *   (`stalledInterval`) move it back to waiting, another worker runs it again;
 * - one job per image digest at a time: BullMQ deduplication keyed by the source digest, which
 *   BullMQ releases when the job completes or fails for good;
 * - rate limits per registry: a fixed-window counter per registry in Redis (one Lua call); a job
 *   over the limit is moved back to delayed without spending an attempt (BullMQ's own limiter is
 *   per queue, its groups are not in the open-source edition);
 * - progress across processes: `job.updateProgress` and BullMQ's QueueEvents stream; a job's log
 *   is a capped Redis list beside it; cancel is a Redis pub/sub message to every worker, which
 *   aborts the running job's signal (`worker.cancelJob`).
 */
import { randomUUID } from "node:crypto";
import { DelayedError, type Job, Queue, QueueEvents, UnrecoverableError, Worker } from "bullmq";
import { Redis } from "ioredis";
import { type ErrorCode, isSutureError, redact, SutureError } from "../errors/errors.ts";
import type { ProgressEvent } from "../progress/events.ts";
import { parseReference } from "../ref/reference.ts";
import {
  type JobEvent,
  type JobHandler,
  type JobOutcome,
  type JobQueue,
  type JobRecord,
  type JobState,
  type PatchJobSpec,
  sourceDigest,
} from "./queue.ts";

export interface BullmqQueueOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`). */
  url: string;
  /** BullMQ queue name (default `suture-patch`); services sharing a Redis use different names. */
  name?: string;
  /** Runs per job before it fails for good (default 3). */
  attempts?: number;
  /** The first retry's delay; each further retry doubles it (default 5 s, as the embedded queue). */
  backoffMs?: number;
  /** How long a worker's lock on a job lasts without renewal; a killed worker's job is taken over after it (default 30 s). */
  lockDurationMs?: number;
  /** How often workers look for jobs whose lock expired (default 30 s). */
  stalledIntervalMs?: number;
  /** Takeovers of one job before it fails (default 2). */
  maxStalledCount?: number;
  /** Jobs started per registry per window, counted across every worker (default: no limit). */
  registryRateLimit?: { max: number; windowMs: number };
  /** How long finished jobs stay in Redis (the service store keeps results for good; default 7 days). */
  keepFinishedMs?: number;
  /** Connection failures (the queue keeps reconnecting); the library never prints. */
  onConnectionError?: (error: Error) => void;
}

interface JobData {
  spec: PatchJobSpec;
}

/**
 * Failures another run may not meet; the others (a bad image, a refused package) would fail the
 * same way again. The same list as the embedded queue's (memory-queue.ts), so both modes retry alike.
 */
const RETRYABLE: ReadonlySet<string> = new Set<ErrorCode>([
  "NETWORK",
  "REGISTRY",
  "TIMEOUT",
  "IO",
  "DAEMON",
  "INTERNAL",
]);

const QUEUED_TYPES = ["waiting", "delayed", "prioritized", "waiting-children"] as const;
const EVENTS_KEPT = 500;
/** A blob's byte counts are forwarded at most this often (each is a Redis write and a stream entry). */
const BLOB_EVENT_INTERVAL_MS = 1000;

/** Count a job start against its registry's window; returns 0 when allowed, else ms until the window ends. */
const RATE_LIMIT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if count > tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return ttl
end
return 0`;

export class BullmqJobQueue implements JobQueue {
  readonly #options: Required<Omit<BullmqQueueOptions, "registryRateLimit" | "onConnectionError">> &
    Pick<BullmqQueueOptions, "registryRateLimit">;
  readonly #connections: Redis[] = [];
  readonly #redis: Redis;
  readonly #queue: Queue<JobData, JobOutcome>;
  #worker?: Worker<JobData, JobOutcome>;
  #events?: QueueEvents;
  #cancelSubscriber?: Redis;
  readonly #listeners = new Map<string, Set<(e: JobEvent) => void>>();
  readonly #onConnectionError?: (error: Error) => void;
  /** The running jobs' aborts, by job id: close() hands them back to the queue. */
  readonly #running = new Map<string, AbortController>();
  #closing = false;
  #closed?: Promise<void>;

  constructor(options: BullmqQueueOptions) {
    this.#options = {
      url: options.url,
      name: options.name ?? "suture-patch",
      attempts: options.attempts ?? 3,
      backoffMs: options.backoffMs ?? 5000,
      lockDurationMs: options.lockDurationMs ?? 30_000,
      stalledIntervalMs: options.stalledIntervalMs ?? 30_000,
      maxStalledCount: options.maxStalledCount ?? 2,
      keepFinishedMs: options.keepFinishedMs ?? 7 * 24 * 3600_000,
      registryRateLimit: options.registryRateLimit,
    };
    this.#onConnectionError = options.onConnectionError;
    this.#redis = this.#connect();
    const keep = { age: Math.ceil(this.#options.keepFinishedMs / 1000), count: 10_000 };
    this.#queue = new Queue<JobData, JobOutcome>(this.#options.name, {
      connection: this.#connect(),
      prefix: "suture",
      defaultJobOptions: {
        attempts: this.#options.attempts,
        backoff: { type: "exponential", delay: this.#options.backoffMs },
        removeOnComplete: keep,
        removeOnFail: keep,
      },
    });
  }

  /** Wait until Redis answers: a wrong URL is one clear error at start, not a silent retry loop. */
  async ready(timeoutMs = 10_000): Promise<void> {
    const timeout = AbortSignal.timeout(timeoutMs);
    while (true) {
      try {
        await this.#redis.ping();
        return;
      } catch (e) {
        if (timeout.aborted) {
          throw new SutureError(
            "NETWORK",
            `cannot reach Redis at ${redact(this.#options.url)}: ${(e as Error).message}; check --redis and that redis-server runs`,
            { cause: e },
          );
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async enqueue(spec: PatchJobSpec): Promise<{ job: JobRecord; duplicate: boolean }> {
    const digest = sourceDigest(spec.source);
    for (let attempt = 0; attempt < 3; attempt++) {
      const id = randomUUID();
      const added = await this.#queue.add("patch", { spec }, { jobId: id, deduplication: { id: digest } });
      if (added.id === id) {
        await this.#log(id, { type: "job-state", state: "queued" });
        const job = await this.get(id);
        if (job) return { job, duplicate: false };
        continue; // gone already (cancelled in between): queue again
      }
      // BullMQ answered with the job that holds this digest.
      const existing = added.id ? await this.get(added.id) : undefined;
      if (existing && (existing.state === "queued" || existing.state === "running")) {
        return { job: existing, duplicate: true };
      }
      // It ended between the check and now and its key was not yet released: try again.
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new SutureError("INTERNAL", `could not queue a job for ${digest}: its previous job never ended`);
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const job = await this.#queue.getJob(id);
    if (!job) return this.#tombstone(id);
    const state = await job.getState();
    if (state === "unknown") return this.#tombstone(id);
    const meta = await this.#meta(id);
    const mapped = bullmqState(state);
    return this.#record(job, meta, mapped === "failed" && meta.cancelled ? "cancelled" : mapped);
  }

  async list(filter: { state?: JobState; ruleId?: string; limit?: number } = {}): Promise<JobRecord[]> {
    const limit = Math.max(1, Math.min(filter.limit ?? 100, 1000));
    // A rule filter applies after the fetch: look at more jobs so `limit` of them can match.
    const fetch = filter.ruleId ? Math.min(limit * 10, 5000) : limit;
    const groups: {
      state: "queued" | "running" | "succeeded" | "ended-badly";
      types: Parameters<Queue["getJobs"]>[0];
    }[] = [
      { state: "queued", types: [...QUEUED_TYPES] },
      { state: "running", types: ["active"] },
      { state: "succeeded", types: ["completed"] },
      { state: "ended-badly", types: ["failed"] },
    ];
    const wanted = groups.filter((g) => {
      if (!filter.state) return true;
      if (g.state === "ended-badly") return filter.state === "failed" || filter.state === "cancelled";
      return g.state === filter.state;
    });
    const records: JobRecord[] = [];
    for (const group of wanted) {
      const jobs = await this.#queue.getJobs(group.types, 0, fetch - 1, false);
      for (const job of jobs) {
        if (!job?.id) continue;
        const meta = await this.#meta(job.id);
        const state: JobState =
          group.state === "ended-badly" ? (meta.cancelled ? "cancelled" : "failed") : group.state;
        records.push(this.#record(job, meta, state));
      }
    }
    if (!filter.state || filter.state === "cancelled") {
      const ids = await this.#redis.zrevrange(this.#key("cancelled"), 0, fetch - 1);
      for (const id of ids) {
        const record = await this.#tombstone(id);
        if (record) records.push(record);
      }
    }
    return records
      .filter((r) => !filter.state || r.state === filter.state)
      .filter((r) => !filter.ruleId || r.spec.ruleId === filter.ruleId)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
      .slice(0, limit);
  }

  async cancel(id: string): Promise<boolean> {
    const job = await this.#queue.getJob(id);
    if (!job) return false;
    const state = await job.getState();
    if (state === "completed" || state === "failed" || state === "unknown") return false;
    // Marked first: a worker that takes the job from here on discards it before running it.
    await this.#redis.hset(this.#key(`job:${id}`), "cancelled", "1");
    await this.#redis.pexpire(this.#key(`job:${id}`), this.#options.keepFinishedMs);
    if (state !== "active") {
      const record = this.#record(job, await this.#meta(id), "cancelled");
      try {
        await job.remove();
      } catch {
        // It became active in between: the running worker sees the mark or the message below.
        await this.#redis.publish(this.#key("cancel"), id);
        return true;
      }
      const finishedAt = new Date().toISOString();
      const tombstone: JobRecord = { ...record, finishedAt, error: cancelledError() };
      await this.#redis.hset(this.#key(`job:${id}`), "tombstone", JSON.stringify(tombstone));
      await this.#redis.zadd(this.#key("cancelled"), Date.now(), id);
      await this.#log(id, { type: "job-state", state: "cancelled" });
      this.#deliver(id, { type: "job-state", state: "cancelled" });
      return true;
    }
    await this.#redis.publish(this.#key("cancel"), id);
    return true;
  }

  async retry(id: string): Promise<JobRecord | undefined> {
    const record = await this.get(id);
    if (!record || (record.state !== "failed" && record.state !== "cancelled")) return undefined;
    return (await this.enqueue(record.spec)).job;
  }

  work(handler: JobHandler, options: { concurrency: number }): void {
    if (this.#worker) throw new SutureError("INTERNAL", "work() was already called on this queue");
    const worker = new Worker<JobData, JobOutcome>(
      this.#options.name,
      (job, token, signal) => this.#process(job, token, signal, handler),
      {
        connection: this.#connect(),
        prefix: "suture",
        concurrency: Math.max(1, options.concurrency),
        lockDuration: this.#options.lockDurationMs,
        stalledInterval: this.#options.stalledIntervalMs,
        maxStalledCount: this.#options.maxStalledCount,
      },
    );
    worker.on("error", (e) => this.#onConnectionError?.(e));
    this.#worker = worker;
    const subscriber = this.#connect();
    this.#cancelSubscriber = subscriber;
    subscriber.on("message", (_channel: string, id: string) => worker.cancelJob(id, "cancelled"));
    void subscriber.subscribe(this.#key("cancel")).catch((e: Error) => this.#onConnectionError?.(e));
  }

  subscribe(id: string, listener: (e: JobEvent) => void): () => void {
    this.#ensureEvents();
    let set = this.#listeners.get(id);
    if (!set) {
      set = new Set();
      this.#listeners.set(id, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(id);
    };
  }

  async events(id: string): Promise<JobEvent[]> {
    const rows = await this.#redis.lrange(this.#key(`events:${id}`), 0, -1);
    return rows.map((row) => JSON.parse(row) as JobEvent);
  }

  /** Resolves once the event stream listens (subscribers miss nothing after it). */
  async eventsReady(): Promise<void> {
    await this.#ensureEvents().waitUntilReady();
  }

  /**
   * Stop: running jobs are aborted (their sandboxes cleaned up) and put back in the queue at once,
   * without spending an attempt, for another worker to run; then the connections close.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    for (const abort of this.#running.values()) abort.abort(shutdownReason());
    await this.#worker?.close();
    await this.#events?.close();
    await this.#queue.close();
    await Promise.all(this.#connections.map((c) => c.quit().catch(() => c.disconnect())));
  }

  async #process(
    job: Job<JobData, JobOutcome>,
    token: string | undefined,
    signal: AbortSignal | undefined,
    handler: JobHandler,
  ): Promise<JobOutcome> {
    // Registered before the first await: a close() from here on reaches this job too.
    const abort = new AbortController();
    const id = job.id as string;
    this.#running.set(id, abort);
    if (this.#closing) abort.abort(shutdownReason());
    try {
      return await this.#run(job, token, signal, handler, abort);
    } finally {
      this.#running.delete(id);
    }
  }

  async #run(
    job: Job<JobData, JobOutcome>,
    token: string | undefined,
    signal: AbortSignal | undefined,
    handler: JobHandler,
    abort: AbortController,
  ): Promise<JobOutcome> {
    const id = job.id as string;
    const metaKey = this.#key(`job:${id}`);
    if ((await this.#meta(id)).cancelled) {
      await this.#finishCancelled(id);
      throw new UnrecoverableError("cancelled before it started");
    }
    const limit = this.#options.registryRateLimit;
    if (limit && token) {
      const wait = Number(
        await this.#redis.eval(
          RATE_LIMIT_SCRIPT,
          1,
          this.#key(`rate:${registryOf(job.data.spec.source)}`),
          limit.max,
          limit.windowMs,
        ),
      );
      if (wait > 0) {
        // Back to delayed without spending an attempt; it starts when the registry's window ends.
        await job.moveToDelayed(Date.now() + wait, token);
        throw new DelayedError();
      }
    }
    await this.#redis.hincrby(metaKey, "attempts", 1);
    await this.#redis.pexpire(metaKey, this.#options.keepFinishedMs);
    await this.#log(id, { type: "job-state", state: "running" });
    const record = this.#record(job, await this.#meta(id), "running");
    const onAbort = () => abort.abort(new SutureError("CANCELLED", `job ${id} was cancelled`));
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    const lastBlobEvent = new Map<string, number>();
    const progress = (event: ProgressEvent) => {
      if (event.type === "blob" && event.bytes < event.total) {
        const now = Date.now();
        if (now - (lastBlobEvent.get(event.digest) ?? 0) < BLOB_EVENT_INTERVAL_MS) return;
        lastBlobEvent.set(event.digest, now);
      }
      void this.#log(id, event).catch(() => {});
      void job.updateProgress(event).catch(() => {});
    };
    try {
      abort.signal.throwIfAborted();
      const outcome = await handler(record, { progress, signal: abort.signal });
      await this.#log(id, { type: "job-state", state: "succeeded" });
      return outcome;
    } catch (e) {
      const cancelled = (await this.#meta(id)).cancelled || (signal?.aborted ?? false);
      if (this.#closing && !cancelled && token) {
        await this.#log(id, { type: "job-state", state: "queued" });
        await job.moveToDelayed(Date.now(), token);
        throw new DelayedError();
      }
      if (cancelled) {
        await this.#finishCancelled(id);
        throw new UnrecoverableError(`job ${id} was cancelled`);
      }
      const error = errorInfo(e);
      await this.#redis.hset(metaKey, "error", JSON.stringify(error));
      const final = !RETRYABLE.has(error.code) || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      await this.#log(id, { type: "job-state", state: final ? "failed" : "queued" });
      if (!RETRYABLE.has(error.code)) throw new UnrecoverableError(error.message);
      throw new Error(error.message);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  async #finishCancelled(id: string): Promise<void> {
    const metaKey = this.#key(`job:${id}`);
    await this.#redis.hset(metaKey, "cancelled", "1", "error", JSON.stringify(cancelledError()));
    await this.#log(id, { type: "job-state", state: "cancelled" });
  }

  #record(job: Job<JobData, JobOutcome>, meta: JobMeta, state: JobState): JobRecord {
    const record: JobRecord = {
      id: job.id as string,
      spec: job.data.spec,
      state,
      attempts: meta.attempts,
      createdAt: new Date(job.timestamp).toISOString(),
    };
    if (job.processedOn) record.startedAt = new Date(job.processedOn).toISOString();
    if (job.finishedOn && (state === "succeeded" || state === "failed" || state === "cancelled")) {
      record.finishedAt = new Date(job.finishedOn).toISOString();
    }
    if (meta.error && state !== "succeeded") record.error = meta.error;
    if (state === "succeeded" && job.returnvalue) record.result = job.returnvalue;
    return record;
  }

  async #meta(id: string): Promise<JobMeta> {
    const fields = await this.#redis.hgetall(this.#key(`job:${id}`));
    return {
      attempts: Number(fields.attempts ?? 0),
      cancelled: fields.cancelled === "1",
      error: fields.error ? (JSON.parse(fields.error) as JobRecord["error"]) : undefined,
      tombstone: fields.tombstone,
    };
  }

  async #tombstone(id: string): Promise<JobRecord | undefined> {
    const { tombstone } = await this.#meta(id);
    return tombstone ? (JSON.parse(tombstone) as JobRecord) : undefined;
  }

  async #log(id: string, event: JobEvent): Promise<void> {
    const key = this.#key(`events:${id}`);
    await this.#redis
      .multi()
      .rpush(key, JSON.stringify(event))
      .ltrim(key, -EVENTS_KEPT, -1)
      .pexpire(key, this.#options.keepFinishedMs)
      .exec();
  }

  #ensureEvents(): QueueEvents {
    if (this.#events) return this.#events;
    const events = new QueueEvents(this.#options.name, { connection: this.#connect(), prefix: "suture" });
    this.#events = events;
    events.on("error", (e) => this.#onConnectionError?.(e));
    events.on("progress", ({ jobId, data }) => {
      if (typeof data === "object" && data !== null) this.#deliver(jobId, data as ProgressEvent);
    });
    events.on("waiting", ({ jobId }) => this.#deliver(jobId, { type: "job-state", state: "queued" }));
    events.on("delayed", ({ jobId }) => this.#deliver(jobId, { type: "job-state", state: "queued" }));
    events.on("active", ({ jobId }) => this.#deliver(jobId, { type: "job-state", state: "running" }));
    events.on("completed", ({ jobId }) => this.#deliver(jobId, { type: "job-state", state: "succeeded" }));
    events.on("failed", ({ jobId }) => {
      if (!this.#listeners.has(jobId)) return;
      void this.#meta(jobId).then(
        (meta) => this.#deliver(jobId, { type: "job-state", state: meta.cancelled ? "cancelled" : "failed" }),
        () => {},
      );
    });
    return events;
  }

  #deliver(id: string, event: JobEvent): void {
    for (const listener of this.#listeners.get(id) ?? []) listener(event);
  }

  #key(suffix: string): string {
    return `suture:${this.#options.name}:suture:${suffix}`;
  }

  #connect(): Redis {
    // maxRetriesPerRequest null: BullMQ's blocking calls must wait through reconnects.
    const connection = new Redis(this.#options.url, { maxRetriesPerRequest: null });
    connection.on("error", (e: Error) => this.#onConnectionError?.(e));
    this.#connections.push(connection);
    return connection;
  }
}

interface JobMeta {
  attempts: number;
  cancelled: boolean;
  error?: JobRecord["error"];
  tombstone?: string;
}

function bullmqState(state: string): JobState {
  switch (state) {
    case "active":
      return "running";
    case "completed":
      return "succeeded";
    case "failed":
      return "failed";
    default:
      return "queued";
  }
}

function shutdownReason(): SutureError {
  return new SutureError("CANCELLED", "the worker is shutting down; the job goes back to the queue");
}

function cancelledError(): { code: string; message: string } {
  return { code: "CANCELLED", message: "the job was cancelled" };
}

function errorInfo(e: unknown): { code: string; message: string } {
  if (isSutureError(e)) return { code: e.code, message: e.message };
  return { code: "INTERNAL", message: e instanceof Error ? e.message : String(e) };
}

/** The registry a job's source lives on: the key of its rate limit. */
function registryOf(source: string): string {
  try {
    return parseReference(source).registry;
  } catch {
    return "unknown";
  }
}
