/**
 * suture vs the apt-in-runc baseline (what copa does, minus BuildKit), measured in one run on this
 * machine. See bench/README.md for what each number means.
 *
 *   npm run bench [-- --only full,lib,alpine,rpm,multi,multi-full,big,service] [--reps 3] [--json FILE]
 *                 [--service-jobs 6]
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";
import { openImage, readAll } from "../src/image/image.ts";
import { defaultExclude } from "../src/layer/excludes.ts";
import { hostPlatform } from "../src/oci/platform.ts";
import { parseTransportReference } from "../src/ref/transport.ts";
import { withSandbox } from "../src/sandbox/sandbox.ts";
import type { JobRecord } from "../src/serve/queue.ts";
import { BullmqJobQueue } from "../src/serve/queue-bullmq.ts";
import { openSource } from "../src/transports/index.ts";
import {
  ALPINE_LAB_FIXES,
  alpineLabImage,
  alpineLabTrivyReport,
  startAlpineTestRepo,
} from "../test/lab/alpine-lab.ts";
import { bigLabImage } from "../test/lab/big-image.ts";
import { LIBRARY_REPORT_PACKAGES, labImage, trivyReportFor } from "../test/lab/images.ts";
import { labIndex } from "../test/lab/lab-index.ts";
import { startPostgres } from "../test/lab/postgres.ts";
import { freePort, startRedis } from "../test/lab/redis.ts";
import { startRegistry } from "../test/lab/registry.ts";
import { rpmLabFixes, rpmLabImage, rpmLabReport, startRpmTestRepo } from "../test/lab/rpm-lab.ts";

const { values: args } = parseArgs({
  options: {
    only: { type: "string", default: "full,lib,alpine,rpm,multi" },
    json: { type: "string" },
    reps: { type: "string", default: "3" },
    "service-jobs": { type: "string", default: "6" },
  },
});
const reps = Math.max(1, Number(args.reps));
const only = new Set(args.only!.split(","));
const suture = join(import.meta.dirname, "../bin/suture");
const work = await mkdtemp(join(tmpdir(), "suture-bench-"));

interface Run {
  name: string;
  wallMs: number;
  phases: Record<string, number>;
  layerBytes?: number;
  layerGzipBytes?: number;
  peakRssMb?: number;
  /** write_bytes of the suture process and the children it reaped (/proc/PID/io): what it had written to disk. */
  writtenMb?: number;
}
const results: {
  workload: string;
  packages: number;
  changedBytes?: number;
  runs: Run[];
  /** Figures a workload compares itself by (the big image's against the plain one). */
  ratios?: Record<string, number>;
  /** Other figures, printed as they are. */
  notes?: string[];
}[] = [];

/**
 * Start every run from the same state: flush dirty pages, drop the kernel's caches, then wait
 * until no block device completes any more writes or discards (ext4 mounted with `discard`, as
 * here, trims the blocks of deleted files for seconds after the delete). Without it, the run after the baseline (which
 * writes and deletes hundreds of MB) pays for the baseline's I/O, and the first run looks faster
 * than it is.
 */
async function settle(): Promise<void> {
  spawnSync("sync");
  // Same page, dentry and inode caches for every run (root only; elsewhere the runs just share them).
  await writeFile("/proc/sys/vm/drop_caches", "3").catch(() => {});
  const sample = async () => {
    let text = "";
    for (const dev of await readdir("/sys/block").catch(() => [] as string[]))
      text += await readFile(`/sys/block/${dev}/stat`, "utf8").catch(() => "");
    // Writes completed, in flight, discards completed (fields 5, 9 and 12), per device.
    return text
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .map((f) => `${f[4]} ${f[8]} ${f[11]}`)
      .join(";");
  };
  let last = await sample();
  let quiet = 0;
  for (let waited = 0; quiet < 4 && waited < 60_000; waited += 250) {
    await new Promise((r) => setTimeout(r, 250));
    const now = await sample();
    quiet = now === last ? quiet + 1 : 0;
    last = now;
  }
}

/** One command of a baseline, run in the image by runc. */
interface BaselineStep {
  name: string;
  argv: string[];
  env?: string[];
}

/** copa's apt commands for a report's packages. */
function aptSteps(packages: string[]): BaselineStep[] {
  const env = ["DEBIAN_FRONTEND=noninteractive"];
  return [
    { name: "apt-get update", argv: ["apt-get", "update"], env },
    {
      name: "apt-get install",
      argv: [
        "apt-get",
        "install",
        "--no-install-recommends",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confold",
        ...packages,
      ],
      env,
    },
  ];
}

