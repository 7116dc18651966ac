import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { installedFromStatus } from "../distro/dpkg/database.ts";
import { canonicalOsFamily, packageTypeForFamily } from "./os-family.ts";
import {
  assemblePlan,
  chooseFixedVersion,
  filterPlanByInstalled,
  type OsFinding,
  splitFixedVersions,
} from "./plan.ts";

const finding = (name: string, installed: string, fixed: string, id: string): OsFinding => ({
  name,
  installedVersion: installed,
  fixedVersions: splitFixedVersions(fixed),
  vulnerabilityId: id,
  type: "debian",
  packageType: "deb",
});

const header = {
  source: { format: "trivy" as const, file: "report.json" },
  os: { family: "debian", version: "12.5" },
  arch: "amd64",
};

test("splitFixedVersions trims and drops empty candidates", () => {
  assert.deepEqual(splitFixedVersions(" 1.2, 1.3 ,,"), ["1.2", "1.3"]);
  assert.deepEqual(splitFixedVersions(""), []);
  assert.deepEqual(splitFixedVersions(undefined), []);
});

test("chooseFixedVersion picks the next fix line up and recognises fixed packages", () => {
  assert.deepEqual(chooseFixedVersion("1.0-1", ["1.2-1", "1.1-1"], "deb"), { version: "1.1-1" });
  assert.deepEqual(chooseFixedVersion("1.1-5", ["1.2-1", "1.1-1"], "deb"), { version: "1.2-1" });
  assert.deepEqual(chooseFixedVersion("1.2-1", ["1.2-1", "1.3-1"], "deb"), { skip: "already-fixed" });
  assert.deepEqual(chooseFixedVersion("1.0-1", [], "deb"), { skip: "no-fix" });
  assert.deepEqual(chooseFixedVersion("", ["2", "1"], "deb"), { version: "1" });
  assert.deepEqual(chooseFixedVersion("1.0-1", ["1.0-r1"], "apk"), { skip: "invalid-version" });
  assert.deepEqual(chooseFixedVersion("1.0-r0", ["1.0-r1"], "apk"), { version: "1.0-r1" });
});

test("filterPlanByInstalled: not installed, already fixed, and the image's own installed version", () => {
  const plan = assemblePlan(
    header,
    [
      finding("openssl", "3.0.11-1~deb12u1", "3.0.11-1~deb12u2", "CVE-2023-5678"),
      finding("openssl", "3.0.11-1~deb12u1", "3.0.13-1~deb12u1", "CVE-2024-0727"),
      finding("libssl3", "3.0.11-1~deb12u1", "3.0.13-1~deb12u1", "CVE-2024-0727"),
      finding("gone", "1.0-1", "1.0-2", "CVE-2020-0001"),
      finding("perl", "5.36.0-7", "5.36.0-7+deb12u1", "CVE-2023-47038"),
    ],
    [],
  );
  assert.equal(plan.findings, 5);
  const installed = new Map([
    ["openssl", "3.0.11-1~deb12u2"], // newer than the report said, still short of the highest fix
    ["libssl3", "3.0.13-1~deb12u1"], // already fixed
    ["perl", "5.36.0-7"],
  ]);
  const filtered = filterPlanByInstalled(plan, installed);
  assert.deepEqual(
    filtered.updates.map((u) => [u.name, u.installedVersion, u.fixedVersion, u.vulnerabilities]),
    [
      ["openssl", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", ["CVE-2023-5678", "CVE-2024-0727"]],
      ["perl", "5.36.0-7", "5.36.0-7+deb12u1", ["CVE-2023-47038"]],
    ],
  );
  assert.deepEqual(
    filtered.skipped.map((s) => [s.name, s.vulnerabilityId, s.reason, s.installedVersion]),
    [
      ["gone", "CVE-2020-0001", "not-installed", "1.0-1"],
      ["libssl3", "CVE-2024-0727", "already-fixed", "3.0.13-1~deb12u1"],
    ],
  );
  assert.equal(filtered.findings, plan.findings);
  assert.equal(plan.updates.length, 4, "the input plan is not modified");
});

test("filterPlanByInstalled against this machine's real dpkg status", () => {
  const status = installedFromStatus(readFileSync("/var/lib/dpkg/status", "utf8"));
  const installed = new Map(status.map((p) => [p.name, p.version]));
  const dpkg = installed.get("dpkg")!;
  const plan = assemblePlan(
    header,
    [
      finding("dpkg", "1.0", `${dpkg}+suture1`, "CVE-TEST-1"),
      finding("dpkg-not-here", "1.0", "2.0", "CVE-TEST-2"),
      finding("bash", "1.0", "1.1", "CVE-TEST-3"),
    ],
    [],
  );
  const filtered = filterPlanByInstalled(plan, installed);
  assert.deepEqual(
    filtered.updates.map((u) => [u.name, u.installedVersion]),
    [["dpkg", dpkg]],
  );
  assert.deepEqual(
    filtered.skipped.map((s) => [s.name, s.reason]),
    [
      ["bash", "already-fixed"],
      ["dpkg-not-here", "not-installed"],
    ],
  );
});

test("OS families: copa's canonical names and their package formats", () => {
  const cases: [string, string, string | undefined][] = [
    ["debian", "debian", "deb"],
    ["Ubuntu", "ubuntu", "deb"],
    ["alpine", "alpine", "apk"],
    ["almalinux", "alma", "rpm"],
    ["rockylinux", "rocky", "rpm"],
    ["rhel", "redhat", "rpm"],
    ["Red Hat Enterprise Linux", "redhat", "rpm"],
    ["amazonlinux", "amazon", "rpm"],
    ["mariner", "cbl-mariner", "rpm"],
    ["azurelinux", "azurelinux", "rpm"],
    ["oraclelinux", "oracle", "rpm"],
    ["opensuse.leap", "opensuse-leap", "rpm"],
    ["opensuse-tumbleweed", "opensuse-tumbleweed", "rpm"],
    ["sles", "sles", "rpm"],
    ["photon", "photon", "rpm"],
    ["wolfi", "wolfi", "apk"],
    ["FreeBSD", "freebsd", undefined],
  ];
  for (const [raw, family, type] of cases) {
    assert.equal(canonicalOsFamily(raw), family, raw);
    assert.equal(packageTypeForFamily(family), type, family);
  }
});
