/**
 * The scaled-out service with real parts (issue 17, "Done when"): redis-server, PostgreSQL, a
 * loopback registry holding 30 distinct source images (15 of the Debian minbase lab image and 15
 * of the distroless lab image, each re-tagged with its own manifest annotation, so 30 digests),
 * `suture serve --concurrency 0` queueing them from its rules, and two `suture worker` processes
 * running serve's job code. One worker is killed with SIGKILL in the middle of its first real
 * patch and restarted (as a supervisor would): the killed job is taken over and finishes, every
 * job ends patched exactly once, each target tag exists once with a whole patched image, and no
 * other tag appears.
 *
 * What keeps 30 real patches fast: the copies share their config (the annotation is in the
 * manifest only), so the native engine's result cache (keyed by config digest) rebuilds the patch
 * layer once per base and reuses it for the others; the test says how many jobs reused it and
 * what a job cost.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { readTar } from "../../src/archive/tar/read.ts";
import { listMountPoints, unmount } from "../../src/sandbox/overlay.ts";
import type { JobEvent, JobRecord } from "../../src/serve/queue.ts";
import { BullmqJobQueue } from "../../src/serve/queue-bullmq.ts";
import type { PatchRecord, ServiceStore } from "../../src/serve/store.ts";
import { openPostgresStore } from "../../src/serve/store-postgres.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { SUTURE } from "../lab/cli.ts";
import { distrolessLabImage } from "../lab/distroless.ts";
import { labImage } from "../lab/images.ts";
import { type LabPostgres, startPostgres } from "../lab/postgres.ts";
import { freePort, type LabRedis, startRedis } from "../lab/redis.ts";
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
/** Copies per base image: 2 × 15 = 30 jobs. */
const COPIES = 15;
const BASES = [
  { repository: "lab/debian", rule: "debian" },
  { repository: "lab/distroless", rule: "distroless" },
] as const;
const JOBS = BASES.length * COPIES;
const MANIFEST_TYPES =
  "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

let registry: LabRegistry;
let redis: LabRedis;
let postgres: LabPostgres;
let work: string;
let databaseUrl: string;

before(async () => {
  await useArchiveMirror();
  work = await mkdtemp(join(tmpdir(), "suture-worker-scale-"));
  [registry, redis, postgres] = await Promise.all([
    startRegistry({ auth: "none" }),
    startRedis(),
    startPostgres(),
  ]);
  databaseUrl = await postgres.createDatabase("service");
  const sources = [(await labImage("bookwormMinbase")).reference, (await distrolessLabImage()).reference];
  for (const [i, base] of BASES.entries()) {
    await run(SUTURE, ["copy", sources[i]!, `docker://${registry.host}/${base.repository}:base`]);
    // Copies with their own digests (an annotation apart: same config, same layers).
    const res = await fetch(`http://${registry.host}/v2/${base.repository}/manifests/base`, {
      headers: { accept: MANIFEST_TYPES },
    });
    const mediaType = res.headers.get("content-type") ?? "";
    const manifest = (await res.json()) as { annotations?: Record<string, string> };
    for (let n = 0; n < COPIES; n++) {
      const copy = { ...manifest, annotations: { ...manifest.annotations, "org.example.copy": String(n) } };
      const put = await fetch(`http://${registry.host}/v2/${base.repository}/manifests/v${n}`, {
        method: "PUT",
        headers: { "content-type": mediaType },
        body: JSON.stringify(copy),
      });
      assert.equal(put.status, 201, await put.text());
    }
  }
});

after(async () => {
  await Promise.all([registry?.stop(), redis?.stop(), postgres?.stop()]);
  if (!work) return;
  // A SIGKILLed worker cannot unmount its sandbox's overlay: nothing runs in a killed process.
  const mounts = (await listMountPoints()).filter((m) => m.startsWith(`${work}/`));
  for (const m of mounts.sort((a, b) => b.length - a.length)) await unmount(m);
  await rm(work, { recursive: true, force: true });
});

interface Manifest {
  config: { digest: string };
  layers: { digest: string }[];
}

async function registryGet(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`http://${registry.host}/v2/${path}`, {
    ...init,
    headers: { accept: MANIFEST_TYPES, ...init.headers },
  });
}

