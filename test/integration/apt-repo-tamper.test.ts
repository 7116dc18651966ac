/**
 * apt-secure failure paths against a LOCAL mirror (node:http on 127.0.0.1) serving a repository
 * built here: real .debs from dpkg-deb, Packages/Release generated, InRelease signed with a key
 * made at test time (real OpenPGP signatures). The mirror then lies in the ways a real archive
 * cannot be made to: altered InRelease, foreign key, stale Valid-Until, altered index or .deb,
 * 503s. Each must be a clear UNTRUSTED (or NETWORK) error with nothing left in the cache.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { xz } from "@napi-rs/lzma";
import {
  createCleartextMessage,
  createMessage,
  generateKey,
  type PrivateKey,
  type PublicKey,
  revokeKey,
  sign,
} from "openpgp";
import { listArMembers } from "../../src/archive/ar.ts";
import { downloadPackages } from "../../src/distro/dpkg/fetch-debs.ts";
import { newestCandidate } from "../../src/distro/dpkg/packages-index.ts";
import { type OpenRepositoryOptions, openRepository } from "../../src/distro/dpkg/repository.ts";
import { type AptSource, parseSourcesList } from "../../src/distro/dpkg/sources.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import { createHttpFetch } from "../../src/http/fetch.ts";
import { keyringOf } from "../../src/trust/keyring.ts";
import { requiring } from "../lab/requirements.ts";

const { test } = await requiring("loopback", "tool:dpkg-deb");

const run = promisify(execFile);
const SUITE = "suture-test";
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const aptDate = (d: Date) => d.toUTCString().replace("GMT", "UTC");

interface Deb {
  name: string;
  version: string;
  bytes: Buffer;
}

/** A real .deb made by dpkg-deb. */
async function buildDeb(work: string, name: string, version: string): Promise<Deb> {
  const root = join(work, `${name}-${version}`);
  await mkdir(join(root, "DEBIAN"), { recursive: true });
  await mkdir(join(root, "usr/share/doc", name), { recursive: true });
  await writeFile(
    join(root, "DEBIAN/control"),
    `Package: ${name}\nVersion: ${version}\nArchitecture: all\nMaintainer: suture tests <tests@example.org>\nDescription: tiny package for repository tests\n`,
  );
  await writeFile(join(root, "usr/share/doc", name, "README"), `${name} ${version}\n`);
  const out = join(work, `${name}_${version}_all.deb`);
  await run("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build", root, out]);
  return { name, version, bytes: await readFile(out) };
}

interface RepoOptions {
  signingKeys: PrivateKey[];
  signDate?: Date;
  date?: Date;
  validUntil?: Date;
  acquireByHash?: boolean;
  /** Serve InRelease (default) and/or the Release + Release.gpg pair. */
  inRelease?: boolean;
  detached?: boolean | "unsigned";
}

