/**
 * Don't move bytes twice (issue 15): patching registry → registry, the patch layer is uploaded
 * while it is built (chunked PATCHes, closed by digest before the image is written) and never a
 * second time; the pushed image is valid and its layer is the one a patch into an OCI layout
 * makes of the same input. A registry that breaks the chunked upload (503 to every PATCH) costs
 * nothing but the overlap: the layer goes up whole and the patch succeeds. A registry that
 * received altered bytes refuses the digest: one-line error, no tag. Debian's docker-registry on
 * loopback behind a proxy that counts requests (and injects the faults).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  type LoopbackProxy,
  type ProxiedRequest,
  startCountingProxy,
  useArchiveMirror,
} from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { labImage, pendingSecurityFixes, trivyReportFor } from "../lab/images.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "loopback",
  "tool:docker-registry",
  "tool:mmdebstrap",
  "tool:skopeo",
);

before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;
let registry: LabRegistry;
let proxy: LoopbackProxy;
let report: string;
/** What the proxy does to requests of the repository under test right now. */
let fault: { repo: string; patchStatus?: number; alterPatch?: boolean } | undefined;

const cli = (args: string[]) =>
  run(suture, args, { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 });

const inRepo = (r: ProxiedRequest, repo: string) => r.path.startsWith(`/v2/${repo}/blobs/uploads/`);

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-streamed-"));
  registry = await startRegistry({ auth: "none" });
  proxy = await startCountingProxy(registry.host, {
    intercept: (r) =>
      fault?.patchStatus && r.method === "PATCH" && inRepo(r, fault.repo) ? fault.patchStatus : undefined,
    alterBody: (r, body) => {
      if (!fault?.alterPatch || r.method !== "PATCH" || !inRepo(r, fault.repo) || body.length === 0)
        return undefined;
      const altered = Buffer.from(body);
      altered[altered.length >> 1]! ^= 0x01;
      return altered;
    },
  });
  const lab = await labImage("bookwormMinbase");
  await cli(["copy", lab.reference, `docker://${registry.host}/src/minbase:1`]);
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

/** A cold patch (its own cache) from src/minbase:1 into `repo:patched`, progress as JSON events. */
async function patchInto(repo: string) {
  const start = proxy.requests.length;
  const { stderr } = await cli([
    "patch",
    "-i",
    `docker://${proxy.host}/src/minbase:1`,
    "-r",
    report,
    "-t",
    `${proxy.host}/${repo}:patched`,
    "--push",
    "--progress",
    "json",
    "--cache-dir",
    join(work, `cache-${repo.replace(/\W/g, "-")}`),
  ]);
  const events = stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { type: string; message?: string; action?: string; digest?: string });
  return { events, requests: proxy.requests.slice(start) };
}

async function topLayer(reference: string): Promise<string> {
  const inspected = JSON.parse((await cli(["inspect", "--format", "json", reference])).stdout) as {
    images: { layers: { digest: string }[] }[];
  };
  return inspected.images[0]!.layers.at(-1)!.digest;
}

/** skopeo pulls the image by digest, checking every blob against it. */
async function pullsCleanly(repo: string, layer: string): Promise<void> {
  const { stdout } = await run("skopeo", [
    "inspect",
    "--tls-verify=false",
    "--raw",
    `docker://${registry.host}/${repo}:patched`,
  ]);
  assert.ok(stdout.includes(layer), "the manifest names the patch layer");
  const out = join(work, `pulled-${repo.replace(/\W/g, "-")}`);
  await run("skopeo", [
    "copy",
    "--src-tls-verify=false",
    `docker://${registry.host}/${repo}:patched`,
    `oci:${out}:x`,
  ]);
  const index = JSON.parse(await readFile(join(out, "index.json"), "utf8"));
  assert.equal(index.manifests.length, 1);
}

/** Requests naming the layer digest (raw or URL-encoded). */
const naming = (requests: ProxiedRequest[], digest: string) =>
  requests.filter((r) => r.path.includes(digest) || r.path.includes(encodeURIComponent(digest)));

let streamedLayer: string;

test("registry → registry: the patch layer goes up in PATCH chunks while it is built, and only then", async () => {
  const { events, requests } = await patchInto("dst/minbase");
  streamedLayer = await topLayer(`docker://${proxy.host}/dst/minbase:patched`);
  const patches = requests.filter((r) => r.method === "PATCH" && inRepo(r, "dst/minbase"));
  assert.ok(patches.length >= 1, "at least one PATCH chunk");
  const closes = naming(requests, streamedLayer).filter((r) => r.method === "PUT");
  assert.equal(closes.length, 1, "the layer is closed by digest once and never uploaded again");
  const closedAt = requests.indexOf(closes[0]!);
  assert.ok(requests.indexOf(patches.at(-1)!) < closedAt, "the chunks come before the closing PUT");
  // The image is written after the layer step: its first look at the layer finds it there.
  const writeCheck = naming(requests, streamedLayer).find((r) => r.method === "HEAD");
  assert.ok(
    writeCheck && requests.indexOf(writeCheck) > closedAt,
    "the sink checks the layer after it was closed",
  );
  assert.ok(events.some((e) => e.type === "info" && /uploaded as it was written/.test(e.message ?? "")));
  assert.ok(
    events.some((e) => e.type === "blob" && e.action === "exists" && e.digest === streamedLayer),
    "the sink finds the layer present",
  );
  await pullsCleanly("dst/minbase", streamedLayer);

  // The same input patched into an OCI layout (its own empty cache) gives the same layer.
  const out = join(work, "oci");
  await patchIntoOciDir({
    reference: `docker://${registry.host}/src/minbase:1`,
    engine: "native",
    out,
    cacheDir: join(work, "cache-oci"),
    report,
  });
  assert.equal(await topLayer(`oci:${out}:native`), streamedLayer, "same bytes as a patch to a layout");
});

test("a registry answering 503 to every PATCH: the layer is uploaded whole after the build, the patch succeeds", async () => {
  fault = { repo: "fallback/minbase", patchStatus: 503 };
  try {
    const { events, requests } = await patchInto("fallback/minbase");
    const layer = await topLayer(`docker://${proxy.host}/fallback/minbase:patched`);
    assert.equal(layer, streamedLayer, "the same layer");
    assert.ok(
      events.some(
        (e) => e.type === "info" && /could not be uploaded as it was written/.test(e.message ?? ""),
      ),
      "the fallback is said",
    );
    assert.ok(
      requests.some((r) => r.method === "DELETE" && inRepo(r, "fallback/minbase")),
      "the session is dropped",
    );
    const puts = naming(requests, layer).filter((r) => r.method === "PUT");
    assert.equal(puts.length, 1, "one whole upload");
    await pullsCleanly("fallback/minbase", layer);
  } finally {
    fault = undefined;
  }
});

test("a byte altered on the way: the registry refuses the layer's digest, one-line error, no tag", async () => {
  fault = { repo: "altered/minbase", alterPatch: true };
  try {
    const failed = await patchInto("altered/minbase").then(
      () => assert.fail("the patch must fail"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.notEqual(failed.code, 0);
    const errors = failed.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assert.equal(errors.length, 1, failed.stderr);
    assert.match(errors[0]!, /refused the patch layer .* not the bytes written.*\[DIGEST_MISMATCH\]$/);
    const tagged = await run("skopeo", [
      "inspect",
      "--tls-verify=false",
      "--raw",
      `docker://${registry.host}/altered/minbase:patched`,
    ]).then(
      () => true,
      () => false,
    );
    assert.equal(tagged, false, "nothing was tagged");
  } finally {
    fault = undefined;
  }
});
