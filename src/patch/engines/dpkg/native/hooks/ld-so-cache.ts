/**
 * The image's `ldconfig` (glibc 2.36 as Debian bookworm builds it) done natively: the soname
 * links it creates, the stale `*.so.*` links it removes, and `/etc/ld.so.cache` in the format it
 * writes by default (`glibc-ld.so.cache1.1` only, no old-format prefix), byte for byte:
 *
 *   header (48 bytes)      magic + version, entry count, string table size, endianness flag 2
 *                          (little), extension directory offset
 *   entries (24 bytes)     flags (FLAG_ELF_LIBC6 | the machine's FLAG_*_LIB64), soname and path
 *                          as string table offsets counted from the file's start, hwcap (0, or
 *                          for a glibc-hwcaps subdirectory bit 62 | ISA level << 32 | the index
 *                          of its name in the hwcaps section)
 *   string table           every string once, suffixes shared (ldconfig's stringtable.c: sorted
 *                          by reversed bytes, longest first; a string that ends the previous one
 *                          points into it)
 *   zero padding to 4
 *   extension directory    magic 0xeaa42174, the sections: the generator string (`ldconfig
 *                          (Debian GLIBC …) stable release version 2.36`, from the program) and,
 *                          when a glibc-hwcaps subdirectory holds libraries, their names' offsets
 *                          sorted by name; then that array and the generator string.
 *
 * Entries are sorted as ldconfig's `compare` sorts them: by soname with `_dl_cache_libcmp`
 * (digit runs compared as numbers), descending; for one soname glibc-hwcaps entries first (by
 * subdirectory name), then the rest in the order the directories were scanned.
 *
 * Directories: /etc/ld.so.conf with its `include` globs (sorted, C collation), then Debian's
 * built-in ones (the multiarch /lib and /usr/lib dirs, /lib, /usr/lib); one directory reached twice
 * (usrmerge's /lib -> usr/lib) is scanned once, under its first name; each one's `glibc-hwcaps/*`
 * subdirectories are scanned after the directories already listed.
 *
 * Whatever this does not reproduce exactly — legacy hwcap subdirectories (tls, haswell, …),
 * 32-bit, x32 or a.out libraries, `dir=TYPE` lines, relative directories, names that are not
 * UTF-8, a soname that is a path, a dynamic linker whose file is not named by its soname — is
 * found by a first pass that writes nothing and reported as `unsupported`, so the real program
 * runs instead.
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  constants,
  type Dirent,
  openSync,
  readdirSync,
  readFileSync,
  type Stats,
  statSync,
  symlinkSync,
  unlinkSync,
} from "node:fs";
import { describeCause } from "../../../../../errors/errors.ts";
import { writeFileAtomic } from "../../../../../fs/atomic.ts";
import { fnmatchRegExp } from "../../../../../fs/fnmatch.ts";
import { readFileInRoot, resolveInRoot, walkInRoot } from "../../../../../fs/in-root.ts";
import {
  CACHE_FLAGS,
  decodeUtf8,
  type ElfLibraryReading,
  type LdconfigMachine,
  readElfLibrary,
} from "./elf-library.ts";

/** One build of ldconfig this reproduces: the machine its cache is for and its generator string. */
export interface LdconfigBuild {
  machine: LdconfigMachine;
  /** The Debian multiarch triplet of its built-in directories. */
  triplet: string;
  generator: string;
  /** The libc-bin versions that ship it. */
  versions: string;
}

/** SHA-256 of each known `/sbin/ldconfig` binary. */
export const LDCONFIG_BUILDS: ReadonlyMap<string, LdconfigBuild> = new Map([
  [
    "9fe518ff7e31cbeb3b9f10595f06251d10a578b12ebfdbe5ac1854fa8e8def25",
    {
      machine: "x86-64",
      triplet: "x86_64-linux-gnu",
      generator: "ldconfig (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36",
      versions: "2.36-9+deb12u14 amd64 (bookworm 12.13+)",
    },
  ],
  [
    "c0e3b1329f770a0f8ab789318cab2d3fb2fb25df08c4467dbac814391cfc87b2",
    {
      machine: "aarch64",
      triplet: "aarch64-linux-gnu",
      generator: "ldconfig (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36",
      versions: "2.36-9+deb12u14 arm64 (bookworm 12.13+)",
    },
  ],
]);

