/**
 * The sandbox engine's shared apt lists cache keeps only what suture verified itself: real
 * bookworm-security metadata from the Debian archive, laid out as apt names it in
 * /var/lib/apt/lists, checked against the keys the image trusts.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  aptListName,
  type ListsTrust,
  listsTrustFor,
  packageFileChecksum,
  saveLists,
  seedLists,
  verifiedLists,
} from "../../src/patch/engines/dpkg/apt-lists.ts";
import { archiveMirror } from "../lab/archive-mirror.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("loopback");

const run = promisify(execFile);
const SUITE_URL = "http://deb.debian.org/debian-security/dists/bookworm-security";
const PREFIX = "deb.debian.org_debian-security_dists_bookworm-security_";
const IN_RELEASE = `${PREFIX}InRelease`;
const PACKAGES = `${PREFIX}main_binary-amd64_Packages`;

let work: string;
let inRelease: Buffer;
let packages: Buffer;
let releaseDate: Date;

/** GET from the Debian archive, through the lab's recording mirror. */
async function get(url: string): Promise<Buffer> {
  const mirror = await archiveMirror();
  const res = await fetch(url.replace(/^http:\/\/deb\.debian\.org\//, `${mirror.url}/`));
  assert.equal(res.status, 200, `GET ${url}`);
  return Buffer.from(await res.arrayBuffer());
}

/** An image root whose apt trusts `keyring` (a host keyring file) for bookworm-security. */
async function imageRoot(name: string, keyring: string): Promise<string> {
  const root = join(work, name);
  await mkdir(join(root, "etc/apt/sources.list.d"), { recursive: true });
  await mkdir(join(root, "usr/share/keyrings"), { recursive: true });
  await copyFile(keyring, join(root, "usr/share/keyrings/archive.gpg"));
  await writeFile(
    join(root, "etc/apt/sources.list.d/debian.sources"),
    "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/archive.gpg\n",
  );
  return root;
}

/** A lists dir holding `files` (name → bytes). */
async function listsDir(name: string, files: Record<string, Buffer | string>): Promise<string> {
  const dir = join(work, name);
  await mkdir(join(dir, "partial"), { recursive: true });
  for (const [f, bytes] of Object.entries(files)) await writeFile(join(dir, f), bytes);
  return dir;
}

let trust: ListsTrust;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-apt-lists-"));
  inRelease = await get(`${SUITE_URL}/InRelease`);
  const xzFile = join(work, "Packages.xz");
  await writeFile(xzFile, await get(`${SUITE_URL}/main/binary-amd64/Packages.xz`));
  packages = (await run("xz", ["-dc", xzFile], { encoding: "buffer", maxBuffer: 1 << 30 })).stdout;
  releaseDate = new Date(/^Date: (.*)$/m.exec(inRelease.toString("utf8"))![1]!);
  trust = await listsTrustFor(
    await imageRoot("debian", "/usr/share/keyrings/debian-archive-keyring.gpg"),
    "amd64",
  );
});
after(() => rm(work, { recursive: true, force: true }));

test("list file names are apt's: scheme and credentials dropped, specials quoted, / as _", () => {
  assert.equal(aptListName(`${SUITE_URL}/InRelease`), IN_RELEASE);
  assert.equal(
    aptListName("https://user:pw@127.0.0.1:8080/a_b~c/dists/x/"),
    "127.0.0.1:8080_a%5fb%7ec_dists_x_",
  );
  assert.equal(trust.groups.length, 1);
  assert.equal(trust.groups[0]!.prefix, PREFIX);
});

