/**
 * `suture patch` end to end for what a user notices beyond the OCI-layout path: docker-archive and
 * daemon outputs, update-all on an apt image, held packages, and that --timeout and Ctrl-C leave
 * nothing behind (no mount, no temp dir, no target).
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { oneLineError } from "../lab/cli.ts";
import { type LabDockerd, startDockerd } from "../lab/dockerd.ts";
import { labImage, type PendingFix, pendingSecurityFixes, trivyReportFor } from "../lab/images.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "dockerd",
  "tool:mmdebstrap",
  "tool:skopeo",
  "tool:umoci",
);

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;
let dockerd: LabDockerd;
let report: string;
/** The one package the report names: what bookworm-security really has pending for the lab image. */
let fix: PendingFix;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-sinks-"));
  dockerd = await startDockerd();
  // libexpat1 when it is pending (small and alone); a lab image built after a point release may
  // have it already, so else the smallest pending package.
  const fixes = await pendingSecurityFixes("bookwormNginx");
  const chosen = fixes.find((f) => f.name === "libexpat1") ?? fixes.toSorted((a, b) => a.size - b.size)[0];
  assert.ok(chosen, "bookworm-security has fixes pending for the nginx lab image");
  fix = chosen;
  ({ path: report } = await trivyReportFor("bookwormNginx", {
    only: [fix.name],
    outFile: join(work, "r.json"),
  }));
});
after(async () => {
  await Promise.all([dockerd?.stop(), rm(work, { recursive: true, force: true })]);
});

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(suture, args, { env: { ...process.env, CI: "true", ...env }, maxBuffer: 64 * 1024 * 1024 });

async function versionIn(layout: string, tag: string, pkg: string): Promise<string> {
  const root = join(work, `root-${Math.random().toString(36).slice(2)}`);
  await run("umoci", ["raw", "unpack", "--image", `${layout}:${tag}`, root]);
  return (await run("chroot", [root, "dpkg-query", "-W", "-f", "$" + "{Version}", pkg])).stdout;
}

test("--archive writes a docker-archive that skopeo reads, with the fixed version inside", async () => {
  const lab = await labImage("bookwormNginx");
  const file = join(work, "patched.tar");
  await cli([
    "patch",
    "-i",
    lab.reference,
    "-r",
    report,
    "-t",
    "lab/nginx:fixed",
    "--archive",
    file,
    "--cache-dir",
    join(work, "cache"),
  ]);
  await run("skopeo", ["inspect", `docker-archive:${file}`]);
  await run("skopeo", ["copy", `docker-archive:${file}`, `oci:${join(work, "from-archive")}:x`]);
  assert.equal(await versionIn(join(work, "from-archive"), "x", fix.name), fix.fixed);
});

test("with no output flag the image is loaded into the daemon and runs there; no daemon is a clear error", async () => {
  const lab = await labImage("bookwormNginx");
  await cli(["copy", lab.reference, "docker-daemon:lab/nginx:src"], { DOCKER_HOST: dockerd.host });
  await cli(
    ["patch", "-i", "docker-daemon:lab/nginx:src", "-r", report, "--cache-dir", join(work, "cache")],
    {
      DOCKER_HOST: dockerd.host,
    },
  );
  const { stdout } = await run(
    "docker",
    [
      "run",
      "--rm",
      "--network",
      "none",
      "lab/nginx:src-patched",
      "dpkg-query",
      "-W",
      "-f",
      "$" + "{Version}",
      fix.name,
    ],
    { env: { ...process.env, ...dockerd.env } },
  );
  assert.equal(stdout, fix.fixed);

  await assert.rejects(
    cli(["patch", "-i", lab.reference, "-r", report, "-t", "lab/x:y", "--cache-dir", join(work, "cache")], {
      DOCKER_HOST: "unix:///nonexistent/docker.sock",
    }),
    oneLineError(/--push|--oci-dir|--archive/),
  );
});

test("update-all (no report) on an apt image brings every package to bookworm-security's version", async () => {
  const lab = await labImage("bookwormMinbase");
  const out = join(work, "all");
  const { stdout } = await cli([
    "patch",
    "-i",
    lab.reference,
    "-t",
    "all",
    "--oci-dir",
    out,
    "--cache-dir",
    join(work, "cache"),
  ]);
  const pending = await pendingSecurityFixes("bookwormMinbase");
  assert.ok(pending.length > 0);
  for (const f of pending) {
    assert.match(stdout, new RegExp(`updated ${f.name.replaceAll("+", "\\+")} `));
    assert.equal(await versionIn(out, "all", f.name), f.fixed, f.name);
  }
});

