/**
 * `suture serve` without root (issue 16 mode 2 for the service): an unprivileged user starts the
 * service, which re-runs itself as root of a user namespace, and a tag it watches becomes a
 * patched tag with the image's real owners, as under root.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { JobRecord } from "../../src/serve/queue.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { SUTURE } from "../lab/cli.ts";
import { distrolessLabImage } from "../lab/distroless.ts";
import { ensureRootlessUser, ROOTLESS_USER } from "../lab/podman.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import { type ServeProcess, startServe, waitFor } from "../lab/serve.ts";

const { after, before, test } = await requiring("root", "loopback", "tool:runuser", "tool:unshare");

before(useArchiveMirror);

const run = promisify(execFile);
let work: string;
let userHome: string;
let user: { name: string; uid: number; gid: number };
let registry: LabRegistry;
let service: ServeProcess | undefined;

before(async () => {
  await ensureRootlessUser();
  work = await mkdtemp(join(tmpdir(), "suture-serve-rootless-"));
  await chmod(work, 0o755);
  userHome = join(work, "home");
  await mkdir(userHome);
  const uid = Number((await run("id", ["-u", ROOTLESS_USER])).stdout.trim());
  const gid = Number((await run("id", ["-g", ROOTLESS_USER])).stdout.trim());
  user = { name: ROOTLESS_USER, uid, gid };
  await chown(userHome, uid, gid);
  registry = await startRegistry();
});

after(async () => {
  await service?.stop();
  await registry?.stop();
  // The user's cache holds files of its subordinate ids: removed as the user, in its namespace.
  await run("runuser", [
    "-u",
    ROOTLESS_USER,
    "--",
    "unshare",
    "--map-auto",
    "--map-root-user",
    "rm",
    "-rf",
    userHome,
  ]).catch(() => {});
  await rm(work, { recursive: true, force: true });
});

test("an unprivileged user's suture serve patches a watched tag in a user namespace; SIGTERM leaves nothing running", async () => {
  const lab = await distrolessLabImage();
  await run(SUTURE, ["copy", lab.reference, `docker://${registry.host}/lab/app:1.0`], {
    env: { ...process.env, CI: "true" },
  });
  // No scanner: the rule patches everything the image's repositories fix (update-all).
  service = await startServe({
    work: userHome,
    asUser: user,
    rules: `apiVersion: suture.dev/v1alpha1
kind: ServeRules
rules:
  - id: app
    image: ${registry.host}/lab/app
    tags: { strategy: list, list: ["1.0"] }
    target: { tag: "{{ .SourceTag }}-patched" }
    interval: 5s
`,
  });
  const running = service;
  const done = await waitFor(
    "a finished job",
    600_000,
    async () => {
      const res = await fetch(`${running.url}/api/v1/jobs`, {
        headers: { authorization: `Bearer ${running.token}` },
      });
      const jobs = (await res.json()) as JobRecord[];
      return jobs.find((j) => j.state === "succeeded" || j.state === "failed");
    },
    running.log,
  );
  assert.equal(done.state, "succeeded", `${JSON.stringify(done.error)}\n${running.log()}`);
  assert.equal(done.result?.status, "patched");

  // The patched tag is there with one layer more than the source (its owners: cli-patch-rootless).
  const inspect = await run(
    SUTURE,
    ["inspect", `docker://${registry.host}/lab/app:1.0-patched`, "--format", "json"],
    {
      env: { ...process.env, CI: "true" },
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  const source = await run(SUTURE, ["inspect", `docker://${registry.host}/lab/app:1.0`, "--format", "json"], {
    env: { ...process.env, CI: "true" },
    maxBuffer: 16 * 1024 * 1024,
  });
  const layers = (out: string) =>
    (JSON.parse(out) as { images: { layers: unknown[] }[] }).images[0]!.layers.length;
  assert.equal(layers(inspect.stdout), layers(source.stdout) + 1);

  await running.stop();
  const left = await run("pgrep", ["-u", ROOTLESS_USER, "-f", "suture"]).catch(() => ({ stdout: "" }));
  assert.equal(left.stdout.trim(), "", `processes of the service left running:\n${left.stdout}`);
});
