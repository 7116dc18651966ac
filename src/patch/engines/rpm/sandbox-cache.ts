import { createHash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { copyFile, lstat, mkdir, open, readdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { MAX_REPOMD_BYTES, parseRepomd, type RepoChecksum, type Repomd } from "../../../distro/rpm/repomd.ts";
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
 */

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

/** Whether `path` is a regular file (not followed through a symlink). */
async function isRegularFile(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isFile();
  } catch {
    return false;
  }
}

/** `<dir>/repodata/repomd.xml` under `root`, parsed; read only as a regular file, never through a symlink. */
async function readRepomdAt(root: string, dir: string): Promise<Repomd> {
  const path = join(root, dir, "repodata", "repomd.xml");
  const bytes = await readFileCapped(path, {
    limit: MAX_REPOMD_BYTES,
    what: path,
    noFollow: true,
    regularOnly: true,
  });
  return parseRepomd(bytes, path);
}

/** The hash of a regular file, read without following a symlink. */
async function hashFile(path: string, checksum: RepoChecksum): Promise<string> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    if (!(await handle.stat()).isFile()) return "";
    const hash = createHash(checksum.type);
    await pipeline(handle.createReadStream({ autoClose: false }), hash);
    return hash.digest("hex");
  } finally {
    await handle.close();
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
        const path = join(root, dir, data.location);
        if (!(await isRegularFile(path))) continue;
        if ((await hashFile(path, data.checksum)) !== data.checksum.value) {
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
    for (const file of candidate.files) {
      const dest = join(to, candidate.dir, file);
      await mkdir(dirname(dest), { recursive: true });
      try {
        await copyFile(join(from, candidate.dir, file), dest, constants.COPYFILE_EXCL);
      } catch {
        // A file that vanished or cannot be read leaves the copy incomplete, which verification sees.
      }
    }
  }
  const kept = await verifiedRepodata(to);
  const keptDirs = new Set(kept.map((k) => k.dir));
  for (const candidate of await repodataDirs(to)) {
    if (!keptDirs.has(candidate)) await rm(join(to, candidate), { recursive: true, force: true });
  }
  return kept;
}

/** Every repository dir with a parsable repomd.xml and the files it names that are regular files. */
async function candidates(root: string): Promise<{ dir: string; files: string[] }[]> {
  const out: { dir: string; files: string[] }[] = [];
  for (const dir of await repodataDirs(root)) {
    try {
      const repomd = await readRepomdAt(root, dir);
      const files = ["repodata/repomd.xml"];
      for (const data of repomd.data.values()) {
        if (!files.includes(data.location) && (await isRegularFile(join(root, dir, data.location))))
          files.push(data.location);
      }
      out.push({ dir, files });
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
