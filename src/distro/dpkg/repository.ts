import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type DecodeFormat, decompress } from "../../archive/compression.ts";
import { isSutureError, quoteUntrusted, redact, SutureError } from "../../errors/errors.ts";
import { placeFile } from "../../fs/atomic.ts";
import { defaultHttpFetch, fetchBytes, fetchToFile, type HttpFetch } from "../../http/fetch.ts";
import type { ProgressSink } from "../../progress/events.ts";
import { checksumError, type ExpectedChecksum, fileChecksum } from "../../stream/checksum.ts";
import type { Keyring } from "../../trust/keyring.ts";
import {
  type Signer,
  unverifiedClearsignedText,
  verifyClearsigned,
  verifyDetached,
} from "../../trust/signature.ts";
import { type ControlParagraph, field, parseControl } from "./control.ts";
import { buildPackagesCache, openPackagesCache, packagesCacheFiles } from "./packages-cache.ts";
import type { PackagesIndex } from "./packages-index.ts";
import type { AptSource } from "./sources.ts";

/** The signed `Release` metadata of one suite. */
export interface ReleaseInfo {
  origin?: string;
  label?: string;
  suite?: string;
  codename?: string;
  version?: string;
  date?: Date;
  validUntil?: Date;
  acquireByHash: boolean;
  architectures: string[];
  components: string[];
  /** `No-Support-for-Architecture-all: Packages`: `all` packages are in every architecture's index. */
  archAllInArchIndexes: boolean;
  /** The SHA256 list: path relative to the suite directory → size and hash. */
  files: ReadonlyMap<string, ExpectedChecksum>;
  paragraph: ControlParagraph;
}

/** An opened, verified suite: its signed Release and its verified Packages indexes for one arch. */
export interface Repository {
  source: AptSource;
  arch: string;
  /** URL of the signed metadata used (InRelease, or Release when only detached signatures exist). */
  releaseUrl: string;
  release: ReleaseInfo;
  /** Keys whose good signatures were accepted; empty only for `trusted=yes` sources. */
  signers: Signer[];
  indexes: PackagesIndex[];
}

export interface OpenRepositoryOptions {
  /** dpkg architecture (`amd64`, `arm64`, ...). */
  arch: string;
  /** Cache root; see the layout note on openRepository. Created when missing. */
  cacheDir: string;
  /** Keys that may sign this source (see trust/keyring.ts imageKeyringProvider). */
  keyring: Keyring;
  fetch?: HttpFetch;
  /** The clock used for Valid-Until, Date and key expiry (default: now). */
  now?: Date;
  /** How far a Release's Date may lie in the future before it is refused (default 10 min). */
  maxClockSkewMs?: number;
  retries?: number;
  signal?: AbortSignal;
  progress?: ProgressSink;
  /** apt.conf's `Acquire::Check-Valid-Until` (default true); a source's own `check-valid-until` wins. */
  checkValidUntil?: boolean;
  /** Accept a suite with no signature at all (apt's AllowInsecureRepositories; the user must ask for it). */
  allowUnsigned?: boolean;
}

/** Largest InRelease/Release we accept (Debian's main suite InRelease is ~150 kB). */
const MAX_RELEASE_BYTES = 32 * 1024 * 1024;

const COMPRESSED_INDEXES = ["Packages.xz", "Packages.gz", "Packages"] as const;

