import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { checkRpmAgainstIndex, openRpm, type RpmPackage } from "../../../../distro/rpm/package.ts";
import type { RepoPackage } from "../../../../distro/rpm/primary.ts";
import type { RpmRepo } from "../../../../distro/rpm/repo-config.ts";
import type { RepoChecksum } from "../../../../distro/rpm/repomd.ts";
import { verifyRpmSignature } from "../../../../distro/rpm/signature.ts";
import { isSutureError, quoteUntrusted, redact, SutureError } from "../../../../errors/errors.ts";
import { placeFile } from "../../../../fs/atomic.ts";
import { defaultHttpFetch, fetchToFile, type HttpFetch } from "../../../../http/fetch.ts";
import { fetchIntoStore } from "../../../../http/package-store.ts";
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
  const verifying = () =>
    new VerifyingStream(
      { sha256: expected.checksum.value, algorithm: expected.checksum.type, size },
      {
        tooLarge: () =>
          new SutureError(
            "UNTRUSTED",
            `${what} is larger than the ${size} bytes the repository lists: ${fix}`,
          ),
        sizeMismatch: (actual) =>
          new SutureError("UNTRUSTED", `${what} is ${actual} bytes but the repository lists ${size}: ${fix}`),
        digestMismatch: (actual) =>
          new SutureError(
            "UNTRUSTED",
            `${what} has ${expected.checksum.type} ${actual} but the repository lists ${expected.checksum.value}: ${fix}`,
          ),
      },
    );
  try {
    await fetchToFile(fetch, url, tmp, verifying, {
      what,
      fix,
      retries: options.retries ?? 3,
      ...(options.signal ? { signal: options.signal } : {}),
      onBytes: (bytes) => {
        if (bytes > MAX_RPM_BYTES) throw new SutureError("TOO_LARGE", `${what} is larger than any rpm file`);
        options.onBytes?.(bytes);
      },
    });
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
  const fetch = options.fetch ?? defaultHttpFetch();
  const tmpDir = join(options.cacheDir, "tmp");
  const url = (item: RpmFetchItem) => repoFileUrl(item.repository.baseUrl, item.pkg.location);
  const what = (item: RpmFetchItem) =>
    `${describe(item.pkg)} (${redact(url(item))}, repository ${item.repository.repo.id})`;
  return fetchIntoStore<RpmFetchItem, FetchedRpm>(
    items,
    {
      storeName: (item) => storeName(item.pkg),
      digest: (item) => `${item.pkg.checksum.type}:${item.pkg.checksum.value}`,
      size: (item) => item.pkg.packageSize,
      download: (item, tmp, signal, onBytes) =>
        downloadVerified(
          fetch,
          url(item),
          tmp,
          { checksum: item.pkg.checksum, size: item.pkg.packageSize },
          {
            what: what(item),
            fix: "the mirror serves a different package than its metadata lists; use another mirror",
            tmpDir,
            signal,
            ...(options.retries === undefined ? {} : { retries: options.retries }),
            onBytes,
          },
        ),
      prove: async (path, item) => {
        await prove(path, item, what(item));
      },
      // Reopened at its place in the store: the installer reads the payload from `pkg.path`.
      open: async (path) => ({ pkg: await openRpm(path), file: path }),
    },
    {
      storeDir: join(options.cacheDir, "packages"),
      tmpDir,
      concurrency: options.concurrency ?? 6,
      ...(options.progress ? { progress: options.progress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
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
