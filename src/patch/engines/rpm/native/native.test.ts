import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parseOsRelease } from "../../../../distro/os-release.ts";
import { readInstalledRpms } from "../../../../distro/rpm/installed.ts";
import { detectReleasever, rpmArchFor } from "./native.ts";

const FIXTURES = join(import.meta.dirname, "../../../../../../shared/fixtures/rpmdb");

test("$releasever as dnf finds it: from the release package of a real database, else os-release", () => {
  const db = readFileSync(join(FIXTURES, "cbl-mariner-2.0/rpmdb.sqlite"));
  const packages = readInstalledRpms({ path: "/var/lib/rpm/rpmdb.sqlite", backend: "sqlite" }, (p) =>
    p === "/var/lib/rpm/rpmdb.sqlite" ? db : undefined,
  );
  const distro = {
    packageDb: "rpm" as const,
    packageManager: "tdnf" as const,
    osRelease: parseOsRelease('ID=mariner\nVERSION_ID="2.0.20220226"\n'),
    files: new Map(),
  };
  // mariner-release provides an unversioned system-release(releasever): its VERSION counts.
  assert.equal(detectReleasever(packages, distro), "2.0");
  // A manifest (no headers): os-release's VERSION_ID.
  assert.equal(
    detectReleasever(
      packages.map((p) => ({ recordNumber: p.recordNumber, nevra: p.nevra })),
      distro,
    ),
    "2.0.20220226",
  );
});

test("rpm's architecture names of the OCI platforms", () => {
  assert.equal(rpmArchFor({ os: "linux", architecture: "amd64" }), "x86_64");
  assert.equal(rpmArchFor({ os: "linux", architecture: "arm64" }), "aarch64");
  assert.equal(rpmArchFor({ os: "linux", architecture: "ppc64le" }), "ppc64le");
  assert.equal(rpmArchFor({ os: "linux", architecture: "s390x" }), "s390x");
});