/**
 * Open one apt source the way apt-secure does, for one architecture:
 * 1. fetch `dists/SUITE/InRelease` (a conditional request when it was cached before), or, only when
 *    the server has none, `Release` + `Release.gpg`;
 * 2. verify the signature against `keyring` (unknown signer, bad signature, expired or revoked key
 *    are UNTRUSTED) and use only the signed text from then on;
 * 3. refuse a Release past its `Valid-Until` or dated in the future (UNTRUSTED);
 * 4. for each component, fetch `COMPONENT/binary-ARCH/Packages.xz` (else .gz, else plain), via
 *    `by-hash/SHA256/<hex>` when the Release says `Acquire-By-Hash: yes`, verifying size and SHA256
 *    against the signed list before decompressing, then the decompressed text too when listed;
 *    an index already cached under the newly signed hash is reused without a download (and, when
 *    its name table is there, without decompressing or reading it: packages-cache.ts).
 *
 * Cache layout under `cacheDir`: `indexes/<sha256>` (verified compressed indexes, by hash),
 * `indexes/<sha256>.plain` and `.names` (the decompressed index and its name table, by the hash
 * they were verified against: packages-cache.ts; a warm open reads only the table),
 * `releases/<key>/{InRelease,meta.json}` (last verified signed file with its ETag/Last-Modified),
 * `tmp/` (in-flight files). Writes are atomic renames done only after every check of the call
 * passed: a failed open leaves the cache as it was.
 *
 * Errors: UNTRUSTED (signature, checksum, validity; the message names the file and the remedy),
 * NOT_FOUND (no such suite, or none of its packages for `arch`; a missing component is only a
 * warning, as in apt), NETWORK (unreachable after retries),
 * UNSUPPORTED_PLATFORM (the source is restricted to other architectures), CANCELLED.
 */
export async function openRepository(source: AptSource, options: OpenRepositoryOptions): Promise<Repository> {
  const fetch = options.fetch ?? defaultHttpFetch();
  const now = options.now ?? new Date();
  const { arch } = options;
  if (source.arch && !source.arch.includes(arch)) {
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `apt source ${source.uri} ${source.suite} is restricted to ${source.arch.join(", ")}, not ${arch}`,
    );
  }
  const suite = source.suite.replaceAll("$(ARCH)", arch);
  const flat = suite.endsWith("/");
  const flatDir = suite.replace(/^\.\//, "").replace(/\/+$/, "");
  const distUrl = flat ? (flatDir ? `${source.uri}/${flatDir}` : source.uri) : `${source.uri}/dists/${suite}`;
  const label = `${redact(source.uri)} ${suite}`;
  const stage = new Stage(options.cacheDir);
  const common = { signal: options.signal, retries: options.retries };
  try {
    const meta = await fetchSignedRelease(fetch, distUrl, source, stage, { ...options, now, ...common });
    const release = parseRelease(meta.text, meta.url);
    checkValidity(release, meta.url, now, options.maxClockSkewMs ?? 10 * 60_000, {
      validUntil: source.checkValidUntil ?? options.checkValidUntil ?? true,
    });
    if (!flat && !suiteMatches(release, suite)) {
      options.progress?.({
        type: "warning",
        message: `conflicting distribution: ${meta.url} is for ${release.codename ?? release.suite}, expected ${suite}`,
      });
    }
    if (!flat && release.architectures.length && !release.architectures.includes(arch)) {
      throw new SutureError(
        "NOT_FOUND",
        `${label} has no packages for ${arch} (it has ${release.architectures.join(", ")}): use a mirror that carries ${arch}`,
      );
    }
    const targets: { component: string; arch: string }[] = flat
      ? [{ component: "", arch }]
      : source.components.map((component) => ({ component, arch }));
    if (!flat && release.architectures.includes("all") && !release.archAllInArchIndexes) {
      for (const component of source.components) targets.push({ component, arch: "all" });
    }
    const repoUri = flat ? distUrl : source.uri;
    // allSettled: no transfer may still be writing into the stage when cleanup runs.
    const settled = await Promise.allSettled(
      targets.map((t) =>
        loadIndex(fetch, { distUrl, repoUri, label, release, stage, ...t, source, suite, flat, options }),
      ),
    );
    const indexes = settled.flatMap((r) => (r.status === "fulfilled" && r.value ? [r.value] : []));
    try {
      const failed = settled.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      await stage.commit();
    } catch (e) {
      // The indexes that did open hold their files open.
      for (const index of indexes) index.release?.();
      throw e;
    }
    return { source, arch, releaseUrl: meta.url, release, signers: meta.signers, indexes };
  } finally {
    await stage.cleanup();
  }
}