/** The nginx lab image plus one layer marking the reported package held (as `apt-mark hold` does). */
async function heldImage(): Promise<string> {
  const lab = await labImage("bookwormNginx");
  const dir = join(work, "held");
  if (existsSync(dir)) return `oci:${dir}:latest`;
  const blob = (d: string) => join(lab.layoutDir, "blobs/sha256", d.slice(7));
  const index = JSON.parse(await readFile(join(lab.layoutDir, "index.json"), "utf8"));
  const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), "utf8"));
  const config = JSON.parse(await readFile(blob(manifest.config.digest), "utf8"));
  const status = lab.packages.has(fix.name)
    ? (
        await run(
          "bash",
          [
            "-c",
            `umoci raw unpack --image ${lab.layoutDir}:latest ${join(work, "held-src")} >/dev/null && cat ${join(work, "held-src/var/lib/dpkg/status")}`,
          ],
          { maxBuffer: 64 << 20 },
        )
      ).stdout
    : "";
  const edited = status.replace(
    new RegExp(`(Package: ${escapeRegExp(fix.name)}\nStatus: )install ok installed`),
    "$1hold ok installed",
  );
  assert.notEqual(edited, status, `${fix.name} marked held`);
  const stage = join(work, "held-layer");
  await mkdir(join(stage, "var/lib/dpkg"), { recursive: true });
  await writeFile(join(stage, "var/lib/dpkg/status"), edited);
  await run("tar", [
    "--numeric-owner",
    "--owner=0",
    "--group=0",
    "-C",
    stage,
    "-cf",
    join(work, "held.tar"),
    "var",
  ]);
  const raw = await readFile(join(work, "held.tar"));
  const gz = gzipSync(raw);
  const layout = await layoutWriter(dir);
  const put = (bytes: Buffer) => layout.put(bytes);
  for (const l of manifest.layers as { digest: string }[]) await layout.reuse(lab.layoutDir, l.digest);
  const layer = await put(gz);
  config.rootfs.diff_ids.push(`sha256:${createHash("sha256").update(raw).digest("hex")}`);
  config.history.push({ created: config.created, created_by: `apt-mark hold ${fix.name}` });
  const cfg = await put(Buffer.from(JSON.stringify(config)));
  manifest.config = { ...manifest.config, ...cfg };
  manifest.layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer });
  const m = await put(Buffer.from(JSON.stringify(manifest)));
  await layout.tag(index.manifests[0].mediaType, m);
  return `oci:${dir}:latest`;
}

for (const engine of ["native", "sandbox"]) {
  test(`a held package is left alone (${engine} engine): an error naming apt-mark unhold, or with --ignore-errors no VEX claim`, async () => {
    const image = await heldImage();
    const out = join(work, `held-out-${engine}`);
    const args = [
      "patch",
      "-i",
      image,
      "-r",
      report,
      "-t",
      "h",
      "--oci-dir",
      out,
      "--engine",
      engine,
      "--cache-dir",
      join(work, "cache"),
      // The held image is the lab image plus a layer: the lab image's report names the lab image.
      "--ignore-report-image",
    ];
    await assert.rejects(cli(args), (e: { code: number; stderr: string }) => {
      assert.notEqual(e.code, 0);
      assert.match(e.stderr, new RegExp(`^error: .*held.*apt-mark unhold ${escapeRegExp(fix.name)}`, "m"));
      return true;
    });
    assert.equal(existsSync(out), false);
    const { stdout } = await cli([...args, "--ignore-errors", "-o", join(work, `held-${engine}.vex.json`)]);
    assert.match(stdout, new RegExp(`failed\\s+${escapeRegExp(fix.name)}: held`));
    assert.equal(
      existsSync(join(work, `held-${engine}.vex.json`)),
      false,
      "nothing fixed, so nothing claimed",
    );
  });
}

/** `text` matched literally inside a RegExp (package names hold `+` and `.`). */
function escapeRegExp(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");
}

/** Mounts and patch work dirs left behind under `dir`. */
async function leftovers(dir: string): Promise<string[]> {
  const mounts = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => l.includes(dir));
  const temps = existsSync(dir) ? (await readdir(dir)).filter((n) => n.startsWith("patch-")) : [];
  return [...mounts, ...temps];
}

