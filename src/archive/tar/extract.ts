import { spawn } from "node:child_process";
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fchownSync,
  constants as fsConstants,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { setAttributeSync } from "@napi-rs/xattr";
import { asSutureError, describeCause, quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { type PathFacts, S_IFMT_BITS } from "../../fs/owners.ts";
import { applyXattrs } from "../../fs/xattrs.ts";
import type { TarEntry } from "./entry.ts";
import { normaliseEntryPath, refuseLayerEntry as unsafe } from "./member-path.ts";
import { type ByteSource, readTar, type TarMember } from "./read.ts";

export interface ExtractOptions {
  /**
   * What to do with OCI whiteouts: "overlay" turns `.wh.NAME` into a 0/0 character device NAME and
   * `.wh..wh..opq` into xattr trusted.overlay.opaque=y on its directory (an overlayfs lower dir;
   * `opaqueXattr` instead when given); "keep" writes them as the plain files they are in the archive.
   */
  whiteouts: "overlay" | "keep";
  /** The opaque marker's name: `user.overlay.opaque` for a `userxattr` mount in a user namespace. */
  opaqueXattr?: "trusted.overlay.opaque" | "user.overlay.opaque";
  /**
   * No-namespaces mode (issue 16, mode 3: not root, no user namespace): owners, device nodes,
   * whiteouts, opaque dirs and xattrs cannot be made on disk, so every entry's real facts go into
   * this map (layer path → facts) instead. On disk, files and directories get the archive's
   * permission bits plus the owner's read/write (and search) bits, so the tree stays readable and
   * removable by its owner; device nodes, fifos and whiteouts become empty regular files (placeholders
   * that hide the layers below, as the real ones do). Nothing is chowned.
   */
  record?: Map<string, PathFacts>;
  /**
   * Sparse extraction (sandbox/sparse-layers.ts), per member by its layer path ("" is the root;
   * a whiteout is asked about as `whiteout` at its own `.wh.` path): "extract" as usual; "defer"
   * (regular files and hardlinks only) records the member in `deferred` and writes nothing of it;
   * "skip" neither writes nor records it. Default: extract everything.
   */
  select?: (rel: string, type: TarEntry["type"] | "whiteout") => "extract" | "defer" | "skip";
  /**
   * Where deferred members are recorded, by layer path, in archive order; a later member at the
   * same path replaces the record (or, extracted, removes it), as it replaces the file.
   */
  deferred?: Map<string, DeferredMember>;
  /**
   * The root already holds a tree (a later pass that brings deferred members into a sparse
   * layer): every path is checked with lstat before it is created or replaced.
   */
  rootHasEntries?: boolean;
  signal?: AbortSignal;
}

/** A member a sparse extraction left out: enough to know it is there and to bring it in later. */
export interface DeferredMember {
  type: "file" | "hardlink";
  size: number;
  /** A hardlink's target (layer path). */
  linkname?: string;
}

export interface ExtractStats {
  entries: number;
  files: number;
  bytes: number;
  whiteouts: number;
  opaqueDirs: number;
  /** Device nodes and fifos (whiteouts not counted). */
  specialFiles: number;
  /** xattrs in the archive we refused to set (trusted.overlay.*: they would steer overlayfs). */
  ignoredXattrs: string[];
}

interface PendingNode {
  rel: string;
  kind: "c" | "b" | "p";
  major: number;
  minor: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  xattrs: Map<string, Buffer>;
}

function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** O_NOFOLLOW|O_EXCL: the final component is created fresh, never reached through a symlink. */
const CREATE_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/**
 * Extract a layer tar into `root` (an existing, private, empty directory) for use as an overlayfs
 * lower dir. Contract:
 * - Writes only below `root`: absolute member names and `..` escapes are refused (UNSAFE_LAYER),
 *   parents are walked with lstat and a symlinked parent is refused, files are created with
 *   O_NOFOLLOW|O_EXCL, and hardlink targets must resolve inside the layer.
 * - Preserves type, content, numeric ownership, mode bits (incl. setuid/setgid/sticky), mtimes
 *   (directories fixed up after their contents) and PAX xattrs (except trusted.overlay.*).
 * - Device nodes and fifos are created with the host's `mknod`, batched; whiteouts per `whiteouts`.
 * - Later members replace earlier ones at the same path, as tar does.
 * - Reads the input to its end (see readTar) and leaves a partial tree behind on error: the caller
 *   owns `root` and removes it.
 * Must run as root (ownership, devices, trusted.* xattrs).
 */
export async function extractTar(
  source: ByteSource,
  root: string,
  options: ExtractOptions,
): Promise<ExtractStats> {
  const ex = new Extractor(root, options);
  for await (const entry of readTar(source)) {
    options.signal?.throwIfAborted();
    try {
      await ex.entry(entry);
    } catch (e) {
      // What the archive asks for may be refused by the kernel (a uid past 2^32, a malformed
      // capability): still one clear error naming the entry, never a bare fs exception.
      throw asSutureError(e, "IO", `cannot extract layer entry ${quoteUntrusted(entry.header.path)}`);
    }
  }
  await ex.finish();
  return ex.stats;
}

// Filesystem calls below are synchronous on purpose: each entry needs several tiny syscalls, and
// a threadpool round trip per call made extraction 8x slower than GNU tar. The event loop still
// turns between data chunks, which are read asynchronously.
class Extractor {
  readonly stats: ExtractStats = {
    entries: 0,
    files: 0,
    bytes: 0,
    whiteouts: 0,
    opaqueDirs: 0,
    specialFiles: 0,
    ignoredXattrs: [],
  };
  readonly #root: string;
  readonly #options: ExtractOptions;
  /** Directories (relative, "" = root) already verified to be real directories. */
  readonly #knownDirs = new Set<string>([""]);
  /**
   * Paths this extraction created (besides #knownDirs). The root starts empty (the contract), so
   * any other path holds nothing yet and needs no lstat before it is created: that lstat was a
   * tenth of the syscalls of a base layer. Creation stays O_EXCL, so a wrong belief fails loudly.
   */
  readonly #created = new Set<string>();
  readonly #dirTimes = new Map<string, number>();
  readonly #pending = new Map<string, PendingNode>();

  constructor(root: string, options: ExtractOptions) {
    this.#root = root;
    this.#options = options;
  }

  #abs(rel: string): string {
    return rel === "" ? this.#root : join(this.#root, rel);
  }

  /** Create missing parents; refuse a parent that is a symlink or not a directory. */
  #ensureDir(parts: string[], entryName: string): void {
    let rel = "";
    for (const part of parts) {
      rel = rel === "" ? part : `${rel}/${part}`;
      if (this.#knownDirs.has(rel)) continue;
      if (this.#pending.has(rel))
        throw unsafe(entryName, `has parent ${quoteUntrusted(rel)} that is a device node`);
      const st =
        this.#created.has(rel) || this.#options.rootHasEntries
          ? lstatSync(this.#abs(rel), { throwIfNoEntry: false })
          : undefined;
      if (st === undefined) {
        mkdirSync(this.#abs(rel), { mode: 0o755 });
        // What root's extraction gives a parent the archive does not list, and a fixed time (1970)
        // rather than the extraction's: overlayfs shows this layer's copy of the directory over
        // the real one below, and a patch that copies it up would otherwise carry the moment the
        // layer happened to be extracted (the same patch gave different layers per cache).
        this.#options.record?.set(rel, { mode: S_IFMT_BITS.dir | 0o755, uid: 0, gid: 0 });
        this.#dirTimes.set(rel, 0);
      } else if (st.isSymbolicLink()) {
        throw unsafe(entryName, `would be written through the symlink ${quoteUntrusted(rel)}`);
      } else if (!st.isDirectory()) {
        throw unsafe(entryName, `has parent ${quoteUntrusted(rel)} that is not a directory`);
      }
      this.#knownDirs.add(rel);
    }
  }

  /** Like #ensureDir, for paths that must already exist (hardlink targets, queued nodes). */
  #checkExistingParents(parts: string[], entryName: string): void {
    let rel = "";
    for (const part of parts) {
      rel = rel === "" ? part : `${rel}/${part}`;
      if (this.#knownDirs.has(rel)) continue;
      const st = lstatSync(this.#abs(rel), { throwIfNoEntry: false });
      if (!st)
        throw new SutureError(
          "INVALID_ARCHIVE",
          `layer entry ${quoteUntrusted(entryName)} refers below ${quoteUntrusted(rel)}, which does not exist`,
        );
      if (st.isSymbolicLink())
        throw unsafe(entryName, `refers to a path through the symlink ${quoteUntrusted(rel)}`);
      if (!st.isDirectory())
        throw unsafe(entryName, `refers to a path below ${quoteUntrusted(rel)}, which is not a directory`);
      this.#knownDirs.add(rel);
    }
  }

  /**
   * Make room for a new member at `rel`: tar semantics, a later member replaces an earlier one.
   * Returns whether a directory stays at `rel` (only with keepDir).
   */
  #clear(rel: string, keepDir: boolean): boolean {
    if (this.#pending.size)
      for (const p of [...this.#pending.keys()])
        if (p === rel || p.startsWith(`${rel}/`)) this.#pending.delete(p);
    this.#options.deferred?.delete(rel);
    if (!this.#options.rootHasEntries && !this.#created.has(rel) && !this.#knownDirs.has(rel)) return false;
    const path = this.#abs(rel);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st) return false;
    const record = this.#options.record;
    if (st.isDirectory()) {
      if (keepDir) return true;
      rmSync(path, { recursive: true, force: true });
      if (record)
        for (const p of [...record.keys()]) if (p === rel || p.startsWith(`${rel}/`)) record.delete(p);
      const under = (d: string) => d === rel || d.startsWith(`${rel}/`);
      for (const d of [...this.#knownDirs]) if (under(d)) this.#knownDirs.delete(d);
      for (const d of [...this.#dirTimes.keys()]) if (under(d)) this.#dirTimes.delete(d);
      const deferred = this.#options.deferred;
      if (deferred) for (const p of [...deferred.keys()]) if (under(p)) deferred.delete(p);
      return false;
    }
    unlinkSync(path);
    record?.delete(rel);
    return false;
  }

  async entry({ header, body }: TarMember): Promise<void> {
    this.stats.entries++;
    const name = header.path;
    const parts = normaliseEntryPath(name);
    const base = parts.at(-1);

    const select = this.#options.select;
    if (this.#options.whiteouts === "overlay" && base?.startsWith(".wh.")) {
      if (select?.(parts.join("/"), "whiteout") === "skip") return;
      this.#whiteout(parts, name);
      return;
    }
    const choice = select?.(parts.join("/"), header.type) ?? "extract";
    if (choice === "skip") return;
    if (choice === "defer" && (header.type === "file" || header.type === "hardlink")) {
      this.#defer(parts, name, header);
      return;
    }
    if (parts.length === 0) {
      // The layer root itself ("./"): only its metadata applies.
      if (header.type !== "directory") throw unsafe(name, "replaces the layer root with a non-directory");
      this.#applyDirMeta("", header);
      return;
    }
    const rel = parts.join("/");
    this.#ensureDir(parts.slice(0, -1), name);
    const path = this.#abs(rel);

    switch (header.type) {
      case "directory": {
        if (!this.#clear(rel, true)) mkdirSync(path, { mode: 0o700 });
        this.#knownDirs.add(rel);
        this.#applyDirMeta(rel, header);
        return;
      }
      case "file": {
        this.#clear(rel, false);
        const fd = openSync(path, CREATE_FLAGS, 0o600);
        this.#created.add(rel);
        try {
          for await (const chunk of body) {
            for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
            this.stats.bytes += chunk.length;
          }
          if (this.#options.record) {
            fchmodSync(fd, (header.mode & 0o777) | 0o600);
            this.#record(rel, S_IFMT_BITS.file, header);
          } else {
            // chown clears setuid/setgid and capabilities, so: owner, then mode, then xattrs.
            fchownSync(fd, header.uid, header.gid);
            fchmodSync(fd, header.mode);
            this.#setXattrs(path, rel, header.xattrs, false);
          }
          futimesSync(fd, header.mtime, header.mtime);
        } finally {
          closeSync(fd);
        }
        this.stats.files++;
        return;
      }
      case "symlink": {
        // symlink(2) refuses an empty target (ENOENT); it is the archive that is broken.
        if (header.linkname === "")
          throw new SutureError("INVALID_ARCHIVE", `symlink ${quoteUntrusted(name)} has an empty target`);
        this.#clear(rel, false);
        symlinkSync(header.linkname, path);
        this.#created.add(rel);
        if (this.#options.record) {
          this.#record(rel, S_IFMT_BITS.symlink, { ...header, mode: 0o777 });
        } else {
          lchownSync(path, header.uid, header.gid);
          this.#setXattrs(path, rel, header.xattrs, true);
        }
        lutimesSync(path, header.mtime, header.mtime);
        return;
      }
      case "hardlink": {
        const targetParts = normaliseEntryPath(header.linkname, `${name} -> ${header.linkname}`);
        if (targetParts.length === 0) throw unsafe(name, "is a hardlink to the layer root");
        const target = targetParts.join("/");
        if (target === rel) return;
        // A link to a member this pass left out is left out with it (and brought in after it).
        if (this.#options.deferred?.has(target) && !this.#options.rootHasEntries) {
          this.#defer(parts, name, header);
          return;
        }
        this.#checkExistingParents(targetParts.slice(0, -1), name);
        if (this.#pending.has(target)) await this.#flushPending();
        const st = lstatSync(this.#abs(target), { throwIfNoEntry: false });
        if (!st) {
          throw new SutureError(
            "INVALID_ARCHIVE",
            `hardlink ${quoteUntrusted(name)} points to ${quoteUntrusted(header.linkname)}, which the layer does not contain before it`,
          );
        }
        if (st.isDirectory()) throw unsafe(name, "is a hardlink to a directory");
        this.#clear(rel, false);
        linkSync(this.#abs(target), path);
        this.#created.add(rel);
        const facts = this.#options.record?.get(target);
        if (facts) this.#options.record!.set(rel, facts);
        return;
      }
      case "char":
      case "block":
      case "fifo": {
        this.#clear(rel, false);
        this.stats.specialFiles++;
        if (this.#options.record) {
          const kind = header.type === "char" ? "char" : header.type === "block" ? "block" : "fifo";
          this.#placeholder(rel, {
            mode: S_IFMT_BITS[kind] | (header.mode & 0o7777),
            uid: header.uid,
            gid: header.gid,
            rdev: kind === "fifo" ? undefined : makeDev(header.devmajor, header.devminor),
            xattrs: contentXattrs(header.xattrs),
          });
          lutimesSync(path, header.mtime, header.mtime);
          return;
        }
        this.#pending.set(rel, {
          rel,
          kind: header.type === "char" ? "c" : header.type === "block" ? "b" : "p",
          major: header.devmajor,
          minor: header.devminor,
          mode: header.mode,
          uid: header.uid,
          gid: header.gid,
          mtime: header.mtime,
          xattrs: header.xattrs,
        });
        return;
      }
    }
  }

  /** Record a file or hardlink member without writing it; its parents are made as usual. */
  #defer(parts: string[], name: string, header: TarEntry): void {
    const rel = parts.join("/");
    this.#ensureDir(parts.slice(0, -1), name);
    // What an earlier member put there is replaced, as extraction would replace it.
    this.#clear(rel, false);
    const deferred = this.#options.deferred;
    if (!deferred) throw new SutureError("INTERNAL", "extractTar: members deferred without a deferred map");
    if (header.type === "hardlink") {
      const target = normaliseEntryPath(header.linkname, `${name} -> ${header.linkname}`).join("/");
      deferred.set(rel, { type: "hardlink", size: 0, linkname: target });
    } else {
      deferred.set(rel, { type: "file", size: header.size });
    }
  }

  #whiteout(parts: string[], name: string): void {
    const base = parts.at(-1)!;
    const dirParts = parts.slice(0, -1);
    const dirRel = dirParts.join("/");
    if (base === ".wh..wh..opq") {
      this.#ensureDir(dirParts, name);
      const record = this.#options.record;
      if (record) {
        const facts = record.get(dirRel) ?? { mode: S_IFMT_BITS.dir | 0o755, uid: 0, gid: 0 };
        record.set(dirRel, { ...facts, opaque: true });
      } else {
        setAttributeSync(this.#abs(dirRel), this.#options.opaqueXattr ?? "trusted.overlay.opaque", "y");
      }
      this.stats.opaqueDirs++;
      return;
    }
    // Other .wh..wh. names are AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here.
    if (base.startsWith(".wh..wh.")) return;
    const hidden = base.slice(".wh.".length);
    if (hidden === "" || hidden === "." || hidden === "..")
      throw unsafe(name, "is a whiteout of an invalid name");
    this.#ensureDir(dirParts, name);
    const rel = dirRel === "" ? hidden : `${dirRel}/${hidden}`;
    this.#clear(rel, false);
    this.stats.whiteouts++;
    if (this.#options.record) {
      // A 0/0 character device, as overlayfs spells a deletion: LowerView reads it from the record.
      this.#placeholder(rel, { mode: S_IFMT_BITS.char, uid: 0, gid: 0, rdev: 0n });
      return;
    }
    this.#pending.set(rel, {
      rel,
      kind: "c",
      major: 0,
      minor: 0,
      mode: 0,
      uid: 0,
      gid: 0,
      mtime: 0,
      xattrs: new Map(),
    });
  }

  #applyDirMeta(rel: string, header: TarEntry): void {
    const path = this.#abs(rel);
    const record = this.#options.record;
    if (record) {
      chmodSync(path, (header.mode & 0o777) | 0o700);
      const opaque = record.get(rel)?.opaque;
      this.#record(rel, S_IFMT_BITS.dir, header);
      if (opaque) record.set(rel, { ...record.get(rel)!, opaque });
    } else {
      lchownSync(path, header.uid, header.gid);
      chmodSync(path, header.mode);
      this.#setXattrs(path, rel, header.xattrs, false);
    }
    this.#dirTimes.set(rel, header.mtime);
  }

  /** Mode 3: the entry's facts as the archive gives them. */
  #record(rel: string, type: number, header: Pick<TarEntry, "mode" | "uid" | "gid" | "xattrs">): void {
    const xattrs = contentXattrs(header.xattrs);
    this.#options.record!.set(rel, {
      mode: type | (header.mode & 0o7777),
      uid: header.uid,
      gid: header.gid,
      ...(xattrs ? { xattrs } : {}),
    });
  }

  /** Mode 3: an empty regular file standing for a node that cannot be made (device, fifo, whiteout). */
  #placeholder(rel: string, facts: PathFacts): void {
    closeSync(openSync(this.#abs(rel), CREATE_FLAGS, 0o600));
    this.#created.add(rel);
    this.#options.record!.set(rel, facts);
  }

  #setXattrs(path: string, rel: string, xattrs: Map<string, Buffer>, isSymlink: boolean): void {
    const ignored = applyXattrs(path, xattrs, { isSymlink, what: `layer entry ${quoteUntrusted(rel)}` });
    for (const key of ignored) this.stats.ignoredXattrs.push(`${rel}: ${key}`);
  }

  /** Create queued device nodes, fifos and whiteouts with one `sh` running `mknod` per node. */
  async #flushPending(): Promise<void> {
    if (this.#pending.size === 0) return;
    const nodes = [...this.#pending.values()];
    this.#pending.clear();
    const script: string[] = ["set -e"];
    for (const n of nodes) {
      // Re-check the parents now: nothing else writes into root, so this check cannot go stale.
      this.#checkExistingParents(n.rel.split("/").slice(0, -1), n.rel);
      const dev = n.kind === "p" ? "p" : `${n.kind} ${n.major} ${n.minor}`;
      script.push(`mknod -m ${(n.mode & 0o777).toString(8).padStart(4, "0")} -- ${shQuote(n.rel)} ${dev}`);
    }
    await runScript(`${script.join("\n")}\n`, this.#root);
    for (const n of nodes) {
      const path = this.#abs(n.rel);
      this.#created.add(n.rel);
      if (lstatSync(path).isSymbolicLink())
        throw unsafe(n.rel, "was replaced by a symlink during extraction");
      lchownSync(path, n.uid, n.gid);
      if (n.mode & 0o7000) chmodSync(path, n.mode);
      this.#setXattrs(path, n.rel, n.xattrs, false);
      lutimesSync(path, n.mtime, n.mtime);
    }
  }

  async finish(): Promise<void> {
    await this.#flushPending();
    // Deepest first, so setting a directory's times is not undone by touching its parent's entries.
    const dirs = [...this.#dirTimes.entries()].sort((a, b) => depth(b[0]) - depth(a[0]));
    for (const [rel, mtime] of dirs) lutimesSync(this.#abs(rel), mtime, mtime);
  }
}

/** Linux's dev_t layout (glibc's gnu_dev_makedev). */
function makeDev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n) | ((ma & ~0xfffn) << 32n);
}

/** An archive's xattrs without overlayfs' own (never from an image), or undefined when none are left. */
function contentXattrs(xattrs: ReadonlyMap<string, Buffer>): Map<string, Buffer> | undefined {
  const kept = new Map(
    [...xattrs].filter(([k]) => !k.startsWith("trusted.overlay.") && !k.startsWith("user.overlay.")),
  );
  return kept.size ? kept : undefined;
}

function depth(rel: string): number {
  return rel === "" ? 0 : rel.split("/").length;
}

function runScript(script: string, cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-s"], { cwd, stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on("error", (e) =>
      reject(
        new SutureError("IO", `cannot run mknod to create device nodes: ${describeCause(e)}`, { cause: e }),
      ),
    );
    child.on("close", (code) => {
      if (code === 0) resolve();
      else
        reject(
          new SutureError(
            "IO",
            `mknod failed creating device nodes, whiteouts or fifos in a layer (exit ${code}): ${stderr.trim().split("\n")[0]}`,
          ),
        );
    });
    child.stdin.end(script);
  });
}
