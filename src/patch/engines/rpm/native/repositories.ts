import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { mirroredUrl } from "../../../../distro/mirrors.ts";
import { readFilelists } from "../../../../distro/rpm/filelists.ts";
import {
  MAX_MIRRORLIST_BYTES,
  type Metalink,
  parseMetalink,
  parseMirrorlist,
} from "../../../../distro/rpm/mirrorlist.ts";
import { type RepoPackage, readPrimary } from "../../../../distro/rpm/primary.ts";
import type { RpmRepo } from "../../../../distro/rpm/repo-config.ts";
import {
  MAX_REPOMD_BYTES,
  parseRepomd,
  type Repomd,
  type RepomdData,
  repomdEntry,
  verifyRepomdSignature,
} from "../../../../distro/rpm/repomd.ts";
import { isSutureError, quoteUntrusted, redact, SutureError } from "../../../../errors/errors.ts";
import { defaultHttpFetch, fetchBytes, type HttpFetch } from "../../../../http/fetch.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import type { Keyring } from "../../../../trust/keyring.ts";
import { downloadVerified, repoFileUrl } from "./fetch.ts";

/** One of the image's enabled repositories, its metadata verified. */
export interface OpenedRpmRepository {
  repo: RpmRepo;
  /** The base URL it was read from (the mirror's when `--mirror` applies; the first that answered). */
  baseUrl: string;
  repomd: Repomd;
  packages: RepoPackage[];
  /** Who signed repomd.xml, when the repository sets repo_gpgcheck=1. */
  signedBy?: string;
}

export interface OpenRpmRepositoriesOptions {
  /** The engine's cache root (`<--cache-dir>/rpm-native`); metadata goes under `metadata/`. */
  cacheDir: string;
  /** The keys repomd.xml.asc is checked with for `repo` (its gpgkey= files and --keyring), when it sets repo_gpgcheck. */
  repomdKeyring: (repo: RpmRepo) => Promise<Keyring>;
  /** `--mirror`, applied to metalink/mirrorlist URLs and to the base URLs they list. */
  mirrors?: Readonly<Record<string, string>>;
  /** Which packages of primary.xml to keep (default all). */
  keep?: (pkg: RepoPackage) => boolean;
  fetch?: HttpFetch;
  retries?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

const METADATA_FIX = "the repository's metadata is broken or was tampered with; use another mirror";

/**
 * Read and verify the metadata of each enabled repository, as `dnf makecache` does:
 * `<baseurl>/repodata/repomd.xml` (and, with `repo_gpgcheck=1`, its detached `repomd.xml.asc`,
 * checked against the repository's gpgkey= keys and --keyring before anything in it is read),
 * then its `primary` file (gzip, xz, zstd, bzip2), checked against repomd.xml's checksum and size
 * while it streams and parsed as it arrives. A repository's baseurls are tried in order, as dnf
 * tries them.
 *
 * - A repository that cannot be reached, or lacks repomd.xml, is an error (NETWORK, NOT_FOUND):
 *   dnf 4 and tdnf default to `skip_if_unavailable=False`, and a patch resolved without one of the
 *   image's repositories could pick other versions than the image's own tool would. Only a
 *   repository that sets `skip_if_unavailable=1` is left out, with a warning.
 * - Tampered, unsigned-where-required or foreign-signed metadata is UNTRUSTED, one line naming the
 *   repository and the fix.
 * - A repository with only a `mirrorlist=` or `metalink=` is found through it (fetched, then its
 *   mirrors tried in order; a metalink's hashes must include repomd.xml's, as dnf checks).
 * - An image that enables no repository: NOT_FOUND with the fix. A repository of a zypper type
 *   other than rpm-md is refused (USAGE) naming --engine sandbox.
 *
 * Cache: `<cacheDir>/metadata/<checksum>.<ext>`, primary files by the checksum repomd.xml lists
 * (so a changed repository is a new file); a cached one is verified again as it is parsed on
 * every use, and fetched again when it fails. repomd.xml itself is always fetched (it is small,
 * and is what says whether the repository changed).
 */
export async function openRpmRepositories(
  repos: readonly RpmRepo[],
  options: OpenRpmRepositoriesOptions,
): Promise<{ repositories: OpenedRpmRepository[]; warnings: string[] }> {
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    options.progress?.({ type: "warning", message });
  };
  const enabled = repos.filter((r) => r.enabled);
  if (enabled.length === 0)
    throw new SutureError(
      "NOT_FOUND",
      `the image enables no rpm repository${repos.length ? ` (${repos.map((r) => r.id).join(", ")} are disabled)` : ""}: add the distribution's repository files to the image (/etc/yum.repos.d, /etc/zypp/repos.d), or use --engine sandbox`,
    );
  for (const repo of enabled) {
    if (!repo.fetchUrls.length && !repo.metalink && !repo.mirrorlist)
      throw new SutureError(
        "USAGE",
        `${repo.origin}: repository ${repo.id} has no baseurl, mirrorlist or metalink: add baseurl= to the image's repository file, or disable the repository`,
      );
    if (repo.type !== undefined && repo.type !== "rpm-md")
      throw new SutureError(
        "USAGE",
        `${repo.origin}: repository ${repo.id} is of type ${quoteUntrusted(repo.type)}, and suture reads only rpm-md repositories: use --engine sandbox`,
      );
  }
  const settled = await Promise.allSettled(enabled.map((repo) => openOne(repo, options)));
  const opened: OpenedRpmRepository[] = [];
  for (const [i, outcome] of settled.entries()) {
    const repo = enabled[i]!;
    if (outcome.status === "fulfilled") {
      opened.push(outcome.value);
      continue;
    }
    const e = outcome.reason;
    const unreachable =
      isSutureError(e, "NOT_FOUND") || (isSutureError(e, "NETWORK") && !options.signal?.aborted);
    if (unreachable && repo.skipIfUnavailable) {
      warn(`repository ${repo.id} is left out, as its skip_if_unavailable=1 says: ${e.message}`);
      continue;
    }
    if (unreachable)
      throw new SutureError(
        e.code,
        `repository ${repo.id} (${repo.origin}) cannot be read: ${e.message}; as dnf does (skip_if_unavailable=False), suture does not patch without it: fix the network or --mirror, or disable the repository in the image`,
        { cause: e },
      );
    throw e;
  }
  return { repositories: opened, warnings };
}