/**
 * copa's apk commands for a report's packages, against the given repositories (the lab's loopback
 * ones: the baseline's own /etc/apk/repositories is rewritten in its sandbox, as a user of copa
 * behind a mirror would).
 */
function apkSteps(packages: string[], repositories: string[]): BaselineStep[] {
  return [
    {
      name: "point apk at the mirror",
      argv: [
        "sh",
        "-c",
        `printf '%s\\n' ${repositories.map((r) => `'${r}'`).join(" ")} > /etc/apk/repositories`,
      ],
    },
    { name: "apk update", argv: ["apk", "update"] },
    // copa runs both (pkg/pkgmgr/apk.go): `apk add` for the names, `apk upgrade` to raise them.
    { name: "apk add", argv: ["apk", "add", "--no-cache", ...packages] },
    { name: "apk upgrade", argv: ["apk", "upgrade", "--no-cache", ...packages] },
  ];
}

/**
 * copa's dnf command (pkg/pkgmgr/rpm.go), with the image's repository pointed at the lab's
 * loopback server through dnf's own option (the image's repo file stays as it is).
 */
function dnfSteps(packages: string[], repoId: string, url: string): BaselineStep[] {
  return [
    {
      name: "dnf upgrade",
      argv: [
        "dnf",
        "-y",
        "--setopt=install_weak_deps=False",
        `--setopt=${repoId}.baseurl=${url}`,
        "upgrade",
        ...packages,
      ],
    },
  ];
}

/** The baseline: fresh unpack, overlay + runc, copa's commands, tar+gzip of the whole upper dir. */
async function baseline(
  reference: string,
  steps: BaselineStep[],
): Promise<{ run: Run; changedBytes: number }> {
  const cacheDir = join(work, `baseline-cache-${Math.random().toString(36).slice(2)}`);
  await settle();
  const started = performance.now();
  const phases: Record<string, number> = {};
  const source = await openSource(parseTransportReference(reference), {});
  const image = await openImage(source, hostPlatform());
  let t = performance.now();
  let changedBytes = 0;
  let layerGzipBytes = 0;
  let layerBytes = 0;
  await withSandbox(image, { cacheDir, workRoot: join(work, "baseline-work") }, async (sb) => {
    phases.unpack = performance.now() - t;
    for (const step of steps) {
      t = performance.now();
      const r = await sb.run(step.argv, { env: step.env ?? [] });
      if (r.exitCode !== 0) throw new Error(`${step.name} failed: ${r.stderr.slice(-500)}`);
      phases[step.name] = performance.now() - t;
    }
    t = performance.now();
    const tarball = join(work, "baseline-layer.tar.gz");
    await exec("tar", ["-C", sb.upperDir, "-czf", tarball, "."]);
    phases["tar+gzip"] = performance.now() - t;
    layerGzipBytes = (await stat(tarball)).size;
    layerBytes = gunzipSync(await readFile(tarball)).length;
    changedBytes = await reallyChangedBytes(sb.upperDir, sb.lowerDirs);
  });
  await source.close();
  await rm(cacheDir, { recursive: true, force: true });
  return {
    run: {
      name: `baseline (${steps.at(-1)!.argv[0]} in runc)`,
      wallMs: performance.now() - started,
      phases,
      layerBytes,
      layerGzipBytes,
    },
    changedBytes,
  };
}

/**
 * Bytes that really changed: regular files in the upper dir whose content, mode or owner differ
 * from the top-most lower layer holding the path (or that are new), outside suture's excludes
 * (apt lists, caches, logs, dpkg backups: the layer builder's definition). A file dpkg rewrote with
 * the same bytes and only a new mtime did not change; hardlinked names count once.
 */
