import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { UpdatePlan } from "../report/plan.ts";
import { cvesFixed } from "./run.ts";
import { existingPatchTags, indexReports, nextPatchTag } from "./skip.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "suture-bulk-skip-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("re-patch tags: <base>, then <base>-1, <base>-2 …; per-architecture tags are not re-patch tags", () => {
  const tags = [
    "1.25.3",
    "1.25.3-patched",
    "1.25.3-patched-1",
    "1.25.3-patched-2",
    "1.25.3-patched-386",
    "1.25.3-patched-amd64",
    "1.25.3-patched-arm-v7",
    "1.25.3-patched-01",
    "1.25.3-patched-x",
    "1.25.30-patched",
  ];
  const existing = existingPatchTags("1.25.3-patched", tags);
  assert.deepEqual(
    existing.map((e) => e.tag),
    ["1.25.3-patched", "1.25.3-patched-1", "1.25.3-patched-2"],
  );
  assert.equal(nextPatchTag("1.25.3-patched", existing), "1.25.3-patched-3");
  assert.equal(nextPatchTag("1.25.3-patched", []), "1.25.3-patched");
  // A gap does not get filled: the next number is past the highest.
  assert.equal(nextPatchTag("b", existingPatchTags("b", ["b", "b-4"])), "b-5");
});

function trivy(
  name: string,
  vulnerabilities: { pkg: string; installed: string; fixed: string; id: string }[],
) {
  return JSON.stringify({
    SchemaVersion: 2,
    ArtifactName: name,
    ArtifactType: "container_image",
    Metadata: { OS: { Family: "debian", Name: "12.4" }, ImageConfig: { architecture: "amd64" } },
    Results: [
      {
        Target: `${name} (debian 12.4)`,
        Class: "os-pkgs",
        Type: "debian",
        Vulnerabilities: vulnerabilities.map((v) => ({
          VulnerabilityID: v.id,
          PkgName: v.pkg,
          InstalledVersion: v.installed,
          FixedVersion: v.fixed,
          Severity: "HIGH",
        })),
      },
    ],
  });
}

test("a report directory is indexed by the image each report names, normalised; unusable files are said and left out", async () => {
  await writeFile(join(dir, "clean.json"), trivy("127.0.0.1:5000/lab/app:1-patched", []));
  await writeFile(
    join(dir, "dirty.json"),
    trivy("nginx:1.25.3", [
      { pkg: "libssl3", installed: "3.0.11-1~deb12u1", fixed: "3.0.11-1~deb12u2", id: "CVE-2023-5678" },
    ]),
  );
  await writeFile(join(dir, "broken.json"), "{ not json");
  await writeFile(join(dir, "notes.txt"), "ignored");
  const index = await indexReports(dir);
  assert.equal(
    index.lookup({ registry: "127.0.0.1:5000", repository: "lab/app", tag: "1-patched" })?.[0]?.updates
      .length,
    0,
  );
  // `nginx:1.25.3` in the report is docker.io/library/nginx:1.25.3.
  assert.equal(
    index.lookup({ registry: "docker.io", repository: "library/nginx", tag: "1.25.3" })?.[0]?.updates[0]
      ?.name,
    "libssl3",
  );
  assert.equal(
    index.lookup({ registry: "docker.io", repository: "library/nginx", tag: "1.25.2" }),
    undefined,
  );
  assert.equal(index.warnings.length, 1);
  assert.match(index.warnings[0]!, /broken\.json is not used/);
});

test("CVEs fixed: those of packages the update took to the report's fixed version or past it", () => {
  const plan = {
    arch: "amd64",
    updates: [
      {
        name: "libssl3",
        fixedVersion: "3.0.11-1~deb12u2",
        vulnerabilities: ["CVE-1", "CVE-2"],
        packageType: "deb",
      },
      { name: "libexpat1", fixedVersion: "2.5.0-1+deb12u1", vulnerabilities: ["CVE-3"], packageType: "deb" },
      {
        name: "zlib1g",
        fixedVersion: "1:1.2.13.dfsg-1+deb12u1",
        vulnerabilities: ["CVE-4"],
        packageType: "deb",
      },
    ],
  } as unknown as UpdatePlan;
  const fixed = cvesFixed(
    {
      platform: "linux/amd64",
      changed: [
        { name: "libssl3", from: "3.0.11-1~deb12u1", to: "3.0.15-1~deb12u1" },
        // Updated, but not as far as the report's fix.
        { name: "libexpat1", from: "2.5.0-1", to: "2.5.0-1~bpo" },
      ],
      failed: [],
    },
    [plan],
  );
  assert.deepEqual(fixed, ["CVE-1", "CVE-2"]);
  // A report of another architecture says nothing about this platform.
  assert.deepEqual(cvesFixed({ platform: "linux/arm64", changed: [], failed: [] }, [plan]), []);
});