/** Open several sources in parallel, each with the keyring `keyringFor` gives it; sources restricted to other architectures are skipped. */
export async function openRepositories(
  sources: readonly AptSource[],
  options: Omit<OpenRepositoryOptions, "keyring"> & { keyringFor: (source: AptSource) => Promise<Keyring> },
): Promise<Repository[]> {
  const usable = sources.filter((s) => !s.arch || s.arch.includes(options.arch));
  // On the first failure the others are cancelled and awaited: nothing may still be writing into
  // the cache when the caller hears about the error (and, say, removes its directory).
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const settled = await Promise.allSettled(
    usable.map(async (s) => {
      try {
        return await openRepository(s, { ...options, signal, keyring: await options.keyringFor(s) });
      } catch (e) {
        stop.abort(e);
        throw e;
      }
    }),
  );
  const failed =
    settled.find(
      (r) => r.status === "rejected" && !(isSutureError(r.reason) && r.reason.code === "CANCELLED"),
    ) ?? settled.find((r) => r.status === "rejected");
  if (failed) {
    // The repositories that did open hold their indexes' files open.
    for (const r of settled)
      if (r.status === "fulfilled") for (const index of r.value.indexes) index.release?.();
    throw (failed as PromiseRejectedResult).reason;
  }
  return settled.map((r) => (r as PromiseFulfilledResult<Repository>).value);
}

function suiteMatches(release: ReleaseInfo, suite: string): boolean {
  const names = [release.suite, release.codename].filter(Boolean) as string[];
  if (!names.length) return true;
  return names.some((n) => n === suite || suite.startsWith(`${n}/`));
}

interface SignedRelease {
  url: string;
  text: string;
  signers: Signer[];
}

interface ReleaseCacheMeta {
  url: string;
  etag?: string;
  lastModified?: string;
}

async function fetchSignedRelease(
  fetch: HttpFetch,
  distUrl: string,
  source: AptSource,
  stage: Stage,
  options: OpenRepositoryOptions & { now: Date },
): Promise<SignedRelease> {
  const inReleaseUrl = `${distUrl}/InRelease`;
  const cacheDir = join(
    options.cacheDir,
    "releases",
    createHash("sha256").update(inReleaseUrl).digest("hex").slice(0, 32),
  );
  const cachedFile = join(cacheDir, "InRelease");
  const metaFile = join(cacheDir, "meta.json");
  const cachedMeta = await readJson<ReleaseCacheMeta>(metaFile);
  const cached =
    cachedMeta?.url === inReleaseUrl ? await readFile(cachedFile).catch(() => undefined) : undefined;
  const headers: Record<string, string> = {};
  if (cached && cachedMeta?.etag) headers["if-none-match"] = cachedMeta.etag;
  if (cached && cachedMeta?.lastModified) headers["if-modified-since"] = cachedMeta.lastModified;
  const common = { signal: options.signal, retries: options.retries, maxBytes: MAX_RELEASE_BYTES };
  const verify = { now: options.now };

  let got: Awaited<ReturnType<typeof fetchBytes>> | undefined;
  try {
    got = await fetchBytes(fetch, inReleaseUrl, { ...common, headers, allowNotModified: Boolean(cached) });
  } catch (e) {
    if (!isSutureError(e, "NOT_FOUND")) throw e;
  }
  if (got) {
    const bytes = got.status === 304 && cached ? cached : got.bytes;
    const what = redact(inReleaseUrl);
    let text: string;
    let signers: Signer[] = [];
    try {
      ({ text, signers } = await verifyClearsigned(bytes, options.keyring, { ...verify, what }));
    } catch (e) {
      if (!(source.trusted && isSutureError(e, "UNTRUSTED"))) throw e;
      text = await unverifiedClearsignedText(bytes);
      options.progress?.({
        type: "warning",
        message: `${what}: ${(e as Error).message} (accepted: the source is marked trusted=yes)`,
      });
    }
    if (got.status !== 304) {
      const tmp = await stage.write("InRelease", bytes);
      stage.add(tmp, cachedFile);
      const meta: ReleaseCacheMeta = { url: inReleaseUrl, etag: got.etag, lastModified: got.lastModified };
      stage.add(await stage.write("meta.json", Buffer.from(JSON.stringify(meta))), metaFile);
    }
    return { url: inReleaseUrl, text, signers };
  }

  // No InRelease: the older Release + detached Release.gpg pair.
  const releaseUrl = `${distUrl}/Release`;
  let release: Buffer;
  try {
    release = (await fetchBytes(fetch, releaseUrl, common)).bytes;
  } catch (e) {
    if (isSutureError(e, "NOT_FOUND")) {
      throw new SutureError(
        "NOT_FOUND",
        `suite ${source.suite} not found at ${redact(source.uri)} (no InRelease or Release under ${redact(distUrl)}): check the source's URI and suite name`,
        { cause: e },
      );
    }
    throw e;
  }
  let signature: Buffer | undefined;
  try {
    signature = (await fetchBytes(fetch, `${releaseUrl}.gpg`, common)).bytes;
  } catch (e) {
    if (!isSutureError(e, "NOT_FOUND")) throw e;
  }
  const what = redact(releaseUrl);
  if (!signature && options.allowUnsigned) {
    options.progress?.({
      type: "warning",
      message: `${what} is not signed: accepted because --allow-insecure-repositories was given`,
    });
    return { url: releaseUrl, text: release.toString("utf8"), signers: [] };
  }
  try {
    if (!signature) {
      throw new SutureError(
        "UNTRUSTED",
        `${what} is not signed (no InRelease, no Release.gpg): apt refuses unsigned repositories; sign the repository or mark the source trusted=yes`,
      );
    }
    const signers = await verifyDetached(release, signature, options.keyring, { ...verify, what });
    return { url: releaseUrl, text: release.toString("utf8"), signers };
  } catch (e) {
    if (!(source.trusted && isSutureError(e, "UNTRUSTED"))) throw e;
    options.progress?.({
      type: "warning",
      message: `${(e as Error).message} (accepted: the source is marked trusted=yes)`,
    });
    return { url: releaseUrl, text: release.toString("utf8"), signers: [] };
  }
}