async function reallyChangedBytes(upper: string, lowers: readonly string[]): Promise<number> {
  let total = 0;
  const seen = new Set<number>();
  const walk = async (rel: string) => {
    for (const name of await readdir(join(upper, rel))) {
      const path = `${rel}/${name}`;
      const st = await lstat(join(upper, path));
      const type = st.isDirectory()
        ? "directory"
        : st.isFile()
          ? "file"
          : st.isSymbolicLink()
            ? "symlink"
            : "other";
      if (defaultExclude(path, { type, size: st.isFile() ? st.size : 0 })) continue;
      if (st.isDirectory()) {
        await walk(path);
        continue;
      }
      if (!st.isFile() || seen.has(st.ino)) continue;
      seen.add(st.ino);
      let lower: import("node:fs").Stats | undefined;
      let lowerPath = "";
      for (const dir of [...lowers].reverse()) {
        lower = await lstat(join(dir, path)).catch(() => undefined);
        if (lower) {
          lowerPath = join(dir, path);
          break;
        }
      }
      const same =
        lower?.isFile() &&
        lower.size === st.size &&
        lower.mode === st.mode &&
        lower.uid === st.uid &&
        lower.gid === st.gid &&
        sha(await readFile(lowerPath)) === sha(await readFile(join(upper, path)));
      if (!same) total += st.size;
    }
  };
  await walk("");
  return total;
}

/** suture as a user runs it: the CLI, json progress for phase times, peak RSS polled from /proc. */
async function sutureRun(name: string, argv: string[]): Promise<Run> {
  await settle();
  const started = performance.now();
  const child = spawn(suture, [...argv, "--progress", "json"], { stdio: ["ignore", "pipe", "pipe"] });
  let peakKb = 0;
  let written = 0;
  const poll = setInterval(async () => {
    const s = await readFile(`/proc/${child.pid}/status`, "utf8").catch(() => "");
    const kb = Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? 0);
    if (kb > peakKb) peakKb = kb;
    // Counted when pages are dirtied (whether or not they reach the disk before a delete), and
    // including the children suture has reaped (runc and what ran in it).
    const io = await readFile(`/proc/${child.pid}/io`, "utf8").catch(() => "");
    const w = Number(/write_bytes:\s+(\d+)/.exec(io)?.[1] ?? 0);
    if (w > written) written = w;
  }, 50);
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  child.stdout.resume();
  const code = await new Promise<number>((r) => child.on("exit", (c) => r(c ?? 1)));
  clearInterval(poll);
  if (code !== 0) throw new Error(`${name}: suture exited ${code}: ${stderr.slice(-800)}`);
  const phases: Record<string, number> = {};
  for (const line of stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    const e = JSON.parse(line);
    if (e.type === "step-done" && !e.step.startsWith("extract-layer"))
      phases[e.step] = (phases[e.step] ?? 0) + e.elapsedMs;
    if (e.type === "step-done" && e.step.startsWith("extract-layer"))
      phases.unpack = (phases.unpack ?? 0) + e.elapsedMs;
  }
  return {
    name,
    wallMs: performance.now() - started,
    phases,
    peakRssMb: Math.round(peakKb / 1024),
    writtenMb: Math.round(written / 1024 / 1024),
  };
}

/** Size of the last layer of a patched image: compressed and uncompressed. */
async function lastLayer(reference: string): Promise<{ gz: number; raw: number }> {
  const image = await openImage(await openSource(parseTransportReference(reference), {}), hostPlatform());
  const bytes = await readAll(await image.blobs.blob(image.parsed.layers.at(-1)!), 1 << 30);
  return { gz: bytes.length, raw: gunzipSync(bytes).length };
}

/**
 * One workload. The baseline and the cold runs are repeated `--reps` times, interleaved
 * (baseline, native cold, sandbox cold, baseline, …), and the median of each is reported: on this
 * machine the speed of creating files moves by 2-5× with what the disk did before (ext4 with
 * online discard), so a single run in a fixed order favours whichever goes first. Warm runs follow,
 * on the caches of the last cold runs.
 */
