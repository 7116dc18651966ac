import assert from "node:assert/strict";
import { test } from "node:test";
import { parseOsRelease } from "../distro/os-release.ts";
import { isSutureError } from "../errors/errors.ts";
import { checkReportMatchesImage, type ImageIdentity } from "./image-match.ts";
import { assemblePlan, splitFixedVersions } from "./plan.ts";
import { readReport } from "./read.ts";

const golden = (name: string) =>
  new URL(`../../../shared/fixtures/trivy-golden/${name}.json`, import.meta.url).pathname;

const bookworm: ImageIdentity = {
  name: "oci:lab:latest",
  osRelease: parseOsRelease(
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n',
  ),
  installed: new Map([
    ["libssl3", "3.0.11-1~deb12u2"],
    ["libexpat1", "2.5.0-1"],
  ]),
  architecture: "amd64",
};

function plan(
  os: { family: string; version: string } | undefined,
  arch?: string,
  installed = "3.0.11-1~deb12u2",
) {
  return assemblePlan(
    { source: { format: "trivy", file: "r.json" }, ...(os ? { os } : {}), ...(arch ? { arch } : {}) },
    [
      {
        name: "libssl3",
        installedVersion: installed,
        fixedVersions: splitFixedVersions("3.0.15-1~deb12u1"),
        vulnerabilityId: "CVE-2024-1",
        type: "debian",
        packageType: "deb",
      },
    ],
    [],
  );
}

const refused = (pattern: RegExp) => (e: unknown) => {
  assert.ok(isSutureError(e, "INVALID_REPORT"), String(e));
  assert.match(e.message, pattern);
  assert.doesNotMatch(e.message, /\n/);
  return true;
};

test("real reports of other distributions and releases are refused, naming both sides", async () => {
  const buster = await readReport(golden("debian-buster"));
  assert.throws(
    () => checkReportMatchesImage(buster, bookworm),
    refused(
      /is for debian 10\.1, image oci:lab:latest is debian 12: scan oci:lab:latest and pass that report/,
    ),
  );
  const alpine = await readReport(golden("alpine-310"));
  assert.throws(
    () => checkReportMatchesImage(alpine, bookworm),
    refused(/is for alpine 3\.10\.2, image .* is debian 12/),
  );
  // A bookworm report against a trixie image.
  const trixie = {
    ...bookworm,
    osRelease: parseOsRelease("ID=debian\nVERSION_ID=13\nVERSION_CODENAME=trixie\n"),
  };
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "debian", version: "12.8" }), trixie),
    refused(/is for debian 12\.8, image .* is debian 13/),
  );
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "debian", version: "12" }, "arm64"), bookworm),
    refused(/is for linux\/arm64, image .* is linux\/amd64/),
  );
});

test("releases match at the granularity scanners write them; no OS in the report is not a mismatch", () => {
  for (const version of ["12", "12.5", "bookworm", ""])
    assert.deepEqual(checkReportMatchesImage(plan({ family: "debian", version }, "amd64"), bookworm), []);
  assert.deepEqual(checkReportMatchesImage(plan(undefined), bookworm), []);
  const testing = { ...bookworm, osRelease: parseOsRelease("ID=debian\nVERSION_CODENAME=trixie\n") };
  assert.deepEqual(checkReportMatchesImage(plan({ family: "debian", version: "trixie/sid" }), testing), []);
  const alpine = { ...bookworm, osRelease: parseOsRelease("ID=alpine\nVERSION_ID=3.10.9\n") };
  assert.deepEqual(checkReportMatchesImage(plan({ family: "alpine", version: "3.10.2" }), alpine), []);
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "alpine", version: "3.9.4" }), alpine),
    refused(/alpine 3\.9\.4, image .* is alpine 3\.10\.9/),
  );
  const centos = { ...bookworm, osRelease: parseOsRelease('ID="centos"\nVERSION_ID="7"\n') };
  assert.deepEqual(checkReportMatchesImage(plan({ family: "centos", version: "7.9.2009" }), centos), []);
  const ubuntu = { ...bookworm, osRelease: parseOsRelease("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=22.04\n") };
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "ubuntu", version: "20.04" }), ubuntu),
    refused(/ubuntu 20\.04, image .* is ubuntu 22\.04/),
  );
});

test("installed versions that differ from the image's give one warning naming them", () => {
  const warnings = checkReportMatchesImage(
    plan({ family: "debian", version: "12" }, "amd64", "3.0.9-1"),
    bookworm,
  );
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /libssl3 3\.0\.9-1 in the report, 3\.0\.11-1~deb12u2 installed/);
});
