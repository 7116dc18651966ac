/**
 * suture inside `docker run --user 1000:1000` (issue 16): the place a locked-down CI job is. With
 * Docker's default seccomp profile and no added capabilities there are no namespaces to make, so a
 * patch must run in the no-namespaces mode (mode 3: native engines, no mounts, no foreign code);
 * with `--security-opt seccomp=unconfined` the same container can create a user namespace and
 * patches in mode 2. The image is the lab's suture image (test/lab/suture-docker-image.ts), run by
 * a real dockerd; the registry and the archive mirror are on the host's loopback (`--network host`).
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { installedFromStatus } from "../../src/distro/dpkg/database.ts";
import { compareDebVersions } from "../../src/distro/dpkg/version.ts";
import { archiveProxyEnv, useArchiveMirror } from "../lab/archive-mirror.ts";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { distrolessLabImage } from "../lab/distroless.ts";
import { type LabDockerd, startDockerd } from "../lab/dockerd.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import { loadSutureDockerImage, sutureDockerImage } from "../lab/suture-docker-image.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "dockerd",
  "tool:docker",
  "tool:skopeo",
  "tool:umoci",
);

const run = promisify(execFile);
// The libraries of the bench's "lib" workload: a report the native engine patches without scripts.
const LIB_PACKAGES = ["libssl3", "openssl", "libexpat1", "liblzma5", "libpcre2-8-0"];

let work: string;
let dockerd: LabDockerd;
let registry: LabRegistry;
let sutureImage: string;
let proxyEnv: Record<string, string>;

before(async () => {
  proxyEnv = archiveProxyEnv(await useArchiveMirror());
  work = await mkdtemp(join(tmpdir(), "suture-docker-user-"));
  // Reports are bind-mounted into the container, which runs as uid 1000.
  await chmod(work, 0o755);
  [dockerd, registry] = await Promise.all([startDockerd(), startRegistry()]);
  sutureImage = await loadSutureDockerImage(await sutureDockerImage(), dockerd.host);
  const nginx = await labImage("bookwormNginx");
  const distroless = await distrolessLabImage();
  await host(["copy", nginx.reference, `docker://${registry.host}/lab/nginx:1`]);
  await host(["copy", distroless.reference, `docker://${registry.host}/lab/distroless:1`]);
});
after(async () => {
  await dockerd?.stop();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** suture on the host, as root (pushing the lab images). */
const host = (args: string[]) =>
  run(SUTURE, args, {
    env: { ...process.env, CI: "true" },
    maxBuffer: 64 * 1024 * 1024,
  });

/**
 * `docker run --user 1000:1000` of the suture image: Docker's default capabilities (none added),
 * its default seccomp profile unless `security` says otherwise, the host's network for the
 * loopback registry and archive mirror. `files` are bind-mounted read-only at the same path.
 */
function inDocker(args: string[], options: { security?: string[]; files?: string[]; scratch?: string } = {}) {
  return run(
    "docker",
    [
      "run",
      "--rm",
      "--user",
      "1000:1000",
      "--network",
      "host",
      ...(options.security ?? []).flatMap((s) => ["--security-opt", s]),
      ...Object.entries(proxyEnv).flatMap(([k, v]) => ["-e", `${k}=${v}`]),
      ...(options.files ?? []).flatMap((f) => ["-v", `${f}:${f}:ro`]),
      ...(options.scratch ? ["-v", `${options.scratch}:/tmp`] : []),
      sutureImage,
      ...args,
    ],
    { env: dockerd.env, maxBuffer: 64 * 1024 * 1024 },
  );
}

/** The pushed image's root filesystem (skopeo + umoci: tools other than suture's own readers). */
async function unpackPushed(repoTag: string): Promise<string> {
  const layout = join(work, `layout-${repoTag.replace(/\W/g, "-")}`);
  await run("skopeo", [
    "copy",
    "--src-tls-verify=false",
    `docker://${registry.host}/${repoTag}`,
    `oci:${layout}:x`,
  ]);
  const root = join(work, `root-${repoTag.replace(/\W/g, "-")}`);
  await run("umoci", ["raw", "unpack", "--image", `${layout}:x`, root]);
  return root;
}

async function installed(root: string): Promise<Map<string, string>> {
  const statusD = join(root, "var/lib/dpkg/status.d");
  const stanzas = (await readdir(statusD).catch(() => [] as string[]))
    .filter((n) => !n.endsWith(".md5sums"))
    .map((n) => readFile(join(statusD, n), "utf8"));
  const status = await readFile(join(root, "var/lib/dpkg/status"), "utf8").catch(() => "");
  const text = [status, ...(await Promise.all(stanzas))].join("\n");
  return new Map(installedFromStatus(text).map((p) => [p.name, p.version]));
}

/** A host directory for the container's /tmp, writable by uid 1000 (sticky, like /tmp). */
async function scratchDir(name: string): Promise<string> {
  const dir = join(work, `scratch-${name}`);
  await mkdir(dir);
  await chmod(dir, 0o1777);
  return dir;
}

async function tagExists(repoTag: string): Promise<boolean> {
  return run("skopeo", [
    "inspect",
    "--raw",
    "--tls-verify=false",
    `docker://${registry.host}/${repoTag}`,
  ]).then(
    () => true,
    () => false,
  );
}

