import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { runScannerPlugin } from "./plugin.ts";
import { readReport } from "./read.ts";

const FIXTURES = join(import.meta.dirname, "../../../shared/fixtures");
const root = mkdtempSync(join(tmpdir(), "suture-plugin-"));
const bin = join(root, "bin");
after(() => rmSync(root, { recursive: true, force: true }));

/** Install an executable `copa-NAME` in the temporary PATH directory. */
function plugin(name: string, script: string, mode = 0o755): void {
  const file = join(bin, `copa-${name}`);
  writeFileSync(file, script);
  chmodSync(file, mode);
}

// A real plugin in the shape of copa's scanner-plugin template: it converts its own report
// format (copa's plugin-valid_report.json shape) into a v1alpha2 UpdateManifest on stdout and
// logs to stderr, which must not corrupt the JSON.
const converter = join(root, "convert.mjs");
writeFileSync(
  converter,
  `import { readFileSync } from "node:fs";
if (process.argv.length !== 3) { console.error("expected exactly one argument, got " + (process.argv.length - 2)); process.exit(9); }
const r = JSON.parse(readFileSync(process.argv[2], "utf8"));
console.error("copa-fake: converting " + r.Packages.length + " packages");
console.log(JSON.stringify({
  apiVersion: "v1alpha2",
  metadata: { os: { type: r.OSType, version: r.OSVersion }, config: { arch: r.Arch } },
  osupdates: r.Packages.map((p) => ({ name: p.Name, installedVersion: p.InstalledVersion, fixedVersion: p.FixedVersion, vulnerabilityID: p.VulnerabilityID, type: r.OSType, class: "os-pkgs" })),
}));
`,
);
mkdirSync(bin);
plugin("fake", `#!/bin/sh\nexec "${process.execPath}" "${converter}" "$@"\n`);
plugin("fail", `#!/bin/sh\necho "reading $1" >&2\necho "boom: unsupported report" >&2\nexit 3\n`);
plugin("garbage", `#!/bin/sh\necho "Scanning... done"\necho "warning: old db" >&2\n`);
plugin("silent", `#!/bin/sh\nexit 0\n`);
plugin("wrongapi", `#!/bin/sh\necho '{"apiVersion":"v9","updates":[]}'\n`);
plugin(
  "badshape",
  `#!/bin/sh\necho '{"apiVersion":"v1alpha1","updates":[{"name":"x","fixedVersion":["1"]}]}'\necho "partial db" >&2\n`,
);
plugin("slow", `#!/bin/sh\nexec sleep 30\n`);
// Says it has started (a file appears) before it hangs, so the test cancels it while it runs.
const slowStarted = join(root, "slow-started");
plugin("slowmark", `#!/bin/sh\n: > "${slowStarted}"\nexec sleep 30\n`);
plugin("noexec", `#!/bin/sh\necho '{}'\n`, 0o644);

