/**
 * apk images through the CLI outside the engines: `suture inspect` of the Alpine lab images (one
 * platform, the static variant with no shell and no apk, the amd64 + arm64 index), and
 * `suture patch --dry-run` reading the lab's Trivy report against them (the report routed to apk's
 * version order and checked against the image; a Debian report refused). The dry run with a
 * report stops before any engine runs, so this holds whatever the engines do.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parseInstalledDb } from "../../src/distro/apk/installed-db.ts";
import {
  ALPINE_LAB_FIXES,
  ALPINE_STATIC_REMOVED,
  alpineLabImage,
  alpineLabIndex,
  alpineLabTrivyReport,
} from "../lab/alpine-lab.ts";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "tool:umoci");

const run = promisify(execFile);
const golden = join(import.meta.dirname, "../../../shared/fixtures/trivy-golden");
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-apk-surface-"));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

function cli(args: string[]) {
  return run(
    SUTURE,
    [...args, ...(args[0] === "patch" ? ["--progress", "plain", "--cache-dir", join(work, "cache")] : [])],
    {
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, CI: "true" },
    },
  );
}

const ALPINE_REPOSITORIES = [
  "https://dl-cdn.alpinelinux.org/alpine/v3.20/main",
  "https://dl-cdn.alpinelinux.org/alpine/v3.20/community",
];

test("suture inspect shows the Alpine lab image: OS, apk, every package with its version, repositories, arch", async () => {
  const lab = await alpineLabImage("app");
  const installed = parseInstalledDb(lab.installed);
  const { stdout: text } = await cli(["inspect", lab.ref]);
  assert.match(text, /^ {2}OS: +Alpine Linux v3\.20$/m);
  assert.match(text, new RegExp(`^ {2}Package db: +apk \\(${installed.length} packages\\)$`, "m"));
  assert.match(text, /^ {2}Package tool: +apk$/m);
  assert.match(text, /^ {2}Package arch: +x86_64$/m);
  assert.match(
    text,
    new RegExp(`^ {2}Repositories \\(2\\):\\n {4}${ALPINE_REPOSITORIES.join("\\n {4}")}$`, "m"),
  );
  for (const p of installed)
    assert.match(text, new RegExp(`^ {4}${p.info.name.replaceAll(".", "\\.")} +${p.info.version}$`, "m"));

  const { stdout: json } = await cli(["inspect", lab.ref, "--format", "json"]);
  const img = JSON.parse(json).images[0];
  assert.equal(img.os.id, "alpine");
  assert.equal(img.os.version, "3.20.3");
  assert.equal(img.packageDb, "apk");
  assert.equal(img.packageManager, "apk");
  assert.equal(img.packageArch, "x86_64");
  assert.deepEqual(img.repositories, ALPINE_REPOSITORIES);
  assert.deepEqual(
    img.packages,
    installed
      .map((p) => ({ name: p.info.name, version: p.info.version }))
      .sort((a, b) => (a.name < b.name ? -1 : 1)),
  );
});

test("suture inspect: the static variant (no shell, no apk) is an apk image nothing inside can change", async () => {
  const lab = await alpineLabImage("static");
  const { stdout } = await cli(["inspect", lab.ref, "--format", "json"]);
  const img = JSON.parse(stdout).images[0];
  assert.equal(img.packageDb, "apk");
  assert.equal(img.packageManager, "none");
  const names = img.packages.map((p: { name: string }) => p.name);
  assert.ok(names.includes("musl"));
  for (const removed of ALPINE_STATIC_REMOVED) assert.ok(!names.includes(removed), removed);
  assert.equal(img.packageCount, parseInstalledDb(lab.installed).length);
});

test("suture inspect of the amd64 + arm64 Alpine index: apk's architecture per platform", async () => {
  const index = await alpineLabIndex();
  const { stdout } = await cli(["inspect", index.ref, "--format", "json"]);
  const result = JSON.parse(stdout);
  // (formatPlatform leaves out arm64's default variant v8)
  assert.deepEqual(result.platforms, ["linux/amd64", "linux/arm64"]);
  assert.deepEqual(
    result.images.map((i: { platform: string; packageArch: string; packageManager: string }) => [
      i.platform,
      i.packageArch,
      i.packageManager,
    ]),
    [
      ["linux/amd64", "x86_64", "apk"],
      ["linux/arm64", "aarch64", "apk"],
    ],
  );
});

test("patch --dry-run with the lab's Trivy report plans every fix in apk's order; a Debian report is refused", async () => {
  const lab = await alpineLabImage("app");
  const report = join(work, "alpine.json");
  await writeFile(report, JSON.stringify(alpineLabTrivyReport()));
  const out = join(work, "out");
  const args = (file: string) => [
    "patch",
    "-i",
    lab.ref,
    "-r",
    file,
    "-t",
    "x",
    "--oci-dir",
    out,
    "--dry-run",
  ];

  const { stdout } = await cli(args(report));
  for (const f of ALPINE_LAB_FIXES)
    assert.match(
      stdout,
      new RegExp(`^${f.name.replaceAll(".", "\\.")} +${f.installed} +→ +${f.fixed} `, "m"),
      f.name,
    );
  const { stdout: json } = await cli([...args(report), "--plan-format", "json"]);
  const plan = JSON.parse(json).platforms[0];
  assert.equal(plan.mode, "report");
  assert.deepEqual(
    plan.updates.map((u: { name: string; installed: string; fixed: string }) => [
      u.name,
      u.installed,
      u.fixed,
    ]),
    ALPINE_LAB_FIXES.map((f) => [f.name, f.installed, f.fixed]),
  );

  await assert.rejects(
    cli(args(join(golden, "debian-buster.json"))),
    oneLineError(
      /is for debian 10\.1, image .* is alpine 3\.20\.3: scan .* and pass that report.*\[INVALID_REPORT\]$/,
    ),
  );
  assert.equal(existsSync(out), false, "nothing written");
});