/**
 * The repository's base URLs: its baseurls, or those its metalink or mirrorlist lists (fetched
 * now; `--mirror` applies to the list's URL and to each URL it lists), with the hashes a metalink
 * says repomd.xml may have.
 */
async function locate(
  repo: RpmRepo,
  options: OpenRpmRepositoriesOptions,
): Promise<{ urls: string[]; hashes?: Metalink["hashes"] }> {
  if (repo.fetchUrls.length) return { urls: repo.fetchUrls };
  const mirrors = options.mirrors ?? {};
  const listUrl = mirroredUrl((repo.metalink ?? repo.mirrorlist)!, mirrors);
  const what = `the ${repo.metalink ? "metalink" : "mirrorlist"} of repository ${repo.id} (${redact(listUrl)})`;
  const text = (
    await fetchBytes(options.fetch ?? defaultHttpFetch(), listUrl, {
      maxBytes: MAX_MIRRORLIST_BYTES,
      retries: options.retries,
      ...(options.signal ? { signal: options.signal } : {}),
    })
  ).bytes.toString("utf8");
  if (repo.metalink) {
    const metalink = parseMetalink(text, what);
    return { urls: metalink.baseUrls.map((u) => mirroredUrl(u, mirrors)), hashes: metalink.hashes };
  }
  return { urls: parseMirrorlist(text, what).map((u) => mirroredUrl(u, mirrors)) };
}

/** Each base URL in turn (dnf's order), until one answers. */
async function openOne(repo: RpmRepo, options: OpenRpmRepositoriesOptions): Promise<OpenedRpmRepository> {
  let last: unknown;
  const { urls, hashes } = await locate(repo, options);
  for (const fetchUrl of urls) {
    const baseUrl = repo.path
      ? `${fetchUrl.replace(/\/+$/, "")}/${repo.path.replace(/^\/+|\/+$/g, "")}`
      : fetchUrl;
    try {
      return await openAt(repo, baseUrl, options, hashes);
    } catch (e) {
      const unreachable =
        isSutureError(e, "NOT_FOUND") || (isSutureError(e, "NETWORK") && !options.signal?.aborted);
      if (!unreachable) throw e;
      last = e;
    }
  }
  throw last;
}

