import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type DecodeFormat, decompressAll } from "../../../archive/compression.ts";
import { field, parseControl } from "../../../distro/dpkg/control.ts";
import { parseRelease, type ReleaseInfo } from "../../../distro/dpkg/repository.ts";
import {
  type AptSource,
  applyMirrors,
  fileAccessFromRoot,
  readAptSources,
} from "../../../distro/dpkg/sources.ts";
import { placeDirectory } from "../../../fs/atomic.ts";
import { readFileCapped } from "../../../fs/read-capped.ts";
import { bytesChecksum, type ExpectedChecksum } from "../../../stream/checksum.ts";
import { imageKeyringProvider, type Keyring } from "../../../trust/keyring.ts";
import { verifyClearsigned, verifyDetached } from "../../../trust/signature.ts";

/**
 * Which of apt's list files suture may keep between sandbox runs, decided before the image's code
 * runs: one release group per signed apt source of the image, with the keys the image trusts for it.
 *
 * apt's lists are written by the image's apt and hooks, so nothing of them is trusted as such: a
 * file is kept (and later handed to another run) only when suture verified it itself, an InRelease
 * (or Release + Release.gpg) by its signature with the group's keys and every other file by the
 * SHA-256 that verified Release lists for it.
 */
export interface ListsTrust {
  groups: readonly ListsGroup[];
  /**
   * SHA-256 over every group's file-name prefix and trusted keys: part of the shared cache's key,
   * so lists are only reused by images that trust the same keys for the same sources.
   */
  fingerprint: string;
}

export interface ListsGroup {
  /** apt's list-file name prefix of the suite, e.g. `deb.debian.org_debian_dists_bookworm_`. */
  prefix: string;
  /** Base URI the suite's Packages `Filename:`s are relative to (`http://deb.debian.org/debian`). */
  repoUri: string;
  keyring: Keyring;
}

/** A list file that verified: its bytes, and the signed Date of its release (its mtime when seeded). */
export interface VerifiedList {
  bytes: Buffer;
  date: Date;
  /** For a Packages index: its uncompressed text (the bytes themselves unless apt stored it compressed). */
  packages?: Buffer;
  /** The group (release) the file belongs to. */
  group: ListsGroup;
}

/**
 * The release groups of the image's apt sources (`root` is the image's root; `mirrors` as with
 * --mirror, since apt then fetches from the mirror and names its files after it). Keys are
 * resolved inside the image as its apt does, before anything of the image runs. Sources that are
 * `trusted=yes`, have no usable keys, or whose suite appears twice with different keys get no
 * group: their files are never cached. Unreadable sources give no groups at all (apt reports them).
 */
export async function listsTrustFor(
  root: string,
  arch: string,
  mirrors?: Readonly<Record<string, string>>,
): Promise<ListsTrust> {
  const files = fileAccessFromRoot(root);
  let sources: AptSource[];
  try {
    sources = await readAptSources(files);
  } catch {
    sources = [];
  }
  if (mirrors) sources = applyMirrors(sources, mirrors);
  const keyringFor = imageKeyringProvider(files);
  const byPrefix = new Map<string, { keyring: Keyring; keysHash: string; repoUri: string } | "conflict">();
  for (const source of sources) {
    if (source.trusted) continue;
    const keyring = await keyringFor(source).catch(() => undefined);
    if (!keyring?.keys.length) continue;
    const keysHash = hashKeys(keyring);
    const url = suiteUrl(source, arch);
    const prefix = aptListName(`${url}/`);
    const repoUri = source.suite.endsWith("/") ? url : source.uri;
    const seen = byPrefix.get(prefix);
    if (seen === undefined) byPrefix.set(prefix, { keyring, keysHash, repoUri });
    else if (seen !== "conflict" && seen.keysHash !== keysHash) byPrefix.set(prefix, "conflict");
  }
  const fingerprint = createHash("sha256");
  const groups: ListsGroup[] = [];
  for (const [prefix, g] of [...byPrefix].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (g === "conflict") continue;
    groups.push({ prefix, repoUri: g.repoUri, keyring: g.keyring });
    fingerprint.update(`${prefix}\n${g.keysHash}\n`);
  }
  return { groups, fingerprint: fingerprint.digest("hex") };
}

