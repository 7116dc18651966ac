/**
 * The Alpine lab's signed test repository: Alpine's own packages, repackaged from the minirootfs
 * tarballs (no Alpine repository is reachable from the lab machines).
 *
 * Every package installed in the 3.20.3 minirootfs is in it: the twelve with a newer build in the
 * edge minirootfs (20240923) at edge's version, the others at 3.20.3's, so the index is complete
 * like a real one (a repository keeps only the newest build). Each package is rebuilt from its
 * installed-db record: its `F:` directories with their `M:` owners and modes, its `R:` files with
 * their `a:` owners and modes, the bytes read from the rootfs tarball and checked against the
 * record's `Z:` checksum, its real install scripts from the rootfs's `scripts.tar` and its
 * triggers from `triggers`. The `.apk` v2 files (signature, control with `.PKGINFO`, data with
 * `APK-TOOLS.checksum.SHA1` PAX records) are signed with the lab key; `APKINDEX.tar.gz` is made by
 * the REAL `apk index` (apk-tools 2.14.4 of the 3.20.3 minirootfs, run in a chroot under
 * `unshare --net --pid`) and then signed with the lab key as `abuild-sign` does.
 *
 * Cache (`labCacheDir()`, see cache.ts; lock + atomic rename):
 *   alpineLabKeys-v1/                      the lab and "other" RSA keys (made once)
 *   alpineLabRepo-<signer>-<hash16>/repo/  v3.20/main/{x86_64,aarch64}/{APKINDEX.tar.gz,*.apk}
 *                                    parts/ each index's and package's unsigned members (tamper input)
 * The hash covers the fixtures, the signer's public key and this file's and apk.ts's bytes.
 */
import { execFile } from "node:child_process";
import { createHash, createPrivateKey, generateKeyPairSync } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, normalize } from "node:path";
import { promisify } from "node:util";
import { gunzipSync, gzipSync } from "node:zlib";
import { readTar } from "../../src/archive/tar/read.ts";
import { type InstalledPackage, parseInstalledDb } from "../../src/distro/apk/installed-db.ts";
import { SutureError } from "../../src/errors/errors.ts";
import { minirootfs, type RootfsEntry, readRootfsEntries } from "./alpine-rootfs.ts";
import { type ApkTestKey, buildApk, type SegmentFile, signatureMember } from "./apk.ts";
import { acquireLock, labCacheDir, releaseLock } from "./cache.ts";

const exec = promisify(execFile);

export type AlpineArch = "x86_64" | "aarch64";
export const ALPINE_ARCHES: readonly AlpineArch[] = ["x86_64", "aarch64"];

/** The main repository the lab image lists first in /etc/apk/repositories (as Alpine's image does). */
export const ALPINE_REPO_URL = "https://dl-cdn.alpinelinux.org/alpine/v3.20/main";
/** The image's second repository; the test repository serves it empty (it has no package the image has). */
export const ALPINE_COMMUNITY_URL = "https://dl-cdn.alpinelinux.org/alpine/v3.20/community";
/** Where the test repository serves them: the same paths below the server's root. */
const REPO_PATH = "v3.20/main";
const COMMUNITY_PATH = "v3.20/community";

const BASE_RELEASE = "3.20.3";
const NEWER_RELEASE = "20240923";
/** Bump when the build below changes in a way this file's bytes do not show (they are hashed too). */
const REPO_BUILDER = 1;

// ---------------------------------------------------------------------------------------------
// Keys

export interface AlpineLabKey extends ApkTestKey {
  /** Host path of the public key, named as apk matches it (`NAME.rsa.pub`). */
  publicKeyFile: string;
}

/**
 * One promise per key for this process (a cache entry is built or read once); a failure is
 * forgotten so that the next call tries again.
 */
export function memoized<T>(memo: Map<string, Promise<T>>, key: string, make: () => Promise<T>): Promise<T> {
  let p = memo.get(key);
  if (!p) {
    p = make();
    memo.set(key, p);
    p.catch(() => memo.delete(key));
  }
  return p;
}

const keyMemo = new Map<string, Promise<{ lab: AlpineLabKey; other: AlpineLabKey }>>();

/**
 * The lab's signing key (the image trusts it: its public half is in the image's /etc/apk/keys)
 * and an "other" key nobody trusts. Made once per cache and kept there, so the images and the
 * repository built from them agree.
 */
