/**
 * rpm images patched end to end through the CLI, as issue 14's "done when" says: the rpm lab's
 * images (test/lab/rpm-lab.ts) in a loopback registry, the lab's signed repository behind
 * `--mirror`, registry → registry, and the image's own tools (run in runc on the result) as the
 * judges: `rpm -qa`, `rpm -Va`, `dnf check`, the app still running.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { gunzipSync, zstdDecompressSync } from "node:zlib";
import { readTar } from "../../src/archive/tar/read.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import {
  RPM_LAB_APP_CONF,
  RPM_LAB_CHANGED_UNEDITED_CONFIG,
  RPM_LAB_EDITED_CONFIG,
  type RpmLabFix,
  type RpmLabKind,
  type RpmRepoTamper,
  type RpmTestRepo,
  rpmLabFixes,
  rpmLabImage,
  rpmLabReport,
  startRpmTestRepo,
} from "../lab/rpm-lab.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "loopback",
  "tool:docker-registry",
  "tool:umoci",
  "tool:mmdebstrap",
  "tool:rpmbuild",
  "tool:createrepo_c",
  "tool:gpg",
);

const run = promisify(execFile);
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
let registry: LabRegistry;
let repo: RpmTestRepo;
let work: string;
/** The lab images in the registry, by kind. */
const sources = new Map<RpmLabKind, string>();

