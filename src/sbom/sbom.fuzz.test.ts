import assert from "node:assert/strict";
import { before, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  withinBudget,
} from "../../test/fuzz/fuzz.ts";
import { minirootfs, readRootfsFiles } from "../../test/lab/alpine-rootfs.ts";
import { isValidPackageName } from "../distro/package-syntax.ts";
import { inventoryFromFiles, sbomWants } from "./inventory.ts";
import { buildSbom } from "./sbom.ts";

// Property: an image whose package database, os-release or release files are hostile gives an
// inventory whose packages have valid names and purls, and documents that serialise, or one line
// of INVALID_MANIFEST; within a time budget. Seeds: Alpine 3.20.3's files and a dpkg status.

let seed: Map<string, Buffer>;
const DIGEST = `sha256:${"a".repeat(64)}`;
const STATUS =
  "Package: bsdutils\nStatus: install ok installed\nSource: util-linux (2.38.1-5)\nArchitecture: amd64\nVersion: 1:2.38.1-5+b1\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n";

before(async () => {
  const files = await readRootfsFiles(minirootfs("3.20.3", "x86_64"), (p) => sbomWants(`/${p}`));
  seed = new Map([...files].map(([p, c]) => [`/${p}`, c]));
  assert.ok(seed.has("/lib/apk/db/installed") && seed.has("/etc/alpine-release"));
});

function check(files: Map<string, Buffer>): void {
  const inv = withinBudget(PARSE_BUDGET_MS, () =>
    parsesOrFailsCleanly(["INVALID_MANIFEST"], () =>
      inventoryFromFiles(files, {
        name: "x",
        digest: DIGEST,
        platform: { os: "linux", architecture: "amd64" },
      }),
    ),
  );
  if (!inv) return;
  for (const p of inv.packages) {
    assert.ok(isValidPackageName(p.format, p.name), p.name);
    assert.match(p.purl, /^pkg:(?:deb|apk|rpm)\/[^\s]*$/);
  }
  for (const format of ["cyclonedx", "spdx"] as const)
    JSON.stringify(buildSbom(format, { images: [inv] }, { toolVersion: "0", timestamp: new Date(0) }));
}

test("a hostile apk database or release file: an inventory of valid packages, or one line of INVALID_MANIFEST", () => {
  for (const path of ["/lib/apk/db/installed", "/etc/alpine-release", "/etc/os-release"]) {
    fc.assert(
      fc.property(hostileText([seed.get(path)!.toString("utf8")]), (text) => {
        const files = new Map(seed);
        files.set(path, Buffer.from(text));
        check(files);
      }),
      fuzzParameters(60),
    );
  }
});

test("a hostile dpkg status or debian_version: an inventory of valid packages, or one line of INVALID_MANIFEST", () => {
  for (const [path, text] of [
    ["/var/lib/dpkg/status", STATUS],
    ["/etc/debian_version", "12.5\n"],
  ] as const) {
    fc.assert(
      fc.property(hostileText([text]), (mutated) => {
        const files = new Map<string, Buffer>([
          ["/etc/os-release", Buffer.from("ID=debian\nVERSION_ID=12\n")],
          ["/etc/debian_version", Buffer.from("12.5\n")],
          ["/var/lib/dpkg/status", Buffer.from(STATUS)],
        ]);
        files.set(path, Buffer.from(mutated));
        check(files);
      }),
      fuzzParameters(100),
    );
  }
});