export function alpineLabKeys(): Promise<{ lab: AlpineLabKey; other: AlpineLabKey }> {
  const dir = join(labCacheDir(), "alpineLabKeys-v1");
  return memoized(keyMemo, dir, () => loadOrMakeKeys(dir));
}

async function loadOrMakeKeys(dir: string): Promise<{ lab: AlpineLabKey; other: AlpineLabKey }> {
  await cachedEntry(dir, "keys.json", async (staged) => {
    const names: Record<string, string> = {};
    for (const role of ["lab", "other"]) {
      const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
      const publicPem = publicKey.export({ type: "spki", format: "pem" }).toString();
      const name = `suture-${role}-${sha256(publicPem).slice(0, 8)}.rsa.pub`;
      await writeFile(join(staged, `${role}.rsa`), privateKey.export({ type: "pkcs8", format: "pem" }));
      await writeFile(join(staged, name), publicPem);
      names[role] = name;
    }
    await writeFile(join(staged, "keys.json"), JSON.stringify(names));
  });
  const names = JSON.parse(await readFile(join(dir, "keys.json"), "utf8")) as Record<string, string>;
  const load = async (role: string): Promise<AlpineLabKey> => {
    const name = names[role]!;
    const publicKeyFile = join(dir, name);
    return {
      name,
      privateKey: createPrivateKey(await readFile(join(dir, `${role}.rsa`))),
      publicPem: await readFile(publicKeyFile, "utf8"),
      publicKeyFile,
    };
  };
  return { lab: await load("lab"), other: await load("other") };
}

// ---------------------------------------------------------------------------------------------
// Building the repository

export interface AlpineRepoPackage {
  name: string;
  version: string;
  /** The release whose rootfs it was rebuilt from. */
  from: "3.20.3" | "edge";
  /** File name in `<repo>/<arch>/`. */
  file: string;
}

export interface BuiltAlpineRepo {
  /** The directory served as the server's root (holds `v3.20/main/<arch>/`). */
  root: string;
  /** Unsigned members, for tampering: `parts/<arch>/APKINDEX.unsigned.tar.gz`, `<file>.control.gz`, `<file>.data.gz`. */
  parts: string;
  packages: Record<AlpineArch, AlpineRepoPackage[]>;
  key: AlpineLabKey;
}

const repoMemo = new Map<string, Promise<BuiltAlpineRepo>>();

/** The repository signed by `signer` (cached; built in seconds when absent). */
export function alpineTestRepoFiles(signer: "lab" | "other" = "lab"): Promise<BuiltAlpineRepo> {
  const k = `${labCacheDir()}\0${signer}`;
  return memoized(repoMemo, k, () => obtainRepo(signer));
}

async function obtainRepo(signer: "lab" | "other"): Promise<BuiltAlpineRepo> {
  const key = (await alpineLabKeys())[signer];
  const hash = sha256(
    JSON.stringify({
      builder: REPO_BUILDER,
      signer: key.publicPem,
      fixtures: await Promise.all(
        ALPINE_ARCHES.flatMap((a) => [minirootfs(BASE_RELEASE, a), minirootfs(NEWER_RELEASE, a)]).map(
          async (f) => sha256(await readFile(f)),
        ),
      ),
      code: [
        sha256(await readFile(new URL(import.meta.url))),
        sha256(await readFile(new URL("./apk.ts", import.meta.url))),
      ],
    }),
  );
  const entry = join(labCacheDir(), `alpineLabRepo-${signer}-${hash.slice(0, 16)}`);
  await cachedEntry(entry, "packages.json", (staged) => buildRepo(staged, key));
  return {
    root: join(entry, "repo"),
    parts: join(entry, "parts"),
    packages: JSON.parse(await readFile(join(entry, "packages.json"), "utf8")),
    key,
  };
}

/**
 * The cache entry `entry` once `marker` is in it: built by `build` into a temporary sibling under
 * the entry's lock (cache.ts), then renamed into place, so readers never see half an entry.
 */
