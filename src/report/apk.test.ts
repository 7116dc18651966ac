import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { filterPlanByInstalled } from "./plan.ts";
import { readReport } from "./read.ts";

// Reports of apk images from every scanner suture reads: their packages are apk's (apk version
// order and syntax), whichever OS family (alpine, wolfi, chainguard) the scanner names.

const FIXTURES = join(import.meta.dirname, "../../../shared/fixtures");
const scratch = mkdtempSync(join(tmpdir(), "suture-apk-report-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let counter = 0;
function writeJson(value: unknown): string {
  const file = join(scratch, `r${counter++}.json`);
  writeFileSync(file, JSON.stringify(value));
  return file;
}

/** A Trivy report (SchemaVersion 2) of an apk image, shaped as Trivy writes one. */
function trivyApk(family: string, release: string, vulns: [string, string, string, string][]) {
  return {
    SchemaVersion: 2,
    ArtifactName: `cgr.dev/chainguard/${family}:latest`,
    ArtifactType: "container_image",
    Metadata: {
      OS: { Family: family, Name: release },
      ImageConfig: { architecture: "arm64", os: "linux" },
    },
    Results: [
      {
        Target: `cgr.dev/chainguard/${family}:latest (${family} ${release})`,
        Class: "os-pkgs",
        Type: family,
        Vulnerabilities: vulns.map(([id, name, installed, fixed]) => ({
          VulnerabilityID: id,
          PkgName: name,
          PkgIdentifier: { PURL: `pkg:apk/${family}/${name}@${installed}?arch=aarch64&distro=${release}` },
          InstalledVersion: installed,
          FixedVersion: fixed,
          Severity: "HIGH",
        })),
      },
    ],
  };
}

test("Trivy's Alpine goldens: apk packages in apk's version order, the distroless one included", async () => {
  const alpine310 = await readReport(join(FIXTURES, "trivy-golden/alpine-310.json"));
  assert.deepEqual(alpine310.os, { family: "alpine", version: "3.10.2", eosl: true });
  assert.deepEqual(
    alpine310.updates.map((u) => [u.name, u.installedVersion, u.fixedVersion, u.packageType, u.type]),
    [
      ["libcrypto1.1", "1.1.1c-r0", "1.1.1d-r2", "apk", "alpine"],
      ["libssl1.1", "1.1.1c-r0", "1.1.1d-r2", "apk", "alpine"],
    ],
  );
  assert.equal(alpine310.updates[0]!.purl, "pkg:apk/alpine/libcrypto1.1@1.1.1c-r0?arch=x86_64&distro=3.10.2");
  const distroless = await readReport(join(FIXTURES, "trivy-golden/alpine-distroless.json"));
  assert.deepEqual(distroless.os, { family: "alpine", version: "3.16" });
  assert.ok(distroless.updates.length > 0);
  for (const u of distroless.updates) assert.equal(u.packageType, "apk", u.name);
});

test("Trivy reports of Wolfi and Chainguard images are apk reports of those families", async () => {
  for (const family of ["wolfi", "chainguard"]) {
    const plan = await readReport(
      writeJson(
        trivyApk(family, "20230201", [
          ["CVE-2025-0001", "glibc", "2.40-r3", "2.40-r4"],
          ["CVE-2025-0002", "glibc", "2.40-r3", "2.40-r10"],
          ["GHSA-xxxx-yyyy-zzzz", "openssl", "3.4.0-r1", "3.4.0-r2"],
        ]),
      ),
    );
    assert.deepEqual(plan.os, { family, version: "20230201" });
    assert.equal(plan.arch, "arm64");
    // apk order: r10 is above r4 (a string sort would pick r4).
    assert.deepEqual(
      plan.updates.map((u) => [u.name, u.fixedVersion, u.packageType, u.type]),
      [
        ["glibc", "2.40-r10", "apk", family],
        ["openssl", "3.4.0-r2", "apk", family],
      ],
    );
  }
});

test("an apk report with a version apk does not accept skips that finding as invalid-version", async () => {
  const plan = await readReport(
    writeJson(
      trivyApk("alpine", "3.20.3", [
        ["CVE-2025-1", "musl", "1.2.5-r0", "1.2.5-1"],
        ["CVE-2025-2", "zlib", "1.3.1-r1", "1.3.1-r2"],
      ]),
    ),
  );
  assert.deepEqual(
    plan.updates.map((u) => u.name),
    ["zlib"],
  );
  assert.deepEqual(
    plan.skipped.map((s) => [s.name, s.reason]),
    [["musl", "invalid-version"]],
  );
});

test("Grype: apk artifacts are apk updates, with the distro Grype names (alpine, wolfi)", async () => {
  for (const [distro, version] of [
    ["alpine", "3.20.3"],
    ["wolfi", "20230201"],
  ] as const) {
    const purl = `pkg:apk/${distro}/libcrypto3@3.3.2-r0?arch=x86_64&distro=${distro}-${version}&upstream=openssl`;
    const plan = await readReport(
      writeJson({
        matches: [
          {
            vulnerability: { id: "CVE-2024-9143", fix: { versions: ["3.3.2-r1"], state: "fixed" } },
            artifact: { name: "libcrypto3", version: "3.3.2-r0", type: "apk", purl },
          },
          {
            vulnerability: { id: "CVE-2024-9143", fix: { versions: ["3.3.2-r1"], state: "fixed" } },
            artifact: { name: "libssl3", version: "3.3.2-r0", type: "apk" },
          },
          {
            vulnerability: { id: "CVE-2023-0001", fix: { versions: [], state: "not-fixed" } },
            artifact: { name: "busybox", version: "1.36.1-r29", type: "apk" },
          },
        ],
        source: { type: "image", target: { userInput: "alpine:3.20", architecture: "amd64" } },
        distro: { name: distro, version },
      }),
      { scanner: "grype" },
    );
    assert.deepEqual(plan.os, { family: distro, version });
    assert.deepEqual(
      plan.updates.map((u) => [u.name, u.fixedVersion, u.packageType, u.purl]),
      [
        ["libcrypto3", "3.3.2-r1", "apk", purl],
        ["libssl3", "3.3.2-r1", "apk", undefined],
      ],
    );
    assert.deepEqual(
      plan.skipped.map((s) => [s.name, s.reason]),
      [["busybox", "no-fix"]],
    );
  }
});

test("copa UpdateManifests of apk images (alpine, wolfi) and the installed filter in apk order", async () => {
  const v1 = await readReport(
    writeJson({
      apiVersion: "v1alpha1",
      metadata: { os: { type: "alpine", version: "3.20.3" }, config: { arch: "amd64" } },
      updates: [
        {
          name: "musl",
          installedVersion: "1.2.5-r0",
          fixedVersion: "1.2.5-r3",
          vulnerabilityID: "CVE-2025-26519",
        },
        { name: "apk-tools", installedVersion: "2.14.4-r0", fixedVersion: "2.14.4-r3", vulnerabilityID: "" },
      ],
    }),
    { scanner: "native" },
  );
  assert.deepEqual(v1.os, { family: "alpine", version: "3.20.3" });
  assert.deepEqual(
    v1.updates.map((u) => [u.name, u.fixedVersion, u.packageType]),
    [
      ["apk-tools", "2.14.4-r3", "apk"],
      ["musl", "1.2.5-r3", "apk"],
    ],
  );
  // The image already has musl 1.2.5-r10 (above r3 in apk's order): only apk-tools is left.
  const filtered = filterPlanByInstalled(
    v1,
    new Map([
      ["musl", "1.2.5-r10"],
      ["apk-tools", "2.14.4-r0"],
    ]),
  );
  assert.deepEqual(
    filtered.updates.map((u) => u.name),
    ["apk-tools"],
  );
  assert.deepEqual(
    filtered.skipped.map((s) => [s.name, s.reason, s.installedVersion]),
    [["musl", "already-fixed", "1.2.5-r10"]],
  );

  const v2 = await readReport(
    writeJson({
      apiVersion: "v1alpha2",
      metadata: { os: { type: "wolfi", version: "20230201" }, config: { arch: "arm64", variant: "v8" } },
      osupdates: [
        {
          name: "glibc",
          installedVersion: "2.40-r3",
          fixedVersion: "2.40-r4",
          vulnerabilityID: "CVE-2025-0001",
          type: "wolfi",
          class: "os-pkgs",
        },
      ],
    }),
    { scanner: "native" },
  );
  assert.deepEqual(v2.os, { family: "wolfi", version: "20230201" });
  assert.deepEqual(
    v2.updates.map((u) => [u.name, u.fixedVersion, u.packageType]),
    [["glibc", "2.40-r4", "apk"]],
  );
});
