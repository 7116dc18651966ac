/**
 * The test lab's real old Debian images (test/lab/images.ts): built from the Debian archive with
 * mmdebstrap, written by umoci, cached by recipe. Checked with independent tools (skopeo, umoci,
 * dpkg-query, dpkg --compare-versions) the way the other integration tests will consume them.
 * The first run builds (about a minute); later runs read the cache.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  CORE_PENDING_PACKAGES,
  type LabImage,
  labImage,
  labRecipeHash,
  pendingSecurityFixes,
  trivyReportFor,
} from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { test } = await requiring("root", "tool:mmdebstrap", "tool:umoci", "tool:skopeo");

const exec = promisify(execFile);
const IMAGES_TS = fileURLToPath(new URL("../lab/images.ts", import.meta.url));
const NODE = process.execPath;

async function skopeoInspect(img: LabImage, config = false): Promise<Record<string, unknown>> {
  const args = ["inspect", ...(config ? ["--config"] : []), img.reference];
  return JSON.parse((await exec("skopeo", args, { maxBuffer: 16 << 20 })).stdout);
}

/** Unpacks the image with umoci (which verifies every blob against its digest) into a temp rootfs. */
async function unpack(t: { after: (fn: () => Promise<void>) => void }, img: LabImage): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "lab-images-test-"));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const rootfs = path.join(dir, "rootfs");
  await exec("umoci", ["raw", "unpack", "--image", `${img.layoutDir}:latest`, rootfs], {
    maxBuffer: 64 << 20,
  });
  return rootfs;
}

/** name -> version of installed packages, as the real dpkg-query reads the rootfs's database. */
async function dpkgQuery(rootfs: string): Promise<Map<string, string>> {
  const { stdout } = await exec(
    "dpkg-query",
    [
      `--admindir=${rootfs}/var/lib/dpkg`,
      "-W",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a dpkg-query format, not a JS template
      "-f=${Package}\t${Version}\t${db:Status-Status}\n",
    ],
    { maxBuffer: 16 << 20 },
  );
  const out = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const [name, version, status] = line.split("\t");
    if (name && status === "installed") out.set(name, version);
  }
  return out;
}

async function versionGreater(a: string, b: string): Promise<boolean> {
  try {
    await exec("dpkg", ["--compare-versions", a, "gt", b]);
    return true;
  } catch {
    return false;
  }
}