export async function cachedEntry(
  entry: string,
  marker: string,
  build: (staged: string) => Promise<void>,
): Promise<void> {
  const done = () => Promise.resolve(existsSync(join(entry, marker)));
  if (await done()) return;
  await mkdir(labCacheDir(), { recursive: true });
  const lock = `${entry}.lock`;
  if (!(await acquireLock(lock, done))) return;
  try {
    if (await done()) return;
    const staged = await mkdtemp(`${entry}.build-`);
    try {
      await build(staged);
      // umoci writes blobs 0600; the cache is shared by test processes that may not run as root.
      await run("chmod", ["-R", "a+rX", staged]);
      await rename(staged, entry);
    } finally {
      await rm(staged, { recursive: true, force: true });
    }
  } finally {
    await releaseLock(lock);
  }
}

export interface RootfsView {
  entries: Map<string, RootfsEntry>;
  packages: InstalledPackage[];
  /** scripts.tar members by name (`<pkg>-<ver>.<C:>.<script>`). */
  scripts: Map<string, Buffer>;
  /** `C:` checksum → trigger paths, from /lib/apk/db/triggers. */
  triggers: Map<string, string[]>;
}

/** A rootfs tarball's members and its apk database: installed records, scripts, triggers. */
export async function readRootfsView(tarball: string): Promise<RootfsView> {
  const entries = await readRootfsEntries(tarball);
  const text = (p: string) => entries.get(p)?.data?.toString("utf8") ?? "";
  const packages = parseInstalledDb(text("lib/apk/db/installed"), `${tarball}: lib/apk/db/installed`);
  const scripts = new Map<string, Buffer>();
  const scriptsTar = entries.get("lib/apk/db/scripts.tar")?.data;
  if (scriptsTar) {
    for await (const m of readTar([scriptsTar])) {
      const chunks: Buffer[] = [];
      for await (const c of m.body) chunks.push(c);
      scripts.set(m.header.path, Buffer.concat(chunks));
    }
  }
  const triggers = new Map<string, string[]>();
  for (const line of text("lib/apk/db/triggers").split("\n")) {
    const [checksum, ...paths] = line.split(" ").filter(Boolean);
    if (checksum) triggers.set(checksum, paths);
  }
  return { entries, packages, scripts, triggers };
}

async function buildRepo(staged: string, key: AlpineLabKey): Promise<void> {
  const packages = {} as Record<AlpineArch, AlpineRepoPackage[]>;
  const chroot = join(staged, "chroot");
  // The real apk of the 3.20.3 image (the host's arch) indexes both architectures.
  await mkdir(chroot);
  await run("tar", ["-xzf", minirootfs(BASE_RELEASE, "x86_64"), "-C", chroot, "--numeric-owner"]);
  await writeFile(join(chroot, "etc/apk/keys", key.name), key.publicPem);
  for (const arch of ALPINE_ARCHES) {
    const base = await readRootfsView(minirootfs(BASE_RELEASE, arch));
    const newer = await readRootfsView(minirootfs(NEWER_RELEASE, arch));
    const dir = join(staged, "repo", REPO_PATH, arch);
    const parts = join(staged, "parts", arch);
    const inChroot = join(chroot, "repo", arch);
    await mkdir(dir, { recursive: true });
    await mkdir(parts, { recursive: true });
    await mkdir(inChroot, { recursive: true });
    packages[arch] = [];
    for (const old of base.packages) {
      const edge = newer.packages.find((p) => p.info.name === old.info.name);
      const useEdge = edge !== undefined && edge.info.version !== old.info.version;
      const pkg = useEdge ? edge : old;
      const built = repackage(pkg, useEdge ? newer : base, key);
      const file = `${pkg.info.name}-${pkg.info.version}.apk`;
      await writeFile(join(dir, file), built.bytes);
      await writeFile(join(inChroot, file), built.bytes);
      await writeFile(join(parts, `${file}.control.gz`), built.control);
      await writeFile(join(parts, `${file}.data.gz`), built.data);
      packages[arch].push({
        name: pkg.info.name,
        version: pkg.info.version,
        from: useEdge ? "edge" : "3.20.3",
        file,
      });
    }
    await inChrootOf(chroot, [
      "/bin/sh",
      "-c",
      `cd /repo/${arch} && apk index --quiet -d 'suture lab: Alpine v3.20 main (edge builds) ${arch}' -o /repo/APKINDEX.${arch}.tar.gz *.apk`,
    ]);
    const unsigned = await readFile(join(chroot, "repo", `APKINDEX.${arch}.tar.gz`));
    await writeFile(join(parts, "APKINDEX.unsigned.tar.gz"), unsigned);
    await writeFile(join(dir, "APKINDEX.tar.gz"), Buffer.concat([signatureMember(unsigned, key), unsigned]));
    // community: a signed index of no packages, so an image listing it (as Alpine's does) updates cleanly.
    await inChrootOf(chroot, [
      "/sbin/apk",
      "index",
      "--quiet",
      "-d",
      `suture lab: Alpine v3.20 community (empty) ${arch}`,
      "-o",
      `/repo/APKINDEX.community.${arch}.tar.gz`,
    ]);
    const community = await readFile(join(chroot, "repo", `APKINDEX.community.${arch}.tar.gz`));
    await mkdir(join(staged, "repo", COMMUNITY_PATH, arch), { recursive: true });
    await writeFile(
      join(staged, "repo", COMMUNITY_PATH, arch, "APKINDEX.tar.gz"),
      Buffer.concat([signatureMember(community, key), community]),
    );
  }
  await rm(chroot, { recursive: true, force: true });
  await writeFile(join(staged, "packages.json"), JSON.stringify(packages, null, 1));
}

