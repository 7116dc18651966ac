/**
 * `suture serve`'s new-fixes schedule (issue 17): on each `--fixes-interval`, the images it has
 * patched are dry-run against their verified repositories; an image gets a new job when a newer
 * fix appeared there since its patch, and none while nothing changed.
 *
 * Real parts: `suture serve` (embedded queue and store, as on one machine), a loopback registry
 * holding the Alpine lab image (Alpine's own 3.20.3 minirootfs + an app layer), and the lab's
 * signed apk repository of edge's real newer builds, served here by a server whose index the test
 * switches between polls: first without zlib's newer build (re-indexed and re-signed with the lab
 * key the image trusts), then the whole repository, as when a distribution publishes a fix.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, normalize } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { readTar } from "../../src/archive/tar/read.ts";
import type { JobRecord } from "../../src/serve/queue.ts";
import type { PatchRecord } from "../../src/serve/store.ts";
import { ALPINE_COMMUNITY_URL, ALPINE_REPO_URL, alpineLabImage } from "../lab/alpine-lab.ts";
import { alpineTestRepoFiles } from "../lab/alpine-repo.ts";
import { buildApkIndex } from "../lab/apk.ts";
import { SUTURE } from "../lab/cli.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import { type ServeProcess, startServe } from "../lab/serve.ts";

const { after, before, test } = await requiring("root", "runc", "loopback", "tool:docker-registry");

const run = promisify(execFile);
/** The fix the repository publishes between polls (ALPINE_LAB_FIXES: 1.3.1-r1 installed). */
const LATE = { name: "zlib", fixed: "1.3.1-r2" };
const MAIN_INDEX = "v3.20/main/x86_64/APKINDEX.tar.gz";

let registry: LabRegistry;
let work: string;
let repo: { url: string; communityUrl: string; publish(): void; server: Server };
let service: ServeProcess | undefined;
const log = () => service?.log() ?? "";

/**
 * The lab repository, served with a switch: `withheld` is its main index without LATE's record,
 * signed again with the lab key; `publish()` serves the real index from then on.
 */
