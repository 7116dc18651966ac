import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startArchiveMirror, useArchiveMirror } from "../lab/archive-mirror.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "loopback", "tool:mmdebstrap", "tool:umoci");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-patch-e2e-"));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

function cli(args: string[]) {
  return run(suture, [...args, "--progress", "plain", "--cache-dir", join(work, "cache")], {
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, CI: "true" },
  });
}

async function inspectJson(ref: string) {
  const { stdout } = await run(suture, ["inspect", "--format", "json", ref], { maxBuffer: 64 * 1024 * 1024 });
  return JSON.parse(stdout).images[0];
}

/** The verified .debs in the patch cache with their inode and mtime (a re-download would change both). */
async function cachedDebs() {
  const dir = join(work, "cache", "apt-native", "debs");
  const out: { name: string; ino: number; mtimeMs: number }[] = [];
  for (const name of (await readdir(dir)).filter((n) => n.endsWith(".deb")).sort()) {
    const st = await stat(join(dir, name));
    out.push({ name, ino: st.ino, mtimeMs: st.mtimeMs });
  }
  return out;
}

async function unpack(layout: string, tag: string, dir: string) {
  await run("umoci", ["raw", "unpack", "--image", `${layout}:${tag}`, dir]);
  return dir;
}

test("patch a real old bookworm image from a Trivy report of its pending security fixes", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report, fixes } = await trivyReportFor("bookwormNginx", {
    only: ["libssl3", "openssl", "libexpat1"],
    outFile: join(work, "report.json"),
  });
  assert.ok(fixes.length >= 1, "the lab image has pending fixes");
  const srcIndex = await readFile(join(lab.layoutDir, "index.json"));
  const out = join(work, "out");

  const { stdout } = await cli([
    "patch",
    "-i",
    lab.reference,
    "-r",
    report,
    "-t",
    "fixed",
    "--oci-dir",
    out,
    "-o",
    join(work, "vex.json"),
  ]);
  assert.match(stdout, /patched oci:.*:fixed sha256:/);

  const before = await inspectJson(lab.reference);
  const patched = await inspectJson(`oci:${out}:fixed`);
  assert.equal(patched.layers.length, before.layers.length + 1, "exactly one new layer");
  assert.deepEqual(
    patched.layers.slice(0, -1).map((l: { diffID: string }) => l.diffID),
    before.layers.map((l: { diffID: string }) => l.diffID),
  );
  assert.ok(patched.config.labels.BaseImage);
  // The source is never modified.
  assert.deepEqual(await readFile(join(lab.layoutDir, "index.json")), srcIndex);

  // Run the patched image's files: versions, conffile edit kept, symlink kept, patched binary runs.
  const root = await unpack(out, "fixed", join(work, "rootfs"));
  const { stdout: status } = await run("chroot", [
    root,
    "dpkg-query",
    "-W",
    "-f",
    "${Package} ${Version}\\n",
    ...fixes.map((f) => f.name),
  ]);
  for (const f of fixes)
    assert.ok(status.includes(`${f.name} ${f.fixed}`), `${f.name} at ${f.fixed}: ${status}`);
  assert.match(
    await readFile(join(root, "etc/ssl/openssl.cnf"), "utf8"),
    /suture-lab: local edit to a conffile/,
  );
  assert.equal(await readlink(join(root, "usr/local/bin/ssl")), "/usr/bin/openssl");
  const { stdout: version } = await run("chroot", [root, "/usr/bin/openssl", "version"]);
  assert.match(version, /OpenSSL 3\.0\.\d+/);
  assert.equal((await stat(join(root, "srv/app/data.txt"))).uid, 1000);

  if (existsSync(schema)) {
    const vex = JSON.parse(await readFile(join(work, "vex.json"), "utf8"));
    assert.ok(vex.statements.length >= 1);
    const v = validateOpenVex(vex, schema);
    assert.ok(v.valid, v.errors.join("; "));
  }

  // apt's downloads stay in the cache (outside the image) for the next run.
  const debs = await cachedDebs();
  for (const f of fixes)
    assert.ok(
      debs.some((d) => d.name === `${f.sha256}.deb`),
      `${f.name} cached`,
    );

  // Re-patching the patched image (for one more fix) starts from the original layers, says so, and
  // still has one patch layer with every fix.
  const { path: more } = await trivyReportFor("bookwormNginx", {
    only: ["libssl3", "openssl", "libexpat1", "libzstd1"],
    outFile: join(work, "report-more.json"),
  });
  const repatch = await cli(["patch", "-i", `oci:${out}:fixed`, "-r", more, "-t", "again", "--oci-dir", out]);
  assert.match(
    repatch.stdout,
    /replaced the previous suture patch layer: versions below are relative to the original/,
  );
  assert.match(repatch.stdout, /updated libssl3 \S+ → /, "old → new relative to the original image");
  const again = await inspectJson(`oci:${out}:again`);
  assert.equal(again.layers.length, before.layers.length + 1);
  // ... and downloads the earlier packages not again: their cached .debs are the same files.
  const cachedAgain = await cachedDebs();
  for (const d of debs)
    assert.ok(cachedAgain.some((c) => c.name === d.name && c.ino === d.ino && c.mtimeMs === d.mtimeMs));
});

