/**
 * The embedded job queue of `suture serve` (one machine, nothing to install): jobs live in this
 * process, `concurrency` run at once, a failure that may pass (network, registry, timeout) is tried
 * again after a growing pause, and one source digest has at most one job queued or running.
 * Jobs do not survive a restart: the watcher finds the same changes again (the seen-digest store
 * is only written once a job for the digest succeeded).
 */
import { randomUUID } from "node:crypto";
import { isSutureError, SutureError } from "../errors/errors.ts";
import type { ProgressEvent } from "../progress/events.ts";
import {
  type JobEvent,
  type JobHandler,
  type JobQueue,
  type JobRecord,
  type JobState,
  type PatchJobSpec,
  sourceDigest,
} from "./queue.ts";

/** Codes of failures another attempt may not meet. The others (a bad image, a refused package) would fail again. */
const RETRYABLE = new Set(["NETWORK", "REGISTRY", "TIMEOUT", "IO", "DAEMON", "INTERNAL"]);
/** A job's log keeps its newest events only: a chatty patch must not grow the service without bound. */
const MAX_EVENTS_PER_JOB = 2000;
/** Ended jobs kept for the API (newest); older ones live on as results in the store. */
const MAX_ENDED_JOBS = 1000;

export interface MemoryQueueOptions {
  /** Runs of one job at most (default 3). */
  maxAttempts?: number;
  /** The pause before the second run; doubled for each further one (default 5 s). */
  backoffMs?: number;
}

interface Entry {
  record: JobRecord;
  events: JobEvent[];
  listeners: Set<(e: JobEvent) => void>;
  /** Not run before this time (backoff). */
  notBefore: number;
  abort?: AbortController;
}

export class MemoryQueue implements JobQueue {
  readonly #entries = new Map<string, Entry>();
  readonly #maxAttempts: number;
  readonly #backoffMs: number;
  #handler?: JobHandler;
  #concurrency = 1;
  #running = 0;
  #closed = false;
  #timer?: NodeJS.Timeout;
  readonly #inflight = new Set<Promise<void>>();

  constructor(options: MemoryQueueOptions = {}) {
    this.#maxAttempts = options.maxAttempts ?? 3;
    this.#backoffMs = options.backoffMs ?? 5000;
  }