async function startSwitchableRepo() {
  const built = await alpineTestRepoFiles("lab");
  let published = false;
  const unsigned = gunzipSync(await readFile(join(built.parts, "x86_64", "APKINDEX.unsigned.tar.gz")));
  let text = "";
  for await (const m of readTar([unsigned])) {
    const chunks: Buffer[] = [];
    for await (const c of m.body) chunks.push(c);
    if (m.header.path === "APKINDEX") text = Buffer.concat(chunks).toString("utf8");
  }
  const records = text.split("\n\n").filter((r) => r.trim());
  const kept = records.filter((r) => !new RegExp(`^P:${LATE.name}$`, "m").test(r));
  assert.equal(kept.length, records.length - 1, `the index has one ${LATE.name} record`);
  assert.match(text, new RegExp(`^P:${LATE.name}\nV:${LATE.fixed.replace(/\./g, "\\.")}$`, "m"));
  const withheld = buildApkIndex(`${kept.join("\n\n")}\n\n`, built.key, "sha1", "suture lab: zlib withheld");
  const server = createServer((req, res) => {
    const rel = normalize(decodeURIComponent((req.url ?? "/").split("?")[0]!)).replace(/^\/+/, "");
    if (rel.startsWith("..") || req.method !== "GET") {
      res.writeHead(404).end();
      return;
    }
    const body =
      rel === MAIN_INDEX && !published ? Promise.resolve(withheld) : readFile(join(built.root, rel));
    body.then(
      (bytes) => res.writeHead(200, { "content-length": bytes.length }).end(bytes),
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `${origin}/v3.20/main`,
    communityUrl: `${origin}/v3.20/community`,
    publish: () => {
      published = true;
    },
    server,
  };
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-new-fixes-"));
  registry = await startRegistry({ auth: "none" });
  repo = await startSwitchableRepo();
  await run(SUTURE, ["copy", (await alpineLabImage("app")).ref, `docker://${registry.host}/lab/alpine:3.20`]);
});

after(async () => {
  await service?.stop();
  repo?.server.closeAllConnections();
  await new Promise((r) => repo?.server.close(r));
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function until<T>(what: string, timeoutMs: number, f: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (service?.child.exitCode !== null)
      throw new Error(`suture serve exited while waiting for ${what}:\n${log()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; service log:\n${log()}`);
    await sleep(250);
  }
}

async function get<T>(path: string): Promise<T> {
  const res = await fetch(`${service!.url}${path}`, {
    headers: { authorization: `Bearer ${service!.token}` },
  });
  assert.equal(res.status, 200, path);
  return (await res.json()) as T;
}

const jobs = () => get<JobRecord[]>("/api/v1/jobs");

async function tagDigest(tag: string): Promise<string | undefined> {
  const res = await fetch(`http://${registry.host}/v2/lab/alpine/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  return res.ok ? (res.headers.get("docker-content-digest") ?? undefined) : undefined;
}

/** The new-fixes checks logged so far that dry-ran the patched image: how many queued a job. */
function checks(): { queued: number }[] {
  return [...log().matchAll(/new-fixes check: 1 patched images dry-run, (\d+) new jobs/g)].map((m) => ({
    queued: Number(m[1]),
  }));
}

/** Wait for `n` more checks of the patched image after the `since` ones, and return them. */
async function moreChecks(since: number, n: number): Promise<{ queued: number }[]> {
  return until(`${n} more new-fixes checks`, 180_000, async () =>
    checks().length >= since + n ? checks().slice(since) : undefined,
  );
}

test("a patched image gets a new job when its repository publishes a newer fix, and none while nothing changed", async () => {
  service = await startServe({
    work,
    rules: `apiVersion: suture.dev/v1alpha1
kind: ServeRules
rules:
  - id: alpine
    image: ${registry.host}/lab/alpine
    tags: { strategy: list, list: ["3.20"] }
    target: { tag: "{{ .SourceTag }}-patched" }
    interval: 1h
`,
    args: [
      "--fixes-interval",
      "2s",
      "--mirror",
      `${ALPINE_REPO_URL}=${repo.url}`,
      "--mirror",
      `${ALPINE_COMMUNITY_URL}=${repo.communityUrl}`,
    ],
  });

  // The first poll patches the tag with what the repository has: every fix but zlib's.
  const first = await until("the first patch", 300_000, async () => {
    const list = await jobs().catch(() => []);
    return list.length === 1 && ["succeeded", "failed"].includes(list[0]!.state) ? list[0] : undefined;
  });
  assert.equal(first.state, "succeeded", JSON.stringify(first));
  assert.equal(first.spec.reason, "new-tag");
  assert.equal(first.result?.status, "patched");
  const firstChanged = new Map(first.result!.changed.map((c) => [c.name, c.to]));
  assert.equal(firstChanged.has(LATE.name), false, `${LATE.name} had no newer build yet`);
  assert.equal(firstChanged.get("musl"), "1.2.5-r3", "the other fixes were applied");
  const firstDigest = await tagDigest("3.20-patched");
  assert.equal(firstDigest, first.result?.digest);

  // Nothing changed in the repository: the scheduled dry runs queue nothing.
  const quiet = await moreChecks(checks().length, 2);
  assert.deepEqual(quiet, [{ queued: 0 }, { queued: 0 }], log());
  assert.equal((await jobs()).length, 1);
  assert.equal(await tagDigest("3.20-patched"), firstDigest);

  // The distribution publishes zlib's fix: the next check queues the image again.
  repo.publish();
  const second = await until("a new-fixes job to finish", 300_000, async () => {
    const list = await jobs();
    const job = list.find((j) => j.spec.reason === "new-fixes");
    return job && ["succeeded", "failed"].includes(job.state) ? job : undefined;
  });
  assert.equal(second.state, "succeeded", JSON.stringify(second));
  assert.equal(second.spec.source, first.spec.source, "the same pinned source, patched again");
  assert.equal(second.spec.target, first.spec.target);
  const secondChanged = new Map(second.result!.changed.map((c) => [c.name, c.to]));
  assert.equal(secondChanged.get(LATE.name), LATE.fixed, "the new fix is in");
  for (const [name, to] of firstChanged) assert.equal(secondChanged.get(name), to, `${name} kept`);
  const secondDigest = await tagDigest("3.20-patched");
  assert.equal(secondDigest, second.result?.digest, "the target tag moved to the new patch");
  assert.notEqual(secondDigest, firstDigest);
  const history = await get<PatchRecord[]>(
    `/api/v1/images/history?repository=${encodeURIComponent(`${registry.host}/lab/alpine`)}`,
  );
  assert.deepEqual(
    history.map((r) => [r.reason, r.state, r.outcome?.status]),
    [
      ["new-fixes", "succeeded", "patched"],
      ["new-tag", "succeeded", "patched"],
    ],
  );

  // And with that patch in, the repository holds nothing newer: no further jobs.
  const settled = await moreChecks(checks().length, 2);
  assert.deepEqual(settled, [{ queued: 0 }, { queued: 0 }], log());
  assert.equal((await jobs()).length, 2);
});
