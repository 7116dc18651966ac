import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { detectFromFiles } from "../../distro/detect.ts";
import { isSutureError } from "../../errors/errors.ts";
import { apkPackageManager } from "./apk/apk.ts";
import { nativeApkEngine } from "./apk/native/native.ts";
import { apkSandboxEngine } from "./apk/sandbox.ts";
import { dpkgPackageManager } from "./dpkg/dpkg.ts";
import { aptSandboxEngine } from "./dpkg/sandbox.ts";
import {
  type EngineContext,
  type EngineSandbox,
  engineMembers,
  engineOnDemand,
  type PatchEngine,
  selectEngine,
  type Targets,
} from "./engine.ts";
import { PACKAGE_MANAGERS } from "./package-managers.ts";
import { nativeRpmEngine } from "./rpm/native/native.ts";
import { rpmPackageManager } from "./rpm/rpm.ts";
import { rpmSandboxEngine } from "./rpm/sandbox.ts";

const ALPINE_DB = "P:musl\nV:1.2.5-r0\nA:x86_64\n\nP:busybox\nV:1.36.1-r29\nA:x86_64\n\n";

const imageOf = (files: Record<string, string | Buffer>) =>
  detectFromFiles(new Map(Object.entries(files).map(([p, c]) => [p, Buffer.from(c)])));

/** A real rpm database (SUSE BCI, ndb). */
const RPM_DB = readFileSync(
  join(import.meta.dirname, "../../../../shared/fixtures/rpmdb/sle15-bci/Packages.db"),
);

test("an image no package manager serves is refused in one line listing what suture patches", () => {
  const unknown = imageOf({ "/etc/os-release": 'ID=scratchy\nPRETTY_NAME="Scratchy 1"\n' });
  assert.throws(
    () => selectEngine("auto", unknown, PACKAGE_MANAGERS),
    (e: unknown) =>
      isSutureError(e, "UNSUPPORTED_OS") &&
      e.message ===
        'Scratchy 1 with package db "none" is not supported yet: suture patches Debian and Ubuntu images (dpkg), Alpine, Wolfi and Chainguard images (apk), RHEL, Fedora, Amazon Linux, Azure Linux and SUSE images (rpm)',
  );
});

test("rpm images go to the rpm package manager: native by default, sandbox only where the image has dnf, yum, microdnf, tdnf or zypper", () => {
  const withZypper = imageOf({
    "/etc/os-release": 'ID=sles\nPRETTY_NAME="SUSE Linux Enterprise Server 15 SP6"\n',
    "/usr/lib/sysimage/rpm/Packages.db": RPM_DB,
    "/usr/bin/zypper": "\x7fELF",
  });
  const auto = selectEngine("auto", withZypper, PACKAGE_MANAGERS);
  assert.equal(auto.manager.name, "rpm");
  assert.equal(auto.engine.kind, "native");
  assert.equal(selectEngine("sandbox", withZypper, PACKAGE_MANAGERS).engine.kind, "sandbox");
  // 1:1.0 is newer than 2.0: rpm's order, epoch first.
  assert.ok(auto.manager.compareVersions("1:1.0-1", "2.0-1") > 0);

  const micro = imageOf({
    "/etc/os-release": 'ID=rhel\nPRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"\n',
    "/usr/lib/sysimage/rpm/Packages.db": RPM_DB,
  });
  assert.equal(selectEngine("auto", micro, PACKAGE_MANAGERS).engine.kind, "native");
  assert.throws(
    () => selectEngine("sandbox", micro, PACKAGE_MANAGERS),
    (e: unknown) =>
      isSutureError(e, "USAGE") &&
      e.message ===
        "--engine sandbox needs dnf, yum, microdnf, tdnf or zypper in the image, and Red Hat Enterprise Linux 9.4 (Plow) has none: use --engine native (or leave --engine out)",
  );
});

test("apk images go to the apk package manager: native by default, sandbox only where the image has apk", () => {
  const alpine = imageOf({
    "/etc/os-release": 'ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n',
    "/lib/apk/db/installed": ALPINE_DB,
    "/sbin/apk": "\x7fELF",
  });
  const auto = selectEngine("auto", alpine, PACKAGE_MANAGERS);
  assert.equal(auto.manager.name, "apk");
  assert.equal(auto.engine.kind, "native");
  assert.equal(selectEngine("sandbox", alpine, PACKAGE_MANAGERS).engine.kind, "sandbox");

  // Chainguard's static image and distroless apk images: the database, no apk, maybe no os-release.
  for (const osRelease of ['ID=chainguard\nPRETTY_NAME="Chainguard"\n', undefined]) {
    const files: Record<string, string> = { "/lib/apk/db/installed": ALPINE_DB };
    if (osRelease) files["/etc/os-release"] = osRelease;
    const image = imageOf(files);
    assert.equal(selectEngine("auto", image, PACKAGE_MANAGERS).engine.kind, "native");
    assert.throws(
      () => selectEngine("sandbox", image, PACKAGE_MANAGERS),
      (e: unknown) =>
        isSutureError(e, "USAGE") &&
        e.message ===
          `--engine sandbox needs apk in the image, and ${osRelease ? "Chainguard" : "an unknown OS"} has none: use --engine native (or leave --engine out)`,
    );
  }
});

// The sandbox engines and the rpm and apk native engines are listed by what the pipeline reads
// before calling them and loaded on first use (engineOnDemand): what they say up front, and the
// members they have, must be what the engines themselves have.
const shape = (e: PatchEngine | undefined) =>
  e && { kind: e.kind, description: e.description, members: engineMembers(e) };

test("an engine loaded on demand is listed as the engine itself describes itself, member for member", () => {
  for (const [listed, engine] of [
    [dpkgPackageManager.sandbox, aptSandboxEngine],
    [rpmPackageManager.native, nativeRpmEngine],
    [rpmPackageManager.sandbox, rpmSandboxEngine],
    [apkPackageManager.native, nativeApkEngine],
    [apkPackageManager.sandbox, apkSandboxEngine],
  ] as const)
    assert.deepEqual(shape(listed), shape(engine));
});

test("an engine loaded on demand with a member its listing lacks is refused on first use, not run without it", async () => {
  const apply = async () => ({ before: new Map(), after: new Map(), failed: [], warnings: [] });
  const withEarlyWork = engineOnDemand({ kind: "native", description: "d", plans: false }, async () => ({
    kind: "native",
    description: "d",
    apply,
    startEarly: () => ({ owner: {}, cancel: async () => {} }),
  }));
  assert.deepEqual(engineMembers(withEarlyWork), ["apply", "description", "kind"]);
  await assert.rejects(
    withEarlyWork.apply({} as EngineSandbox, { packages: [] } as unknown as Targets, {} as EngineContext),
    (e: unknown) =>
      isSutureError(e, "INTERNAL") && e.message.includes("apply, description, kind, startEarly"),
  );
  const planning = engineOnDemand({ kind: "native", description: "d", plans: true }, async () => ({
    kind: "native",
    description: "d",
    apply,
  }));
  await assert.rejects(
    planning.apply({} as EngineSandbox, { packages: [] } as unknown as Targets, {} as EngineContext),
    (e: unknown) => isSutureError(e, "INTERNAL"),
  );
});
