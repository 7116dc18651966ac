import assert from "node:assert/strict";
import { test } from "node:test";
import { apkPackageManager } from "./apk/apk.ts";
import { nativeApkEngine } from "./apk/native/native.ts";
import { apkSandboxEngine } from "./apk/sandbox.ts";
import { dpkgPackageManager } from "./dpkg/dpkg.ts";
import { aptSandboxEngine } from "./dpkg/sandbox.ts";
import type { PatchEngine } from "./engine.ts";
import { nativeRpmEngine } from "./rpm/native/native.ts";
import { rpmPackageManager } from "./rpm/rpm.ts";
import { rpmSandboxEngine } from "./rpm/sandbox.ts";

// The sandbox engines and the rpm and apk native engines are listed by what the pipeline reads
// before calling them and loaded on first use (engineOnDemand): what they say up front must be
// what the engines themselves say.
const shape = (e: PatchEngine | undefined) =>
  e && { kind: e.kind, description: e.description, plans: !!e.plan };

test("an engine loaded on demand is listed as the engine itself describes itself", () => {
  for (const [listed, engine] of [
    [dpkgPackageManager.sandbox, aptSandboxEngine],
    [rpmPackageManager.native, nativeRpmEngine],
    [rpmPackageManager.sandbox, rpmSandboxEngine],
    [apkPackageManager.native, nativeApkEngine],
    [apkPackageManager.sandbox, apkSandboxEngine],
  ] as const)
    assert.deepEqual(shape(listed), shape(engine));
});
