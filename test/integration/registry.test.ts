import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { access, chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { isSutureError } from "../../src/errors/errors.ts";
import { copyImage } from "../../src/image/copy.ts";
import { sha256Digest } from "../../src/image/digest.ts";
import { loadImage, readAll } from "../../src/image/image.ts";
import type { Descriptor, RawManifest } from "../../src/oci/manifest.ts";
import { MediaType } from "../../src/oci/media-types.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { parseReference } from "../../src/ref/reference.ts";
import {
  listTags,
  openRegistrySink,
  openRegistrySource,
  type RegistryOptions,
  resolveManifest,
} from "../../src/transports/registry/registry.ts";
import { buildIndex, buildRandomImage, memorySource, type RandomImage } from "../lab/random-image.ts";
import { type LabRegistry, type RegistryAuthMode, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, describe, test } = await requiring("loopback", "tool:docker-registry", "tool:skopeo");

const run = promisify(execFile);
const modes: RegistryAuthMode[] = ["none", "htpasswd", "token"];

/** Options that make the transport use the lab's credentials (from its Docker config dir). */
function labOptions(lab: LabRegistry, extra: RegistryOptions = {}): RegistryOptions {
  return { dockerConfig: lab.dockerConfigDir, ...extra };
}

/** The lab's credentials given directly: for requests through a proxy on another port. */
function labCredentials(lab: LabRegistry): RegistryOptions["credentials"] {
  return lab.username ? { username: lab.username, password: lab.password, source: "test" } : null;
}

async function push(
  host: string,
  name: string,
  image: { manifest: RawManifest; blobs: Map<string, Buffer> },
  options: RegistryOptions,
): Promise<void> {
  const sink = await openRegistrySink(parseReference(`${host}/${name}`), options);
  await copyImage(memorySource("memory", image.manifest, image.blobs), sink);
}

/** Read an image back through the source and check every byte against what was generated. */
async function assertReadsBack(
  reference: string,
  image: RandomImage,
  options: RegistryOptions,
): Promise<void> {
  const source = await openRegistrySource(parseReference(reference), options);
  const root = await source.rootManifest();
  assert.equal(root.digest, image.manifest.digest);
  assert.equal(root.mediaType, image.manifest.mediaType);
  assert.deepEqual(Buffer.from(root.bytes), Buffer.from(image.manifest.bytes));
  const loaded = await loadImage(source, root, reference);
  assert.deepEqual(loaded.config.rootfs.diff_ids, image.diffIds);
  for (const layer of loaded.parsed.layers) {
    const bytes = await readAll(await source.blob(layer), 1 << 30);
    assert.equal(sha256Digest(bytes), layer.digest);
    assert.deepEqual(bytes, image.blobs.get(layer.digest));
  }
  await source.close();
}

async function skopeoInspect(lab: LabRegistry, name: string): Promise<{ Digest: string; Layers: string[] }> {
  const args = ["inspect", "--tls-verify=false"];
  if (lab.username) args.push("--creds", `${lab.username}:${lab.password}`);
  const { stdout } = await run("skopeo", [...args, `docker://${lab.host}/${name}`]);
  return JSON.parse(stdout);
}

interface Recorded {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

/** What a failure-injection hook may do with a request: answer it itself or pass it on. */
type Hook = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  forward: (alter?: (body: Buffer) => Buffer) => void,
) => boolean | Promise<boolean>;

interface Proxy {
  host: string;
  requests: Recorded[];
  stop(): Promise<void>;
}

/**
 * A pass-through proxy in front of the real registry that records every request and lets a hook
 * answer in the registry's place: failures a real registry cannot be made to produce. The Host
 * header is passed on, so the registry's upload Locations point back at the proxy.
 */
async function startProxy(target: string, hook?: Hook, listenHost = "127.0.0.1"): Promise<Proxy> {
  const [targetHost, targetPort] = target.split(":");
  const requests: Recorded[] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method!, url: req.url!, headers: req.headers });
    const forward = (alter?: (body: Buffer) => Buffer) => {
      const upstream = http.request(
        {
          host: targetHost,
          port: Number(targetPort),
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (up) => {
          if (!alter) {
            res.writeHead(up.statusCode!, up.headers);
            up.pipe(res);
            return;
          }
          const chunks: Buffer[] = [];
          up.on("data", (c: Buffer) => chunks.push(c));
          up.on("end", () => {
            const body = alter(Buffer.concat(chunks));
            res.writeHead(up.statusCode!, { ...up.headers, "content-length": String(body.length) });
            res.end(body);
          });
        },
      );
      upstream.on("error", () => res.destroy());
      req.pipe(upstream);
    };
    void (async () => {
      if (hook && (await hook(req, res, forward))) return;
      forward();
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, listenHost, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `${listenHost}:${port}`,
    requests,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Answer a request after draining its body (so the client sees the answer, not a reset). */
function answer(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  status: number,
  headers = {},
  body = "",
): void {
  req.resume();
  req.on("end", () => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(body);
  });
}

const blobGet = (req: http.IncomingMessage) => req.method === "GET" && /\/blobs\/sha256:/.test(req.url ?? "");

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

describe("registry transport against a real docker-registry", () => {
  const labs = new Map<RegistryAuthMode, LabRegistry>();
  let work: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "suture-registry-test-"));
    const started = await Promise.all(modes.map((auth) => startRegistry({ auth })));
    for (const lab of started) labs.set(lab.auth, lab);
  });
  after(async () => {
    await Promise.all([...labs.values()].map((lab) => lab.stop()));
    await rm(work, { recursive: true, force: true });
  });

  for (const mode of modes) {
    describe(`${mode} auth`, () => {
      test("OCI and Docker images pushed by the sink read back byte for byte, and skopeo sees them", async () => {
        const lab = labs.get(mode)!;
        for (const format of ["oci", "docker"] as const) {
          const image = await buildRandomImage({ format });
          const name = `roundtrip/${format}:v1`;
          await push(lab.host, name, image, labOptions(lab));
          await assertReadsBack(`${lab.host}/${name}`, image, labOptions(lab));
          await assertReadsBack(
            `${lab.host}/roundtrip/${format}@${image.manifest.digest}`,
            image,
            labOptions(lab),
          );
          const inspected = await skopeoInspect(lab, name);
          assert.equal(inspected.Digest, image.manifest.digest);
          assert.deepEqual(inspected.Layers, image.layerDigests);
          const head = await resolveManifest(parseReference(`${lab.host}/${name}`), labOptions(lab));
          assert.equal(head?.digest, image.manifest.digest);
          assert.equal(head?.mediaType, image.manifest.mediaType);
        }
        if (lab.tokenServer) {
          // One token per scope set, reused: not one per request.
          const pushTokens = lab.tokenServer.requests.filter((r) =>
            r.scopes.includes("repository:roundtrip/oci:pull,push"),
          );
          assert.equal(pushTokens.length, 1);
        }
      });

      test("blobs in another repository are mounted instead of uploaded", async () => {
        const lab = labs.get(mode)!;
        const image = await buildRandomImage({ layers: 3 });
        await push(lab.host, "mount/src:v1", image, labOptions(lab));
        const events: ProgressEvent[] = [];
        const source = await openRegistrySource(parseReference(`${lab.host}/mount/src:v1`), labOptions(lab));
        const sink = await openRegistrySink(parseReference(`${lab.host}/mount/dst:v1`), labOptions(lab));
        await copyImage(source, sink, {
          mountFrom: { registry: lab.host, repository: "mount/src" },
          progress: (e) => events.push(e),
        });
        const actions = events.flatMap((e) => (e.type === "blob" ? [e.action] : []));
        assert.deepEqual(actions, ["mount", "mount", "mount", "mount"], "config and three layers mounted");
        await assertReadsBack(`${lab.host}/mount/dst:v1`, image, labOptions(lab));
        if (lab.tokenServer) {
          const mountToken = lab.tokenServer.requests.find(
            (r) =>
              r.scopes.includes("repository:mount/dst:pull,push") &&
              r.scopes.includes("repository:mount/src:pull"),
          );
          assert.ok(mountToken, "the token for the mount asked for pull on the source repository too");
        }
      });

      test("a multi-MB blob is uploaded in chunks with Content-Range, streamed from its opener", async () => {
        const lab = labs.get(mode)!;
        const proxy = await startProxy(lab.host);
        try {
          const size = 5 * 1024 * 1024 + 123;
          const file = join(work, `big-${mode}.bin`);
          await writeFile(file, randomBytes(size));
          const digest = `sha256:${createHash("sha256")
            .update(await readFile(file))
            .digest("hex")}`;
          const d: Descriptor = { mediaType: MediaType.ociLayerGzip, digest, size };
          const options: RegistryOptions = {
            credentials: labCredentials(lab),
            chunkThreshold: 1024 * 1024,
            chunkSize: 1024 * 1024,
          };
          let opened = 0;
          const events: ProgressEvent[] = [];
          const sink = await openRegistrySink(parseReference(`${proxy.host}/chunked/blob:v1`), options);
          await sink.writeBlob(
            d,
            async () => {
              opened++;
              return createReadStream(file, { highWaterMark: 256 * 1024 });
            },
            { progress: (e) => events.push(e) },
          );
          assert.equal(opened, 1);
          const patches = proxy.requests.filter((r) => r.method === "PATCH");
          assert.equal(patches.length, 6);
          assert.deepEqual(
            patches.map((p) => p.headers["content-range"]),
            [0, 1, 2, 3, 4, 5].map((i) => `${i * 1048576}-${Math.min(size, (i + 1) * 1048576) - 1}`),
          );
          const final = proxy.requests.filter((r) => r.method === "PUT");
          assert.equal(final.length, 1);
          assert.match(final[0]!.url, new RegExp(`digest=${encodeURIComponent(digest)}`));
          const last = events.at(-1);
          assert.deepEqual(last, { type: "blob", action: "upload", digest, bytes: size, total: size });

          const downloads: ProgressEvent[] = [];
          const source = await openRegistrySource(
            parseReference(`${lab.host}/chunked/blob:v1`),
            labOptions(lab, { progress: (e) => downloads.push(e) }),
          );
          const stream = await source.blob(d);
          const hash = createHash("sha256");
          for await (const c of stream) hash.update(c as Buffer);
          assert.equal(`sha256:${hash.digest("hex")}`, digest);
          assert.deepEqual(downloads.at(-1), {
            type: "blob",
            action: "download",
            digest,
            bytes: size,
            total: size,
          });
          assert.ok(downloads.length >= 6, "progress is reported as the download goes, not only at the end");
        } finally {
          await proxy.stop();
        }
      });

      if (mode === "none") return;

      test("wrong credentials fail with UNAUTHORIZED naming the registry and the fix, and push nothing", async () => {
        const lab = labs.get(mode)!;
        const image = await buildRandomImage();
        const wrong = { username: lab.username!, password: "not-the-password", source: "test" };
        await assert.rejects(push(lab.host, "wrong/creds:v1", image, { credentials: wrong }), (e) => {
          assert.ok(isSutureError(e, "UNAUTHORIZED"), String(e));
          assert.equal(e.retryable, false);
          assert.match(
            e.message,
            new RegExp(
              `^authentication failed for ${lab.host} \\(push wrong/creds\\): check docker login / credentials`,
            ),
          );
          assert.doesNotMatch(e.message, /not-the-password/);
          return true;
        });
        await assert.rejects(push(lab.host, "wrong/creds:v1", image, { credentials: null }), (e) => {
          assert.ok(isSutureError(e, "UNAUTHORIZED"), String(e));
          assert.match(e.message, new RegExp(`requires authentication .*docker login ${lab.host}`));
          return true;
        });
        await assert.rejects(listTags(parseReference(`${lab.host}/wrong/creds`), labOptions(lab)), (e) =>
          isSutureError(e, "NOT_FOUND"),
        );
        await assert.rejects(access(join(lab.storageDir, "docker/registry/v2/repositories/wrong")));
      });

      test("credentials come from a docker-credential helper named in config.json", async () => {
        const lab = labs.get(mode)!;
        const dir = join(work, `helper-${mode}`);
        const bin = join(dir, "bin");
        await mkdir(bin, { recursive: true });
        const helper = join(bin, "docker-credential-suturetest");
        const log = join(dir, "helper.log");
        await writeFile(
          helper,
          `#!/bin/sh\nread server\necho "$1 $server" >> ${log}\n` +
            `if [ "$server" = "${lab.host}" ]; then echo '{"ServerURL":"${lab.host}","Username":"${lab.username}","Secret":"${lab.password}"}'; exit 0; fi\n` +
            `echo "credentials not found in native keychain"; exit 1\n`,
        );
        await chmod(helper, 0o755);
        await writeFile(
          join(dir, "config.json"),
          JSON.stringify({ credHelpers: { [lab.host]: "suturetest" } }),
        );
        const savedPath = process.env.PATH;
        process.env.PATH = `${bin}${delimiter}${savedPath}`;
        try {
          const image = await buildRandomImage();
          await push(lab.host, "helper/img:v1", image, { dockerConfig: dir });
          await assertReadsBack(`${lab.host}/helper/img:v1`, image, { dockerConfig: dir });
        } finally {
          process.env.PATH = savedPath;
        }
        const calls = (await readFile(log, "utf8")).trim().split("\n");
        assert.ok(calls.length >= 1);
        for (const c of calls) assert.equal(c, `get ${lab.host}`);
      });

      if (mode !== "token") return;

      test("an identitytoken in config.json is exchanged through the OAuth2 refresh-token flow", async () => {
        const lab = labs.get(mode)!;
        const dir = join(work, "identity");
        await mkdir(dir, { recursive: true });
        await writeFile(
          join(dir, "config.json"),
          JSON.stringify({ auths: { [lab.host]: { identitytoken: lab.identityToken } } }),
        );
        const image = await buildRandomImage();
        await push(lab.host, "identity/img:v1", image, { dockerConfig: dir });
        await assertReadsBack(`${lab.host}/identity/img:v1`, image, { dockerConfig: dir });
        const posts = lab.tokenServer!.requests.filter((r) =>
          r.scopes.some((s) => s.includes("identity/img")),
        );
        assert.ok(posts.length >= 2);
        for (const p of posts) {
          assert.equal(p.method, "POST");
          assert.equal(p.flow, "refresh_token");
          assert.equal(p.status, 200);
        }
      });
    });
  }

  describe("failures and edge cases", () => {
    test("an unreachable registry is a NETWORK error that says to check it is running", async () => {
      const host = `127.0.0.1:${await freePort()}`;
      const source = await openRegistrySource(parseReference(`${host}/nothing/here:v1`), {});
      const started = Date.now();
      await assert.rejects(source.rootManifest(), (e) => {
        assert.ok(isSutureError(e, "NETWORK"), String(e));
        assert.match(e.message, new RegExp(`cannot reach ${host} \\(pull nothing/here\\): .*ECONNREFUSED`));
        assert.match(e.message, /is the registry running\? check the address/);
        return true;
      });
      assert.ok(Date.now() - started < 5000, "refused connections are not retried for long");
    });

    test("a missing tag or blob is NOT_FOUND naming what is missing", async () => {
      const lab = labs.get("none")!;
      const image = await buildRandomImage();
      await push(lab.host, "missing/img:v1", image, {});
      const source = await openRegistrySource(parseReference(`${lab.host}/missing/img:v2`), {});
      await assert.rejects(source.rootManifest(), (e) => {
        assert.ok(isSutureError(e, "NOT_FOUND"), String(e));
        assert.match(
          e.message,
          /^manifest missing\/img:v2 not found on 127\.0\.0\.1:\d+ \(pull missing\/img\)/,
        );
        return true;
      });
      const absent = sha256Digest("not pushed anywhere");
      await assert.rejects(
        source.blob({ mediaType: MediaType.ociLayerGzip, digest: absent, size: 19 }),
        (e) => isSutureError(e, "NOT_FOUND") && e.message.includes(`blob ${absent}`),
      );
      const sink = await openRegistrySink(parseReference(`${lab.host}/missing/img:v1`), {});
      assert.equal(
        await sink.hasBlob({ mediaType: MediaType.ociLayerGzip, digest: absent, size: 19 }),
        false,
      );
      assert.equal(
        await sink.hasBlob({ mediaType: MediaType.ociConfig, digest: image.configDigest, size: 1 }),
        true,
      );
    });

    test("altered blob or manifest bytes from the registry are a DIGEST_MISMATCH", async () => {
      const lab = labs.get("none")!;
      const image = await buildRandomImage();
      await push(lab.host, "tamper/img:v1", image, {});
      const flip = (b: Buffer) => {
        const c = Buffer.from(b);
        c[c.length >> 1]! ^= 0xff;
        return c;
      };
      const proxy = await startProxy(lab.host, (req, _res, forward) => {
        if (blobGet(req) || (req.method === "GET" && req.url?.includes("/manifests/sha256:"))) {
          forward(flip);
          return true;
        }
        return false;
      });
      try {
        const source = await openRegistrySource(parseReference(`${proxy.host}/tamper/img:v1`), {});
        const root = await source.rootManifest(); // by tag: served unaltered
        assert.equal(root.digest, image.manifest.digest);
        const layer = {
          mediaType: MediaType.ociLayerGzip,
          digest: image.layerDigests[0]!,
          size: image.blobs.get(image.layerDigests[0]!)!.length,
        };
        await assert.rejects(readAll(await source.blob(layer), 1 << 30), (e) => {
          assert.ok(isSutureError(e, "DIGEST_MISMATCH"), String(e));
          assert.match(
            e.message,
            new RegExp(`blob ${layer.digest} from ${proxy.host}/tamper/img has digest`),
          );
          return true;
        });
        await assert.rejects(
          source.manifest({ mediaType: root.mediaType, digest: root.digest, size: root.bytes.length }),
          (e) => isSutureError(e, "DIGEST_MISMATCH"),
        );
      } finally {
        await proxy.stop();
      }
    });

    test("503 twice then success: downloads and uploads succeed after retrying", async () => {
      const lab = labs.get("none")!;
      const image = await buildRandomImage();
      await push(lab.host, "flaky/img:v1", image, {});
      const failures = new Map<string, number>();
      const proxy = await startProxy(lab.host, (req, res) => {
        const key = blobGet(req)
          ? "get"
          : req.method === "PUT" && req.url?.includes("/blobs/uploads/")
            ? "put"
            : "";
        if (!key) return false;
        const n = failures.get(key) ?? 0;
        if (n >= 2) return false;
        failures.set(key, n + 1);
        answer(req, res, 503, {}, '{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}');
        return true;
      });
      try {
        const layer = image.layerDigests[0]!;
        const d = { mediaType: MediaType.ociLayerGzip, digest: layer, size: image.blobs.get(layer)!.length };
        const source = await openRegistrySource(parseReference(`${proxy.host}/flaky/img:v1`), {});
        const bytes = await readAll(await source.blob(d), 1 << 30);
        assert.equal(sha256Digest(bytes), layer);
        assert.equal(proxy.requests.filter((r) => r.method === "GET" && r.url.endsWith(layer)).length, 3);

        const fresh = randomBytes(4096);
        const fd = { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(fresh), size: fresh.length };
        let opened = 0;
        const sink = await openRegistrySink(parseReference(`${proxy.host}/flaky/img:v2`), {});
        await sink.writeBlob(fd, async () => {
          opened++;
          return Readable.from([fresh]);
        });
        assert.equal(opened, 3, "each attempt re-opens the stream");
        assert.equal(await sink.hasBlob(fd), true);
      } finally {
        await proxy.stop();
      }
    });

    test("an opener that yields other bytes than its descriptor fails with DIGEST_MISMATCH, without retries", async () => {
      const lab = labs.get("none")!;
      const promised = randomBytes(3000);
      const d = { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(promised), size: promised.length };
      const sink = await openRegistrySink(parseReference(`${lab.host}/liar/img:v1`), {});
      let opened = 0;
      await assert.rejects(
        sink.writeBlob(d, async () => {
          opened++;
          return Readable.from([randomBytes(3000)]);
        }),
        (e) => isSutureError(e, "DIGEST_MISMATCH"),
      );
      assert.equal(opened, 1);
      assert.equal(await sink.hasBlob(d), false);

      opened = 0;
      await assert.rejects(
        sink.writeBlob(d, async () => {
          opened++;
          const s = new Readable({ read() {} });
          s.push(promised.subarray(0, 100));
          setImmediate(() => s.destroy(Object.assign(new Error("disk went away"), { code: "EIO" })));
          return s;
        }),
        (e) => {
          assert.ok(isSutureError(e, "IO"), String(e));
          assert.match(
            e.message,
            new RegExp(`reading blob ${d.digest} to upload it failed: EIO: disk went away`),
          );
          return true;
        },
      );
      assert.equal(opened, 1, "a local read failure is not the registry's and is not retried");
    });

    test("a mount the registry cannot do becomes an upload into the session it opened", async () => {
      const lab = labs.get("none")!;
      const proxy = await startProxy(lab.host);
      try {
        const bytes = randomBytes(2048);
        const d = { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(bytes), size: bytes.length };
        const events: ProgressEvent[] = [];
        const sink = await openRegistrySink(parseReference(`${proxy.host}/fallback/img:v1`), {});
        await sink.writeBlob(d, async () => Readable.from([bytes]), {
          mountFrom: { registry: proxy.host, repository: "fallback/empty" },
          progress: (e) => events.push(e),
        });
        assert.deepEqual(
          proxy.requests.map((r) => r.method),
          ["GET", "HEAD", "POST", "PUT"],
          "ping, existence check, mount answered 202, upload into that session",
        );
        assert.match(proxy.requests[2]!.url, /mount=sha256%3A[0-9a-f]{64}&from=fallback%2Fempty/);
        const last = events.at(-1);
        assert.equal(last?.type === "blob" ? last.action : last?.type, "upload");
        assert.equal(await sink.hasBlob(d), true);
      } finally {
        await proxy.stop();
      }
    });

    test("a connection reset before the answer is retried", async () => {
      const lab = labs.get("none")!;
      const image = await buildRandomImage();
      await push(lab.host, "reset/img:v1", image, {});
      let resets = 0;
      const proxy = await startProxy(lab.host, (req) => {
        if (!blobGet(req) || resets >= 1) return false;
        resets++;
        req.socket.destroy();
        return true;
      });
      try {
        const layer = image.layerDigests[0]!;
        const d = { mediaType: MediaType.ociLayerGzip, digest: layer, size: image.blobs.get(layer)!.length };
        const source = await openRegistrySource(parseReference(`${proxy.host}/reset/img:v1`), {});
        assert.equal(sha256Digest(await readAll(await source.blob(d), 1 << 30)), layer);
        assert.equal(resets, 1);
      } finally {
        await proxy.stop();
      }
    });

    test("429 with Retry-After is waited out; endless 503s give up after the bounded attempts", async () => {
      const lab = labs.get("none")!;
      const image = await buildRandomImage();
      await push(lab.host, "limited/img:v1", image, {});
      let limited = false;
      const proxy = await startProxy(lab.host, (req, res) => {
        if (req.method === "GET" && req.url === "/v2/limited/img/manifests/v1" && !limited) {
          limited = true;
          answer(
            req,
            res,
            429,
            { "retry-after": "1" },
            '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
          );
          return true;
        }
        if (req.url?.startsWith("/v2/limited/img/manifests/broken")) {
          answer(req, res, 503);
          return true;
        }
        return false;
      });
      try {
        const started = Date.now();
        const source = await openRegistrySource(parseReference(`${proxy.host}/limited/img:v1`), {});
        assert.equal((await source.rootManifest()).digest, image.manifest.digest);
        assert.ok(Date.now() - started >= 950, "waited for Retry-After");

        const broken = await openRegistrySource(parseReference(`${proxy.host}/limited/img:broken`), {
          retry: { attempts: 3, baseDelayMs: 10 },
        });
        await assert.rejects(broken.rootManifest(), (e) => {
          assert.ok(isSutureError(e, "REGISTRY"), String(e));
          assert.equal(e.retryable, true);
          assert.match(e.message, /HTTP 503 Service Unavailable/);
          return true;
        });
        assert.equal(proxy.requests.filter((r) => r.url.endsWith("/manifests/broken")).length, 3);
      } finally {
        await proxy.stop();
      }
    });

    test("a blob redirect to another host is followed without the Authorization header", async () => {
      const lab = labs.get("token")!;
      const image = await buildRandomImage();
      await push(lab.host, "redirect/img:v1", image, labOptions(lab));
      const seen: http.IncomingHttpHeaders[] = [];
      const storage = http.createServer((req, res) => {
        seen.push(req.headers);
        const digest = req.url!.slice("/storage/".length);
        const blob = image.blobs.get(digest);
        res.writeHead(blob ? 200 : 404).end(blob);
      });
      await new Promise<void>((resolve) => storage.listen(0, "127.0.0.2", resolve));
      const storageHost = `127.0.0.2:${(storage.address() as AddressInfo).port}`;
      const proxy = await startProxy(lab.host, (req, res) => {
        if (!blobGet(req)) return false;
        const digest = req.url!.split("/blobs/")[1]!;
        res.writeHead(307, { location: `http://${storageHost}/storage/${digest}` }).end();
        return true;
      });
      try {
        const source = await openRegistrySource(parseReference(`${proxy.host}/redirect/img:v1`), {
          credentials: labCredentials(lab),
        });
        const layer = image.layerDigests[1]!;
        const bytes = await readAll(
          await source.blob({
            mediaType: MediaType.ociLayerGzip,
            digest: layer,
            size: image.blobs.get(layer)!.length,
          }),
          1 << 30,
        );
        assert.equal(sha256Digest(bytes), layer);
        const toRegistry = proxy.requests.find((r) => r.url.endsWith(layer));
        assert.match(String(toRegistry?.headers.authorization), /^Bearer /, "the registry got the token");
        assert.equal(seen.length, 1);
        assert.equal(seen[0]!.authorization, undefined, "the storage host did not");
      } finally {
        await proxy.stop();
        await new Promise((resolve) => storage.close(resolve));
      }
    });

    test("a schema 1 manifest is rejected with a clear error", async () => {
      const lab = labs.get("none")!;
      const proxy = await startProxy(lab.host, (req, res) => {
        if (!req.url?.includes("/manifests/")) return false;
        const body = JSON.stringify({
          schemaVersion: 1,
          name: "old/img",
          tag: "v1",
          fsLayers: [],
          history: [],
        });
        answer(req, res, 200, { "content-type": MediaType.dockerManifestV1Signed }, body);
        return true;
      });
      try {
        const source = await openRegistrySource(parseReference(`${proxy.host}/old/img:v1`), {});
        await assert.rejects(source.rootManifest(), (e) => {
          assert.ok(isSutureError(e, "INVALID_MANIFEST"), String(e));
          assert.match(e.message, /schema 1 manifest, which suture does not support: re-push/);
          return true;
        });
      } finally {
        await proxy.stop();
      }
    });

    test("an index goes up with its children by digest; a digest-only reference commits by digest", async () => {
      const lab = labs.get("none")!;
      const amd = await buildRandomImage({ architecture: "amd64" });
      const arm = await buildRandomImage({ architecture: "arm64" });
      const index = buildIndex([
        { image: amd, architecture: "amd64" },
        { image: arm, architecture: "arm64" },
      ]);
      await push(lab.host, "multi/img:v1", index, {});
      const source = await openRegistrySource(parseReference(`${lab.host}/multi/img:v1`), {});
      const root = await source.rootManifest();
      assert.equal(root.digest, index.manifest.digest);
      assert.equal(root.mediaType, MediaType.ociIndex);
      const { stdout } = await run("skopeo", [
        "inspect",
        "--raw",
        "--tls-verify=false",
        `docker://${lab.host}/multi/img:v1`,
      ]);
      assert.equal(sha256Digest(stdout), index.manifest.digest);
      await assertReadsBack(`${lab.host}/multi/img@${arm.manifest.digest}`, arm, {});

      const pinned = await buildRandomImage();
      await push(lab.host, `multi/pinned@${pinned.manifest.digest}`, pinned, {});
      await assertReadsBack(`${lab.host}/multi/pinned@${pinned.manifest.digest}`, pinned, {});
      // No tag was created (distribution answers NAME_UNKNOWN for a repository without tags).
      const tags = await listTags(parseReference(`${lab.host}/multi/pinned`), {}).catch((e) =>
        isSutureError(e, "NOT_FOUND") ? [] : Promise.reject(e),
      );
      assert.deepEqual(tags, []);
    });

    test("listTags follows Link pagination", async () => {
      const lab = labs.get("none")!;
      const image = await buildRandomImage();
      for (const tag of ["a", "b", "c"]) await push(lab.host, `tags/img:${tag}`, image, {});
      const tags = await listTags(parseReference(`${lab.host}/tags/img`), { pageSize: 2 });
      assert.deepEqual(tags.sort(), ["a", "b", "c"]);
    });
  });
});
