/**
 * The job queue contract of `suture serve`. The embedded queue (`memory-queue.ts`) and the BullMQ
 * queue of the scaled-out mode implement it; both run the same job code (`job.ts`) through
 * `work(handler)`, so one node and a fleet of workers patch alike.
 */
import type { ProgressEvent } from "../progress/events.ts";

/** What to patch: everything a worker needs, with no state of the service behind it. */
export interface PatchJobSpec {
  /** The rule that asked for it (its target template, platforms and scanner apply). */
  ruleId: string;
  /** The source image pinned by digest: `registry/repo:tag@sha256:…`. */
  source: string;
  /** The patched reference to write: `registry/repo:tag` (the rule's template already applied). */
  target: string;
  /** Platforms to patch; undefined = every linux platform of an index. */
  platforms?: string[];
  reason: "new-tag" | "moved-tag" | "new-fixes" | "manual" | "hook";
}

export type JobState = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface JobOutcome {
  status: "patched" | "up-to-date" | "skipped";
  /** The reference written (patched) or kept (up-to-date/skipped). */
  target?: string;
  /** The digest of what was pushed under `target`. */
  digest?: string;
  /** Packages updated. */
  changed: { name: string; from?: string; to: string }[];
  /** Per platform of the image (one entry for a single-platform image), in index order. */
  platforms?: PlatformOutcome[];
  /** Vulnerabilities the patch fixed (from the scanner's report; empty for update-all). */
  cves: string[];
  /** The OpenVEX document written for the patched image (JSON text). */
  vex?: string;
}

export interface PlatformOutcome {
  /** `linux/amd64`. */
  platform: string;
  status: "patched" | "up-to-date" | "dry-run" | "skipped" | "failed";
  /** Why a platform was skipped or failed. */
  reason?: string;
  /** Packages updated on this platform, and left out. */
  changed: number;
  failed: number;
  /** The platform's manifest digest as written. */
  digest?: string;
}

export interface JobRecord {
  id: string;
  spec: PatchJobSpec;
  state: JobState;
  /** Runs started so far (1 on the first run). */
  attempts: number;
  /** ISO 8601 times. */
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  /** The last failure: a SutureError code and its one-line message. */
  error?: { code: string; message: string };
  result?: JobOutcome;
}

export type JobEvent = ProgressEvent | { type: "job-state"; state: JobState };

export type JobHandler = (
  job: JobRecord,
  ctx: { progress: (e: ProgressEvent) => void; signal: AbortSignal },
) => Promise<JobOutcome>;

export interface JobQueue {
  /** One job per source digest at a time: a spec whose source digest is queued/running returns that job. */
  enqueue(spec: PatchJobSpec): Promise<{ job: JobRecord; duplicate: boolean }>;
  get(id: string): Promise<JobRecord | undefined>;
  /** Newest first. */
  list(filter?: { state?: JobState; ruleId?: string; limit?: number }): Promise<JobRecord[]>;
  /** Cancel a queued or running job (a running one's signal aborts); false if it had already ended. */
  cancel(id: string): Promise<boolean>;
  /** Queue a failed or cancelled job again (a new attempt of the same spec); undefined if unknown or not ended. */
  retry(id: string): Promise<JobRecord | undefined>;
  /** Consume jobs until close(); retries with backoff; progress events published to subscribers. */
  work(handler: JobHandler, options: { concurrency: number }): void;
  /** Live events of one job (progress and state changes); returns the unsubscribe function. */
  subscribe(id: string, listener: (e: JobEvent) => void): () => void;
  /** Recent events of one job (its log), oldest first. */
  events(id: string): Promise<JobEvent[]>;
  close(): Promise<void>;
}

/** The digest part of a pinned reference (`…@sha256:…`), the queue's dedupe key. */
export function sourceDigest(source: string): string {
  const at = source.lastIndexOf("@");
  return at < 0 ? source : source.slice(at + 1);
}
