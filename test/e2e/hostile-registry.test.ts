import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startCountingProxy } from "../lab/archive-mirror.ts";
import { oneLineError } from "../lab/cli.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("loopback", "tool:docker-registry");

/**
 * A registry that lies, for what a real one cannot do: announce a 100 GB layer, stream more bytes
 * than a descriptor names, or trickle a layer so slowly that the copy can be interrupted in the
 * middle. It speaks just enough of the distribution API (ping, manifest by tag, blob by digest)
 * for `suture copy` to get to the blobs. Failure injection only: everything else in the e2e
 * tests runs against Debian's real docker-registry.
 */

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");

const sha256 = (b: Uint8Array | string) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

interface Blob {
  digest: string;
  size: number;
  /** Serve the blob: write to `res` however the scenario lies. */
  serve(res: http.ServerResponse): void;
}

interface Served {
  /** Blob requests by digest. */
  requests: Map<string, number>;
  /** Bytes written to blob responses whose connection then closed, by digest. */
  sentBeforeClose: Map<string, number>;
}

/** An image whose config is honest and whose layers are whatever the scenario says. */
function image(layers: Blob[]) {
  const diffIds = layers.map((l) => l.digest);
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      rootfs: { type: "layers", diff_ids: diffIds },
      config: {},
    }),
  );
  const configBlob: Blob = {
    digest: sha256(config),
    size: config.length,
    serve: (res) => {
      res.writeHead(200, { "content-length": String(config.length) });
      res.end(config);
    },
  };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...pick(configBlob) },
      layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", ...pick(l) })),
    }),
  );
  return { manifest, blobs: [configBlob, ...layers] };
}

const pick = (b: Blob) => ({ digest: b.digest, size: b.size });

/** Writes `chunk` until the client goes away, as fast as it reads. */
function endless(res: http.ServerResponse, chunk: Buffer): void {
  const more = () => {
    while (!res.destroyed && res.write(chunk)) {}
  };
  res.on("drain", more);
  more();
}

let server: http.Server;
let host: string;
let work: string;
let served: Served;
let registry: LabRegistry;
const events = new EventTarget();
const images = new Map<string, ReturnType<typeof image>>();

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-hostile-"));
  registry = await startRegistry({ auth: "none" });
  served = { requests: new Map(), sentBeforeClose: new Map() };

  // 100 GB claimed: the ceiling must refuse it before a byte is fetched.
  images.set(
    "huge",
    image([
      {
        digest: sha256("never served"),
        size: 100 * 1000 ** 3,
        serve: (res) => endless(res, Buffer.alloc(1024 * 1024)),
      },
    ]),
  );

  // 1 MiB named, endless bytes streamed (chunked, so nothing announces the lie up front).
  const overlongChunk = randomBytes(64 * 1024);
  images.set(
    "overlong",
    image([
      {
        digest: sha256("one mebibyte, supposedly"),
        size: 1024 * 1024,
        serve: (res) => {
          res.writeHead(200, { "content-type": "application/octet-stream" });
          endless(res, overlongChunk);
        },
      },
    ]),
  );

  // A Content-Length different from the descriptor's size: refused before the body is read.
  const announced = randomBytes(4096);
  images.set(
    "announced",
    image([
      {
        digest: sha256(announced.subarray(0, 1024)),
        size: 1024,
        serve: (res) => {
          res.writeHead(200, { "content-length": String(announced.length) });
          res.end(announced);
        },
      },
    ]),
  );

  // A 64 MiB layer trickled 64 KiB at a time: the copy is still running when it is interrupted.
  const trickle = randomBytes(64 * 1024);
  images.set(
    "slow",
    image([
      {
        digest: sha256("sixty-four mebibytes, eventually"),
        size: 64 * 1024 * 1024,
        serve: (res) => {
          res.writeHead(200, { "content-length": String(64 * 1024 * 1024) });
          res.write(trickle);
          const timer = setInterval(() => res.write(trickle), 200);
          res.on("close", () => clearInterval(timer));
        },
      },
    ]),
  );

  // More layers than suture reads (each one distinct, so no deduplication can help).
  images.set(
    "many",
    image(
      Array.from({ length: 1001 }, (_, i) => ({
        digest: sha256(`layer ${i}`),
        size: 32,
        serve: (res: http.ServerResponse) => res.end(Buffer.alloc(32)),
      })),
    ),
  );

  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/v2/") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
      return;
    }
    const m = /^\/v2\/([a-z]+)\/img\/(manifests|blobs)\/(.+)$/.exec(url.pathname);
    const img = m && images.get(m[1]!);
    if (!m || !img) {
      res.writeHead(404).end();
      return;
    }
    if (m[2] === "manifests") {
      res.writeHead(200, {
        "content-type": "application/vnd.oci.image.manifest.v1+json",
        "content-length": String(img.manifest.length),
      });
      res.end(req.method === "HEAD" ? undefined : img.manifest);
      return;
    }
    const blob = img.blobs.find((b) => b.digest === m[3]);
    if (!blob) {
      res.writeHead(404).end();
      return;
    }
    served.requests.set(blob.digest, (served.requests.get(blob.digest) ?? 0) + 1);
    let sent = 0;
    const write = res.write.bind(res) as (chunk: Buffer) => boolean;
    res.write = ((chunk: Buffer) => {
      sent += chunk.length;
      return write(chunk);
    }) as typeof res.write;
    res.on("close", () => {
      served.sentBeforeClose.set(blob.digest, sent);
      events.dispatchEvent(new CustomEvent("closed", { detail: blob.digest }));
    });
    events.dispatchEvent(new CustomEvent("request", { detail: blob.digest }));
    blob.serve(res);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server?.closeAllConnections();
  server?.close();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** A fresh TMPDIR for one run, so the test can see that suture left nothing in it. */
