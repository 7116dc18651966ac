/**
 * The apt repository fetcher under faults a real mirror rarely produces on demand, through an
 * in-process undici MockAgent (no sockets: this runs with the network off). The loopback mirror
 * of test/integration/apt-repo-tamper.test.ts covers the same client against a real server.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  alwaysFail,
  busyThenAbort,
  busyThenOk,
  connectionReset,
  mockAgent,
  TruncatingDispatcher,
} from "../../../test/fakes/http-faults.ts";
import { isSutureError } from "../../errors/errors.ts";
import { createHttpFetch, fetchBytes } from "../../http/fetch.ts";
import { downloadPackages } from "./fetch-debs.ts";
import type { PackageEntry } from "./packages-index.ts";

const MIRROR = "http://mirror.test";
const IN_RELEASE = "/debian/dists/bookworm/InRelease";
const url = `${MIRROR}${IN_RELEASE}`;
const fast = { retries: 3, baseDelayMs: 1, maxBytes: 1024 * 1024 };

function setup() {
  const agent = mockAgent();
  return { agent, pool: agent.get(MIRROR), fetch: createHttpFetch({ dispatcher: agent }) };
}

test("429 and 503 with Retry-After (seconds, then an HTTP date) are waited out and retried", async () => {
  const { pool, fetch } = setup();
  busyThenOk(pool, IN_RELEASE, "signed release");
  const started = Date.now();
  const got = await fetchBytes(fetch, url, fast);
  assert.equal(got.bytes.toString(), "signed release");
  // One second after the first answer; the date (whole seconds) lies 1-2 s after the second.
  assert.ok(Date.now() - started >= 1950, `waited the servers' Retry-After (${Date.now() - started} ms)`);
});

test("a retry budget used up on 503s fails with NETWORK naming the status, after exactly that many attempts", async () => {
  const { pool, fetch } = setup();
  const server = alwaysFail(pool, IN_RELEASE, 503);
  await assert.rejects(fetchBytes(fetch, url, { ...fast, retries: 2 }), (e: unknown) => {
    assert.ok(isSutureError(e, "NETWORK"), String(e));
    assert.match(e.message, /failed with HTTP 503: the server is having trouble/);
    return true;
  });
  assert.equal(server.attempts, 3, "first attempt + 2 retries");
});

test("a connection reset is retried; a mirror that keeps resetting is a NETWORK error naming the cause", async () => {
  const { pool, fetch } = setup();
  pool.intercept({ path: IN_RELEASE }).replyWithError(connectionReset());
  pool.intercept({ path: IN_RELEASE }).reply(200, "signed release");
  assert.equal((await fetchBytes(fetch, url, fast)).bytes.toString(), "signed release");

  pool.intercept({ path: IN_RELEASE }).replyWithError(connectionReset()).times(2);
  await assert.rejects(
    fetchBytes(fetch, url, { ...fast, retries: 1 }),
    (e: unknown) =>
      isSutureError(e, "NETWORK") && /cannot fetch http:\/\/mirror\.test\/.*ECONNRESET/.test(e.message),
  );
});

test("an index larger than the cap is refused (announced or not) without being retried", async () => {
  const { pool, fetch } = setup();
  const big = Buffer.alloc(2048, 0x41);
  pool.intercept({ path: IN_RELEASE }).reply(200, big, { headers: { "content-length": "2048" } });
  pool.intercept({ path: IN_RELEASE }).reply(200, big);
  for (let i = 0; i < 2; i++) {
    await assert.rejects(
      fetchBytes(fetch, url, { ...fast, maxBytes: 1024 }),
      (e: unknown) => isSutureError(e, "UNTRUSTED") && /larger than 1024 bytes: refusing it/.test(e.message),
    );
  }
});

test("abort during a Retry-After wait ends the fetch at once with CANCELLED", async () => {
  const { pool, fetch } = setup();
  const controller = new AbortController();
  busyThenAbort(pool, IN_RELEASE, controller);
  const started = Date.now();
  await assert.rejects(fetchBytes(fetch, url, { ...fast, signal: controller.signal }), (e: unknown) =>
    isSutureError(e, "CANCELLED"),
  );
  assert.ok(Date.now() - started < 2000, `returned promptly (${Date.now() - started} ms)`);
});

test("redirects are followed to the file", async () => {
  const { pool, fetch } = setup();
  pool.intercept({ path: IN_RELEASE }).reply(302, "", { headers: { location: "/mirror2/InRelease" } });
  pool.intercept({ path: "/mirror2/InRelease" }).reply(200, "moved release");
  assert.equal((await fetchBytes(fetch, url, fast)).bytes.toString(), "moved release");
});

function debEntry(bytes: Buffer): PackageEntry {
  return {
    package: "hello",
    version: "1.0-1",
    architecture: "amd64",
    filename: "pool/main/h/hello/hello_1.0-1_amd64.deb",
    size: bytes.length,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    essential: false,
    paragraph: "",
    repoUri: `${MIRROR}/debian`,
  };
}

test("a .deb whose connection drops mid-body is downloaded again; if it keeps dropping, nothing unverified stays", async (t) => {
  const cacheDir = await mkdtemp(join(tmpdir(), "suture-fetch-faults-"));
  t.after(() => rm(cacheDir, { recursive: true, force: true }));
  const deb = Buffer.alloc(200_000, 7);
  const entry = debEntry(deb);
  const path = "/debian/pool/main/h/hello/hello_1.0-1_amd64.deb";
  const headers = { "content-length": String(deb.length) };

  const agent = mockAgent();
  const pool = agent.get(MIRROR);
  pool.intercept({ path }).reply(200, deb, { headers }).times(2);
  const truncating = new TruncatingDispatcher(agent, (p) => p === path, 1000, 1);
  const [file] = await downloadPackages([entry], {
    cacheDir,
    fetch: createHttpFetch({ dispatcher: truncating }),
    retries: 1,
  });
  assert.equal(truncating.truncated, 1);
  assert.deepEqual(await readFile(file!), deb);

  await rm(join(cacheDir, "debs"), { recursive: true });
  pool.intercept({ path }).reply(200, deb, { headers }).times(2);
  const alwaysCut = new TruncatingDispatcher(agent, (p) => p === path, 1000, 2);
  await assert.rejects(
    downloadPackages([entry], { cacheDir, fetch: createHttpFetch({ dispatcher: alwaysCut }), retries: 1 }),
    (e: unknown) => isSutureError(e, "NETWORK") && /other side closed/.test(e.message),
  );
  assert.equal(alwaysCut.truncated, 2);
  assert.deepEqual(await readdir(join(cacheDir, "debs")), []);
  assert.deepEqual(await readdir(join(cacheDir, "tmp")), []);
});