test("genuine lists verify; a forged index, a symlink and unknown files are left out", async () => {
  const dir = await listsDir("genuine", {
    [IN_RELEASE]: inRelease,
    [PACKAGES]: packages,
    [`${PREFIX}main_binary-arm64_Packages`]: "Package: forged\n",
    "evil.example_dists_x_InRelease": inRelease,
    lock: "",
  });
  await symlink("/etc/hostname", join(dir, `${PREFIX}main_i18n_Translation-en`));
  const got = await verifiedLists(dir, trust);
  assert.deepEqual([...got.keys()].sort(), [IN_RELEASE, PACKAGES]);
  assert.equal(got.get(PACKAGES)!.date.getTime(), releaseDate.getTime());
  assert.ok(got.get(PACKAGES)!.bytes.equals(packages));

  // What apt-get --print-uris names is looked up in the verified index: its SHA-256 and size.
  const stanza =
    /^Filename: (pool\/updates\/main\/e\/expat\/libexpat1_\S+_amd64\.deb)\nSize: (\d+)\n(?:.+\n)*?SHA256: ([0-9a-f]{64})$/m.exec(
      packages.toString("utf8"),
    );
  assert.ok(stanza, "bookworm-security carries libexpat1");
  const uri = `http://deb.debian.org/debian-security/${stanza[1]!.replaceAll("+", "%2b")}`;
  assert.deepEqual(packageFileChecksum(got, uri), { sha256: stanza[3], size: Number(stanza[2]) });
  assert.equal(packageFileChecksum(got, uri.replace("debian-security", "debian")), undefined);
});

test("an index apt stored recompressed (Acquire::GzipIndexes, .lz4) verifies by its decompressed hash", async (t) => {
  const lz4 = await run("lz4", ["--version"]).catch(() => undefined);
  if (!lz4) return t.skip("no lz4 on this host");
  const plain = join(work, "plain");
  await writeFile(plain, packages);
  const compressed = (await run("lz4", ["-c", plain], { encoding: "buffer", maxBuffer: 1 << 30 })).stdout;
  const dir = await listsDir("lz4", { [IN_RELEASE]: inRelease, [`${PACKAGES}.lz4`]: compressed });
  assert.deepEqual([...(await verifiedLists(dir, trust)).keys()].sort(), [IN_RELEASE, `${PACKAGES}.lz4`]);
  const bad = Buffer.from(compressed);
  bad[bad.length - 10]! ^= 0xff;
  const badDir = await listsDir("lz4-bad", { [IN_RELEASE]: inRelease, [`${PACKAGES}.lz4`]: bad });
  assert.deepEqual([...(await verifiedLists(badDir, trust)).keys()], [IN_RELEASE]);
});

test("an altered InRelease drops its whole group; so do keys the image does not trust", async () => {
  const altered = Buffer.from(inRelease.toString("utf8").replace(/^Suite: .*$/m, "Suite: evil"));
  const dir = await listsDir("altered", { [IN_RELEASE]: altered, [PACKAGES]: packages });
  assert.equal((await verifiedLists(dir, trust)).size, 0);

  // Same sources, other keys: another cache key, and Debian's signature does not verify for it.
  const other = await listsTrustFor(
    await imageRoot("other-keys", "/usr/share/keyrings/debian-archive-removed-keys.gpg"),
    "amd64",
  );
  assert.notEqual(other.fingerprint, trust.fingerprint);
  const genuine = await listsDir("genuine-2", { [IN_RELEASE]: inRelease, [PACKAGES]: packages });
  assert.equal((await verifiedLists(genuine, other)).size, 0);
});

test("save keeps only verified files (nothing verified: the cache stays); seed dates files by the release", async () => {
  const cache = join(work, "cache-lists");
  const applied = await listsDir("applied", {
    [IN_RELEASE]: inRelease,
    [PACKAGES]: packages,
    junk_dists_x_Packages: "garbage\n",
  });
  assert.equal(await saveLists(await verifiedLists(applied, trust), cache), 2);
  assert.deepEqual((await readdir(cache)).sort(), [IN_RELEASE, PACKAGES]);

  // A run whose lists were all ruined saves nothing, and the cached set survives.
  const ruined = await listsDir("ruined", { [IN_RELEASE]: "garbage\n", [PACKAGES]: "garbage\n" });
  assert.equal(await saveLists(await verifiedLists(ruined, trust), cache), 0);
  assert.deepEqual((await readdir(cache)).sort(), [IN_RELEASE, PACKAGES]);

  // A cache damaged on disk is re-verified when seeding: the damaged index is not handed out.
  await writeFile(join(cache, PACKAGES), "Package: forged\n");
  const own = join(work, "own-lists");
  assert.equal(await seedLists(cache, own, trust), 1);
  assert.deepEqual((await readdir(own)).sort(), [IN_RELEASE, "partial"]);
  assert.equal((await stat(join(own, IN_RELEASE))).mtime.getTime(), releaseDate.getTime());
  assert.ok((await readFile(join(own, IN_RELEASE))).equals(inRelease));
});
