import { join } from "node:path";
import type { ApkIndexEntry } from "../../../../distro/apk/apkindex.ts";
import type { ApkRepository } from "../../../../distro/apk/config.ts";
import { type ApkPackage, checkApkAgainstIndex, openApk } from "../../../../distro/apk/package.ts";
import { isSutureError, redact, SutureError } from "../../../../errors/errors.ts";
import { defaultHttpFetch, fetchToFile, type HttpFetch } from "../../../../http/fetch.ts";
import { fetchIntoStore } from "../../../../http/package-store.ts";
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
  const fetch = options.fetch ?? defaultHttpFetch();
  const where = (item: ApkFetchItem) =>
    `${redact(apkPackageUrl(item, options.arch))}, apk repository ${redact(item.repository.url)}`;
  return fetchIntoStore<ApkFetchItem, ApkPackage>(
    items,
    {
      storeName: (item) => storeName(item.entry),
      digest: (item) => item.entry.checksum,
      size: (item) => item.entry.size,
      download: async (item, tmp, signal, onBytes) => {
        const what = `${item.entry.name} ${item.entry.version} (${where(item)})`;
        const size = item.entry.size ?? -1;
        // The index signs the control segment (C:), not the file: the stream checks the size the
        // index lists as it flows, and `prove` the rest once the file is whole.
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
        await fetchToFile(fetch, apkPackageUrl(item, options.arch), tmp, sizeOnly, {
          what,
          fix: FIX,
          signal,
          retries: options.retries ?? 3,
          onBytes: (bytes) => {
            if (bytes > MAX_APK_BYTES)
              throw new SutureError("TOO_LARGE", `${what} is larger than any apk package`);
            onBytes(bytes);
          },
        });
      },
      prove: async (path, item) => {
        await verified(path, item, where(item));
      },
      // The store's copy is handed on: the file just proven, so its data is not hashed twice; the
      // installer checks it once more as it unpacks (dataEntries).
      open: async (path, item) => {
        const pkg = await openApk(path);
        checkApkAgainstIndex(pkg, item.entry);
        return pkg;
      },
    },
    {
      storeDir: join(options.cacheDir, "packages"),
      tmpDir: join(options.cacheDir, "tmp"),
      concurrency: options.concurrency ?? 6,
      ...(options.progress ? { progress: options.progress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
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