async function openAt(
  repo: RpmRepo,
  baseUrl: string,
  options: OpenRpmRepositoriesOptions,
  metalinkHashes?: Metalink["hashes"],
): Promise<OpenedRpmRepository> {
  const fetch = options.fetch ?? defaultHttpFetch();
  const get = { retries: options.retries, ...(options.signal ? { signal: options.signal } : {}) };
  const repomdUrl = repoFileUrl(baseUrl, "repodata/repomd.xml");
  const what = `repomd.xml of repository ${repo.id} (${redact(repomdUrl)})`;
  const repomdBytes = (await fetchBytes(fetch, repomdUrl, { ...get, maxBytes: MAX_REPOMD_BYTES })).bytes;
  if (metalinkHashes?.length) {
    // dnf's check of a metalink repository: repomd.xml must be one its metalink names.
    const known = metalinkHashes.some(
      (h) => createHash(h.type).update(repomdBytes).digest("hex") === h.value,
    );
    if (!known)
      throw new SutureError(
        "UNTRUSTED",
        `${what} is none of the versions its metalink lists (by hash): the mirror is stale or tampered with; use another mirror`,
      );
  }
  let signedBy: string | undefined;
  if (repo.repoGpgcheck) {
    let signature: Buffer | undefined;
    try {
      signature = (await fetchBytes(fetch, `${repomdUrl}.asc`, { ...get, maxBytes: 1024 * 1024 })).bytes;
    } catch (e) {
      if (!isSutureError(e, "NOT_FOUND")) throw e;
    }
    const signers = await verifyRepomdSignature(repomdBytes, signature, await options.repomdKeyring(repo), {
      what,
    });
    signedBy = signers.map((s) => s.userIds[0] ?? s.fingerprint).join(", ");
  }
  const repomd = parseRepomd(repomdBytes, what);
  const entry = repomdEntry(repomd, "primary", what);
  const packages = await cachedMetadata(repo, baseUrl, entry, options, (file, fileWhat) =>
    readPrimary(createReadStream(file), entry, {
      what: fileWhat,
      ...(options.keep ? { keep: options.keep } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    }),
  );
  return { repo, baseUrl, repomd, packages, ...(signedBy ? { signedBy } : {}) };
}

/**
 * A metadata file repomd.xml lists (`entry`), read by `read` from the cache
 * (`<cacheDir>/metadata/<type>-<checksum>.<ext>`) when a copy there still verifies, else fetched
 * (checksum and size checked as it streams) and then read. Only verified bytes are cached.
 */
async function cachedMetadata<T>(
  repo: RpmRepo,
  baseUrl: string,
  entry: RepomdData,
  options: Pick<OpenRpmRepositoriesOptions, "cacheDir" | "fetch" | "retries" | "signal">,
  read: (file: string, what: string) => Promise<T>,
): Promise<T> {
  const url = repoFileUrl(baseUrl, entry.location);
  const what = `${entry.type}.xml of repository ${repo.id} (${redact(url)})`;
  const dir = join(options.cacheDir, "metadata");
  const tmpDir = join(options.cacheDir, "tmp");
  await mkdir(dir, { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  const ext = /\.(gz|xz|zst|bz2)$/.exec(entry.location)?.[0] ?? ".xml";
  const cached = join(dir, `${entry.type}-${entry.checksum.type}-${entry.checksum.value}${ext}`);
  if (await isFile(cached)) {
    try {
      return await read(cached, what);
    } catch (e) {
      // A damaged copy in the shared cache: the repository's own copy decides.
      if (!isSutureError(e, "UNTRUSTED")) throw e;
      await rm(cached, { force: true });
    }
  }
  await downloadVerified(
    options.fetch ?? defaultHttpFetch(),
    url,
    cached,
    { checksum: entry.checksum, ...(entry.size === undefined ? {} : { size: entry.size }) },
    {
      what,
      fix: METADATA_FIX,
      tmpDir,
      retries: options.retries,
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
  return read(cached, what);
}

/**
 * The files among `wanted` each package of `opened` has, from its repository's filelists.xml (as
 * dnf loads filelists when a dependency names a path primary.xml does not list), added to its
 * packages' `files`. A repository without filelists adds nothing.
 */
export async function addRepoFilelists(
  opened: OpenedRpmRepository,
  wanted: ReadonlySet<string>,
  options: Pick<OpenRpmRepositoriesOptions, "cacheDir" | "fetch" | "retries" | "signal">,
): Promise<number> {
  const entry = opened.repomd.data.get("filelists");
  if (!entry) return 0;
  const found = await cachedMetadata(opened.repo, opened.baseUrl, entry, options, (file, what) =>
    readFilelists(createReadStream(file), entry, {
      what,
      wanted,
      ...(options.signal ? { signal: options.signal } : {}),
    }),
  );
  let added = 0;
  for (const pkg of opened.packages) {
    const paths = found.get(pkg.checksum.value);
    if (!paths) continue;
    for (const path of paths) {
      if (pkg.files.some((f) => f.path === path)) continue;
      pkg.files.push({ path, type: "file" });
      added++;
    }
  }
  return added;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isFile();
  } catch {
    return false;
  }
}
