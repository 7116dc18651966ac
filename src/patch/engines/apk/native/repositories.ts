import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { type ApkIndex, MAX_APKINDEX_FILE_BYTES, openApkIndex } from "../../../../distro/apk/apkindex.ts";
import type { ApkConfig, ApkRepository } from "../../../../distro/apk/config.ts";
import type { ApkKeyring } from "../../../../distro/apk/signature.ts";
import { isSutureError, quoteUntrusted, redact, SutureError } from "../../../../errors/errors.ts";
import { writeFileAtomic } from "../../../../fs/atomic.ts";
import {
  defaultHttpFetch,
  type FetchBytesResult,
  fetchBytes,
  type HttpFetch,
} from "../../../../http/fetch.ts";
import type { Platform } from "../../../../oci/manifest.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import { nativeArch } from "../../../../vex/purl.ts";

/** One of the image's repositories, its signed index verified. */
export interface OpenedApkRepository {
  repository: ApkRepository;
  /** Where the index was fetched from (the mirror's URL when `--mirror` applies). */
  indexUrl: string;
  index: ApkIndex;
}

export interface OpenApkRepositoriesOptions {
  /** apk's architecture name (`x86_64`, `aarch64`): the repository's subdirectory. */
  arch: string;
  /** The engine's cache root (`<--cache-dir>/apk-native`); indexes go under `indexes/`. */
  cacheDir: string;
  keyring: ApkKeyring;
  /** Tags the image's world pins packages to (`name@edge`): their tagged repositories are opened too. */
  pinnedTags?: ReadonlySet<string>;
  fetch?: HttpFetch;
  retries?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

/**
 * The architecture the engine fetches for: the image's `/etc/apk/arch` when it has one, which
 * must be the platform's (an image whose apk says aarch64 in an amd64 manifest is mislabelled,
 * and patching it with either architecture's packages would break one of the two).
 */
export function apkArchFor(platform: Platform, config: Pick<ApkConfig, "arch">): string {
  const expected = nativeArch("apk", platform.architecture, platform.variant)!;
  if (config.arch !== undefined && config.arch !== expected)
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `the image's /etc/apk/arch says ${quoteUntrusted(config.arch)}, but it is the ${platform.architecture}${platform.variant ? `/${platform.variant}` : ""} platform's image (apk calls it ${expected}): fix the image's platform or its /etc/apk/arch`,
    );
  return config.arch ?? expected;
}

/** What the cache keeps beside an index: how to ask whether it changed, and which bytes it is about. */
const IndexCacheMeta = z.object({
  url: z.string(),
  sha256: z.string(),
  etag: z.string().optional(),
  lastModified: z.string().optional(),
});
type IndexCacheMeta = z.infer<typeof IndexCacheMeta>;

/**
 * Fetch and verify the `APKINDEX.tar.gz` of each of the image's repositories, as `apk update`
 * does: `<fetchUrl>/<arch>/APKINDEX.tar.gz`, its signature checked against `keyring` before
 * anything in it is read. Repositories are kept in the image's order (apk's preference between
 * equal versions).
 *
 * - Tagged repositories (`@edge https://…`) are opened only when the image's world pins a
 *   package to their tag (`name@edge`): apk takes from them only what is pinned so
 *   (resolve.ts decides which entries).
 * - A repository that does not answer or has no index (404) is a warning, as apk warns and goes
 *   on (the official image lists `community`, which a mirror may not carry); none at all is an
 *   error (NOT_FOUND), and so is an image that lists none.
 * - An index that is unsigned, signed by no trusted key, or changed after signing is UNTRUSTED:
 *   one line naming the repository and how to trust it.
 *
 * Cache: `<cacheDir>/indexes/<hash of the URL>/{APKINDEX.tar.gz,meta.json}`. Each run asks the
 * server with the cached ETag/Last-Modified (a conditional request: a 304 costs no transfer)
 * rather than trusting an age, since an apk repository replaces its index in place; the cached
 * bytes are verified again on every use (the cache is shared and never trusted by itself), and
 * are used as they are, with a warning, when the server cannot be reached. Only verified bytes
 * are written, atomically.
 */
