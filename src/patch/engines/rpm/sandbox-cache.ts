import { createHash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, lstat, mkdir, open, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { MAX_REPOMD_BYTES, parseRepomd, type Repomd, type RepomdData } from "../../../distro/rpm/repomd.ts";
import { placeDirectory } from "../../../fs/atomic.ts";
import { readFileCapped } from "../../../fs/read-capped.ts";

/**
 * The rpm sandbox engine's metadata cache, shared between runs under `--cache-dir`.
 *
 * dnf, yum, microdnf and tdnf keep each repository's metadata as `<dir>/repodata/repomd.xml` and
 * the files it lists (dnf: `<repoid>-<hash of its URLs>/`, tdnf: `<repoid>/`), zypper as
 * `raw/<alias>/repodata/…`. Those files are written by the image's tool, so nothing of them is
 * trusted as such: a repository's metadata is copied between the shared cache and a run's
 * private cache dir only as a whole, and kept only when every file its repomd.xml lists that is
 * there hashes to the checksum repomd.xml gives. Everything else the tools keep there (libsolv's
 * `.solv` caches, which nothing could check, downloaded packages, lock and timestamp files) is
 * left behind: the tools rebuild their solv caches from the verified metadata.
 *
 * The cached repomd.xml itself is not trusted to be current or genuine: the engine runs every
 * tool with its metadata marked expired (`--refresh`, zypper `refresh`), so the tool fetches the
 * repository's repomd.xml again (and checks its signature where the repository says
 * repo_gpgcheck) and reuses a cached file only when that repomd.xml lists it with the same
 * checksum; otherwise it downloads it again. A planted or stale cache can cost a download, never
 * change what is installed.
 *
 * The private cache dir is the image's to write (its tool runs with it mounted), so it is read as
 * hostile: a repository dir and its `repodata/` must be real directories (no symlink anywhere
 * below the cache root), a listed file is kept only when repomd.xml names it `repodata/<one
 * name>`, and it is opened without following a symlink, non-blocking, only as a regular file, and
 * read no further than the size repomd.xml declares (MAX_REPODATA_FILE_BYTES when it declares
 * none). So a tool cannot make suture copy a file of the host (`escape -> /` in a location) or
 * read forever (`/proc/kcore`, a FIFO) into the shared cache.
 *
 * yum 3 (`yum`) gets no shared cache at all, neither seeded nor saved: it keeps a cached
 * repomd.xml whose timestamp is newer than the one it downloads, so a hostile image could save a
 * self-consistent repomd.xml dated in the future and freeze every later image of the same
 * configuration at its old metadata. dnf, dnf5, microdnf, tdnf and zypper compare the cached
 * repomd.xml with the downloaded one by content and fetch again when they differ.
 */

/** The rpm tools whose metadata is shared between runs (see above: not yum 3). */
export function sharesMetadataCache(tool: string): boolean {
  return tool !== "yum";
}

/** The most a listed metadata file without a declared size may have (Fedora's largest filelists are ~100 MiB). */
export const MAX_REPODATA_FILE_BYTES = 1024 * 1024 * 1024;

/** How deep below a cache root a repository's dir may be (zypper: `raw/<alias>`). */
const MAX_DEPTH = 3;

/** A repository's metadata in a cache dir: its dir (relative to the root) and repomd.xml's contents. */
export interface CachedRepodata {
  /** Relative to the cache root, `/`-separated (`baseos-1a2b3c4d5e6f7a8b`, `raw/repo-oss`). */
  dir: string;
  repomd: Repomd;
  /** The listed files that are present, relative to `dir` (`repodata/…-primary.xml.gz`), with repomd.xml first. */
  files: string[];
}

/** Repository dirs under `root` that hold a regular `repodata/repomd.xml` (no symlink followed). */
async function repodataDirs(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string, depth: number): Promise<void> => {
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(rel ? join(root, rel) : root, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const sub = rel ? `${rel}/${e.name}` : e.name;
      if (e.name === "repodata") {
        if (rel) out.push(rel);
        continue;
      }
      if (depth < MAX_DEPTH) await walk(sub, depth + 1);
    }
  };
  await walk("", 1);
  return out.sort();
}