  async enqueue(spec: PatchJobSpec): Promise<{ job: JobRecord; duplicate: boolean }> {
    if (this.#closed) throw new SutureError("CANCELLED", "the job queue is closed");
    const digest = sourceDigest(spec.source);
    for (const e of this.#entries.values()) {
      const s = e.record.state;
      if ((s === "queued" || s === "running") && sourceDigest(e.record.spec.source) === digest)
        return { job: structuredClone(e.record), duplicate: true };
    }
    const record: JobRecord = {
      id: randomUUID(),
      spec: structuredClone(spec),
      state: "queued",
      attempts: 0,
      createdAt: new Date().toISOString(),
    };
    this.#entries.set(record.id, { record, events: [], listeners: new Set(), notBefore: 0 });
    this.#forgetOld();
    this.#pump();
    return { job: structuredClone(record), duplicate: false };
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const e = this.#entries.get(id);
    return e && structuredClone(e.record);
  }

  async list(filter: { state?: JobState; ruleId?: string; limit?: number } = {}): Promise<JobRecord[]> {
    const out: JobRecord[] = [];
    for (const e of [...this.#entries.values()].reverse()) {
      if (filter.state && e.record.state !== filter.state) continue;
      if (filter.ruleId && e.record.spec.ruleId !== filter.ruleId) continue;
      out.push(structuredClone(e.record));
      if (filter.limit && out.length >= filter.limit) break;
    }
    return out;
  }

  async cancel(id: string): Promise<boolean> {
    const e = this.#entries.get(id);
    if (!e) return false;
    if (e.record.state === "queued") {
      this.#setState(e, "cancelled");
      e.record.finishedAt = new Date().toISOString();
      return true;
    }
    if (e.record.state === "running") {
      e.abort?.abort(new SutureError("CANCELLED", `job ${id} was cancelled`));
      return true;
    }
    return false;
  }

  async retry(id: string): Promise<JobRecord | undefined> {
    const e = this.#entries.get(id);
    if (!e || (e.record.state !== "failed" && e.record.state !== "cancelled")) return undefined;
    const { job, duplicate } = await this.enqueue({ ...e.record.spec, reason: "manual" });
    return duplicate ? undefined : job;
  }

  work(handler: JobHandler, options: { concurrency: number }): void {
    this.#handler = handler;
    this.#concurrency = Math.max(1, options.concurrency);
    this.#pump();
  }

  subscribe(id: string, listener: (e: JobEvent) => void): () => void {
    const e = this.#entries.get(id);
    if (!e) return () => {};
    e.listeners.add(listener);
    return () => e.listeners.delete(listener);
  }

  async events(id: string): Promise<JobEvent[]> {
    return [...(this.#entries.get(id)?.events ?? [])];
  }

  /** Stop taking jobs, abort the running ones and wait for them to unwind. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const e of this.#entries.values())
      e.abort?.abort(new SutureError("CANCELLED", "suture serve is shutting down"));
    await Promise.allSettled([...this.#inflight]);
  }

  #publish(e: Entry, event: JobEvent): void {
    e.events.push(event);
    if (e.events.length > MAX_EVENTS_PER_JOB) e.events.splice(0, e.events.length - MAX_EVENTS_PER_JOB);
    for (const l of e.listeners) {
      try {
        l(event);
      } catch {
        // A listener (an SSE stream gone away) must not break the job.
      }
    }
  }

  #setState(e: Entry, state: JobState): void {
    e.record.state = state;
    this.#publish(e, { type: "job-state", state });
  }

  #forgetOld(): void {
    const ended = [...this.#entries.values()].filter((e) =>
      ["succeeded", "failed", "cancelled"].includes(e.record.state),
    );
    for (const e of ended.slice(0, Math.max(0, ended.length - MAX_ENDED_JOBS)))
      this.#entries.delete(e.record.id);
  }

  #pump(): void {
    if (this.#closed || !this.#handler) return;
    clearTimeout(this.#timer);
    const now = Date.now();
    let wake = Number.POSITIVE_INFINITY;
    for (const e of this.#entries.values()) {
      if (this.#running >= this.#concurrency) break;
      if (e.record.state !== "queued") continue;
      if (e.notBefore > now) {
        wake = Math.min(wake, e.notBefore);
        continue;
      }
      const run = this.#run(e);
      this.#inflight.add(run);
      void run.finally(() => this.#inflight.delete(run));
    }
    if (wake !== Number.POSITIVE_INFINITY) this.#timer = setTimeout(() => this.#pump(), wake - now);
  }

  async #run(e: Entry): Promise<void> {
    this.#running++;
    const abort = new AbortController();
    e.abort = abort;
    e.record.attempts++;
    e.record.startedAt = new Date().toISOString();
    e.record.error = undefined;
    this.#setState(e, "running");
    try {
      const outcome = await this.#handler!(structuredClone(e.record), {
        progress: (event: ProgressEvent) => this.#publish(e, event),
        signal: abort.signal,
      });
      e.record.result = outcome;
      e.record.finishedAt = new Date().toISOString();
      this.#setState(e, "succeeded");
    } catch (err) {
      const error = abort.signal.aborted && abort.signal.reason ? abort.signal.reason : err;
      const code = isSutureError(error) ? error.code : "INTERNAL";
      e.record.error = { code, message: error instanceof Error ? error.message : String(error) };
      if (abort.signal.aborted) {
        e.record.finishedAt = new Date().toISOString();
        this.#setState(e, "cancelled");
      } else if (RETRYABLE.has(code) && e.record.attempts < this.#maxAttempts && !this.#closed) {
        e.notBefore = Date.now() + this.#backoffMs * 2 ** (e.record.attempts - 1);
        this.#setState(e, "queued");
      } else {
        e.record.finishedAt = new Date().toISOString();
        this.#setState(e, "failed");
      }
    } finally {
      e.abort = undefined;
      this.#running--;
      this.#pump();
    }
  }
}