/** Runs labImage in a fresh Node process (no in-process memo), timing the call inside the child. */
function labImageInChild(
  recipe: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ built: boolean; manifestDigest: string; recipeHash: string; ms: number }> {
  const code = `
    import { labImage } from ${JSON.stringify(IMAGES_TS)};
    const t0 = performance.now();
    const img = await labImage(${JSON.stringify(recipe)});
    const ms = performance.now() - t0;
    process.stdout.write(JSON.stringify({ built: img.built, manifestDigest: img.manifestDigest, recipeHash: img.recipeHash, ms }));
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, ["--input-type=module", "-e", code], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (b) => {
      out += b;
    });
    child.stderr.on("data", (b) => {
      err += b;
    });
    child.on("error", reject);
    child.on("close", (status) =>
      status === 0
        ? resolve(JSON.parse(out))
        : reject(new Error(`child exited ${status}: ${err.slice(-2000)}`)),
    );
  });
}

test("bookwormMinbase is a valid one-layer amd64 OCI layout of bookworm with official sources", async (t) => {
  const img = await labImage("bookwormMinbase");
  assert.equal(img.tag, "latest");
  assert.match(img.recipeHash, /^[0-9a-f]{64}$/);

  const inspect = await skopeoInspect(img);
  assert.equal(inspect.Digest, img.manifestDigest);
  assert.equal(inspect.Architecture, "amd64");
  assert.equal(inspect.Os, "linux");
  assert.equal((inspect.Layers as string[]).length, 1);
  const config = await skopeoInspect(img, true);
  assert.deepEqual((config.config as { Cmd: string[] }).Cmd, ["bash"]);
  assert.ok((config.config as { Env: string[] }).Env.some((e) => e.startsWith("PATH=/usr/local/sbin:")));
  assert.ok((config.history as unknown[]).length >= 2);

  const manifest = JSON.parse(
    await fs.readFile(path.join(img.layoutDir, "blobs", "sha256", img.manifestDigest.slice(7)), "utf8"),
  );
  assert.equal(manifest.layers[0].mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");

  const rootfs = await unpack(t, img);
  assert.match(await fs.readFile(path.join(rootfs, "etc/debian_version"), "utf8"), /^12\.\d+\n$/);
  assert.equal(
    img.debianVersion,
    (await fs.readFile(path.join(rootfs, "etc/debian_version"), "utf8")).trim(),
  );
  const sources = await fs.readFile(path.join(rootfs, "etc/apt/sources.list.d/debian.sources"), "utf8");
  assert.match(sources, /URIs: http:\/\/deb\.debian\.org\/debian\nSuites: bookworm bookworm-updates\n/);
  assert.match(sources, /URIs: http:\/\/deb\.debian\.org\/debian-security\nSuites: bookworm-security\n/);
  assert.equal(sources.match(/Signed-By: \/usr\/share\/keyrings\/debian-archive-keyring\.gpg/g)?.length, 2);
  await assert.rejects(
    fs.access(path.join(rootfs, "etc/apt/sources.list")),
    "no one-line sources.list is left",
  );
  assert.deepEqual(await fs.readdir(path.join(rootfs, "var/lib/apt/lists")), [], "package lists are cleaned");
  assert.deepEqual(
    (await fs.readdir(path.join(rootfs, "var/cache/apt"))).filter((f) => f.endsWith(".bin")),
    [],
    "apt binary caches are cleaned",
  );
  assert.deepEqual(await fs.readdir(path.join(rootfs, "dev")), [], "/dev carries no device nodes");

  // The package map is what the real dpkg sees in the image.
  assert.deepEqual(img.packages, await dpkgQuery(rootfs));
  assert.ok(img.packages.has("base-files") && img.packages.has("libc6") && img.packages.has("apt"));
});

test("bookwormNginx stacks three layers on the minbase layer and carries the local edits", async (t) => {
  const base = await labImage("bookwormMinbase");
  const img = await labImage("bookwormNginx");
  const inspect = await skopeoInspect(img);
  const layers = inspect.Layers as string[];
  assert.ok(layers.length >= 3, `expected >= 3 layers, got ${layers.length}`);
  assert.equal(layers[0], ((await skopeoInspect(base)).Layers as string[])[0], "layer 1 is the minbase blob");
  assert.equal(inspect.Architecture, "amd64");

  const rootfs = await unpack(t, img);
  const marker = "# suture-lab: local edit to a conffile; a patch must keep this line\n";
  const openssl = await fs.readFile(path.join(rootfs, "etc/ssl/openssl.cnf"), "utf8");
  assert.ok(openssl.endsWith(marker));
  assert.ok((await fs.readFile(path.join(rootfs, "etc/nginx/nginx.conf"), "utf8")).endsWith(marker));
  // dpkg sees openssl.cnf as a locally modified conffile: its md5 differs from the recorded one.
  const { stdout: conffiles } = await exec("dpkg-query", [
    `--admindir=${rootfs}/var/lib/dpkg`,
    "-W",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a dpkg-query format, not a JS template
    "-f=${Conffiles}\n",
    "openssl",
  ]);
  const recorded = /\/etc\/ssl\/openssl\.cnf ([0-9a-f]{32})/.exec(conffiles)?.[1];
  assert.ok(recorded, "openssl.cnf is a conffile of openssl");
  assert.notEqual(createHash("md5").update(openssl).digest("hex"), recorded);

  assert.equal(await fs.readlink(path.join(rootfs, "usr/local/bin/ssl")), "/usr/bin/openssl");
  const st = await fs.stat(path.join(rootfs, "srv/app/data.txt"));
  assert.equal(st.uid, 1000);
  assert.equal(st.gid, 1000);

  assert.deepEqual(img.packages, await dpkgQuery(rootfs));
  for (const p of [
    "nginx",
    "openssl",
    "libssl3",
    "libexpat1",
    "unzip",
    "curl",
    "tzdata",
    "perl",
    "ca-certificates",
  ]) {
    assert.ok(img.packages.has(p), `${p} is installed`);
  }
  const sources = await fs.readFile(path.join(rootfs, "etc/apt/sources.list.d/debian.sources"), "utf8");
  assert.match(sources, /Suites: bookworm-security/);
});

test("a cached image loads in a fresh process quickly and unchanged", async () => {
  const img = await labImage("bookwormNginx");
  const again = await labImageInChild("bookwormNginx");
  assert.equal(again.built, false);
  assert.equal(again.manifestDigest, img.manifestDigest);
  assert.equal(again.recipeHash, img.recipeHash);
  assert.ok(again.ms < 5000, `cache hit took ${Math.round(again.ms)} ms`);
});

test("pendingSecurityFixes finds real newer versions in bookworm-security", async () => {
  const img = await labImage("bookwormNginx");
  const fixes = await pendingSecurityFixes("bookwormNginx");
  assert.ok(fixes.length > 0);
  for (const f of fixes) {
    assert.equal(f.installed, img.packages.get(f.name), `${f.name}: installed version is the image's`);
    assert.ok(await versionGreater(f.fixed, f.installed), `${f.name}: ${f.fixed} > ${f.installed}`);
    assert.match(f.filename, /^pool\/updates\/main\//);
  }
  const ssl = fixes.find((f) => f.name === "libssl3");
  assert.ok(ssl, "libssl3 has a pending fix (bookworm main lags bookworm-security for openssl)");
  assert.equal(ssl.source, "openssl");
});

