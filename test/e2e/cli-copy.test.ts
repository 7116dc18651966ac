import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type LabDockerd, startDockerd } from "../lab/dockerd.ts";
import { labImage } from "../lab/images.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "dockerd",
  "tool:docker-registry",
  "tool:mmdebstrap",
  "tool:skopeo",
);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");

let registry: LabRegistry;
let dockerd: LabDockerd;
let work: string;

before(async () => {
  [registry, dockerd] = await Promise.all([startRegistry({ auth: "htpasswd" }), startDockerd()]);
  work = await mkdtemp(join(tmpdir(), "suture-e2e-"));
});
after(async () => {
  await Promise.all([registry?.stop(), dockerd?.stop(), work && rm(work, { recursive: true, force: true })]);
});

function cli(args: string[]) {
  return run(suture, args, {
    env: { ...process.env, DOCKER_HOST: dockerd.host, DOCKER_CONFIG: registry.dockerConfigDir, CI: "true" },
    maxBuffer: 64 * 1024 * 1024,
  });
}

async function inspectJson(ref: string) {
  const { stdout } = await cli(["inspect", "--format", "json", ref]);
  return JSON.parse(stdout);
}

test("daemon → registry → OCI layout → docker-archive → daemon keeps diffIDs and config", async () => {
  const lab = await labImage("bookwormNginx");
  const original = await inspectJson(lab.reference);
  assert.equal(original.images[0].os.id, "debian");
  assert.equal(original.images[0].packageDb, "dpkg");
  assert.equal(original.images[0].packageManager, "apt");
  assert.equal(original.images[0].packageCount, lab.packages.size);

  const reg = `docker://${registry.host}/lab/nginx:1`;
  await cli(["copy", lab.reference, "docker-daemon:lab/nginx:1"]);
  await cli(["copy", "docker-daemon:lab/nginx:1", reg]);
  await cli(["copy", reg, `oci:${work}/layout:v1`]);
  await cli(["copy", `oci:${work}/layout:v1`, `docker-archive:${work}/img.tar:lab/nginx:2`]);
  await cli(["copy", `docker-archive:${work}/img.tar`, "docker-daemon:lab/nginx:2"]);

  const diffIds = (r: { images: { layers: { diffID: string }[] }[] }) =>
    r.images[0]!.layers.map((l) => l.diffID);
  for (const ref of [
    reg,
    `oci:${work}/layout:v1`,
    `docker-archive:${work}/img.tar`,
    "docker-daemon:lab/nginx:2",
  ]) {
    const r = await inspectJson(ref);
    assert.deepEqual(diffIds(r), diffIds(original), ref);
    assert.deepEqual(r.images[0].config, original.images[0].config, ref);
    assert.equal(r.images[0].packageCount, lab.packages.size, ref);
  }
  // skopeo independently reads what we pushed and wrote.
  const sk = await run("skopeo", [
    "inspect",
    "--tls-verify=false",
    "--creds",
    `${registry.username}:${registry.password}`,
    reg,
  ]);
  assert.equal(JSON.parse(sk.stdout).Layers.length, 3);
  await run("skopeo", ["inspect", `oci:${work}/layout:v1`]);
});

test("bad input: clear one-line errors, non-zero exit, nothing written", async () => {
  const out = join(work, "never");
  const cases: [string[], RegExp][] = [
    [["inspect", "Not/A:Valid:Ref"], /invalid image reference/],
    [["copy", `docker://${registry.host}/missing/image:1`, `oci:${out}:x`], /not found|NOT_FOUND/i],
    [["copy", "docker://127.0.0.1:9/x:1", `oci:${out}:x`], /NETWORK/],
    [["inspect", "docker-daemon:does/not-exist:1"], /not found in the Docker daemon at /],
  ];
  for (const [args, pattern] of cases) {
    await assert.rejects(cli(args), (e: { code: number; stderr: string }) => {
      assert.notEqual(e.code, 0);
      assert.match(e.stderr, pattern);
      assert.equal(
        e.stderr
          .trim()
          .split("\n")
          .filter((l) => l.startsWith("error:")).length,
        1,
      );
      return true;
    });
  }
  await assert.rejects(stat(out));
  // Wrong credentials.
  await assert.rejects(
    run(suture, ["inspect", `docker://${registry.host}/lab/nginx:1`], {
      env: { ...process.env, DOCKER_CONFIG: work },
    }),
    (e: { stderr: string }) => /authenticat/i.test(e.stderr),
  );
});
