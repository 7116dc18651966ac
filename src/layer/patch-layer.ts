/**
 * Turns an overlayfs upper dir into the single, minimal layer that, applied over the image's
 * layers, gives what the container saw in its merged dir — minus excluded paths, and minus every
 * change that changes nothing (the bulk of what dpkg leaves: it rewrites every file of each
 * package it touches, and most come out byte-identical).
 *
 * Layer contents, decided per upper-dir entry (walked depth-first, siblings in byte order of
 * the name they get in the tar, so the same upper dir always gives the same bytes):
 * - excluded (see excludes.ts): not written, the lowers' version stays visible;
 * - whiteout (char device 0/0): `.wh.NAME`, but only when the lowers show something at NAME;
 * - opaque directory: the directory, then `DIR/.wh..wh..opq` first among its entries, but only
 *   when the lowers show a directory there (otherwise there is nothing to hide);
 * - a file, symlink or device equal to what the lowers show at that path (see compare.ts: type,
 *   permission bits, owner, group, size, bytes, symlink target, content xattrs; NOT times):
 *   dropped;
 * - a directory equal to the lowers' one: written only as the parent of something written.
 *   The lowers already show it with the same metadata, so leaving it out would also extract
 *   correctly; writing it keeps the layer self-describing (scanners and appliers that create
 *   missing parents with default modes see the real ones) at 512 bytes per directory;
 * - hardlinked regular files (upper paths sharing an inode): one decision for the whole group.
 *   If any member differs from the lowers, every member is written, the first in walk order as
 *   the file and the others as hardlinks to it, so the link survives; otherwise all are dropped;
 * - the upper dir's root itself is never written (a package update does not change "/").
 */
import {
  type BigIntStats,
  closeSync,
  constants,
  createWriteStream,
  promises as fs,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
} from "node:fs";
import { join, posix } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { compressor } from "../archive/compression.ts";
import { compareBytes, type TarWriteEntry, writeTar } from "../archive/tar/write.ts";
import { asSutureError, SutureError } from "../errors/errors.ts";
import { placeFile, tempPathBeside } from "../fs/atomic.ts";
import { effectiveStat, type PathFacts, recordedFacts } from "../fs/owners.ts";
import { DigestingStream } from "../image/digest.ts";
import type { StreamingBlobUpload } from "../image/source.ts";
import type { Compression } from "../oci/media-types.ts";
import { type ProgressSink, silentProgress, withStep } from "../progress/events.ts";
import { readFully, sameContent, sameMetadata, sameXattrs } from "./compare.ts";
import { defaultExclude, type ExcludeInfo, type ExcludePredicate } from "./excludes.ts";
import { type LowerEntry, LowerView } from "./lower-view.ts";
import { assertExpressible, type EntryXattrs, isOpaque, isWhiteout, readXattrs } from "./overlay.ts";
import { asRecorded, MAX_PYC_BYTES, pycSourceOf, recordedSource, withRecordedTime } from "./pyc.ts";

