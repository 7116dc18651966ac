/**
 * The scaled-out service with real parts: redis-server, PostgreSQL, a loopback registry holding
 * variants of a real old Debian lab image, and two `suture worker` processes running serve's job
 * code. One worker is killed with SIGKILL in the middle of a real patch: its job is taken over by
 * the other and finishes; every job ends patched exactly once, each patched tag is complete, and
 * the store holds one success per job.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { BullmqJobQueue } from "../../src/serve/queue-bullmq.ts";
import type { ServiceStore } from "../../src/serve/store.ts";
import { openPostgresStore } from "../../src/serve/store-postgres.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { SUTURE } from "../lab/cli.ts";
import { labImage } from "../lab/images.ts";
import { type LabPostgres, startPostgres } from "../lab/postgres.ts";
import { type LabRedis, startRedis } from "../lab/redis.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "postgres",
  "tool:docker-registry",
  "tool:mmdebstrap",
  "tool:redis-server",
);

const run = promisify(execFile);
const VARIANTS = 4;
let registry: LabRegistry;
let redis: LabRedis;
let postgres: LabPostgres;
let work: string;
let databaseUrl: string;
const MANIFEST_TYPES =
  "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

before(async () => {
  await useArchiveMirror();
  work = await mkdtemp(join(tmpdir(), "suture-worker-scale-"));
  [registry, redis, postgres] = await Promise.all([
    startRegistry({ auth: "none" }),
    startRedis(),
    startPostgres(),
  ]);
  databaseUrl = await postgres.createDatabase("service");
  const lab = await labImage("bookwormMinbase");
  await run(SUTURE, ["copy", lab.reference, `docker://${registry.host}/lab/debian:base`]);
  // Variants with their own digests (an annotation apart, the same layers): one job per digest.
  const res = await fetch(`http://${registry.host}/v2/lab/debian/manifests/base`, {
    headers: { accept: MANIFEST_TYPES },
  });
  const mediaType = res.headers.get("content-type") ?? "";
  const manifest = (await res.json()) as { annotations?: Record<string, string> };
  for (let i = 0; i < VARIANTS; i++) {
    const variant = {
      ...manifest,
      annotations: { ...manifest.annotations, "org.example.variant": String(i) },
    };
    const put = await fetch(`http://${registry.host}/v2/lab/debian/manifests/v${i}`, {
      method: "PUT",
      headers: { "content-type": mediaType },
      body: JSON.stringify(variant),
    });
    assert.equal(put.status, 201, await put.text());
  }
});

after(async () => {
  await Promise.all([registry?.stop(), redis?.stop(), postgres?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

async function digestOf(repository: string, tag: string): Promise<string | undefined> {
  const res = await fetch(`http://${registry.host}/v2/${repository}/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: MANIFEST_TYPES },
  });
  return res.ok ? (res.headers.get("docker-content-digest") ?? undefined) : undefined;
}

/** Every blob a tag's manifest names is in the registry: the tag is whole, not a partial push. */
async function assertComplete(repository: string, tag: string): Promise<number> {
  const res = await fetch(`http://${registry.host}/v2/${repository}/manifests/${tag}`, {
    headers: { accept: MANIFEST_TYPES },
  });
  assert.equal(res.status, 200, `${repository}:${tag} exists`);
  const manifest = (await res.json()) as { config: { digest: string }; layers: { digest: string }[] };
  for (const blob of [manifest.config, ...manifest.layers]) {
    const head = await fetch(`http://${registry.host}/v2/${repository}/blobs/${blob.digest}`, {
      method: "HEAD",
    });
    assert.equal(head.status, 200, `${blob.digest} of ${repository}:${tag} is there`);
  }
  return manifest.layers.length;
}

function startWorker(name: string, log: string[]): ChildProcess {
  const child = spawn(
    SUTURE,
    [
      "worker",
      "--redis",
      redis.url,
      "--database",
      databaseUrl,
      "--cache-dir",
      join(work, "cache"),
      "--work-dir",
      work,
      // Longer than the event loop ever stalls in a real patch: a lock that lapses while its
      // worker is alive hands the job to another worker too (4 s was seen to be too short).
      "--lock-duration",
      "15s",
      "--stalled-interval",
      "1s",
      "--backoff",
      "1s",
    ],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, CI: "true" } },
  );
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    for (const line of s.split("\n")) if (line) log.push(`${name}: ${line}`);
  });
  return child;
}

