import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { SandboxMount } from "../../../sandbox/runtime.ts";

/** One directory of suture's own that a package manager run in the image sees. */
export interface RunDir {
  /** Where it appears in the container: under /run, which the layer builder leaves out. */
  destination: string;
  /** The image's tool writes it (its private cache, its logs); the others are read-only. */
  writable?: boolean;
}

/**
 * Run `fn` with fresh, empty host directories for one run of the image's package manager (in the
 * sandbox's scratch dir, under `name`), and the mounts that show them in the container, in the
 * order `dirs` lists them. They are removed afterwards however `fn` ends: what the image's tool
 * wrote there is never seen by another run, and what suture keeps it copies out first.
 */
export async function withRunDirs<K extends string, T>(
  scratchDir: string,
  name: string,
  dirs: Readonly<Record<K, RunDir>>,
  fn: (host: Record<K, string>, mounts: SandboxMount[]) => Promise<T>,
): Promise<T> {
  const own = join(scratchDir, name);
  const keys = Object.keys(dirs) as K[];
  const host = Object.fromEntries(keys.map((k) => [k, join(own, k)])) as Record<K, string>;
  await rm(own, { recursive: true, force: true });
  await Promise.all(keys.map((k) => mkdir(host[k], { recursive: true })));
  try {
    const mounts = keys.map(
      (k): SandboxMount => ({
        destination: dirs[k].destination,
        source: host[k],
        ...(dirs[k].writable ? {} : { options: ["ro"] }),
      }),
    );
    return await fn(host, mounts);
  } finally {
    await rm(own, { recursive: true, force: true });
  }
}