export interface BuildPatchLayerOptions {
  /** The overlay upper dir; it must not change while the layer is built (unmount first, or stop writers). */
  upperDir: string;
  /** The overlay lower dirs, bottom first. Whiteouts and opaque dirs in them are honoured. */
  lowerDirs: readonly string[];
  /** Where the layer blob goes; written to a temporary file beside it, then renamed into place. */
  outFile: string;
  compression: Compression;
  /** Which upper entries to leave out. Defaults to {@link defaultExclude}; compose to extend it. */
  exclude?: ExcludePredicate;
  /**
   * Keep a regular file whose bytes are unchanged but whose mtime (to the second) differs from
   * the lowers'. For package managers whose verification checks file times against their database
   * (`rpm -V`): an upgrade rewrites, or touches, every file of a package with the new header's
   * mtime, and leaving the old file would make `rpm -V` report it as modified.
   */
  keepTouchedFiles?: boolean;
  /**
   * Reproducible times (see {@link LayerTimes}): entries the patch wrote without a package-given
   * time get `LayerTimes.epoch`. Without it, every entry keeps its mtime in the upper dir.
   */
  times?: LayerTimes;
  /**
   * The no-namespaces mode (issue 16, mode 3): `upperDir` is not an overlay's upper dir but a
   * full working tree (sandbox/plain-tree.ts) copied from the lowers, whose owners, modes, devices
   * and xattrs are recorded (fs/owners.ts) rather than on disk. The layer is the difference
   * between the tree and the lowers, by the same rules: an entry whose inode is untouched since
   * the copy is the lowers' own and is skipped without reading it; a lower path missing from a
   * changed directory of the tree becomes a whiteout; there are no opaque directories.
   */
  plainTree?: PlainTree;
  /**
   * Also send the compressed bytes somewhere as they are produced (a registry upload session,
   * opened when the build starts): same bytes, same digest, the file is still written. Its
   * failures never fail the build (see StreamingBlobUpload), but a registry refusing the digest does.
   */
  upload?: () => StreamingBlobUpload;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

/** What the layer builder needs to know of a mode-3 working tree (see BuildPatchLayerOptions.plainTree). */
export interface PlainTree {
  /** Each lower dir's recorded facts, bottom first (the order of `lowerDirs`). */
  lowerFacts: readonly (ReadonlyMap<string, PathFacts> | undefined)[];
  /** Whether a tree entry (its lstat) is exactly as the copy made it. */
  untouched(st: BigIntStats): boolean;
}

/**
 * What makes two patches of the same image to the same package versions give the same bytes on
 * any machine and any day. Package managers give the files they unpack the mtime their package
 * records (dpkg, apk and rpm all do), which is the same every time; everything else the patch
 * writes — directories whose entries changed, the package databases, files maintainer scripts
 * (re)generate, whiteouts — carries the time of the run. Those are told apart by time alone: an
 * upper-dir entry whose mtime is at or after `writtenSince` (the run's start, taken before the
 * overlay was mounted) was written by this run and given no time by a package, so it gets `epoch`.
 * An entry copied up from the lowers keeps the lowers' time (overlayfs preserves it), a packaged
 * file its package's. rpm's `keepTouchedFiles` compares the real times first, so `rpm -V` still
 * sees each file's header time.
 */
export interface LayerTimes {
  /** Seconds since 1970: entries at or after it were written by this run. */
  writtenSince: number;
  /** Seconds since 1970 those entries get. */
  epoch: number;
}

export interface PatchLayerStats {
  /** Non-directory entries written with content: regular files, hardlinks, symlinks, devices, fifos. */
  files: number;
  /** `.wh.NAME` entries written. */
  whiteouts: number;
  /** `.wh..wh..opq` entries written. */
  opaqueDirs: number;
  /**
   * Non-directory upper entries left out because the lowers already show the same thing there
   * (including whiteouts of paths the lowers do not have).
   */
  droppedUnchanged: number;
  /** Bytes of the regular files among them. */
  droppedUnchangedBytes: number;
  /** Upper entries the exclude predicate left out; a directory counts once for its whole subtree. */
  excluded: number;
  /** Upper entries given `LayerTimes.epoch` instead of the time of the run (directories also when not written). */
  clampedTimes: number;
  /** Compiled Python files given the time of the source the image keeps (pyc.ts). */
  pycTimesKept: number;
}

export interface PatchLayer {
  /** Digest and size of the blob as written (compressed), for the manifest's layer descriptor. */
  descriptorFields: { digest: string; size: number };
  /** Digest of the uncompressed tar, for the config's rootfs.diff_ids. */
  diffID: string;
  uncompressedSize: number;
  /** Tar entries written (PAX headers not counted). */
  entries: number;
  stats: PatchLayerStats;
  /** The blob is already stored where BuildPatchLayerOptions.upload sent it. */
  uploaded?: boolean;
}

/**
 * Build the patch layer and write it to `outFile`. Streams end to end (tar → diffID hash →
 * compressor → digest hash → [upload →] file); nothing is held in memory but one chunk and the hardlink
 * groups. The output appears atomically: on any error the temporary file is removed and
 * `outFile` is untouched. Deterministic: the same directories give the same bytes.
 *
 * Throws SANDBOX for upper dirs written with redirect_dir/metacopy on (see overlay.ts), UNSAFE_LAYER
 * for names a layer cannot carry (a real file named `.wh.*`), IO for unreadable input or output.
 */
export async function buildPatchLayer(options: BuildPatchLayerOptions): Promise<PatchLayer> {
  const progress = options.progress ?? silentProgress;
  await assertDirectory(options.upperDir, "upper dir");
  for (const dir of options.lowerDirs) await assertDirectory(dir, "lower dir");
  return withStep(progress, "layer", `building the patch layer from ${options.upperDir}`, async () => {
    const walker = new UpperWalker(options, progress);
    const tmp = tempPathBeside(options.outFile);
    const diff = new DigestingStream();
    const blob = new DigestingStream();
    let upload: StreamingBlobUpload | undefined;
    try {
      upload = options.upload?.();
      walker.collectHardlinks();
      await pipeline(
        Readable.from(writeTar(walker.entries()), { objectMode: false }),
        diff,
        ...compressor(options.compression),
        blob,
        ...(upload ? [tee(upload)] : []),
        createWriteStream(tmp),
        { signal: options.signal },
      );
      await placeFile(tmp, options.outFile, `cannot write the patch layer to ${options.outFile}`);
    } catch (e) {
      await upload?.cancel();
      await fs.rm(tmp, { force: true });
      if (options.signal?.aborted)
        throw new SutureError("CANCELLED", "building the patch layer was cancelled", { cause: e });
      throw asSutureError(e, "IO", `cannot write the patch layer to ${options.outFile}`);
    }
    const result: PatchLayer = {
      descriptorFields: { digest: blob.digest, size: blob.size },
      diffID: diff.digest,
      uncompressedSize: diff.size,
      entries: walker.entryCount,
      stats: walker.stats,
    };
    if (upload) result.uploaded = await upload.finish(result.descriptorFields);
    const s = result.stats;
    progress({
      type: "info",
      message: `patch layer: ${result.entries} entries, ${s.files} files, ${s.whiteouts} whiteouts, ${s.opaqueDirs} opaque dirs; dropped ${s.droppedUnchanged} unchanged (${s.droppedUnchangedBytes} bytes), excluded ${s.excluded}; ${s.clampedTimes} times set to the patch epoch${s.pycTimesKept ? `; ${s.pycTimesKept} compiled Python files given their kept sources' times` : ""}`,
    });
    return result;
  });
}

/** Passes the compressed bytes on to the file, each handed to the upload first (its backpressure included). */
function tee(upload: StreamingBlobUpload): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      upload.write(chunk).then(() => callback(null, chunk), callback);
    },
  });
}

