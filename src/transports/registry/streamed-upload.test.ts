/**
 * The streamed blob upload's protocol decisions a real registry does not make on demand, through
 * an in-process undici MockAgent (no sockets): a registry's minimum chunk length
 * (`OCI-Chunk-Min-Length`) is honoured, and a PATCH answer whose Range disagrees with what was
 * sent gives the upload up (DELETE) instead of closing a blob with a hole.
 * test/integration/streamed-upload.test.ts drives it against a real registry.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import { mockAgent } from "../../../test/fakes/http-faults.ts";
import type { ProgressEvent } from "../../progress/events.ts";
import { pushScope } from "./auth.ts";
import { RegistryClient } from "./client.ts";
import { beginStreamedUpload } from "./streamed-upload.ts";

const ORIGIN = "https://registry.test";
const REPO = "lib/app";
const UPLOADS = `/v2/${REPO}/blobs/uploads/`;
const MiB = 1024 * 1024;

function setup() {
  const agent = mockAgent();
  const pool = agent.get(ORIGIN);
  pool.intercept({ path: "/v2/" }).reply(200, "{}").persist();
  const client = new RegistryClient("registry.test", { dispatcher: agent, credentials: null });
  return { pool, client };
}

function digest(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

async function feed(upload: ReturnType<typeof beginStreamedUpload>, bytes: Buffer) {
  for (let at = 0; at < bytes.length; at += 64 * 1024) await upload.write(bytes.subarray(at, at + 64 * 1024));
  return upload.finish({ digest: digest(bytes), size: bytes.length });
}

test("chunks are at least the registry's OCI-Chunk-Min-Length, in order, each at the last Location", async () => {
  const { pool, client } = setup();
  const bytes = randomBytes(7 * MiB);
  pool
    .intercept({ path: UPLOADS, method: "POST" })
    .reply(202, "", { headers: { location: `${UPLOADS}s0`, "oci-chunk-min-length": String(3 * MiB) } });
  const ranges: string[] = [];
  pool
    .intercept({ path: (p) => p.startsWith(`${UPLOADS}s`) && !p.includes("?"), method: "PATCH" })
    .reply((req) => {
      const range = (req.headers as Record<string, string>)["content-range"]!;
      ranges.push(range);
      return {
        statusCode: 202,
        data: "",
        responseOptions: {
          headers: { location: `${UPLOADS}s${ranges.length}`, range: `0-${range.split("-")[1]}` },
        },
      };
    })
    .persist();
  let closedAt = "";
  pool.intercept({ path: (p) => p.includes("?digest="), method: "PUT" }).reply((req) => {
    closedAt = req.path;
    return {
      statusCode: 201,
      data: "",
      responseOptions: { headers: { "docker-content-digest": digest(bytes) } },
    };
  });
  const upload = beginStreamedUpload(client, REPO, {
    call: { scopes: [pushScope(REPO)], operation: `push ${REPO}` },
    chunkSize: MiB,
  });
  assert.equal(await feed(upload, bytes), true);
  // Contiguous, every chunk but the last at least the minimum, the whole blob covered.
  let next = 0;
  for (const [i, range] of ranges.entries()) {
    const [from, to] = range.split("-").map(Number) as [number, number];
    assert.equal(from, next, `chunk ${i} starts where the last ended`);
    if (i < ranges.length - 1) assert.ok(to - from + 1 >= 3 * MiB, `chunk ${i} (${range}) is at least 3 MiB`);
    next = to + 1;
  }
  assert.equal(next, bytes.length);
  assert.ok(ranges.length >= 2);
  assert.equal(closedAt, `${UPLOADS}s${ranges.length}?digest=${encodeURIComponent(digest(bytes))}`);
});

test("a PATCH answer acknowledging fewer bytes than sent: the upload is given up and its session deleted", async () => {
  const { pool, client } = setup();
  pool.intercept({ path: UPLOADS, method: "POST" }).reply(202, "", { headers: { location: `${UPLOADS}s0` } });
  pool
    .intercept({ path: `${UPLOADS}s0`, method: "PATCH" })
    .reply(202, "", { headers: { location: `${UPLOADS}s1`, range: "0-99" } });
  let deleted = 0;
  pool.intercept({ path: `${UPLOADS}s1`, method: "DELETE" }).reply(() => {
    deleted++;
    return { statusCode: 204, data: "" };
  });
  const events: ProgressEvent[] = [];
  const upload = beginStreamedUpload(client, REPO, {
    call: { scopes: [pushScope(REPO)], operation: `push ${REPO}` },
    chunkSize: MiB,
    progress: (e) => events.push(e),
  });
  assert.equal(await feed(upload, randomBytes(2 * MiB)), false, "no PUT: MockAgent would refuse it");
  assert.equal(deleted, 1);
  const said = events.filter((e) => e.type === "info");
  assert.equal(said.length, 1);
  assert.match(
    said[0]!.type === "info" ? said[0]!.message : "",
    /could not be uploaded as it was written \(REGISTRY: registry\.test acknowledged bytes 0-99 after a chunk ending at \d+\): it is uploaded whole/,
  );
});
