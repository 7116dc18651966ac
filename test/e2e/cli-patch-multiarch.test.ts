import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { trivyReportFor } from "../lab/images.ts";
import { labIndex } from "../lab/lab-index.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { buildRandomImage } from "../lab/random-image.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "tool:docker-registry",
  "tool:mmdebstrap",
  "tool:skopeo",
  "tool:umoci",
);

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

// A real amd64 + arm64 bookworm index pushed to a loopback registry; the arm64 platform's apt runs
// under QEMU user emulation (scripts/install-system-deps.sh --arm64-emulation, done by the lab).

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
let registry: LabRegistry;
let work: string;
let source: string;
let reports: string;
const platforms = ["linux/amd64", "linux/arm64"];

before(async () => {
  // binfmt registrations do not survive a reboot even when the lab's arm64 image is cached.
  await run("bash", [join(import.meta.dirname, "../../scripts/install-system-deps.sh"), "--arm64-emulation"]);
  registry = await startRegistry({ auth: "none" });
  work = await mkdtemp(join(tmpdir(), "suture-multiarch-"));
  const index = await labIndex(["bookwormMinbase", "bookwormMinbaseArm64"], join(work, "index"));
  reports = join(work, "reports");
  await mkdir(reports);
  for (const [recipe, arch] of [
    ["bookwormMinbase", "amd64"],
    ["bookwormMinbaseArm64", "arm64"],
  ] as const) {
    const { fixes } = await trivyReportFor(recipe, {
      only: ["liblzma5"],
      outFile: join(reports, `${arch}.json`),
    });
    assert.equal(fixes.length, 1, `liblzma5 has a pending fix for ${arch}`);
  }
  source = `${registry.host}/lab/multi:1`;
  await cli(["copy", index.reference, `docker://${source}`]);
});
after(async () => {
  await Promise.all([registry?.stop(), work && rm(work, { recursive: true, force: true })]);
});

function cli(args: string[]) {
  return run(suture, args, {
    env: { ...process.env, CI: "true" },
    maxBuffer: 64 * 1024 * 1024,
  });
}

async function inspect(ref: string) {
  const { stdout } = await cli(["inspect", "--format", "json", ref]);
  return JSON.parse(stdout) as {
    digest: string;
    platforms: string[];
    annotations?: Record<string, string>;
    images: { platform: string; digest: string; layers: { diffID: string }[] }[];
  };
}

/** Run dpkg-query in a platform's unpacked root (arm64 binaries run under binfmt's QEMU). */
async function installedVersion(ref: string, platform: string, pkg: string): Promise<string> {
  const layout = join(work, `layout-${platform.replaceAll("/", "-")}-${Math.random().toString(36).slice(2)}`);
  // skopeo picks the platform: an independent reader of what we pushed.
  await run("skopeo", [
    "copy",
    "--src-tls-verify=false",
    "--override-arch",
    platform.split("/")[1]!,
    ref,
    `oci:${layout}:x`,
  ]);
  const root = join(layout, "rootfs");
  await run("umoci", ["raw", "unpack", "--image", `${layout}:x`, root]);
  const { stdout } = await run("chroot", [root, "dpkg-query", "-W", "-f", "${Version}", pkg]);
  return stdout;
}

test("an amd64 + arm64 index is patched per platform from a report directory and pushed as one index", async () => {
  const before = await inspect(`docker://${source}`);
  const { stdout } = await cli([
    "patch",
    "-i",
    source,
    "-r",
    reports,
    "--push",
    "-o",
    join(work, "vex.json"),
    "--cache-dir",
    join(work, "cache"),
  ]);
  assert.match(stdout, /linux\/amd64\s+patched\s+1 updated/);
  assert.match(stdout, /linux\/arm64\s+patched\s+1 updated/);

  const patched = await inspect(`docker://${source}-patched`);
  assert.deepEqual(patched.platforms, platforms);
  assert.ok(patched.annotations?.["sh.copa.patched"], "index annotated as patched");
  for (const p of platforms) {
    const was = before.images.find((i) => i.platform === p)!;
    const now = patched.images.find((i) => i.platform === p)!;
    assert.notEqual(now.digest, was.digest);
    assert.equal(now.layers.length, was.layers.length + 1, `${p}: exactly one new layer`);
    assert.equal(await installedVersion(`docker://${source}-patched`, p, "liblzma5"), "5.4.1-1+deb12u2");
  }
  // The source tag is untouched.
  assert.equal((await inspect(`docker://${source}`)).digest, before.digest);

  if (existsSync(schema)) {
    const vex = JSON.parse(await readFile(join(work, "vex.json"), "utf8"));
    const v = validateOpenVex(vex, schema);
    assert.ok(v.valid, v.errors.join("; "));
    const ids = vex.statements.flatMap((s: { products: { "@id": string }[] }) =>
      s.products.map((p) => p["@id"]),
    );
    for (const digest of [patched.digest, ...patched.images.map((i) => i.digest)])
      assert.ok(
        ids.some((id: string) => id.includes(`@${digest}?`)),
        `VEX names ${digest}`,
      );
  }
});

