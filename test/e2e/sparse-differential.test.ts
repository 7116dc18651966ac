/**
 * Sparse lowers' judge (issue 15): the same patch with sparse lowers (the default for the native
 * dpkg engine) and with every layer extracted in full (`SUTURE_SPARSE=0`) must give the same patch
 * layer, byte for byte, and the same package versions.
 * - distroless plus an application layer: no shell, so no program of the image runs and the
 *   sparse lowers last to the layer build. The application layer points libssl3's doc dir into
 *   /opt, where files are left out, with a copyright file identical to the package's: the unpack
 *   replaces a left-out file, which must come in to be compared (and dropped as unchanged);
 * - the big lab image (nginx + 1.5 GiB in ten layers) from the library-only report: dpkg's
 *   configure runs in runc today, which completes the layers first (the sparse path's fallback).
 * Also the repositories opened early, from the layers being extracted (sandbox/early-view.ts),
 * against opening them afterwards (`SUTURE_EARLY=0`): an application layer out of tar order adds
 * apt configuration after the early read, which must be noticed and read again.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { bigLabImage } from "../lab/big-image.ts";
import { SUTURE } from "../lab/cli.ts";
import { distrolessLabImage, distrolessLibsslReport } from "../lab/distroless.ts";
import { trivyReportFor } from "../lab/images.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { requiring } from "../lab/requirements.ts";
import { MTIME, tarOf } from "../lab/tar.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap");

before(useArchiveMirror);
const run = promisify(execFile);
let work: string;
before(async () => {
  // The caches and sandboxes hold overlay upper dirs: a real filesystem, not tmpfs.
  work = await mkdtemp("/var/tmp/suture-sparse-differential-");
});
after(() => rm(work, { recursive: true, force: true }));

interface Outcome {
  diffID: string;
  digest: string;
  status: string;
  stderr: string;
}

/** Patch cold (a fresh cache) into an OCI layout; the patch layer and the patched dpkg status. */
async function patch(
  reference: string,
  report: string,
  sparse: boolean,
  name: string,
  env: Record<string, string> = {},
): Promise<Outcome> {
  const out = join(work, `${name}-${sparse ? "sparse" : "full"}`);
  const cache = join(work, `cache-${name}-${sparse ? "sparse" : "full"}`);
  const args = ["patch", "-i", reference, "-r", report, "-t", "x", "--oci-dir", out, "--cache-dir", cache];
  const { stderr } = await run(SUTURE, [...args, "--ignore-report-image"], {
    env: { ...process.env, CI: "true", SUTURE_SPARSE: sparse ? "1" : "0", ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  await rm(cache, { recursive: true, force: true });
  const blob = (digest: string) => readFile(join(out, "blobs", "sha256", digest.slice(7)));
  const index = JSON.parse(await readFile(join(out, "index.json"), "utf8"));
  const manifest = JSON.parse((await blob(index.manifests[0].digest)).toString());
  const config = JSON.parse((await blob(manifest.config.digest)).toString());
  const top = manifest.layers.at(-1).digest as string;
  const layer = zlib.gunzipSync(await blob(top));
  const tarFile = join(work, `${name}-${sparse}.tar`);
  await writeFile(tarFile, layer);
  // The patch layer carries the whole status file (or the status.d stanzas) it changed.
  const { stdout: status } = await run("tar", ["-xOf", tarFile, "--wildcards", "var/lib/dpkg/status*"], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return { diffID: config.rootfs.diff_ids.at(-1), digest: top, status, stderr };
}

function assertSame(sparse: Outcome, full: Outcome) {
  assert.equal(sparse.status, full.status, "the same package versions");
  assert.equal(sparse.diffID, full.diffID, "the same patch layer (diff_id)");
  assert.equal(sparse.digest, full.digest, "the same patch layer blob (gzip is deterministic)");
}

/** `base`'s layout with more gzip layers (each a tar), written to `dir`. */
async function withLayers(baseLayout: string, tars: Buffer[], dir: string): Promise<string> {
  const writer = await layoutWriter(dir);
  const blob = (digest: string) => readFile(join(baseLayout, "blobs", "sha256", digest.slice(7)));
  const index = JSON.parse(await readFile(join(baseLayout, "index.json"), "utf8"));
  const manifest = JSON.parse((await blob(index.manifests[0].digest)).toString());
  const config = JSON.parse((await blob(manifest.config.digest)).toString());
  for (const l of manifest.layers) await writer.reuse(baseLayout, l.digest);
  for (const tar of tars) {
    const layer = await writer.put(zlib.gzipSync(tar));
    config.rootfs.diff_ids.push(`sha256:${createHash("sha256").update(tar).digest("hex")}`);
    config.history = [
      ...(config.history ?? []),
      { created: "2026-01-01T00:00:00Z", created_by: "app layer" },
    ];
    manifest.layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer });
  }
  const configDesc = await writer.put(Buffer.from(JSON.stringify(config)));
  manifest.config = { ...manifest.config, ...configDesc };
  const manifestDesc = await writer.put(Buffer.from(JSON.stringify(manifest)));
  await writer.tag(index.manifests[0].mediaType, manifestDesc);
  return `oci:${dir}:latest`;
}

test("distroless with an application layer: sparse lowers give the same patch layer, without extracting the application's files", async () => {
  const lab = await distrolessLabImage();
  const report = await distrolessLibsslReport(lab, join(work, "distroless.json"));
  // libssl3's own copyright, to be found again through the image's symlink in /opt.
  const index = JSON.parse(await readFile(join(lab.layoutDir, "index.json"), "utf8"));
  const manifest = JSON.parse(
    await readFile(join(lab.layoutDir, "blobs", "sha256", index.manifests[0].digest.slice(7)), "utf8"),
  );
  const copyrights: Buffer[] = [];
  for (const l of manifest.layers) {
    const file = join(lab.layoutDir, "blobs", "sha256", l.digest.slice(7));
    const r = await run("tar", ["-xzOf", file, "./usr/share/doc/libssl3/copyright"], {
      encoding: "buffer",
      maxBuffer: 1 << 24,
    }).catch(() => undefined);
    if (r?.stdout.length) copyrights.push(r.stdout);
  }
  assert.equal(copyrights.length, 1, "libssl3 ships its copyright file in the distroless image");
  const app = await tarOf([
    { name: "opt/", type: "directory" },
    { name: "opt/doc/", type: "directory" },
    { name: "opt/doc/libssl3/", type: "directory" },
    { name: "opt/doc/libssl3/copyright", content: copyrights[0]!, mtime: MTIME },
    { name: "opt/app/", type: "directory" },
    // Incompressible, so the layer's blob is above SMALL_LAYER_BYTES (a smaller one is extracted whole).
    { name: "opt/app/model.bin", content: randomBytes(256 * 1024) },
    { name: "usr/", type: "directory" },
    { name: "usr/share/", type: "directory" },
    { name: "usr/share/doc/", type: "directory" },
    { name: "usr/share/doc/.wh.libssl3", content: "" },
    { name: "usr/share/doc/libssl3", type: "symlink", linkname: "/opt/doc/libssl3" },
  ]);
  const reference = await withLayers(lab.layoutDir, [app], join(work, "distroless-app"));
  const sparse = await patch(reference, report, true, "distroless");
  const full = await patch(reference, report, false, "distroless");
  assertSame(sparse, full);
  assert.match(
    sparse.stderr,
    /2 files \(\d+ bytes\) left out until needed/,
    "the application's files were left out",
  );
  assert.match(
    sparse.stderr,
    /1 left-out files brought in/,
    "the replaced copyright came in for the comparison",
  );
  assert.doesNotMatch(full.stderr, /left out/);
});

test("the big lab image from the library-only report: the same patch layer with sparse lowers as with full extraction", async () => {
  const big = await bigLabImage();
  const { path: report } = await trivyReportFor("bookwormNginx", {
    only: ["libssl3", "openssl", "libexpat1", "liblzma5", "libpcre2-8-0"],
    outFile: join(work, "big.json"),
  });
  const sparse = await patch(big.reference, report, true, "big");
  const full = await patch(big.reference, report, false, "big");
  assertSame(sparse, full);
  assert.match(sparse.stderr, /left out until needed/);
});

test("apt configuration a layer adds after the early read (out of tar order) is noticed: the repositories are read again, the same patch layer as without early reads", async () => {
  const lab = await distrolessLabImage();
  const report = await distrolessLibsslReport(lab, join(work, "distroless-early.json"));
  // Written as an unsorted archive would be: /usr first (a long write the early reads overtake),
  // then apt configuration the image had none of, read from below while /usr was written.
  const app = await tarOf([
    { name: "usr/", type: "directory" },
    { name: "usr/share/", type: "directory" },
    { name: "usr/share/app/", type: "directory" },
    { name: "usr/share/app/model.bin", content: Buffer.alloc(256 * 1024 * 1024, 7) },
    { name: "etc/", type: "directory" },
    { name: "etc/apt/", type: "directory" },
    { name: "etc/apt/apt.conf.d/", type: "directory" },
    { name: "etc/apt/apt.conf.d/99app", content: 'APT::Install-Recommends "false";\n', mtime: MTIME },
  ]);
  const reference = await withLayers(lab.layoutDir, [app], join(work, "distroless-unsorted"));
  const early = await patch(reference, report, true, "early");
  const late = await patch(reference, report, true, "late", { SUTURE_EARLY: "0" });
  assertSame(early, late);
  assert.match(early.stderr, /apt\.conf\.d changed after the early read/, "the early result was discarded");
  assert.doesNotMatch(late.stderr, /early read/);
});

test("apt configuration in a layer above the ones the early reads wait for is noticed: the same patch layer as without early reads", async () => {
  const lab = await distrolessLabImage();
  const report = await distrolessLibsslReport(lab, join(work, "distroless-above.json"));
  // The early reads wait for the bottom two layers only (sandbox/early-view.ts). The third added
  // layer is in tar order, but its long /usr write keeps it from completing before they are made.
  const small = await tarOf([
    { name: "srv/", type: "directory" },
    { name: "srv/app.txt", content: Buffer.from("app\n"), mtime: MTIME },
  ]);
  const above = await tarOf([
    { name: "etc/", type: "directory" },
    { name: "etc/apt/", type: "directory" },
    { name: "etc/apt/apt.conf.d/", type: "directory" },
    { name: "etc/apt/apt.conf.d/99app", content: 'APT::Install-Recommends "false";\n', mtime: MTIME },
    { name: "usr/", type: "directory" },
    { name: "usr/share/", type: "directory" },
    { name: "usr/share/app/", type: "directory" },
    { name: "usr/share/app/model.bin", content: Buffer.alloc(256 * 1024 * 1024, 7) },
  ]);
  const reference = await withLayers(lab.layoutDir, [small, above], join(work, "distroless-above"));
  const early = await patch(reference, report, true, "above");
  const late = await patch(reference, report, true, "above-late", { SUTURE_EARLY: "0" });
  assertSame(early, late);
  assert.match(early.stderr, /apt\.conf\.d changed after the early read/, "the early result was discarded");
});
