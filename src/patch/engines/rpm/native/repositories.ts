import { createReadStream } from "node:fs";
import { lstat, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { type RepoPackage, readPrimary } from "../../../../distro/rpm/primary.ts";
import type { RpmRepo } from "../../../../distro/rpm/repo-config.ts";
import {
  MAX_REPOMD_BYTES,
  parseRepomd,
  type Repomd,
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
 * - An image that enables no repository: NOT_FOUND with the fix. A repository with only a
 *   mirrorlist/metalink, or of a zypper type other than rpm-md, is refused (USAGE) naming
 *   --mirror/--engine sandbox: resolving those needs a network lookup suture does not make.
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
    if (!repo.fetchUrls.length)
      throw new SutureError(
        "USAGE",
        `${repo.origin}: repository ${repo.id} has no baseurl${repo.metalink || repo.mirrorlist ? ` (only a ${repo.metalink ? "metalink" : "mirrorlist"}, which needs a network lookup suture does not make)` : ""}: add baseurl= to the image's repository file, or use --engine sandbox`,
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

/** Each baseurl in turn (dnf's order), until one answers. */
async function openOne(repo: RpmRepo, options: OpenRpmRepositoriesOptions): Promise<OpenedRpmRepository> {
  let last: unknown;
  for (const fetchUrl of repo.fetchUrls) {
    const baseUrl = repo.path
      ? `${fetchUrl.replace(/\/+$/, "")}/${repo.path.replace(/^\/+|\/+$/g, "")}`
      : fetchUrl;
    try {
      return await openAt(repo, baseUrl, options);
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
): Promise<OpenedRpmRepository> {
  const fetch = options.fetch ?? defaultHttpFetch();
  const get = { retries: options.retries, ...(options.signal ? { signal: options.signal } : {}) };
  const repomdUrl = repoFileUrl(baseUrl, "repodata/repomd.xml");
  const what = `repomd.xml of repository ${repo.id} (${redact(repomdUrl)})`;
  const repomdBytes = (await fetchBytes(fetch, repomdUrl, { ...get, maxBytes: MAX_REPOMD_BYTES })).bytes;
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
  const primaryUrl = repoFileUrl(baseUrl, entry.location);
  const primaryWhat = `primary.xml of repository ${repo.id} (${redact(primaryUrl)})`;
  const dir = join(options.cacheDir, "metadata");
  const tmpDir = join(options.cacheDir, "tmp");
  await mkdir(dir, { recursive: true });
  await mkdir(tmpDir, { recursive: true });
  const ext = /\.(gz|xz|zst|bz2)$/.exec(entry.location)?.[0] ?? ".xml";
  const cached = join(dir, `primary-${entry.checksum.type}-${entry.checksum.value}${ext}`);
  const read = () =>
    readPrimary(createReadStream(cached), entry, {
      what: primaryWhat,
      ...(options.keep ? { keep: options.keep } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  if (await isFile(cached)) {
    try {
      return { repo, baseUrl, repomd, packages: await read(), ...(signedBy ? { signedBy } : {}) };
    } catch (e) {
      // A damaged copy in the shared cache: the repository's own copy decides.
      if (!isSutureError(e, "UNTRUSTED")) throw e;
      await rm(cached, { force: true });
    }
  }
  await downloadVerified(
    fetch,
    primaryUrl,
    cached,
    { checksum: entry.checksum, ...(entry.size === undefined ? {} : { size: entry.size }) },
    { what: primaryWhat, fix: METADATA_FIX, tmpDir, ...get },
  );
  return { repo, baseUrl, repomd, packages: await read(), ...(signedBy ? { signedBy } : {}) };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isFile();
  } catch {
    return false;
  }
}
