import { randomBytes } from "node:crypto";
import { lstat, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { ApkIndexEntry } from "../../../../distro/apk/apkindex.ts";
import type { ApkRepository } from "../../../../distro/apk/config.ts";
import { type ApkPackage, checkApkAgainstIndex, openApk } from "../../../../distro/apk/package.ts";
import { isSutureError, redact, SutureError } from "../../../../errors/errors.ts";
import { placeFile } from "../../../../fs/atomic.ts";
import { defaultHttpFetch, fetchToFile, type HttpFetch, transferAll } from "../../../../http/fetch.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import { VerifyingStream } from "../../../../stream/verifying-stream.ts";

/** A package to fetch: the signed index entry it was resolved from and its repository. */
export interface ApkFetchItem {
  entry: ApkIndexEntry;
  repository: ApkRepository;
}

export interface DownloadApkOptions {
  /** apk's architecture name: the repository's subdirectory. */
  arch: string;
  /** The engine's cache root (`<--cache-dir>/apk-native`): verified packages in `packages/`. */
  cacheDir: string;
  /** Parallel downloads (default 6). */
  concurrency?: number;
  fetch?: HttpFetch;
  /** Retries per file for connection failures and 5xx (default 3). */
  retries?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

/** Real .apk files stay far below this when the index does not say (S: is always there in practice). */
const MAX_APK_BYTES = 4 * 1024 ** 3;
const FIX =
  "the repository serves a package that is not the one its signed index describes; use another mirror";

/** `<fetchUrl>/<arch>/<name>-<version>.apk`, as apk fetches it. */
export function apkPackageUrl(item: ApkFetchItem, arch: string): string {
  return `${item.repository.fetchUrl}/${arch}/${item.entry.name}-${item.entry.version}.apk`;
}

/** The store's file name of a package: its control checksum (`C:`), which names exactly one build. */
function storeName(entry: ApkIndexEntry): string {
  const kind = entry.checksum.slice(0, 2).toLowerCase();
  return `${kind}-${Buffer.from(entry.checksum.slice(2), "base64").toString("hex")}.apk`;
}

/**
 * Download the `.apk` of each item (in parallel) into the verified store
 * `<cacheDir>/packages/<C: checksum>.apk` and open it. A package is used only once it is
 * proven to be the one the signed index lists: the size equals `S:` (checked while it streams,
 * so an endless answer stops at once), the control segment's checksum equals `C:` and its
 * `.PKGINFO` names the entry's package and version (checkApkAgainstIndex), and the data segment's
 * SHA-256 equals `.PKGINFO`'s `datahash` (checkData). A stored file is checked the same way on
 * every use, and replaced when it fails (the store is shared by every run and never trusted by
 * itself). Returns the opened packages in the order of `items`.
 *
 * A mismatch is UNTRUSTED naming the package, its URL and its repository; NOT_FOUND when the
 * repository lacks the file its index lists; NETWORK; CANCELLED. On the first failure the other
 * transfers stop. Nothing outside the cache is written.
 */
export async function downloadApkPackages(
  items: readonly ApkFetchItem[],
  options: DownloadApkOptions,
): Promise<ApkPackage[]> {
  if (options.signal?.aborted) throw new SutureError("CANCELLED", "package download cancelled");
  const fetch = options.fetch ?? defaultHttpFetch();
  const storeDir = join(options.cacheDir, "packages");
  const tmpDir = join(options.cacheDir, "tmp");
  await mkdir(storeDir, { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  const one = async (item: ApkFetchItem, signal: AbortSignal): Promise<ApkPackage> => {
    const { entry } = item;
    const final = join(storeDir, storeName(entry));
    const url = apkPackageUrl(item, options.arch);
    const where = `${redact(url)}, apk repository ${redact(item.repository.url)}`;
    const digest = entry.checksum;
    const total = entry.size ?? 0;
    const stored = await verifiedStored(final, item, where);
    if (stored) {
      options.progress?.({ type: "blob", action: "exists", digest, bytes: total, total });
      return stored;
    }
    const tmp = join(tmpDir, `${randomBytes(8).toString("hex")}-${storeName(entry)}`);
    const what = `${entry.name} ${entry.version} (${where})`;
    const size = entry.size ?? -1;
    try {
      // The index signs the control segment (C:), not the file: the stream checks the size the
      // index lists as it flows, and `verified` the rest once the file is whole.
      const sizeOnly = () =>
        new VerifyingStream(
          { size },
          {
            tooLarge: () =>
              new SutureError(
                "UNTRUSTED",
                `${what} is larger than the ${size} bytes its signed index lists: ${FIX}`,
              ),
            sizeMismatch: (actual) =>
              new SutureError(
                "UNTRUSTED",
                `${what} is ${actual} bytes but its signed index lists ${size}: ${FIX}`,
              ),
            digestMismatch: () => new SutureError("INTERNAL", "no digest was expected"),
          },
        );
      let lastReport = 0;
      await fetchToFile(fetch, url, tmp, sizeOnly, {
        what,
        fix: FIX,
        signal,
        retries: options.retries ?? 3,
        onBytes: (bytes) => {
          if (bytes > MAX_APK_BYTES)
            throw new SutureError("TOO_LARGE", `${what} is larger than any apk package`);
          if (lastReport === 0 || bytes - lastReport >= 256 * 1024 || bytes === total) {
            lastReport = bytes;
            options.progress?.({ type: "blob", action: "download", digest, bytes, total });
          }
        },
      });
      await verified(tmp, item, where);
      await placeFile(tmp, final);
      // The store's copy is handed on (the temporary is gone): the file just checked, so its data
      // is not hashed twice; the installer checks it once more as it unpacks (dataEntries).
      const pkg = await openApk(final);
      checkApkAgainstIndex(pkg, entry);
      return pkg;
    } finally {
      await rm(tmp, { force: true });
    }
  };

  return transferAll(items, one, {
    concurrency: options.concurrency ?? 6,
    signal: options.signal,
    cancelled: "package download cancelled",
  });
}

/** Open `path` and prove it is the entry's package (see downloadApkPackages); UNTRUSTED naming where it came from. */
async function verified(path: string, item: ApkFetchItem, where: string): Promise<ApkPackage> {
  try {
    const pkg = await openApk(path);
    checkApkAgainstIndex(pkg, item.entry);
    await pkg.checkData();
    return pkg;
  } catch (e) {
    // The signed index vouches for a valid package: bytes that are none are not the listed ones.
    if (isSutureError(e, "UNTRUSTED") || isSutureError(e, "INVALID_ARCHIVE"))
      throw new SutureError("UNTRUSTED", `${e.message} (from ${where})`, { cause: e });
    throw e;
  }
}

/** The stored package when it is there and still proves to be the entry's; a file that does not is removed. */
async function verifiedStored(
  path: string,
  item: ApkFetchItem,
  where: string,
): Promise<ApkPackage | undefined> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch {
    return undefined;
  }
  if (st.isFile() && (item.entry.size === undefined || st.size === item.entry.size)) {
    try {
      return await verified(path, item, where);
    } catch {
      // damaged on disk: fetched again below
    }
  }
  await rm(path, { force: true, recursive: st.isDirectory() });
  return undefined;
}
