/**
 * The lab cache: where lab images (images.ts), the distroless image (distroless.ts) and the
 * archive recording (archive-mirror.ts) live, and the one lock discipline every writer of it
 * follows. Several test processes share the cache at once: an entry appears atomically (written
 * in a temporary name, then renamed) and a writer that should be the only one doing a piece of
 * work holds `<entry>.lock`, an atomic mkdir recording its owner, broken when that owner is dead.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SutureError } from "../../src/errors/errors.ts";

/** How long a process waits by default for another process's work under the same lock (a lab image build). */
const LOCK_WAIT_MS = 45 * 60_000;

/** The cache root: `$SUTURE_LAB_CACHE` or /var/cache/suture-lab. */
export function labCacheDir(): string {
  return process.env.SUTURE_LAB_CACHE || "/var/cache/suture-lab";
}

interface LockOwner {
  pid: number;
  host: string;
  started: string;
}

/**
 * Takes `lock` (an atomic mkdir) and returns true; the caller removes it. While another live process
 * holds it, waits, and returns false without the lock once `done()` says that process's work is
 * there. A lock left by a dead process on this host is broken. Even if two builders ever ran at
 * once, each builds in its own temporary directory and only one rename wins.
 */
export async function acquireLock(
  lock: string,
  done: () => Promise<boolean>,
  waitMs = LOCK_WAIT_MS,
): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      await fs.mkdir(lock);
      const owner: LockOwner = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
      await fs.writeFile(path.join(lock, "owner.json"), JSON.stringify(owner));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    if (await done()) return false;
    const grave = await staleLockGrave(lock);
    if (grave) {
      // Whoever wins the rename broke the lock; everyone retries the mkdir. The grave stays until
      // the next holder releases the lock (see staleLockGrave).
      await fs.rename(lock, grave).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) {
      throw new SutureError(
        "TIMEOUT",
        `waited ${Math.round(waitMs / 1000)} s for another process working on ${lock}; remove the lock if none is running`,
      );
    }
    await sleep(1000);
  }
}

/**
 * The name to move `lock` to if its owner is gone, or undefined while the owner may be alive.
 * The name is derived from the dead owner, so when two waiters break the same stale lock the slower
 * one's rename finds the grave occupied (ENOTEMPTY) instead of moving the faster one's fresh lock.
 */
async function staleLockGrave(lock: string): Promise<string | undefined> {
  let owner: LockOwner;
  try {
    owner = JSON.parse(await fs.readFile(path.join(lock, "owner.json"), "utf8")) as LockOwner;
  } catch {
    // The owner writes owner.json right after mkdir; a lock without one for a minute is abandoned.
    const st = await fs.stat(lock).catch(() => undefined);
    const abandoned = st !== undefined && Date.now() - st.mtimeMs > 60_000;
    return abandoned ? `${lock}.stale-noowner-${Math.round(st.mtimeMs)}` : undefined;
  }
  if (owner.host !== os.hostname()) return undefined;
  try {
    process.kill(owner.pid, 0);
    return undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") return undefined;
    return `${lock}.stale-${owner.host}-${owner.pid}-${Date.parse(owner.started) || 0}`;
  }
}

/** Releases `lock` and removes the graves of stale locks broken on the way to it. */
export async function releaseLock(lock: string): Promise<void> {
  await fs.rm(lock, { recursive: true, force: true });
  const prefix = `${path.basename(lock)}.stale-`;
  for (const name of await fs.readdir(path.dirname(lock))) {
    if (name.startsWith(prefix))
      await fs.rm(path.join(path.dirname(lock), name), { recursive: true, force: true });
  }
}
