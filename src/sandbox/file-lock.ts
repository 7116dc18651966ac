import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { SutureError } from "../errors/errors.ts";
import type { ProgressSink } from "../progress/events.ts";

/**
 * What a lock file holds. Read back, it is checked: a pid of 0 or below would make the liveness
 * check (`kill(pid, 0)`) ask about a process group or every process instead of one process.
 */
const LockOwnerSchema = z.object({ pid: z.int().positive(), host: z.string(), started: z.string() });
type LockOwner = z.infer<typeof LockOwnerSchema>;

export interface FileLockOptions {
  signal?: AbortSignal;
  /** How long to wait for a live holder before giving up (default 10 min). */
  waitMs?: number;
  /** Called once when the lock is busy, so the caller can say why it waits. */
  onWait?: (owner: LockOwner | undefined) => void;
}

/**
 * Run `fn` while holding `lockPath` (a file created with O_EXCL holding the owner's pid), so two
 * suture processes sharing a cache do not run apt on the same lists at once: apt's own fcntl lock
 * would make the second fail instead of wait. A lock whose owner process is gone (same host) is
 * broken; the lock is removed when `fn` settles.
 */
export async function withFileLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  options: FileLockOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.waitMs ?? 10 * 60_000);
  let told = false;
  const me: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      await writeFile(lockPath, JSON.stringify(me), { flag: "wx" });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const owner = await readOwner(lockPath);
    if (owner && owner.host === me.host && !processAlive(owner.pid)) {
      // Rename first: of two waiters breaking the same stale lock only one rename succeeds.
      const grave = `${lockPath}.stale-${owner.pid}`;
      if (
        await rename(lockPath, grave).then(
          () => true,
          () => false,
        )
      )
        await rm(grave, { force: true });
      continue;
    }
    if (!told) {
      told = true;
      options.onWait?.(owner);
    }
    if (Date.now() > deadline) {
      throw new SutureError(
        "TIMEOUT",
        `${lockPath} is held by process ${owner?.pid ?? "?"} on ${owner?.host ?? "?"}: wait for it to finish, or remove the file if no suture is running`,
      );
    }
    await sleep(250, undefined, { signal: options.signal }).catch(() => undefined);
  }
  try {
    return await fn();
  } finally {
    await rm(lockPath, { force: true });
  }
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    return LockOwnerSchema.parse(JSON.parse(await readFile(path, "utf8")));
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid exists on this host (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Run `fn` holding the lock of a cache several suture processes share (`what` names the cache in
 * the warning a waiting process gives, e.g. "apt cache").
 */
export function withSharedCacheLock<T>(
  lockPath: string,
  what: string,
  progress: ProgressSink,
  signal: AbortSignal | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  return withFileLock(lockPath, fn, {
    signal,
    onWait: (owner) =>
      progress({
        type: "warning",
        message: `waiting for another suture (pid ${owner?.pid ?? "?"}) using the same ${what}`,
      }),
  });
}