/** Whether `rel` (`/`-separated) below `root` is a directory through real directories only: no component a symlink. */
async function realDirs(root: string, rel: string): Promise<boolean> {
  let path = root;
  for (const part of rel.split("/")) {
    if (part === "" || part === "." || part === "..") return false;
    path = join(path, part);
    try {
      if (!(await lstat(path)).isDirectory()) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * The file name of a listed location suture keeps: `repodata/<one name>` only (the layout every
 * tool caches), so a location can never pass through another directory of the cache.
 */
export function repodataFileName(location: string): string | undefined {
  const m = /^repodata\/([^/\0]+)$/.exec(location);
  if (!m || m[1] === "." || m[1] === ".." || m[1] === "repomd.xml") return undefined;
  return m[1];
}

/** A listed file opened for reading: a regular file in `<dir>/repodata/`, reached through no symlink. */
interface OpenedData {
  handle: FileHandle;
  /** Read no more than this many bytes (the declared size, or the cap). */
  limit: number;
}

/**
 * Open a listed file: "absent" when it is not there (or its location is no plain `repodata/` name,
 * which is never kept), "bad" when something else is there (a symlink, a FIFO, a device, a file of
 * another size than declared or larger than the cap), which leaves its repository out.
 */
async function openListed(
  root: string,
  dir: string,
  data: RepomdData,
): Promise<OpenedData | "absent" | "bad"> {
  const name = repodataFileName(data.location);
  if (!name) return "absent";
  if (!(await realDirs(root, `${dir}/repodata`))) return "bad";
  let handle: FileHandle;
  try {
    handle = await open(
      join(root, dir, "repodata", name),
      constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
    );
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT" ? "absent" : "bad";
  }
  const st = await handle.stat();
  const limit = data.size ?? MAX_REPODATA_FILE_BYTES;
  if (!st.isFile() || st.size > limit || (data.size !== undefined && st.size !== data.size)) {
    await handle.close();
    return "bad";
  }
  return { handle, limit };
}

/** `<dir>/repodata/repomd.xml` under `root`, parsed; read only as a regular file, never through a symlink. */
async function readRepomdAt(root: string, dir: string): Promise<Repomd> {
  if (!(await realDirs(root, `${dir}/repodata`))) throw new Error(`${dir}/repodata is not a directory`);
  const path = join(root, dir, "repodata", "repomd.xml");
  const bytes = await readFileCapped(path, {
    limit: MAX_REPOMD_BYTES,
    what: path,
    noFollow: true,
    regularOnly: true,
  });
  return parseRepomd(bytes, path);
}

/** Whether the listed file hashes to its checksum, reading at most its limit (and one byte more to see it is longer). */
async function listedFileMatches(root: string, dir: string, data: RepomdData): Promise<boolean | undefined> {
  const opened = await openListed(root, dir, data);
  if (opened === "absent") return undefined;
  if (opened === "bad") return false;
  try {
    const hash = createHash(data.checksum.type);
    let total = 0;
    const stream = opened.handle.createReadStream({ autoClose: false, start: 0, end: opened.limit });
    stream.on("data", (chunk) => {
      total += (chunk as Buffer).length;
    });
    await pipeline(stream, hash);
    if (total > opened.limit || (data.size !== undefined && total !== data.size)) return false;
    return hash.digest("hex") === data.checksum.value;
  } finally {
    await opened.handle.close();
  }
}

/**
 * Copy a listed file to `dest` (created, never overwritten), at most its limit plus one byte;
 * false when what is there is no file to keep ("bad" above).
 */
async function copyListed(root: string, dir: string, data: RepomdData, dest: string): Promise<boolean> {
  const opened = await openListed(root, dir, data);
  if (opened === "absent") return true;
  if (opened === "bad") return false;
  try {
    const out = await open(dest, "wx");
    try {
      // Piece by piece up to the limit and one byte more (a longer file fails verification).
      const buf = Buffer.allocUnsafe(1024 * 1024);
      for (let total = 0; total <= opened.limit; ) {
        const want = Math.min(buf.length, opened.limit + 1 - total);
        const { bytesRead } = await opened.handle.read(buf, 0, want, total);
        if (bytesRead === 0) break;
        await out.write(buf, 0, bytesRead);
        total += bytesRead;
      }
    } finally {
      await out.close();
    }
    return true;
  } finally {
    await opened.handle.close();
  }
}

/**
 * The repositories' metadata under `root` that checks out: repomd.xml parses (its locations stay
 * inside the repository) and every file it lists that is present has the listed checksum. A
 * repository with one file that does not match is left out whole; a listed file that is absent
 * (dnf fetches filelists and others only when needed) is simply not part of it.
 */
export async function verifiedRepodata(root: string): Promise<CachedRepodata[]> {
  const out: CachedRepodata[] = [];
  for (const dir of await repodataDirs(root)) {
    try {
      const repomd = await readRepomdAt(root, dir);
      const files = ["repodata/repomd.xml"];
      let intact = true;
      for (const data of repomd.data.values()) {
        const matches = await listedFileMatches(root, dir, data);
        // Absent, not a plain `repodata/` name, or not a regular file: not part of it.
        if (matches === undefined) continue;
        if (!matches) {
          intact = false;
          break;
        }
        if (!files.includes(data.location)) files.push(data.location);
      }
      if (intact) out.push({ dir, repomd, files });
    } catch {
      // Not kept: the tool fetches it again.
    }
  }
  return out;
}

/**
 * Copy the repositories' metadata of `from` into `to` (which must not hold any yet) and keep
 * what verifies there: the copies are what is checked, so a file changed after the check in
 * `from` is never what lands in `to`. Returns the repositories kept.
 */
export async function copyVerifiedRepodata(from: string, to: string): Promise<CachedRepodata[]> {
  await mkdir(to, { recursive: true });
  // What repomd.xml lists is all that is copied; whether it is intact is decided on the copies.
  for (const candidate of await candidates(from)) {
    const dest = join(to, candidate.dir, "repodata");
    await mkdir(dest, { recursive: true });
    try {
      let whole = true;
      for (const data of candidate.data)
        if (!(await copyListed(from, candidate.dir, data, join(dest, repodataFileName(data.location)!))))
          whole = false;
      // A repository with a file that is no file to keep is left out whole (no repomd.xml: not a candidate).
      if (whole) await writeFile(join(dest, "repomd.xml"), candidate.repomdBytes, { flag: "wx" });
    } catch {
      // A file that vanished or cannot be read leaves the copy incomplete, which verification sees.
    }
  }
  const kept = await verifiedRepodata(to);
  const keptDirs = new Set(kept.map((k) => k.dir));
  for (const candidate of await repodataDirs(to)) {
    if (!keptDirs.has(candidate)) await rm(join(to, candidate), { recursive: true, force: true });
  }
  return kept;
}

/** Every repository dir with a parsable repomd.xml (its bytes, as read) and the listed files suture would keep. */
async function candidates(root: string): Promise<{ dir: string; repomdBytes: Buffer; data: RepomdData[] }[]> {
  const out: { dir: string; repomdBytes: Buffer; data: RepomdData[] }[] = [];
  for (const dir of await repodataDirs(root)) {
    try {
      if (!(await realDirs(root, `${dir}/repodata`))) continue;
      const path = join(root, dir, "repodata", "repomd.xml");
      const repomdBytes = await readFileCapped(path, {
        limit: MAX_REPOMD_BYTES,
        what: path,
        noFollow: true,
        regularOnly: true,
      });
      const repomd = parseRepomd(repomdBytes, path);
      const seen = new Set<string>();
      const data: RepomdData[] = [];
      for (const d of repomd.data.values()) {
        if (!repodataFileName(d.location) || seen.has(d.location)) continue;
        seen.add(d.location);
        data.push(d);
      }
      out.push({ dir, repomdBytes, data });
    } catch {
      // Not a repository's metadata anything could use.
    }
  }
  return out;
}

/**
 * Replace the shared cache at `sharedDir` with the verified metadata of `privateDir` (the caller
 * holds the cache's lock): built in a new dir beside it, then swapped in, so a reader sees the old
 * set or the new one. Nothing verified: the shared cache is left as it was.
 */
export async function saveRepodata(privateDir: string, sharedDir: string): Promise<number> {
  const fresh = `${sharedDir}.new-${randomBytes(6).toString("hex")}`;
  try {
    const kept = await copyVerifiedRepodata(privateDir, fresh);
    if (kept.length) await placeDirectory(fresh, sharedDir);
    return kept.length;
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
}

/** Where one flavour of image (tool, architecture, repositories, trusted keys) keeps its metadata. */
export interface RpmMetadataCache {
  /** The shared metadata (verified repodata only). */
  dir: string;
  lock: string;
}

/**
 * The cache of one flavour: keyed by the tool, the architecture, the repository files handed to
 * it and the keys it trusts beyond the image's, so images configured alike share metadata and no
 * run reads metadata fetched for another configuration.
 */
export function rpmMetadataCache(
  cacheDir: string,
  tool: string,
  arch: string,
  repoFiles: ReadonlyMap<string, string>,
  keyFingerprints: readonly string[],
): RpmMetadataCache {
  const hash = createHash("sha256").update(`tool=${tool}\narch=${arch}\n`);
  for (const [name, text] of [...repoFiles].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    hash.update(`file ${name} ${createHash("sha256").update(text).digest("hex")}\n`);
  for (const fp of [...keyFingerprints].sort()) hash.update(`key ${fp}\n`);
  const base = join(cacheDir, "rpm-sandbox", tool, hash.digest("hex").slice(0, 16));
  return { dir: join(base, "metadata"), lock: join(base, "lock") };
}
