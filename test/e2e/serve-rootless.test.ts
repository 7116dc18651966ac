/**
 * `suture serve` without root (issue 16 mode 2 for the service): an unprivileged user starts the
 * service, which re-runs itself as root of a user namespace, and a tag it watches becomes a
 * patched tag with the image's real owners, as under root.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { JobRecord } from "../../src/serve/queue.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { SUTURE } from "../lab/cli.ts";
import { distrolessLabImage } from "../lab/distroless.ts";
import { requiring } from "../lab/requirements.ts";
import { type ServeProcess, startServe, waitFor } from "../lab/serve.ts";
import { startUnprivilegedLab, type UnprivilegedLab } from "../lab/unprivileged.ts";

const { after, before, test } = await requiring("root", "loopback", "tool:runuser", "tool:unshare");

before(useArchiveMirror);

const run = promisify(execFile);
let ulab: UnprivilegedLab;
let service: ServeProcess | undefined;

before(async () => {
  ulab = await startUnprivilegedLab({ prefix: "suture-serve-rootless-" });
});

after(async () => {
  await service?.stop();
  await ulab?.close();
});

test("an unprivileged user's suture serve patches a watched tag in a user namespace; SIGTERM leaves nothing running", async () => {
  const lab = await distrolessLabImage();
  await run(SUTURE, ["copy", lab.reference, `docker://${ulab.registry.host}/lab/app:1.0`], {
    env: { ...process.env, CI: "true" },
  });
  // No scanner: the rule patches everything the image's repositories fix (update-all).
  service = await startServe({
    work: ulab.userHome,
    asUser: ulab.user,
    rules: `apiVersion: suture.dev/v1alpha1
kind: ServeRules
rules:
  - id: app
    image: ${ulab.registry.host}/lab/app
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
    ["inspect", `docker://${ulab.registry.host}/lab/app:1.0-patched`, "--format", "json"],
    {
      env: { ...process.env, CI: "true" },
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  const source = await run(
    SUTURE,
    ["inspect", `docker://${ulab.registry.host}/lab/app:1.0`, "--format", "json"],
    {
      env: { ...process.env, CI: "true" },
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  const layers = (out: string) =>
    (JSON.parse(out) as { images: { layers: unknown[] }[] }).images[0]!.layers.length;
  assert.equal(layers(inspect.stdout), layers(source.stdout) + 1);

  await running.stop();
  // The lab's user is shared with test files running at the same time: the service's processes are
  // the ones naming its home (its cache, rules and work dirs are there).
  const left = await run("pgrep", ["-a", "-u", ulab.user.name, "-f", ulab.userHome]).catch(() => ({
    stdout: "",
  }));
  assert.equal(left.stdout.trim(), "", `processes of the service left running:\n${left.stdout}`);
});