test("--platform patches one platform and carries the other over byte for byte", async () => {
  const before = await inspect(`docker://${source}`);
  const out = join(work, "out");
  const { stdout } = await cli([
    "patch",
    "-i",
    `docker://${source}`,
    "-r",
    join(reports, "amd64.json"),
    "--platform",
    "linux/amd64",
    "-t",
    "amd64-only",
    "--oci-dir",
    out,
    "--cache-dir",
    join(work, "cache"),
  ]);
  assert.match(stdout, /linux\/arm64\s+skipped/);
  const patched = await inspect(`oci:${out}:amd64-only`);
  const arm = (r: typeof before) => r.images.find((i) => i.platform === "linux/arm64")!.digest;
  const amd = (r: typeof before) => r.images.find((i) => i.platform === "linux/amd64")!.digest;
  assert.equal(arm(patched), arm(before), "arm64 kept its digest");
  assert.notEqual(amd(patched), amd(before));
  await run("skopeo", ["inspect", "--raw", `oci:${out}:amd64-only`]);

  // A platform the index does not have is a clear error, and nothing is written.
  await assert.rejects(
    cli([
      "patch",
      "-i",
      `docker://${source}`,
      "--platform",
      "linux/s390x",
      "-t",
      "none",
      "--oci-dir",
      join(work, "none"),
    ]),
    (e: { code: number; stderr: string }) => {
      assert.notEqual(e.code, 0);
      assert.match(e.stderr, /no linux\/s390x image \(it has: linux\/amd64, linux\/arm64\)/);
      return true;
    },
  );
  assert.equal(existsSync(join(work, "none")), false);
});

test("a platform that cannot be patched fails the run, or with --ignore-errors is carried over while the rest is patched", async () => {
  // linux/arm64 here is random files: no OS to detect, so it cannot be patched.
  const odd = await buildRandomImage({ architecture: "arm64", layers: 1 });
  const index = await labIndex(["bookwormMinbase"], join(work, "odd-index"), [
    { image: odd, architecture: "arm64" },
  ]);
  // A report that does not say which platform it scanned applies to every selected platform.
  const anyPlatform = JSON.parse(await readFile(join(reports, "amd64.json"), "utf8"));
  delete anyPlatform.Metadata.ImageConfig;
  const report = join(work, "any-platform.json");
  await writeFile(report, JSON.stringify(anyPlatform));
  const args = (out: string) => [
    "patch",
    "-i",
    index.reference,
    "-r",
    report,
    "--platform",
    "linux/amd64,linux/arm64",
    "-t",
    "p",
    "--oci-dir",
    out,
    "--cache-dir",
    join(work, "cache"),
  ];
  await assert.rejects(cli(args(join(work, "odd-strict"))), (e: { code: number; stderr: string }) => {
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, /^error: .*not supported/m);
    return true;
  });
  assert.equal(existsSync(join(work, "odd-strict")), false, "nothing written");

  const out = join(work, "odd-lenient");
  const result = await cli([...args(out), "--ignore-errors"]).then(
    () => assert.fail("a failed platform must show in the exit code"),
    (e: { code: number; stdout: string }) => e,
  );
  assert.equal(result.code, 3, "partial success");
  assert.match(result.stdout, /linux\/amd64\s+patched/);
  assert.match(result.stdout, /linux\/arm64\s+failed/);
  const patched = await inspect(`oci:${out}:p`);
  assert.equal(patched.images.find((i) => i.platform === "linux/arm64")?.digest, odd.manifest.digest);
});