export async function openApkRepositories(
  repositories: readonly ApkRepository[],
  options: OpenApkRepositoriesOptions,
): Promise<{ repositories: OpenedApkRepository[]; warnings: string[] }> {
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    options.progress?.({ type: "warning", message });
  };
  const usable = repositories.filter((r) => {
    if (r.tag !== undefined && !options.pinnedTags?.has(r.tag)) return false;
    if (!/^https?:\/\//i.test(r.fetchUrl)) {
      warn(
        `apk repository ${quoteUntrusted(r.url)} (${r.origin}) is not an http(s) URL, so suture cannot fetch it: left out; use --mirror ${r.url}=http://… to serve it`,
      );
      return false;
    }
    return true;
  });
  if (usable.length === 0)
    throw new SutureError(
      "NOT_FOUND",
      "the image lists no apk repository suture can fetch (/etc/apk/repositories): add one to the image, or use --engine sandbox",
    );
  // All fetched at once; outcomes judged in the image's order, so the error shown is always the
  // first repository's, whichever answered first.
  const settled = await Promise.allSettled(usable.map((repository) => openOne(repository, options, warn)));
  const opened: (OpenedApkRepository | undefined)[] = [];
  for (const [i, outcome] of settled.entries()) {
    if (outcome.status === "fulfilled") {
      opened.push(outcome.value);
      continue;
    }
    const e = outcome.reason;
    if (isSutureError(e, "NOT_FOUND") || (isSutureError(e, "NETWORK") && !options.signal?.aborted)) {
      warn(`apk repository ${redact(usable[i]!.url)} is left out, as apk leaves it out: ${e.message}`);
      opened.push(undefined);
      continue;
    }
    throw e;
  }
  const found = opened.filter((r): r is OpenedApkRepository => r !== undefined);
  if (found.length === 0)
    throw new SutureError(
      "NOT_FOUND",
      `none of the image's apk repositories could be read (${usable.map((r) => redact(r.fetchUrl)).join(", ")}): check the network, the repository URLs and --mirror`,
    );
  return { repositories: found, warnings };
}

async function openOne(
  repository: ApkRepository,
  options: OpenApkRepositoriesOptions,
  warn: (message: string) => void,
): Promise<OpenedApkRepository> {
  const url = `${repository.fetchUrl}/${options.arch}/APKINDEX.tar.gz`;
  const what = `the index of apk repository ${redact(repository.url)}${repository.fetchUrl === repository.url ? "" : ` (from ${redact(url)})`}`;
  const dir = join(options.cacheDir, "indexes", createHash("sha256").update(url).digest("hex").slice(0, 32));
  const indexFile = join(dir, "APKINDEX.tar.gz");
  const metaFile = join(dir, "meta.json");
  const cached = await readCached(indexFile, metaFile, url);
  const fetch = options.fetch ?? defaultHttpFetch();
  const get = (conditional: boolean) => {
    const headers: Record<string, string> = {};
    if (conditional && cached?.meta.etag) headers["if-none-match"] = cached.meta.etag;
    if (conditional && cached?.meta.lastModified) headers["if-modified-since"] = cached.meta.lastModified;
    return fetchBytes(fetch, url, {
      headers,
      allowNotModified: conditional,
      maxBytes: MAX_APKINDEX_FILE_BYTES,
      signal: options.signal,
      retries: options.retries,
    });
  };

  let got: FetchBytesResult;
  try {
    got = await get(cached !== undefined);
  } catch (e) {
    // An unreachable server with a verified copy at hand: apk, too, goes on with its cached index.
    if (!cached || !isSutureError(e, "NETWORK") || options.signal?.aborted) throw e;
    const index = await openApkIndex(cached.bytes, options.keyring, what);
    warn(`${e.message}; using the copy of ${what} fetched before`);
    return { repository, indexUrl: url, index };
  }
  if (got.status === 304 && cached) {
    try {
      return { repository, indexUrl: url, index: await openApkIndex(cached.bytes, options.keyring, what) };
    } catch (e) {
      // The cached copy no longer verifies (damaged on disk, or a key the image dropped): the
      // server's own copy decides, fetched in full.
      if (!isSutureError(e)) throw e;
      got = await get(false);
    }
  }
  const index = await openApkIndex(got.bytes, options.keyring, what);
  const meta: IndexCacheMeta = {
    url,
    sha256: createHash("sha256").update(got.bytes).digest("hex"),
    ...(got.etag === undefined ? {} : { etag: got.etag }),
    ...(got.lastModified === undefined ? {} : { lastModified: got.lastModified }),
  };
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(indexFile, got.bytes, { fsync: false });
  await writeFileAtomic(metaFile, JSON.stringify(meta), { fsync: false });
  return { repository, indexUrl: url, index };
}

/**
 * The cached index and what was said about it, when both are there and belong together (two
 * processes may each have written one of the pair: the hash in the metadata tells).
 */
async function readCached(
  indexFile: string,
  metaFile: string,
  url: string,
): Promise<{ bytes: Buffer; meta: IndexCacheMeta } | undefined> {
  const [bytes, metaText] = await Promise.all([
    readFile(indexFile).catch(() => undefined),
    readFile(metaFile, "utf8").catch(() => undefined),
  ]);
  if (!bytes || metaText === undefined) return undefined;
  let meta: IndexCacheMeta;
  try {
    meta = IndexCacheMeta.parse(JSON.parse(metaText));
  } catch {
    return undefined;
  }
  if (meta.url !== url || meta.sha256 !== createHash("sha256").update(bytes).digest("hex")) return undefined;
  return { bytes, meta };
}