async function digestOf(repository: string, tag: string): Promise<string | undefined> {
  const res = await registryGet(`${repository}/manifests/${tag}`, { method: "HEAD" });
  return res.ok ? (res.headers.get("docker-content-digest") ?? undefined) : undefined;
}

async function manifestOf(repository: string, tag: string): Promise<Manifest> {
  const res = await registryGet(`${repository}/manifests/${tag}`);
  assert.equal(res.status, 200, `${repository}:${tag} exists`);
  return (await res.json()) as Manifest;
}

async function blob(repository: string, digest: string): Promise<Buffer> {
  const res = await registryGet(`${repository}/blobs/${digest}`);
  assert.equal(res.status, 200, `${digest} of ${repository} is there`);
  const bytes = Buffer.from(await res.arrayBuffer());
  assert.equal(`sha256:${createHash("sha256").update(bytes).digest("hex")}`, digest);
  return bytes;
}

/** The dpkg records (classic status file and distroless status.d stanzas) a patch layer writes: name -> version. */
async function dpkgVersionsIn(layerTar: Buffer): Promise<Map<string, string>> {
  const versions = new Map<string, string>();
  for await (const m of readTar([layerTar])) {
    const chunks: Buffer[] = [];
    for await (const c of m.body) chunks.push(c);
    const path = m.header.path.replace(/^\.?\//, "");
    if (path !== "var/lib/dpkg/status" && !/^var\/lib\/dpkg\/status\.d\/[^/.]+$/.test(path)) continue;
    for (const stanza of Buffer.concat(chunks).toString("utf8").split(/\n\n+/)) {
      const name = /^Package: (.+)$/m.exec(stanza)?.[1];
      const version = /^Version: (.+)$/m.exec(stanza)?.[1];
      if (name && version) versions.set(name, version);
    }
  }
  return versions;
}

/** Processes that must keep running: waits give up at once when one of them exits. */
const expectedAlive = new Set<ChildProcess>();

function startProcess(name: string, args: string[], log: string[]): ChildProcess {
  const child = spawn(SUTURE, args, {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, CI: "true" },
  });
  expectedAlive.add(child);
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    for (const line of s.split("\n")) if (line) log.push(`${name}: ${line}`);
  });
  return child;
}

function startWorker(name: string, log: string[]): ChildProcess {
  return startProcess(
    name,
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
    log,
  );
}

async function stop(children: ChildProcess[]): Promise<void> {
  expectedAlive.clear();
  const alive = children.filter((c) => c.exitCode === null && c.signalCode === null);
  for (const c of alive) c.kill("SIGTERM");
  await Promise.all(alive.map((c) => new Promise((r) => c.once("exit", r))));
}