/** Runs a program of the extracted 3.20.3 rootfs in it: chroot, no network, own pid namespace. */
function inChrootOf(root: string, args: string[]): Promise<string> {
  return run("unshare", ["--net", "--pid", "--fork", "chroot", root, ...args]);
}

/** `.PKGINFO` keys by the installed-db letter they come from, in abuild's order. */
const PKGINFO_KEYS: readonly (readonly [letter: string, key: string, split: boolean])[] = [
  ["P", "pkgname", false],
  ["V", "pkgver", false],
  ["T", "pkgdesc", false],
  ["U", "url", false],
  ["t", "builddate", false],
  ["I", "size", false],
  ["A", "arch", false],
  ["o", "origin", false],
  ["c", "commit", false],
  ["m", "maintainer", false],
  ["k", "provider_priority", false],
  ["q", "replaces_priority", false],
  ["L", "license", false],
  ["r", "replaces", true],
  ["D", "depend", true],
  ["p", "provides", true],
  ["i", "install_if", false],
];
const SCRIPT_SUFFIXES = [
  "pre-install",
  "post-install",
  "pre-upgrade",
  "post-upgrade",
  "pre-deinstall",
  "post-deinstall",
  "trigger",
];

const q1 = (bytes: Buffer | string) => `Q1${createHash("sha1").update(bytes).digest("base64")}`;

/** One installed package rebuilt as a signed apk v2 package from the rootfs it is installed in. */
export function repackage(pkg: InstalledPackage, rootfs: RootfsView, key: ApkTestKey) {
  const field = (letter: string) => pkg.fields.find(([l]) => l === letter)?.[1];
  const builddate = Number(field("t") ?? 0);
  const where = `${pkg.info.name}-${pkg.info.version}`;
  const lines = ["# Generated by the suture lab (repackaged from an Alpine minirootfs)"];
  for (const [letter, key, split] of PKGINFO_KEYS) {
    const value = field(letter);
    if (value === undefined) continue;
    for (const v of split ? value.split(" ").filter(Boolean) : [value]) lines.push(`${key} = ${v}`);
  }
  const checksum = field("C");
  const triggers = checksum ? rootfs.triggers.get(checksum) : undefined;
  if (triggers?.length) lines.push(`triggers = ${triggers.join(" ")}`);
  const scripts: SegmentFile[] = [];
  for (const suffix of SCRIPT_SUFFIXES) {
    const script = rootfs.scripts.get(`${where}.${checksum}.${suffix}`);
    if (script) scripts.push({ name: `.${suffix}`, data: script, mode: 0o755, mtime: builddate });
  }
  const files: SegmentFile[] = [];
  for (const dir of pkg.dirs) {
    if (dir.path !== "")
      files.push({
        name: dir.path,
        type: "directory",
        mode: dir.acl?.mode ?? 0o755,
        uid: dir.acl?.uid ?? 0,
        gid: dir.acl?.gid ?? 0,
        mtime: builddate,
      });
    for (const f of dir.files) {
      const path = dir.path === "" ? f.name : `${dir.path}/${f.name}`;
      const e = rootfs.entries.get(path);
      const owner = { uid: f.acl?.uid ?? 0, gid: f.acl?.gid ?? 0, mtime: builddate };
      let content: Buffer | string;
      if (e?.type === "symlink") {
        content = e.linkname!;
        files.push({ name: path, type: "symlink", linkname: content, mode: f.acl?.mode ?? 0o777, ...owner });
      } else if (e?.type === "file") {
        content = packagedBytes(path, e.data!, f.checksum);
        files.push({ name: path, data: content, mode: f.acl?.mode ?? 0o644, ...owner });
      } else {
        throw new SutureError("INTERNAL", `${where}: ${path} is not a file or symlink in the rootfs`);
      }
      if (f.checksum !== undefined && q1(content) !== f.checksum)
        throw new SutureError(
          "INTERNAL",
          `${where}: ${path} in the rootfs does not match its installed-db checksum ${f.checksum}`,
        );
      files.at(-1)!.pax = { "APK-TOOLS.checksum.SHA1": createHash("sha1").update(content).digest("hex") };
    }
  }
  return buildApk({ pkginfo: `${lines.join("\n")}\n`, scripts, files, key });
}

