/**
 * Don't move bytes twice (issue 15): patching registry → registry into another repository of the
 * same registry reads each base layer at most once (to extract it) and never uploads it again: the
 * destination mounts it from the source repository. With the layers already in the cache, a second
 * patch reads none of them. The registry is Debian's docker-registry behind a loopback proxy that
 * counts requests.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type LoopbackProxy, startCountingProxy, useArchiveMirror } from "../lab/archive-mirror.ts";
import { labImage, pendingSecurityFixes, trivyReportFor } from "../lab/images.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "loopback",
  "tool:docker-registry",
  "tool:mmdebstrap",
  "tool:umoci",
);

before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;
let registry: LabRegistry;
let proxy: LoopbackProxy;
let report: string;
let baseLayers: string[];

const cli = (args: string[]) =>
  run(suture, args, { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 });

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-bytes-once-"));
  registry = await startRegistry({ auth: "none" });
  // The proxy only counts; it is also what suture talks to, so the source and destination
  // repositories are on one registry as suture sees it (a mount needs that).
  proxy = await startCountingProxy(registry.host);
  const lab = await labImage("bookwormMinbase");
  await cli(["copy", lab.reference, `docker://${registry.host}/src/minbase:1`]);
  const inspected = JSON.parse(
    (await cli(["inspect", "--format", "json", `docker://${registry.host}/src/minbase:1`])).stdout,
  ) as { images: { layers: { digest: string }[] }[] };
  baseLayers = inspected.images[0]!.layers.map((l) => l.digest);
  const fixes = await pendingSecurityFixes("bookwormMinbase");
  const chosen = fixes.find((f) => f.name === "liblzma5") ?? fixes.toSorted((a, b) => a.size - b.size)[0];
  assert.ok(chosen, "bookworm-security has fixes pending for the minbase lab image");
  ({ path: report } = await trivyReportFor("bookwormMinbase", {
    only: [chosen.name],
    outFile: join(work, "r.json"),
  }));
});

after(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Requests for the base layers during `fn`: GETs of each anywhere, and uploads/mounts of them into `repo`. */
async function layerTraffic(repo: string, fn: () => Promise<unknown>) {
  const start = proxy.requests.length;
  await fn();
  const seen = proxy.requests.slice(start);
  const ofLayer = (d: string) =>
    seen.filter((r) => r.path.includes(d) || r.path.includes(encodeURIComponent(d)));
  const into = `/v2/${repo}/blobs/uploads/`;
  return {
    gets: baseLayers.map(
      (d) => ofLayer(d).filter((r) => r.method === "GET" && r.path.endsWith(`/blobs/${d}`)).length,
    ),
    uploads: baseLayers.flatMap(ofLayer).filter((r) => r.method === "PUT" && r.path.startsWith(into)).length,
    mounts: baseLayers
      .flatMap(ofLayer)
      .filter((r) => r.method === "POST" && r.path.startsWith(`${into}?mount=`)).length,
  };
}

const patch = (cache: string, target: string) =>
  cli([
    "patch",
    "-i",
    `docker://${proxy.host}/src/minbase:1`,
    "-r",
    report,
    "-t",
    `${proxy.host}/${target}`,
    "--push",
    "--cache-dir",
    cache,
  ]);

test("a cold patch into another repository reads each base layer once and mounts it there", async () => {
  const cache = join(work, "cache");
  const traffic = await layerTraffic("dst/minbase", () => patch(cache, "dst/minbase:patched"));
  assert.deepEqual(
    traffic.gets,
    baseLayers.map(() => 1),
    "each base layer is downloaded once, to extract it",
  );
  assert.equal(traffic.mounts, baseLayers.length, "the base layers are mounted from src/minbase");
  assert.equal(traffic.uploads, 0, "no base layer is uploaded");

  // A second patch with the layers cached downloads none of them.
  const again = await layerTraffic("dst2/minbase", () => patch(cache, "dst2/minbase:patched"));
  assert.deepEqual(
    again.gets,
    baseLayers.map(() => 0),
  );
  assert.equal(again.uploads, 0);
  assert.equal(again.mounts, baseLayers.length);
});
