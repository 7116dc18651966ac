/**
 * Alpine images patched end to end through the CLI, as issue 13's "done when" says: the lab's
 * 3.20.3 image (plus an app layer) in a loopback registry, the lab's signed repository of edge's
 * real newer builds behind `--mirror`, and the image's own apk (run in runc on the result) as the
 * judge: `apk info -v`, `apk audit --system`, `apk version -l '<'`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { readTar } from "../../src/archive/tar/read.ts";
import { parseInstalledDb } from "../../src/distro/apk/installed-db.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";
import {
  ALPINE_LAB_APP_CONF,
  ALPINE_LAB_APP_LINK,
  ALPINE_LAB_EDITED_CONFIG,
  ALPINE_LAB_FIXES,
  ALPINE_LAB_USER,
  ALPINE_STATIC_REMOVED,
  type AlpineTestRepo,
  alpineLabImage,
  alpineLabIndex,
  alpineLabTrivyReport,
  startAlpineTestRepo,
} from "../lab/alpine-lab.ts";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "loopback",
  "tool:docker-registry",
  "tool:umoci",
);

const run = promisify(execFile);
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
let registry: LabRegistry;
let repo: AlpineTestRepo;
let work: string;
let source: string;
let mirrors: string[];

before(async () => {
  work = await mkdtemp("/var/tmp/suture-alpine-e2e-");
  registry = await startRegistry({ auth: "none" });
  repo = await startAlpineTestRepo();
  mirrors = repo.mirrorFlags.flatMap((m) => ["--mirror", m]);
  source = `${registry.host}/lab/alpine:3.20.3`;
  await cli(["copy", (await alpineLabImage("app")).ref, `docker://${source}`]);
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

async function writeJson(name: string, value: unknown): Promise<string> {
  const file = join(work, name);
  await writeFile(file, JSON.stringify(value));
  return file;
}

/** The platform image of an OCI layout tag in a sandbox (overlay + runc), for the image's own apk. */
function inImage<T>(
  ociDir: string,
  tag: string,
  architecture: string,
  fn: (sb: Sandbox) => Promise<T>,
): Promise<T> {
  return inLayoutImage({ ociDir, tag, architecture }, work, fn);
}

/** The image's own apk (or, with `root`, the app image's apk judging another root with --root). */
async function apk(sb: Sandbox, args: string[], mounts = []): Promise<string> {
  const r = await sb.run(["/sbin/apk", ...args], { timeoutMs: 120_000, mounts });
  assert.equal(r.exitCode, 0, `apk ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return `${r.stdout}${r.stderr}`;
}

async function layers(ref: string): Promise<{ diffID: string }[]> {
  const { stdout } = await run(SUTURE, ["inspect", "--format", "json", ref], { maxBuffer: 64 << 20 });
  return JSON.parse(stdout).images[0].layers;
}

/** Every entry of a layout's last layer: type, mode, owner, link target and content digest. */
async function lastLayerEntries(ociDir: string, tag: string): Promise<Map<string, string>> {
  const index = JSON.parse(await readFile(join(ociDir, "index.json"), "utf8"));
  const desc = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.["org.opencontainers.image.ref.name"] === tag,
  );
  const blob = (d: string) => readFile(join(ociDir, "blobs/sha256", d.slice("sha256:".length)));
  const manifest = JSON.parse((await blob(desc.digest)).toString());
  const gz = await blob(manifest.layers.at(-1).digest);

  const out = new Map<string, string>();
  for await (const { header, body } of readTar([gunzipSync(gz)])) {
    const bytes: Buffer[] = [];
    for await (const chunk of body) bytes.push(chunk as Buffer);
    const content = Buffer.concat(bytes);
    const digest =
      header.path === "lib/apk/db/scripts.tar"
        ? await scriptsDigest(content)
        : createHash("sha256").update(content).digest("hex");
    out.set(
      header.path,
      `${header.type} ${(header.mode & 0o7777).toString(8)} ${header.uid}:${header.gid} ${header.linkname ?? ""} ${digest}`,
    );
  }
  return out;
}

/** scripts.tar by its members' names and contents (its tar headers carry the time of writing). */
async function scriptsDigest(tar: Buffer): Promise<string> {
  const h = createHash("sha256");
  for await (const { header, body } of readTar([tar])) {
    const bytes: Buffer[] = [];
    for await (const chunk of body) bytes.push(chunk as Buffer);
    h.update(`${header.path}\0${createHash("sha256").update(Buffer.concat(bytes)).digest("hex")}\n`);
  }
  return h.digest("hex");
}

/** What every patched app image must show: fixed versions, a clean audit, the app layer intact. */
async function assertPatchedApp(sb: Sandbox, fixes: readonly { name: string; fixed: string }[]) {
  const info = await apk(sb, ["info", "-v"]);
  for (const f of fixes)
    assert.match(info, new RegExp(`^${f.name}-${f.fixed.replace(/\./g, "\\.")}$`, "m"), info);
  assert.equal((await apk(sb, ["audit", "--system"])).trim(), "", "apk audit --system is clean");
  const root = sb.mergedDir;
  assert.match(await readFile(join(root, ALPINE_LAB_APP_CONF), "utf8"), /^user = app$/m);
  assert.equal(await readlink(join(root, ALPINE_LAB_APP_LINK.path)), ALPINE_LAB_APP_LINK.target);
  const home = await lstat(join(root, ALPINE_LAB_USER.home));
  assert.deepEqual([home.uid, home.gid], [ALPINE_LAB_USER.uid, ALPINE_LAB_USER.uid]);
  assert.match(await readFile(join(root, "etc/passwd"), "utf8"), /^app:x:1000:1000:/m);
  // Edited protected config files are kept; the packages' new ones are written beside them.
  assert.match(await readFile(join(root, "etc/securetty"), "utf8"), /ttyS4/);
  for (const f of ALPINE_LAB_EDITED_CONFIG.app)
    if (fixes.some((x) => x.name === "busybox" || x.name.startsWith("alpine-baselayout")))
      assert.ok(existsSync(join(root, `${f}.apk-new`)) || !existsSync(join(root, f)), `${f}.apk-new`);
}

test("registry to registry: the Alpine lab image patched natively from a Trivy report, VEX valid", async () => {
  const report = await writeJson("alpine.json", alpineLabTrivyReport());
  const target = `${registry.host}/lab/alpine:3.20.3-patched`;
  const vex = join(work, "alpine.vex.json");
  const { stdout } = await cli([
    "patch",
    "-i",
    source,
    "-r",
    report,
    "-t",
    target,
    "--push",
    "-o",
    vex,
    ...mirrors,
  ]);
  assert.match(stdout, /sha256:/);
  const before = await layers(`docker://${source}`);
  const after = await layers(`docker://${target}`);
  assert.equal(after.length, before.length + 1, "exactly one new layer");
  assert.deepEqual(after.slice(0, -1), before);

  const out = join(work, "native-report");
  await cli(["copy", `docker://${target}`, `oci:${out}:patched`]);
  await inImage(out, "patched", "amd64", (sb) => assertPatchedApp(sb, ALPINE_LAB_FIXES));

  const doc = JSON.parse(await readFile(vex, "utf8"));
  await validateOpenVex(doc, schema);
  const purls = doc.statements.flatMap((s: { products: { subcomponents?: { "@id": string }[] }[] }) =>
    s.products.flatMap((p) => (p.subcomponents ?? []).map((c) => c["@id"])),
  );
  assert.ok(
    purls.some((p: string) => p.startsWith("pkg:apk/alpine/zlib@1.3.1-r1?arch=x86_64&distro=")),
    purls.join("\n"),
  );
});