async function workload(
  name: string,
  reference: string,
  report: string,
  packages: string[],
  options: { steps: BaselineStep[]; extraArgs?: string[] },
) {
  console.error(`» ${name}: ${packages.length} packages`);
  let changedBytes = 0;
  const baselines: Run[] = [];
  const colds: Record<string, Run[]> = { native: [], sandbox: [] };
  let outputs = 0;
  const patch = async (engine: string, temp: string, cache: string) => {
    // Registry to registry, as users run it: the patched image is pushed beside the source.
    const target = `${reference.replace(/:[^:/]+$/, "")}:bench-${outputs++}`;
    const r = await sutureRun(`suture ${engine} (${temp} cache)`, [
      "patch",
      "-i",
      reference,
      "-r",
      report,
      "-t",
      target,
      "--push",
      "--engine",
      engine,
      "--cache-dir",
      cache,
      ...(options.extraArgs ?? []),
    ]);
    const layer = await lastLayer(target);
    r.layerBytes = layer.raw;
    r.layerGzipBytes = layer.gz;
    return r;
  };
  const caches: Record<string, string> = {};
  for (let rep = 0; rep < reps; rep++) {
    const b = await baseline(reference, options.steps);
    changedBytes = b.changedBytes;
    baselines.push(b.run);
    for (const engine of ["native", "sandbox"]) {
      caches[engine] = join(work, `cache-${name}-${engine}-${rep}`);
      colds[engine]!.push(await patch(engine, "cold", caches[engine]!));
    }
  }
  const runs: Run[] = [median(baselines)];
  for (const engine of ["native", "sandbox"]) {
    runs.push(median(colds[engine]!));
    runs.push(await patch(engine, "warm", caches[engine]!));
    if (engine === "native") {
      // The warm run reused the layer built before; without that result, a second patch rebuilds
      // it with everything else cached (layers, indexes, packages).
      await rm(join(caches[engine]!, "results"), { recursive: true, force: true });
      runs.push(await patch(engine, "warm, layer rebuilt", caches[engine]!));
    }
  }
  results.push({ workload: name, packages: packages.length, changedBytes, runs });
}

/** The run with the median wall time (the upper one of an even count); its name says of how many. */
function median(runs: Run[]): Run {
  const sorted = [...runs].sort((a, b) => a.wallMs - b.wallMs);
  const m = sorted[Math.floor(sorted.length / 2)]!;
  return runs.length > 1 ? { ...m, name: `${m.name}, median of ${runs.length}` } : m;
}

