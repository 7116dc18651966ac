import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { BulkSummary } from "../../src/bulk/summary.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { labIndex } from "../lab/lab-index.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { buildRandomImage } from "../lab/random-image.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "tool:docker-registry",
  "tool:mmdebstrap",
);

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

// A loopback registry holding several repositories and tags of the smallest lab image (one real
// old bookworm image pushed under many tags, as a registry holds releases of one base), plus an
// image of random files, which no engine can patch.

const run = promisify(execFile);
let registry: LabRegistry;
let work: string;
let host: string;

function cli(args: string[]) {
  return run(SUTURE, args, {
    env: { ...process.env, CI: "true" },
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** `suture bulk CONFIG --summary FILE …`: the summary it wrote, and its output. */
async function bulk(config: string, args: string[] = []) {
  const file = join(work, `config-${Math.random().toString(36).slice(2)}.yaml`);
  const summaryFile = `${file}.summary.json`;
  await writeFile(file, config);
  const out = await cli([
    "bulk",
    file,
    "--summary",
    summaryFile,
    "--cache-dir",
    join(work, "cache"),
    ...args,
  ]);
  return { ...out, summary: JSON.parse(await readFile(summaryFile, "utf8")) as BulkSummary };
}

async function tags(repository: string): Promise<string[]> {
  const res = await fetch(`http://${host}/v2/${repository}/tags/list`);
  if (res.status === 404) return [];
  return (((await res.json()) as { tags?: string[] }).tags ?? []).sort();
}

const HEAD = "apiVersion: copa.sh/v1alpha1\nkind: PatchConfig\n";

before(async () => {
  registry = await startRegistry({ auth: "none" });
  host = registry.host;
  work = await mkdtemp(join(tmpdir(), "suture-bulk-"));
  const lab = await labImage("bookwormMinbase");
  // Release-like tags: stable versions, a prerelease, a codename; and a second repository.
  await cli(["copy", lab.reference, `docker://${host}/lab/debian:12.1`]);
  for (const tag of ["12.2", "12.10", "12.11-rc1", "bookworm"])
    await cli(["copy", `docker://${host}/lab/debian:12.1`, `docker://${host}/lab/debian:${tag}`]);
  await cli(["copy", `docker://${host}/lab/debian:12.1`, `docker://${host}/other/base:1.0`]);
  // An amd64 + arm64 index (the arm64 image is only carried over: no emulation needed).
  const index = await labIndex(["bookwormMinbase", "bookwormMinbaseArm64"], join(work, "index"));
  await cli(["copy", index.reference, `docker://${host}/lab/multi:2.0`]);
  // Random files: no OS to detect, so its job fails.
  const odd = await buildRandomImage({ layers: 1 });
  const layout = join(work, "odd");
  const writer = await layoutWriter(layout);
  for (const bytes of odd.blobs.values()) await writer.put(bytes);
  await writer.tag(
    odd.manifest.mediaType,
    { digest: odd.manifest.digest, size: odd.manifest.bytes.length },
    "1.0",
  );
  await cli(["copy", `oci:${layout}:1.0`, `docker://${host}/lab/odd:1.0`]);
});
after(async () => {
  await Promise.all([registry?.stop(), work && rm(work, { recursive: true, force: true })]);
});

test("discovery: list, pattern with maxTags and exclude, latest; target registry and tag template (dry run)", async () => {
  const { summary, stdout, stderr } = await bulk(
    `${HEAD}target:
  registry: ${host}/patched
images:
  - name: debian-pattern
    image: ${host}/lab/debian
    tags:
      strategy: pattern
      pattern: "^12\\\\.[0-9]+"
      maxTags: 2
      exclude: ["12.10"]
  - name: debian-latest
    image: ${host}/lab/debian
    tags: { strategy: latest }
    target: { tag: "{{ .SourceTag }}-fixed" }
  - name: other
    image: ${host}/other/base
    tags: { strategy: list, list: ["1.0", "9.9"] }
    target: { registry: ${host}/elsewhere, tag: "v{{ .SourceTag }}-p" }
`,
    ["--dry-run"],
  );
  const jobs = summary.jobs.map((j) => [j.name, j.source, j.status, j.target]);
  assert.deepEqual(jobs, [
    ["debian-pattern", `${host}/lab/debian:12.1`, "would-patch", `${host}/patched/debian:12.1-patched`],
    ["debian-pattern", `${host}/lab/debian:12.2`, "would-patch", `${host}/patched/debian:12.2-patched`],
    ["debian-latest", `${host}/lab/debian:12.10`, "would-patch", `${host}/patched/debian:12.10-fixed`],
    ["other", `${host}/other/base:1.0`, "would-patch", `${host}/elsewhere/base:v1.0-p`],
  ]);
  assert.equal(summary.dryRun, true);
  // A target repository that does not exist yet has no earlier patches: nothing to warn about.
  assert.deepEqual(summary.jobs[0]!.warnings, []);
  assert.deepEqual(summary.counts, { patched: 0, "up-to-date": 0, skipped: 0, "would-patch": 4, failed: 0 });
  // What was left out is said: the prerelease, and the listed tag that does not exist.
  assert.ok(
    summary.warnings.some((w) => /"12\.11-rc1" is a prerelease/.test(w)),
    summary.warnings.join("\n"),
  );
  assert.ok(summary.warnings.some((w) => w.includes(`${host}/other/base:9.9 does not exist`)));
  assert.match(stderr, /warning: other: .*9\.9 does not exist/);
  assert.match(stdout, /^IMAGE\s+SOURCE\s+PLATFORM\s+STATE\s+PACKAGES\s+CVES FIXED\s+TIME\s+DETAILS$/m);
  assert.match(stdout, /debian-latest\s+\S+lab\/debian:12\.10\s+-\s+would-patch/);
  // Nothing was written anywhere.
  assert.deepEqual(await tags("patched/debian"), []);

  // `suture patch --config` is the same run (copa's spelling of it).
  const file = join(work, "same.yaml");
  await writeFile(
    file,
    `${HEAD}images:\n  - { name: d, image: "${host}/lab/debian", tags: { strategy: latest } }\n`,
  );
  const viaPatch = await cli(["patch", "--config", file, "--dry-run"]);
  assert.match(
    viaPatch.stdout,
    /d\s+\S+lab\/debian:12\.10\s+-\s+would-patch\s+.*→ \S+lab\/debian:12\.10-patched/,
  );
  await assert.rejects(
    cli(["patch", "--config", file, "-i", `${host}/lab/debian:12.1`]),
    oneLineError(/-i\/--image cannot be combined with --config/, 2),
  );
});

test("tags are discovered with the registry credentials patch uses (--docker-config)", async () => {
  const secured = await startRegistry({ auth: "htpasswd" });
  try {
    const login = ["--docker-config", secured.dockerConfigDir];
    await cli([
      "copy",
      ...login,
      `docker://${host}/lab/debian:12.1`,
      `docker://${secured.host}/team/app:3.1`,
    ]);
    await cli([
      "copy",
      ...login,
      `docker://${secured.host}/team/app:3.1`,
      `docker://${secured.host}/team/app:3.1-patched`,
    ]);
    const file = join(work, "secured.yaml");
    await writeFile(
      file,
      `${HEAD}images:\n  - { name: app, image: "${secured.host}/team/app", tags: { strategy: latest } }\n`,
    );
    const summaryFile = join(work, "secured-summary.json");
    await cli(["bulk", file, "--dry-run", ...login, "--summary", summaryFile]);
    const summary = JSON.parse(await readFile(summaryFile, "utf8")) as BulkSummary;
    // Both listings (the source's tags, the target's earlier patches) were authorised.
    assert.deepEqual(
      summary.jobs.map((j) => [j.source, j.status, j.target, j.warnings]),
      [[`${secured.host}/team/app:3.1`, "would-patch", `${secured.host}/team/app:3.1-patched-1`, []]],
    );
    // Without the credentials the repository cannot be listed: a warning, no jobs (copa).
    const anonymous = await cli(["bulk", file, "--dry-run", "--docker-config", join(work, "no-such-config")]);
    assert.match(
      anonymous.stderr,
      /warning: app: cannot discover tags: .*(UNAUTHORIZED|authenticat|credentials)/i,
    );
  } finally {
    await secured.stop();
  }
});

test("skip and re-patch tags: <base>-N after the existing ones; a clean report of the newest skips it, any other patches again", async () => {
  // Earlier patches of 12.2 (and a per-architecture tag, which is no re-patch tag).
  for (const tag of ["12.2-patched", "12.2-patched-1", "12.2-patched-amd64"])
    await cli(["copy", `docker://${host}/lab/debian:12.1`, `docker://${host}/lab/debian:${tag}`]);
  const config = `${HEAD}images:\n  - { name: d, image: "${host}/lab/debian", tags: { strategy: list, list: ["12.2", "12.1"] } }\n`;
  const first = await bulk(config, ["--dry-run"]);
  assert.deepEqual(
    first.summary.jobs.map((j) => [j.source, j.status, j.target]),
    [
      [`${host}/lab/debian:12.2`, "would-patch", `${host}/lab/debian:12.2-patched-2`],
      [`${host}/lab/debian:12.1`, "would-patch", `${host}/lab/debian:12.1-patched`],
    ],
  );

  // A scan of the newest patched tag that finds nothing fixable: skipped, the tag it found kept.
  const reports = join(work, "reports");
  await mkdir(reports);
  const { report } = await trivyReportFor("bookwormMinbase", {
    outFile: join(work, "scan.json"),
    cveIds: false,
  });
  assert.ok(report.Results[0]!.Vulnerabilities.length > 0, "the lab image has pending fixes");
  const clean = {
    ...report,
    ArtifactName: `${host}/lab/debian:12.2-patched-1`,
    Results: [{ ...report.Results[0], Vulnerabilities: [] }],
  };
  await writeFile(join(reports, "clean.json"), JSON.stringify(clean));
  // The report of the ORIGINAL 12.1 is no report of a patched tag: it decides nothing (and is
  // never used as the job's own report: bulk patches update-all).
  await writeFile(
    join(reports, "source.json"),
    JSON.stringify({ ...report, ArtifactName: `${host}/lab/debian:12.1` }),
  );
  const skipped = await bulk(config, ["--dry-run", "-r", reports]);
  assert.deepEqual(
    skipped.summary.jobs.map((j) => [j.source, j.status, j.target]),
    [
      [`${host}/lab/debian:12.2`, "skipped", `${host}/lab/debian:12.2-patched-1`],
      [`${host}/lab/debian:12.1`, "would-patch", `${host}/lab/debian:12.1-patched`],
    ],
  );
  assert.match(skipped.summary.jobs[0]!.reason!, /no fixable OS vulnerabilities/);

  // The same scan still finding fixes: patched again, from the original source, as -2.
  await writeFile(
    join(reports, "clean.json"),
    JSON.stringify({ ...report, ArtifactName: `${host}/lab/debian:12.2-patched-1` }),
  );
  const again = await bulk(config, ["--dry-run", "-r", reports]);
  assert.deepEqual(again.summary.jobs[0]!.status, "would-patch");
  assert.deepEqual(again.summary.jobs[0]!.target, `${host}/lab/debian:12.2-patched-2`);
});

test("real jobs at once: one image patched and pushed, one that cannot be patched fails without stopping it; exit codes as copa", async () => {
  const reports = join(work, "source-reports");
  await mkdir(reports);
  const { report, fixes } = await trivyReportFor("bookwormMinbase", {
    outFile: join(work, "src.json"),
    cveIds: false,
  });
  await writeFile(
    join(reports, "src.json"),
    JSON.stringify({ ...report, ArtifactName: `${host}/other/base:1.0` }),
  );
  const config = `${HEAD}images:
  - { name: base, image: "${host}/other/base", tags: { strategy: list, list: ["1.0"] } }
  - { name: odd, image: "${host}/lab/odd", tags: { strategy: latest } }
  - { name: multi, image: "${host}/lab/multi", platforms: ["linux/amd64"], tags: { strategy: list, list: ["2.0"] } }
`;
  const file = join(work, "real.yaml");
  await writeFile(file, config);
  const summaryFile = join(work, "real-summary.json");
  const args = [
    "bulk",
    file,
    "--push",
    "--jobs",
    "2",
    "-r",
    reports,
    "--summary",
    summaryFile,
    "--cache-dir",
    join(work, "cache"),
  ];
  const failed = await cli(args).then(
    () => assert.fail("a failed job must show in the exit code"),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  assert.equal(failed.code, 1, failed.stderr);
  const errors = failed.stderr.split("\n").filter((l) => l.startsWith("error:"));
  assert.deepEqual(errors.length, 1, failed.stderr);
  assert.match(
    errors[0]!,
    /1 of 3 bulk jobs failed \(first: \S+lab\/odd:1\.0: .*\): see the table above.*\[PATCH_FAILED\]/,
  );

  const summary = JSON.parse(await readFile(summaryFile, "utf8")) as BulkSummary;
  const [base, odd, multi] = summary.jobs;
  assert.equal(base!.status, "patched", JSON.stringify(base));
  assert.equal(base!.target, `${host}/other/base:1.0-patched`);
  assert.ok(base!.platforms[0]!.packages.length >= fixes.length);
  // Every CVE the source's report lists is fixed by update-all (it goes past each fixed version).
  const reported = new Set(report.Results[0]!.Vulnerabilities.map((v) => v.VulnerabilityID));
  assert.equal(base!.cvesFixed, reported.size);
  assert.equal(odd!.status, "failed");
  assert.equal(odd!.code, "UNSUPPORTED_OS");
  assert.match(failed.stdout, /odd\s+\S+lab\/odd:1\.0\s+-\s+failed/);
  assert.match(
    failed.stdout,
    new RegExp(`base\\s+\\S+other/base:1\\.0\\s+linux/amd64\\s+patched\\s+\\d+\\s+${reported.size}\\s`),
  );

  // The patched tag is real: one layer more than its source, which is unchanged.
  const inspect = async (ref: string) =>
    JSON.parse((await cli(["inspect", "--format", "json", "--no-layers", ref])).stdout) as {
      digest: string;
      images: { digest: string; layers: unknown[] }[];
    };
  const source = await inspect(`docker://${host}/other/base:1.0`);
  const patched = await inspect(`docker://${host}/other/base:1.0-patched`);
  assert.equal(patched.images[0]!.layers.length, source.images[0]!.layers.length + 1);
  assert.equal(patched.digest, base!.digest);

  // Per-image platforms: the index's amd64 image is patched, its arm64 one carried over as it was.
  assert.equal(multi!.status, "patched", JSON.stringify(multi));
  assert.equal(multi!.target, `${host}/lab/multi:2.0-patched`);
  assert.deepEqual(
    multi!.platforms.map((p) => [p.platform, p.status]),
    [
      ["linux/amd64", "patched"],
      ["linux/arm64", "skipped"],
    ],
  );
  const multiSource = await inspect(`docker://${host}/lab/multi:2.0`);
  const multiPatched = await inspect(`docker://${host}/lab/multi:2.0-patched`);
  assert.equal(multiPatched.images.length, 2);
  assert.equal(multiPatched.images[1]!.digest, multiSource.images[1]!.digest, "arm64 carried over");
  assert.notEqual(multiPatched.images[0]!.digest, multiSource.images[0]!.digest);

  // Again with --ignore-errors: exit 0; the first patch stays, the new one goes to -1 (copa).
  await cli([...args, "--ignore-errors"]);
  assert.deepEqual(await tags("other/base"), ["1.0", "1.0-patched", "1.0-patched-1"]);
  assert.deepEqual(await tags("lab/multi"), ["2.0", "2.0-patched", "2.0-patched-1"]);
  const second = JSON.parse(await readFile(summaryFile, "utf8")) as BulkSummary;
  assert.deepEqual(second.counts, { patched: 2, "up-to-date": 0, skipped: 0, "would-patch": 0, failed: 1 });
});

test("--timeout is each job's: a job over it fails with TIMEOUT, the others still run, nothing is written", async () => {
  const file = join(work, "timeout.yaml");
  await writeFile(
    file,
    `${HEAD}images:\n  - { name: d, image: "${host}/lab/debian", tags: { strategy: list, list: ["12.1", "12.2"] }, target: { tag: "{{ .SourceTag }}-t" } }\n`,
  );
  const summaryFile = join(work, "timeout-summary.json");
  await assert.rejects(
    cli([
      "bulk",
      file,
      "--push",
      "--timeout",
      "1ms",
      "--summary",
      summaryFile,
      "--cache-dir",
      join(work, "cache"),
    ]),
    oneLineError(
      /2 of 2 bulk jobs failed \(first: \S+lab\/debian:12\.1: patching \S+ took longer than --timeout 1ms: raise --timeout\)/,
      1,
    ),
  );
  const summary = JSON.parse(await readFile(summaryFile, "utf8")) as BulkSummary;
  assert.deepEqual(
    summary.jobs.map((j) => [j.source, j.status, j.code]),
    [
      [`${host}/lab/debian:12.1`, "failed", "TIMEOUT"],
      [`${host}/lab/debian:12.2`, "failed", "TIMEOUT"],
    ],
  );
  assert.deepEqual(
    (await tags("lab/debian")).filter((t) => t.endsWith("-t")),
    [],
  );
});

test("Ctrl-C stops every job, pushes nothing, writes no summary and exits 130", async () => {
  const file = join(work, "interrupt.yaml");
  await writeFile(
    file,
    `${HEAD}images:\n  - { name: d, image: "${host}/lab/debian", tags: { strategy: list, list: ["12.1", "12.2"] }, target: { tag: "{{ .SourceTag }}-int" } }\n`,
  );
  const summaryFile = join(work, "interrupt-summary.json");
  const child = spawn(
    SUTURE,
    [
      "bulk",
      file,
      "--push",
      "--progress",
      "json",
      "--summary",
      summaryFile,
      "--cache-dir",
      join(work, "cache-interrupt"),
    ],
    { env: { ...process.env, CI: "true" } },
  );
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let stderr = "";
  let interrupted = false;
  child.stdout.resume();
  child.stderr.on("data", (d: Buffer) => {
    stderr += d;
    // The moment both jobs are patching (a step of each has begun): interrupt.
    const patching = new Set(
      stderr
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { type: string; job?: string; event?: { type: string } })
        .filter((e) => e.type === "job-progress" && e.event?.type === "step")
        .map((e) => e.job),
    );
    if (!interrupted && patching.size === 2) {
      interrupted = true;
      child.kill("SIGINT");
    }
  });
  const code = await exited;
  assert.ok(interrupted, `the run ended before both jobs were patching: ${stderr}`);
  assert.equal(code, 130, stderr);
  assert.deepEqual(
    stderr.split("\n").filter((l) => l.startsWith("error:")),
    ["error: interrupted [CANCELLED]"],
  );
  assert.deepEqual(
    (await tags("lab/debian")).filter((t) => t.endsWith("-int")),
    [],
  );
  assert.equal(existsSync(summaryFile), false);
});

test("bad configs and flags fail in one line (exit 2), and a missing daemon once, before any job runs", async () => {
  const bad = join(work, "bad.yaml");
  await writeFile(
    bad,
    `${HEAD}images:\n  - name: x\n    image: ${host}/lab/debian\n    tags: { strategy: pattern }\n`,
  );
  await assert.rejects(
    cli(["bulk", bad]),
    oneLineError(/bad\.yaml:\d+: images\[0\]\.tags\.pattern: strategy pattern needs a regular expression/, 2),
  );
  await writeFile(
    bad,
    `${HEAD}images:\n  - { name: x, image: "${host}/lab/debian", tags: { strategy: latest }, target: { tag: "{{ .Tag }}" } }\n`,
  );
  await assert.rejects(
    cli(["bulk", bad]),
    oneLineError(/images\[0\]\.target\.tag: .*only field a tag template has/, 2),
  );
  await assert.rejects(
    cli(["bulk", join(work, "missing.yaml")]),
    oneLineError(/cannot read bulk config .*missing\.yaml/),
  );
  await writeFile(
    bad,
    `${HEAD}images:\n  - { name: x, image: "${host}/lab/debian", tags: { strategy: latest } }\n`,
  );
  await assert.rejects(
    cli(["bulk", bad, "-r", bad]),
    oneLineError(/-r .* is a file: in bulk mode -r is a directory/, 2),
  );
  await assert.rejects(cli(["bulk", bad, "--jobs", "0"]), oneLineError(/invalid --jobs "0"/, 2));
  await assert.rejects(
    cli(["bulk", bad, "--summary", join(work, "no/such/dir/s.json")]),
    oneLineError(/--summary .*does not exist/, 2),
  );
  // Without --push the images would go to the Docker daemon: none there is said once, up front.
  await assert.rejects(
    run(SUTURE, ["bulk", bad], {
      env: { ...process.env, CI: "true", DOCKER_HOST: `unix://${join(work, "no.sock")}` },
    }),
    oneLineError(
      /no Docker daemon is reachable at unix:\/\/\S+no\.sock to load the patched images into: pass --push/,
      1,
    ),
  );
  assert.deepEqual(await tags("lab/debian-patched"), []);
});