test("dry-run prints the plan and writes nothing; bad report fails in one line", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report } = await trivyReportFor("bookwormNginx", {
    only: ["libssl3"],
    outFile: join(work, "r2.json"),
  });
  const out = join(work, "dry");
  const cache = join(work, "dry-cache");
  const { stdout } = await cli([
    "patch",
    "-i",
    lab.reference,
    "-r",
    report,
    "-t",
    "x",
    "--oci-dir",
    out,
    "--cache-dir",
    cache,
    "--dry-run",
  ]);
  assert.match(stdout, /libssl3/);
  await assert.rejects(stat(out));
  // With a report, the plan needs only the package database, read as the layers stream by: no
  // layer is extracted into the cache.
  await assert.rejects(stat(join(cache, "layers")));
  await assert.rejects(
    cli(["patch", "-i", lab.reference, "-r", "/nonexistent.json", "-t", "x", "--oci-dir", out]),
    (e: { code: number; stderr: string }) => {
      assert.notEqual(e.code, 0);
      assert.equal(e.stderr.split("\n").filter((l) => l.startsWith("error:")).length, 1);
      return true;
    },
  );
  await assert.rejects(stat(out));
});

for (const engine of ["native", "sandbox"]) {
  test(`--mirror (${engine} engine) fetches through the mirror; a mirror serving a tampered .deb fails and writes nothing`, async () => {
    const lab = await labImage("bookwormNginx");
    const { path: report, fixes } = await trivyReportFor("bookwormNginx", {
      only: ["libexpat1"],
      outFile: join(work, `r-mirror-${engine}.json`),
    });
    assert.equal(fixes.length, 1);
    const mirror = await startArchiveMirror();
    const bad = await startArchiveMirror({
      alter: (path, body) => {
        if (!path.endsWith(".deb")) return undefined;
        const copy = Buffer.from(body);
        copy[copy.length - 100]! ^= 0xff;
        return copy;
      },
    });
    const patch = (m: { url: string }, tag: string, out: string) =>
      run(
        suture,
        [
          "patch",
          "-i",
          lab.reference,
          "-r",
          report,
          "-t",
          tag,
          "--oci-dir",
          out,
          "--engine",
          engine,
          "--mirror",
          `http://deb.debian.org/debian=${m.url}/debian`,
          "--mirror",
          `http://deb.debian.org/debian-security=${m.url}/debian-security`,
          // A fresh cache: the .deb must come through this mirror, not from an earlier download.
          "--cache-dir",
          join(work, `cache-${tag}-${engine}`),
        ],
        { env: { ...process.env, CI: "true" } },
      );
    try {
      const out = join(work, `mirrored-${engine}`);
      await patch(mirror, "m", out);
      assert.ok(mirror.requests.some((r) => r.path.startsWith("/debian-security/dists/bookworm-security/")));
      assert.ok(
        mirror.requests.some((r) => /\/libexpat1_.*\.deb$/.test(r.path)),
        mirror.requests.map((r) => r.path).join("\n"),
      );
      // The image keeps its own sources: the mirror was only used for this run.
      const root = await unpack(out, "m", join(work, `rootfs-m-${engine}`));
      assert.doesNotMatch(
        await readFile(join(root, "etc/apt/sources.list.d/debian.sources"), "utf8"),
        /127\.0\.0\.1/,
      );

      const badOut = join(work, `tampered-${engine}`);
      await assert.rejects(patch(bad, "t", badOut), (e: { code: number; stderr: string }) => {
        assert.notEqual(e.code, 0);
        const errors = e.stderr.split("\n").filter((l) => l.startsWith("error:"));
        assert.equal(errors.length, 1, e.stderr);
        assert.match(errors[0]!, /does not match (its signed index|the signed metadata)/);
        assert.match(errors[0]!, /\[UNTRUSTED\]$/);
        return true;
      });
      assert.equal(existsSync(badOut), false, "nothing written");
    } finally {
      await Promise.all([mirror.stop(), bad.stop()]);
    }
  });
}

test("a second patch of the same image with the same packages reuses the layer; a damaged cache entry is rebuilt", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report } = await trivyReportFor("bookwormNginx", {
    only: ["libexpat1"],
    outFile: join(work, "r-reuse.json"),
  });
  const cache = join(work, "cache-reuse");
  const patch = (tag: string) =>
    run(
      suture,
      [
        "patch",
        "-i",
        lab.reference,
        "-r",
        report,
        "-t",
        tag,
        "--oci-dir",
        join(work, "reuse"),
        "--cache-dir",
        cache,
        "--progress",
        "plain",
      ],
      {
        env: { ...process.env, CI: "true" },
      },
    );
  const lastLayer = async (tag: string) =>
    (await inspectJson(`oci:${join(work, "reuse")}:${tag}`)).layers.at(-1).digest;
  const first = await patch("one");
  assert.doesNotMatch(first.stderr, /reusing/);
  const second = await patch("two");
  assert.match(second.stderr, /reusing the patch layer/);
  assert.equal(await lastLayer("two"), await lastLayer("one"));

  // Damage the cached layer: it is not trusted, the patch is done again, and the result is the same.
  const [entry] = await readdir(join(cache, "results"));
  await writeFile(join(cache, "results", entry!, "layer"), "damaged");
  const third = await patch("three");
  assert.doesNotMatch(third.stderr, /reusing/);
  // Rebuilt (maintainer scripts stamp files with the time they ran, so the bytes may differ) and
  // cached again in place of the damaged entry.
  const meta = JSON.parse(await readFile(join(cache, "results", entry!, "meta.json"), "utf8"));
  assert.equal(meta.layer.digest, await lastLayer("three"));
});
