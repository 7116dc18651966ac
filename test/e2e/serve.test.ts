import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { JobRecord } from "../../src/serve/queue.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { SUTURE } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import {
  manifestDigest as digestIn,
  freePort,
  MANIFEST_TYPES,
  newToken,
  type ServeProcess,
  startServe,
  waitFor,
} from "../lab/serve.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "tool:docker-registry",
  "tool:mmdebstrap",
);

// `suture serve` started with nothing but a rules file, watching a real docker-registry whose
// push notifications point at it: a push alone must produce the patched tag and its VEX.

before(useArchiveMirror);

const run = promisify(execFile);
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");

let registry: LabRegistry;
let work: string;
let service: ServeProcess;
let api: string;
const token = newToken();
const stderr = () => service?.log() ?? "";

const until = <T>(what: string, timeoutMs: number, f: () => Promise<T | undefined>) =>
  waitFor(what, timeoutMs, f, stderr);

function get(path: string, auth = `Bearer ${token}`) {
  return fetch(`${api}${path}`, { headers: auth ? { authorization: auth } : {} });
}

const manifestDigest = (repository: string, tag: string) => digestIn(registry.host, repository, tag);

async function jobs(): Promise<JobRecord[]> {
  const res = await get("/api/v1/jobs");
  assert.equal(res.status, 200);
  return (await res.json()) as JobRecord[];
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-serve-"));
  const port = await freePort();
  api = `http://127.0.0.1:${port}`;
  registry = await startRegistry({
    notifications: { url: `${api}/hooks/registry`, headers: { Authorization: `Bearer ${token}` } },
  });
  await labImage("bookwormMinbase");
  // No scanner is installed here: the rule's scanner command prints the lab image's report.
  const report = await trivyReportFor("bookwormMinbase");
  service = await startServe({
    work,
    port,
    token,
    rules: `apiVersion: suture.dev/v1alpha1
kind: ServeRules
rules:
  - id: app
    image: ${registry.host}/lab/app
    tags: { strategy: pattern, pattern: "^1\\\\.[0-9]+$" }
    target: { tag: "{{ .SourceTag }}-patched" }
    interval: 1h
    scanner: { command: ["cat", ${JSON.stringify(report.path)}], format: trivy }
`,
  });
});

after(async () => {
  await service?.stop();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test("a pushed tag is patched, pushed under the rule's tag and its VEX kept, with nobody calling the API", async () => {
  const lab = await labImage("bookwormMinbase");
  await run(SUTURE, ["copy", lab.reference, `docker://${registry.host}/lab/app:1.0`]);
  const source = await manifestDigest("lab/app", "1.0");
  assert.ok(source);
  const patched = await until("the patched tag 1.0-patched", 15 * 60_000, () =>
    manifestDigest("lab/app", "1.0-patched"),
  );
  assert.notEqual(patched, source);
  // What the service did, read back through its API (the tag is pushed before the job ends).
  const all = await until("the job to end", 120_000, async () => {
    const list = await jobs();
    return list.every((j) => j.state !== "running" && j.state !== "queued") ? list : undefined;
  });
  assert.equal(all.length, 1, JSON.stringify(all));
  const job = all[0]!;
  assert.equal(job.state, "succeeded", JSON.stringify(job));
  assert.equal(job.spec.reason, "hook", "the registry's notification started it, not the poll");
  assert.equal(job.spec.source, `${registry.host}/lab/app:1.0@${source}`);
  assert.equal(job.result?.status, "patched");
  assert.equal(job.result?.digest, patched);
  assert.ok(job.result!.changed.length > 0);
  assert.ok(job.result!.cves.length > 0, "the scanner's report named fixed vulnerabilities");
  const vexRes = await get(`/api/v1/jobs/${job.id}/vex`);
  assert.equal(vexRes.status, 200);
  const vex = (await vexRes.json()) as { statements: { status: string; products: { "@id": string }[] }[] };
  assert.ok(vex.statements.length > 0);
  assert.ok(vex.statements.every((s) => s.status === "fixed"));
  assert.ok(
    vex.statements.some((s) => s.products.some((p) => p["@id"].includes(patched.slice("sha256:".length)))),
    "the VEX names the patched image's digest",
  );
  if (existsSync(schema)) assert.deepEqual(validateOpenVex(vex, schema).errors, []);
  // The image's history and the metrics say the same.
  const history = await (await get(`/api/v1/images/history?repository=${registry.host}/lab/app`)).json();
  assert.equal((history as { state: string }[])[0]?.state, "succeeded");
  const metrics = await (await get("/metrics")).text();
  assert.match(metrics, /^suture_jobs\{state="succeeded"\} 1$/m);
  assert.match(metrics, new RegExp(`^suture_cves_fixed_total ${job.result!.cves.length}$`, "m"));
});

test("a second push of the same digest does nothing", async () => {
  const before = await jobs();
  const patched = await manifestDigest("lab/app", "1.0-patched");
  // PUT the very same manifest again: the registry notifies again, with the same digest.
  const res = await fetch(`http://${registry.host}/v2/lab/app/manifests/1.0`, {
    headers: { accept: MANIFEST_TYPES },
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  const digest = res.headers.get("docker-content-digest")!;
  const put = await fetch(`http://${registry.host}/v2/lab/app/manifests/1.0`, {
    method: "PUT",
    headers: { "content-type": res.headers.get("content-type")! },
    body: bytes,
  });
  assert.equal(put.status, 201);
  const seenLines = () =>
    stderr()
      .split("\n")
      .filter((l) => l.includes(`lab/app:1.0@${digest}: seen`));
  await until("the second notification", 60_000, async () => (seenLines().length >= 1 ? true : undefined));
  // Give a wrongly queued job the time to show up before asserting there is none.
  await new Promise((r) => setTimeout(r, 2000));
  assert.deepEqual(
    (await jobs()).map((j) => j.id),
    before.map((j) => j.id),
  );
  assert.equal(await manifestDigest("lab/app", "1.0-patched"), patched);
});

test("the API refuses a missing or wrong token, and never echoes one", async () => {
  for (const auth of [
    "",
    "Bearer wrong-token-0123456789",
    `Basic ${Buffer.from(`x:${token}`).toString("base64")}`,
  ]) {
    const res = await get("/api/v1/jobs", auth);
    assert.equal(res.status, 401);
    const body = await res.text();
    assert.match(body, /"code":"UNAUTHORIZED"/);
    assert.ok(!body.includes(token));
  }
  const hook = await fetch(`${api}/hooks/registry`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer nope" },
    body: JSON.stringify({ events: [] }),
  });
  assert.equal(hook.status, 401);
  assert.equal((await get("/healthz", "")).status, 200);
  assert.ok(!stderr().includes(token), "the token is not in the service's log");
});
