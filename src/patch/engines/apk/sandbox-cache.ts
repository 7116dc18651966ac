import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type ApkIndex, MAX_APKINDEX_FILE_BYTES, openApkIndex } from "../../../distro/apk/apkindex.ts";
import type { ApkRepository } from "../../../distro/apk/config.ts";
import type { ApkKeyring } from "../../../distro/apk/signature.ts";
import { placeDirectory } from "../../../fs/atomic.ts";
import { readFileCapped } from "../../../fs/read-capped.ts";

/**
 * The apk sandbox engine's cache of repository indexes, shared between runs under `--cache-dir`.
 *
 * apk keeps each repository's `APKINDEX.tar.gz` in its cache directory as
 * `APKINDEX.<first 8 hex digits of the SHA-1 of the index URL>.tar.gz` and refetches it only when
 * it is older than its cache max age (or on `apk update`). The files are written by the image's
 * apk, so nothing of them is trusted as such: one is kept (and later handed to another run) only
 * when suture verified its signature itself against the keys the run trusts, and it is verified
 * again whenever it is read back.
 */

/** A repository's index as apk names it in its cache. */
export interface CachedIndexName {
  repository: ApkRepository;
  /** The URL apk fetches: `<fetchUrl>/<arch>/APKINDEX.tar.gz`. */
  url: string;
  /** `APKINDEX.<hash>.tar.gz`. */
  file: string;
}

/** An index file that verified: its bytes, its mtime (apk's age check reads it), what it lists. */
export interface VerifiedIndex {
  name: CachedIndexName;
  bytes: Buffer;
  mtime: Date;
  index: ApkIndex;
}

/** apk's cache max age of an index: it refetches older ones by itself (`--cache-max-age`, minutes). */
export const INDEX_MAX_AGE_MINUTES = 240;

/** apk treats a repository as local (no fetch, no cache) unless its URL has a network scheme. */
export function isRemoteRepository(url: string): boolean {
  return /^(https?|ftp):\/\//i.test(url);
}

/** The cache file names apk uses for the remote repositories of `repositories` on `arch`. */
export function cachedIndexNames(repositories: readonly ApkRepository[], arch: string): CachedIndexName[] {
  const seen = new Set<string>();
  const out: CachedIndexName[] = [];
  for (const repository of repositories) {
    if (!isRemoteRepository(repository.fetchUrl)) continue;
    const url = `${repository.fetchUrl}/${arch}/APKINDEX.tar.gz`;
    const file = `APKINDEX.${createHash("sha1").update(url).digest("hex").slice(0, 8)}.tar.gz`;
    // apk lists a URL once, whatever tags name it.
    if (seen.has(file)) continue;
    seen.add(file);
    out.push({ repository, url, file });
  }
  return out;
}

/**
 * The index files of `dir` that verify against `keyring`, for the repositories named. Only
 * regular files directly in `dir` are opened, never through a symlink; a file that does not
 * verify is simply left out.
 */
export async function verifiedIndexes(
  dir: string,
  names: readonly CachedIndexName[],
  keyring: ApkKeyring,
): Promise<Map<string, VerifiedIndex>> {
  const out = new Map<string, VerifiedIndex>();
  let present: Set<string>;
  try {
    present = new Set(
      (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name),
    );
  } catch {
    return out;
  }
  for (const name of names) {
    if (!present.has(name.file)) continue;
    const path = join(dir, name.file);
    try {
      const bytes = await readFileCapped(path, {
        limit: MAX_APKINDEX_FILE_BYTES,
        what: path,
        noFollow: true,
        regularOnly: true,
      });
      const { mtime } = await stat(path);
      const index = await openApkIndex(bytes, keyring, name.url);
      out.set(name.file, { name, bytes, mtime, index });
    } catch {
      // Not kept: apk fetches it again.
    }
  }
  return out;
}

/**
 * Fill a run's private cache dir with the shared cache's indexes that still verify, each with the
 * mtime it was fetched at, so the image's apk refetches exactly those older than its max age.
 */
export async function seedIndexes(
  cacheDir: string,
  privateDir: string,
  names: readonly CachedIndexName[],
  keyring: ApkKeyring,
): Promise<Map<string, VerifiedIndex>> {
  const indexes = await verifiedIndexes(cacheDir, names, keyring);
  await mkdir(privateDir, { recursive: true });
  for (const [file, { bytes, mtime }] of indexes) {
    const dest = join(privateDir, file);
    await rm(dest, { force: true });
    // Written from the verified bytes in memory, not copied: the file may have changed since.
    await writeFile(dest, bytes, { flag: "wx" });
    await utimes(dest, mtime, mtime);
  }
  return indexes;
}

/** Whether every index the run needs is among `indexes` and younger than apk's max age at `now`. */
export function allFresh(
  names: readonly CachedIndexName[],
  indexes: ReadonlyMap<string, VerifiedIndex>,
  now = Date.now(),
): boolean {
  return names.every((n) => {
    const v = indexes.get(n.file);
    const age = now - (v?.mtime.getTime() ?? Number.NaN);
    // A time in the future is no proof of freshness (age NaN or negative: stale).
    return age >= 0 && age < INDEX_MAX_AGE_MINUTES * 60_000;
  });
}

/**
 * Replace the shared cache with `indexes` (the caller holds its lock): written into a new
 * directory, then swapped in, so a reader sees the old set, nothing, or the new set. Nothing
 * verified: the cache is left as it was.
 */
export async function saveIndexes(
  indexes: ReadonlyMap<string, VerifiedIndex>,
  cacheDir: string,
): Promise<number> {
  if (!indexes.size) return 0;
  const fresh = `${cacheDir}.new-${randomBytes(6).toString("hex")}`;
  try {
    await mkdir(fresh, { recursive: true });
    for (const [file, { bytes, mtime }] of indexes) {
      const dest = join(fresh, file);
      await writeFile(dest, bytes);
      await utimes(dest, mtime, mtime);
    }
    await placeDirectory(fresh, cacheDir);
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
  return indexes.size;
}