// The full and library-only workloads read the image from a loopback registry (Debian's
// docker-registry) and push the result there; the baseline pulls from it too.
const registry = await startRegistry({ auth: "none" });
try {
  const lab = await labImage("bookwormNginx");
  const nginx = { reference: `${registry.host}/lab/nginx:base` };
  if (only.has("full") || only.has("lib") || only.has("big"))
    await copyImageTo(lab.reference, nginx.reference);
  if (only.has("full")) {
    // Issue 15's "full report on an image whose fixes include ca-certificates, tzdata, perl and
    // python": the nginx lab image with python3 (one more layer).
    const python = `${registry.host}/lab/nginx-python:base`;
    await copyImageTo((await labImage("bookwormNginxPython")).reference, python);
    const r = await trivyReportFor("bookwormNginxPython", { outFile: join(work, "full.json") });
    await workload(
      "full report",
      python,
      r.path,
      r.fixes.map((f) => f.name),
      { steps: aptSteps(r.fixes.map((f) => f.name)) },
    );
  }
  if (only.has("lib")) {
    const r = await trivyReportFor("bookwormNginx", {
      only: LIBRARY_REPORT_PACKAGES,
      outFile: join(work, "lib.json"),
    });
    await workload(
      "library-only report",
      nginx.reference,
      r.path,
      r.fixes.map((f) => f.name),
      { steps: aptSteps(r.fixes.map((f) => f.name)) },
    );
  }
  if (only.has("big")) await bigWorkload(nginx.reference);
  if (only.has("service")) await serviceWorkload(registry.host);
  if (only.has("alpine")) {
    // The Alpine lab image (3.20.3 + an app layer) and its signed loopback repository of edge's
    // real newer builds (test/lab/alpine-lab.ts); the report names every package with a fix.
    const repo = await startAlpineTestRepo();
    try {
      const alpine = `${registry.host}/lab/alpine:base`;
      await copyImageTo((await alpineLabImage("app")).ref, alpine);
      const report = join(work, "alpine.json");
      await writeFile(report, JSON.stringify(alpineLabTrivyReport()));
      const packages = ALPINE_LAB_FIXES.map((f) => f.name);
      await workload("Alpine, full report", alpine, report, packages, {
        steps: apkSteps(packages, [repo.url, repo.communityUrl]),
        extraArgs: repo.mirrorFlags.flatMap((m) => ["--mirror", m]),
      });
    } finally {
      await repo.close();
    }
  }
  if (only.has("rpm")) {
    // The RPM lab's Rocky-like dnf image (test/lab/rpm-lab.ts: Debian's dnf 4.14 and rpm 4.18 in
    // the image, bookworm packages as rpms) and its signed loopback repository of their
    // bookworm-security builds; the report names every package with a fix.
    const repo = await startRpmTestRepo();
    try {
      const rocky = `${registry.host}/lab/rocky:base`;
      await copyImageTo((await rpmLabImage("dnf")).ref, rocky);
      const report = join(work, "rpm.json");
      await writeFile(report, JSON.stringify(await rpmLabReport("dnf")));
      const packages = [...new Set((await rpmLabFixes("dnf")).map((f) => f.name))];
      await workload("RPM (dnf image), full report", rocky, report, packages, {
        steps: dnfSteps(packages, "baseos", repo.repoUrl("dnf")),
        extraArgs: ["--mirror", repo.mirrorArg("dnf")],
      });
    } finally {
      await repo.close();
    }
  }
  if (only.has("multi")) {
    const reports = join(work, "reports");
    await mkdir(reports);
    await trivyReportFor("bookwormMinbase", { only: ["liblzma5"], outFile: join(reports, "amd64.json") });
    await trivyReportFor("bookwormMinbaseArm64", {
      only: ["liblzma5"],
      outFile: join(reports, "arm64.json"),
    });
    const index = await labIndex(["bookwormMinbase", "bookwormMinbaseArm64"], join(work, "index"));
    const single = await labImage("bookwormMinbase");
    const runs: Run[] = [];
    for (const [label, ref, rep] of [
      ["one platform (amd64)", single.reference, join(reports, "amd64.json")],
      ["two-platform index (amd64 + arm64 under QEMU)", index.reference, reports],
    ] as const) {
      const cache = join(work, `cache-multi-${runs.length}`);
      for (const temp of ["cold", "warm"]) {
        const out = join(work, `out-multi-${runs.length}`);
        runs.push(
          await sutureRun(`suture ${label} (${temp} cache)`, [
            "patch",
            "-i",
            ref,
            "-r",
            rep,
            "-t",
            "bench",
            "--oci-dir",
            out,
            "--cache-dir",
            cache,
          ]),
        );
      }
    }
    results.push({ workload: "multi-platform (liblzma5 per platform)", packages: 1, runs });
  }
  if (only.has("multi-full")) {
    // Issue 15: the full report's image as an amd64 + arm64 index, within copa's default --timeout
    // of 5 minutes. arm64's maintainer scripts run under QEMU user emulation.
    const reports = join(work, "reports-full");
    await mkdir(reports);
    const amd64 = await trivyReportFor("bookwormNginxPython", { outFile: join(reports, "amd64.json") });
    const arm64 = await trivyReportFor("bookwormNginxPythonArm64", { outFile: join(reports, "arm64.json") });
    const index = await labIndex(
      ["bookwormNginxPython", "bookwormNginxPythonArm64"],
      join(work, "index-full"),
    );
    const runs: Run[] = [];
    for (let rep = 0; rep < reps; rep++)
      runs.push(
        await sutureRun("suture native, two-platform index (amd64 + arm64 under QEMU, cold cache)", [
          "patch",
          "-i",
          index.reference,
          "-r",
          reports,
          "-t",
          "bench",
          "--oci-dir",
          join(work, `out-multi-full-${rep}`),
          "--cache-dir",
          join(work, `cache-multi-full-${rep}`),
          "--engine",
          "native",
        ]),
      );
    const run = median(runs);
    results.push({
      workload: "full report as an amd64 + arm64 index",
      packages: Math.max(amd64.fixes.length, arm64.fixes.length),
      runs: [run],
      notes: [
        `${amd64.fixes.length} packages on amd64, ${arm64.fixes.length} on arm64; copa's default timeout is 5 minutes: ${run.wallMs <= 300_000 ? "within it" : "over it"}`,
      ],
    });
  }
} finally {
  await registry.stop();
  await rm(work, { recursive: true, force: true });
}

/**
 * Issue 15's big image: the nginx lab image plus ten generated layers of an ML stack (1.7 GB,
 * test/lab/big-image.ts), patched cold with the native engine from the same library-only report
 * as the plain image, the two interleaved `--reps` times; the table compares their medians.
 */
