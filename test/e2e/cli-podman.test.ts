/**
 * Podman as the local engine (issue 16): a real `podman system service` (Debian's podman), rootful
 * and rootless (an unprivileged user with its own subordinate ids). suture reads the image from
 * Podman's Docker-compatible API, patches it, and loads the result back as the default output;
 * Podman itself then runs the patched image and its dpkg is the judge.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { SUTURE } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { type LabPodman, startPodman } from "../lab/podman.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "tool:podman",
  "tool:newuidmap",
  "tool:mmdebstrap",
);

before(useArchiveMirror);

const run = promisify(execFile);
let work: string;
let report: string;
let fixed: string;
let source: string;
const services: LabPodman[] = [];

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-podman-e2e-"));
  source = (await labImage("bookwormMinbase")).reference;
  const made = await trivyReportFor("bookwormMinbase", {
    only: ["liblzma5"],
    outFile: join(work, "report.json"),
  });
  assert.equal(made.fixes.length, 1, "liblzma5 has a pending bookworm-security fix");
  report = made.path;
  fixed = made.fixes[0]!.fixed;
});
after(async () => {
  await Promise.all(services.map((s) => s.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

function suture(args: string[], env: NodeJS.ProcessEnv) {
  // Neither variable leaks in from the machine: each test names the engine it means.
  const { DOCKER_HOST: _d, CONTAINER_HOST: _c, ...rest } = process.env;
  return run(SUTURE, args, { env: { ...rest, CI: "true", ...env }, maxBuffer: 64 * 1024 * 1024 });
}

async function dpkgInImage(podman: LabPodman, image: string, args: string[]): Promise<string> {
  const { stdout } = await podman.podman(["run", "--rm", "--network=none", image, "dpkg", ...args]);
  return stdout;
}

for (const mode of ["rootful", "rootless"] as const) {
  // Rootful through `docker-daemon:` with DOCKER_HOST at Podman's socket (what a Docker-only
  // script does on a Podman host); rootless through the `podman:` alias and CONTAINER_HOST.
  const transport = mode === "rootful" ? "docker-daemon" : "podman";
  test(`${mode} Podman: ${transport}: in, patched, loaded back as the default output, and run by Podman`, async () => {
    const podman = await startPodman({ rootless: mode === "rootless" });
    services.push(podman);
    const env = mode === "rootful" ? { DOCKER_HOST: podman.host } : { CONTAINER_HOST: podman.host };
    await suture(["copy", source, `${transport}:lab/minbase:1`], env);

    const { stderr } = await suture(["patch", "-i", `${transport}:lab/minbase:1`, "-r", report], env);
    assert.match(stderr, /into the Podman service|into the Docker daemon/);

    const image = "localhost/lab/minbase:1-patched";
    assert.equal(
      await dpkgInImage(podman, image, ["-s", "liblzma5"]).then((s) => /^Version: (.*)$/m.exec(s)?.[1]),
      fixed,
    );
    assert.equal(
      await dpkgInImage(podman, image, ["--audit"]),
      "",
      "dpkg --audit finds nothing to complain about",
    );
    // The source tag is untouched.
    assert.notEqual(
      await dpkgInImage(podman, "localhost/lab/minbase:1", ["-s", "liblzma5"]).then(
        (s) => /^Version: (.*)$/m.exec(s)?.[1],
      ),
      fixed,
    );
  });
}

test("podman: with no service listening: one line naming Podman and how to start it, nothing written", async () => {
  const absent = join(work, "absent.sock");
  await assert.rejects(
    suture(["inspect", "podman:lab/minbase:1"], { CONTAINER_HOST: `unix://${absent}` }),
    (e: { code: number; stderr: string }) => {
      const lines = e.stderr.trim().split("\n");
      assert.equal(lines.length, 1, e.stderr);
      assert.match(
        lines[0]!,
        /cannot reach the Podman service at unix:\/\/\S+absent\.sock .*podman system service/,
      );
      return e.code !== 0;
    },
  );
});