/** Parse a (signed) Release text. Throws UNTRUSTED when it lists no SHA256 checksums. */
export function parseRelease(text: string, what = "Release"): ReleaseInfo {
  const p = parseControl(text)[0];
  if (!p) throw new SutureError("UNTRUSTED", `${what} is empty: the repository metadata is broken`);
  const files = new Map<string, ExpectedChecksum>();
  for (const line of (field(p, "SHA256") ?? "").split("\n")) {
    const m = /^\s*([0-9a-fA-F]{64})\s+(\d+)\s+(\S+)\s*$/.exec(line);
    if (m) files.set(m[3]!, { sha256: m[1]!.toLowerCase(), size: Number(m[2]) });
  }
  if (!files.size) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} lists no SHA256 checksums (only weak or no hashes): apt-secure cannot verify its indexes; use a repository with SHA256`,
    );
  }
  const words = (name: string) => (field(p, name) ?? "").split(/\s+/).filter(Boolean);
  const info: ReleaseInfo = {
    acquireByHash: /^yes$/i.test(field(p, "Acquire-By-Hash") ?? ""),
    architectures: words("Architectures"),
    components: words("Components"),
    archAllInArchIndexes: /\bPackages\b/.test(field(p, "No-Support-for-Architecture-all") ?? ""),
    files,
    paragraph: p,
  };
  for (const k of ["origin", "label", "suite", "codename", "version"] as const) {
    const v = field(p, k);
    if (v !== undefined) info[k] = v;
  }
  const date = parseDate(field(p, "Date"), "Date", what);
  if (date) info.date = date;
  const validUntil = parseDate(field(p, "Valid-Until"), "Valid-Until", what);
  if (validUntil) info.validUntil = validUntil;
  return info;
}

function parseDate(value: string | undefined, name: string, what: string): Date | undefined {
  if (value === undefined) return undefined;
  const d = parseRfc2822(value.trim());
  if (!d) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} has an unreadable ${name} ${quoteUntrusted(value)}: the repository metadata is broken`,
    );
  }
  return d;
}

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/** `[Day, ]DD Mon YYYY HH:MM[:SS] (UTC|GMT|Z|±HHMM)`, the only date form Release files use. */
function parseRfc2822(value: string): Date | undefined {
  const m =
    /^(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{2}):(\d{2})(?::(\d{2}))?\s+(UTC|GMT|Z|[+-]\d{4})$/.exec(
      value,
    );
  if (!m) return undefined;
  const month = MONTHS.indexOf(m[2]!.toLowerCase());
  if (month < 0) return undefined;
  let ms = Date.UTC(Number(m[3]), month, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6] ?? 0));
  const zone = m[7]!;
  if (/^[+-]/.test(zone)) {
    const offset = (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(3))) * 60_000;
    ms -= zone[0] === "+" ? offset : -offset;
  }
  return Number.isNaN(ms) ? undefined : new Date(ms);
}