/** Files are opened only after lstat said "regular file"; never follow a symlink swapped in since. */
const READ_NO_FOLLOW = constants.O_RDONLY | constants.O_NOFOLLOW;

interface UpperChild {
  name: string;
  /** Path relative to the upper dir, "/"-separated, no leading "/". */
  rel: string;
  abs: string;
  stat: BigIntStats;
  whiteout: boolean;
  /** Base name the entry gets in the tar (".wh.NAME" for whiteouts): the sibling sort key. */
  tarBase: string;
  /** A mode-3 whiteout (a lower path gone from the tree): it has no inode of its own. */
  synthetic?: boolean;
}

interface PendingDir {
  entry: TarWriteEntry;
  written: boolean;
}

interface LinkGroup {
  /** Members in walk order, relative paths. */
  paths: string[];
  changed?: boolean;
  /** Tar name of the member written as the file; later members link to it. */
  firstWritten?: string;
}

class UpperWalker {
  readonly stats: PatchLayerStats = {
    files: 0,
    whiteouts: 0,
    opaqueDirs: 0,
    droppedUnchanged: 0,
    droppedUnchangedBytes: 0,
    excluded: 0,
    clampedTimes: 0,
    pycTimesKept: 0,
  };
  entryCount = 0;
  readonly #upperDir: string;
  readonly #lower: LowerView;
  readonly #exclude: ExcludePredicate;
  readonly #progress: ProgressSink;
  readonly #signal: AbortSignal | undefined;
  readonly #keepTouchedFiles: boolean;
  readonly #times: LayerTimes | undefined;
  readonly #plain: PlainTree | undefined;
  readonly #groups = new Map<string, LinkGroup>();
  /**
   * What #sameAsLower said of the sources (and source links) a compiled Python file's decision
   * compared with the lowers, by upper path: the walk takes the answer when it reaches them, so
   * each is compared (read whole, beside its lower) once.
   */
  readonly #sourceVerdicts = new Map<string, boolean>();