/**
 * A file's bytes as its package shipped them. Alpine's minirootfs build edits one packaged file
 * after installing: it locks root's empty password in /etc/shadow (`root::` -> `root:*:`), which
 * is why its `Z:` does not match the rootfs (as in every Alpine image). Undone here, and only
 * when that gives back the recorded checksum.
 */
function packagedBytes(path: string, bytes: Buffer, checksum: string | undefined): Buffer {
  if (path !== "etc/shadow" || checksum === undefined || q1(bytes) === checksum) return bytes;
  const unlocked = Buffer.from(bytes.toString("utf8").replace(/^root:\*:/, "root::"));
  return q1(unlocked) === checksum ? unlocked : bytes;
}

// ---------------------------------------------------------------------------------------------
// Serving

export type AlpineRepoTamper =
  /** The index's bytes changed after signing (its signature no longer verifies). */
  | "index-bytes"
  /** Packages whose data member was changed (no longer matching `.PKGINFO`'s datahash). */
  | "package-data"
  /** Packages whose `.PKGINFO` was changed and re-signed (no longer matching the index's `C:`). */
  | "package-control";

export interface AlpineTestRepoOptions {
  /** Who signed the index and packages: the lab key the image trusts (default) or another one. */
  signWith?: "lab" | "other";
  tamper?: AlpineRepoTamper;
  /** The packages `package-*` tampering applies to (default: every package). */
  tamperPackages?: readonly string[];
}

export interface AlpineTestRepo {
  /** The repository URL, like http://127.0.0.1:PORT/v3.20/main. */
  url: string;
  /** `${ALPINE_REPO_URL}=${url}`, for --mirror. */
  mirrorFlag: string;
  /** The community repository the image also lists (served with an empty index), like http://127.0.0.1:PORT/v3.20/community. */
  communityUrl: string;
  /**
   * --mirror values for every repository the lab image lists (main and community), for an engine
   * that must reach all of them (the image's own `apk update` fails on an unreachable one).
   */
  mirrorFlags: string[];
  /** The signer's key name (`NAME.rsa.pub`) and the host path of its public key. */
  keyName: string;
  publicKeyFile: string;
  /** What the repository holds, per architecture. */
  packages: Record<AlpineArch, AlpineRepoPackage[]>;
  /** Paths requested so far (`/v3.20/main/x86_64/APKINDEX.tar.gz`), in order. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Serves the test repository on 127.0.0.1 (a static `node:http` server; 404 for anything else).
 * With `tamper`, a private copy is served with the damage applied; the cache is not touched.
 */
export async function startAlpineTestRepo(options: AlpineTestRepoOptions = {}): Promise<AlpineTestRepo> {
  const built = await alpineTestRepoFiles(options.signWith ?? "lab");
  let root = built.root;
  let scratch: string | undefined;
  if (options.tamper) {
    scratch = await mkdtemp(join(labCacheDir(), ".alpine-tampered-"));
    root = join(scratch, "repo");
    await cp(built.root, root, { recursive: true });
    await applyTamper(root, built, options.tamper, options.tamperPackages);
  }
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? "/").split("?")[0]!);
    requests.push(path);
    const rel = normalize(path).replace(/^\/+/, "");
    if (rel.startsWith("..") || req.method !== "GET") {
      res.writeHead(404).end();
      return;
    }
    readFile(join(root, rel)).then(
      (bytes) => {
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes.length });
        res.end(bytes);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const url = `${origin}/${REPO_PATH}`;
  const communityUrl = `${origin}/${COMMUNITY_PATH}`;
  return {
    url,
    mirrorFlag: `${ALPINE_REPO_URL}=${url}`,
    communityUrl,
    mirrorFlags: [`${ALPINE_REPO_URL}=${url}`, `${ALPINE_COMMUNITY_URL}=${communityUrl}`],
    keyName: built.key.name,
    publicKeyFile: built.key.publicKeyFile,
    packages: built.packages,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (scratch) await rm(scratch, { recursive: true, force: true });
    },
  };
}