before(async () => {
  work = await mkdtemp("/var/tmp/suture-rpm-e2e-");
  [registry, repo] = await Promise.all([startRegistry({ auth: "none" }), startRpmTestRepo()]);
});
after(async () => {
  await repo?.close();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function cli(args: string[], cacheDir = join(work, "cache")) {
  const cache = args[0] === "patch" ? ["--cache-dir", cacheDir] : [];
  return run(SUTURE, [...args, "--progress", "plain", ...cache], {
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, CI: "true" },
  });
}

/** The `kind` lab image pushed to the registry (once), as `host/lab/rpm-<kind>:1`. */
async function source(kind: RpmLabKind): Promise<string> {
  let ref = sources.get(kind);
  if (!ref) {
    ref = `${registry.host}/lab/rpm-${kind}:1`;
    await cli(["copy", (await rpmLabImage(kind)).ref, `docker://${ref}`]);
    sources.set(kind, ref);
  }
  return ref;
}

async function writeJson(name: string, value: unknown): Promise<string> {
  const file = join(work, name);
  await writeFile(file, JSON.stringify(value));
  return file;
}

async function layers(ref: string): Promise<{ diffID: string }[]> {
  const { stdout } = await run(SUTURE, ["inspect", "--format", "json", ref], { maxBuffer: 64 << 20 });
  return JSON.parse(stdout).images[0].layers;
}

/** `ref` pulled into an OCI layout of its own, then `fn` with its root in a sandbox and the layout's last layer. */
async function inPulled<T>(
  ref: string,
  name: string,
  fn: (sb: Sandbox, patchLayer: string[]) => Promise<T>,
): Promise<T> {
  const dir = join(work, `pulled-${name}`);
  await cli(["copy", `docker://${ref}`, `oci:${dir}:pulled`]);
  const patchLayer = await lastLayerPaths(dir);
  return inLayoutImage({ ociDir: dir, tag: "pulled" }, work, (sb) => fn(sb, patchLayer));
}

/** The paths in the last layer of an OCI layout's `pulled` image: the patch layer. */
async function lastLayerPaths(ociDir: string): Promise<string[]> {
  const index = JSON.parse(await readFile(join(ociDir, "index.json"), "utf8"));
  const blob = (d: string) => readFile(join(ociDir, "blobs/sha256", d.slice("sha256:".length)));
  const manifest = JSON.parse((await blob(index.manifests[0].digest)).toString());
  const layer = manifest.layers.at(-1);
  const bytes = await blob(layer.digest);
  const tar = layer.mediaType.endsWith("zstd") ? zstdDecompressSync(bytes) : gunzipSync(bytes);
  const out: string[] = [];
  for await (const { header, body } of readTar([tar])) {
    for await (const _ of body) {
      // drained
    }
    out.push(header.path.replace(/^\.\//, ""));
  }
  return out;
}

async function sh(sb: Sandbox, args: string[]): Promise<{ exitCode: number; out: string }> {
  const r = await sb.run(args, { timeoutMs: 600_000 });
  return { exitCode: r.exitCode, out: `${r.stdout}${r.stderr}` };
}

/** `rpm -qa` in the image: name → `[E:]V-R` (as Trivy and the lab's fixes write it). */
async function rpmQa(sb: Sandbox): Promise<Map<string, string>> {
  const r = await sh(sb, ["rpm", "-qa", "--qf", "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n"]);
  assert.equal(r.exitCode, 0, r.out);
  return new Map(
    r.out
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split(" ") as [string, string]),
  );
}

/**
 * The files `rpm -Va` reports changed. Nothing is left out: files an upgrade rewrote with the same
 * bytes carry the new package's mtime in the patch layer (rpm images keep touched files), so an
 * mtime-only line would be a real difference.
 */
function verifiedChanges(verify: { out: string }): string[] {
  return verify.out
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => l.replace(/^\S+\s+(c\s+)?/, ""))
    .sort();
}

/**
 * What every patched dnf image must show, judged by its own tools: the fixes installed, `rpm -Va`
 * finding only the app layer's edits, `dnf check` clean, edited config kept with `.rpmnew`
 * beside it, the app running.
 */
async function assertPatchedDnfImage(
  sb: Sandbox,
  patchLayer: readonly string[],
  fixes: readonly RpmLabFix[],
): Promise<void> {
  const qa = await rpmQa(sb);
  for (const f of fixes) assert.equal(qa.get(f.name), f.fixed, f.name);
  assert.equal(qa.has("gpg-pubkey"), true, "the image's own key stays imported");
  const verify = await sh(sb, ["rpm", "-Va"]);
  assert.deepEqual(verifiedChanges(verify), [...RPM_LAB_EDITED_CONFIG].sort(), verify.out);
  const check = await sh(sb, ["dnf", "check"]);
  assert.equal(check.exitCode, 0, check.out);
  const files = await sh(sb, [
    "sh",
    "-c",
    `test -f /etc/nginx/nginx.conf.rpmnew && ! test -e ${RPM_LAB_CHANGED_UNEDITED_CONFIG}.rpmnew && grep -q 'suture lab app' /etc/nginx/nginx.conf && cat ${RPM_LAB_APP_CONF} && /usr/local/bin/app`,
  ]);
  assert.equal(files.exitCode, 0, files.out);
  // The patch layer holds what the upgrade changed, nothing of the tool's run or of suture's.
  assert.ok(
    patchLayer.some((p) => p.startsWith("var/lib/rpm/")),
    patchLayer.join(" "),
  );
  for (const p of patchLayer) {
    assert.doesNotMatch(p, /^var\/cache\/(dnf|yum)\/./, p);
    assert.doesNotMatch(p, /^var\/log\/(dnf|hawkey)/, p);
    assert.doesNotMatch(p, /^run\/./, p);
    assert.doesNotMatch(p, /^etc\/yum\.repos\.d\//, p);
  }
}

test("registry to registry: the dnf image patched by its own dnf (--engine sandbox) from a Trivy report, one layer, VEX valid", async () => {
  const fixes = await rpmLabFixes("dnf");
  const report = await writeJson("dnf.json", await rpmLabReport("dnf"));
  const src = await source("dnf");
  const target = `${registry.host}/lab/rpm-dnf:1-sandbox`;
  const vex = join(work, "dnf.vex.json");
  const { stdout } = await cli([
    "patch",
    "-i",
    src,
    "-r",
    report,
    "-t",
    target,
    "--push",
    "--engine",
    "sandbox",
    "-o",
    vex,
    "--mirror",
    repo.mirrorArg("dnf"),
  ]);
  assert.match(stdout, /sha256:/);
  const before = await layers(`docker://${src}`);
  const afterLayers = await layers(`docker://${target}`);
  assert.equal(afterLayers.length, before.length + 1, "exactly one new layer");
  assert.deepEqual(afterLayers.slice(0, -1), before);
  await inPulled(target, "dnf-sandbox", (sb, layer) => assertPatchedDnfImage(sb, layer, fixes));

  const doc = JSON.parse(await readFile(vex, "utf8"));
  await validateOpenVex(doc, schema);
  const purls: string[] = doc.statements.flatMap(
    (s: { products: { subcomponents?: { "@id": string }[] }[] }) =>
      s.products.flatMap((p) => (p.subcomponents ?? []).map((c) => c["@id"])),
  );
  // The report's own purls: pkg:rpm/rocky/NAME@V-R?arch=…&distro=rocky-9.4.
  for (const f of fixes)
    assert.ok(
      purls.some((p) => p.startsWith(`pkg:rpm/rocky/${f.name}@`) && p.includes("distro=rocky-")),
      `${f.name} in ${purls.join(" ")}`,
    );
});

test("update-all with the image's dnf: every fix installed, the app still runs", async () => {
  const fixes = await rpmLabFixes("dnf");
  const target = `${registry.host}/lab/rpm-dnf:1-all`;
  await cli([
    "patch",
    "-i",
    await source("dnf"),
    "-t",
    target,
    "--push",
    "--engine",
    "sandbox",
    "--mirror",
    repo.mirrorArg("dnf"),
  ]);
  await inPulled(target, "dnf-all", (sb, layer) => assertPatchedDnfImage(sb, layer, fixes));
});

test("--dry-run with a report lists what would be patched and writes nothing", async () => {
  const report = await writeJson("dnf-dry.json", await rpmLabReport("dnf"));
  const target = `${registry.host}/lab/rpm-dnf:1-dry`;
  const { stdout, stderr } = await cli([
    "patch",
    "-i",
    await source("dnf"),
    "-r",
    report,
    "-t",
    target,
    "--push",
    "--engine",
    "sandbox",
    "--dry-run",
    "--mirror",
    repo.mirrorArg("dnf"),
  ]);
  for (const f of await rpmLabFixes("dnf")) assert.match(`${stdout}${stderr}`, new RegExp(f.name), f.name);
  await assert.rejects(layers(`docker://${target}`), "nothing pushed");
});

test("tampered repositories and gpgcheck=0 are refused in one line with the image's dnf, nothing pushed", async () => {
  const report = await writeJson("dnf-tamper.json", await rpmLabReport("dnf", { only: ["jq"] }));
  const cases: [RpmRepoTamper, RegExp][] = [
    ["repomd", /UNTRUSTED/],
    ["primary", /UNTRUSTED/],
    ["package-other-key", /UNTRUSTED/],
    ["package-bytes", /UNTRUSTED/],
    ["package-unsigned", /UNTRUSTED/],
  ];
  const src = await source("dnf");
  for (const [tamper, why] of cases) {
    const bad = await startRpmTestRepo({ tamper });
    try {
      const target = `${registry.host}/lab/rpm-dnf:tampered-${tamper}`;
      await assert.rejects(
        cli(
          [
            "patch",
            "-i",
            src,
            "-r",
            report,
            "-t",
            target,
            "--push",
            "--engine",
            "sandbox",
            "--mirror",
            bad.mirrorArg("dnf"),
          ],
          join(work, `cache-tampered-${tamper}`),
        ),
        oneLineError(why),
        tamper,
      );
      await assert.rejects(layers(`docker://${target}`), `${tamper}: nothing pushed`);
    } finally {
      await bad.close();
    }
  }
});

test("--keyring: packages signed by a key the image does not trust go in with the user's key, which does not stay in the image", async () => {
  const other = await startRpmTestRepo({ tamper: "package-other-key" });
  try {
    const fix = (await rpmLabFixes("dnf")).find((f) => f.name === "jq")!;
    const report = await writeJson("dnf-keyring.json", await rpmLabReport("dnf", { only: ["jq"] }));
    const target = `${registry.host}/lab/rpm-dnf:1-keyring`;
    const src = await source("dnf");
    await cli([
      "patch",
      "-i",
      src,
      "-r",
      report,
      "-t",
      target,
      "--push",
      "--engine",
      "sandbox",
      "--keyring",
      other.otherPublicKeyFile,
      "--mirror",
      other.mirrorArg("dnf"),
    ]);
    const keys = (sb: Sandbox) => sh(sb, ["rpm", "-q", "gpg-pubkey"]);
    const before = await inPulled(src, "dnf-keyring-source", async (sb) => (await keys(sb)).out);
    await inPulled(target, "dnf-keyring", async (sb) => {
      assert.equal((await rpmQa(sb)).get("jq"), fix.fixed);
      assert.equal((await keys(sb)).out, before, "the image trusts the keys it trusted before, no more");
    });
  } finally {
    await other.close();
  }
});

test("zypper: the openSUSE-like image patched by its own zypper from a Trivy report", async () => {
  const fixes = await rpmLabFixes("zypper");
  const report = await writeJson("zypper.json", await rpmLabReport("zypper"));
  const target = `${registry.host}/lab/rpm-zypper:1-sandbox`;
  await cli([
    "patch",
    "-i",
    await source("zypper"),
    "-r",
    report,
    "-t",
    target,
    "--push",
    "--engine",
    "sandbox",
    "--mirror",
    repo.mirrorArg("zypper"),
  ]);
  await inPulled(target, "zypper-sandbox", async (sb) => {
    const qa = await rpmQa(sb);
    for (const f of fixes) assert.equal(qa.get(f.name), f.fixed, f.name);
    const verify = await sh(sb, ["rpm", "-Va"]);
    for (const path of verifiedChanges(verify))
      assert.ok((RPM_LAB_EDITED_CONFIG as readonly string[]).includes(path), verify.out);
    const app = await sh(sb, ["/usr/local/bin/app"]);
    assert.equal(app.exitCode, 0, app.out);
  });
});

test("--engine sandbox on images it cannot serve says why in one line", async () => {
  for (const kind of ["micro", "distroless"] as const) {
    await assert.rejects(
      cli([
        "patch",
        "-i",
        await source(kind),
        "-t",
        `${registry.host}/lab/rpm-${kind}:x`,
        "--push",
        "--engine",
        "sandbox",
      ]),
      oneLineError(/--engine sandbox needs/),
      kind,
    );
  }
});

test("native and sandbox engines give the same packages and files for the dnf image", async () => {
  const report = await writeJson("dnf-diff.json", await rpmLabReport("dnf"));
  const qa: Record<string, Map<string, string>> = {};
  for (const engine of ["native", "sandbox"] as const) {
    const target = `${registry.host}/lab/rpm-dnf:1-diff-${engine}`;
    await cli([
      "patch",
      "-i",
      await source("dnf"),
      "-r",
      report,
      "-t",
      target,
      "--push",
      "--engine",
      engine,
      "--mirror",
      repo.mirrorArg("dnf"),
    ]);
    qa[engine] = await inPulled(target, `dnf-diff-${engine}`, async (sb, layer) => {
      await assertPatchedDnfImage(sb, layer, await rpmLabFixes("dnf"));
      return rpmQa(sb);
    });
  }
  assert.deepEqual([...qa.native!].sort(), [...qa.sandbox!].sort());
});

test("the native engine patches the shell-less micro and the manifest-only distroless images, nothing added", async () => {
  for (const kind of ["micro", "distroless"] as const) {
    const fixes = await rpmLabFixes(kind);
    const report = await writeJson(`${kind}.json`, await rpmLabReport(kind));
    const target = `${registry.host}/lab/rpm-${kind}:1-native`;
    await cli([
      "patch",
      "-i",
      await source(kind),
      "-r",
      report,
      "-t",
      target,
      "--push",
      "--mirror",
      repo.mirrorArg(kind),
    ]);
    const { stdout } = await run(SUTURE, ["inspect", "--format", "json", `docker://${target}`], {
      maxBuffer: 64 << 20,
    });
    const versions = new Map<string, string>(
      JSON.parse(stdout).images[0].packages.map((p: { name: string; version: string }) => [
        p.name,
        p.version,
      ]),
    );
    for (const f of fixes) assert.equal(versions.get(f.name), f.fixed, `${kind} ${f.name}`);
    await inPulled(target, `${kind}-native`, async (sb) => {
      assert.ok(!existsSync(join(sb.mergedDir, "bin/sh")), "no shell was added");
      const r = await sh(sb, ["/usr/bin/jq", "--version"]);
      assert.equal(r.exitCode, 0, r.out);
    });
  }
});