async function scratch(name: string) {
  const tmp = join(work, `${name}-tmp`);
  await mkdir(tmp);
  return tmp;
}

/** What suture left in a TMPDIR; Node's compile cache (enabled by the CLI) is not suture's. */
async function leftovers(tmp: string): Promise<string[]> {
  return (await readdir(tmp)).filter((n) => n !== "node-compile-cache");
}

/** suture's environment: its own TMPDIR, Node's compile cache kept where it always is (not in it). */
function env(tmp: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TMPDIR: tmp,
    NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE ?? join(tmpdir(), "node-compile-cache"),
    CI: "true",
  };
}

function cli(args: string[], tmp: string) {
  return run(suture, args, { env: env(tmp), maxBuffer: 16 * 1024 * 1024 });
}

function waitFor(type: "request" | "closed", digest: string): Promise<void> {
  return new Promise((resolve) => {
    const on = (e: Event) => {
      if ((e as CustomEvent<string>).detail !== digest) return;
      events.removeEventListener(type, on);
      resolve();
    };
    events.addEventListener(type, on);
  });
}

test("a layer claiming 100 GB is refused by the ceiling before anything is fetched or written", async () => {
  const tmp = await scratch("huge");
  const dest = join(work, "huge-out");
  const layer = images.get("huge")!.blobs[1]!;
  await assert.rejects(
    cli(["copy", `docker://${host}/huge/img:1`, `oci:${dest}:v1`], tmp),
    oneLineError(
      new RegExp(
        `blob ${layer.digest} claims 93\\.1 GiB .*more than the 16 GiB allowed.*--max-blob-size.*\\[TOO_LARGE\\]`,
      ),
    ),
  );
  await assert.rejects(stat(dest), { code: "ENOENT" });
  assert.deepEqual(await leftovers(tmp), []);
  assert.equal(served.requests.get(layer.digest), undefined, "the layer was never requested");

  // The ceiling is the user's to move: lowered, it refuses a layer of 1 MiB the same way.
  await assert.rejects(
    cli(["copy", "--max-blob-size", "512k", `docker://${host}/overlong/img:1`, `oci:${dest}:v1`], tmp),
    oneLineError(/claims 1 MiB \(1048576 bytes\), more than the 512 KiB allowed.*\[TOO_LARGE\]/),
  );
  await assert.rejects(
    cli(["copy", "--max-blob-size", "lots", `docker://${host}/huge/img:1`, `oci:${dest}:v1`], tmp),
    oneLineError(/invalid --max-blob-size "lots"/, 2),
  );
  await assert.rejects(stat(dest), { code: "ENOENT" });
});

test("a layer streaming more than its descriptor names is cut off at the size", async () => {
  const tmp = await scratch("overlong");
  const dest = join(work, "overlong-out");
  const layer = images.get("overlong")!.blobs[1]!;
  const closed = waitFor("closed", layer.digest);
  await assert.rejects(
    cli(["copy", `docker://${host}/overlong/img:1`, `oci:${dest}:v1`], tmp),
    oneLineError(/larger than the 1048576 bytes its descriptor names.*\[DIGEST_MISMATCH\]/),
  );
  // The server streams forever: only suture hanging up ends the response.
  await closed;
  const sent = served.sentBeforeClose.get(layer.digest)!;
  assert.ok(sent > layer.size, `the server got to send more than the descriptor's size (${sent})`);
  assert.ok(sent < layer.size + 64 * 1024 * 1024, `suture hung up soon after the size (${sent} sent)`);
  await assert.rejects(stat(dest), { code: "ENOENT" });
  assert.deepEqual(await leftovers(tmp), []);

  // Announcing a different length up front is refused before the body.
  await assert.rejects(
    cli(["copy", `docker://${host}/announced/img:1`, `oci:${dest}:v1`], tmp),
    oneLineError(
      /answered blob sha256:[a-f0-9]+ of announced\/img with 4096 bytes, but its descriptor names 1024/,
    ),
  );
  await assert.rejects(stat(dest), { code: "ENOENT" });
});

