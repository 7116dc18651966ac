/**
 * SBOMs through the CLI (issue 18, part 2): `suture sbom` of the lab's Debian, Alpine (an index)
 * and rpm images, and `suture patch --sbom` of a Debian lab image, each document checked against
 * the official schema of its format and held to the image's own package tools' view (the patched
 * image's `dpkg-query -W`, the rpm lab's `rpm -qa`, the Alpine image's apk database).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PackageURL } from "packageurl-js";
import {
  ALPINE_LAB_FIXES,
  alpineLabIndex,
  alpineLabTrivyReport,
  startAlpineTestRepo,
} from "../lab/alpine-lab.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { needs, requiring } from "../lab/requirements.ts";
import { rpmLabImage } from "../lab/rpm-lab.ts";
import { validateCycloneDx, validateSpdx } from "../lab/sbom-schema.ts";

const { after, before, test } = await requiring("root", "loopback", "tool:mmdebstrap", "tool:umoci");

before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-sbom-e2e-"));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

function cli(args: string[], env: Record<string, string> = {}) {
  return run(suture, [...args, "--progress", "plain"], {
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, CI: "true", ...env },
  });
}

interface CdxComponent {
  "bom-ref": string;
  type: string;
  name: string;
  version?: string;
  purl?: string;
  pedigree?: { ancestors: { version: string; purl: string }[] };
}
interface CdxDoc {
  metadata: { component: CdxComponent };
  components: CdxComponent[];
  dependencies: { ref: string; dependsOn: string[] }[];
}
interface SpdxDoc {
  packages: {
    SPDXID: string;
    name: string;
    versionInfo?: string;
    primaryPackagePurpose?: string;
    externalRefs?: { referenceLocator: string }[];
    annotations?: { comment: string }[];
  }[];
  relationships: { spdxElementId: string; relationshipType: string; relatedSpdxElement: string }[];
}

function assertValid(v: { valid: boolean; errors: string[] }, what: string) {
  assert.ok(v.valid, `${what} fails its schema:\n${v.errors.slice(0, 10).join("\n")}`);
}

const libraries = (doc: CdxDoc) =>
  new Map(doc.components.filter((c) => c.type === "library").map((c) => [c.name, c]));

test("suture sbom of a Debian lab image: every dpkg package at its version, Trivy's purls, both formats valid", async () => {
  const lab = await labImage("bookwormMinbase");
  const { stdout } = await cli(["sbom", lab.reference]);
  const cdx = JSON.parse(stdout) as CdxDoc;
  assertValid(validateCycloneDx(cdx), "CycloneDX");
  assert.equal(cdx.metadata.component.type, "container");
  assert.equal(cdx.metadata.component.version, lab.manifestDigest);
  const libs = libraries(cdx);
  assert.deepEqual(
    new Map([...libs].map(([n, c]) => [n, c.version])),
    lab.packages,
    "the SBOM lists exactly the image's installed packages",
  );
  for (const c of libs.values()) {
    // Trivy's shape: the epoch is a qualifier, never in the version; distro from /etc/debian_version.
    const p = PackageURL.fromString(c.purl!);
    const epoch = /^(\d+):/.exec(c.version!)?.[1];
    assert.deepEqual(
      [p.type, p.namespace, p.name, p.version, p.qualifiers?.distro, p.qualifiers?.epoch],
      ["deb", "debian", c.name, c.version!.replace(/^\d+:/, ""), `debian-${lab.debianVersion}`, epoch],
    );
    assert.ok(["amd64", "all"].includes(p.qualifiers!.arch!));
    assert.equal(c["bom-ref"], c.purl);
  }

  const out = join(work, "minbase.spdx.json");
  const r = await cli(["sbom", lab.reference, "--format", "spdx", "-o", out]);
  assert.equal(r.stdout, "", "with -o nothing goes to stdout");
  const spdx = JSON.parse(await readFile(out, "utf8")) as SpdxDoc;
  assertValid(validateSpdx(spdx), "SPDX");
  const libsSpdx = spdx.packages.filter((p) => p.primaryPackagePurpose === "LIBRARY");
  assert.equal(libsSpdx.length, lab.packages.size);
  const described = spdx.relationships.find((x) => x.relationshipType === "DESCRIBES")!.relatedSpdxElement;
  assert.equal(spdx.packages.find((p) => p.SPDXID === described)?.versionInfo, lab.manifestDigest);
});

test("suture sbom of a single-platform image asked for another platform: one line, exit non-zero, nothing on stdout", async () => {
  const lab = await labImage("bookwormMinbase");
  const err = await cli(["sbom", lab.reference, "--platform", "linux/s390x"]).then(
    () => assert.fail("sbom should refuse"),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  assert.notEqual(err.code, 0);
  assert.equal(err.stdout, "");
  const lines = err.stderr
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("error:"));
  assert.equal(lines.length, 1, err.stderr);
  assert.match(lines[0]!, /no linux\/s390x image .*UNSUPPORTED_PLATFORM/);
});

test("SOURCE_DATE_EPOCH makes `suture sbom` reproducible", async () => {
  const lab = await labImage("bookwormMinbase");
  const env = { SOURCE_DATE_EPOCH: "1700000000" };
  const a = await cli(["sbom", lab.reference, "--format", "spdx"], env);
  const b = await cli(["sbom", lab.reference, "--format", "spdx"], env);
  assert.equal(a.stdout, b.stdout);
  assert.match(a.stdout, /"created": "2023-11-14T22:13:20Z"/);
});

test("suture sbom of the Alpine lab index: one document, one container per platform, apk purls per arch", async () => {
  const index = await alpineLabIndex();
  const { stdout } = await cli(["sbom", index.ref]);
  const cdx = JSON.parse(stdout) as CdxDoc;
  assertValid(validateCycloneDx(cdx), "CycloneDX");
  const containers = cdx.components.filter((c) => c.type === "container");
  assert.ok(containers.length >= 2, "a container per platform");
  const musl = cdx.components.filter((c) => c.name === "musl").map((c) => c.purl!);
  assert.ok(
    musl.some((p) => /\?arch=x86_64&distro=3\.20\.3$/.test(p)),
    musl.join(" "),
  );
  assert.ok(
    musl.some((p) => /\?arch=aarch64&distro=3\.20\.3$/.test(p)),
    musl.join(" "),
  );
  const only = await cli(["sbom", index.ref, "--platform", "linux/arm64", "--format", "spdx"]);
  const spdx = JSON.parse(only.stdout) as SpdxDoc;
  assertValid(validateSpdx(spdx), "SPDX");
  const purls = spdx.packages.flatMap((p) => p.externalRefs?.map((r) => r.referenceLocator) ?? []);
  assert.ok(purls.some((p) => p.startsWith("pkg:apk/alpine/musl@")));
  assert.ok(!purls.some((p) => p.includes("arch=x86_64")), "only the arm64 image");
});

test(
  "suture sbom of rpm lab images: `rpm -qa`'s packages at their versions (sqlite/ndb database, distroless manifest)",
  await needs("tool:rpmbuild", "tool:createrepo_c", "tool:gpg"),
  async () => {
    for (const kind of ["micro", "distroless"] as const) {
      const lab = await rpmLabImage(kind);
      const { stdout } = await cli(["sbom", lab.ref]);
      const cdx = JSON.parse(stdout) as CdxDoc;
      assertValid(validateCycloneDx(cdx), `CycloneDX of ${kind}`);
      const libs = libraries(cdx);
      assert.deepEqual(
        new Map([...libs].map(([n, c]) => [n, c.version])),
        // rpm records each imported key as a gpg-pubkey "package": not software, left out (as Trivy does).
        new Map(
          Object.entries(lab.installed)
            .filter(([n]) => n !== "gpg-pubkey")
            .map(([n, i]) => [n, i.evr]),
        ),
        kind,
      );
      for (const c of libs.values()) assert.match(c.purl!, /^pkg:rpm\/[a-z-]+\/[^@]+@[^?]+\?arch=/);
      const spdx = JSON.parse((await cli(["sbom", lab.ref, "--format", "spdx"])).stdout) as SpdxDoc;
      assertValid(validateSpdx(spdx), `SPDX of ${kind}`);
    }
  },
);

test("patch --sbom: the patched image's packages as dpkg-query -W lists them, updated ones with their old versions", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report, fixes } = await trivyReportFor("bookwormNginx", {
    only: ["libssl3", "openssl"],
    outFile: join(work, "report.json"),
  });
  assert.ok(fixes.length >= 1, "the lab image has pending fixes");
  const out = join(work, "out");
  const cdxFile = join(work, "patched.cdx.json");
  const cache = ["--cache-dir", join(work, "cache")];
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
    "--sbom",
    cdxFile,
    ...cache,
  ]);
  const digest = /patched oci:.*:fixed (sha256:[0-9a-f]{64})/.exec(stdout)?.[1];
  assert.ok(digest, stdout);

  const root = join(work, "rootfs");
  await run("umoci", ["raw", "unpack", "--image", `${out}:fixed`, root]);
  const { stdout: listed } = await run("chroot", [
    root,
    "dpkg-query",
    "-W",
    "-f",
    "${Package} ${Version}\\n",
  ]);
  const dpkg = new Map(
    listed
      .trim()
      .split("\n")
      .map((l) => l.split(" ") as [string, string]),
  );

  const cdx = JSON.parse(await readFile(cdxFile, "utf8")) as CdxDoc;
  assertValid(validateCycloneDx(cdx), "CycloneDX");
  assert.equal(cdx.metadata.component.version, digest, "the SBOM names the patched manifest");
  const libs = libraries(cdx);
  assert.deepEqual(new Map([...libs].map(([n, c]) => [n, c.version])), dpkg);
  for (const f of fixes) {
    const c = libs.get(f.name)!;
    assert.equal(c.version, f.fixed);
    assert.equal(c.pedigree?.ancestors[0]?.version, f.installed, `${f.name} keeps its old version`);
    assert.match(c.pedigree!.ancestors[0]!.purl, new RegExp(`^pkg:deb/debian/${f.name}@`));
  }
  const untouched = [...libs.values()].filter((c) => !fixes.some((f) => f.name === c.name));
  assert.ok(
    untouched.every((c) => c.pedigree === undefined),
    "only updated packages carry a pedigree",
  );

  // The same patch again (its layer reused from the cache), in SPDX.
  const spdxFile = join(work, "patched.spdx.json");
  await cli([
    "patch",
    "-i",
    lab.reference,
    "-r",
    report,
    "-t",
    "fixed2",
    "--oci-dir",
    out,
    "--sbom",
    spdxFile,
    "--sbom-format",
    "spdx",
    ...cache,
  ]);
  const spdx = JSON.parse(await readFile(spdxFile, "utf8")) as SpdxDoc;
  assertValid(validateSpdx(spdx), "SPDX");
  for (const f of fixes) {
    const p = spdx.packages.find((x) => x.name === f.name)!;
    assert.equal(p.versionInfo, f.fixed);
    assert.ok(
      p.annotations?.[0]?.comment.includes(`updated from ${f.installed}`),
      JSON.stringify(p.annotations),
    );
  }
});

test("patch --sbom into a directory that does not exist: one line naming --sbom, before any work, nothing written", async () => {
  const lab = await labImage("bookwormMinbase");
  const out = join(work, "never");
  const err = await cli([
    "patch",
    "-i",
    lab.reference,
    "-t",
    "x",
    "--oci-dir",
    out,
    "--sbom",
    join(work, "missing/dir/sbom.json"),
  ]).then(
    () => assert.fail("patch should refuse"),
    (e: { code: number; stderr: string }) => e,
  );
  assert.notEqual(err.code, 0);
  const lines = err.stderr
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("error:"));
  assert.equal(lines.length, 1, err.stderr);
  assert.match(lines[0]!, /--sbom .*missing\/dir.*does not exist/);
  assert.equal(existsSync(out), false);
});

test(
  "patch --sbom of an index, one platform patched: one document, the patched image with pedigrees, the other as it was",
  await needs("runc"),
  async () => {
    const repo = await startAlpineTestRepo();
    try {
      const index = await alpineLabIndex();
      const reports = join(work, "alpine-reports");
      await mkdir(reports);
      await writeFile(
        join(reports, "amd64.json"),
        JSON.stringify(alpineLabTrivyReport({ only: ["zlib", "musl"] })),
      );
      const out = join(work, "alpine-out");
      const sbom = join(work, "alpine.cdx.json");
      const { stdout } = await cli([
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
        "linux/amd64",
        "--sbom",
        sbom,
        "--cache-dir",
        join(work, "cache"),
        ...repo.mirrorFlags.flatMap((m) => ["--mirror", m]),
      ]);
      const indexDigest = /patched oci:.*:patched (sha256:[0-9a-f]{64})/.exec(stdout)?.[1];
      const cdx = JSON.parse(await readFile(sbom, "utf8")) as CdxDoc;
      assertValid(validateCycloneDx(cdx), "CycloneDX");
      assert.equal(cdx.metadata.component.version, indexDigest, "the document is about the written index");
      const containers = cdx.components.filter((c) => c.type === "container");
      assert.equal(containers.length, 2);
      const byArch = (arch: string) =>
        cdx.components.filter((c) => c.purl?.includes(`arch=${arch}&`) && c.type === "library");
      for (const name of ["zlib", "musl"]) {
        const fix = ALPINE_LAB_FIXES.find((f) => f.name === name)!;
        const amd = byArch("x86_64").find((c) => c.name === name)!;
        assert.equal(amd.version, fix.fixed);
        assert.equal(amd.pedigree?.ancestors[0]?.version, fix.installed);
        const arm = byArch("aarch64").find((c) => c.name === name)!;
        assert.equal(arm.version, fix.installed, "arm64 was not patched");
        assert.equal(arm.pedigree, undefined);
      }
    } finally {
      await repo.close();
    }
  },
);
