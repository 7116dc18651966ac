/**
 * The apt repository client against the REAL Debian archive: the official debian:bookworm sources,
 * the host's debian-archive-keyring (the same file the image carries), bookworm-security's signed
 * InRelease and Packages.xz, and a real .deb downloaded and verified.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import { generateKey } from "openpgp";
import { listArMembers, openArMember } from "../../src/archive/ar.ts";
import { downloadPackages } from "../../src/distro/dpkg/fetch-debs.ts";
import { newestCandidate } from "../../src/distro/dpkg/packages-index.ts";
import { openRepositories, openRepository } from "../../src/distro/dpkg/repository.ts";
import { fileAccessFromRoot, parseDeb822Sources } from "../../src/distro/dpkg/sources.ts";
import { compareDebVersions } from "../../src/distro/dpkg/version.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import { createHttpFetch, type HttpFetch } from "../../src/http/fetch.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { imageKeyringProvider, keyringOf } from "../../src/trust/keyring.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { requiring } from "../lab/requirements.ts";

const { before, test } = await requiring("loopback");

// What the official debian:bookworm image ships as /etc/apt/sources.list.d/debian.sources.
const DEBIAN_SOURCES = `Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

function countingFetch(): { fetch: HttpFetch; urls: string[] } {
  const base = createHttpFetch();
  const urls: string[] = [];
  return {
    urls,
    fetch: (url, init) => {
      urls.push(url);
      return base(url, init);
    },
  };
}

async function tempCache(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "suture-apt-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const sources = parseDeb822Sources(DEBIAN_SOURCES, "debian.sources");
const security = sources.find((s) => s.suite === "bookworm-security")!;
const bookworm = sources.find((s) => s.suite === "bookworm")!;
// The host's keyring file stands in for the image's (same package, same path).
const keyringFor = imageKeyringProvider(fileAccessFromRoot("/"));

test("bookworm-security: signed InRelease verified, libssl3 found and its .deb downloaded and verified", async (t) => {
  const cacheDir = await tempCache(t);
  const { fetch, urls } = countingFetch();
  const events: ProgressEvent[] = [];
  const repo = await openRepository(security, {
    arch: "amd64",
    cacheDir,
    keyring: await keyringFor(security),
    fetch,
    progress: (e) => events.push(e),
  });
  assert.equal(repo.releaseUrl, "http://deb.debian.org/debian-security/dists/bookworm-security/InRelease");
  assert.equal(repo.release.codename, "bookworm-security");
  assert.ok(repo.release.validUntil, "the security suite carries Valid-Until");
  assert.ok(
    repo.signers.some((s) =>
      /Debian Security Archive Automatic Signing Key \(12\/bookworm\)/.test(s.userIds.join()),
    ),
    `signed by the bookworm security key, got ${repo.signers.map((s) => s.userIds[0]).join("; ")}`,
  );
  assert.equal(repo.indexes.length, 1);
  assert.match(repo.indexes[0]!.url, /main\/binary-amd64\/Packages\.xz$/);
  assert.ok(
    urls.some((u) => u.includes("/main/binary-amd64/by-hash/SHA256/")),
    "Acquire-By-Hash: yes is honoured",
  );

  const libssl = newestCandidate([repo], "libssl3", "amd64");
  assert.ok(libssl, "bookworm-security carries libssl3");
  assert.equal(libssl.architecture, "amd64");
  assert.match(libssl.filename, /^pool\/updates\/main\/o\/openssl\/libssl3_.*_amd64\.deb$/);

  const [path] = await downloadPackages([libssl], { cacheDir, fetch, progress: (e) => events.push(e) });
  assert.equal(path, join(cacheDir, "debs", `${libssl.sha256}.deb`));
  const bytes = await readFile(path!);
  assert.equal(bytes.length, libssl.size);
  assert.equal(createHash("sha256").update(bytes).digest("hex"), libssl.sha256);
  const members = await listArMembers(path!);
  assert.deepEqual(
    members.map((m) => m.name.replace(/\.(xz|gz|zst)$/, "")),
    ["debian-binary", "control.tar", "data.tar"],
  );
  assert.equal(await text(openArMember(path!, members[0]!)), "2.0\n");
  const last = events.filter((e) => e.type === "blob" && e.digest === `sha256:${libssl.sha256}`).at(-1);
  assert.deepEqual(last, {
    type: "blob",
    action: "download",
    digest: `sha256:${libssl.sha256}`,
    bytes: libssl.size,
    total: libssl.size,
  });
  assert.deepEqual(await readdir(join(cacheDir, "tmp")), [], "no leftovers in tmp");

  // Again: the index is reused from the cache under its newly verified hash, the .deb is not refetched.
  urls.length = 0;
  const again = await openRepository(security, {
    arch: "amd64",
    cacheDir,
    keyring: await keyringFor(security),
    fetch,
  });
  assert.deepEqual(urls, ["http://deb.debian.org/debian-security/dists/bookworm-security/InRelease"]);
  assert.equal(again.indexes[0]!.entries.length, repo.indexes[0]!.entries.length);
  const cachedEvents: ProgressEvent[] = [];
  await downloadPackages([libssl], { cacheDir, fetch, progress: (e) => cachedEvents.push(e) });
  assert.deepEqual(urls.length, 1, "cached .deb not downloaded again");
  assert.equal(cachedEvents[0]?.type === "blob" && cachedEvents[0].action, "exists");

  // A stored .deb altered on disk (same size) is re-hashed on reuse: not used, downloaded again.
  const damaged = Buffer.from(bytes);
  damaged[damaged.length - 100]! ^= 0xff;
  await writeFile(path!, damaged);
  await downloadPackages([libssl], { cacheDir, fetch });
  assert.equal(urls.length, 2, "the damaged .deb is downloaded again");
  assert.equal(
    createHash("sha256")
      .update(await readFile(path!))
      .digest("hex"),
    libssl.sha256,
  );
});

test("the newest libssl3 across bookworm and bookworm-security comes from security", async (t) => {
  const cacheDir = await tempCache(t);
  const repos = await openRepositories([bookworm, security], { arch: "amd64", cacheDir, keyringFor });
  const fromMain = newestCandidate([repos[0]!], "libssl3", "amd64")!;
  const best = newestCandidate(repos, "libssl3", "amd64")!;
  assert.equal(best.repoUri, "http://deb.debian.org/debian-security");
  assert.equal(
    compareDebVersions(best.version, fromMain.version),
    1,
    `${best.version} > ${fromMain.version}`,
  );
  // Architecture: all packages are listed in the amd64 index (No-Support-for-Architecture-all).
  assert.equal(repos[0]!.release.archAllInArchIndexes, true);
  assert.equal(newestCandidate(repos, "tzdata", "amd64")?.architecture, "all");
});

test("the real InRelease is refused against a keyring without Debian's keys, and nothing is cached", async (t) => {
  const cacheDir = await tempCache(t);
  const { publicKey } = await generateKey({ userIDs: [{ name: "Not Debian" }], format: "object" });
  await assert.rejects(
    openRepository(security, { arch: "amd64", cacheDir, keyring: keyringOf([publicKey], ["test keyring"]) }),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") &&
      /bookworm-security\/InRelease is signed by unknown keys? [0-9a-f]{16}.*test keyring/.test(e.message),
  );
  assert.deepEqual(await listFiles(cacheDir), []);
});

test("a suite the archive does not have is NOT_FOUND", async (t) => {
  const cacheDir = await tempCache(t);
  await assert.rejects(
    openRepository(
      { ...bookworm, suite: "bookworm-no-such-suite" },
      { arch: "amd64", cacheDir, keyring: await keyringFor(bookworm) },
    ),
    (e: unknown) => isSutureError(e, "NOT_FOUND") && /suite bookworm-no-such-suite not found/.test(e.message),
  );
});

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}
