/**
 * A blob uploaded as it is written (issue 15; the registry sink's beginBlobUpload, which the patch
 * layer uses) against Debian's docker-registry (CNCF distribution 2.8) on loopback: chunked
 * PATCHes with Content-Range, each answer's Location followed, closed with PUT ?digest=, under
 * every auth mode; afterwards the sink finds the blob and does not upload it again. Behind a
 * loopback proxy that misbehaves on purpose: a 416 or 503 PATCH, a refused session, a byte
 * altered on the way, an interrupted writer.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { isSutureError } from "../../src/errors/errors.ts";
import { sha256Digest } from "../../src/image/digest.ts";
import { readAll } from "../../src/image/image.ts";
import type { StreamingBlobUpload } from "../../src/image/source.ts";
import type { Descriptor } from "../../src/oci/manifest.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { parseReference } from "../../src/ref/reference.ts";
import {
  openRegistrySink,
  openRegistrySource,
  type RegistryOptions,
} from "../../src/transports/registry/registry.ts";
import { type LoopbackProxy, type ProxyFaults, startCountingProxy } from "../lab/archive-mirror.ts";
import { type LabRegistry, type RegistryAuthMode, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, describe, test } = await requiring("loopback", "tool:docker-registry");

const CHUNK = 1024 * 1024;
const registries: LabRegistry[] = [];
const proxies: LoopbackProxy[] = [];
after(async () => {
  for (const p of proxies) await p.stop();
  for (const r of registries) await r.stop();
});

async function lab(auth: RegistryAuthMode): Promise<LabRegistry> {
  const r = await startRegistry({ auth });
  registries.push(r);
  return r;
}

async function proxyTo(r: LabRegistry, faults: ProxyFaults = {}): Promise<LoopbackProxy> {
  const p = await startCountingProxy(r.host, faults);
  proxies.push(p);
  return p;
}

/** Options reaching `r` through `host` (a proxy of it) with its credentials. */
function options(r: LabRegistry, events: ProgressEvent[], extra: RegistryOptions = {}): RegistryOptions {
  return {
    credentials: r.username ? { username: r.username, password: r.password, source: "test" } : null,
    progress: (e) => events.push(e),
    streamChunkSize: CHUNK,
    retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 2 },
    ...extra,
  };
}

/** Feed `bytes` to the upload in 64 KiB pieces, as a compressor would, then finish it. */
async function stream(upload: StreamingBlobUpload, bytes: Buffer): Promise<boolean> {
  for (let at = 0; at < bytes.length; at += 64 * 1024) await upload.write(bytes.subarray(at, at + 64 * 1024));
  return upload.finish({ digest: sha256Digest(bytes), size: bytes.length });
}

function descriptor(bytes: Buffer): Descriptor {
  return {
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: sha256Digest(bytes),
    size: bytes.length,
  };
}

const uploads = (p: LoopbackProxy, method: string, repo: string) =>
  p.requests.filter((r) => r.method === method && r.path.startsWith(`/v2/${repo}/blobs/uploads/`));