function checkValidity(
  release: ReleaseInfo,
  what: string,
  now: Date,
  skewMs: number,
  check: { validUntil: boolean },
): void {
  if (check.validUntil && release.validUntil && now.getTime() > release.validUntil.getTime()) {
    throw new SutureError(
      "UNTRUSTED",
      `${redact(what)} expired on ${release.validUntil.toISOString()} (Valid-Until): the mirror is stale or replaying old metadata; use an up-to-date mirror or check the system clock`,
    );
  }
  if (release.date && release.date.getTime() > now.getTime() + skewMs) {
    throw new SutureError(
      "UNTRUSTED",
      `${redact(what)} is dated ${release.date.toISOString()}, in the future: check the system clock`,
    );
  }
}

interface IndexTarget {
  distUrl: string;
  repoUri: string;
  label: string;
  release: ReleaseInfo;
  stage: Stage;
  component: string;
  arch: string;
  source: AptSource;
  suite: string;
  flat: boolean;
  options: OpenRepositoryOptions;
}

/**
 * Fetch, verify and parse one index. Like apt, a component the suite does not have, or an
 * architecture a component does not carry, is skipped with a warning (undefined), not an error.
 */
async function loadIndex(fetch: HttpFetch, t: IndexTarget): Promise<PackagesIndex | undefined> {
  const dir = t.flat ? "" : `${t.component}/binary-${t.arch}/`;
  const name = COMPRESSED_INDEXES.find((n) => t.release.files.has(dir + n));
  if (!name) {
    if (t.flat) {
      throw new SutureError(
        "NOT_FOUND",
        `${t.label} lists no Packages index in its signed Release: the flat repository is empty or malformed`,
      );
    }
    const known = t.release.components.some((c) => c === t.component || c.endsWith(`/${t.component}`));
    if (t.arch !== "all") {
      t.options.progress?.({
        type: "warning",
        message: known
          ? `skipping ${t.component}/binary-${t.arch}: ${t.label} has no ${t.arch} index for component ${t.component}`
          : `skipping component ${t.component}: ${t.label} does not have it (it has ${t.release.components.join(", ") || "none"})`,
      });
    }
    return undefined;
  }
  const path = dir + name;
  const expected = t.release.files.get(path)!;
  const url = `${t.distUrl}/${path}`;
  const what = `${redact(url)}`;
  const indexesDir = join(t.options.cacheDir, "indexes");
  const progress = t.options.progress;
  const digest = `sha256:${expected.sha256}`;
  const meta = { uri: t.source.uri, suite: t.suite, component: t.component, arch: t.arch, url };
  // The decompressed index and its name table are named by the hash they were verified against:
  // the uncompressed index's own SHA-256 when the signed Release lists it (Debian's do), checked as
  // it is decompressed; else the compressed file's, which was checked before decompressing and so
  // stands for what it decompresses to.
  const plainExpected = name === "Packages" ? expected : t.release.files.get(`${dir}Packages`);
  const key = plainExpected?.sha256 ?? expected.sha256;
  const files = packagesCacheFiles(indexesDir, key);
  const options = { repoUri: t.repoUri, what };
  const cached = await openPackagesCache(files, { ...meta, sha256: expected.sha256, key }, options);
  if (cached) {
    progress?.({ type: "blob", action: "exists", digest, bytes: expected.size, total: expected.size });
    return cached;
  }
  // The compressed index is kept too (except a plain one, which is its own .plain): a damaged
  // table or plain file is then derived again without a download.
  const compressedPath = join(indexesDir, expected.sha256);
  let file = compressedPath;
  if (name !== "Packages" && (await matchesFile(compressedPath, expected))) {
    progress?.({ type: "blob", action: "exists", digest, bytes: expected.size, total: expected.size });
  } else {
    file = await t.stage.temp(`index-${expected.sha256}`);
    const fix =
      "the mirror serves an index that does not match its signed Release; retry later or use another mirror";
    const fetchOptions = {
      signal: t.options.signal,
      retries: t.options.retries,
      what: `index ${path}`,
      fix,
      onBytes: (bytes: number) =>
        progress?.({ type: "blob", action: "download", digest, bytes, total: expected.size }),
    };
    const byHash = `${t.distUrl}/${dir}by-hash/SHA256/${expected.sha256}`;
    try {
      if (!t.release.acquireByHash) throw new SutureError("NOT_FOUND", "by-hash not offered");
      await fetchToFile(fetch, byHash, file, expected, fetchOptions);
    } catch (e) {
      // by-hash is an optimisation against mirror races; a mirror without it still serves the path.
      if (!isSutureError(e, "NOT_FOUND")) throw e;
      await fetchToFile(fetch, url, file, expected, fetchOptions);
    }
    if (name !== "Packages") t.stage.add(file, compressedPath);
  }
  // One pass: decompress straight to the plain file, hash it, and build the name table.
  const plainTmp = await t.stage.temp(`plain-${key}`);
  const built = await buildPackagesCache(
    decompress(createReadStream(file), indexFormat(name), {
      what,
      ...(plainExpected ? { maxBytes: plainExpected.size, fix: "the index is corrupt" } : {}),
    }),
    plainTmp,
    { key, hash: plainExpected !== undefined && name !== "Packages", what },
  );
  if (built.checksum && plainExpected) {
    const err = checksumError(built.checksum, plainExpected, `decompressed ${what}`, "the index is corrupt");
    if (err) throw err;
  }
  const tableTmp = await t.stage.write(`names-${key}`, built.table);
  t.stage.add(plainTmp, files.plain);
  t.stage.add(tableTmp, files.table);
  // Read from the temporaries until the stage commits them (the open file survives the rename).
  const index = await openPackagesCache(
    { plain: plainTmp, table: tableTmp },
    { ...meta, sha256: expected.sha256, key },
    { ...options, table: built.table },
  );
  if (!index) throw new SutureError("INTERNAL", `the name table just built for ${what} does not read back`);
  return index;
}