test("update-all: native and sandbox engines give the same tree and installed db", async () => {
  const results: Record<string, Map<string, string>> = {};
  for (const engine of ["native", "sandbox"] as const) {
    const out = join(work, `all-${engine}`);
    await cli([
      "patch",
      "-i",
      `docker://${source}`,
      "-t",
      engine,
      "--oci-dir",
      out,
      "--engine",
      engine,
      ...mirrors,
    ]);
    await inImage(out, engine, "amd64", async (sb) => {
      await assertPatchedApp(sb, ALPINE_LAB_FIXES);
      const outdated = await apk(sb, ["version", "-l", "<", "--repositories-file", "/dev/null"]);
      assert.doesNotMatch(outdated.replace(/^Installed:.*$/m, ""), /</);
    });
    results[engine] = await lastLayerEntries(out, engine);
  }
  const native = results.native!;
  const sandbox = results.sandbox!;
  const differ = [...new Set([...native.keys(), ...sandbox.keys()])]
    .filter((p) => native.get(p) !== sandbox.get(p))
    .map(
      (p) => `${p}\n  native:  ${native.get(p) ?? "(absent)"}\n  sandbox: ${sandbox.get(p) ?? "(absent)"}`,
    );
  assert.deepEqual(differ, [], "the two engines' patch layers differ");
});

test("a no-shell apk image (Chainguard static style) is patched natively, nothing added", async () => {
  const lab = await alpineLabImage("static");
  const fixes = ALPINE_LAB_FIXES.filter((f) => !ALPINE_STATIC_REMOVED.includes(f.name));
  const report = await writeJson("static.json", alpineLabTrivyReport({ variant: "static" }));
  const out = join(work, "static");
  await cli(["patch", "-i", lab.ref, "-r", report, "-t", "patched", "--oci-dir", out, ...mirrors]);
  const app = await alpineLabImage("app");
  await inImage(out, "patched", "amd64", async (patched) => {
    assert.ok(!existsSync(join(patched.mergedDir, "bin/sh")), "no shell was added");
    const db = parseInstalledDb(await readFile(join(patched.mergedDir, "lib/apk/db/installed"), "utf8"));
    for (const f of fixes)
      assert.equal(db.find((p) => p.info.name === f.name)?.info.version, f.fixed, f.name);
    // The app image's apk judges the static root.
    await inImage(app.ociDir, "latest", "amd64", async (judge) => {
      const mounts = [{ destination: "/static", source: patched.mergedDir }];
      assert.equal(
        (await apk(judge, ["--root", "/static", "audit", "--system"], mounts as never)).trim(),
        "",
      );
    });
  });
});