  constructor(options: BuildPatchLayerOptions, progress: ProgressSink) {
    this.#upperDir = options.upperDir;
    this.#plain = options.plainTree;
    this.#lower = new LowerView(
      options.lowerDirs,
      this.#plain ? { facts: this.#plain.lowerFacts } : { upperDir: options.upperDir },
    );
    this.#exclude = options.exclude ?? defaultExclude;
    this.#progress = progress;
    this.#signal = options.signal;
    this.#keepTouchedFiles = options.keepTouchedFiles ?? false;
    this.#times = options.times;
  }

  /** An entry's tar mtime: its own, or the epoch when this run wrote it (see LayerTimes). */
  #mtime(st: BigIntStats | undefined): number {
    // A mode-3 whiteout was written by this run (an overlay whiteout would carry its time).
    const own = st ? seconds(st.mtimeNs) : Math.floor(Date.now() / 1000);
    if (!this.#times || own < this.#times.writtenSince) return own;
    this.stats.clampedTimes++;
    return this.#times.epoch;
  }

  /**
   * First pass: find regular files that share an inode inside the upper dir. The decision for a
   * hardlink group needs all its members before the first one is written.
   */
  collectHardlinks(): void {
    const visit = (rel: string, abs: string): void => {
      this.#signal?.throwIfAborted();
      for (const child of this.#readChildren(rel, abs)) {
        if (child.whiteout || this.#exclude(`/${child.rel}`, excludeInfo(child.stat))) continue;
        if (this.#plain?.untouched(child.stat) && !child.stat.isDirectory()) continue;
        if (child.stat.isDirectory()) visit(child.rel, child.abs);
        else if (child.stat.isFile() && child.stat.nlink > 1n) {
          const key = `${child.stat.dev}:${child.stat.ino}`;
          const group = this.#groups.get(key);
          if (group) group.paths.push(child.rel);
          else this.#groups.set(key, { paths: [child.rel] });
        }
      }
    };
    visit("", this.#upperDir);
    for (const [key, group] of this.#groups) if (group.paths.length < 2) this.#groups.delete(key);
  }

  async *entries(): AsyncGenerator<TarWriteEntry> {
    for await (const entry of this.#walkDir("", this.#upperDir, [], true)) {
      this.entryCount++;
      yield entry;
    }
  }

  /** `listChanged`: the directory's entries may differ from the lowers' (mode 3 looks for removals). */
  async *#walkDir(
    rel: string,
    abs: string,
    pending: PendingDir[],
    listChanged: boolean,
  ): AsyncGenerator<TarWriteEntry> {
    this.#signal?.throwIfAborted();
    const children = this.#readChildren(rel, abs);
    if (this.#plain && listChanged) {
      const present = new Set(children.map((c) => c.name));
      for (const name of this.#lower.names(rel)) {
        if (present.has(name)) continue;
        children.push({
          name,
          rel: rel === "" ? name : `${rel}/${name}`,
          abs: join(abs, name),
          stat: undefined as unknown as BigIntStats,
          whiteout: true,
          tarBase: `.wh.${name}`,
          synthetic: true,
        });
      }
      children.sort((a, b) => compareBytes(a.tarBase, b.tarBase));
    }
    for (const child of children) {
      const st = child.stat;
      const path = `/${child.rel}`;
      if (!child.whiteout && this.#plain?.untouched(st)) {
        // Exactly as copied from the lowers: nothing to write, but changes may lie below.
        if (st.isDirectory()) {
          pending.push({
            entry: baseEntry(child, "directory", this.#mtime(st), this.#xattrsOf(child)),
            written: false,
          });
          yield* this.#walkDir(child.rel, child.abs, pending, false);
          pending.pop();
        }
        continue;
      }
      if (child.whiteout) {
        if (this.#exclude(path, { type: "whiteout", size: 0 })) {
          this.stats.excluded++;
        } else if (!this.#lower.lookup(child.rel)) {
          this.stats.droppedUnchanged++; // deleting what the image never had
        } else {
          yield* flush(pending);
          yield marker(rel, child.tarBase, this.#mtime(child.synthetic ? undefined : st));
          this.stats.whiteouts++;
        }
        continue;
      }
      if (this.#exclude(path, excludeInfo(st))) {
        this.stats.excluded++;
        continue;
      }
      const xattrs = this.#xattrsOf(child);
      assertExpressible(xattrs, child.abs);
      const lower = this.#lower.lookup(child.rel);

      if (st.isDirectory()) {
        const lowerIsDir = lower?.stat.isDirectory() === true;
        const unchanged = lowerIsDir && this.#sameAsLower(child.abs, st, xattrs, lower);
        pending.push({ entry: baseEntry(child, "directory", this.#mtime(st), xattrs), written: false });
        if (!unchanged) yield* flush(pending);
        if (isOpaque(xattrs, child.abs) && lowerIsDir) {
          yield* flush(pending);
          yield marker(child.rel, ".wh..wh..opq", this.#mtime(st));
          this.stats.opaqueDirs++;
        }
        yield* this.#walkDir(child.rel, child.abs, pending, true);
        pending.pop();
        continue;
      }

      if (st.isFile()) {
        const size = Number(st.size);
        const group = st.nlink > 1n ? this.#groups.get(`${st.dev}:${st.ino}`) : undefined;
        let changed: boolean;
        // Set when a compiled Python file must carry its kept source's time (pyc.ts).
        const pyc = group ? undefined : this.#pycForKeptSource(child.rel, child.abs, size);
        if (group) {
          group.changed ??= this.#groupChanged(group, st, xattrs);
          changed = group.changed;
        } else if (pyc) {
          changed = !this.#sameAsLower(child.abs, st, xattrs, lower, pyc);
          if (changed) this.stats.pycTimesKept++;
        } else {
          changed = !(this.#sourceVerdicts.get(child.rel) ?? this.#sameAsLower(child.abs, st, xattrs, lower));
        }
        if (!changed) {
          this.stats.droppedUnchanged++;
          this.stats.droppedUnchangedBytes += size;
          continue;
        }
        yield* flush(pending);
        if (group?.firstWritten !== undefined) {
          yield { ...baseEntry(child, "hardlink", this.#mtime(st)), linkname: group.firstWritten };
        } else {
          if (group) group.firstWritten = child.rel;
          yield {
            ...baseEntry(child, "file", this.#mtime(st), xattrs),
            size,
            body: () => (pyc ? [pyc] : readNoFollow(child.abs, size)),
          };
        }
        this.stats.files++;
        continue;
      }

      if (st.isSocket()) {
        // A socket is runtime state, and tar has no type for it.
        this.#progress({ type: "warning", message: `${path} is a socket; sockets are not put in layers` });
        continue;
      }
      if (this.#sourceVerdicts.get(child.rel) ?? this.#sameAsLower(child.abs, st, xattrs, lower)) {
        this.stats.droppedUnchanged++;
        continue;
      }
      yield* flush(pending);
      if (st.isSymbolicLink()) {
        yield { ...baseEntry(child, "symlink", this.#mtime(st), xattrs), linkname: readLinkText(child.abs) };
      } else if (st.isFIFO()) {
        yield baseEntry(child, "fifo", this.#mtime(st), xattrs);
      } else {
        const { major, minor } = splitDev(st.rdev);
        yield {
          ...baseEntry(child, st.isCharacterDevice() ? "char" : "block", this.#mtime(st), xattrs),
          devmajor: major,
          devminor: minor,
        };
      }
      this.stats.files++;
    }
  }

  /**
   * A compiled Python file at `rel` made from an upper source this layer drops as unchanged: its
   * bytes with the time of the lowers' source, which the image keeps (pyc.ts). Undefined when it
   * was not compiled from that upper source, the source goes in the layer, or the times agree.
   * Overlay mode only: mode 3's tree carries copied times of its own.
   */
  #pycForKeptSource(rel: string, abs: string, size: number): Buffer | undefined {
    let sourceRel = pycSourceOf(rel);
    if (!sourceRel || this.#plain || size > MAX_PYC_BYTES) return undefined;
    let sourceAbs = join(this.#upperDir, sourceRel);
    let source = lstatSync(sourceAbs, { bigint: true, throwIfNoEntry: false });
    let lowerSource = this.#lower.lookup(sourceRel);
    if (source?.isSymbolicLink()) {
      // Python stats through a link (Debian's _sysconfigdata__linux_*.py): one level, the link
      // itself unchanged, its target a file beside it.
      if (!lowerSource || !this.#sourceSameAsLower(sourceRel, sourceAbs, source, lowerSource))
        return undefined;
      const target = sameDirLinkTarget(sourceRel, readlinkSync(sourceAbs, "utf8"));
      if (target === undefined) return undefined;
      sourceRel = target;
      sourceAbs = join(this.#upperDir, sourceRel);
      source = lstatSync(sourceAbs, { bigint: true, throwIfNoEntry: false });
      lowerSource = this.#lower.lookup(sourceRel);
    }
    if (!source?.isFile() || !lowerSource?.stat.isFile()) return undefined;
    const keptTime = wholeSeconds(lowerSource.stat.mtimeNs);
    if (wholeSeconds(source.mtimeNs) === keptTime) return undefined;
    const bytes = readNoFollowSync(abs, size);
    const recorded = recordedSource(bytes);
    if (
      !recorded ||
      recorded.mtime !== asRecorded(wholeSeconds(source.mtimeNs)) ||
      recorded.size !== asRecorded(source.size) ||
      !this.#sourceSameAsLower(sourceRel, sourceAbs, source, lowerSource)
    )
      return undefined;
    return withRecordedTime(bytes, Number(keptTime));
  }

  /** #sameAsLower for a compiled Python file's source at `rel`, kept for the walk (#sourceVerdicts). */
  #sourceSameAsLower(rel: string, abs: string, st: BigIntStats, lower: LowerEntry): boolean {
    let same = this.#sourceVerdicts.get(rel);
    if (same === undefined) {
      same = this.#sameAsLower(abs, st, readXattrs(abs), lower);
      this.#sourceVerdicts.set(rel, same);
    }
    return same;
  }

  /**
   * Whether the lowers show exactly this at `lower` (ignoring times; see compare.ts). `content`:
   * the bytes the layer would carry for this file instead of its own (a compiled Python file's).
   */
  #sameAsLower(
    abs: string,
    st: BigIntStats,
    xattrs: EntryXattrs,
    lower: LowerEntry | undefined,
    content?: Buffer,
  ): boolean {
    if (!lower || !sameMetadata(st, lower.stat)) return false;
    if (st.isFile() && (content ? BigInt(content.length) : st.size) !== lower.stat.size) return false;
    if (
      st.isFile() &&
      this.#keepTouchedFiles &&
      wholeSeconds(st.mtimeNs) !== wholeSeconds(lower.stat.mtimeNs)
    )
      return false;
    if (st.isSymbolicLink()) {
      const a = readlinkSync(abs, { encoding: "buffer" });
      if (!a.equals(readlinkSync(lower.path, { encoding: "buffer" }))) return false;
    }
    if (!sameXattrs(xattrs.content, lower.xattrs ?? readXattrs(lower.path).content)) return false;
    if (st.isFile())
      return content
        ? readNoFollowSync(lower.path, content.length).equals(content)
        : sameContent(abs, lower.path, Number(st.size));
    return true;
  }

  /** A hardlink group is changed when any member differs from what the lowers show at its path. */
  #groupChanged(group: LinkGroup, st: BigIntStats, xattrs: EntryXattrs): boolean {
    for (const rel of group.paths) {
      const lower = this.#lower.lookup(rel);
      if (!this.#sameAsLower(join(this.#upperDir, rel), st, xattrs, lower)) return true;
    }
    return false;
  }

  /** An entry's content xattrs: in mode 3 the recorded ones (its file carries none). */
  #xattrsOf(child: UpperChild): EntryXattrs {
    if (!this.#plain) return readXattrs(child.abs);
    return { content: new Map(recordedFacts(child.stat)?.xattrs ?? []), overlay: new Map() };
  }

  /** A directory's entries with their lstat, in tar order (byte order of their tar base names). */
  #readChildren(rel: string, abs: string): UpperChild[] {
    let names: Buffer[];
    try {
      names = readdirSync(abs, { encoding: "buffer" });
    } catch (e) {
      throw asSutureError(e, "IO", `cannot list ${abs}`);
    }
    const children: UpperChild[] = [];
    for (const raw of names) {
      const name = raw.toString("utf8");
      const childAbs = join(abs, name);
      if (!Buffer.from(name, "utf8").equals(raw))
        throw new SutureError(
          "IO",
          `${join(abs, raw.toString("latin1"))} has a name that is not valid UTF-8, which an OCI layer cannot carry portably: rename or remove it`,
        );
      let stat: BigIntStats;
      try {
        stat = lstatSync(childAbs, { bigint: true });
      } catch (e) {
        throw asSutureError(e, "IO", `cannot inspect ${childAbs}`);
      }
      // Mode 3: the facts the engine recorded (owners it could not set), or root's 0:0.
      if (this.#plain) stat = effectiveStat(stat);
      const whiteout = !this.#plain && isWhiteout(stat);
      if (!whiteout && name.startsWith(".wh."))
        throw new SutureError(
          "UNSAFE_LAYER",
          `${childAbs} is named like an OCI whiteout, so a layer cannot carry it: rename it`,
        );
      children.push({
        name,
        rel: rel === "" ? name : `${rel}/${name}`,
        abs: childAbs,
        stat,
        whiteout,
        tarBase: whiteout ? `.wh.${name}` : name,
      });
    }
    return children.sort((a, b) => compareBytes(a.tarBase, b.tarBase));
  }
}

/** Write the not yet written ancestors, outermost first. */
function* flush(pending: PendingDir[]): Generator<TarWriteEntry> {
  for (const dir of pending) {
    if (dir.written) continue;
    dir.written = true;
    yield dir.entry;
  }
}

/** An empty regular file named `base` in directory `dirRel`: a whiteout or opaque marker. */
function marker(dirRel: string, base: string, mtime: number): TarWriteEntry {
  return {
    path: dirRel === "" ? base : `${dirRel}/${base}`,
    type: "file",
    mode: 0,
    uid: 0,
    gid: 0,
    mtime,
    size: 0,
  };
}

function baseEntry(
  child: UpperChild,
  type: TarWriteEntry["type"],
  mtime: number,
  xattrs?: EntryXattrs,
): TarWriteEntry {
  const st = child.stat;
  return {
    path: child.rel,
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtime,
    xattrs: xattrs?.content,
  };
}

function excludeInfo(st: BigIntStats): ExcludeInfo {
  if (st.isFile()) return { type: "file", size: Number(st.size) };
  if (st.isDirectory()) return { type: "directory", size: 0 };
  if (st.isSymbolicLink()) return { type: "symlink", size: 0 };
  return { type: "other", size: 0 };
}

/** Whole seconds, rounding towards the past (as tar does) also before 1970. */
function seconds(ns: bigint): number {
  const s = ns / 1_000_000_000n;
  return Number(ns < 0n && s * 1_000_000_000n !== ns ? s - 1n : s);
}

/** Linux's dev_t layout (glibc gnu_dev_major/minor). */
function splitDev(rdev: bigint): { major: number; minor: number } {
  return {
    major: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
    minor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
  };
}

/** Files up to this size are read in one synchronous call (most files of a package are small). */
const SMALL_FILE = 1024 * 1024;

/** Up to `size` bytes of the file at `path`, in one synchronous read that follows no link. */
function readNoFollowSync(path: string, size: number): Buffer {
  const fd = openSync(path, READ_NO_FOLLOW);
  try {
    const buf = Buffer.allocUnsafe(size);
    return buf.subarray(0, readFully(fd, buf, size, 0));
  } finally {
    closeSync(fd);
  }
}

async function* readNoFollow(path: string, size: number): AsyncGenerator<Buffer> {
  if (size <= SMALL_FILE) {
    // One byte more than expected, so a file that grew is noticed by writeTar's size check.
    yield readNoFollowSync(path, size + 1);
    return;
  }
  const handle = await fs.open(path, READ_NO_FOLLOW);
  try {
    for await (const chunk of handle.createReadStream({ autoClose: false, highWaterMark: 1 << 20 }))
      yield chunk as Buffer;
  } finally {
    await handle.close();
  }
}

/**
 * A symlink's target as a layer path, when it names a file in the link's own directory (as
 * Debian's `_sysconfigdata__linux_*.py` does); undefined otherwise. The directory was walked in
 * the upper dir, so reading the target there goes through no link on the host's side.
 */
function sameDirLinkTarget(linkRel: string, target: string): string | undefined {
  if (target === "" || target === "." || target === ".." || target.includes("/")) return undefined;
  return posix.join(posix.dirname(linkRel), target);
}

function readLinkText(path: string): string {
  const raw = readlinkSync(path, { encoding: "buffer" });
  const text = raw.toString("utf8");
  if (!Buffer.from(text, "utf8").equals(raw))
    throw new SutureError(
      "IO",
      `${path} points to a target that is not valid UTF-8, which an OCI layer cannot carry portably`,
    );
  return text;
}

async function assertDirectory(path: string, what: string): Promise<void> {
  let st: Awaited<ReturnType<typeof fs.stat>>;
  try {
    st = await fs.stat(path);
  } catch (e) {
    throw asSutureError(e, "IO", `the ${what} ${path} cannot be read`);
  }
  if (!st.isDirectory()) throw new SutureError("IO", `the ${what} ${path} is not a directory`);
}

function wholeSeconds(ns: bigint): bigint {
  return ns / 1_000_000_000n;
}
