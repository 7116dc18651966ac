import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { type LoopbackProxy, startCountingProxy } from "../lab/archive-mirror.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import { type EntrySpec, tarOf } from "../lab/tar.ts";

const { after, before, test } = await requiring("loopback", "tool:docker-registry");

/**
 * An image whose manifest lists the same layer 500 times (what a careless generator or a hostile
 * registry can serve): inspect, copy and patch --dry-run must each fetch that blob once. The image
 * sits in Debian's real docker-registry; suture reads it through a loopback proxy that counts the
 * blob requests.
 */

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
const REPEATS = 500;

const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

let registry: LabRegistry;
let proxy: LoopbackProxy;
let work: string;
let layerDigest: string;

/** A tiny Debian root: os-release and a dpkg status with one package, enough to be detected. */
async function debianLayer(): Promise<Buffer> {
  const mtime = 1_700_000_000;
  const entries: EntrySpec[] = ["etc/", "var/", "var/lib/", "var/lib/dpkg/"].map((name) => ({
    name,
    type: "directory",
    mode: 0o755,
    mtime,
  }));
  const file = (name: string, content: string) => entries.push({ name, content, mode: 0o644, mtime });
  file(
    "etc/os-release",
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n',
  );
  file(
    "var/lib/dpkg/status",
    "Package: base-files\nStatus: install ok installed\nPriority: required\nSection: admin\nMaintainer: Santiago Vila <sanvila@debian.org>\nArchitecture: amd64\nVersion: 12.4+deb12u1\nDescription: Debian base system miscellaneous files\n\n",
  );
  return tarOf(entries);
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-repeated-"));
  registry = await startRegistry({ auth: "none" });

  // The image: one gzip layer listed REPEATS times, its diff_id as often in the config.
  const layout = join(work, "layout");
  const writer = await layoutWriter(layout);
  const tarBytes = await debianLayer();
  const layer = await writer.put(zlib.gzipSync(tarBytes));
  layerDigest = layer.digest;
  const config = await writer.put(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Cmd: ["/bin/sh"] },
        rootfs: { type: "layers", diff_ids: Array(REPEATS).fill(sha256(tarBytes)) },
      }),
    ),
  );
  const manifest = await writer.put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: Array(REPEATS).fill({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }),
      }),
    ),
  );
  await writer.tag("application/vnd.oci.image.manifest.v1+json", manifest, "v1");
  await run(suture, ["copy", `oci:${layout}:v1`, `docker://${registry.host}/repeated/img:1`], {
    env: { ...process.env, CI: "true" },
  });

  proxy = await startCountingProxy(registry.host);
});

after(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function cli(args: string[]) {
  return run(suture, args, { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 });
}

/** Blob GETs of the repeated layer during `fn`. */
async function layerFetches(fn: () => Promise<unknown>): Promise<number> {
  const blob = new RegExp(`/blobs/${layerDigest}$`);
  const before = proxy.count("GET", blob);
  await fn();
  return proxy.count("GET", blob) - before;
}

const image = () => `docker://${proxy.host}/repeated/img:1`;

test("inspect reads a layer listed 500 times once", async () => {
  let result: {
    images: { layers: { digest: string }[]; os?: { id: string }; packageCount?: number }[];
  };
  const fetches = await layerFetches(async () => {
    result = JSON.parse((await cli(["inspect", "--format", "json", image()])).stdout);
  });
  assert.equal(fetches, 1);
  const [summary] = result!.images;
  assert.equal(summary!.layers.length, REPEATS);
  assert.ok(summary!.layers.every((l) => l.digest === layerDigest));
  assert.equal(summary!.os?.id, "debian");
  assert.equal(summary!.packageCount, 1);
});

test("copy writes a layer listed 500 times once", async () => {
  const out = join(work, "copied");
  const fetches = await layerFetches(() => cli(["copy", image(), `oci:${out}:v1`]));
  assert.equal(fetches, 1);
  // One layer, one config, one manifest: the image as it was, with its 500 references.
  assert.equal((await readdir(join(out, "blobs", "sha256"))).length, 3);
  const copied = JSON.parse(
    (await cli(["inspect", "--format", "json", "--no-layers", `oci:${out}:v1`])).stdout,
  );
  assert.equal(copied.images[0].layers.length, REPEATS);
});

test("patch --dry-run extracts a layer listed 500 times once", async () => {
  const cacheDir = await mkdtemp(join(work, "cache-"));
  let plan: unknown;
  const fetches = await layerFetches(async () => {
    plan = JSON.parse(
      (
        await cli([
          "patch",
          "-i",
          image(),
          "--dry-run",
          "--plan-format",
          "json",
          "--cache-dir",
          cacheDir,
          "--engine",
          "native",
        ])
      ).stdout,
    );
  });
  assert.equal(fetches, 1);
  const { platforms } = plan as { platforms: { mode: string }[] };
  assert.deepEqual(
    platforms.map((p) => p.mode),
    ["update-all"],
  );
  // The content-addressed cache holds the layer once.
  assert.equal((await readdir(join(cacheDir, "layers"))).length, 1);
});