async function bigWorkload(plainReference: string) {
  const big = await bigLabImage();
  const bigReference = plainReference.replace(/\/nginx:base$/, "/nginx-big:base");
  await copyImageTo(big.reference, bigReference);
  const r = await trivyReportFor("bookwormNginx", {
    only: LIBRARY_REPORT_PACKAGES,
    outFile: join(work, "big-lib.json"),
  });
  console.error(
    `» big image: ${LIBRARY_REPORT_PACKAGES.length} packages, +${(big.addedBytes / 2 ** 30).toFixed(2)} GiB in ten layers`,
  );
  const colds: Record<string, Run[]> = { plain: [], big: [] };
  for (let rep = 0; rep < reps; rep++) {
    for (const [label, reference] of [
      ["plain", plainReference],
      ["big", bigReference],
    ] as const) {
      const cache = join(work, `cache-big-${label}-${rep}`);
      const target = `${reference.replace(/:[^:/]+$/, "")}:bench-big-${rep}`;
      colds[label]!.push(
        await sutureRun(`suture native, ${label} image (cold cache)`, [
          "patch",
          "-i",
          reference,
          "-r",
          r.path,
          "-t",
          target,
          "--push",
          "--engine",
          "native",
          "--cache-dir",
          cache,
          // The report is the plain image's (same packages): the big one has another config digest.
          "--ignore-report-image",
        ]),
      );
      await rm(cache, { recursive: true, force: true });
    }
  }
  const plain = median(colds.plain!);
  const bigRun = median(colds.big!);
  results.push({
    workload: `big image (nginx + ${(big.addedBytes / 2 ** 30).toFixed(2)} GiB in ten layers), library-only report`,
    packages: LIBRARY_REPORT_PACKAGES.length,
    runs: [plain, bigRun],
    ratios: {
      "cold time, big / plain": bigRun.wallMs / plain.wallMs,
      "bytes written, big / plain": (bigRun.writtenMb ?? 0) / Math.max(1, plain.writtenMb ?? 0),
    },
  });
}

/**
 * Issue 17's service line: `suture serve --redis --database --concurrency 0` queues N update-all
 * jobs from a rule, and 1, then 2, `suture worker` processes run them; against the bare CLI
 * patching the same kind of image with the same warm cache. Each job's source is a copy of the
 * bookworm minbase lab image with its own config label, so every job really patches (resolves,
 * unpacks, runs the scripts, builds and pushes its layer: the result cache, keyed by config, never
 * hits) while layers, indexes and packages come from the shared cache, as in a running service.
 */