/** The URL of a source's signed metadata directory, as apt forms it (see distro/dpkg/repository.ts). */
function suiteUrl(source: AptSource, arch: string): string {
  const suite = source.suite.replaceAll("$(ARCH)", arch);
  if (!suite.endsWith("/")) return `${source.uri}/dists/${suite}`;
  const flatDir = suite.replace(/^\.\//, "").replace(/\/+$/, "");
  return flatDir ? `${source.uri}/${flatDir}` : source.uri;
}

function hashKeys(keyring: Keyring): string {
  const each = keyring.keys.map((k) => createHash("sha256").update(k.write()).digest("hex")).sort();
  return createHash("sha256").update(each.join("\n")).digest("hex");
}

/** Characters apt's URItoFileName percent-quotes (besides controls, space and non-ASCII). */
const APT_QUOTED = new Set('\\|{}[]<>"^~_=!@#$%&*');

/**
 * apt's file name in /var/lib/apt/lists for a URI: scheme and credentials dropped, special
 * characters quoted as `%xx`, then `/` replaced by `_`.
 */
export function aptListName(uri: string): string {
  const noScheme = uri.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//, "");
  const slash = noScheme.indexOf("/");
  const authority = slash < 0 ? noScheme : noScheme.slice(0, slash);
  const rest = slash < 0 ? "" : noScheme.slice(slash);
  const host = authority.includes("@") ? authority.slice(authority.lastIndexOf("@") + 1) : authority;
  let quoted = "";
  for (const ch of Buffer.from(host + rest, "utf8")) {
    const c = String.fromCharCode(ch);
    quoted += ch <= 0x20 || ch >= 0x7f || APT_QUOTED.has(c) ? `%${ch.toString(16).padStart(2, "0")}` : c;
  }
  return quoted.replaceAll("/", "_");
}

/** Lists bigger than this are not cached (Debian's largest, main's Packages, is ~50 MB). */
const MAX_LIST_BYTES = 512 * 1024 * 1024;
const MAX_RELEASE_BYTES = 32 * 1024 * 1024;

/**
 * The files of an apt lists directory that verify against `trust` (see ListsTrust), by name.
 * Only regular files directly in `dir` are opened, never through a symlink; a release past its
 * Valid-Until is dropped whole. Anything that does not verify is simply left out.
 */
export async function verifiedLists(
  dir: string,
  trust: ListsTrust,
  now = new Date(),
): Promise<Map<string, VerifiedList>> {
  const out = new Map<string, VerifiedList>();
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  } catch {
    return out;
  }
  const present = new Set(names);
  for (const group of trust.groups) {
    const signed = await verifiedRelease(dir, group, present, now);
    if (!signed) continue;
    const { release, files } = signed;
    const date = release.date ?? new Date(0);
    for (const [name, bytes] of files) out.set(name, { bytes, date, group });
    const expected = new Map<string, ExpectedChecksum>();
    for (const [path, sum] of release.files) expected.set(group.prefix + aptListName(path), sum);
    for (const name of names) {
      if (!name.startsWith(group.prefix) || out.has(name)) continue;
      const index = await verifiedIndex(dir, name, expected);
      if (index) out.set(name, { ...index, date, group });
    }
  }
  return out;
}

async function verifiedRelease(
  dir: string,
  group: ListsGroup,
  present: ReadonlySet<string>,
  now: Date,
): Promise<{ release: ReleaseInfo; files: [string, Buffer][] } | undefined> {
  const what = `${group.prefix}InRelease`;
  try {
    let text: string;
    let files: [string, Buffer][];
    if (present.has(`${group.prefix}InRelease`)) {
      const bytes = await readRegularFile(join(dir, `${group.prefix}InRelease`), MAX_RELEASE_BYTES);
      if (!bytes) return undefined;
      text = (await verifyClearsigned(bytes, group.keyring, { now, what })).text;
      files = [[`${group.prefix}InRelease`, bytes]];
    } else if (present.has(`${group.prefix}Release`) && present.has(`${group.prefix}Release.gpg`)) {
      const bytes = await readRegularFile(join(dir, `${group.prefix}Release`), MAX_RELEASE_BYTES);
      const sig = await readRegularFile(join(dir, `${group.prefix}Release.gpg`), MAX_RELEASE_BYTES);
      if (!bytes || !sig) return undefined;
      await verifyDetached(bytes, sig, group.keyring, { now, what: `${group.prefix}Release` });
      text = bytes.toString("utf8");
      files = [
        [`${group.prefix}Release`, bytes],
        [`${group.prefix}Release.gpg`, sig],
      ];
    } else {
      return undefined;
    }
    const release = parseRelease(text, what);
    // An expired release is what a replay looks like: apt would refuse it, so it is not kept.
    if (release.validUntil && now.getTime() > release.validUntil.getTime()) return undefined;
    return { release, files };
  } catch {
    return undefined;
  }
}

/** Extensions apt gives indexes it stores compressed (Acquire::GzipIndexes), with their formats. */
const LIST_FORMATS: Record<string, DecodeFormat> = {
  ".gz": "gzip",
  ".xz": "xz",
  ".lz4": "lz4",
  ".zst": "zstd",
};

/** A list file decompressed (at most `max` bytes); undefined on any failure: it is then simply not kept. */
function decodeList(name: string, ext: string, bytes: Buffer, max: number): Promise<Buffer | undefined> {
  return decompressAll(bytes, LIST_FORMATS[ext]!, { what: name, maxBytes: max }).catch(() => undefined);
}

/**
 * A list file's bytes when they are what the verified release lists under its name; for a file
 * apt stored recompressed (`…_Packages.lz4`), when its decompressed bytes are the listed `Packages`.
 * A Packages index comes with its uncompressed text.
 */