export const LDCONFIG_PROGRAM = "/sbin/ldconfig";
const LD_SO_CONF = "/etc/ld.so.conf";
const LD_SO_CACHE = "/etc/ld.so.cache";
const GLIBC_HWCAPS = "glibc-hwcaps";
/** Includes nested deeper than this are refused (ldconfig itself would recurse until it crashed). */
const MAX_INCLUDE_DEPTH = 16;

/**
 * Legacy hwcap and platform names: a directory named so is searched with a hwcap mask, which
 * this does not reproduce (`is_hwcap_platform`, `path_hwcap`).
 */
const HWCAP_NAMES: Record<LdconfigMachine, ReadonlySet<string>> = {
  "x86-64": new Set(["tls", "sse2", "x86_64", "avx512_1", "i586", "i686", "haswell", "xeon_phi"]),
  aarch64: new Set(
    (
      "tls fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma " +
      "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
    ).split(" "),
  ),
};

export type LdconfigResult =
  | { done: true; libraries: number; linksMade: number; linksRemoved: number }
  | { done: false; unsupported: string };

class Unsupported extends Error {}

/*
 * File system calls here are synchronous, as in fs/in-root.ts: ldconfig makes a few calls per
 * library, and a threadpool round trip each cost seconds on a loaded machine for a few hundred.
 */

/** stat(2), following links; undefined when it fails (as ldconfig treats a failed stat). */
function statOrUndefined(host: string): Stats | undefined {
  try {
    return statSync(host);
  } catch {
    return undefined;
  }
}

function readdirOrEmpty(host: string): Dirent<Buffer>[] {
  try {
    return readdirSync(host, { withFileTypes: true, encoding: "buffer" });
  } catch {
    return [];
  }
}

/**
 * Run one recorded `ldconfig` call natively (`args` as the program got them; with no arguments
 * or `-r /`, the only ones Debian's scripts pass). `program` is the image's ldconfig, whose build
 * decides the machine and generator string.
 */