test("an image of more than 1000 layers is refused before any layer is fetched", async () => {
  const tmp = await scratch("many");
  const dest = join(work, "many-out");
  await assert.rejects(
    cli(["copy", `docker://${host}/many/img:1`, `oci:${dest}:v1`], tmp),
    oneLineError(/lists 1001 layers, more than the 1000 suture reads.*\[TOO_LARGE\]/),
  );
  const layers = images.get("many")!.blobs.slice(1);
  assert.ok(layers.every((l) => !served.requests.has(l.digest)));
  await assert.rejects(stat(dest), { code: "ENOENT" });
});

test("SIGINT during a slow copy exits 130 and leaves nothing at the destination or in temp dirs", async () => {
  const tmp = await scratch("slow");
  const dest = join(work, "slow-out");
  const layer = images.get("slow")!.blobs[1]!;
  for (const target of [`oci:${dest}:v1`, `docker-archive:${dest}.tar:slow/img:1`]) {
    const requested = waitFor("request", layer.digest);
    const closed = waitFor("closed", layer.digest);
    const child = spawn(suture, ["copy", `docker://${host}/slow/img:1`, target], {
      env: env(tmp),
      stdio: ["ignore", "pipe", "pipe"],
    });
    const stderr = collect(child);
    await requested;
    // Interrupt only once part of the layer sits in a partial file, so there is something to clean.
    await untilPartialFile(target.startsWith("oci:") ? dest : tmp);
    child.kill("SIGINT");
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(code, 130, await stderr);
    const errors = (await stderr).split("\n").filter((l) => l.startsWith("error:"));
    assert.deepEqual(errors, ["error: interrupted [CANCELLED]"]);
    await closed;
    await assert.rejects(stat(dest), { code: "ENOENT" });
    await assert.rejects(stat(`${dest}.tar`), { code: "ENOENT" });
    assert.deepEqual(await leftovers(tmp), [], target);
    assert.deepEqual(
      (await readdir(work)).filter((n) => n.startsWith(".slow-out")),
      [],
      "no temporary archive beside the destination",
    );
  }
});

test("SIGINT during a copy to a registry stops the upload, asks to drop its session, tags nothing", async () => {
  const tmp = await scratch("push");
  const layer = images.get("slow")!.blobs[1]!;
  const proxy = await startCountingProxy(registry.host);
  try {
    const uploads = join(registry.storageDir, "docker/registry/v2/repositories/pushed/img/_uploads");
    const requested = waitFor("request", layer.digest);
    const child = spawn(
      suture,
      ["copy", `docker://${host}/slow/img:1`, `docker://${proxy.host}/pushed/img:1`],
      {
        env: env(tmp),
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const stderr = collect(child);
    await requested;
    // The layer's PUT must be on its way before the interrupt: the registry's partial data seen
    // below could otherwise be the config blob's, uploaded while the layer was still being read.
    const layerPut = (r: { method: string; path: string }) =>
      r.method === "PUT" && r.path.includes(layer.digest.slice(7));
    while (!proxy.requests.some(layerPut)) await new Promise((r) => setTimeout(r, 20));
    // The registry keeps what an upload received under _uploads/<session>: wait until it has some.
    await untilPartialFile(uploads);
    child.kill("SIGINT");
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(code, 130, await stderr);
    assert.deepEqual(await leftovers(tmp), []);
    // Every session suture opened and did not finish, it asked the registry to drop. (distribution
    // refuses that for the one whose body was broken off, and keeps its partial data until its
    // upload purging: that part is the registry's.)
    const sessions = (method: string) =>
      proxy.requests
        .filter((r) => r.method === method && /\/blobs\/uploads\/[^/?]+/.test(r.path))
        .map((r) => /\/uploads\/([^/?]+)/.exec(r.path)![1]);
    const completed = proxy.requests
      .filter((r) => r.method === "PUT" && r.path.includes(images.get("slow")!.blobs[0]!.digest.slice(7)))
      .map((r) => /\/uploads\/([^/?]+)/.exec(r.path)![1]);
    const layerSession = sessions("PUT").find((s) => !completed.includes(s));
    assert.ok(layerSession, "the layer's upload had started");
    assert.ok(sessions("DELETE").includes(layerSession), "suture asked to drop the interrupted session");
    // Nothing was tagged.
    const res = await fetch(`http://${registry.host}/v2/pushed/img/manifests/1`);
    assert.equal(res.status, 404);
    await res.body?.cancel();
  } finally {
    await proxy.stop();
  }
});

function collect(child: ChildProcess): Promise<string> {
  let text = "";
  child.stderr!.on("data", (c: Buffer) => {
    text += c.toString();
  });
  return once(child, "close").then(() => text);
}

/** Resolves once some file under `dir` holds data: a partially downloaded blob. */
async function untilPartialFile(dir: string): Promise<void> {
  for (;;) {
    if (await holdsData(dir)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function holdsData(dir: string): Promise<boolean> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile() || e.name === "node-compile-cache") continue;
    const path = join(e.parentPath, e.name);
    if (path.includes("node-compile-cache")) continue;
    if ((await stat(path).catch(() => undefined))?.size) return true;
  }
  return false;
}