test("--timeout and Ctrl-C stop the run, exit 124 / 130, and leave no mount, temp dir or target", async () => {
  const lab = await labImage("bookwormNginx");
  const cache = join(work, "cache-stop");
  const out = join(work, "stopped");
  const args = (cacheDir: string) => [
    "patch",
    "-i",
    lab.reference,
    "-r",
    report,
    "-t",
    "s",
    "--oci-dir",
    out,
    "--cache-dir",
    cacheDir,
    "--engine",
    "sandbox",
  ];
  // On a cold cache of its own (layers to extract, apt's lists to fetch) the run takes far longer
  // than the deadline, wherever on the way the deadline falls.
  const timeoutCache = join(work, "cache-timeout");
  await assert.rejects(
    cli([...args(timeoutCache), "--timeout", "3s"]),
    (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 124, e.stderr);
      assert.match(e.stderr, /^error: .*--timeout 3s/m);
      return true;
    },
  );
  assert.deepEqual(await leftovers(timeoutCache), []);
  assert.equal(existsSync(out), false);

  // Ctrl-C at each kind of moment, chosen by the progress event that says it has begun (a fixed
  // delay lands wherever the machine's speed puts it). The first run starts on a cold cache; each
  // leaves it warmer, so the next gets further: layers extracted before apt runs, apt before the layer.
  const moments: [string, (e: ProgressEvent) => boolean][] = [
    ["while a layer is extracted", (e) => e.type === "step" && e.step === "extract-layer"],
    // The worst moment: apt is running in the container (it has printed its first line).
    ["while apt runs in the container", (e) => e.type === "command-output"],
    ["while the patch layer is built", (e) => e.type === "step" && e.step === "layer"],
  ];
  for (const [moment, isMoment] of moments) {
    const { status, stderr } = await interruptAt(suture, [...args(cache), "--progress", "json"], isMoment);
    assert.equal(status, 130, `interrupted ${moment}: ${stderr}`);
    assert.deepEqual(await leftovers(cache), [], `interrupted ${moment}`);
    assert.equal(existsSync(out), false, `interrupted ${moment}: no target`);
  }
});

/**
 * Runs the CLI with `--progress json`, sends SIGINT when the first event matching `isMoment` is
 * printed, and once more, as impatient users do, as soon as the first one has been taken (the
 * second must not cut the cleanup short). Returns the exit status a shell would report and stderr.
 */
async function interruptAt(
  command: string,
  args: string[],
  isMoment: (e: ProgressEvent) => boolean,
): Promise<{ status: number; stderr: string }> {
  const child = spawn(command, args, { env: { ...process.env, CI: "true" } });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  let stderr = "";
  let pending = "";
  let reached!: () => void;
  const moment = new Promise<void>((resolve) => {
    reached = resolve;
  });
  child.stdout.resume();
  child.stderr.on("data", (d: Buffer) => {
    stderr += d;
    pending += d;
    let nl = pending.indexOf("\n");
    while (nl !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      nl = pending.indexOf("\n");
      if (line.startsWith("{") && isMoment(JSON.parse(line) as ProgressEvent)) reached();
    }
  });
  const first = await Promise.race([moment.then(() => "reached" as const), exited]);
  assert.equal(first, "reached", `the run ended before the moment to interrupt it: ${stderr}`);
  child.kill("SIGINT");
  // Two signals sent back to back merge into one; wait until the first has been taken.
  while (child.exitCode === null && child.signalCode === null && (await signalPending(child.pid!, "SIGINT")))
    await new Promise((r) => setTimeout(r, 2));
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT");
  const { code, signal } = await exited;
  // A shell reports death by signal N as 128+N; suture's own exit for an interrupt is 130 too.
  const status = code ?? 128 + (signal ? constants.signals[signal] : 0);
  if (code !== null) {
    const errors = stderr.split("\n").filter((l) => l.startsWith("error:"));
    assert.deepEqual(errors, ["error: interrupted [CANCELLED]"], stderr);
  }
  return { status, stderr };
}

/** Whether `signal` was sent to process `pid` and none of its threads has taken it yet. */
async function signalPending(pid: number, signal: NodeJS.Signals): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const bit = 1n << BigInt(constants.signals[signal] - 1);
  return [...status.matchAll(/^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$/gm)].some(
    (m) => (BigInt(`0x${m[1]}`) & bit) !== 0n,
  );
}