test("trivyReportFor writes a Trivy JSON of the pending fixes, restricted on request", async () => {
  const img = await labImage("bookwormNginx");
  const { path: file, fixes } = await trivyReportFor("bookwormNginx", { only: CORE_PENDING_PACKAGES });
  const report = JSON.parse(await fs.readFile(file, "utf8"));
  assert.equal(report.SchemaVersion, 2);
  assert.equal(report.ArtifactType, "container_image");
  assert.deepEqual(report.Metadata.OS, { Family: "debian", Name: img.debianVersion });
  assert.equal(report.Results.length, 1);
  const [result] = report.Results;
  assert.equal(result.Class, "os-pkgs");
  assert.equal(result.Type, "debian");
  const vulns = result.Vulnerabilities as {
    VulnerabilityID: string;
    PkgName: string;
    InstalledVersion: string;
    FixedVersion: string;
  }[];
  assert.ok(vulns.length > 0);
  assert.deepEqual(
    new Set(vulns.map((v) => v.PkgName)),
    new Set(fixes.map((f) => f.name)),
    "one package set: the pending fixes among the requested ones",
  );
  for (const v of vulns) {
    assert.ok(CORE_PENDING_PACKAGES.includes(v.PkgName));
    assert.equal(v.InstalledVersion, img.packages.get(v.PkgName));
    assert.ok(await versionGreater(v.FixedVersion, v.InstalledVersion));
    assert.match(v.VulnerabilityID, /^(CVE-\d{4}-\d{4,}|DEBIAN-FIX-\S+)$/);
  }
  assert.ok(
    vulns.some((v) => v.PkgName === "libssl3" && v.VulnerabilityID.startsWith("CVE-")),
    "openssl's changelog names the CVEs its security upload fixes",
  );
  await fs.rm(path.dirname(file), { recursive: true, force: true });
});

test("concurrent processes build a recipe once, breaking a dead process's lock", async (t) => {
  // A private cache seeded with the warm minbase entry, so only the cheap marker layer gets built.
  const base = await labImage("bookwormMinbase");
  const cache = await fs.mkdtemp(path.join(os.tmpdir(), "lab-cache-test-"));
  t.after(() => fs.rm(cache, { recursive: true, force: true }));
  await exec("cp", ["-a", path.dirname(base.layoutDir), cache]);
  const env = { ...process.env, SUTURE_LAB_CACHE: cache };

  // A lock left by a process that no longer exists (a crashed build).
  const dead = spawn("true");
  await new Promise((r) => dead.on("close", r));
  const entryName = `bookwormMinbaseMarked-${(await labRecipeHash("bookwormMinbaseMarked")).slice(0, 16)}`;
  const lock = path.join(cache, `${entryName}.lock`);
  await fs.mkdir(lock);
  await fs.writeFile(
    path.join(lock, "owner.json"),
    JSON.stringify({ pid: dead.pid, host: os.hostname(), started: new Date().toISOString() }),
  );

  const [a, b] = await Promise.all([
    labImageInChild("bookwormMinbaseMarked", env),
    labImageInChild("bookwormMinbaseMarked", env),
  ]);
  assert.equal([a.built, b.built].filter(Boolean).length, 1, "exactly one process built the image");
  assert.equal(a.manifestDigest, b.manifestDigest);
  const left = (await fs.readdir(cache)).sort();
  assert.deepEqual(
    left,
    [path.basename(path.dirname(base.layoutDir)), entryName, "logs"].sort(),
    "no lock or half-built entry remains",
  );

  // The result is the minbase image plus one layer.
  const marked = JSON.parse(
    (await exec("skopeo", ["inspect", `oci:${path.join(cache, entryName, "oci")}:latest`])).stdout,
  );
  assert.deepEqual(marked.Layers.slice(0, 1), (await skopeoInspect(base)).Layers);
  assert.equal(marked.Layers.length, 2);
});