const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}` };

const customReport = join(root, "custom.json");
writeFileSync(
  customReport,
  JSON.stringify({
    OSType: "debian",
    OSVersion: "12",
    Arch: "arm64",
    Packages: [
      {
        Name: "libssl3",
        InstalledVersion: "3.0.11-1~deb12u1",
        FixedVersion: "3.0.11-1~deb12u2",
        VulnerabilityID: "CVE-2023-5678",
      },
      {
        Name: "libssl3",
        InstalledVersion: "3.0.11-1~deb12u1",
        FixedVersion: "3.0.13-1~deb12u1",
        VulnerabilityID: "CVE-2024-0727",
      },
    ],
  }),
);

async function rejects(p: Promise<unknown>, code: string, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(isSutureError(e), `not a SutureError: ${e}`);
    assert.equal(e.code, code, e.message);
    for (const re of patterns) assert.match(e.message, re);
    return true;
  });
}

test("a plugin on PATH turns its report into a plan (-s NAME runs copa-NAME REPORT)", async () => {
  const plan = await readReport(customReport, { scanner: "fake", env });
  assert.deepEqual(plan.source, { format: "plugin:fake", file: customReport });
  assert.deepEqual(plan.os, { family: "debian", version: "12" });
  assert.equal(plan.arch, "arm64");
  assert.deepEqual(plan.updates, [
    {
      name: "libssl3",
      installedVersion: "3.0.11-1~deb12u1",
      fixedVersion: "3.0.13-1~deb12u1",
      vulnerabilities: ["CVE-2023-5678", "CVE-2024-0727"],
      type: "debian",
      class: "os-pkgs",
      packageType: "deb",
    },
  ]);
});

test("copa's plugin input fixture through a real plugin", async (t) => {
  const input = join(FIXTURES, "copa-reports/plugin-valid_report.json");
  if (!existsSync(input)) return t.skip("skipped: ../shared not present");
  const plan = await runScannerPlugin("fake", input, { env });
  assert.deepEqual(plan.os, { family: "alpine", version: "3.7.3" });
  assert.deepEqual(
    plan.updates.map((u) => [u.name, u.installedVersion, u.fixedVersion, u.vulnerabilities, u.packageType]),
    [["musl", "1.1.18-r3", "1.1.18-r4", ["CVE-2019-14697"], "apk"]],
  );
  assert.ok(JSON.parse(readFileSync(input, "utf8")).Packages, "fixture is the plugin's own format");
});

test("plugin failures name the plugin and quote its stderr", async () => {
  await rejects(
    readReport(customReport, { scanner: "fail", env }),
    "INVALID_REPORT",
    /copa-fail exited with status 3/,
    /boom: unsupported report/,
    /reading .*custom\.json/,
  );
  await rejects(
    readReport(customReport, { scanner: "garbage", env }),
    "INVALID_REPORT",
    /copa-garbage did not print a JSON UpdateManifest/,
    /output starts "Scanning\.\.\. done"/,
    /plugin stderr: warning: old db/,
  );
  await rejects(
    readReport(customReport, { scanner: "silent", env }),
    "INVALID_REPORT",
    /did not print a JSON UpdateManifest \(no output\)/,
  );
  await rejects(
    readReport(customReport, { scanner: "wrongapi", env }),
    "INVALID_REPORT",
    /unsupported UpdateManifest apiVersion "v9"/,
  );
  await rejects(
    readReport(customReport, { scanner: "badshape", env }),
    "INVALID_REPORT",
    /output of copa-badshape/,
    /\$\.updates\[0\]\.fixedVersion/,
    /plugin stderr: partial db/,
  );
});

test("plugin lookup, names, timeouts and cancellation", async () => {
  await rejects(
    readReport(customReport, { scanner: "absent", env }),
    "USAGE",
    /copa-absent was not found on PATH/,
  );
  await rejects(
    readReport(customReport, { scanner: "noexec", env }),
    "USAGE",
    /copa-noexec is not executable/,
  );
  await rejects(readReport(customReport, { scanner: "-rf", env }), "USAGE", /invalid --scanner "-rf"/);
  await rejects(runScannerPlugin("../fake", customReport, { env }), "USAGE", /invalid scanner/);
  await rejects(readReport(join(root, "missing.json"), { scanner: "fake", env }), "IO", /cannot read report/);
  const started = Date.now();
  await rejects(
    readReport(customReport, { scanner: "slow", env, timeoutMs: 300 }),
    "TIMEOUT",
    /copa-slow ran longer than/,
  );
  assert.ok(Date.now() - started < 5000, "the plugin was killed, not waited for");
  const controller = new AbortController();
  const running = readReport(customReport, { scanner: "slowmark", env, signal: controller.signal });
  let settled = false;
  running.catch(() => {}).finally(() => (settled = true));
  // Cancel once the plugin runs (a fixed delay could fire before it is even started).
  while (!existsSync(slowStarted) && !settled) await new Promise((r) => setTimeout(r, 10));
  controller.abort();
  await rejects(running, "CANCELLED", /copa-slowmark was cancelled/);
});
