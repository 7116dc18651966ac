import { readdirSync, type Stats } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { join, posix } from "node:path";
import { SutureError } from "../errors/errors.ts";
import { fnmatchRegExp } from "../fs/fnmatch.ts";
import { hostTree, type InRootWalk, listDirInRoot, readFileInRoot, walkInRoot } from "../fs/in-root.ts";
import type { Image } from "../image/image.ts";
import type { PlainTree } from "../layer/patch-layer.ts";
import type { ProgressSink } from "../progress/events.ts";
import { once, registerCleanup } from "./cleanup.ts";
import type { EarlyLayerView } from "./early-view.ts";
import { materializeLayers } from "./layer-cache.ts";
import { mountOverlay, unmount } from "./overlay.ts";
import { mergeEnv, type RunResult, runInSandbox, type SandboxMount } from "./runtime.ts";
import { SparseLayers } from "./sparse-layers.ts";

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
  /**
   * Sparse lowers (sparse-layers.ts): layers not complete in the layer cache are extracted into
   * this sandbox without the regular files Debian packages never own, which come in on demand
   * (`ensurePaths`, `ensureUpperPaths`) or all at once before the image's programs run (`run`,
   * `complete`). For patches that read and write only packages' paths (the native dpkg engine).
   */
  sparse?: boolean;
  /**
   * With `sparse`: layers whose blob is at most this many bytes are extracted whole (default
   * SMALL_LAYER_BYTES). Tests of the sparse mechanism itself set 0, since their layers are tiny.
   */
  wholeLayersUpTo?: number;
  /** With `sparse`: follows the extraction so that small files can be read before it ends (early-view.ts). */
  early?: EarlyLayerView;
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
  /** Runs a program of the image; a sparse sandbox completes its layers first. */
  run(args: string[], options?: SandboxRunOptions): Promise<RunResult>;
  /**
   * Sparse sandboxes only: bring in whatever the lowers left out at these image paths (absolute,
   * resolved through the image's symlinks as the merged view shows them; a final symlink is
   * followed too), so reading, replacing or removing them gives what a full extraction gives.
   */
  ensurePaths?(paths: Iterable<string>): Promise<void>;
  /**
   * Sparse sandboxes only: bring in what the lowers left out at every path of the upper dir, so
   * the layer builder compares what changed with the real lower files. Call before building the layer.
   */
  ensureUpperPaths?(): Promise<void>;
  /** Sparse sandboxes only: make every lower layer complete (the layer cache's full trees), upper kept. */
  complete?(): Promise<void>;
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
  let lowerDirs = options.sparse
    ? []
    : await materializeLayers(image, options.cacheDir, {
        progress: options.progress,
        signal: options.signal,
      });
  // Only sparse extraction reports its progress to an early view.
  if (!options.sparse) options.early?.close();
  options.signal?.throwIfAborted();
  await mkdir(options.workRoot, { recursive: true });
  const dir = await mkdtemp(join(options.workRoot, "sandbox-"));
  const upperDir = join(dir, "upper");
  const workDir = join(dir, "work");
  const mergedDir = join(dir, "merged");
  const scratchDir = join(dir, "scratch");
  let mounted = false;
  let disposeSparse: (() => Promise<void> | undefined) | undefined;
  const cleanup = once(async () => {
    if (mounted) await unmount(mergedDir);
    await disposeSparse?.();
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
    const sparse = options.sparse
      ? await SparseLayers.extract(image, options.cacheDir, {
          progress: options.progress,
          signal: options.signal,
          early: options.early,
          wholeLayersUpTo: options.wholeLayersUpTo,
        }).finally(() => options.early?.close())
      : undefined;
    disposeSparse = () => sparse?.dispose();
    if (sparse) lowerDirs = sparse.lowerDirs;
    const lowers = () => (lowerDirs.length > 0 ? lowerDirs : [join(dir, "empty")]);
    if (lowerDirs.length === 0) await mkdir(join(dir, "empty"), { mode: 0o755 });
    // overlayfs shows the upper dir's own inode as the merged root: give it the image's root metadata.
    const top = await stat(lowers().at(-1)!);
    await chown(upperDir, top.uid, top.gid);
    await chmod(upperDir, top.mode & 0o7777);
    await mountOverlay({ lowerDirs: lowers(), upperDir, workDir, mergedDir });
    mounted = true;
    /**
     * Change the lower dirs under a kept upper dir: overlayfs caches lookups, and changing a
     * mounted overlay's lowers is undefined behaviour, so unmount, change, and mount again (with
     * a fresh work dir: a `volatile` mount leaves a marker there that refuses the next mount).
     */
    const remountAround = async (change: () => Promise<void>) => {
      await unmount(mergedDir);
      mounted = false;
      await change();
      await rm(workDir, { recursive: true, force: true });
      await mkdir(workDir);
      await mountOverlay({ lowerDirs: lowers(), upperDir, workDir, mergedDir });
      mounted = true;
    };
    const ensureLayerPaths = async (rels: Iterable<string>) => {
      if (!sparse) return;
      const wanted = [...rels].filter((rel) => sparse.isDeferred(rel));
      if (wanted.length) await remountAround(async () => void (await sparse.ensure(wanted)));
    };
    let completion: Promise<void> | undefined;
    const complete = () => {
      completion ??= (async () => {
        if (!sparse || sparse.deferredCount === 0) return;
        // Programs of the image read whatever they like: only the full layers are sound for them.
        await remountAround(async () => {
          await sparse.complete();
          lowerDirs = sparse.lowerDirs;
        });
      })();
      return completion;
    };
    if (sparse && sparse.deferredCount > 0)
      await ensureLayerPaths(await libraryDirEntries(mergedDir, sparse));
    const env = mergeEnv(image.config.config?.Env, options.env ?? ["DEBIAN_FRONTEND=noninteractive"]);
    const sandbox: Sandbox = {
      mergedDir,
      upperDir,
      get lowerDirs() {
        return lowerDirs;
      },
      env,
      scratchDir,
      async run(args, runOptions = {}) {
        if (!mounted) throw new SutureError("INTERNAL", "sandbox used after withSandbox returned");
        await complete();
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
      ...(sparse
        ? {
            ensurePaths: async (paths: Iterable<string>) => {
              if (sparse.deferredCount > 0) await ensureLayerPaths(layerPathsOf(mergedDir, paths));
            },
            ensureUpperPaths: async () => {
              if (sparse.deferredCount > 0) await ensureLayerPaths(treePaths(upperDir));
            },
            complete,
          }
        : {}),
    };
    return await fn(sandbox);
  } finally {
    await cleanup();
    mounted = false;
    unregister();
  }
}

/**
 * Layer paths (no leading "/") of image paths as the merged view resolves them: the parents'
 * symlinks followed, and with a final symlink both the link and what it leads to.
 */
function layerPathsOf(mergedDir: string, paths: Iterable<string>): Set<string> {
  const out = new Set<string>();
  const walk = (path: string, followFinal: boolean): InRootWalk | undefined => {
    try {
      return walkInRoot(mergedDir, path, { followFinal, mustExist: false });
    } catch {
      return undefined; // a symlink loop: nothing there to bring in
    }
  };
  const add = (w: InRootWalk | undefined) => {
    // `path` of a missing walk is where it would be; below a non-directory nothing can be.
    if (w && w.kind !== "not-directory" && w.path !== "/") out.add(w.path.slice(1));
  };
  // A package's thousands of files sit in a few hundred directories: each directory is resolved
  // once, and only a final symlink needs a walk of its own.
  const dirs = new Map<string, InRootWalk | undefined>();
  const tree = hostTree(mergedDir);
  for (const path of paths) {
    const slash = path.lastIndexOf("/");
    const dir = path.slice(0, slash) || "/";
    const base = path.slice(slash + 1);
    if (slash === -1 || base === "" || base === "." || base === "..") {
      add(walk(path, false));
      add(walk(path, true));
      continue;
    }
    if (!dirs.has(dir)) dirs.set(dir, walk(dir, true));
    const parent = dirs.get(dir);
    if (!parent || parent.kind === "not-directory" || (parent.kind === "found" && !parent.stat.isDirectory()))
      continue;
    const at = parent.path === "/" ? `/${base}` : `${parent.path}/${base}`;
    let final: Stats | undefined;
    try {
      // The resolver's own lookup of one more component below a resolved directory.
      final = parent.kind === "found" ? tree.lookup(at) : undefined;
    } catch {
      continue; // a name the host cannot look up (too long, a NUL): as a failed walk, nothing to bring in
    }
    out.add(at.slice(1));
    if (final?.isSymbolicLink()) add(walk(path, true));
  }
  return out;
}

/** Every path below `root`, relative and "/"-separated (an overlay upper dir: what the patch touched). */
function* treePaths(root: string, rel = ""): Generator<string> {
  for (const d of readdirSync(rel === "" ? root : join(root, rel), { withFileTypes: true })) {
    const child = rel === "" ? d.name : `${rel}/${d.name}`;
    yield child;
    if (d.isDirectory()) yield* treePaths(root, child);
  }
}

/**
 * What the lowers left out in the directories /etc/ld.so.conf (and the files it includes) names,
 * and their glibc-hwcaps subdirs: ldconfig, native or real, reads every library there. The static
 * rule keeps /usr/local/lib; this covers the directories an image adds (e.g. /opt/…/lib).
 */
async function libraryDirEntries(mergedDir: string, sparse: SparseLayers): Promise<string[]> {
  const dirs = new Set<string>();
  const seen = new Set<string>();
  const readConf = async (file: string, depth: number): Promise<void> => {
    if (depth > 8 || seen.has(file)) return;
    seen.add(file);
    const text = (
      await readFileInRoot(mergedDir, file, { limit: 1024 * 1024 }).catch(() => undefined)
    )?.toString();
    if (!text) return;
    for (const raw of text.split("\n")) {
      const line = raw.replace(/#.*/, "").trim();
      if (line === "") continue;
      const include = /^include[ \t]+(.*)$/.exec(line);
      if (!include) {
        if (line.startsWith("/")) dirs.add(line.replace(/\/+$/, "") || "/");
        continue;
      }
      for (const pattern of include[1]!.split(/[ \t]+/)) {
        if (pattern === "") continue;
        const full = pattern.startsWith("/") ? pattern : posix.join(posix.dirname(file), pattern);
        const parent = posix.dirname(full);
        const re = fnmatchRegExp(posix.basename(full));
        const names = await listDirInRoot(mergedDir, parent).catch(() => [] as string[]);
        for (const name of names.sort())
          if (re.test(name)) await readConf(posix.join(parent, name), depth + 1);
      }
    }
  };
  await readConf("/etc/ld.so.conf", 0);
  const out: string[] = [];
  for (const dir of dirs) {
    const walk = walkInRoot(mergedDir, dir, { followFinal: true, mustExist: true });
    if (walk.kind !== "found") continue;
    const rel = walk.path === "/" ? "" : walk.path.slice(1);
    out.push(...sparse.deferredChildren(rel));
    const hwcaps = rel === "" ? "glibc-hwcaps" : `${rel}/glibc-hwcaps`;
    for (const name of await listDirInRoot(mergedDir, `/${hwcaps}`).catch(() => [] as string[]))
      out.push(...sparse.deferredChildren(`${hwcaps}/${name}`));
  }
  return out;
}