/** Repository files by URL path (without the leading slash), the way an archive lays them out. */
async function buildRepo(debs: Deb[], o: RepoOptions): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const stanzas: string[] = [];
  for (const d of debs) {
    const filename = `pool/main/${d.name[0]}/${d.name}/${d.name}_${d.version}_all.deb`;
    files.set(filename, d.bytes);
    stanzas.push(
      `Package: ${d.name}\nVersion: ${d.version}\nArchitecture: all\nMaintainer: suture tests <tests@example.org>\nInstalled-Size: 1\nFilename: ${filename}\nSize: ${d.bytes.length}\nSHA256: ${sha256(d.bytes)}\nDescription: tiny package for repository tests\n`,
    );
  }
  const dir = `dists/${SUITE}/main/binary-amd64`;
  const packages = Buffer.from(stanzas.join("\n"));
  const variants: [string, Buffer][] = [
    ["Packages", packages],
    ["Packages.gz", gzipSync(packages)],
    ["Packages.xz", await xz.compress(packages)],
  ];
  const sums: string[] = [];
  for (const [name, bytes] of variants) {
    files.set(`${dir}/${name}`, bytes);
    files.set(`${dir}/by-hash/SHA256/${sha256(bytes)}`, bytes);
    sums.push(` ${sha256(bytes)} ${String(bytes.length).padStart(8)} main/binary-amd64/${name}`);
  }
  const now = new Date();
  const release = [
    "Origin: suture",
    "Label: suture-test",
    `Suite: ${SUITE}`,
    `Codename: ${SUITE}`,
    `Date: ${aptDate(o.date ?? now)}`,
    ...(o.validUntil ? [`Valid-Until: ${aptDate(o.validUntil)}`] : []),
    ...(o.acquireByHash === false ? [] : ["Acquire-By-Hash: yes"]),
    "Architectures: amd64",
    "Components: main",
    "SHA256:",
    ...sums,
    "",
  ].join("\n");
  if (o.inRelease !== false) {
    const signed = await sign({
      message: await createCleartextMessage({ text: release }),
      signingKeys: o.signingKeys,
      date: o.signDate,
    });
    files.set(`dists/${SUITE}/InRelease`, Buffer.from(signed));
  }
  if (o.detached) {
    files.set(`dists/${SUITE}/Release`, Buffer.from(release));
    if (o.detached !== "unsigned") {
      const sig = await sign({
        message: await createMessage({ binary: Buffer.from(release) }),
        signingKeys: o.signingKeys,
        detached: true,
        date: o.signDate,
      });
      files.set(`dists/${SUITE}/Release.gpg`, Buffer.from(sig));
    }
  }
  return files;
}

/** A static HTTP mirror with an ETag per file, a request log and injectable 503s. */
class Mirror {
  files = new Map<string, Buffer>();
  requests: { path: string; headers: IncomingHttpHeaders; status: number }[] = [];
  /** path → number of 503 answers still to give. */
  failures = new Map<string, number>();
  /** path → number of transfers still to cut off halfway. */
  resets = new Map<string, number>();
  /** Paths whose transfer stops halfway and hangs. */
  stall = new Set<string>();
  readonly #server: Server;
  url = "";