describe("a blob uploaded as it is written", () => {
  for (const auth of ["none", "htpasswd", "token"] as const) {
    test(`${auth}: goes up in chunks, reads back byte for byte, and the sink does not upload it again`, async () => {
      const r = await lab(auth);
      const p = await proxyTo(r);
      const events: ProgressEvent[] = [];
      const ref = parseReference(`${p.host}/streamed/${auth}:1`);
      const sink = await openRegistrySink(ref, options(r, events));
      const bytes = randomBytes(5 * CHUNK + 12345);
      assert.equal(await stream(sink.beginBlobUpload!(), bytes), true);

      assert.equal(uploads(p, "POST", `streamed/${auth}`).length, 1, "one session");
      // Chunks of 1-2 MiB (the writer fills on while one is sent), so 3 to 6 of them.
      const chunks = uploads(p, "PATCH", `streamed/${auth}`).length;
      assert.ok(chunks >= 3 && chunks <= 6, `${chunks} chunks`);
      assert.equal(uploads(p, "PUT", `streamed/${auth}`).length, 1, "closed once, by digest");
      assert.ok(
        events.some(
          (e) => e.type === "info" && e.message.includes(`uploaded as it was written (${chunks} chunks)`),
        ),
      );

      const d = descriptor(bytes);
      assert.equal(await sink.hasBlob(d), true);
      await sink.writeBlob(d, () => assert.fail("the sink must not read the blob again"));
      const source = await openRegistrySource(ref, options(r, []));
      assert.ok((await readAll(await source.blob(d))).equals(bytes));
    });
  }

  test("two blobs streamed at once into one sink (an index's platforms) each get their own session", async () => {
    const r = await lab("token");
    const p = await proxyTo(r);
    const sink = await openRegistrySink(parseReference(`${p.host}/index/x:1`), options(r, []));
    const blobs = [randomBytes(3 * CHUNK + 7), randomBytes(2 * CHUNK + 9)];
    assert.deepEqual(await Promise.all(blobs.map((b) => stream(sink.beginBlobUpload!(), b))), [true, true]);
    assert.equal(uploads(p, "POST", "index/x").length, 2);
    for (const b of blobs) assert.equal(await sink.hasBlob(descriptor(b)), true);
  });

  for (const status of [416, 503]) {
    test(`a ${status} to a PATCH: the session is dropped, finish says false, and the sink uploads the blob whole`, async () => {
      const r = await lab("none");
      let patches = 0;
      const p = await proxyTo(r, {
        intercept: (req) => (req.method === "PATCH" && ++patches === 2 ? status : undefined),
      });
      const events: ProgressEvent[] = [];
      const sink = await openRegistrySink(parseReference(`${p.host}/faulty/x:1`), options(r, events));
      const bytes = randomBytes(3 * CHUNK);
      assert.equal(await stream(sink.beginBlobUpload!(), bytes), false);
      assert.equal(uploads(p, "DELETE", "faulty/x").length, 1, "the broken session is cancelled");
      assert.ok(
        events.some(
          (e) =>
            e.type === "info" && /could not be uploaded as it was written .*uploaded whole/.test(e.message),
        ),
      );
      const d = descriptor(bytes);
      assert.equal(await sink.hasBlob(d), false);
      let opened = 0;
      await sink.writeBlob(d, async () => {
        opened++;
        return Readable.from([bytes]);
      });
      assert.equal(opened, 1);
      assert.equal(await sink.hasBlob(d), true);
    });
  }

  test("a registry that refuses the session: nothing is sent, finish says false", async () => {
    const r = await lab("none");
    const p = await proxyTo(r, { intercept: (req) => (req.method === "POST" ? 405 : undefined) });
    const events: ProgressEvent[] = [];
    const sink = await openRegistrySink(parseReference(`${p.host}/refused/x:1`), options(r, events));
    assert.equal(await stream(sink.beginBlobUpload!(), randomBytes(2 * CHUNK)), false);
    assert.equal(uploads(p, "PATCH", "refused/x").length, 0);
    assert.ok(events.some((e) => e.type === "info" && /does not support this request/.test(e.message)));
  });

  test("a byte altered on the way: the registry refuses the digest and finish fails with DIGEST_MISMATCH", async () => {
    const r = await lab("none");
    const p = await proxyTo(r, {
      alterBody: (req, body) => {
        if (req.method !== "PATCH" || body.length === 0) return undefined;
        const altered = Buffer.from(body);
        altered[0]! ^= 0xff;
        return altered;
      },
    });
    const sink = await openRegistrySink(parseReference(`${p.host}/altered/x:1`), options(r, []));
    const bytes = randomBytes(CHUNK + 1);
    await assert.rejects(stream(sink.beginBlobUpload!(), bytes), (e: unknown) => {
      assert.ok(isSutureError(e, "DIGEST_MISMATCH"), String(e));
      assert.doesNotMatch(e.message, /\n/);
      assert.match(e.message, /not the bytes written/);
      return true;
    });
    assert.equal(await sink.hasBlob(descriptor(bytes)), false);
  });

  test("cancelled while a PATCH is on the wire: the session is deleted and nothing is stored", async () => {
    const r = await lab("none");
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let reached!: () => void;
    const atPatch = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const p = await proxyTo(r, {
      intercept: async (req) => {
        if (req.method !== "PATCH") return undefined;
        reached();
        await held;
        return undefined;
      },
    });
    const abort = new AbortController();
    const events: ProgressEvent[] = [];
    const sink = await openRegistrySink(
      parseReference(`${p.host}/cancelled/x:1`),
      options(r, events, { signal: abort.signal }),
    );
    const upload = sink.beginBlobUpload!();
    const bytes = randomBytes(2 * CHUNK);
    const writing = (async () => {
      for (let at = 0; at < bytes.length; at += 64 * 1024)
        await upload.write(bytes.subarray(at, at + 64 * 1024));
    })();
    await atPatch;
    abort.abort();
    await writing;
    await upload.cancel();
    release();
    assert.equal(uploads(p, "DELETE", "cancelled/x").length, 1, "the session is deleted");
    assert.ok(
      !events.some((e) => e.type === "info" && /could not be uploaded/.test(e.message)),
      "an interrupt is not a fallback",
    );
    const check = await openRegistrySink(parseReference(`${r.host}/cancelled/x:1`), options(r, []));
    assert.equal(await check.hasBlob(descriptor(bytes)), false);
  });
});
