import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import type { UpdatePlan } from "./plan.ts";
import { readReport, readReportDirectory } from "./read.ts";
import { formatPlanJson, formatPlanTable } from "./render.ts";
import { versionSchemeFor } from "./versions.ts";

const FIXTURES = join(import.meta.dirname, "../../../shared/fixtures");
const haveShared = existsSync(FIXTURES);
const fixture = (...p: string[]) => join(FIXTURES, ...p);
const NO_SHARED = "skipped: ../shared not present";

const scratch = mkdtempSync(join(tmpdir(), "suture-report-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let counter = 0;
function writeJson(value: unknown): string {
  const file = join(scratch, `r${counter++}.json`);
  writeFileSync(file, typeof value === "string" ? value : JSON.stringify(value));
  return file;
}

async function rejects(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(isSutureError(e), `not a SutureError: ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

/** Properties every plan must have, whatever the report. */
function assertPlanInvariants(plan: UpdatePlan): void {
  const merged = plan.updates.reduce((n, u) => n + u.vulnerabilities.length, 0);
  assert.ok(plan.findings >= plan.skipped.length + merged, "findings counts everything listed");
  const names = plan.updates.map((u) => u.name);
  assert.deepEqual(names, [...names].sort(), "updates sorted by name");
  assert.equal(new Set(names).size, names.length, "one update per package");
  for (const u of plan.updates) {
    assert.equal(u.class, "os-pkgs");
    assert.ok(u.fixedVersion, `${u.name} has a fixed version`);
    if (u.installedVersion) {
      assert.equal(
        versionSchemeFor(u.packageType).compare(u.fixedVersion, u.installedVersion),
        1,
        `${u.name} fix is newer`,
      );
    }
  }
}

test("every Trivy golden report parses; the SARIF one is refused with the fix", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const files = readdirSync(fixture("trivy-golden"));
  assert.ok(files.length >= 25);
  for (const f of files) {
    const file = fixture("trivy-golden", f);
    if (f.endsWith(".sarif.json")) {
      await rejects(
        readReport(file, { scanner: "trivy" }),
        "INVALID_REPORT",
        /this is SARIF.*run trivy with --format json/,
      );
      await rejects(readReport(file), "INVALID_REPORT", /this is SARIF/);
      continue;
    }
    const plan = await readReport(file, { scanner: "trivy" });
    assert.equal(plan.source.format, "trivy");
    assert.equal(plan.source.file, file);
    assert.ok(plan.os?.family, `${f}: OS family`);
    assert.equal(plan.arch, "amd64", `${f}: arch`);
    assertPlanInvariants(plan);
    // Parsing is the same whether the format was named or detected.
    assert.deepEqual(await readReport(file), plan);
  }
});

test("debian-buster: the fixable CVE becomes an update, the unfixed one a no-fix skip", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const plan = await readReport(fixture("trivy-golden/debian-buster.json"));
  assert.deepEqual(plan.os, { family: "debian", version: "10.1" });
  assert.deepEqual(plan.updates, [
    {
      name: "libidn2-0",
      installedVersion: "2.0.5-1",
      fixedVersion: "2.0.5-1+deb10u1",
      vulnerabilities: ["CVE-2019-18224"],
      type: "debian",
      class: "os-pkgs",
      packageType: "deb",
      purl: "pkg:deb/debian/libidn2-0@2.0.5-1?arch=amd64&distro=debian-10.1",
    },
  ]);
  assert.deepEqual(plan.skipped, [
    {
      name: "bash",
      installedVersion: "5.0-4",
      vulnerabilityId: "CVE-2019-18276",
      reason: "no-fix",
      type: "debian",
      class: "os-pkgs",
    },
  ]);
  assert.equal(plan.findings, 2);
});

test("debian-stretch: one CVE fixed across four e2fsprogs binaries", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const plan = await readReport(fixture("trivy-golden/debian-stretch.json"));
  assert.deepEqual(
    plan.updates.map((u) => [u.name, u.installedVersion, u.fixedVersion, u.vulnerabilities.join()]),
    [
      ["e2fslibs", "1.43.4-2", "1.43.4-2+deb9u1", "CVE-2019-5094"],
      ["e2fsprogs", "1.43.4-2", "1.43.4-2+deb9u1", "CVE-2019-5094"],
      ["libcomerr2", "1.43.4-2", "1.43.4-2+deb9u1", "CVE-2019-5094"],
      ["libss2", "1.43.4-2", "1.43.4-2+deb9u1", "CVE-2019-5094"],
    ],
  );
  assert.deepEqual(
    plan.skipped.map((s) => [s.name, s.reason]),
    [["bash", "no-fix"]],
  );
});

test("the highest fix any finding needs wins (apk, rpm)", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  // alpine-39: CVE-2019-1549 is fixed in 1.1.1d-r0, CVE-2019-1551 only in 1.1.1d-r2.
  const alpine = await readReport(fixture("trivy-golden/alpine-39.json"));
  const ssl = alpine.updates.find((u) => u.name === "libssl1.1")!;
  assert.equal(ssl.fixedVersion, "1.1.1d-r2");
  assert.deepEqual(ssl.vulnerabilities, ["CVE-2019-1549", "CVE-2019-1551"]);
  assert.equal(ssl.packageType, "apk");
  assert.deepEqual(alpine.os, { family: "alpine", version: "3.9.4", eosl: true });
  // amazon-2: -12.amzn2.0.1 beats -11.amzn2.0.2 in rpm order (a string sort would say otherwise).
  const amazon = await readReport(fixture("trivy-golden/amazon-2.json"));
  assert.deepEqual(
    amazon.updates.map((u) => [u.name, u.fixedVersion, u.vulnerabilities.join()]),
    [["curl", "7.61.1-12.amzn2.0.1", "CVE-2019-5436,CVE-2019-5481"]],
  );
  assert.deepEqual(amazon.os, { family: "amazon", version: "2 (Karoo)" });
  const oracle = await readReport(fixture("trivy-golden/oraclelinux-8.json"));
  assert.equal(oracle.updates[0]!.fixedVersion, "7.61.1-12.el8");
  // centos-7: epochs stay part of the versions.
  const centos = await readReport(fixture("trivy-golden/centos-7.json"));
  assert.deepEqual(
    centos.updates.map((u) => [u.name, u.installedVersion, u.fixedVersion, u.packageType]),
    [["openssl-libs", "1:1.0.2k-16.el7", "1:1.0.2k-19.el7", "rpm"]],
  );
});

test("copa's OS family names are kept", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const families: Record<string, string> = {
    "almalinux-8.json": "alma",
    "rockylinux-8.json": "rocky",
    "mariner-1.0.json": "cbl-mariner",
    "opensuse-leap-151.json": "opensuse-leap",
    "opensuse-tumbleweed.json": "opensuse-tumbleweed",
    "ubi-7.json": "redhat",
    "oraclelinux-8.json": "oracle",
    "photon-30.json": "photon",
    "ubuntu-1804.json": "ubuntu",
  };
  for (const [f, family] of Object.entries(families)) {
    const plan = await readReport(fixture("trivy-golden", f));
    assert.equal(plan.os?.family, family, f);
    for (const u of plan.updates)
      assert.equal(u.packageType, family === "ubuntu" ? "deb" : "rpm", `${f} ${u.name}`);
  }
});

test("Grype JSON: fix candidates, no-fix matches and the distro", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const plan = await readReport(fixture("grype/json-image.json"), { scanner: "grype" });
  assert.equal(plan.source.format, "grype");
  assert.deepEqual(plan.os, { family: "centos", version: "8.0" });
  // Candidates 1.2.1, 2.1.3, 3.4.0 for installed 1.1.1: the lowest above it fixes the finding.
  assert.deepEqual(plan.updates, [
    {
      name: "package-1",
      installedVersion: "1.1.1",
      fixedVersion: "1.2.1",
      vulnerabilities: ["CVE-1999-0001"],
      type: "centos",
      class: "os-pkgs",
      packageType: "rpm",
    },
  ]);
  assert.deepEqual(
    plan.skipped.map((s) => [s.name, s.vulnerabilityId, s.reason]),
    [["package-2", "CVE-1999-0002", "no-fix"]],
  );
  assert.equal(plan.findings, 2);
  assert.deepEqual(await readReport(fixture("grype/json-image.json")), plan, "auto-detected");
  await rejects(
    readReport(fixture("grype/json-image.json"), { scanner: "trivy" }),
    "INVALID_REPORT",
    /use --scanner grype/,
  );
});

test("Grype's image-tarball fixture is refused as a tar archive", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  await rejects(
    readReport(fixture("grype/anchore-fixture-image-simple.json"), { scanner: "grype" }),
    "INVALID_REPORT",
    /is a tar archive/,
  );
});

test("Grype language and binary artifacts are skipped with their reasons; duplicates count once", async () => {
  const match = (
    id: string,
    name: string,
    version: string,
    type: string,
    fix: string[],
    state = "fixed",
  ) => ({
    vulnerability: { id, fix: { versions: fix, state } },
    matchDetails: [],
    artifact: { name, version, type },
  });
  const file = writeJson({
    matches: [
      match("CVE-2024-1", "libc6", "2.36-9", "deb", ["2.36-9+deb12u4"]),
      match("CVE-2024-1", "libc6", "2.36-9", "deb", ["2.36-9+deb12u4"]), // found by a second matcher
      match("CVE-2024-2", "libc6", "2.36-9", "deb", ["2.36-9+deb12u7"]),
      match("CVE-2024-3", "zlib1g", "1:1.2.13.dfsg-1", "deb", [], "wont-fix"),
      match("GHSA-aaaa-bbbb-cccc", "requests", "2.0", "python", ["2.31.0"]),
      match("CVE-2024-4", "busybox", "1.36", "binary", ["1.37"]),
    ],
    source: { type: "image", target: { userInput: "debian:12", architecture: "arm64" } },
    distro: { name: "debian", version: "12", idLike: [] },
    descriptor: { name: "grype", version: "0.80.0" },
  });
  const plan = await readReport(file);
  assert.equal(plan.arch, "arm64");
  assert.deepEqual(
    plan.updates.map((u) => [u.name, u.fixedVersion, u.vulnerabilities]),
    [["libc6", "2.36-9+deb12u7", ["CVE-2024-1", "CVE-2024-2"]]],
  );
  assert.deepEqual(
    plan.skipped.map((s) => [s.name, s.reason]),
    [
      ["busybox", "unsupported-package-type"],
      ["requests", "language-package"],
      ["zlib1g", "no-fix"],
    ],
  );
  assert.equal(plan.findings, 5);
});

test("copa's report fixtures: accepted and rejected as copa does", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const f = (name: string) => fixture("copa-reports", name);
  // Trivy reports copa's tests patch (copa's default scanner is trivy).
  const valid = await readReport(f("report-trivy_valid.json"), { scanner: "trivy" });
  assert.deepEqual(
    valid.updates.map((u) => [u.name, u.installedVersion, u.fixedVersion]),
    [["apk-tools", "2.12.5-r1", "2.12.6-r0"]],
  );
  const types = await readReport(f("report-pkg_types_test.json"), { scanner: "trivy" });
  assert.deepEqual(
    types.updates.map((u) => [u.name, u.fixedVersion]),
    [["libc6", "2.31-0ubuntu9.13"]],
  );
  assert.deepEqual(
    types.skipped.map((s) => [s.name, s.reason, s.class, s.fixedVersion]),
    [["requests", "language-package", "lang-pkgs", "2.31.0"]],
  );
  const node = await readReport(f("report-trivy_node_valid.json"), { scanner: "trivy" });
  assert.deepEqual(
    node.skipped.map((s) => [s.name, s.reason, s.pkgPath]),
    [
      ["ansi-regex", "language-package", "app/package-lock.json"],
      ["follow-redirects", "language-package", "app/package-lock.json"],
    ],
  );
  const venv = await readReport(f("report-trivy_python_venv.json"), { scanner: "trivy" });
  assert.equal(venv.updates.length, 0);
  assert.deepEqual(
    venv.skipped.map((s) => s.pkgPath),
    [
      "opt/venv/lib/python3.11/site-packages",
      "usr/local/lib/python3.11/site-packages",
      "opt/venv/lib/python3.11/site-packages",
    ],
  );
  const dotnet = await readReport(f("report-trivy_dotnet.json"), { scanner: "trivy" });
  assert.equal(dotnet.skipped.length, 6);
  assert.ok(dotnet.skipped.every((s) => s.reason === "language-package"));
  // No Metadata.OS: the OS comes from the os-pkgs result.
  const noHistory = await readReport(f("report-trivy_no_history.json"), { scanner: "trivy" });
  assert.deepEqual(noHistory.os, { family: "alpine", version: "3.21.0" });
  assert.deepEqual(
    noHistory.updates.map((u) => [u.name, u.fixedVersion, u.packageType]),
    [["libssl3", "3.3.2-r5", "apk"]],
  );
  // Not JSON at all.
  await rejects(readReport(f("report-invalid.json"), { scanner: "trivy" }), "INVALID_REPORT", /is not JSON/);
  await rejects(
    readReport(f("plugin-invalid_report.json"), { scanner: "native" }),
    "INVALID_REPORT",
    /is not JSON/,
  );
  // The plugin *input* fixture is a custom format, not an UpdateManifest; copa's frontend
  // fixtures lack apiVersion, which copa's manifest reader requires.
  await rejects(
    readReport(f("plugin-valid_report.json"), { scanner: "native" }),
    "INVALID_REPORT",
    /\$\.apiVersion is missing/,
  );
  await rejects(
    readReport(f("frontend-simple-report.json"), { scanner: "native" }),
    "INVALID_REPORT",
    /\$\.apiVersion is missing/,
  );
  await rejects(readReport(f("frontend-complex-report.json")), "INVALID_REPORT", /\$\.apiVersion is missing/);
  await rejects(
    readReport(f("plugin-valid_report.json")),
    "INVALID_REPORT",
    /not a supported scan report format/,
  );
});

test("copa UpdateManifest v1alpha1 and v1alpha2 (-s native)", async () => {
  const v1 = await readReport(
    writeJson({
      apiVersion: "v1alpha1",
      metadata: { os: { type: "ubuntu", version: "20.04" }, config: { arch: "amd64" } },
      updates: [
        {
          name: "curl",
          installedVersion: "7.68.0-1ubuntu2.18",
          fixedVersion: "7.68.0-1ubuntu2.19",
          vulnerabilityID: "CVE-2023-28321",
        },
        {
          name: "openssl",
          installedVersion: "1.1.1f-1ubuntu2.17",
          fixedVersion: "1.1.1f-1ubuntu2.18",
          vulnerabilityID: "CVE-2023-0464",
        },
        {
          name: "openssl",
          installedVersion: "1.1.1f-1ubuntu2.17",
          fixedVersion: "1.1.1f-1ubuntu2.20",
          vulnerabilityID: "CVE-2023-0465",
        },
        { name: "tzdata", installedVersion: "2023c", fixedVersion: "", vulnerabilityID: "CVE-0000-0001" },
      ],
    }),
    { scanner: "native" },
  );
  assert.equal(v1.source.format, "copa-v1alpha1");
  assert.deepEqual(v1.os, { family: "ubuntu", version: "20.04" });
  assert.equal(v1.arch, "amd64");
  assert.deepEqual(
    v1.updates.map((u) => [u.name, u.fixedVersion, u.vulnerabilities, u.type, u.packageType]),
    [
      ["curl", "7.68.0-1ubuntu2.19", ["CVE-2023-28321"], "ubuntu", "deb"],
      ["openssl", "1.1.1f-1ubuntu2.20", ["CVE-2023-0464", "CVE-2023-0465"], "ubuntu", "deb"],
    ],
  );
  assert.deepEqual(
    v1.skipped.map((s) => [s.name, s.reason]),
    [["tzdata", "no-fix"]],
  );

  const v2 = await readReport(
    writeJson({
      apiVersion: "v1alpha2",
      metadata: { os: { type: "alpine", version: "3.19.1" }, config: { arch: "arm", variant: "v7" } },
      osupdates: [
        {
          name: "musl",
          installedVersion: "1.2.4_git20230717-r4",
          fixedVersion: "1.2.4_git20230717-r5",
          vulnerabilityID: "CVE-2025-26519",
          type: "alpine",
          class: "os-pkgs",
        },
      ],
      langupdates: [
        {
          name: "requests",
          installedVersion: "2.0",
          fixedVersion: "2.31.0",
          vulnerabilityID: "CVE-2023-32681",
          type: "python-pkg",
          class: "lang-pkgs",
        },
      ],
      someFutureField: true,
    }),
  );
  assert.equal(v2.source.format, "copa-v1alpha2");
  assert.equal(v2.variant, "v7");
  assert.deepEqual(
    v2.updates.map((u) => [u.name, u.fixedVersion, u.packageType]),
    [["musl", "1.2.4_git20230717-r5", "apk"]],
  );
  assert.deepEqual(
    v2.skipped.map((s) => [s.name, s.reason, s.type]),
    [["requests", "language-package", "python-pkg"]],
  );
});

test("wrong shapes are rejected with the JSON path of the bad field", async () => {
  await rejects(
    readReport(writeJson({ apiVersion: "v1alpha2", osupdates: [{ name: "x", fixedVersion: 3 }] }), {
      scanner: "native",
    }),
    "INVALID_REPORT",
    /\$\.osupdates\[0\]\.fixedVersion: .*expected string/,
  );
  await rejects(
    readReport(writeJson({ apiVersion: "v1alpha1", updates: [{ name: "" }] })),
    "INVALID_REPORT",
    /\$\.updates\[0\]\.name: package name is empty/,
  );
  await rejects(
    readReport(writeJson({ apiVersion: "v2" })),
    "INVALID_REPORT",
    /unsupported UpdateManifest apiVersion "v2"/,
  );
  await rejects(
    readReport(
      writeJson({
        SchemaVersion: 2,
        Results: [
          {
            Target: "x (debian 12)",
            Class: "os-pkgs",
            Type: "debian",
            Vulnerabilities: [{ VulnerabilityID: "CVE-1", PkgName: 42 }],
          },
        ],
      }),
    ),
    "INVALID_REPORT",
    /\$\.Results\[0\]\.Vulnerabilities\[0\]\.PkgName: .*expected string/,
  );
  await rejects(
    readReport(writeJson({ SchemaVersion: 1, Results: [] })),
    "INVALID_REPORT",
    /SchemaVersion 2/,
  );
  await rejects(
    readReport(writeJson([{ Target: "old", Vulnerabilities: [] }])),
    "INVALID_REPORT",
    /before SchemaVersion 2/,
  );
  await rejects(
    readReport(writeJson({ bomFormat: "CycloneDX", specVersion: "1.5" })),
    "INVALID_REPORT",
    /CycloneDX/,
  );
  await rejects(readReport(writeJson("")), "INVALID_REPORT", /is empty/);
  await rejects(readReport(join(scratch, "missing.json")), "IO", /cannot read report .*ENOENT/);
  await rejects(readReport(scratch), "USAGE", /is a directory/);
  await rejects(readReport(writeJson({}), { scanner: "no/slash" }), "USAGE", /invalid --scanner/);
});

test("comma-separated fixed versions: the lowest above installed per finding, the highest across findings", async () => {
  const vuln = (id: string, installed: string, fixed: string, name = "libfoo") => ({
    VulnerabilityID: id,
    PkgName: name,
    InstalledVersion: installed,
    FixedVersion: fixed,
  });
  const report = (vulns: unknown[]) =>
    writeJson({
      SchemaVersion: 2,
      Metadata: { OS: { Family: "debian", Name: "12.5" }, ImageConfig: { architecture: "amd64" } },
      Results: [{ Target: "img (debian 12.5)", Class: "os-pkgs", Type: "debian", Vulnerabilities: vulns }],
    });
  const one = await readReport(report([vuln("CVE-1", "8.0.22-1", "10.0.4-1, 8.0.25-1, 9.0.14-1")]));
  assert.equal(one.updates[0]!.fixedVersion, "8.0.25-1");
  const onNewerLine = await readReport(report([vuln("CVE-1", "9.0.1-1", "8.0.25-1, 9.0.14-1, 10.0.4-1")]));
  assert.equal(onNewerLine.updates[0]!.fixedVersion, "9.0.14-1");
  const merged = await readReport(
    report([
      vuln("CVE-1", "8.0.22-1", "8.0.25-1, 9.0.14-1"),
      vuln("CVE-2", "8.0.22-1", "8.0.26-1"),
      vuln("CVE-3", "8.0.22-1", "8.0.23-1"),
    ]),
  );
  assert.deepEqual(
    merged.updates.map((u) => [u.fixedVersion, u.vulnerabilities]),
    [["8.0.26-1", ["CVE-1", "CVE-2", "CVE-3"]]],
  );
  // dpkg order, not string order: ~ sorts first, 10 > 9.
  const tilde = await readReport(
    report([vuln("CVE-1", "1.0-1", "1.0-1+deb12u1"), vuln("CVE-2", "1.0-1", "1.0-1+deb12u1~1")]),
  );
  assert.equal(tilde.updates[0]!.fixedVersion, "1.0-1+deb12u1");
  const already = await readReport(
    report([
      vuln("CVE-1", "2.0-1", "1.9-1, 2.0-1"),
      vuln("CVE-2", "2.0-1", "1.5-1"),
      vuln("CVE-3", "2.0-1", "not-a-version"),
    ]),
  );
  assert.deepEqual(already.updates, []);
  assert.deepEqual(
    already.skipped.map((s) => [s.vulnerabilityId, s.reason]),
    [
      ["CVE-1", "already-fixed"],
      ["CVE-2", "already-fixed"],
      ["CVE-3", "invalid-version"],
    ],
  );
  assert.equal(already.findings, 3);
});

test("a directory of per-platform reports gives one plan per platform", async () => {
  const dir = mkdtempSync(join(scratch, "multi-"));
  const manifest = (arch: string, variant?: string) => ({
    apiVersion: "v1alpha2",
    metadata: { os: { type: "debian", version: "12" }, config: { arch, ...(variant ? { variant } : {}) } },
    osupdates: [
      { name: "libc6", installedVersion: "2.36-9", fixedVersion: "2.36-9+deb12u7", vulnerabilityID: "CVE-1" },
    ],
  });
  writeFileSync(join(dir, "amd64.json"), JSON.stringify(manifest("amd64")));
  writeFileSync(join(dir, "arm-v7.json"), JSON.stringify(manifest("arm", "v7")));
  writeFileSync(join(dir, "notes.txt"), "ignored");
  const plans = await readReportDirectory(dir);
  assert.deepEqual(
    plans.map((p) => [p.arch, p.variant]),
    [
      ["amd64", undefined],
      ["arm", "v7"],
    ],
  );
  writeFileSync(join(dir, "amd64-again.json"), JSON.stringify(manifest("amd64")));
  await rejects(readReportDirectory(dir), "USAGE", /both reports for linux\/amd64/);
});

test("suture report rendering: table and JSON", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const plan = await readReport(fixture("trivy-golden/alpine-39.json"));
  const text = formatPlanTable(plan);
  const lines = text.split("\n");
  assert.match(lines[0]!, /alpine-39\.json \(trivy\): alpine 3\.9\.4, amd64, end of support$/);
  assert.match(text, /^PACKAGE\s+INSTALLED\s+FIXED\s+VULNERABILITIES$/m);
  assert.match(text, /^libssl1\.1\s+1\.1\.1b-r1\s+→\s+1\.1\.1d-r2\s+CVE-2019-1549, CVE-2019-1551$/m);
  assert.match(text, /^musl-utils\s+1\.1\.20-r4\s+→\s+1\.1\.20-r5\s+CVE-2019-14697$/m);
  assert.match(text, /^4 packages to update \(3 vulnerabilities\); 6 findings in the report$/m);
  // Columns line up: every row's arrow is at the same offset.
  const arrows = lines.filter((l) => l.includes("→")).map((l) => l.indexOf("→"));
  assert.equal(new Set(arrows).size, 1);
  const withSkips = formatPlanTable(await readReport(fixture("trivy-golden/debian-buster.json")), {
    showSkipped: true,
  });
  assert.match(withSkips, /^bash\s+5\.0-4\s+CVE-2019-18276\s+no-fix$/m);
  assert.match(withSkips, /1 finding skipped \(no-fix 1\)/);
  assert.deepEqual(JSON.parse(formatPlanJson(plan)), plan);
  const none = formatPlanTable(await readReport(fixture("trivy-golden/ubi-7.json")));
  assert.match(none, /No OS package updates to make\./);
});

test("--scanner native given another scanner's report says which --scanner reads it", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  await rejects(
    readReport(fixture("trivy-golden/debian-buster.json"), { scanner: "native" }),
    "INVALID_REPORT",
    /is not a copa UpdateManifest report: this looks like a Trivy report; use --scanner trivy/,
  );
  await rejects(
    readReport(fixture("grype/json-image.json"), { scanner: "native" }),
    "INVALID_REPORT",
    /use --scanner grype/,
  );
});
