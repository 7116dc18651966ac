import { randomBytes } from "node:crypto";
import { lstat, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { checkRpmAgainstIndex, openRpm, type RpmPackage } from "../../../../distro/rpm/package.ts";
import type { RepoPackage } from "../../../../distro/rpm/primary.ts";
import type { RpmRepo } from "../../../../distro/rpm/repo-config.ts";
import type { RepoChecksum } from "../../../../distro/rpm/repomd.ts";
import { verifyRpmSignature } from "../../../../distro/rpm/signature.ts";
import { isSutureError, quoteUntrusted, redact, SutureError } from "../../../../errors/errors.ts";
import { placeFile, streamToFile } from "../../../../fs/atomic.ts";
import {
  defaultHttpFetch,
  type HttpFetch,
  httpGet,
  networkError,
  transferAll,
} from "../../../../http/fetch.ts";
import { defaultRetryPolicy, withRetries } from "../../../../http/retry.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import { VerifyingStream } from "../../../../stream/verifying-stream.ts";
import type { Keyring } from "../../../../trust/keyring.ts";

/** A repository's trust, as the engine decided it from the image and the flags. */
export interface RpmRepoTrust {
  repo: RpmRepo;
  /** The base URL fetched from (`--mirror` applied). */
  baseUrl: string;
  /**
   * Keys the repository's packages must be signed by (its gpgkey= files, the database's
   * gpg-pubkeys, /etc/pki/rpm-gpg, and --keyring); for a `gpgcheck=0` repository only --keyring's.
   */
  keyring: Keyring;
  /** `gpgcheck=0` and no --keyring: packages are taken unsigned (only with --allow-insecure-repositories). */
  unsigned: boolean;
}

/** A package to fetch: its verified primary.xml entry and the repository that lists it. */
export interface RpmFetchItem {
  pkg: RepoPackage;
  repository: RpmRepoTrust;
}

/** A package downloaded, proven to be its entry's, its signature verified. */
export interface FetchedRpm {
  pkg: RpmPackage;
  /** The verified file in the store. */
  file: string;
}

export interface DownloadRpmOptions {
  /** The engine's cache root (`<--cache-dir>/rpm-native`): verified packages in `packages/`. */
  cacheDir: string;
  /** Parallel downloads (default 6). */
  concurrency?: number;
  fetch?: HttpFetch;
  /** Retries per file for connection failures and 5xx (default 3). */
  retries?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

/** Real .rpm files stay far below this (texlive's and the kernel's largest are a few hundred MB). */
const MAX_RPM_BYTES = 8 * 1024 ** 3;

/**
 * `<baseUrl>/<href>`: `href` is a primary.xml or repomd.xml location, which the readers checked
 * to be a plain relative path; the result is checked once more to stay under the base URL.
 */
export function repoFileUrl(baseUrl: string, href: string): string {
  const base = baseUrl.replace(/\/+$/, "");
  const url = `${base}/${href}`;
  const parsed = new URL(url);
  const baseParsed = new URL(`${base}/`);
  if (parsed.origin !== baseParsed.origin || !parsed.pathname.startsWith(baseParsed.pathname)) {
    throw new SutureError(
      "UNTRUSTED",
      `the repository at ${redact(base)} names ${quoteUntrusted(href)}, which is outside it: the repository's metadata is hostile; use another mirror`,
    );
  }
  return url;
}

export interface DownloadVerifiedOptions {
  /** What the file is, for messages (`primary.xml of repository baseos`). */
  what: string;
  fix: string;
  /** Where the temporary is written (same filesystem as `dest`). */
  tmpDir: string;
  retries?: number;
  signal?: AbortSignal;
  /** Bytes received so far in the current attempt. */
  onBytes?: (bytes: number) => void;
}

/**
 * GET `url` into `dest` through http/fetch.ts's GET and the one retry policy, its size and
 * checksum (any algorithm repomd.xml or primary.xml names) checked while it streams: too many
 * bytes stop the transfer at once, a mismatch is UNTRUSTED and never retried. Only a verified
 * file is renamed onto `dest`.
 */
export async function downloadVerified(
  fetch: HttpFetch,
  url: string,
  dest: string,
  expected: { checksum: RepoChecksum; size?: number },
  options: DownloadVerifiedOptions,
): Promise<void> {
  const { what, fix } = options;
  const tmp = join(options.tmpDir, `${randomBytes(8).toString("hex")}.part`);
  const size = expected.size ?? -1;
  try {
    await withRetries(
      async () => {
        const res = await httpGet(fetch, url, { ...(options.signal ? { signal: options.signal } : {}) });
        const verify = new VerifyingStream(
          { sha256: expected.checksum.value, algorithm: expected.checksum.type, size },
          {
            tooLarge: () =>
              new SutureError(
                "UNTRUSTED",
                `${what} is larger than the ${size} bytes the repository lists: ${fix}`,
              ),
            sizeMismatch: (actual) =>
              new SutureError(
                "UNTRUSTED",
                `${what} is ${actual} bytes but the repository lists ${size}: ${fix}`,
              ),
            digestMismatch: (actual) =>
              new SutureError(
                "UNTRUSTED",
                `${what} has ${expected.checksum.type} ${actual} but the repository lists ${expected.checksum.value}: ${fix}`,
              ),
          },
        );
        verify.on("data", () => {
          if (verify.bytes > MAX_RPM_BYTES)
            verify.destroy(new SutureError("TOO_LARGE", `${what} is larger than any rpm file`));
          options.onBytes?.(verify.bytes);
        });
        try {
          await streamToFile(res.body, [verify], tmp);
        } catch (e) {
          if (isSutureError(e) && e.code !== "IO") throw e;
          if ((e as { cause?: NodeJS.ErrnoException }).cause?.path) throw e; // a local write failure
          throw networkError(e, redact(url), options.signal);
        }
      },
      { ...defaultRetryPolicy, attempts: (options.retries ?? 3) + 1, baseDelayMs: 300 },
      { signal: options.signal, cancelled: "download cancelled" },
    );
    await placeFile(tmp, dest);
  } finally {
    await rm(tmp, { force: true });
  }
}

const describe = (p: RepoPackage) =>
  `${p.name}-${p.epoch ? `${p.epoch}:` : ""}${p.version}-${p.release}.${p.arch}`;

/** The store's file name of a package: its primary.xml checksum, which names exactly one build. */
const storeName = (p: RepoPackage) => `${p.checksum.type}-${p.checksum.value}.rpm`;

/**
 * Download each package (in parallel) into the verified store `<cacheDir>/packages/<checksum>.rpm`
 * and prove it before it is used: size and checksum as primary.xml lists them (checked while it
 * streams), its header's digests and recorded size (openRpm), its identity and header range
 * (checkRpmAgainstIndex), and its OpenPGP signature against the keys the image trusts for its
 * repository (verifyRpmSignature). A stored file is proven the same way on every use and replaced
 * when it fails (the store is shared by every run and never trusted by itself); nothing is
 * placed in the store before it is proven.
 *
 * A mismatch, a bad or unknown signature, an unsigned package: UNTRUSTED naming the package, its
 * repository and the fix. NOT_FOUND when the repository lacks the file it lists; NETWORK;
 * CANCELLED. The first failure stops the other transfers. Nothing outside the cache is written.
 */
export async function downloadRpmPackages(
  items: readonly RpmFetchItem[],
  options: DownloadRpmOptions,
): Promise<FetchedRpm[]> {
  if (options.signal?.aborted) throw new SutureError("CANCELLED", "package download cancelled");
  const fetch = options.fetch ?? defaultHttpFetch();
  const storeDir = join(options.cacheDir, "packages");
  const tmpDir = join(options.cacheDir, "tmp");
  await mkdir(storeDir, { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  const one = async (item: RpmFetchItem, signal: AbortSignal): Promise<FetchedRpm> => {
    const { pkg, repository } = item;
    const url = repoFileUrl(repository.baseUrl, pkg.location);
    const what = `${describe(pkg)} (${redact(url)}, repository ${repository.repo.id})`;
    const digest = `${pkg.checksum.type}:${pkg.checksum.value}`;
    const total = pkg.packageSize;
    const final = join(storeDir, storeName(pkg));
    const stored = await provenStored(final, item, what);
    if (stored) {
      options.progress?.({ type: "blob", action: "exists", digest, bytes: total, total });
      return { pkg: stored, file: final };
    }
    const tmp = join(tmpDir, `${randomBytes(8).toString("hex")}-${storeName(pkg)}`);
    try {
      let lastReport = 0;
      await downloadVerified(
        fetch,
        url,
        tmp,
        { checksum: pkg.checksum, size: pkg.packageSize },
        {
          what,
          fix: "the mirror serves a different package than its metadata lists; use another mirror",
          tmpDir,
          signal,
          ...(options.retries === undefined ? {} : { retries: options.retries }),
          onBytes: (bytes) => {
            if (lastReport === 0 || bytes - lastReport >= 256 * 1024 || bytes === total) {
              lastReport = bytes;
              options.progress?.({ type: "blob", action: "download", digest, bytes, total });
            }
          },
        },
      );
      await prove(tmp, item, what);
      await placeFile(tmp, final);
      // Reopened at its place in the store: the installer reads the payload from `pkg.path`.
      return { pkg: await openRpm(final), file: final };
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

/**
 * Open `path` and prove it is the item's package, signed as its repository requires. UNTRUSTED
 * naming the package and repository, with the fix.
 */
async function prove(path: string, item: RpmFetchItem, what: string): Promise<RpmPackage> {
  const { repository } = item;
  let pkg: RpmPackage;
  try {
    pkg = await openRpm(path);
    await checkRpmAgainstIndex(pkg, item.pkg);
  } catch (e) {
    // The repository's checksum vouches for a valid package: bytes that are none are not the listed ones.
    if (isSutureError(e, "UNTRUSTED") || isSutureError(e, "INVALID_ARCHIVE"))
      throw new SutureError("UNTRUSTED", `${what}: ${e.message.replace(path, "the file")}`, { cause: e });
    throw e;
  }
  if (repository.unsigned) return pkg;
  try {
    await verifyRpmSignature(pkg, repository.keyring);
  } catch (e) {
    if (!isSutureError(e, "UNTRUSTED")) throw e;
    const fix = repository.repo.gpgcheck
      ? ""
      : ` (repository ${repository.repo.id} sets gpgcheck=0, so only --keyring keys are trusted for it)`;
    throw new SutureError("UNTRUSTED", `${what}: ${e.message.replaceAll(path, "the package")}${fix}`, {
      cause: e,
    });
  }
  return pkg;
}

/** The stored package when it is there and still proves to be the item's; a file that does not is removed. */
async function provenStored(path: string, item: RpmFetchItem, what: string): Promise<RpmPackage | undefined> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch {
    return undefined;
  }
  if (st.isFile() && st.size === item.pkg.packageSize) {
    try {
      return await prove(path, item, what);
    } catch (e) {
      // A stored file that no longer proves (damaged on disk, or a key the image dropped): fetched
      // again, and the fresh copy decides.
      if (!isSutureError(e)) throw e;
    }
  }
  await rm(path, { force: true, recursive: st.isDirectory() });
  return undefined;
}
