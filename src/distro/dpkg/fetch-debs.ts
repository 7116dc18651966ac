import { join } from "node:path";
import { SutureError } from "../../errors/errors.ts";
import { defaultHttpFetch, fetchToFile, type HttpFetch } from "../../http/fetch.ts";
import { fetchIntoStore } from "../../http/package-store.ts";
import type { ProgressSink } from "../../progress/events.ts";
import { fileChecksum } from "../../stream/checksum.ts";
import { debUrl, type PackageEntry } from "./packages-index.ts";

export interface DownloadPackagesOptions {
  /** Cache root: verified files land in `cacheDir/debs/<sha256>.deb`. */
  cacheDir: string;
  /** Parallel downloads (default 8). */
  concurrency?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
  fetch?: HttpFetch;
  /** Retries per file for connection failures and 5xx (default 3). */
  retries?: number;
}

/**
 * Download the .debs of `entries` (taken from verified Packages indexes) in parallel. Each file
 * is streamed to `cacheDir/tmp`, checked against the index's Size and SHA256 while it flows, and
 * only then renamed to `cacheDir/debs/<sha256>.deb`. A file already there is used only when it
 * still has the index's size and SHA-256 (re-hashed: the store is shared by every run, and damage
 * on disk must not pass for a verified package); one that does not is removed and downloaded
 * again. Returns the paths in the order of
 * `entries`. Emits `blob` progress events (`download` with bytes so far, `exists` for cached ones).
 *
 * On the first failure the other transfers are cancelled and the error is thrown: UNTRUSTED for a
 * size/hash mismatch (naming the package and what to do), NETWORK, NOT_FOUND (the mirror lacks
 * the file: its index is newer than its pool), CANCELLED. Files completed and verified before the
 * failure stay cached; nothing unverified is ever left in `debs/`.
 */
export async function downloadPackages(
  entries: readonly PackageEntry[],
  options: DownloadPackagesOptions,
): Promise<string[]> {
  const fetch = options.fetch ?? defaultHttpFetch();
  const debsDir = join(options.cacheDir, "debs");

  // The same file may be wanted twice (same package from two suites): fetch it once.
  const unique = new Map<string, PackageEntry>();
  for (const e of entries) {
    if (!/^[0-9a-f]{64}$/.test(e.sha256)) {
      throw new SutureError(
        "UNTRUSTED",
        `package ${e.package} ${e.version} has no SHA256 in its index: it cannot be verified, so it is not downloaded`,
      );
    }
    if (!unique.has(e.sha256)) unique.set(e.sha256, e);
  }
  const fix =
    "the mirror serves a package that does not match its signed index; retry later or use another mirror";
  await fetchIntoStore<PackageEntry, void>(
    [...unique.values()],
    {
      storeName: (e) => `${e.sha256}.deb`,
      digest: (e) => `sha256:${e.sha256}`,
      size: (e) => e.size,
      download: (e, tmp, signal, onBytes) =>
        fetchToFile(fetch, debUrl(e), tmp, e, {
          signal,
          retries: options.retries,
          what: `${e.package} ${e.version} (${e.architecture}) .deb`,
          fix,
          onBytes,
        }),
      // A download was checked against the index's size and SHA-256 as it streamed; a stored
      // file is hashed again.
      prove: async (path, e, fresh) => {
        if (fresh) return;
        const actual = await fileChecksum(path).catch(() => undefined);
        if (actual?.sha256 !== e.sha256 || actual.size !== e.size)
          throw new SutureError("UNTRUSTED", `the stored ${path} is not ${e.package} ${e.version}: ${fix}`);
      },
      open: async () => {},
    },
    {
      storeDir: debsDir,
      tmpDir: join(options.cacheDir, "tmp"),
      concurrency: options.concurrency ?? 8,
      ...(options.progress ? { progress: options.progress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
  return entries.map((e) => join(debsDir, `${e.sha256}.deb`));
}