  constructor() {
    this.#server = createServer((req, res) => {
      const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname).replace(/^\/repo\//, "");
      const answer = (status: number, body?: Buffer, headers: Record<string, string> = {}) => {
        this.requests.push({ path, headers: req.headers, status });
        res.writeHead(status, headers);
        res.end(body);
      };
      const fail = this.failures.get(path) ?? 0;
      if (fail > 0) {
        this.failures.set(path, fail - 1);
        return answer(503);
      }
      const body = this.files.get(path);
      if (!body) return answer(404);
      const resets = this.resets.get(path) ?? 0;
      if (resets > 0) {
        // Half the body, then the connection is cut: a reset in the middle of a transfer.
        this.resets.set(path, resets - 1);
        this.requests.push({ path, headers: req.headers, status: 200 });
        res.writeHead(200, { "content-length": String(body.length) });
        res.write(body.subarray(0, body.length >> 1), () => res.destroy());
        return;
      }
      if (this.stall.has(path)) {
        // Send headers and half the body, then nothing: a transfer the client must abandon.
        this.requests.push({ path, headers: req.headers, status: 200 });
        res.writeHead(200, { "content-length": String(body.length) });
        res.write(body.subarray(0, body.length >> 1));
        return;
      }
      const etag = `"${sha256(body).slice(0, 16)}"`;
      if (req.headers["if-none-match"] === etag) return answer(304, undefined, { etag });
      answer(200, body, { etag, "content-length": String(body.length) });
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/repo`;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  source(): AptSource {
    return parseSourcesList(
      `deb [signed-by=/usr/share/keyrings/suture-test.gpg] ${this.url} ${SUITE} main\n`,
    )[0]!;
  }

  /** Replace a file everywhere it is served (its path and by-hash copy). */
  tamper(path: string, change: (b: Buffer) => Buffer): void {
    const old = this.files.get(path)!;
    const changed = change(Buffer.from(old));
    for (const [p, b] of this.files) if (b.equals(old)) this.files.set(p, changed);
  }

  served(pathPart: string): number {
    return this.requests.filter((r) => r.path.includes(pathPart) && r.status === 200).length;
  }
}

interface Fixture {
  mirror: Mirror;
  cacheDir: string;
  archive: { privateKey: PrivateKey; publicKey: PublicKey };
  debs: Deb[];
  options: (extra?: Partial<OpenRepositoryOptions>) => OpenRepositoryOptions;
}

// Built once: a key and two real .debs (dpkg-deb takes a moment); each test gets its own mirror and cache.
const shared = (async () => {
  const work = await mkdtemp(join(tmpdir(), "suture-apt-debs-"));
  const debs = [await buildDeb(work, "suture-hello", "1.0-1"), await buildDeb(work, "suture-hello", "1.2-1")];
  await rm(work, { recursive: true, force: true });
  // Created a week ago so tests can sign "in the past" (stale metadata) with it.
  const archive = await generateKey({
    userIDs: [{ name: "Suture Test Archive" }],
    date: new Date(Date.now() - 7 * 86400_000),
    format: "object",
  });
  return { debs, archive };
})();

async function fixture(
  t: { after(fn: () => Promise<void>): void },
  repo: Partial<RepoOptions> = {},
): Promise<Fixture> {
  const { debs, archive } = await shared;
  const mirror = new Mirror();
  mirror.files = await buildRepo(debs, { signingKeys: [archive.privateKey], ...repo });
  await mirror.start();
  const cacheDir = await mkdtemp(join(tmpdir(), "suture-apt-cache-"));
  t.after(async () => {
    await mirror.stop();
    await rm(cacheDir, { recursive: true, force: true });
  });
  const options = (extra: Partial<OpenRepositoryOptions> = {}): OpenRepositoryOptions => ({
    arch: "amd64",
    cacheDir,
    keyring: keyringOf([archive.publicKey], ["/usr/share/keyrings/suture-test.gpg"]),
    retries: 1,
    ...extra,
  });
  return { mirror, cacheDir, archive, debs, options };
}

async function cacheFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(join(e.parentPath, e.name).slice(dir.length + 1));
  }
  return out.sort();
}

function untrusted(pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(isSutureError(e, "UNTRUSTED"), `expected UNTRUSTED, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  };
}

test("a correctly signed local repository opens, resolves and downloads; reopening is conditional", async (t) => {
  const f = await fixture(t);
  const source = f.mirror.source();
  const repo = await openRepository(source, f.options());
  assert.deepEqual(
    repo.signers.map((s) => s.userIds[0]),
    ["Suture Test Archive"],
  );
  assert.equal(f.mirror.served(`binary-amd64/by-hash/SHA256/`), 1, "index fetched by hash");
  const best = newestCandidate([repo], "suture-hello", "amd64")!;
  assert.equal(best.version, "1.2-1");
  const [path] = await downloadPackages([best], { cacheDir: f.cacheDir, concurrency: 8 });
  assert.equal(sha256(await readFile(path!)), sha256(f.debs[1]!.bytes));
  assert.deepEqual(
    (await listArMembers(path!)).map((m) => m.name),
    ["debian-binary", "control.tar.gz", "data.tar.gz"],
  );

  // Reopen: InRelease asked with If-None-Match, answered 304, and the index is not downloaded again.
  f.mirror.requests.length = 0;
  const again = await openRepository(source, f.options());
  assert.deepEqual(
    f.mirror.requests.map((r) => [r.path, r.status]),
    [[`dists/${SUITE}/InRelease`, 304]],
  );
  assert.ok(f.mirror.requests[0]!.headers["if-none-match"]);
  assert.equal(newestCandidate([again], "suture-hello", "amd64")?.version, "1.2-1");

  // A new InRelease (new index) is fetched in full and the new index downloaded.
  f.mirror.files = await buildRepo([f.debs[0]!], { signingKeys: [f.archive.privateKey] });
  f.mirror.requests.length = 0;
  const changed = await openRepository(source, f.options());
  assert.equal(newestCandidate([changed], "suture-hello", "amd64")?.version, "1.0-1");
  assert.equal(f.mirror.served("InRelease"), 1);
  assert.equal(f.mirror.served("binary-amd64/by-hash/"), 1);
});

