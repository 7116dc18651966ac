import { chmod, chown, mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { SutureError } from "../errors/errors.ts";
import type { Image } from "../image/image.ts";
import type { PlainTree } from "../layer/patch-layer.ts";
import type { ProgressSink } from "../progress/events.ts";
import { once, registerCleanup } from "./cleanup.ts";
import { materializeLayers } from "./layer-cache.ts";
import { mountOverlay, unmount } from "./overlay.ts";
import { mergeEnv, type RunResult, runInSandbox, type SandboxMount } from "./runtime.ts";

export interface SandboxOptions {
  /** Content-addressed layer cache (see layer-cache.ts); shared between runs. */
  cacheDir: string;
  /** Where this sandbox's upper/work/merged dirs are made; same filesystem as cacheDir is best. */
  workRoot: string;
  progress?: ProgressSink;
  /** Aborting kills a running command, and withSandbox then cleans up and rejects. */
  signal?: AbortSignal;
  /** "runc" (default) or "crun", or a path. */
  runtime?: string;
  /** Environment added to the image's Env for every command (default DEBIAN_FRONTEND=noninteractive). */
  env?: string[];
  /** Host resolv.conf to mount read-only in the container (default /etc/resolv.conf). */
  resolvConf?: string;
}

export interface SandboxRunOptions {
  /** Added to the image's and the sandbox's environment (later entries win). */
  env?: string[];
  cwd?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  onOutput?: (line: string, stream: "stdout" | "stderr") => void;
  mounts?: SandboxMount[];
  input?: string | Buffer;
  maxOutputBytes?: number;
}

/** What the callback of withSandbox gets. Valid only until the callback settles. */
export interface Sandbox {
  /** The image's filesystem as the command sees it; writes land in upperDir. */
  readonly mergedDir: string;
  /** Only what changed (see OverlaySpec for the whiteout/opaque contract). */
  readonly upperDir: string;
  /** The image's layers, bottom first; shared and read-only. */
  readonly lowerDirs: readonly string[];
  /** Environment every command starts with (image Env + sandbox env). */
  readonly env: readonly string[];
  /**
   * A private, empty host dir of this sandbox (outside the image's root), removed with it: where
   * per-run copies of caches are kept for mounting into commands.
   */
  readonly scratchDir: string;
  /**
   * The no-namespaces mode's working tree (plain-tree.ts): `mergedDir` is a full private copy,
   * not an overlay, and this says how to tell what changed. Undefined for overlay sandboxes.
   */
  readonly plainTree?: PlainTree;
  run(args: string[], options?: SandboxRunOptions): Promise<RunResult>;
}

/**
 * Run `fn` with a writable sandbox over `image`: layers are materialised in the cache, an
 * overlay is mounted over them with a fresh upper dir under `workRoot`, and `fn` can run
 * commands in it with the OCI runtime. Whatever happens (return, throw, timeout, abort, a
 * signal handler calling runSandboxCleanups) the overlay is unmounted and the sandbox's dirs are
 * removed; copy anything you need out of `upperDir` inside `fn`.
 */
export async function withSandbox<T>(
  image: Image,
  options: SandboxOptions,
  fn: (sandbox: Sandbox) => Promise<T>,
): Promise<T> {
  const lowerDirs = await materializeLayers(image, options.cacheDir, {
    progress: options.progress,
    signal: options.signal,
  });
  options.signal?.throwIfAborted();
  await mkdir(options.workRoot, { recursive: true });
  const dir = await mkdtemp(join(options.workRoot, "sandbox-"));
  const upperDir = join(dir, "upper");
  const workDir = join(dir, "work");
  const mergedDir = join(dir, "merged");
  const scratchDir = join(dir, "scratch");
  let mounted = false;
  const cleanup = once(async () => {
    if (mounted) await unmount(mergedDir);
    await rm(dir, { recursive: true, force: true });
  });
  const unregister = registerCleanup(`sandbox ${dir}`, cleanup);
  try {
    await Promise.all([
      mkdir(upperDir),
      mkdir(workDir),
      mkdir(mergedDir),
      mkdir(scratchDir, { mode: 0o700 }),
    ]);
    const lowers = lowerDirs.length > 0 ? lowerDirs : [await emptyLower(dir)];
    // overlayfs shows the upper dir's own inode as the merged root: give it the image's root metadata.
    const top = await stat(lowers.at(-1)!);
    await chown(upperDir, top.uid, top.gid);
    await chmod(upperDir, top.mode & 0o7777);
    await mountOverlay({ lowerDirs: lowers, upperDir, workDir, mergedDir });
    mounted = true;
    const env = mergeEnv(image.config.config?.Env, options.env ?? ["DEBIAN_FRONTEND=noninteractive"]);
    const sandbox: Sandbox = {
      mergedDir,
      upperDir,
      lowerDirs,
      env,
      scratchDir,
      async run(args, runOptions = {}) {
        if (!mounted) throw new SutureError("INTERNAL", "sandbox used after withSandbox returned");
        const signals = [options.signal, runOptions.signal].filter((s): s is AbortSignal => s !== undefined);
        return runInSandbox({
          rootfs: mergedDir,
          args,
          env: mergeEnv(env, runOptions.env),
          cwd: runOptions.cwd,
          timeoutMs: runOptions.timeoutMs,
          signal: signals.length > 1 ? AbortSignal.any(signals) : signals[0],
          onOutput: runOptions.onOutput,
          progress: options.progress,
          runtime: options.runtime,
          mounts: runOptions.mounts,
          input: runOptions.input,
          maxOutputBytes: runOptions.maxOutputBytes,
          resolvConf: options.resolvConf,
          bundleParent: dir,
        });
      },
    };
    return await fn(sandbox);
  } finally {
    await cleanup();
    mounted = false;
    unregister();
  }
}

/** Images without layers (scratch) still need one lower dir for overlayfs. */
async function emptyLower(dir: string): Promise<string> {
  const p = join(dir, "empty");
  await mkdir(p, { mode: 0o755 });
  return p;
}