async function serviceWorkload(registryHost: string) {
  const jobs = Math.max(1, Number(args["service-jobs"]));
  const repository = "lab/svc";
  await copyImageTo((await labImage("bookwormMinbase")).reference, `${registryHost}/${repository}:base`);
  const copies = [
    ...Array.from({ length: reps }, (_, i) => `cli-${i}`),
    ...[1, 2].flatMap((w) => Array.from({ length: jobs }, (_, i) => `w${w}-${i}`)),
  ];
  for (const tag of copies) await labelledCopy(registryHost, repository, tag);
  console.error(`» service: ${jobs} update-all jobs per run, 1 and 2 workers, against the CLI`);
  const [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
  const cache = join(work, "cache-service");
  try {
    // The first patch fills the shared cache (layers, indexes, packages); it is not counted.
    const cold = await sutureRun("suture CLI (cold cache, not counted)", [
      "patch",
      "-i",
      `${registryHost}/${repository}:base`,
      "-t",
      `${registryHost}/${repository}:base-patched`,
      "--push",
      "--cache-dir",
      cache,
    ]);
    const cli: Run[] = [];
    for (let i = 0; i < reps; i++) {
      const source = `${registryHost}/${repository}:cli-${i}`;
      cli.push(
        await sutureRun("suture CLI (warm cache)", [
          "patch",
          "-i",
          source,
          "-t",
          `${source}-patched`,
          "--push",
          "--cache-dir",
          cache,
        ]),
      );
    }
    const service: Run[] = [];
    const perMinute: Record<number, number> = {};
    let packages = 0;
    const handlerMs: Record<number, number> = {};
    for (const workers of [1, 2]) {
      const r = await serviceRun(registryHost, repository, `w${workers}`, workers, jobs, {
        redis: redis.url,
        database: await postgres.createDatabase(`bench${workers}`),
        cache,
      });
      service.push(r.run);
      perMinute[workers] = (jobs / r.spanMs) * 60_000;
      handlerMs[workers] = r.medianJobMs;
      packages = r.packages;
    }
    const cliMedian = median(cli);
    results.push({
      workload: `service: ${jobs} update-all jobs (bookworm minbase copies, own config each), Redis + Postgres + loopback registry`,
      packages,
      runs: [cold, cliMedian, ...service],
      ratios: {
        "service per job (1 worker, queue to done) / CLI patch": service[0]!.wallMs / jobs / cliMedian.wallMs,
        "service job handler (median) / CLI patch": handlerMs[1]! / cliMedian.wallMs,
        "throughput, 2 workers / 1 worker": perMinute[2]! / perMinute[1]!,
      },
      notes: [
        `throughput: ${perMinute[1]!.toFixed(2)} patches/min with 1 worker, ${perMinute[2]!.toFixed(2)} with 2 (first job queued to last job done)`,
        `CLI: ${(cliMedian.wallMs / 1000).toFixed(1)} s per patch (median of ${cli.length}); job handler median ${(handlerMs[1]! / 1000).toFixed(1)} s (1 worker), ${(handlerMs[2]! / 1000).toFixed(1)} s (2 workers)`,
      ],
    });
  } finally {
    await Promise.all([redis.stop(), postgres.stop()]);
  }
}

/** `repository:tag`, a copy of `:base` whose config carries its own label: another config digest. */
async function labelledCopy(host: string, repository: string, tag: string): Promise<void> {
  const types =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
  const res = await fetch(`http://${host}/v2/${repository}/manifests/base`, { headers: { accept: types } });
  const mediaType = res.headers.get("content-type") ?? "";
  const manifest = (await res.json()) as { config: { digest: string; size: number } };
  const config = (await (
    await fetch(`http://${host}/v2/${repository}/blobs/${manifest.config.digest}`)
  ).json()) as {
    config?: { Labels?: Record<string, string> };
  };
  config.config = { ...config.config, Labels: { ...config.config?.Labels, "org.example.copy": tag } };
  const bytes = Buffer.from(JSON.stringify(config));
  const digest = `sha256:${sha(bytes)}`;
  const start = await fetch(`http://${host}/v2/${repository}/blobs/uploads/`, { method: "POST" });
  const location = new URL(start.headers.get("location")!, `http://${host}`);
  location.searchParams.set("digest", digest);
  const put = await fetch(location, {
    method: "PUT",
    headers: { "content-type": "application/octet-stream" },
    body: bytes,
  });
  if (put.status !== 201) throw new Error(`config upload: ${put.status} ${await put.text()}`);
  const copy = { ...manifest, config: { ...manifest.config, digest, size: bytes.length } };
  const m = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": mediaType },
    body: JSON.stringify(copy),
  });
  if (m.status !== 201) throw new Error(`manifest of ${tag}: ${m.status} ${await m.text()}`);
}

/**
 * One service run: workers started and idle, then serve queues the rule's tags (`prefix-N`); the
 * run ends when every job has. Wall: serve's start to the last job's end; span: the first job
 * queued to the last done (what throughput divides).
 */
