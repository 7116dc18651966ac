import { randomBytes } from "node:crypto";
import { lstat, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { SutureError } from "../../errors/errors.ts";
import { placeFile } from "../../fs/atomic.ts";
import { defaultHttpFetch, fetchToFile, type HttpFetch, transferAll } from "../../http/fetch.ts";
import type { ProgressSink } from "../../progress/events.ts";
import { type ExpectedChecksum, fileChecksum } from "../../stream/checksum.ts";
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
  if (options.signal?.aborted) throw new SutureError("CANCELLED", "package download cancelled");
  const fetch = options.fetch ?? defaultHttpFetch();
  const debsDir = join(options.cacheDir, "debs");
  const tmpDir = join(options.cacheDir, "tmp");
  await mkdir(debsDir, { recursive: true });
  await mkdir(tmpDir, { recursive: true });

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
  const queue = [...unique.values()];
  const pathOf = (sha: string) => join(debsDir, `${sha}.deb`);

  const one = async (e: PackageEntry, signal: AbortSignal): Promise<void> => {
    const final = pathOf(e.sha256);
    const digest = `sha256:${e.sha256}`;
    if (await isIntact(final, e)) {
      options.progress?.({ type: "blob", action: "exists", digest, bytes: e.size, total: e.size });
      return;
    }
    const url = debUrl(e);
    const tmp = join(tmpDir, `${randomBytes(8).toString("hex")}-${e.sha256}.deb`);
    let lastReport = 0;
    try {
      await fetchToFile(fetch, url, tmp, e, {
        signal,
        retries: options.retries,
        what: `${e.package} ${e.version} (${e.architecture}) .deb`,
        fix: "the mirror serves a package that does not match its signed index; retry later or use another mirror",
        onBytes: (bytes) => {
          // Throttle: the first chunk, then one event per 256 KiB, then the end.
          if (lastReport === 0 || bytes - lastReport >= 256 * 1024 || bytes === e.size) {
            lastReport = bytes;
            options.progress?.({ type: "blob", action: "download", digest, bytes, total: e.size });
          }
        },
      });
      await placeFile(tmp, final);
    } finally {
      await rm(tmp, { force: true });
    }
  };

  await transferAll(queue, one, {
    concurrency: options.concurrency ?? 8,
    signal: options.signal,
    cancelled: "package download cancelled",
  });
  return entries.map((e) => pathOf(e.sha256));
}

/**
 * Whether the stored file is exactly the package the index names. A file that exists but is not
 * is removed, so the download that follows replaces it (rename over it would do as well, but a
 * failed download must not leave it behind for the next run to re-hash again).
 */
async function isIntact(path: string, expected: ExpectedChecksum): Promise<boolean> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch {
    return false;
  }
  if (st.isFile() && st.size === expected.size) {
    const actual = await fileChecksum(path).catch(() => undefined);
    if (actual?.sha256 === expected.sha256) return true;
  }
  await rm(path, { force: true, recursive: st.isDirectory() });
  return false;
}
