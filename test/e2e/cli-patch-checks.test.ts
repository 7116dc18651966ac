/**
 * `suture patch` refusing what a new user got wrong, before doing (or writing) anything: a report
 * of another image, a platform the image does not have, outputs that cannot be written, no root;
 * and saying what it does: the digest really written, a re-patch, a dry run's planned packages.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { oneLineError } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "tool:mmdebstrap");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
const golden = join(import.meta.dirname, "../../../shared/fixtures/trivy-golden");
let work: string;
let cache: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-patch-checks-"));
  cache = join(work, "cache");
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

function cli(args: string[], cacheDir = cache) {
  return run(suture, [...args, "--progress", "plain", "--cache-dir", cacheDir], {
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, CI: "true" },
  });
}

test("a report of another distribution or release is refused naming both, and nothing is written", async () => {
  const lab = await labImage("bookwormNginx");
  const out = join(work, "mismatch");
  for (const [report, says] of [
    [
      "debian-buster.json",
      /is for debian 10\.1, image oci:.* is debian 12: scan oci:.* and pass that report/,
    ],
    ["alpine-310.json", /is for alpine 3\.10\.2, image oci:.* is debian 12/],
  ] as const) {
    await assert.rejects(
      cli(["patch", "-i", lab.reference, "-r", join(golden, report), "-t", "x", "--oci-dir", out]),
      oneLineError(new RegExp(`${says.source}.*\\[INVALID_REPORT\\]$`)),
    );
  }
  assert.equal(existsSync(out), false);
});

test("a report made for another image (by its config digest) is refused, unless --ignore-report-image", async () => {
  const lab = await labImage("bookwormNginx");
  // As Trivy writes it: Metadata.ImageID is the digest of the scanned image's config.
  const { path: own, report } = await trivyReportFor("bookwormNginx", {
    only: ["libexpat1"],
    outFile: join(work, "own.json"),
  });
  const out = join(work, "other-image");
  const args = (file: string) => ["patch", "-i", lab.reference, "-r", file, "-t", "x", "--oci-dir", out];
  const { stdout } = await cli([...args(own), "--dry-run"]);
  assert.match(stdout, /^libexpat1 /m, "the image's own report plans its fix");

  // The same report of another build: another config digest.
  const otherConfig = `sha256:${"0f".repeat(32)}`;
  const other = join(work, "other.json");
  await writeFile(
    other,
    JSON.stringify({ ...report, Metadata: { ...report.Metadata, ImageID: otherConfig } }),
  );
  const says = new RegExp(
    `report ${other} was made for image ${otherConfig} \\(config\\), not for oci:.* \\(config ${report.Metadata.ImageID}\\): scan oci:.* and pass that report, or pass --ignore-report-image to use it anyway.*\\[INVALID_REPORT\\]$`,
  );
  await assert.rejects(cli([...args(other), "--dry-run"]), oneLineError(says));
  await assert.rejects(cli(args(other)), oneLineError(says));
  assert.equal(existsSync(out), false, "nothing written");

  const used = await cli([...args(other), "--dry-run", "--ignore-report-image"]);
  assert.match(used.stdout, /^libexpat1 /m);
  assert.match(
    used.stderr,
    /was made for image sha256:(0f){32} \(config\).*: used anyway \(--ignore-report-image\)/,
  );
  assert.equal(existsSync(out), false);
});

test("--platform naming what a single-platform image is not is refused, also with --dry-run", async () => {
  const lab = await labImage("bookwormNginx");
  const out = join(work, "platform");
  for (const extra of [
    ["--platform", "linux/arm64"],
    ["--platform", "linux/s390x,windows/amd64", "--dry-run"],
  ]) {
    await assert.rejects(
      cli(["patch", "-i", lab.reference, "-t", "x", "--oci-dir", out, ...extra]),
      oneLineError(
        /has no linux\/(arm64|s390x, windows\/amd64) image \(it is a single-platform linux\/amd64 image\).*\[UNSUPPORTED_PLATFORM\]$/,
      ),
    );
  }
  assert.equal(existsSync(out), false);
});

test("unwritable outputs are refused before any work, also for a non-root user (patching in a user namespace)", async () => {
  const lab = await labImage("bookwormNginx");
  const fresh = join(work, "untouched-cache");
  await assert.rejects(
    cli(["patch", "-i", lab.reference, "-t", "x", "--oci-dir", "/etc/passwd"], fresh),
    oneLineError(/\/etc\/passwd exists and is not a directory.*\[IO\]$/),
  );
  await assert.rejects(
    cli(["patch", "-i", lab.reference, "-t", "x", "--archive", "/nonexistent/x.tar"], fresh),
    oneLineError(/cannot write --archive \/nonexistent\/x\.tar: \/nonexistent does not exist.*\[IO\]$/),
  );
  await assert.rejects(
    run(
      "setpriv",
      [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        suture,
        "patch",
        "-i",
        lab.reference,
        "-t",
        "x",
        "--oci-dir",
        join(work, "nobody"),
      ],
      { env: { ...process.env, HOME: "/nonexistent", XDG_CACHE_HOME: fresh } },
    ),
    // Not refused for being non-root (it re-runs itself in a user namespace): for its output,
    // which that user may not create.
    oneLineError(/cannot open \S+\/nobody: EACCES.*\[IO\]$/),
  );
  assert.equal(existsSync(fresh), false, "no layer was extracted, nothing was cached");
});

test("--dry-run without a report lists the packages it would update; copa's -a and --loglevel are accepted", async () => {
  const lab = await labImage("bookwormNginx");
  const args = ["patch", "-i", lab.reference, "-t", "x", "--oci-dir", join(work, "dry"), "--dry-run"];
  const { stdout, stderr } = await cli([...args, "-a", "docker://", "--loglevel", "debug"]);
  assert.match(stdout, /^PACKAGE +INSTALLED +CANDIDATE/m);
  assert.match(stdout, /^libssl3 +3\.0\.\S+ +→ +3\.0\.\S+/m);
  assert.match(stdout, /^\d+ packages to update$/m);
  assert.match(stderr, /--addr docker:\/\/ is ignored: suture runs without BuildKit/);
  const { stdout: json } = await cli([...args, "--plan-format", "json"]);
  const plan = JSON.parse(json);
  assert.equal(plan.platforms[0].mode, "update-all");
  assert.ok(plan.platforms[0].updates.some((u: { name: string }) => u.name === "libssl3"));
  assert.equal(existsSync(join(work, "dry")), false);
});

test("--oci-dir prints the digest it wrote; a stale report against the patched image writes nothing", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report } = await trivyReportFor("bookwormNginx", {
    only: ["libexpat1"],
    outFile: join(work, "expat.json"),
  });
  // A docker-archive source has Docker schema 2 manifests, which the OCI layout stores converted.
  const archive = join(work, "lab.tar");
  await run(suture, ["copy", "--progress", "quiet", lab.reference, `docker-archive:${archive}`]);
  const out = join(work, "layout");
  const { stdout } = await cli([
    "patch",
    "-i",
    `docker-archive:${archive}`,
    "-r",
    report,
    "-t",
    "fixed",
    "--oci-dir",
    out,
  ]);
  const digest = /^patched oci:.*:fixed (sha256:[0-9a-f]{64})$/m.exec(stdout)?.[1];
  assert.ok(digest, stdout);
  const index = async () =>
    JSON.parse(await readFile(join(out, "index.json"), "utf8")) as {
      manifests: { digest: string; annotations?: Record<string, string> }[];
    };
  const entry = (await index()).manifests.find(
    (m) => m.annotations?.["org.opencontainers.image.ref.name"] === "fixed",
  );
  assert.equal(entry?.digest, digest, "the printed digest is the one in the layout");

  // The report of the original image, against the patched one: its fixes are in already.
  const again = await cli(["patch", "-i", `oci:${out}:fixed`, "-r", report, "-t", "again", "--oci-dir", out]);
  assert.match(again.stdout, /is up to date: nothing to patch, nothing written/);
  // The patched image records the config the report names (its ImageID): no warning, no refusal.
  assert.doesNotMatch(again.stderr, /was made for image/);
  assert.equal(
    (await index()).manifests.some((m) => m.annotations?.["org.opencontainers.image.ref.name"] === "again"),
    false,
  );
  // A re-patch says it replaces the earlier patch layer.
  const { stderr } = await cli([
    "patch",
    "-i",
    `oci:${out}:fixed`,
    "-t",
    "again",
    "--oci-dir",
    out,
    "--dry-run",
  ]);
  assert.match(stderr, /has a suture patch layer already: it is dropped/);
});
