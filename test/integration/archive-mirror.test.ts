/**
 * The lab's recording archive mirror (test/lab/archive-mirror.ts) against the real Debian archive:
 * what it fetched once it serves again with the network gone, immutable files are fetched once,
 * and it answers both as a reverse mirror and as an HTTP proxy. Each instance here records into
 * its own directory and has the process's shared mirror as its upstream: genuine archive bytes,
 * fetched from deb.debian.org once and replayed from the lab cache in an offline run.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type ArchiveMirror, archiveMirror, startArchiveMirror } from "../lab/archive-mirror.ts";

/** A small pool file (immutable) and a small suite file (mutable) of bookworm. */
const DEB = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
const RELEASE = "/debian/dists/bookworm/Release";
const NO_SUITE = "/debian/dists/suture-no-such-suite/InRelease";

interface Got {
  status: number;
  body: Buffer;
}

/** GET through the mirror as a reverse mirror (`path`) or as a proxy (`http://host/path`). */
function get(mirror: ArchiveMirror, target: string): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: Number(mirror.host.split(":")[1]), path: target });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** An origin on which nothing listens: connections are refused, as with the network gone. */
async function refusingOrigin(): Promise<string> {
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

async function recordDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "suture-archive-mirror-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An instance that records into `dir` what the real archive (via the shared mirror) serves. */
async function onlineMirror(t: { after(fn: () => Promise<void>): void }, dir: string) {
  return mirrorFor(t, { recordDir: dir, upstream: (await archiveMirror()).url, offline: false });
}

async function mirrorFor(
  t: { after(fn: () => Promise<void>): void },
  options: Parameters<typeof startArchiveMirror>[0],
) {
  const mirror = await startArchiveMirror(options);
  t.after(() => mirror.stop());
  return mirror;
}

test("what the mirror fetched is served again when upstream refuses connections", async (t) => {
  const dir = await recordDir(t);
  const online = await onlineMirror(t, dir);
  const deb = await get(online, DEB);
  const release = await get(online, `http://deb.debian.org${RELEASE}`);
  assert.equal(deb.status, 200);
  assert.equal(deb.body.subarray(0, 8).toString("latin1"), "!<arch>\n", "a real .deb");
  assert.equal(release.status, 200);
  assert.match(release.body.toString("utf8"), /^Codename: bookworm$/m);
  // Recorded under the archive host and path, whichever form the request came in.
  assert.ok((await readFile(join(dir, "deb.debian.org", DEB))).equals(deb.body));
  assert.ok((await readFile(join(dir, "deb.debian.org", RELEASE))).equals(release.body));
  // What the archive does not have is not there offline either (not a gateway error).
  assert.equal((await get(online, NO_SUITE)).status, 404);

  const gone = await refusingOrigin();
  const offline = await mirrorFor(t, { recordDir: dir, upstream: gone, offline: false });
  const deb2 = await get(offline, `http://deb.debian.org${DEB}`);
  const release2 = await get(offline, RELEASE);
  assert.equal(deb2.status, 200);
  assert.ok(deb2.body.equals(deb.body), "the recorded .deb, byte for byte");
  assert.equal(release2.status, 200);
  assert.ok(release2.body.equals(release.body), "the recorded Release, byte for byte");
  // The .deb came straight from the recording; the Release was tried upstream first (it may have
  // changed), and once upstream was found unreachable nothing more is tried for a while.
  assert.deepEqual(offline.upstreamFetches, [`${gone}${RELEASE}`]);
  const again = await get(offline, RELEASE);
  assert.ok(again.body.equals(release.body));
  assert.equal(offline.upstreamFetches.length, 1);

  assert.equal((await get(offline, NO_SUITE)).status, 404);
  const missing = await get(offline, "/debian/dists/bookworm/InRelease");
  assert.equal(missing.status, 504, "never recorded, upstream gone");
  assert.match(missing.body.toString("utf8"), /never recorded/);
});

test("an immutable path is fetched from upstream once; a mutable one each time upstream answers", async (t) => {
  const dir = await recordDir(t);
  const mirror = await onlineMirror(t, dir);
  const [a, b] = await Promise.all([get(mirror, DEB), get(mirror, `http://deb.debian.org${DEB}`)]);
  const c = await get(mirror, DEB);
  assert.ok(a.body.equals(b.body) && a.body.equals(c.body));
  assert.deepEqual(mirror.upstreamFetches, [`${(await archiveMirror()).url}${DEB}`]);
  assert.equal(mirror.count("GET", /hello_2\.10-3_amd64\.deb$/), 3, "every request is logged");

  await get(mirror, RELEASE);
  await get(mirror, RELEASE);
  assert.equal(mirror.upstreamFetches.filter((u) => u.endsWith(RELEASE)).length, 2);

  // Another instance (another test process) over the same recording fetches nothing for it.
  const other = await mirrorFor(t, { recordDir: dir, offline: true });
  assert.ok((await get(other, DEB)).body.equals(a.body));
  assert.deepEqual(other.upstreamFetches, []);
});

test("alter and status hooks change what one instance serves; the recording keeps the genuine bytes", async (t) => {
  const dir = await recordDir(t);
  const genuine = await get(await onlineMirror(t, dir), DEB);
  const tampering = await mirrorFor(t, {
    recordDir: dir,
    offline: true,
    alter: (path, body) => (path.endsWith(".deb") ? Buffer.concat([body, Buffer.from("x")]) : undefined),
    status: (path) => (path.endsWith("/InRelease") ? 404 : undefined),
  });
  const altered = await get(tampering, DEB);
  assert.equal(altered.body.length, genuine.body.length + 1);
  assert.equal((await get(tampering, "/debian/dists/bookworm/InRelease")).status, 404);
  assert.ok((await readFile(join(dir, "deb.debian.org", DEB))).equals(genuine.body));
});

test("only Debian's archive hosts are served, and nothing outside the recording is named", async (t) => {
  const dir = await recordDir(t);
  const mirror = await mirrorFor(t, { recordDir: dir, offline: true });
  assert.equal((await get(mirror, "http://example.org/debian/dists/bookworm/Release")).status, 403);
  assert.equal((await get(mirror, "/elsewhere/file")).status, 403);
  // A path escaping the host's directory is never read from or written to the recording.
  const outside = await get(mirror, "/debian/pool/%2e%2e/%2e%2e/%2e%2e/etc/passwd");
  assert.notEqual(outside.status, 200);
});