test(`${JOBS} real patches queued by suture serve, two workers, one killed mid-patch: each job done exactly once`, async (t) => {
  const store: ServiceStore = await openPostgresStore(databaseUrl);
  const queue = new BullmqJobQueue({ url: redis.url });
  const children: ChildProcess[] = [];
  const log: string[] = [];
  const token = randomBytes(24).toString("hex");
  try {
    const rules = join(work, "rules.yaml");
    await writeFile(
      rules,
      `apiVersion: suture.dev/v1alpha1
kind: ServeRules
rules:
${BASES.map(
  (b) => `  - id: ${b.rule}
    image: ${registry.host}/${b.repository}
    tags: { strategy: pattern, pattern: "^v[0-9]+$" }
    target: { tag: "{{ .SourceTag }}-patched" }
    interval: 1h
`,
).join("")}`,
    );
    await writeFile(join(work, "token"), token, { mode: 0o600 });
    children.push(startWorker("victim", log), startWorker("survivor", log));
    await until("both workers to listen", 60_000, log, () =>
      log.filter((l) => l.includes("suture worker: taking jobs")).length === 2 ? true : undefined,
    );

    // serve queues every tag of its rules on its first poll; it runs none itself.
    const started = Date.now();
    const port = await freePort();
    children.push(
      startProcess(
        "serve",
        [
          "serve",
          "--rules",
          rules,
          "--listen",
          `127.0.0.1:${port}`,
          "--token-file",
          join(work, "token"),
          "--redis",
          redis.url,
          "--database",
          databaseUrl,
          "--concurrency",
          "0",
          "--fixes-interval",
          "0",
          "--cache-dir",
          join(work, "serve-cache"),
        ],
        log,
      ),
    );
    const api = async <T>(path: string): Promise<T> => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
      return (await res.json()) as T;
    };
    await until("serve to queue every tag", 120_000, log, () =>
      log.filter((l) => / polled \d+ tags, \d+ new jobs/.test(l)).length === BASES.length ? true : undefined,
    );
    assert.deepEqual(
      log
        .filter((l) => /polled/.test(l))
        .map((l) => l.replace(/^.*(rule \S+: polled .*)$/, "$1"))
        .sort(),
      BASES.map((b) => `rule ${b.rule}: polled ${COPIES} tags, ${COPIES} new jobs`).sort(),
      "every copy (not :base) became a job",
    );

    // Kill the victim in the middle of its first patch: while the engine installs packages.
    const victimJob = await until(
      "the victim to take a job",
      120_000,
      log,
      () => log.find((l) => l.startsWith("victim: job "))?.split(" ")[2],
    );
    await until("the victim's job to be installing packages", 300_000, log, async () => {
      const events: JobEvent[] = await queue.events(victimJob);
      return events.some((e) => e.type === "step" && e.step === "apply") ? true : undefined;
    });
    expectedAlive.delete(children[0]!);
    children[0]!.kill("SIGKILL");
    const killedAt = Date.now();
    await new Promise((r) => children[0]!.once("exit", r));
    assert.equal(
      log.some((l) => l.startsWith(`victim: job ${victimJob} patched`)),
      false,
      "the victim was killed before it finished its job",
    );
    const victimSpec = (await queue.get(victimJob))!.spec;
    const victimTarget = victimSpec.target.slice(registry.host.length + 1).split(":");
    assert.equal(
      await digestOf(victimTarget[0]!, victimTarget[1]!),
      undefined,
      "nothing of the killed run is visible under its target tag",
    );
    // A supervisor (systemd, a Deployment) starts a killed worker again.
    children.push(startWorker("restarted", log));

    const jobs = await until(`all ${JOBS} jobs to end`, 20 * 60_000, log, async () => {
      const list = await api<JobRecord[]>("/api/v1/jobs?limit=1000");
      return list.length === JOBS && list.every((j) => ["succeeded", "failed", "cancelled"].includes(j.state))
        ? list
        : undefined;
    });
    const elapsed = Date.now() - started;
    for (const j of jobs) assert.equal(j.state, "succeeded", `job ${j.id}: ${JSON.stringify(j)}`);
    assert.equal(new Set(jobs.map((j) => j.spec.source)).size, JOBS, "one job per source digest");

    // Each job ran its handler exactly once, except the killed one, which ran once more.
    for (const j of jobs) assert.equal(j.attempts, j.id === victimJob ? 2 : 1, `attempts of ${j.id}`);
    const starts = log.filter((l) => / job \S+ started /.test(l));
    assert.equal(starts.length, JOBS + 1, `handler runs:\n${starts.join("\n")}`);
    const finished = log.filter((l) => / job \S+ patched:/.test(l)).map((l) => l.split(" ")[2]);
    assert.deepEqual([...finished].sort(), jobs.map((j) => j.id).sort(), "each job patched once");
    assert.ok(
      log.some((l) => /^(survivor|restarted): job /.test(l) && l.includes(`job ${victimJob} patched`)),
      "another worker finished the killed job",
    );

    // The store: exactly one result per job, a success (the killed run recorded nothing).
    const records: PatchRecord[] = [];
    for (const b of BASES)
      records.push(...(await store.results.forImage(`${registry.host}/${b.repository}`)));
    assert.equal(records.length, JOBS, "one recorded result per job");
    for (const j of jobs) {
      const mine = records.filter((r) => r.jobId === j.id);
      assert.equal(mine.length, 1, `one result for ${j.id}`);
      assert.equal(mine[0]!.state, "succeeded");
      assert.equal(mine[0]!.outcome?.status, "patched");
      assert.equal(mine[0]!.outcome?.digest, j.result?.digest);
    }

    // The registry: the sources and exactly one patched tag per source, nothing else.
    const patchLayers = new Map<string, { repository: string; changed: { name: string; to: string }[] }>();
    for (const b of BASES) {
      const tags = ((await (await registryGet(`${b.repository}/tags/list`)).json()) as { tags: string[] })
        .tags;
      const expected = [
        "base",
        ...Array.from({ length: COPIES }, (_, n) => [`v${n}`, `v${n}-patched`]).flat(),
      ];
      assert.deepEqual([...tags].sort(), expected.sort(), `${b.repository}'s tags`);
      const source = await manifestOf(b.repository, "base");
      const sourceConfig = JSON.parse((await blob(b.repository, source.config.digest)).toString()) as {
        rootfs: { diff_ids: string[] };
      };
      for (let n = 0; n < COPIES; n++) {
        const tag = `v${n}-patched`;
        const job = jobs.find((j) => j.spec.target === `${registry.host}/${b.repository}:${tag}`);
        assert.ok(job, `a job wrote ${tag}`);
        assert.equal(await digestOf(b.repository, tag), job.result?.digest, `${tag} is what its job pushed`);
        // A whole patched image: the source's layers, one patch layer, the config naming them all.
        const patched = await manifestOf(b.repository, tag);
        assert.deepEqual(
          patched.layers.slice(0, -1).map((l) => l.digest),
          source.layers.map((l) => l.digest),
        );
        const config = JSON.parse((await blob(b.repository, patched.config.digest)).toString()) as {
          rootfs: { diff_ids: string[] };
        };
        assert.deepEqual(config.rootfs.diff_ids.slice(0, -1), sourceConfig.rootfs.diff_ids);
        const layer = patched.layers.at(-1)!.digest;
        if (!patchLayers.has(layer)) {
          const tar = gunzipSync(await blob(b.repository, layer));
          assert.equal(
            `sha256:${createHash("sha256").update(tar).digest("hex")}`,
            config.rootfs.diff_ids.at(-1),
          );
          const versions = await dpkgVersionsIn(tar);
          const changed = job.result?.changed ?? [];
          assert.ok(changed.length > 0, `${tag}: packages were updated`);
          for (const c of changed)
            assert.equal(versions.get(c.name), c.to, `${tag}: ${c.name} in the patch layer`);
          patchLayers.set(layer, { repository: b.repository, changed });
        }
      }
    }

    // What a job cost: how many rebuilt the patch layer and how many reused it.
    const reused = new Set<string>();
    for (const j of jobs) {
      const events = await queue.events(j.id);
      if (events.some((e) => e.type === "info" && /reusing the patch layer/.test(e.message)))
        reused.add(j.id);
    }
    const ms = (rs: PatchRecord[]) =>
      rs.length
        ? `${(rs.map((r) => r.durationMs).sort((a, b) => a - b)[rs.length >> 1]! / 1000).toFixed(1)} s`
        : "-";
    t.diagnostic(
      `${JOBS} real patches, 2 workers (one SIGKILLed ${((killedAt - started) / 1000).toFixed(1)} s in, then restarted): ` +
        `${(elapsed / 1000).toFixed(1)} s from serve's start, ${((JOBS / elapsed) * 60_000).toFixed(1)} patches/min; ` +
        `${reused.size} jobs reused a patch layer (median ${ms(records.filter((r) => reused.has(r.jobId)))}), ` +
        `${JOBS - reused.size} built one (median ${ms(records.filter((r) => !reused.has(r.jobId)))}); ` +
        `${patchLayers.size} distinct patch layers`,
    );
    // A base's layer is built by each job of it that starts before the first build is kept: the
    // two workers' first jobs, and the killed job's second run (measured: 3 and 4 builds in all).
    assert.ok(JOBS - reused.size <= 3 * BASES.length, `${JOBS - reused.size} jobs rebuilt the patch layer`);
  } finally {
    await stop(children);
    await queue.close();
    await store.close();
  }
});

async function until<T>(
  what: string,
  timeoutMs: number,
  log: string[],
  f: () => T | undefined | Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log:\n${log.join("\n")}`);
    if ([...expectedAlive].some((c) => c.exitCode !== null || c.signalCode !== null))
      throw new Error(`a service process exited while waiting for ${what}; log:\n${log.join("\n")}`);
    await sleep(200);
  }
}