async function applyTamper(
  root: string,
  built: BuiltAlpineRepo,
  tamper: AlpineRepoTamper,
  only: readonly string[] | undefined,
): Promise<void> {
  for (const arch of ALPINE_ARCHES) {
    const dir = join(root, REPO_PATH, arch);
    const parts = join(built.parts, arch);
    if (tamper === "index-bytes") {
      // Keep the signature; change one letter of the index text inside the signed member.
      const unsigned = await readFile(join(parts, "APKINDEX.unsigned.tar.gz"));
      const tar = gunzipSync(unsigned);
      const at = tar.indexOf("\nT:") + 3;
      tar[at] = tar[at]! ^ 0x20;
      const signed = await readFile(join(dir, "APKINDEX.tar.gz"));
      const signatureBytes = signed.subarray(0, signed.length - unsigned.length);
      await writeFile(join(dir, "APKINDEX.tar.gz"), Buffer.concat([signatureBytes, gzipSync(tar)]));
      continue;
    }
    for (const p of built.packages[arch]) {
      if (only && !only.includes(p.name)) continue;
      let control = await readFile(join(parts, `${p.file}.control.gz`));
      let data = await readFile(join(parts, `${p.file}.data.gz`));
      if (tamper === "package-data") {
        // One byte of the first file's content (or of the last header if it has none).
        const tar = gunzipSync(data);
        const at = firstFileByte(tar);
        tar[at] = tar[at]! ^ 0x01;
        data = gzipSync(tar);
      } else {
        const tar = gunzipSync(control);
        const at = tar.indexOf("pkgdesc = ") + 10;
        tar[at] = tar[at]! ^ 0x20;
        control = gzipSync(tar);
      }
      await writeFile(join(dir, p.file), Buffer.concat([signatureMember(control, built.key), control, data]));
    }
  }
  await chmod(root, 0o755);
}

/** Offset of the first content byte of the first non-empty regular file of a tar. */
function firstFileByte(tar: Buffer): number {
  let off = 0;
  while (off + 512 <= tar.length) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const size = Number.parseInt(
      header.subarray(124, 136).toString("latin1").replace(/\0.*$/s, "").trim() || "0",
      8,
    );
    const flag = String.fromCharCode(header[156]!);
    if ((flag === "0" || flag === "\0") && size > 0) return off + 512;
    off += 512 + Math.ceil(size / 512) * 512;
  }
  throw new SutureError("INTERNAL", "no regular file with content in the package's data tar");
}

// ---------------------------------------------------------------------------------------------

/** Runs a host tool of the lab build; its stdout. Failure: IO naming the tool and its last stderr line. */
async function run(cmd: string, args: string[]): Promise<string> {
  try {
    return (await exec(cmd, args, { maxBuffer: 64 << 20 })).stdout;
  } catch (e) {
    const err = e as { code?: unknown; stderr?: string; message: string };
    const why =
      err.code === "ENOENT"
        ? `${cmd} is not installed; run scripts/install-system-deps.sh as root`
        : `${(err.stderr ?? "").trim().split("\n").at(-1) || err.message}; the Alpine lab build needs root`;
    throw new SutureError("IO", `building the Alpine lab: ${cmd} ${args[0] ?? ""} failed: ${why}`, {
      cause: e,
    });
  }
}

function sha256(bytes: Buffer | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export { run as runLabTool, sha256 as labSha256 };