test("default seccomp, no capabilities: suture doctor says no namespaces can be made, and why", async () => {
  const { stdout } = await inDocker(["doctor", "--format", "json"]).catch((e) => e as { stdout: string });
  const diagnosis = JSON.parse(stdout) as { mode: string; checks: { id: string; ok: boolean }[] };
  const check = (id: string) => diagnosis.checks.find((c) => c.id === id)?.ok;
  assert.equal(diagnosis.mode, "no-namespaces");
  assert.equal(check("root"), false, "runs as uid 1000");
  assert.equal(check("cap-sys-admin"), false);
  assert.equal(check("seccomp"), false, "Docker's default profile is a seccomp filter");
  assert.equal(check("user-namespaces"), false, "the profile refuses unshare(CLONE_NEWUSER)");
});

test("default seccomp, no capabilities: the distroless image is patched without namespaces (mode 3)", async () => {
  const { stderr } = await inDocker([
    "patch",
    "-i",
    `docker://${registry.host}/lab/distroless:1`,
    "-t",
    `${registry.host}/lab/distroless:docker`,
    "--push",
    "--progress",
    "plain",
  ]);
  assert.match(stderr, /mode: no-namespaces/);
  const lab = await distrolessLabImage();
  const versions = await installed(await unpackPushed("lab/distroless:docker"));
  for (const name of ["libssl3", "tzdata", "ca-certificates"]) {
    assert.equal(compareDebVersions(versions.get(name)!, lab.packages.get(name)!), 1, `${name} upgraded`);
  }
});

test("default seccomp, no capabilities: a fix whose maintainer scripts have no native stand-in is refused in one line", async () => {
  // nginx-common's postinst (users, log dirs, service) has no native equivalent: only a mode that
  // runs the image's scripts (root or a user namespace) may install it.
  const report = await trivyReportFor("bookwormNginx", {
    only: ["nginx", "nginx-common"],
    outFile: join(work, "nginx-scripts.json"),
  });
  await chmod(report.path, 0o644);
  await assert.rejects(
    inDocker(
      [
        "patch",
        "-i",
        `docker://${registry.host}/lab/nginx:1`,
        "-r",
        report.path,
        "-t",
        `${registry.host}/lab/nginx:refused`,
        "--push",
      ],
      { files: [report.path] },
    ),
    oneLineError(/nginx.*(user-namespace|root)|(user-namespace|root).*nginx/),
  );
  assert.equal(await tagExists("lab/nginx:refused"), false, "nothing is pushed");
});

test("seccomp=unconfined: the same container patches nginx in a user namespace (mode 2)", async () => {
  const { path: reportPath, fixes } = await trivyReportFor("bookwormNginx", {
    only: LIB_PACKAGES,
    outFile: join(work, "lib.json"),
  });
  await chmod(reportPath, 0o644);
  const { stderr } = await inDocker(
    [
      "patch",
      "-i",
      `docker://${registry.host}/lab/nginx:1`,
      "-r",
      reportPath,
      "-t",
      `${registry.host}/lab/nginx:docker`,
      "--push",
      "--progress",
      "plain",
    ],
    // Overlayfs refuses an upper dir on overlayfs (the container's own root): the work and cache
    // dirs (TMPDIR, XDG_CACHE_HOME under /tmp in this image) get a host directory, as a CI job's
    // volume or a pod's emptyDir gives them.
    { security: ["seccomp=unconfined"], files: [reportPath], scratch: await scratchDir("mode2") },
  );
  assert.match(stderr, /mode: user-namespace \(ids mapped from your subordinate ranges\)/);
  const versions = await installed(await unpackPushed("lab/nginx:docker"));
  assert.ok(fixes.length > 0, "the lab image has pending library fixes");
  for (const fix of fixes) {
    const now = versions.get(fix.name);
    assert.ok(now && compareDebVersions(now, fix.fixed) >= 0, `${fix.name}: ${now} ≥ ${fix.fixed}`);
  }
});

test("seccomp=unconfined: SIGINT mid-patch (user namespace, no pid namespace in a container) exits 130 and leaves no work dir", async () => {
  const scratch = await scratchDir("interrupt");
  const name = `suture-interrupt-${process.pid}`;
  const child = spawn(
    "docker",
    [
      "run",
      "--rm",
      "--name",
      name,
      "--user",
      "1000:1000",
      "--network",
      "host",
      "--security-opt",
      "seccomp=unconfined",
      "-v",
      `${scratch}:/tmp`,
      sutureImage,
      "patch",
      "-i",
      `docker://${registry.host}/lab/nginx:1`,
      "-t",
      `${registry.host}/lab/nginx:interrupted`,
      "--push",
      "--progress",
      "plain",
    ],
    { env: dockerd.env, stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  // Interrupt once layers are being extracted: the namespace is up and the work dir exists.
  const deadline = Date.now() + 300_000;
  while (!/extracting layer/.test(stderr)) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `no extraction seen: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await run("docker", ["kill", "--signal", "INT", name], { env: dockerd.env });
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /mode: user-namespace/);
  // What stays on purpose: the cache (XDG_CACHE_HOME) and Node's compile cache (src/cli/main.mjs
  // enables it in the temp dir), which the next run reuses.
  const left = (await readdir(scratch)).filter((n) => n !== "suture-cache" && n !== "node-compile-cache");
  assert.deepEqual(left, [], "no work or temp dir is left in /tmp");
  const cache = await readdir(join(scratch, "suture-cache", "suture")).catch(() => [] as string[]);
  assert.deepEqual(
    cache.filter((n) => n.startsWith("patch-")),
    [],
    "no patch work dir is left in the cache",
  );
  assert.equal(await tagExists("lab/nginx:interrupted"), false, "nothing is pushed");
});