test("the decompressed index and its name table are cached; a damaged one is derived again from the cached index, never read wrong", async (t) => {
  const f = await fixture(t);
  const source = f.mirror.source();
  const first = await openRepository(source, f.options());
  first.indexes[0]!.release?.();
  const files = await cacheFiles(f.cacheDir);
  const table = join(f.cacheDir, files.find((p) => p.endsWith(".names"))!);
  const plain = join(f.cacheDir, files.find((p) => p.endsWith(".plain"))!);
  assert.ok(
    files.some((p) => /^indexes\/[0-9a-f]{64}$/.test(p)),
    "the verified compressed index is kept",
  );
  const version = async () => {
    const repo = await openRepository(source, f.options());
    try {
      return newestCandidate([repo], "suture-hello", "amd64")?.version;
    } finally {
      repo.indexes[0]!.release?.();
    }
  };

  // A table cut short (a crash, a full disk) is not used: both files are derived again, no download.
  await writeFile(table, (await readFile(table)).subarray(0, 100));
  f.mirror.requests.length = 0;
  assert.equal(await version(), "1.2-1");
  assert.equal(f.mirror.served("binary-amd64/"), 0, "derived from the cached compressed index");
  // A plain file of another size: the same.
  await writeFile(plain, Buffer.concat([await readFile(plain), Buffer.from("\n")]));
  assert.equal(await version(), "1.2-1");
  assert.ok((await readFile(table)).length > 100, "the table is whole again");

  // A stanza changed on disk (same size) after its table checked out: a one-line IO error, not an
  // entry with another version; the table is removed, so the next open derives it again.
  const bytes = await readFile(plain);
  const at = bytes.indexOf("Version: 1.2-1");
  assert.ok(at >= 0);
  bytes.write("Version: 1.3-1", at, "latin1");
  await writeFile(plain, bytes);
  await assert.rejects(version(), (e: unknown) => {
    assert.ok(isSutureError(e, "IO"), String(e));
    assert.match(
      e.message,
      /^the cached copy of .*Packages\.xz \(.*\.plain\) is damaged at byte \d+: .*run the command again$/,
    );
    return true;
  });
  assert.equal(
    (await cacheFiles(f.cacheDir)).some((p) => p.endsWith(".names")),
    false,
  );
  assert.equal(await version(), "1.2-1");
  assert.deepEqual(
    (await cacheFiles(f.cacheDir)).filter((p) => p.startsWith("tmp/")),
    [],
    "no leftovers in tmp",
  );
});

test("tampered InRelease (one byte of the signed text changed) is a bad signature; nothing cached", async (t) => {
  const f = await fixture(t);
  f.mirror.tamper(`dists/${SUITE}/InRelease`, (b) =>
    Buffer.from(b.toString().replace("Codename: suture-test", "Codename: suture-tesu")),
  );
  await assert.rejects(
    openRepository(f.mirror.source(), f.options()),
    untrusted(
      /dists\/suture-test\/InRelease has a bad signature by trusted key [0-9A-F]{40}.*"Suture Test Archive".*altered/,
    ),
  );
  assert.deepEqual(await cacheFiles(f.cacheDir), []);
});

test("InRelease signed by a key outside the keyring is refused; nothing cached", async (t) => {
  const stranger = await generateKey({ userIDs: [{ name: "Somebody Else" }], format: "object" });
  const f = await fixture(t, { signingKeys: [stranger.privateKey] });
  await assert.rejects(
    openRepository(f.mirror.source(), f.options()),
    untrusted(
      /InRelease is signed by unknown key [0-9a-f]{16}, none of them in the trusted keyring \(\/usr\/share\/keyrings\/suture-test\.gpg\)/,
    ),
  );
  assert.deepEqual(await cacheFiles(f.cacheDir), []);
});