async function serviceRun(
  host: string,
  repository: string,
  prefix: string,
  workers: number,
  jobs: number,
  parts: { redis: string; database: string; cache: string },
): Promise<{ run: Run; spanMs: number; medianJobMs: number; packages: number }> {
  const dir = await mkdtemp(join(work, `service-${prefix}-`));
  const queueName = `bench-${prefix}`;
  const common = ["--redis", parts.redis, "--database", parts.database, "--queue-name", queueName];
  const rules = join(dir, "rules.yaml");
  await writeFile(
    rules,
    `apiVersion: suture.dev/v1alpha1
kind: ServeRules
rules:
  - id: ${prefix}
    image: ${host}/${repository}
    tags: { strategy: list, list: [${Array.from({ length: jobs }, (_, i) => `"${prefix}-${i}"`).join(", ")}] }
    target: { tag: "{{ .SourceTag }}-patched" }
    interval: 1h
`,
  );
  await writeFile(join(dir, "token"), sha(Buffer.from(dir)), { mode: 0o600 });
  const children: import("node:child_process").ChildProcess[] = [];
  const queue = new BullmqJobQueue({ url: parts.redis, name: queueName });
  try {
    for (let i = 0; i < workers; i++) {
      children.push(
        spawn(suture, ["worker", ...common, "--cache-dir", parts.cache, "--work-dir", dir], {
          stdio: ["ignore", "ignore", "inherit"],
        }),
      );
    }
    await settle();
    const started = performance.now();
    children.push(
      spawn(
        suture,
        [
          "serve",
          ...common,
          "--rules",
          rules,
          "--listen",
          `127.0.0.1:${await freePort()}`,
          "--token-file",
          join(dir, "token"),
          "--concurrency",
          "0",
          "--fixes-interval",
          "0",
          "--cache-dir",
          join(dir, "serve-cache"),
        ],
        { stdio: ["ignore", "ignore", "inherit"] },
      ),
    );
    let done: JobRecord[] = [];
    for (;;) {
      const list = await queue.list({ limit: 1000 });
      if (list.some((j) => j.state === "failed" || j.state === "cancelled"))
        throw new Error(`a service job failed: ${JSON.stringify(list.find((j) => j.state !== "succeeded"))}`);
      if (list.length === jobs && list.every((j) => j.state === "succeeded")) {
        done = list;
        break;
      }
      if (list.length < jobs && performance.now() - started > 120_000)
        throw new Error(`serve queued ${list.length} of ${jobs} jobs in 2 minutes`);
      const gone = children.find((c) => c.exitCode !== null || c.signalCode !== null);
      if (gone)
        throw new Error(
          `a service process ended (${gone.exitCode ?? gone.signalCode}): ${gone.spawnargs[1]}`,
        );
      await new Promise((r) => setTimeout(r, 250));
    }
    const wallMs = performance.now() - started;
    const times = (f: (j: JobRecord) => string | undefined) => done.map((j) => Date.parse(f(j)!));
    const spanMs = Math.max(...times((j) => j.finishedAt)) - Math.min(...times((j) => j.createdAt));
    const handler = done
      .map((j) => Date.parse(j.finishedAt!) - Date.parse(j.startedAt!))
      .sort((a, b) => a - b);
    return {
      run: {
        name: `suture serve + ${workers} worker${workers > 1 ? "s" : ""} (${jobs} jobs)`,
        wallMs,
        phases: {},
      },
      spanMs,
      medianJobMs: handler[handler.length >> 1]!,
      packages: done[0]?.result?.changed.length ?? 0,
    };
  } finally {
    const alive = children.filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of alive) c.kill("SIGTERM");
    await Promise.all(alive.map((c) => new Promise((r) => c.once("exit", r))));
    await queue.close();
  }
}

async function copyImageTo(from: string, to: string): Promise<void> {
  const r = spawnSync(suture, ["copy", from, `docker://${to}`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`suture copy failed: ${r.stderr}`);
}

print();
if (args.json) {
  await writeFile(args.json, JSON.stringify({ date: new Date().toISOString(), results }, null, 2));
}

function print() {
  const s = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
  const mb = (b?: number) => (b === undefined ? "" : `${(b / 1024 / 1024).toFixed(1)}MB`);
  for (const w of results) {
    console.log(
      `\n## ${w.workload} (${w.packages} packages)${w.changedBytes ? `, really changed: ${mb(w.changedBytes)}` : ""}`,
    );
    const base = w.runs.find((r) => r.name.startsWith("baseline"));
    console.log(
      "| run | wall | speed-up vs baseline | layer (tar) | layer / changed | layer gz | peak RSS | written | phases |",
    );
    console.log("|---|---|---|---|---|---|---|---|---|");
    for (const r of w.runs) {
      const speed = base && r !== base ? `${(base.wallMs / r.wallMs).toFixed(2)}×` : "";
      const ratio = w.changedBytes && r.layerBytes ? `${(r.layerBytes / w.changedBytes).toFixed(2)}×` : "";
      const phases = Object.entries(r.phases)
        .map(([k, v]) => `${k} ${s(v)}`)
        .join(", ");
      console.log(
        `| ${r.name} | ${s(r.wallMs)} | ${speed} | ${mb(r.layerBytes)} | ${ratio} | ${mb(r.layerGzipBytes)} | ${r.peakRssMb ? `${r.peakRssMb}MB` : ""} | ${r.writtenMb !== undefined ? `${r.writtenMb}MB` : ""} | ${phases} |`,
      );
    }
    for (const [k, v] of Object.entries(w.ratios ?? {})) console.log(`- ${k}: ${v.toFixed(2)}×`);
    for (const note of w.notes ?? []) console.log(`- ${note}`);
  }
}

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

function exec(cmd: string, argv: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: "inherit" });
    c.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}
