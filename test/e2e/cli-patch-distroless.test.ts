/**
 * Distroless images (no shell, no apt, no dpkg; status.d database): patched by the native engine
 * from the release's official suites, verified with the host's Debian archive keyring.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { generateKey } from "openpgp";
import { installedFromStatus } from "../../src/distro/dpkg/database.ts";
import { compareDebVersions } from "../../src/distro/dpkg/version.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { oneLineError } from "../lab/cli.ts";
import {
  DISTROLESS_LIBSSL_CVE,
  type DistrolessLab,
  distrolessLabImage,
  distrolessLibsslReport,
} from "../lab/distroless.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "tool:umoci");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
let work: string;
let lab: DistrolessLab;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-distroless-"));
  lab = await distrolessLabImage();
});
after(() => rm(work, { recursive: true, force: true }));

const cli = (args: string[]) =>
  run(suture, [...args, "--cache-dir", join(work, "cache")], {
    env: { ...process.env, CI: "true" },
    maxBuffer: 64 * 1024 * 1024,
  });

async function unpack(layout: string, tag: string): Promise<string> {
  const root = join(work, `root-${tag}`);
  await run("umoci", ["raw", "unpack", "--image", `${layout}:${tag}`, root]);
  return root;
}

async function statusD(root: string): Promise<Map<string, string>> {
  const dir = join(root, "var/lib/dpkg/status.d");
  const stanzas: string[] = [];
  for (const name of await readdir(dir))
    if (!name.endsWith(".md5sums")) stanzas.push(await readFile(join(dir, name), "utf8"));
  return new Map(installedFromStatus(stanzas.join("\n")).map((p) => [p.name, p.version]));
}

test("update-all patches a distroless image natively: status.d updated, CA bundle rebuilt, nothing added", async () => {
  const out = join(work, "out");
  const { stdout, stderr } = await cli([
    "patch",
    "-i",
    lab.reference,
    "-t",
    "fixed",
    "--oci-dir",
    out,
    "--progress",
    "plain",
  ]);
  assert.match(stdout, /updated libssl3 3\.0\.20-1~deb12u2 → /);
  assert.match(stdout, /updated tzdata /);
  assert.match(stderr, /left out, as before/, "dependencies the image never had are not added");
  assert.match(stderr, /no shell, so maintainer scripts did not run/);

  const before = await unpack(lab.layoutDir, "latest");
  const root = await unpack(out, "fixed");
  const versions = await statusD(root);
  assert.deepEqual(
    [...versions.keys()].sort(),
    [...lab.packages.keys()].sort(),
    "no package added or removed",
  );
  for (const name of ["libssl3", "tzdata", "ca-certificates"]) {
    assert.equal(compareDebVersions(versions.get(name)!, lab.packages.get(name)!), 1, `${name} upgraded`);
    // Each package's md5sums match the files now in the image.
    const sums = await readFile(join(root, "var/lib/dpkg/status.d", `${name}.md5sums`), "utf8");
    const first = sums.split("\n").find((l) => l.includes("usr/"))!;
    const [md5, path] = first.split(/\s+/);
    assert.equal(
      createHash("md5")
        .update(await readFile(join(root, path!)))
        .digest("hex"),
      md5,
    );
  }
  for (const absent of [
    "bin/sh",
    "usr/bin/dpkg",
    "usr/bin/apt-get",
    "var/lib/dpkg/status",
    "usr/bin/openssl",
  ])
    assert.equal(existsSync(join(root, absent)), false, `${absent} must not appear`);
  // The bundle follows the new ca-certificates (update-ca-certificates' job), not the old one.
  assert.notDeepEqual(
    await readFile(join(root, "etc/ssl/certs/ca-certificates.crt")),
    await readFile(join(before, "etc/ssl/certs/ca-certificates.crt")),
  );
  const { stdout: ld } = await run("chroot", [root, "/lib64/ld-linux-x86-64.so.2", "--version"]);
  assert.match(ld, /GLIBC/);
});

test("a Trivy report patches just its package and writes valid VEX; an untrusted --keyring writes nothing", async () => {
  const report = join(work, "trivy.json");
  await distrolessLibsslReport(lab, report);
  const out = join(work, "out-report");
  const { stdout } = await cli([
    "patch",
    "-i",
    lab.reference,
    "-r",
    report,
    "-t",
    "r",
    "--oci-dir",
    out,
    "-o",
    join(work, "vex.json"),
  ]);
  assert.match(stdout, /updated libssl3/);
  assert.doesNotMatch(stdout, /updated tzdata/);
  const vex = JSON.parse(await readFile(join(work, "vex.json"), "utf8"));
  if (existsSync(schema)) {
    const v = validateOpenVex(vex, schema);
    assert.ok(v.valid, v.errors.join("; "));
  }
  // Package URLs in the purl spec's canonical form: the digest's colon stays, `+` in a Debian
  // version is encoded; the vulnerable (installed) version, as the scanner reported it.
  const digest = /^patched \S+ (sha256:[0-9a-f]{64})$/m.exec(stdout)![1];
  const installed = lab.packages.get("libssl3")!.replaceAll("+", "%2B");
  assert.deepEqual(
    vex.statements.map((s: { vulnerability: unknown; products: unknown }) => [s.vulnerability, s.products]),
    [
      [
        { "@id": "https://nvd.nist.gov/vuln/detail/CVE-2025-9230", name: "CVE-2025-9230" },
        [
          {
            "@id": `pkg:oci/r@${digest}?arch=amd64&repository_url=r`,
            subcomponents: [{ "@id": `pkg:deb/debian/libssl3@${installed}?arch=amd64&distro=debian-12.12` }],
          },
        ],
      ],
    ],
  );

  const { publicKey } = await generateKey({ userIDs: [{ name: "not debian" }], format: "armored" });
  await writeFile(join(work, "wrong.asc"), publicKey);
  const badOut = join(work, "out-untrusted");
  await assert.rejects(
    run(
      suture,
      [
        "patch",
        "-i",
        lab.reference,
        "-r",
        report,
        "-t",
        "u",
        "--oci-dir",
        badOut,
        "--keyring",
        join(work, "wrong.asc"),
        "--cache-dir",
        join(work, "cache-untrusted"),
      ],
      {
        env: { ...process.env, CI: "true" },
      },
    ),
    oneLineError(/\[UNTRUSTED\]$/),
  );
  assert.equal(existsSync(badOut), false);
});
