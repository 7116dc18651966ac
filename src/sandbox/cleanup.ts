/**
 * Registry of things a sandbox must undo (running containers, overlay mounts, temp dirs), so a
 * CLI signal handler can tear everything down before exiting:
 *
 *     process.once("SIGINT", async () => { await runSandboxCleanups(); process.exit(130); });
 *
 * Contract: each cleanup runs at most once, whether it is triggered by its owner (normal exit,
 * error, timeout) or by runSandboxCleanups; a second caller awaits the first run. Cleanups run
 * newest first, so a container is killed before the overlay under it is unmounted.
 */

interface Entry {
  description: string;
  run: () => Promise<void>;
}

const entries = new Map<number, Entry>();
let nextId = 0;

/**
 * Register a cleanup; returns a function that removes it from the registry (without running it).
 * Use `once` to make the same action safe to call from both the owner and the registry.
 */
export function registerCleanup(description: string, run: () => Promise<void>): () => void {
  const id = nextId++;
  entries.set(id, { description, run: once(run) });
  return () => {
    entries.delete(id);
  };
}

/** Wrap an async action so it runs once; later calls share the first call's promise. */
export function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => {
    p ??= fn();
    return p;
  };
}

/** What is currently registered (for diagnostics, e.g. "cleaning up 2 sandboxes"). */
export function pendingSandboxCleanups(): string[] {
  return [...entries.values()].map((e) => e.description);
}

/**
 * Run every registered cleanup, newest first, and wait for them. Never throws: failures are
 * returned so the caller can report them (e.g. "run `umount /path` by hand").
 */
export async function runSandboxCleanups(): Promise<{ description: string; error: unknown }[]> {
  const failures: { description: string; error: unknown }[] = [];
  const ids = [...entries.keys()].sort((a, b) => b - a);
  for (const id of ids) {
    const e = entries.get(id);
    if (!e) continue;
    entries.delete(id);
    try {
      await e.run();
    } catch (error) {
      failures.push({ description: e.description, error });
    }
  }
  return failures;
}
