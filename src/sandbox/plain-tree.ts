import {
  type BigIntStats,
  chmodSync,
  constants,
  copyFileSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { setImmediate, setTimeout as sleep } from "node:timers/promises";
import { SutureError } from "../errors/errors.ts";
import { inodeKey, recordFacts, reownedByRecord } from "../fs/owners.ts";
import type { Image } from "../image/image.ts";
import { LowerView } from "../layer/lower-view.ts";
import type { PlainTree } from "../layer/patch-layer.ts";
import { once, registerCleanup } from "./cleanup.ts";
import { materializeLayers, readLayerFacts } from "./layer-cache.ts";
import { mergeEnv } from "./runtime.ts";
import type { Sandbox, SandboxOptions } from "./sandbox.ts";

/**
 * The no-namespaces patch mode's sandbox (issue 16, mode 3): no mount, no runtime. The image's
 * layers (extracted as the calling user, their real owners, modes, devices and whiteouts in a
 * record beside each cached layer) are merged into a plain private directory — every visible
 * entry copied (reflinked where the filesystem can), never hard-linked into the shared cache, so
 * no write can reach it — and the engine works there as it would in an overlay's merged dir.
 * What the copy was is kept as each copied inode's change time: an entry whose inode still has it
 * is untouched, so the layer builder compares only what the engine wrote, removed or re-owned
 * with the lowers (see `PlainTree` in layer/patch-layer.ts). `run()` refuses: running the image's
 * code is exactly what this mode cannot do.
 */
export async function withPlainTree<T>(
  image: Image,
  options: SandboxOptions,
  fn: (sandbox: Sandbox) => Promise<T>,
): Promise<T> {
  const lowerDirs = await materializeLayers(image, options.cacheDir, {
    progress: options.progress,
    signal: options.signal,
  });
  options.signal?.throwIfAborted();
  const facts = await Promise.all(lowerDirs.map((d) => readLayerFacts(d)));
  await mkdir(options.workRoot, { recursive: true });
  const dir = await mkdtemp(join(options.workRoot, "tree-"));
  const cleanup = once(() => rm(dir, { recursive: true, force: true }));
  const unregister = registerCleanup(`working tree ${dir}`, cleanup);
  try {
    const root = join(dir, "root");
    const scratchDir = join(dir, "scratch");
    mkdirSync(scratchDir, { mode: 0o700 });
    const started = performance.now();
    options.progress?.({
      type: "step",
      step: "working-tree",
      message: "copying the image's layers into a private working tree (no-namespaces mode: no overlay)",
    });
    const view = new LowerView(lowerDirs, { facts });
    const copied = await copyMerged(view, root, options.signal);
    const snapshot = changeTimes(root);
    await waitForClockPast(snapshot.newest, dir);
    options.progress?.({
      type: "step-done",
      step: "working-tree",
      message: `working tree: ${copied} entries`,
      elapsedMs: Math.round(performance.now() - started),
    });
    const plainTree: PlainTree = {
      lowerFacts: facts,
      untouched: (st) => snapshot.times.get(inodeKey(st)) === st.ctimeNs && !reownedByRecord(st),
    };
    const env = mergeEnv(image.config.config?.Env, options.env ?? ["DEBIAN_FRONTEND=noninteractive"]);
    const sandbox: Sandbox = {
      mergedDir: root,
      upperDir: root,
      lowerDirs,
      env,
      scratchDir,
      plainTree,
      run(args) {
        return Promise.reject(
          new SutureError(
            "NEEDS_RUNTIME",
            `${args[0] ?? "a command"} would have to run in the image, which the no-namespaces mode cannot do: patch as root, or where user namespaces work (suture doctor)`,
          ),
        );
      },
    };
    return await fn(sandbox);
  } finally {
    await cleanup();
    unregister();
  }
}

/**
 * Copy what the lowers show into `root` (created), owner read/write bits added on disk and the
 * real facts recorded per inode. Synchronous per entry, like the extractor (a threadpool round
 * trip per small syscall dominated); the event loop turns between directories.
 */
async function copyMerged(view: LowerView, root: string, signal: AbortSignal | undefined): Promise<number> {
  mkdirSync(root, { mode: 0o700 });
  const links = new Map<string, string>();
  const dirs: { path: string; stat: BigIntStats }[] = [];
  let count = 0;
  const visit = async (rel: string, abs: string): Promise<void> => {
    signal?.throwIfAborted();
    for (const name of view.names(rel).sort()) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const entry = view.lookup(childRel);
      if (!entry) continue;
      const st = entry.stat;
      const dst = join(abs, name);
      // Let a SIGINT's handler (a macrotask) run now and then: the copy is otherwise one long turn.
      if (++count % 512 === 0) await setImmediate();
      signal?.throwIfAborted();
      if (st.isDirectory()) {
        mkdirSync(dst, { mode: 0o700 });
        chmodSync(dst, (Number(st.mode) & 0o777) | 0o700);
        dirs.push({ path: dst, stat: st });
        await visit(childRel, dst);
      } else if (st.isSymbolicLink()) {
        symlinkSync(readlinkSync(entry.path, { encoding: "buffer" }), dst);
        lutimesSync(dst, st.atime, st.mtime);
      } else if (st.isFile()) {
        const source = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1n ? links.get(source) : undefined;
        if (first) {
          linkSync(first, dst);
          continue; // one inode, already recorded
        }
        // A reflink where the filesystem has them, else a copy: never a hard link into the cache.
        copyFileSync(entry.path, dst, constants.COPYFILE_FICLONE);
        chmodSync(dst, (Number(st.mode) & 0o777) | 0o600);
        lutimesSync(dst, st.atime, st.mtime);
        if (st.nlink > 1n) links.set(source, dst);
      } else {
        // A device node or fifo: an empty placeholder, its facts in the record.
        writeFileSync(dst, "", { flag: "wx", mode: 0o600 });
        lutimesSync(dst, st.atime, st.mtime);
      }
      recordFacts(lstatSync(dst, { bigint: true }), {
        mode: Number(st.mode),
        uid: Number(st.uid),
        gid: Number(st.gid),
        rdev: st.isCharacterDevice() || st.isBlockDevice() ? st.rdev : undefined,
        xattrs: entry.xattrs,
      });
    }
    // Directories stay owner-writable while the engine works; their times are the lowers'.
  };
  await visit("", root);
  for (const d of dirs.reverse()) lutimesSync(d.path, d.stat.atime, d.stat.mtime);
  return count;
}

