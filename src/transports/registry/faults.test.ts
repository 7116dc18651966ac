/**
 * The registry client under faults, through an in-process undici MockAgent (no sockets: this runs
 * with the network off). test/integration/registry.test.ts drives the same client against a real
 * registry on loopback.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { test } from "node:test";
import type { Dispatcher } from "undici";
import {
  alwaysFail,
  busyThenAbort,
  busyThenOk,
  connectionReset,
  mockAgent,
  TruncatingDispatcher,
} from "../../../test/fakes/http-faults.ts";
import { isSutureError } from "../../errors/errors.ts";
import { MediaType } from "../../oci/media-types.ts";
import { getBlob, getManifest, MANIFEST_CAP } from "./api.ts";
import { pullScope } from "./auth.ts";
import { RegistryClient } from "./client.ts";

const ORIGIN = "https://registry.test";
const REPO = "lib/app";
const MANIFEST_PATH = `/v2/${REPO}/manifests/v1`;
const call = { scopes: [pullScope(REPO)], operation: `pull ${REPO}` };

const layer = Buffer.alloc(100_000, 3);
const layerDigest = `sha256:${createHash("sha256").update(layer).digest("hex")}`;
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: layerDigest, size: layer.length },
    layers: [],
  }),
);
const manifestHeaders = { "content-type": MediaType.ociManifest, "content-length": String(manifest.length) };

/** A MockAgent serving the registry's `/v2/` ping, and a client of it that retries quickly. */
function setup(options: { signal?: AbortSignal; dispatcher?: (agent: Dispatcher) => Dispatcher } = {}) {
  const agent = mockAgent();
  const pool = agent.get(ORIGIN);
  pool.intercept({ path: "/v2/" }).reply(200, "{}").persist();
  const client = new RegistryClient("registry.test", {
    dispatcher: options.dispatcher ? options.dispatcher(agent) : agent,
    credentials: null,
    signal: options.signal,
    retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 },
  });
  return { pool, client };
}

test("429 and 503 with Retry-After (seconds, then an HTTP date) are waited out, then the manifest is read", async () => {
  const { pool, client } = setup();
  busyThenOk(pool, MANIFEST_PATH, manifest, manifestHeaders);
  const started = Date.now();
  const got = await getManifest(client, REPO, "v1", call);
  assert.deepEqual(got.bytes, manifest);
  assert.equal(got.mediaType, MediaType.ociManifest);
  // One second after the first answer; the date (whole seconds) lies 1-2 s after the second.
  assert.ok(Date.now() - started >= 1950, `waited the registry's Retry-After (${Date.now() - started} ms)`);
});

test("a retry budget used up on 503s is a retryable REGISTRY error, after exactly the policy's attempts", async () => {
  const { pool, client } = setup();
  const server = alwaysFail(pool, MANIFEST_PATH, 503);
  await assert.rejects(getManifest(client, REPO, "v1", call), (e: unknown) => {
    assert.ok(isSutureError(e, "REGISTRY"), String(e));
    assert.match(e.message, /HTTP 503 Service Unavailable: the registry is having trouble; retry later/);
    assert.equal(e.retryable, true);
    return true;
  });
  assert.equal(server.attempts, 3);
});

test("a Retry-After beyond what the policy waits for fails at once", async () => {
  const { pool, client } = setup();
  pool.intercept({ path: MANIFEST_PATH }).reply(429, "", { headers: { "retry-after": "3600" } });
  const started = Date.now();
  await assert.rejects(getManifest(client, REPO, "v1", call), (e: unknown) => {
    assert.ok(isSutureError(e, "REGISTRY"), String(e));
    assert.match(e.message, /rate limiting requests/);
    return true;
  });
  assert.ok(Date.now() - started < 1000);
});

test("a connection reset is retried; one that keeps resetting is a NETWORK error naming the registry", async () => {
  const { pool, client } = setup();
  pool.intercept({ path: MANIFEST_PATH }).replyWithError(connectionReset());
  pool.intercept({ path: MANIFEST_PATH }).reply(200, manifest, { headers: manifestHeaders });
  assert.deepEqual((await getManifest(client, REPO, "v1", call)).bytes, manifest);

  pool.intercept({ path: MANIFEST_PATH }).replyWithError(connectionReset()).times(3);
  await assert.rejects(
    getManifest(client, REPO, "v1", call),
    (e: unknown) =>
      isSutureError(e, "NETWORK") &&
      /cannot reach registry\.test \(pull lib\/app\): .*ECONNRESET/.test(e.message),
  );
});

async function readStream(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test("a manifest cut off mid-body is fetched again; a blob cut off mid-body fails its stream with NETWORK", async () => {
  let truncating: TruncatingDispatcher | undefined;
  const cutFirst = (path: string) => (agent: Dispatcher) => {
    truncating = new TruncatingDispatcher(agent, (p) => p === path, 50, 1);
    return truncating;
  };
  const m = setup({ dispatcher: cutFirst(MANIFEST_PATH) });
  m.pool.intercept({ path: MANIFEST_PATH }).reply(200, manifest, { headers: manifestHeaders }).times(2);
  assert.deepEqual((await getManifest(m.client, REPO, "v1", call)).bytes, manifest);
  assert.equal(truncating!.truncated, 1);

  const blobPath = `/v2/${REPO}/blobs/${layerDigest}`;
  const b = setup({ dispatcher: cutFirst(blobPath) });
  b.pool
    .intercept({ path: blobPath })
    .reply(200, layer, { headers: { "content-length": String(layer.length) } });
  const blob = await getBlob(
    b.client,
    REPO,
    { mediaType: MediaType.ociLayer, digest: layerDigest, size: layer.length },
    call,
  );
  await assert.rejects(
    readStream(blob),
    (e: unknown) => isSutureError(e, "NETWORK") && /other side closed/.test(e.message),
  );
  assert.equal(truncating!.truncated, 1);
});

test("a manifest longer than the cap is refused, whether its length is announced or not", async () => {
  const { pool, client } = setup();
  const huge = Buffer.alloc(MANIFEST_CAP + 1, 0x20);
  pool.intercept({ path: MANIFEST_PATH }).reply(200, huge, {
    headers: { "content-length": String(huge.length), "content-type": MediaType.ociManifest },
  });
  await assert.rejects(
    getManifest(client, REPO, "v1", call),
    (e: unknown) =>
      isSutureError(e, "REGISTRY") &&
      new RegExp(`is ${huge.length} bytes, more than the ${MANIFEST_CAP} allowed`).test(e.message),
  );
  pool
    .intercept({ path: MANIFEST_PATH })
    .reply(200, huge, { headers: { "content-type": MediaType.ociManifest } });
  await assert.rejects(
    getManifest(client, REPO, "v1", call),
    (e: unknown) => isSutureError(e, "REGISTRY") && /is more than the \d+ bytes allowed/.test(e.message),
  );
});

test("abort during a Retry-After wait ends the pull at once with CANCELLED", async () => {
  const controller = new AbortController();
  const { pool, client } = setup({ signal: controller.signal });
  busyThenAbort(pool, MANIFEST_PATH, controller);
  const started = Date.now();
  await assert.rejects(getManifest(client, REPO, "v1", call), (e: unknown) => isSutureError(e, "CANCELLED"));
  assert.ok(Date.now() - started < 2000, `returned promptly (${Date.now() - started} ms)`);
});
