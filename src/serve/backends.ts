/**
 * Which queue and store a service process uses: the embedded ones by default (nothing to install),
 * BullMQ on Redis with `--redis URL` and Postgres with `--database URL`. `suture serve` and
 * `suture worker` both choose here, so a worker always meets the queue and state serve writes.
 */
import { join } from "node:path";
import { quoteUntrusted, redact, SutureError } from "../errors/errors.ts";
import { MemoryQueue } from "./memory-queue.ts";
import type { JobQueue } from "./queue.ts";
import type { BullmqQueueOptions } from "./queue-bullmq.ts";
import { openSqliteStore } from "./sqlite-store.ts";
import type { ServiceStore } from "./store.ts";

/** The embedded store's file in a service's state directory. */
export const EMBEDDED_STATE_FILE = "state.db";

export interface QueueChoice extends Omit<BullmqQueueOptions, "url"> {
  /** `redis://…`: the scaled-out queue; undefined: the in-process one. */
  redis?: string;
}

/** `--redis URL`'s queue (after Redis answered), or the embedded in-process queue without it. */
export async function openServiceQueue(choice: QueueChoice): Promise<JobQueue> {
  if (choice.redis === undefined)
    return new MemoryQueue({ maxAttempts: choice.attempts, backoffMs: choice.backoffMs });
  checkUrl("--redis", choice.redis, ["redis:", "rediss:"], "redis://HOST:6379");
  // BullMQ, ioredis and pg (with theirs) are loaded only by the process that uses them: every other
  // command starts without them.
  const { BullmqJobQueue } = await import("./queue-bullmq.ts");
  const queue = new BullmqJobQueue({ ...choice, url: choice.redis });
  try {
    await queue.ready();
  } catch (e) {
    await queue.close().catch(() => {});
    throw e;
  }
  return queue;
}

/** `--database URL`'s Postgres store (schema migrated), or the embedded store in `stateDir`. */
export async function openServiceStore(choice: {
  database?: string;
  stateDir?: string;
}): Promise<ServiceStore> {
  if (choice.database !== undefined) {
    checkUrl("--database", choice.database, ["postgres:", "postgresql:"], "postgres://USER@HOST:5432/DB");
    const { openPostgresStore } = await import("./store-postgres.ts");
    return openPostgresStore(choice.database);
  }
  if (choice.stateDir === undefined)
    throw new SutureError(
      "USAGE",
      "no state to work on: give --database postgres://… (the service's Postgres) or --state-dir DIR (its embedded store on this machine)",
    );
  return openSqliteStore(join(choice.stateDir, EMBEDDED_STATE_FILE));
}

function checkUrl(flag: string, value: string, protocols: string[], example: string): void {
  let protocol: string | undefined;
  try {
    protocol = new URL(value).protocol;
  } catch {
    protocol = undefined;
  }
  if (!protocol || !protocols.includes(protocol))
    throw new SutureError(
      "USAGE",
      `invalid ${flag} ${quoteUntrusted(redact(value))}: give a URL like ${example}`,
    );
}