/** Every inode's change time in the tree, as copied ("what it was"), and the newest of them. */
function changeTimes(root: string): { times: Map<string, bigint>; newest: bigint } {
  const times = new Map<string, bigint>();
  let newest = 0n;
  const visit = (abs: string): void => {
    for (const name of readdirSync(abs)) {
      const path = join(abs, name);
      const st = lstatSync(path, { bigint: true });
      times.set(inodeKey(st), st.ctimeNs);
      if (st.ctimeNs > newest) newest = st.ctimeNs;
      if (st.isDirectory()) visit(path);
    }
  };
  visit(root);
  return { times, newest };
}

/**
 * Change times come from the kernel's coarse clock: a write in the same tick as the copy would
 * leave a changed inode with its copied change time. Wait (a few milliseconds) until a new inode
 * gets a later one, so "same change time" can only mean "untouched".
 */
async function waitForClockPast(newest: bigint, dir: string): Promise<void> {
  const probe = join(dir, "clock-probe");
  for (let i = 0; i < 500; i++) {
    writeFileSync(probe, "");
    const now = lstatSync(probe, { bigint: true }).ctimeNs;
    unlinkSync(probe);
    if (now > newest) return;
    await sleep(2);
  }
  throw new SutureError("INTERNAL", "the filesystem's change times do not advance; cannot track changes");
}