test("an InRelease past its Valid-Until is refused as stale; nothing cached", async (t) => {
  const hour = 3600_000;
  const f = await fixture(t, {
    date: new Date(Date.now() - 48 * hour),
    signDate: new Date(Date.now() - 48 * hour),
    validUntil: new Date(Date.now() - hour),
  });
  await assert.rejects(
    openRepository(f.mirror.source(), f.options()),
    untrusted(/InRelease expired on .* \(Valid-Until\): the mirror is stale/),
  );
  assert.deepEqual(await cacheFiles(f.cacheDir), []);
  // The same file is fine for a clock before Valid-Until.
  await openRepository(f.mirror.source(), f.options({ now: new Date(Date.now() - 2 * hour) }));
});

test("a Release dated in the future is refused", async (t) => {
  const f = await fixture(t, { date: new Date(Date.now() + 24 * 3600_000) });
  await assert.rejects(
    openRepository(f.mirror.source(), f.options()),
    untrusted(/in the future: check the system clock/),
  );
  assert.deepEqual(await cacheFiles(f.cacheDir), []);
});

test("signatures by an expired or a revoked key are refused", async (t) => {
  const past = new Date(Date.now() - 10 * 86400_000);
  const old = await generateKey({
    userIDs: [{ name: "Old Archive" }],
    date: past,
    keyExpirationTime: 86400,
    format: "object",
  });
  const f = await fixture(t, {
    signingKeys: [old.privateKey],
    signDate: new Date(past.getTime() + 3600_000),
    date: past,
  });
  await assert.rejects(
    openRepository(f.mirror.source(), f.options({ keyring: keyringOf([old.publicKey], ["old.gpg"]) })),
    untrusted(/signed only by expired key .*Old Archive.*update the image's archive keyring/),
  );
  const { publicKey: revoked } = await revokeKey({ key: f.archive.privateKey, format: "object" });
  const g = await fixture(t);
  await assert.rejects(
    openRepository(g.mirror.source(), g.options({ keyring: keyringOf([revoked], ["revoked.gpg"]) })),
    untrusted(/signed only by revoked key/),
  );
  assert.deepEqual(await cacheFiles(f.cacheDir), []);
  assert.deepEqual(await cacheFiles(g.cacheDir), []);
});

test("content outside the signed block of InRelease is refused", async (t) => {
  const f = await fixture(t);
  f.mirror.tamper(`dists/${SUITE}/InRelease`, (b) => Buffer.concat([Buffer.from("Origin: evil\n\n"), b]));
  await assert.rejects(
    openRepository(f.mirror.source(), f.options()),
    untrusted(/not exactly one clear-signed block/),
  );
  assert.deepEqual(await cacheFiles(f.cacheDir), []);
});

test("a tampered Packages index (hash mismatch) is refused before decompression; nothing cached", async (t) => {
  const f = await fixture(t);
  const path = `dists/${SUITE}/main/binary-amd64/Packages.xz`;
  // Same size, one byte flipped: only the SHA256 can catch it.
  f.mirror.tamper(path, (b) => {
    b[b.length - 20]! ^= 0xff;
    return b;
  });
  await assert.rejects(
    openRepository(f.mirror.source(), f.options()),
    untrusted(
      /index main\/binary-amd64\/Packages\.xz from .*by-hash\/SHA256\/[0-9a-f]{64} has SHA256 [0-9a-f]{64} but the signed index lists [0-9a-f]{64}: the mirror serves an index that does not match/,
    ),
  );
  assert.deepEqual(await cacheFiles(f.cacheDir), []);

  // Without by-hash, an index with extra bytes is cut off as soon as it exceeds the signed size.
  const g = await fixture(t, { acquireByHash: false });
  g.mirror.tamper(path, (b) => Buffer.concat([b, Buffer.alloc(100_000)]));
  await assert.rejects(
    openRepository(g.mirror.source(), g.options()),
    untrusted(/Packages\.xz .*is larger than the \d+ bytes the signed index lists/),
  );
  assert.equal(g.mirror.served("by-hash"), 0);
  assert.deepEqual(await cacheFiles(g.cacheDir), []);
});

test("a tampered .deb (hash mismatch) is refused, naming the package; no .deb is cached", async (t) => {
  const f = await fixture(t);
  const repo = await openRepository(f.mirror.source(), f.options());
  const best = newestCandidate([repo], "suture-hello", "amd64")!;
  f.mirror.tamper(best.filename, (b) => {
    b[b.length - 1]! ^= 0x01;
    return b;
  });
  await assert.rejects(
    downloadPackages([best], { cacheDir: f.cacheDir }),
    untrusted(
      /suture-hello 1\.2-1 \(all\) \.deb from http:\/\/127\.0\.0\.1:\d+\/repo\/pool\/main\/s\/suture-hello\/suture-hello_1\.2-1_all\.deb has SHA256 [0-9a-f]{64} but the signed index lists [0-9a-f]{64}/,
    ),
  );
  const files = await cacheFiles(f.cacheDir);
  assert.deepEqual(
    files.filter((p) => p.startsWith("debs/") || p.startsWith("tmp/")),
    [],
  );
});

test("Release + Release.gpg is used when there is no InRelease; an unsigned Release is refused", async (t) => {
  const f = await fixture(t, { inRelease: false, detached: true });
  const repo = await openRepository(f.mirror.source(), f.options());
  assert.match(repo.releaseUrl, /\/Release$/);
  assert.equal(repo.signers.length, 1);
  assert.equal(newestCandidate([repo], "suture-hello", "amd64")?.version, "1.2-1");

  const g = await fixture(t, { inRelease: false, detached: "unsigned" });
  await assert.rejects(
    openRepository(g.mirror.source(), g.options()),
    untrusted(/Release is not signed.*trusted=yes/),
  );
  assert.deepEqual(await cacheFiles(g.cacheDir), []);
  // trusted=yes in the image's sources accepts it, as apt does.
  const trusted = await openRepository({ ...g.mirror.source(), trusted: true }, g.options());
  assert.deepEqual(trusted.signers, []);
});

test("HTTP 503s are retried (bounded); a dead server or missing suite is a clear error", async (t) => {
  const f = await fixture(t);
  const inRelease = `dists/${SUITE}/InRelease`;
  f.mirror.failures.set(inRelease, 1);
  await openRepository(f.mirror.source(), f.options({ retries: 1 }));
  assert.deepEqual(
    f.mirror.requests.filter((r) => r.path === inRelease).map((r) => r.status),
    [503, 200],
  );

  f.mirror.requests.length = 0;
  f.mirror.failures.set(inRelease, 10);
  await assert.rejects(openRepository(f.mirror.source(), f.options({ retries: 2 })), (e: unknown) => {
    assert.ok(isSutureError(e, "NETWORK"), String(e));
    assert.match(e.message, /HTTP 503/);
    return true;
  });
  assert.equal(f.mirror.requests.length, 3, "first attempt + 2 retries");

  await assert.rejects(
    openRepository({ ...f.mirror.source(), suite: "no-such-suite" }, f.options()),
    (e: unknown) => isSutureError(e, "NOT_FOUND") && /suite no-such-suite not found/.test(e.message),
  );

  // A port that was just free: nothing listens there.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const freePort = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const dead = f.mirror.source();
  dead.uri = `http://127.0.0.1:${freePort}/repo`;
  await assert.rejects(
    openRepository(dead, f.options({ retries: 0 })),
    (e: unknown) => isSutureError(e, "NETWORK") && /ECONNREFUSED/.test(e.message),
  );
});

test("HTTP_PROXY is honoured (requests go through the proxy) and NO_PROXY bypasses it", async (t) => {
  const f = await fixture(t);
  const seen: string[] = [];
  // A minimal forward proxy: absolute-form request URLs, relayed to the origin.
  const proxy = createServer((req, res) => {
    seen.push(req.url ?? "");
    const upstream = httpRequest(req.url!, { method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  t.after(async () => {
    proxy.closeAllConnections();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
  });
  const saved = {
    HTTP_PROXY: process.env.HTTP_PROXY,
    NO_PROXY: process.env.NO_PROXY,
    no_proxy: process.env.no_proxy,
  };
  t.after(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  process.env.HTTP_PROXY = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  delete process.env.NO_PROXY;
  delete process.env.no_proxy;
  const viaProxy = createHttpFetch();
  const repo = await openRepository(f.mirror.source(), f.options({ fetch: viaProxy }));
  await downloadPackages([newestCandidate([repo], "suture-hello", "amd64")!], {
    cacheDir: f.cacheDir,
    fetch: viaProxy,
  });
  assert.ok(seen.some((u) => u === `${f.mirror.url}/dists/${SUITE}/InRelease`));
  assert.ok(seen.some((u) => u.endsWith("_1.2-1_all.deb")));

  seen.length = 0;
  process.env.NO_PROXY = "127.0.0.1";
  await openRepository(f.mirror.source(), f.options({ fetch: createHttpFetch() }));
  assert.deepEqual(seen, []);
});

test("several .debs download in parallel, duplicates once, results in input order", async (t) => {
  const f = await fixture(t);
  const repo = await openRepository(f.mirror.source(), f.options());
  const all = repo.indexes[0]!.entries;
  assert.equal(all.length, 2);
  const wanted = [all[1]!, all[0]!, all[1]!];
  const paths = await downloadPackages(wanted, { cacheDir: f.cacheDir, concurrency: 8 });
  assert.deepEqual(
    paths.map((p) => p.slice(p.lastIndexOf("/") + 1)),
    wanted.map((e) => `${e.sha256}.deb`),
  );
  assert.equal(f.mirror.served("pool/"), 2, "the duplicate is fetched once");
  for (const [i, p] of paths.entries()) assert.equal(sha256(await readFile(p)), wanted[i]!.sha256);
});

test("cancelling a download mid-transfer is CANCELLED and leaves nothing behind", async (t) => {
  const f = await fixture(t);
  const repo = await openRepository(f.mirror.source(), f.options());
  const best = newestCandidate([repo], "suture-hello", "amd64")!;
  f.mirror.stall.add(best.filename);
  const controller = new AbortController();
  await assert.rejects(
    downloadPackages([best], {
      cacheDir: f.cacheDir,
      signal: controller.signal,
      progress: (e) => {
        if (e.type === "blob" && e.action === "download" && e.bytes > 0) controller.abort();
      },
    }),
    (e: unknown) => isSutureError(e, "CANCELLED"),
  );
  const files = await cacheFiles(f.cacheDir);
  assert.deepEqual(
    files.filter((p) => p.startsWith("debs/") || p.startsWith("tmp/")),
    [],
  );
  await assert.rejects(
    downloadPackages([best], { cacheDir: f.cacheDir, signal: AbortSignal.abort() }),
    (e: unknown) => isSutureError(e, "CANCELLED"),
  );
});

test("a connection cut mid-transfer is retried and the .deb still arrives verified", async (t) => {
  const f = await fixture(t);
  const repo = await openRepository(f.mirror.source(), f.options());
  const best = newestCandidate([repo], "suture-hello", "amd64")!;
  f.mirror.resets.set(best.filename, 1);
  const [path] = await downloadPackages([best], { cacheDir: f.cacheDir, retries: 2 });
  assert.equal(sha256(await readFile(path!)), best.sha256);
  assert.equal(f.mirror.requests.filter((r) => r.path === best.filename).length, 2);
});

test("a component the suite lacks is skipped with a warning, as apt does", async (t) => {
  const f = await fixture(t);
  const warnings: string[] = [];
  const repo = await openRepository(
    { ...f.mirror.source(), components: ["main", "contrib"] },
    f.options({ progress: (e) => e.type === "warning" && warnings.push(e.message) }),
  );
  assert.deepEqual(
    repo.indexes.map((i) => i.component),
    ["main"],
  );
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /skipping component contrib: .* does not have it \(it has main\)/);
});
