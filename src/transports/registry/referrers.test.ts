/**
 * Referrers against registry behaviour the lab's registry (distribution 2.8: no referrers API,
 * If-Match ignored) cannot show: a registry with the referrers API, and a concurrent writer
 * changing the referrers tag between our read and our write (412). Through an in-process undici
 * MockAgent; test/e2e/cli-patch-attach.test.ts drives the real registry.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { mockAgent } from "../../../test/fakes/http-faults.ts";
import { MediaType } from "../../oci/media-types.ts";
import { pullScope, pushScope } from "./auth.ts";
import { RegistryClient } from "./client.ts";
import { addToReferrersTag, listReferrers, pushArtifact } from "./referrers.ts";

const ORIGIN = "https://registry.test";
const REPO = "lib/app";
const sha = (s: string | Uint8Array) => `sha256:${createHash("sha256").update(s).digest("hex")}`;
const subject = sha("image");
const TAG_PATH = `/v2/${REPO}/manifests/sha256-${subject.slice(7)}`;
const push = { scopes: [pushScope(REPO)], operation: `attach to ${REPO}` };
const pull = { scopes: [pullScope(REPO)], operation: `list referrers in ${REPO}` };

function setup() {
  const agent = mockAgent();
  const pool = agent.get(ORIGIN);
  pool.intercept({ path: "/v2/" }).reply(200, "{}").persist();
  const client = new RegistryClient("registry.test", {
    dispatcher: agent,
    credentials: null,
    retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 2 },
  });
  return { pool, client };
}

const descriptor = (name: string, artifactType: string) => ({
  mediaType: MediaType.ociManifest,
  digest: sha(name),
  size: 100,
  artifactType,
});

test("a registry with the referrers API is listed through it, filtered by artifactType, without reading the fallback tag", async () => {
  const { pool, client } = setup();
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [descriptor("vex", "application/openvex+json"), descriptor("sbom", "application/spdx+json")],
  });
  pool
    .intercept({ path: `/v2/${REPO}/referrers/${subject}?artifactType=application%2Fopenvex%2Bjson` })
    .reply(200, index, { headers: { "content-type": MediaType.ociIndex } });
  // No interceptor for the tag: reading it would fail the test (MockAgent refuses the network).
  const got = await listReferrers(client, REPO, subject, pull, "application/openvex+json");
  assert.equal(got.via, "api");
  assert.deepEqual(
    got.manifests.map((d) => d.digest),
    [sha("vex")],
  );
});

test("a registry without it (404) is listed through the sha256-<hex> tag; no tag yet is no referrers", async () => {
  const { pool, client } = setup();
  pool.intercept({ path: `/v2/${REPO}/referrers/${subject}` }).reply(404, "404 page not found");
  pool.intercept({ path: TAG_PATH }).reply(404, '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
  assert.deepEqual(await listReferrers(client, REPO, subject, pull), { manifests: [], via: "tag" });
});

test("pushing an artifact reports whether the registry acknowledged its subject (OCI-Subject)", async () => {
  const { pool, client } = setup();
  const bytes = new TextEncoder().encode("{}");
  const manifest = new TextEncoder().encode(
    JSON.stringify({ schemaVersion: 2, subject: { digest: subject } }),
  );
  const artifact = {
    manifest: { bytes: manifest, mediaType: MediaType.ociManifest, digest: sha(manifest) },
    blobs: [{ descriptor: { mediaType: MediaType.ociEmpty, digest: sha(bytes), size: 2 }, bytes }],
  };
  pool
    .intercept({ path: `/v2/${REPO}/blobs/${sha(bytes)}`, method: "HEAD" })
    .reply(200, "")
    .times(2);
  pool
    .intercept({ path: `/v2/${REPO}/manifests/${sha(manifest)}`, method: "PUT" })
    .reply(201, "", { headers: { "oci-subject": subject, "docker-content-digest": sha(manifest) } });
  assert.deepEqual(await pushArtifact(client, REPO, artifact, push), { subjectAccepted: true });
  pool
    .intercept({ path: `/v2/${REPO}/manifests/${sha(manifest)}`, method: "PUT" })
    .reply(201, "", { headers: { "docker-content-digest": sha(manifest) } });
  assert.deepEqual(await pushArtifact(client, REPO, artifact, push), { subjectAccepted: false });
});

test("the fallback tag is updated conditionally: a 412 (another writer got there first) re-reads and keeps both writers' entries", async () => {
  const { pool, client } = setup();
  const first = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [descriptor("old", "application/spdx+json")],
  });
  const second = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [descriptor("old", "application/spdx+json"), descriptor("theirs", "application/openvex+json")],
  });
  const ifMatch: (string | undefined)[] = [];
  const bodies: string[] = [];
  pool
    .intercept({ path: TAG_PATH, method: "GET" })
    .reply(200, first, { headers: { "content-type": MediaType.ociIndex, etag: '"first"' } });
  pool
    .intercept({ path: TAG_PATH, method: "GET" })
    .reply(200, second, { headers: { "content-type": MediaType.ociIndex, etag: '"second"' } });
  const record = (opts: { headers?: unknown; body?: unknown }) => {
    const h = opts.headers as Record<string, string>;
    ifMatch.push(h["if-match"]);
    bodies.push(Buffer.from(opts.body as Uint8Array).toString());
  };
  pool.intercept({ path: TAG_PATH, method: "PUT" }).reply((opts) => {
    record(opts);
    return { statusCode: 412, data: "" };
  });
  pool.intercept({ path: TAG_PATH, method: "PUT" }).reply((opts) => {
    record(opts);
    return { statusCode: 201, data: "" };
  });
  const ours = descriptor("ours", "application/vnd.in-toto+json");
  const written = await addToReferrersTag(client, REPO, subject, [ours], push);
  assert.deepEqual(ifMatch, ['"first"', '"second"']);
  const final = JSON.parse(bodies[1]!) as { manifests: { digest: string }[] };
  assert.deepEqual(
    final.manifests.map((d) => d.digest),
    [sha("old"), sha("theirs"), sha("ours")],
  );
  assert.equal(written.digest, sha(bodies[1]!));
});