export async function runLdconfig(root: string, args: readonly string[]): Promise<LdconfigResult> {
  try {
    if (!(args.length === 0 || (args.length === 2 && args[0] === "-r" && /^\/*$/.test(args[1]!))))
      throw new Unsupported(`arguments ${JSON.stringify(args)}`);
    const build = await ldconfigBuild(root);
    // A pass that only reads, so an unsupported tree is found before anything changes; then the
    // pass that makes the links as it goes (a later directory sees them, as with ldconfig).
    const readings: Readings = new Map();
    const planned = await scan(root, build, false, readings);
    // With no link to make or remove, the second pass would find the same tree.
    const result =
      planned.linksMade || planned.linksRemoved ? await scan(root, build, true, readings) : planned;
    await writeCache(root, result.cache);
    return {
      done: true,
      libraries: result.libraries,
      linksMade: result.linksMade,
      linksRemoved: result.linksRemoved,
    };
  } catch (e) {
    if (e instanceof Unsupported) return { done: false, unsupported: e.message };
    // A file system error (a file gone or unreadable): the real program judges the tree.
    return { done: false, unsupported: describeCause(e) };
  }
}

/** The cache ldconfig would write for the tree at `root` (nothing is changed). For tests. */
export async function ldSoCacheFor(root: string): Promise<Buffer> {
  return (await scan(root, await ldconfigBuild(root), false, new Map())).cache;
}

async function ldconfigBuild(root: string): Promise<LdconfigBuild> {
  const program = await readFileInRoot(root, LDCONFIG_PROGRAM);
  if (!program) throw new Unsupported(`${LDCONFIG_PROGRAM} is not a file`);
  const build = LDCONFIG_BUILDS.get(createHash("sha256").update(program).digest("hex"));
  if (!build) throw new Unsupported(`an ldconfig build this does not know`);
  return build;
}

interface DirEntry {
  /** The path as configured (the cache records it so, not canonicalised). */
  path: string;
  /** `dev:ino`, which is how ldconfig notices a directory given twice. */
  identity: string;
  /** The glibc-hwcaps subdirectory name, for directories below `glibc-hwcaps/`. */
  hwcaps?: string;
}

interface CacheEntry {
  lib: string;
  path: string;
  isaLevel: number;
  hwcaps?: string;
}

interface ScanResult {
  cache: Buffer;
  libraries: number;
  linksMade: number;
  linksRemoved: number;
}

/** What each library file said, by device, inode, size and times (the two passes read each file once). */
type Readings = Map<string, ElfLibraryReading>;

async function scan(
  root: string,
  build: LdconfigBuild,
  apply: boolean,
  readings: Readings,
): Promise<ScanResult> {
  const dirs: DirEntry[] = [];
  const strings = new Set<string>();
  const hwcapsSeen = new Set<string>();

  const identityOf = async (path: string): Promise<string | undefined> => {
    const host = await resolveInRoot(root, path);
    const st = host ? statOrUndefined(host) : undefined;
    return st ? `${st.dev}:${st.ino}` : undefined;
  };
  const addSingle = (entry: DirEntry): boolean => {
    if (dirs.some((d) => d.identity === entry.identity)) return false;
    dirs.push(entry);
    return true;
  };
  const addDir = async (line: string) => {
    if (line.includes("="))
      throw new Unsupported(`a directory with a library type (${JSON.stringify(line)})`);
    const path = line.replace(/[ \t\n\v\f\r]+$/, "").replace(/\/+$/, "");
    if (path === "") return;
    if (!path.startsWith("/")) throw new Unsupported(`the relative directory ${JSON.stringify(path)}`);
    const last = path.slice(path.lastIndexOf("/") + 1);
    if (HWCAP_NAMES[build.machine].has(last)) throw new Unsupported(`the hwcap directory ${path}`);
    const identity = await identityOf(path);
    if (!identity) return;
    if (!addSingle({ path, identity })) return;
    // glibc-hwcaps subdirectories: anything but hidden names, regular files and names with ':'
    // that resolves to a directory.
    const hwcapsHost = await resolveInRoot(root, `${path}/${GLIBC_HWCAPS}`);
    if (!hwcapsHost) return;
    const names = readdirOrEmpty(hwcapsHost);
    for (const d of names) {
      const raw = d.name;
      if (raw[0] === 0x2e || d.isFile() || raw.includes(0x3a)) continue;
      const name = decodeUtf8(raw);
      if (name === undefined) throw new Unsupported(`a glibc-hwcaps name that is not UTF-8 in ${path}`);
      const sub = `${path}/${GLIBC_HWCAPS}/${name}`;
      const host = await resolveInRoot(root, sub);
      const st = host ? statOrUndefined(host) : undefined;
      if (!st?.isDirectory()) continue;
      strings.add(name);
      hwcapsSeen.add(name);
      addSingle({ path: sub, identity: `${st.dev}:${st.ino}`, hwcaps: name });
    }
  };

  await parseConf(root, LD_SO_CONF, addDir, 0);
  for (const dir of [`/lib/${build.triplet}`, `/usr/lib/${build.triplet}`, "/lib", "/usr/lib"])
    await addDir(dir);

  const entries: CacheEntry[] = [];
  let linksMade = 0;
  let linksRemoved = 0;
  // Directories found below glibc-hwcaps are appended while the list is walked.
  for (let i = 0; i < dirs.length; i++) {
    const r = await searchDir(root, build, dirs[i]!, apply, readings);
    entries.push(...r.entries);
    linksMade += r.linksMade;
    linksRemoved += r.linksRemoved;
  }
  for (const e of entries) {
    strings.add(e.lib);
    strings.add(e.path);
  }
  return { cache: cacheBytes(entries, strings, build), libraries: entries.length, linksMade, linksRemoved };
}

/** One line at a time as ldconfig's parse_conf reads them: `#` comments, `include`, `hwcap`, dirs. */
async function parseConf(root: string, file: string, addDir: (line: string) => Promise<void>, depth: number) {
  if (depth > MAX_INCLUDE_DEPTH) throw new Unsupported(`includes nested deeper than ${MAX_INCLUDE_DEPTH}`);
  const host = await resolveInRoot(root, file);
  if (!host) return;
  const st = statOrUndefined(host);
  if (!st) return;
  if (st.isDirectory()) return; // getline fails at once: no lines
  if (!st.isFile()) throw new Unsupported(`${file} is not a regular file`);
  const text = decodeUtf8(readFileSync(host));
  if (text === undefined) throw new Unsupported(`${file} is not UTF-8`);
  if (text.includes("\0")) throw new Unsupported(`${file} has a NUL byte`);
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  for (const raw of lines) {
    const hash = raw.indexOf("#");
    const line = (hash >= 0 ? raw.slice(0, hash) : raw).replace(/^[ \t\n\v\f\r]+/, "");
    if (line === "") continue;
    if (line.startsWith("include") && (line[7] === " " || line[7] === "\t")) {
      for (const pattern of line.slice(8).split(/[ \t]/))
        if (pattern !== "")
          for (const match of await globInRoot(root, file, pattern))
            await parseConf(root, match, addDir, depth + 1);
    } else if (/^hwcap[ \t]/i.test(line)) {
      // ldconfig 2.36 ignores the directive (with a warning).
    } else await addDir(line);
  }
}

/**
 * glob(3) with no flags, as parse_conf_include calls it (relative patterns are taken from the
 * including file's directory; results sorted bytewise; `*` and `?` do not match a leading dot).
 * Only the last component may have wildcards.
 */
async function globInRoot(root: string, from: string, pattern: string): Promise<string[]> {
  const full = pattern.startsWith("/")
    ? pattern
    : `${from.slice(0, from.lastIndexOf("/")) || "/"}/${pattern}`;
  const cut = full.lastIndexOf("/");
  const dir = full.slice(0, cut) || "/";
  const last = full.slice(cut + 1);
  if (/[*?[\\]/.test(dir)) throw new Unsupported(`the include pattern ${JSON.stringify(pattern)}`);
  if (!/[*?[\\]/.test(last)) return [full];
  const host = await resolveInRoot(root, dir);
  if (!host) return [];
  const names = readdirOrEmpty(host).map((d) => d.name);
  const re = fnmatchRegExp(last);
  const out: Buffer[] = [];
  for (const raw of names) {
    const name = decodeUtf8(raw);
    if (name === undefined) throw new Unsupported(`a name that is not UTF-8 in ${dir}`);
    if (name.startsWith(".") && !last.startsWith(".")) continue;
    if (re.test(name)) out.push(raw);
  }
  return out.sort(Buffer.compare).map((n) => `${dir === "/" ? "" : dir}/${n.toString("utf8")}`);
}

/** _dl_is_dso: lib*.so*, ld-*.so*, ld.so.*, ld64.so.*. */
function isDso(name: string): boolean {
  return (
    ((name.startsWith("lib") || name.startsWith("ld-")) && name.includes(".so")) ||
    name.startsWith("ld.so.") ||
    name.startsWith("ld64.so.")
  );
}

function isPrelinkTemporary(name: string): boolean {
  return name.endsWith(".#prelink#") || (name.length >= 17 && name.slice(-17, -6) === ".#prelink#.");
}

interface Dlib {
  name: string;
  soname: string;
  isLink: boolean;
  isaLevel: number;
}

/** ldconfig's search_dir for one directory: its libraries by soname, the links, the entries. */
async function searchDir(
  root: string,
  build: LdconfigBuild,
  entry: DirEntry,
  apply: boolean,
  readings: Readings,
): Promise<{ entries: CacheEntry[]; linksMade: number; linksRemoved: number }> {
  const none = { entries: [], linksMade: 0, linksRemoved: 0 };
  const dirHost = await resolveInRoot(root, entry.path);
  if (!dirHost) return none;
  const listing = readdirOrEmpty(dirHost);
  let linksRemoved = 0;
  const candidates: { name: string; filePath: string; isLnk: boolean; target: Stats; targetHost: string }[] =
    [];
  for (const d of listing) {
    const isReg = d.isFile();
    const isLnk = d.isSymbolicLink();
    if (!isReg && !isLnk && !d.isDirectory()) continue;
    const probe = d.name.toString("latin1");
    if (!isDso(probe)) {
      if (isReg) continue;
      if (entry.hwcaps === undefined && !HWCAP_NAMES[build.machine].has(probe)) continue;
      if (entry.hwcaps !== undefined && d.isDirectory()) continue;
      throw new Unsupported(
        `${entry.path}/${probe} (a hwcap subdirectory or a link in a glibc-hwcaps directory)`,
      );
    }
    if (isPrelinkTemporary(probe)) continue;
    const name = decodeUtf8(d.name);
    if (name === undefined) throw new Unsupported(`a library name that is not UTF-8 in ${entry.path}`);
    const filePath = `${entry.path}/${name}`;

    let target: Stats;
    let targetHost: string;
    if (isLnk) {
      const host = await resolveInRoot(root, filePath);
      const st = host ? statOrUndefined(host) : undefined;
      if (!host || !st) {
        // A dangling link ldconfig removes (it only looks like one of its own).
        if (name.includes(".so.")) {
          linksRemoved++;
          if (apply) unlinkSync(`${dirHost}/${name}`);
        }
        continue;
      }
      target = st;
      targetHost = host;
    } else {
      targetHost = `${dirHost}/${name}`;
      const st = statOrUndefined(targetHost);
      if (!st) continue; // gone since the listing: ldconfig's lstat fails too
      target = st;
    }
    if (target.isDirectory()) continue; // not mappable: ldconfig skips it
    if (!target.isFile()) throw new Unsupported(`${filePath} is neither a file nor a link to one`);

    candidates.push({ name, filePath, isLnk, target, targetHost });
  }

  // Each file is read once for both passes; what the files say is taken in directory order.
  const results = candidates.map(({ target, targetHost }): ElfLibraryReading => {
    const key = `${target.dev}:${target.ino}:${target.size}:${target.mtimeMs}:${target.ctimeMs}`;
    let reading = readings.get(key);
    if (!reading) {
      // The host path is resolved inside the root; the file itself is never a link here.
      const fd = openSync(targetHost, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        reading = readElfLibrary(fd, target.size, build.machine);
      } finally {
        closeSync(fd);
      }
      readings.set(key, reading);
    }
    return reading;
  });

  const dlibs = new Map<string, Dlib>();
  for (const [i, { name, filePath, isLnk }] of candidates.entries()) {
    const reading = results[i]!;
    if (reading.kind === "unsupported") throw new Unsupported(`${filePath}: ${reading.why}`);
    if (reading.kind === "skip") continue;
    let soname = reading.soname ?? name;
    let isLink = isLnk;
    if (isLink && name !== soname && !(name.endsWith(".so") && soname.startsWith(name))) isLink = false;
    if (isLink) soname = name;
    if (soname === "" || soname === "." || soname === ".." || soname.includes("/"))
      throw new Unsupported(`${filePath} has the soname ${JSON.stringify(soname)}`);
    const known = dlibs.get(soname);
    if (!known) {
      dlibs.set(soname, { name, soname, isLink, isaLevel: reading.isaLevel });
      continue;
    }
    if ((!isLink && known.isLink) || (isLink === known.isLink && dlCacheLibcmp(known.name, name) < 0)) {
      known.name = name;
      known.isLink = isLink;
      known.isaLevel = reading.isaLevel;
    }
  }

  const entries: CacheEntry[] = [];
  let linksMade = 0;
  for (const dlib of dlibs.values()) {
    let filename: string;
    if (entry.hwcaps === undefined) {
      if (!dlib.isLink && (await createLinks(root, entry.path, dlib.name, dlib.soname, apply))) linksMade++;
      filename = dlib.soname;
    } else filename = dlib.name;
    entries.push({
      lib: dlib.soname,
      path: `${entry.path}/${filename}`,
      isaLevel: dlib.isaLevel,
      ...(entry.hwcaps !== undefined ? { hwcaps: entry.hwcaps } : {}),
    });
  }
  return { entries, linksMade, linksRemoved };
}

/** create_links: `dir/soname` -> `libname`, unless it already leads to that file or is no link. */
async function createLinks(
  root: string,
  dir: string,
  libname: string,
  soname: string,
  apply: boolean,
): Promise<boolean> {
  const sonamePath = `${dir}/${soname}`;
  const at = walkInRoot(root, sonamePath, { followFinal: false, mustExist: false });
  if (at.kind === "not-directory") throw new Unsupported(`${sonamePath} is below a file`);
  const sonameHost = await resolveInRoot(root, sonamePath);
  const soStat = sonameHost ? statOrUndefined(sonameHost) : undefined;
  let remove: boolean;
  if (soStat) {
    const libHost = await resolveInRoot(root, `${dir}/${libname}`);
    const libStat = libHost ? statOrUndefined(libHost) : undefined;
    if (!libStat) return false;
    if (libStat.dev === soStat.dev && libStat.ino === soStat.ino) return false;
    if (at.kind === "found" && !at.stat.isSymbolicLink()) return false; // "is not a symbolic link"
    remove = true;
  } else remove = at.kind === "found" && at.stat.isSymbolicLink();
  // Debian's ldconfig leaves the dynamic linker's own link alone ("is the dynamic linker,
  // ignoring"); what exactly it then does is not reproduced.
  if (soname.startsWith("ld-") || soname.startsWith("ld.so") || soname.startsWith("ld64"))
    throw new Unsupported(`the dynamic linker ${dir}/${libname} is not named by its soname`);
  if (apply) {
    if (remove) unlinkSync(at.host);
    symlinkSync(libname, at.host);
  }
  return true;
}

/** _dl_cache_libcmp: byte order, except that runs of digits compare as numbers (as int, wrapping). */
export function dlCacheLibcmp(a: string | Buffer, b: string | Buffer): number {
  const p1 = typeof a === "string" ? Buffer.from(a) : a;
  const p2 = typeof b === "string" ? Buffer.from(b) : b;
  const digit = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x39;
  let i = 0;
  let j = 0;
  while (i < p1.length) {
    if (digit(p1[i])) {
      if (!digit(p2[j])) return 1;
      let v1 = p1[i++]! - 0x30;
      let v2 = p2[j++]! - 0x30;
      while (digit(p1[i])) v1 = (Math.imul(v1, 10) + p1[i++]! - 0x30) | 0;
      while (digit(p2[j])) v2 = (Math.imul(v2, 10) + p2[j++]! - 0x30) | 0;
      if (v1 !== v2) return (v1 - v2) | 0;
    } else if (digit(p2[j])) return -1;
    else if (p1[i] !== (p2[j] ?? 0)) return p1[i]! - (p2[j] ?? 0);
    else {
      i++;
      j++;
    }
  }
  return 0 - (p2[j] ?? 0);
}

/** The string table as stringtable_finalize lays it out: offsets of each string, and the bytes. */
export function finalizeStrings(strings: Iterable<string>): { offsets: Map<string, number>; bytes: Buffer } {
  const all = [...new Set(strings)].map((s) => ({ s, b: Buffer.from(s) }));
  all.sort((l, r) => {
    const n = Math.min(l.b.length, r.b.length);
    for (let i = 1; i <= n; i++) {
      const lc = l.b[l.b.length - i]!;
      const rc = r.b[r.b.length - i]!;
      if (lc !== rc) return rc - lc;
    }
    return r.b.length - l.b.length;
  });
  const offsets = new Map<string, number>();
  if (all.length === 0) return { offsets, bytes: Buffer.alloc(0) };
  let prev = all[0]!;
  let prevOffset = 0;
  offsets.set(prev.s, 0);
  for (const cur of all.slice(1)) {
    let offset: number;
    if (prev.b.length >= cur.b.length && prev.b.subarray(prev.b.length - cur.b.length).equals(cur.b))
      offset = prevOffset + prev.b.length - cur.b.length;
    else offset = prevOffset + prev.b.length + 1;
    offsets.set(cur.s, offset);
    prev = cur;
    prevOffset = offset;
  }
  const bytes = Buffer.alloc(prevOffset + prev.b.length + 1);
  for (const { s, b } of all) b.copy(bytes, offsets.get(s)!);
  return { offsets, bytes };
}

const HEADER_SIZE = 48;
const ENTRY_SIZE = 24;
const EXTENSION_MAGIC = 0xeaa42174;
const HWCAP_EXTENSION = 1n << 62n;

function cacheBytes(unsorted: CacheEntry[], strings: Set<string>, build: LdconfigBuild): Buffer {
  // Array.prototype.sort is stable: equal entries stay in scan order, as ldconfig's insertion does.
  const entries = [...unsorted].sort((e1, e2) => {
    const res = dlCacheLibcmp(e2.lib, e1.lib);
    if (res !== 0) return res;
    if (e1.hwcaps !== undefined && e2.hwcaps === undefined) return -1;
    if (e1.hwcaps === undefined && e2.hwcaps !== undefined) return 1;
    if (e1.hwcaps !== undefined && e2.hwcaps !== undefined)
      return Buffer.compare(Buffer.from(e1.hwcaps), Buffer.from(e2.hwcaps));
    return 0;
  });
  const used = [...new Set(entries.flatMap((e) => (e.hwcaps !== undefined ? [e.hwcaps] : [])))].sort((a, b) =>
    Buffer.compare(Buffer.from(a), Buffer.from(b)),
  );
  const hwcapsIndex = new Map(used.map((name, i) => [name, i]));
  const { offsets, bytes: table } = finalizeStrings(strings);
  const stringBase = HEADER_SIZE + ENTRY_SIZE * entries.length;
  const extensionOffset = Math.ceil((stringBase + table.length) / 4) * 4;
  const generator = Buffer.from(build.generator);
  const sections = used.length ? 2 : 1;
  const size = extensionOffset + 8 + 16 * sections + 4 * used.length + generator.length;
  const out = Buffer.alloc(size);

  out.write("glibc-ld.so.cache1.1", 0, "latin1");
  out.writeUInt32LE(entries.length, 20);
  out.writeUInt32LE(table.length, 24);
  out[28] = 2; // cache_file_new_flags_endian_little
  out.writeUInt32LE(extensionOffset, 32);
  for (const [i, e] of entries.entries()) {
    const at = HEADER_SIZE + ENTRY_SIZE * i;
    out.writeInt32LE(CACHE_FLAGS[build.machine], at);
    out.writeUInt32LE(stringBase + offsets.get(e.lib)!, at + 4);
    out.writeUInt32LE(stringBase + offsets.get(e.path)!, at + 8);
    const hwcap =
      e.hwcaps === undefined
        ? 0n
        : HWCAP_EXTENSION | (BigInt(e.isaLevel) << 32n) | BigInt(hwcapsIndex.get(e.hwcaps)!);
    if (e.isaLevel > 0x3ff) throw new Unsupported(`${e.path}: ISA level ${e.isaLevel}`);
    out.writeBigUInt64LE(hwcap, at + 16);
  }
  table.copy(out, stringBase);

  let at = extensionOffset;
  out.writeUInt32LE(EXTENSION_MAGIC, at);
  out.writeUInt32LE(sections, at + 4);
  const hwcapsOffset = extensionOffset + 8 + 16 * 2;
  const generatorOffset = used.length ? hwcapsOffset + 4 * used.length : hwcapsOffset - 16;
  out.writeUInt32LE(0, at + 8); // cache_extension_tag_generator
  out.writeUInt32LE(0, at + 12);
  out.writeUInt32LE(generatorOffset, at + 16);
  out.writeUInt32LE(generator.length, at + 20);
  at += 24;
  if (used.length) {
    out.writeUInt32LE(1, at); // cache_extension_tag_glibc_hwcaps
    out.writeUInt32LE(0, at + 4);
    out.writeUInt32LE(hwcapsOffset, at + 8);
    out.writeUInt32LE(4 * used.length, at + 12);
    at += 16;
    for (const name of used) {
      out.writeUInt32LE(stringBase + offsets.get(name)!, at);
      at += 4;
    }
  }
  generator.copy(out, at);
  return out;
}

async function writeCache(root: string, cache: Buffer): Promise<void> {
  const etc = await resolveInRoot(root, "/etc");
  if (!etc || !statOrUndefined(etc)?.isDirectory()) throw new Unsupported("/etc is not a directory");
  if (walkInRoot(root, `${LD_SO_CACHE}~`, { followFinal: false, mustExist: false }).kind === "found")
    throw new Unsupported(`${LD_SO_CACHE}~ exists`);
  const at = walkInRoot(root, LD_SO_CACHE, { followFinal: false, mustExist: false });
  if (at.kind === "not-directory") throw new Unsupported(`${LD_SO_CACHE} is below a file`);
  await writeFileAtomic(at.host, cache, { mode: 0o644, exactMode: true });
}