/** Platform architecture → manifest digest of an OCI layout's index under `tag`. */
async function platformManifests(ociDir: string, tag: string): Promise<Map<string, string>> {
  const top = JSON.parse(await readFile(join(ociDir, "index.json"), "utf8"));
  const d = top.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.["org.opencontainers.image.ref.name"] === tag,
  );
  const list = JSON.parse(await readFile(join(ociDir, "blobs/sha256", d.digest.slice(7)), "utf8"));
  return new Map(
    list.manifests.map((m: { platform: { architecture: string }; digest: string }) => [
      m.platform.architecture,
      m.digest,
    ]),
  );
}

test("an amd64 + arm64 index patched natively, arm64's scripts under QEMU; each judged by its own apk", async () => {
  // binfmt registrations do not survive a reboot even when the lab is cached.
  await run("bash", [join(import.meta.dirname, "../../scripts/install-system-deps.sh"), "--arm64-emulation"]);
  const index = await alpineLabIndex();
  const reports = join(work, "reports-all");
  await mkdir(reports);
  await writeJson("reports-all/amd64.json", alpineLabTrivyReport());
  await writeJson("reports-all/arm64.json", alpineLabTrivyReport({ arch: "aarch64" }));
  const out = join(work, "multi-all");
  await cli(["patch", "-i", index.ref, "-r", reports, "-t", "patched", "--oci-dir", out, ...mirrors]);
  const src = await platformManifests(index.ociDir, "latest");
  const patched = await platformManifests(out, "patched");
  for (const [arch, digest] of src) assert.notEqual(patched.get(arch), digest, `${arch} patched`);
  for (const architecture of ["amd64", "arm64"])
    await inImage(out, "patched", architecture, async (sb) => {
      await assertPatchedApp(sb, ALPINE_LAB_FIXES);
      assert.match(await apk(sb, ["--print-arch"]), architecture === "arm64" ? /aarch64/ : /x86_64/);
    });
});

test("an amd64 + arm64 index: the asked platform patched, the other untouched", async () => {
  const index = await alpineLabIndex();
  const reports = join(work, "reports");
  await mkdir(reports);
  await writeJson("reports/arm64.json", alpineLabTrivyReport({ arch: "aarch64", only: ["zlib", "musl"] }));
  const out = join(work, "multi");
  await cli([
    "patch",
    "-i",
    index.ref,
    "-r",
    reports,
    "-t",
    "patched",
    "--oci-dir",
    out,
    "--platform",
    "linux/arm64",
    ...mirrors,
  ]);
  const src = await platformManifests(index.ociDir, "latest");
  const patched = await platformManifests(out, "patched");
  assert.equal(patched.get("amd64"), src.get("amd64"), "amd64 untouched");
  assert.notEqual(patched.get("arm64"), src.get("arm64"), "arm64 patched");
  await inImage(out, "patched", "arm64", async (sb) => {
    const db = parseInstalledDb(await readFile(join(sb.mergedDir, "lib/apk/db/installed"), "utf8"));
    assert.equal(db.find((p) => p.info.name === "zlib")?.info.version, "1.3.1-r2");
    assert.equal(db.find((p) => p.info.name === "musl")?.info.version, "1.2.5-r3");
    assert.match(db.find((p) => p.info.name === "zlib")!.info.arch ?? "", /aarch64/);
  });
});

test("tampered repositories: one clear line each, nothing written, for both engines", async () => {
  const report = await writeJson("zlib.json", alpineLabTrivyReport({ only: ["zlib"] }));
  const cases = [
    [{ signWith: "other" }, /UNTRUSTED|not signed by a (trusted|known) key|untrusted/i],
    [{ tamper: "index-bytes" }, /signature|UNTRUSTED/i],
    [{ tamper: "package-data", tamperPackages: ["zlib"] }, /zlib/],
    [{ tamper: "package-control", tamperPackages: ["zlib"] }, /zlib/],
  ] as const;
  for (const [options, why] of cases) {
    const bad = await startAlpineTestRepo(options);
    try {
      for (const engine of ["native", "sandbox"]) {
        const out = join(work, `tampered-${engine}`);
        await assert.rejects(
          cli(
            [
              "patch",
              "-i",
              `docker://${source}`,
              "-r",
              report,
              "-t",
              "x",
              "--oci-dir",
              out,
              "--engine",
              engine,
            ].concat(bad.mirrorFlags.flatMap((m) => ["--mirror", m])),
            join(work, `cache-tampered-${engine}`),
          ),
          oneLineError(why),
          `${engine} with ${JSON.stringify(options)}`,
        );
        assert.ok(!existsSync(out), `${engine}: nothing written for ${JSON.stringify(options)}`);
      }
    } finally {
      await bad.close();
    }
  }
});