async function verifiedIndex(
  dir: string,
  name: string,
  expected: ReadonlyMap<string, ExpectedChecksum>,
): Promise<{ bytes: Buffer; packages?: Buffer } | undefined> {
  const ext = Object.keys(LIST_FORMATS).find((e) => name.endsWith(e));
  const isPackages = /(^|_)Packages$/.test(ext ? name.slice(0, -ext.length) : name);
  const direct = expected.get(name);
  if (direct) {
    const bytes = await readRegularFile(join(dir, name), direct.size);
    if (!bytes || !matches(bytes, direct)) return undefined;
    if (!isPackages) return { bytes };
    // Verified as it is: its text, if it cannot be decoded here, just is not used for look-ups.
    return { bytes, packages: ext ? await decodeList(name, ext, bytes, MAX_LIST_BYTES) : bytes };
  }
  const plain = ext && expected.get(name.slice(0, -ext.length));
  if (!ext || !plain) return undefined;
  const bytes = await readRegularFile(join(dir, name), MAX_LIST_BYTES);
  if (!bytes) return undefined;
  const decoded = await decodeList(name, ext, bytes, plain.size);
  if (!decoded || !matches(decoded, plain)) return undefined;
  return isPackages ? { bytes, packages: decoded } : { bytes };
}

/**
 * The size and SHA-256 a verified Packages index gives for the .deb at `uri` (as apt-get
 * --print-uris names it), or undefined when no verified index of a suite under that URI lists it.
 */
export function packageFileChecksum(
  lists: ReadonlyMap<string, VerifiedList>,
  uri: string,
): ExpectedChecksum | undefined {
  for (const { packages, group } of lists.values()) {
    if (!packages || !uri.startsWith(`${group.repoUri}/`)) continue;
    let path: string;
    try {
      path = decodeURIComponent(uri.slice(group.repoUri.length + 1));
    } catch {
      return undefined;
    }
    const line = `Filename: ${path}\n`;
    let at = packages.indexOf(`\n${line}`);
    if (at >= 0) at += 1;
    else if (packages.subarray(0, line.length).toString("utf8") === line) at = 0;
    else continue;
    const previous = packages.lastIndexOf("\n\n", at);
    const start = previous < 0 ? 0 : previous + 2;
    const end = packages.indexOf("\n\n", at);
    // Found by a byte search (the index is tens of MB); the one paragraph is read as deb822.
    const [paragraph] = parseControl(
      packages.subarray(start, end < 0 ? packages.length : end).toString("utf8"),
    );
    const sha256 = paragraph && field(paragraph, "SHA256");
    const size = paragraph && field(paragraph, "Size");
    if (sha256 && /^[0-9a-f]{64}$/.test(sha256) && size && /^\d+$/.test(size))
      return { sha256, size: Number(size) };
  }
  return undefined;
}

function matches(bytes: Buffer, expected: ExpectedChecksum): boolean {
  const actual = bytesChecksum(bytes);
  return actual.size === expected.size && actual.sha256 === expected.sha256.toLowerCase();
}

/**
 * A regular file's bytes, opened without following a symlink and without blocking on a FIFO the
 * image may have put in its place; undefined when it is anything else or larger than `max`.
 */
async function readRegularFile(path: string, max: number): Promise<Buffer | undefined> {
  return readFileCapped(path, { limit: max, what: path, noFollow: true, regularOnly: true }).catch(
    () => undefined,
  );
}

/**
 * Fill a run's private lists dir from the shared cache with the files that still verify, each
 * dated with its release's signed Date: apt's If-Modified-Since then asks for anything newer, so
 * a replayed old release cannot freeze what apt sees. Returns how many files were seeded.
 */
export async function seedLists(cacheDir: string, privateDir: string, trust: ListsTrust): Promise<number> {
  const lists = await verifiedLists(cacheDir, trust);
  await mkdir(join(privateDir, "partial"), { recursive: true });
  for (const [name, { bytes, date }] of lists) {
    const dest = join(privateDir, name);
    await writeFile(dest, bytes);
    await utimes(dest, date, date);
  }
  return lists.size;
}

/**
 * Replace the shared lists cache with `lists` (verified with verifiedLists; the caller holds the
 * cache's lock). Written into a new directory, then swapped in with renames, so a reader sees the
 * old set, nothing, or the new set. Nothing verified: the cache is left as it was.
 */
export async function saveLists(lists: ReadonlyMap<string, VerifiedList>, cacheDir: string): Promise<number> {
  if (!lists.size) return 0;
  const fresh = `${cacheDir}.new-${randomBytes(6).toString("hex")}`;
  try {
    await mkdir(fresh, { recursive: true });
    for (const [name, { bytes }] of lists) await writeFile(join(fresh, name), bytes);
    await placeDirectory(fresh, cacheDir);
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
  return lists.size;
}
