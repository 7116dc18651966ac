import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { once, pendingSandboxCleanups, registerCleanup, runSandboxCleanups } from "./cleanup.ts";
import {
  buildRuntimeSpec,
  DEFAULT_CAPABILITIES,
  defaultMounts,
  findRuntime,
  mergeEnv,
  missingMountPoints,
} from "./runtime.ts";

const work = mkdtempSync(join(tmpdir(), "suture-runtime-unit-"));
after(() => rmSync(work, { recursive: true, force: true }));

describe("buildRuntimeSpec", () => {
  const spec = buildRuntimeSpec({
    rootfs: "/x/merged",
    args: ["apt-get", "update"],
    env: ["PATH=/bin"],
    cwd: "/",
    hostname: "suture",
    mounts: defaultMounts(),
    nofileHard: 20000,
  }) as {
    process: {
      capabilities: Record<string, string[]>;
      user: { uid: number; gid: number };
      noNewPrivileges: boolean;
      rlimits: { type: string; soft: number; hard: number }[];
    };
    linux: { namespaces: { type: string }[] };
    mounts: { destination: string; type: string; options: string[] }[];
    root: { path: string };
  };

  test("runs as root with Docker's default capabilities and never CAP_SYS_RESOURCE", () => {
    assert.deepEqual(spec.process.user, { uid: 0, gid: 0 });
    for (const set of ["bounding", "effective", "permitted"]) {
      assert.deepEqual(spec.process.capabilities[set], [...DEFAULT_CAPABILITIES]);
      assert.ok(!(spec.process.capabilities[set] as string[]).includes("CAP_SYS_RESOURCE"));
    }
    assert.equal(spec.process.noNewPrivileges, true);
  });

  test("shares the host network: no network namespace", () => {
    const types = spec.linux.namespaces.map((n) => n.type).sort();
    assert.deepEqual(types, ["ipc", "mount", "pid", "uts"]);
  });

  test("never raises RLIMIT_NOFILE above the host's hard limit", () => {
    const nofile = spec.process.rlimits.find((r) => r.type === "RLIMIT_NOFILE")!;
    assert.ok(nofile.hard <= 20000 && nofile.soft <= nofile.hard);
  });

  test("mounts resolv.conf read-only and /tmp as tmpfs", () => {
    const resolv = spec.mounts.find((m) => m.destination === "/etc/resolv.conf")!;
    assert.equal(resolv.type, "bind");
    assert.ok(resolv.options.includes("ro") && resolv.options.includes("rbind"));
    assert.equal(spec.mounts.find((m) => m.destination === "/tmp")?.type, "tmpfs");
    assert.equal(spec.root.path, "/x/merged");
  });
});

test("mergeEnv: later keys win, first position kept", () => {
  assert.deepEqual(mergeEnv(["PATH=/a", "LANG=C"], undefined, ["PATH=/b", "X=1"], null), [
    "PATH=/b",
    "LANG=C",
    "X=1",
  ]);
});

test("missingMountPoints follows symlinks inside the root, like the runtime", async () => {
  const root = join(work, "rootfs");
  mkdirSync(join(root, "etc"), { recursive: true });
  mkdirSync(join(root, "proc"));
  mkdirSync(join(root, "run"));
  writeFileSync(join(root, "etc/hostname"), "");
  // Ubuntu-style: /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf (absent).
  symlinkSync("../run/systemd/resolve/stub-resolv.conf", join(root, "etc/resolv.conf"));
  symlinkSync("/run", join(root, "var-run"));
  const missing = await missingMountPoints(root, [
    "/proc",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/sys",
    "/var-run/lock",
  ]);
  assert.deepEqual(missing, [
    join(root, "run/systemd"),
    join(root, "run/systemd/resolve"),
    join(root, "run/systemd/resolve/stub-resolv.conf"),
    join(root, "sys"),
    join(root, "run/lock"),
  ]);
});

test("findRuntime names the package to install when the runtime is missing", async () => {
  await assert.rejects(findRuntime("/nonexistent/runc"), (e: unknown) => {
    assert.ok(isSutureError(e, "SANDBOX"));
    assert.match(e.message, /runc not found: apt-get install runc/);
    return true;
  });
});

test("cleanup registry runs each cleanup once, newest first, and reports failures", async () => {
  const order: string[] = [];
  const first = once(async () => {
    order.push("mount");
  });
  registerCleanup("mount", first);
  registerCleanup("container", async () => {
    order.push("container");
  });
  const unregister = registerCleanup("never", async () => {
    order.push("never");
  });
  unregister();
  registerCleanup("broken", async () => {
    throw new Error("busy");
  });
  assert.deepEqual(pendingSandboxCleanups(), ["mount", "container", "broken"]);
  const failures = await runSandboxCleanups();
  assert.deepEqual(
    failures.map((f) => f.description),
    ["broken"],
  );
  await first(); // the owner's own call after a signal handler ran it: no second run
  assert.deepEqual(order, ["container", "mount"]);
  assert.deepEqual(pendingSandboxCleanups(), []);
});