test("two suture workers patch real images from the queue; one killed mid-patch loses nothing", async (t) => {
  const store: ServiceStore = await openPostgresStore(databaseUrl);
  const producer = new BullmqJobQueue({ url: redis.url });
  const workers: ChildProcess[] = [];
  const log: string[] = [];
  try {
    await store.rules.put({
      id: "lab",
      image: `${registry.host}/lab/debian`,
      tags: { strategy: "pattern", pattern: "^v\\d+$" },
      target: { tag: "{{ .Tag }}-patched" },
      intervalSeconds: 3600,
    });
    const victim = startWorker("victim", log);
    const survivor = startWorker("survivor", log);
    workers.push(victim, survivor);

    const started = Date.now();
    const jobs = [];
    for (let i = 0; i < VARIANTS; i++) {
      const digest = await digestOf("lab/debian", `v${i}`);
      assert.ok(digest);
      const { job } = await producer.enqueue({
        ruleId: "lab",
        source: `${registry.host}/lab/debian:v${i}@${digest}`,
        target: `${registry.host}/lab/debian:v${i}-patched`,
        reason: "manual",
      });
      jobs.push(job);
    }

    // Kill the victim a moment into its first job (patching: layers, packages, the push).
    let killedJob: string | undefined;
    const deadline = Date.now() + 120_000;
    while (!killedJob && Date.now() < deadline) {
      killedJob = log.find((l) => l.startsWith("victim: job "))?.split(" ")[2];
      if (!killedJob) await sleep(100);
    }
    assert.ok(killedJob, `the victim took a job: ${log.join("\n")}`);
    await sleep(3000);
    victim.kill("SIGKILL");
    const killedAt = Date.now();
    assert.equal(
      log.some((l) => l.startsWith(`victim: job ${killedJob} patched`)),
      false,
      "the victim was killed before it finished its job",
    );

    for (const job of jobs) {
      const end = Date.now() + 15 * 60_000;
      let state = "";
      while (Date.now() < end) {
        state = (await producer.get(job.id))?.state ?? "";
        if (state === "succeeded" || state === "failed" || state === "cancelled") break;
        await sleep(500);
      }
      assert.equal(
        state,
        "succeeded",
        `job ${job.id}: ${JSON.stringify(await producer.get(job.id))}\n${log.join("\n")}`,
      );
    }
    const elapsed = Date.now() - started;

    t.diagnostic(
      `${VARIANTS} real patches with 2 workers (one SIGKILLed ${((killedAt - started) / 1000).toFixed(1)} s in): ${(elapsed / 1000).toFixed(1)} s in all, ${((VARIANTS / elapsed) * 60_000).toFixed(1)} patches/min`,
    );
    const baseLayers = await assertComplete("lab/debian", "base");
    for (let i = 0; i < VARIANTS; i++) {
      const layers = await assertComplete("lab/debian", `v${i}-patched`);
      assert.equal(layers, baseLayers + 1, "one patch layer on top of the source's");
    }
    const killed = await producer.get(killedJob);
    assert.equal(killed?.attempts, 2, "the killed job ran once more");
    assert.ok(
      log.some((l) => l.startsWith(`survivor: job ${killedJob} patched`)),
      "the survivor finished it",
    );

    // The store: one success per job, the rule's history under the source repository.
    const history = await store.results.forImage(`${registry.host}/lab/debian`);
    for (const job of jobs) {
      const runs = history.filter((r) => r.jobId === job.id && r.state === "succeeded");
      assert.equal(runs.length, 1, `one recorded success for ${job.id}`);
      assert.equal(runs[0]?.outcome?.status, "patched");
      assert.ok((runs[0]?.outcome?.changed.length ?? 0) > 0, "packages were updated");
    }
  } finally {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill("SIGTERM");
    await Promise.all(
      workers.map((w) =>
        w.exitCode === null && w.signalCode === null ? new Promise((r) => w.once("exit", r)) : undefined,
      ),
    );
    await producer.close();
    await store.close();
  }
});
