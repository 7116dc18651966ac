/**
 * The apk sandbox engine (`--engine sandbox` on an Alpine image): the image's own apk (apk-tools
 * 2.14.4) in runc, driven through the whole patch pipeline against the Alpine lab's signed test
 * repository on loopback (test/lab/alpine-lab.ts), with `--mirror` redirecting the image's real
 * repository URLs. The same real apk then judges the result: `apk info -v`, `apk audit --system`,
 * `apk version -l '<'`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { patchImage } from "../../src/index.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";
import {
  ALPINE_LAB_APP_CONF,
  ALPINE_LAB_APP_LINK,
  ALPINE_LAB_FIXES,
  ALPINE_LAB_USER,
  type AlpineTestRepo,
  alpineLabImage,
  alpineLabTrivyReport,
  startAlpineTestRepo,
} from "../lab/alpine-lab.ts";
import { oneLineError, patchIntoOciDir, SUTURE } from "../lab/cli.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "loopback",
  "tool:docker-registry",
  "tool:skopeo",
  "tool:umoci",
);

const run = promisify(execFile);
let work: string;
let repo: AlpineTestRepo;
let registry: LabRegistry;
let report: string;
/** The app image in the registry, as the tests patch it. */
let source: string;

before(async () => {
  work = await mkdtemp("/var/tmp/suture-apk-sandbox-");
  [repo, registry] = await Promise.all([startAlpineTestRepo(), startRegistry({ auth: "none" })]);
  report = join(work, "report.json");
  await writeFile(report, JSON.stringify(alpineLabTrivyReport()));
  const lab = await alpineLabImage("app");
  source = `${registry.host}/lab/alpine:3.20.3`;
  await cli(["copy", lab.ref, `docker://${source}`]);
});
after(async () => {
  await Promise.all([repo?.close(), registry?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

function cli(args: string[]) {
  return run(SUTURE, args, { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 });
}

function mirrors(r: AlpineTestRepo): Record<string, string> {
  return Object.fromEntries(r.mirrorFlags.map((f) => f.split(/=(.*)/s).slice(0, 2) as [string, string]));
}

/** The requests for repository indexes among `requests` (from index `from` on). */
function indexRequests(requests: readonly string[], from = 0): string[] {
  return requests.slice(from).filter((p) => p.endsWith("/APKINDEX.tar.gz"));
}

/** Pull `ref` from the registry with skopeo (an independent reader) into an OCI layout. */
async function pull(ref: string, name: string): Promise<string> {
  const dir = join(work, `pulled-${name}`);
  await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${dir}:latest`]);
  return dir;
}

function inImage<T>(
  ociDir: string,
  architecture: string,
  fn: (sb: Sandbox) => Promise<T>,
  tag = "latest",
): Promise<T> {
  return inLayoutImage({ ociDir, tag, architecture }, work, fn);
}

async function apk(sb: Sandbox, args: string[]): Promise<string> {
  const r = await sb.run(["/sbin/apk", ...args], { timeoutMs: 300_000 });
  assert.equal(r.exitCode, 0, `apk ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return `${r.stdout}${r.stderr}`;
}

/** The layers of an OCI layout's image and the paths in its last (the patch) layer. */
async function patchLayerOf(ociDir: string): Promise<{ layers: number; paths: string[] }> {
  const index = JSON.parse(readFileSync(join(ociDir, "index.json"), "utf8"));
  const blob = (digest: string) => join(ociDir, "blobs/sha256", digest.slice("sha256:".length));
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0].digest), "utf8"));
  const { stdout } = await run("tar", ["-tf", blob(manifest.layers.at(-1).digest)], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return { layers: manifest.layers.length, paths: stdout.split("\n").filter(Boolean) };
}

test("registry → registry from a Trivy report: every fix at its version, apk audit clean, one layer without caches", async () => {
  const events: ProgressEvent[] = [];
  const from = repo.requests.length;
  const result = await patchImage(`docker://${source}`, {
    report,
    tag: "sandbox",
    push: true,
    engine: "sandbox",
    mirrors: mirrors(repo),
    cacheDir: join(work, "cache"),
    progress: (e) => events.push(e),
  });
  assert.equal(result.status, "patched");
  assert.deepEqual(result.failed, []);
  const changed = new Map(result.changed.map((c) => [c.name, c.to]));
  for (const f of ALPINE_LAB_FIXES) assert.equal(changed.get(f.name), f.fixed, f.name);
  assert.ok(indexRequests(repo.requests, from).length > 0, "apk fetched the index on the first run");

  const pulled = await pull(`${registry.host}/lab/alpine:sandbox`, "report");
  const layer = await patchLayerOf(pulled);
  const base = await patchLayerOf((await alpineLabImage("app")).ociDir);
  assert.equal(layer.layers, base.layers + 1, "exactly one new layer");
  const leaked = layer.paths.filter((p) =>
    /^(\.\/)?(var\/cache\/apk\/.|etc\/apk\/cache\/.|run\/.|tmp\/.|etc\/apk\/(repositories|keys\/))/.test(p),
  );
  assert.deepEqual(leaked, [], "no apk cache, run-time file, repositories or keys in the layer");
  assert.ok(layer.paths.some((p) => /(^|\/)lib\/apk\/db\/installed$/.test(p)));

  await inImage(pulled, "amd64", async (sb) => {
    const info = await apk(sb, ["info", "-v"]);
    for (const f of ALPINE_LAB_FIXES)
      assert.match(info, new RegExp(`^${f.name}-${f.fixed.replaceAll(".", "\\.")}$`, "m"), f.name);
    assert.equal((await apk(sb, ["audit", "--system"])).trim(), "", "apk audit --system finds nothing");
    // The image's own files: its world and repositories as they were, the app intact.
    const root = sb.mergedDir;
    assert.doesNotMatch(readFileSync(join(root, "etc/apk/world"), "utf8"), /^(musl|zlib|libssl3)$/m);
    assert.match(readFileSync(join(root, "etc/apk/repositories"), "utf8"), /dl-cdn\.alpinelinux\.org/);
    assert.equal(readdirNames(join(root, "var/cache/apk")).length, 0, "/var/cache/apk is empty");
    assert.match(readFileSync(join(root, ALPINE_LAB_APP_CONF), "utf8"), /^user = app$/m);
    assert.equal(readlinkSync(join(root, ALPINE_LAB_APP_LINK.path)), ALPINE_LAB_APP_LINK.target);
    assert.equal(lstatSync(join(root, ALPINE_LAB_USER.home)).uid, ALPINE_LAB_USER.uid);
    assert.match(readFileSync(join(root, "etc/passwd"), "utf8"), /^app:x:1000:1000:/m);
  });
});

function readdirNames(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

test("update-all reuses the verified cached indexes: no index request, nothing left to upgrade", async () => {
  const cacheDir = join(work, "cache");
  assert.ok(existsSync(join(cacheDir, "apk-indexes")), "the first test filled the index cache");
  const events: ProgressEvent[] = [];
  const from = repo.requests.length;
  const out = join(work, "out-all");
  const result = await patchImage(`docker://${source}`, {
    ociDir: out,
    tag: "all",
    engine: "sandbox",
    mirrors: mirrors(repo),
    cacheDir,
    progress: (e) => events.push(e),
  });
  assert.equal(result.status, "patched");
  assert.deepEqual(indexRequests(repo.requests, from), [], "no index fetched again");
  assert.ok(
    repo.requests.slice(from).some((p) => p.endsWith(".apk")),
    "packages were fetched",
  );
  assert.ok(
    events.some((e) => e.type === "info" && /using the 2 cached repository indexes/.test(e.message)),
    "said it used the cache",
  );
  await inImage(
    out,
    "amd64",
    async (sb) => {
      const repos = ["--repositories-file", "/etc/apk/lab-repositories"];
      await writeFile(join(sb.mergedDir, "etc/apk/lab-repositories"), `${repo.url}\n${repo.communityUrl}\n`);
      assert.equal((await apk(sb, ["audit", "--system"])).trim(), "");
      assert.doesNotMatch(await apk(sb, ["version", "-l", "<", "--update-cache", ...repos]), /</);
    },
    "all",
  );
});

/** `suture patch --engine sandbox` of the app image from the report, through `through`, into the OCI layout `out`. */
function patchThrough(through: AlpineTestRepo, out: string, cacheDir: string, extraArgs: string[] = []) {
  return patchIntoOciDir({
    reference: `docker://${source}`,
    engine: "sandbox",
    out,
    cacheDir,
    report,
    extraArgs: [...through.mirrorFlags.flatMap((m) => ["--mirror", m]), ...extraArgs],
  });
}

/** Patching through `bad` must fail with `error`, writing nothing. */
async function refused(bad: AlpineTestRepo, name: string, error: RegExp) {
  const out = join(work, `refused-${name}`);
  await assert.rejects(patchThrough(bad, out, join(work, `cache-${name}`)), oneLineError(error));
  assert.equal(existsSync(out), false, "nothing written");
}

test("a tampered index, a package whose data was altered, an unknown signer: one UNTRUSTED line, nothing written", async () => {
  const tamperedIndex = await startAlpineTestRepo({ tamper: "index-bytes" });
  const tamperedData = await startAlpineTestRepo({ tamper: "package-data", tamperPackages: ["zlib"] });
  const other = await startAlpineTestRepo({ signWith: "other" });
  try {
    await refused(tamperedIndex, "index", /^error: apk update: apk refused .*BAD signature.*\[UNTRUSTED\]$/);
    await refused(
      tamperedData,
      "data",
      /^error: apk upgrade: apk refused .*zlib-1\.3\.1-r2: BAD signature.*\[UNTRUSTED\]$/,
    );
    await refused(
      other,
      "other",
      /^error: apk update: apk refused .*UNTRUSTED signature.*--keyring NAME\.rsa\.pub.*\[UNTRUSTED\]$/,
    );
    // The tampered index was not cached; the community index, which verified, was.
    const cached = join(work, "cache-index", "apk-indexes");
    const entries = readdirNames(cached).flatMap((d) => readdirNames(join(cached, d, "indexes")));
    assert.equal(entries.length, 1, entries.join(" "));
    // The other signer's key given with --keyring: trusted for this run, and the patch goes through.
    const out = join(work, "out-keyring");
    await patchThrough(other, out, join(work, "cache-keyring"), ["--keyring", other.publicKeyFile]);
    const layer = await patchLayerOf(out);
    assert.ok(
      !layer.paths.some((p) => p.includes(other.keyName)),
      "the --keyring key is not written into the image",
    );
  } finally {
    await Promise.all([tamperedIndex.close(), tamperedData.close(), other.close()]);
  }
});

test("--ignore-errors: a fix no repository offers is left out and reported, the rest is patched", async () => {
  const raised = join(work, "report-raised.json");
  await writeFile(
    raised,
    JSON.stringify(alpineLabTrivyReport()).replace('"FixedVersion":"1.3.1-r2"', '"FixedVersion":"1.3.1-r9"'),
  );
  const out = join(work, "out-ignore");
  const result = await patchImage(`docker://${source}`, {
    report: raised,
    ignoreErrors: true,
    ociDir: out,
    tag: "ignore",
    engine: "sandbox",
    mirrors: mirrors(repo),
    cacheDir: join(work, "cache"),
  });
  assert.deepEqual(
    result.failed.map((f) => [f.name, f.reason]),
    [
      [
        "zlib",
        "no version ≥ 1.3.1-r9 in the image's apk repositories (best: 1.3.1-r2); check them or --mirror",
      ],
    ],
  );
  const changed = new Map(result.changed.map((c) => [c.name, c.to]));
  assert.equal(changed.get("zlib"), undefined, "zlib left as it was");
  assert.equal(changed.get("musl"), "1.2.5-r3");
  await inImage(
    out,
    "amd64",
    async (sb) => assert.match(await apk(sb, ["info", "-v"]), /^zlib-1\.3\.1-r1$/m),
    "ignore",
  );
});

test("arm64 under QEMU: the image's aarch64 apk patches the arm64 lab image from the report", async (t) => {
  await run("bash", [join(import.meta.dirname, "../../scripts/install-system-deps.sh"), "--arm64-emulation"]);
  const arm = await alpineLabImage("app", "aarch64");
  const armReport = join(work, "report-arm64.json");
  await writeFile(armReport, JSON.stringify(alpineLabTrivyReport({ arch: "aarch64" })));
  const from = repo.requests.length;
  const out = join(work, "out-arm64");
  const result = await patchImage(arm.ref, {
    report: armReport,
    ociDir: out,
    tag: "arm64",
    engine: "sandbox",
    mirrors: mirrors(repo),
    cacheDir: join(work, "cache"),
  });
  t.diagnostic(`requests: ${repo.requests.slice(from).length}`);
  assert.deepEqual(result.failed, []);
  const changed = new Map(result.changed.map((c) => [c.name, c.to]));
  for (const f of ALPINE_LAB_FIXES) assert.equal(changed.get(f.name), f.fixed, f.name);
  assert.ok(repo.requests.slice(from).includes("/v3.20/main/aarch64/APKINDEX.tar.gz"));
  await inImage(
    out,
    "arm64",
    async (sb) => {
      assert.equal((await apk(sb, ["audit", "--system"])).trim(), "");
      assert.match(await apk(sb, ["info", "-v"]), /^musl-1\.2\.5-r3$/m);
    },
    "arm64",
  );
});