/** An index's compression, by the name the signed Release lists it under. */
function indexFormat(name: string): DecodeFormat {
  if (name.endsWith(".xz")) return "xz";
  if (name.endsWith(".gz")) return "gzip";
  return "none";
}

async function matchesFile(path: string, expected: ExpectedChecksum): Promise<boolean> {
  try {
    const st = await stat(path);
    if (!st.isFile() || st.size !== expected.size) return false;
  } catch {
    return false;
  }
  // Re-hash: a cache file damaged on disk must not pass for the signed one.
  const actual = await fileChecksum(path);
  return actual.sha256 === expected.sha256;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/**
 * Files written during one operation: temporary until `commit` renames them all into place;
 * `cleanup` removes whatever was not committed. Gives "nothing cached unless everything verified".
 */
export class Stage {
  readonly #tmpDir: string;
  readonly #moves: { from: string; to: string }[] = [];
  readonly #temps = new Set<string>();

  constructor(cacheDir: string) {
    this.#tmpDir = join(cacheDir, "tmp");
  }

  /** A fresh temporary path (its directory exists). */
  async temp(hint: string): Promise<string> {
    await mkdir(this.#tmpDir, { recursive: true });
    const p = join(
      this.#tmpDir,
      `${randomBytes(8).toString("hex")}-${hint.replace(/[^A-Za-z0-9_.-]/g, "_")}`,
    );
    this.#temps.add(p);
    return p;
  }

  async write(hint: string, bytes: Uint8Array): Promise<string> {
    const p = await this.temp(hint);
    await writeFile(p, bytes);
    return p;
  }

  add(from: string, to: string): void {
    this.#moves.push({ from, to });
  }

  async commit(): Promise<void> {
    for (const { from, to } of this.#moves) {
      await mkdir(join(to, ".."), { recursive: true });
      await placeFile(from, to);
      this.#temps.delete(from);
    }
    this.#moves.length = 0;
  }

  async cleanup(): Promise<void> {
    for (const p of this.#temps) await rm(p, { force: true });
    this.#temps.clear();
  }
}
