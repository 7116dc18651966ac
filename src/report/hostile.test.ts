import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { formatBytes, isSutureError } from "../errors/errors.ts";
import { DEFAULT_MAX_REPORT_BYTES, parseReportSizeLimit } from "./limits.ts";
import { runScannerPlugin } from "./plugin.ts";
import { readReport } from "./read.ts";
import { formatPlanTable } from "./render.ts";

// Reports are untrusted input: whatever a scanner (or whoever wrote the file) put in them must
// not reach a command line, a file name or a table line unchecked, and no report may make
// suture read without bound or spin.

const scratch = mkdtempSync(join(tmpdir(), "suture-hostile-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let counter = 0;
function writeReport(value: unknown, name = `r${counter++}.json`): string {
  const file = join(scratch, name);
  writeFileSync(file, typeof value === "string" ? value : JSON.stringify(value));
  return file;
}

/** Rejects with `code`, in one line, matching every pattern. */
async function rejects(p: Promise<unknown>, code: string, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(isSutureError(e), `not a SutureError: ${e}`);
    assert.equal(e.code, code, e.message);
    assert.doesNotMatch(e.message, /[\n\r\0]/, "one line, no raw control characters");
    for (const re of patterns) assert.match(e.message, re);
    return true;
  });
}

const trivy = (family: string, vulns: unknown[], extra: Record<string, unknown> = {}) => ({
  SchemaVersion: 2,
  Metadata: { OS: { Family: family, Name: "12.5" }, ImageConfig: { architecture: "amd64" } },
  Results: [{ Target: `img (${family} 12.5)`, Class: "os-pkgs", Type: family, Vulnerabilities: vulns }],
  ...extra,
});
const vuln = (name: string, installed = "1.0-1", fixed = "1.0-2") => ({
  VulnerabilityID: "CVE-2024-0001",
  PkgName: name,
  InstalledVersion: installed,
  FixedVersion: fixed,
});

test("hostile package names in a Trivy report are refused, naming the report, the entry and the rule", async () => {
  const names: [string, RegExp][] = [
    ["-oDpkg::Post-Invoke=touch /tmp/pwned", /"-oDpkg::Post-Invoke=touch \/tmp\/pwned"/],
    ["libc6\nlibevil", /"libc6\\nlibevil"/],
    ["../../etc/passwd", /"\.\.\/\.\.\/etc\/passwd"/],
    ["..", /"\.\."/],
    ["lib/ssl", /"lib\/ssl"/],
    ["libc6\0", /"libc6\\u0000"/],
    ["a".repeat(300), /"a{200}…"/],
    ["LibSSL", /"LibSSL"/], // Debian names are lower-case
    ["", /""/],
  ];
  for (const [name, quoted] of names) {
    const file = writeReport(trivy("debian", [vuln("openssl"), vuln(name)]));
    await rejects(
      readReport(file),
      "INVALID_REPORT",
      new RegExp(
        `^${file.replaceAll(".", "\\.")}: \\$\\.Results\\[0\\]\\.Vulnerabilities\\[1\\] has a package name `,
      ),
      quoted,
      /breaks Debian Policy §5\.6 \(a-z 0-9 \+ - \. only, starting with a-z or 0-9, at most 256 characters\)/,
      /scan the image again$/,
    );
  }
});

test("hostile versions are refused; a harmless version that is not valid for the format is only skipped", async () => {
  for (const [installed, fixed, shown] of [
    ["1.0-1", "1.0-2 1.0-3", /version "1\.0-2 1\.0-3"/],
    ["1.0-1", "1.0/../2", /version "1\.0\/\.\.\/2"/],
    ["1.0-1\n", "1.0-2", /version "1\.0-1\\n"/],
    ["-1.0", "1.0-2", /version "-1\.0"/],
    ["1.0-1", "1.0-2, 1.0-3;rm", /version "1\.0-3;rm"/],
    ["1.0-1", `1.${"9".repeat(300)}`, /version "1\.9{198}…"/],
  ] as const) {
    await rejects(
      readReport(writeReport(trivy("debian", [vuln("libfoo", installed, fixed)]))),
      "INVALID_REPORT",
      /Vulnerabilities\[0\] has a package /,
      shown,
      /A-Z a-z 0-9 \. \+ ~ : - only/,
    );
  }
  // Plain text that just is not a Debian version (dpkg wants a leading digit): skipped, as before.
  const plan = await readReport(writeReport(trivy("debian", [vuln("libfoo", "1.0-1", "abc")])));
  assert.deepEqual(
    plan.skipped.map((s) => [s.name, s.reason]),
    [["libfoo", "invalid-version"]],
  );
});

test("each package format has its own rules, and an unknown OS gets what any format allows", async () => {
  // apk allows upper case and _; rpm allows upper case; neither allows / or a leading -.
  const alpine = await readReport(
    writeReport(trivy("alpine", [vuln("py3-Babel_x", "2.9.1-r0", "2.9.1-r1")])),
  );
  assert.equal(alpine.updates[0]?.name, "py3-Babel_x");
  await rejects(
    readReport(writeReport(trivy("alpine", [vuln("musl/../../x", "1.1.20-r4", "1.1.20-r5")]))),
    "INVALID_REPORT",
    /package name "musl\/\.\.\/\.\.\/x" that breaks apk-tools' package syntax/,
  );
  const rpm = await readReport(
    writeReport(trivy("redhat", [vuln("NetworkManager", "1:1.0-1.el8", "1:1.0-2.el8")])),
  );
  assert.equal(rpm.updates[0]?.packageType, "rpm");
  await rejects(
    readReport(writeReport(trivy("redhat", [vuln("--nodeps", "1.0-1", "1.0-2")]))),
    "INVALID_REPORT",
    /"--nodeps" that breaks rpm's package syntax/,
  );
  // An OS suture has no package format for: still listed, so still checked.
  const unknown = await readReport(writeReport(trivy("plan9", [vuln("Foo_bar", "1", "2")])));
  assert.equal(unknown.updates[0]?.name, "Foo_bar");
  await rejects(
    readReport(writeReport(trivy("plan9", [vuln("foo bar", "1", "2")]))),
    "INVALID_REPORT",
    /"foo bar" that breaks the package syntax of deb, apk and rpm/,
  );
});

test("Grype matches and copa UpdateManifests are checked the same way, with their own entry paths", async () => {
  const grype = writeReport({
    distro: { name: "debian", version: "12" },
    source: { type: "image", target: { architecture: "amd64" } },
    matches: [
      {
        vulnerability: { id: "CVE-1", fix: { versions: ["2.36-9+deb12u7"], state: "fixed" } },
        artifact: { name: "libc6", version: "2.36-9", type: "deb" },
      },
      {
        vulnerability: { id: "CVE-2", fix: { versions: ["1.0-2"], state: "fixed" } },
        artifact: { name: "-oAPT::Get::AllowUnauthenticated=1", version: "1.0-1", type: "deb" },
      },
    ],
  });
  await rejects(
    readReport(grype),
    "INVALID_REPORT",
    /: \$\.matches\[1\] has a package name "-oAPT::Get::AllowUnauthenticated=1"/,
  );
  const v1 = writeReport({
    apiVersion: "v1alpha1",
    metadata: { os: { type: "debian", version: "12" }, config: { arch: "amd64" } },
    updates: [
      { name: "libc6", installedVersion: "2.36-9", fixedVersion: "2.36-9 +x", vulnerabilityID: "CVE-1" },
    ],
  });
  await rejects(readReport(v1), "INVALID_REPORT", /: \$\.updates\[0\] has a package version "2\.36-9 \+x"/);
  const v2 = writeReport({
    apiVersion: "v1alpha2",
    metadata: { os: { type: "debian", version: "12" }, config: { arch: "amd64" } },
    osupdates: [
      { name: "libc6", installedVersion: "2.36-9", fixedVersion: "2.36-9+deb12u7", vulnerabilityID: "CVE-1" },
      { name: "evil\r\nTrusted: yes", installedVersion: "", fixedVersion: "1", vulnerabilityID: "CVE-2" },
    ],
  });
  await rejects(
    readReport(v2),
    "INVALID_REPORT",
    /: \$\.osupdates\[1\] has a package name "evil\\r\\nTrusted: yes"/,
  );
});

test("language packages are only listed, not checked, and a table shows them escaped on one line", async () => {
  const report = trivy("debian", [vuln("openssl", "3.0.11-1", "3.0.13-1")]);
  report.Results.push({
    Target: "app/package-lock.json",
    Class: "lang-pkgs",
    Type: "npm",
    Vulnerabilities: [
      {
        VulnerabilityID: "GHSA-1\nfake row",
        PkgName: "@scope/evil\u001b[2J\npkg",
        InstalledVersion: "1.0.0",
      },
    ],
  });
  const plan = await readReport(writeReport(report));
  assert.deepEqual(
    plan.skipped.map((s) => s.reason),
    ["language-package"],
  );
  const table = formatPlanTable(plan, { showSkipped: true });
  assert.doesNotMatch(table, /\u001b|\nfake row|\npkg/);
  assert.match(
    table,
    /^"@scope\/evil\\u001b\[2J\\npkg"\s+1\.0\.0\s+"GHSA-1\\nfake row"\s+language-package$/m,
  );
});

test("an image architecture or variant that is not OCI's is refused", async () => {
  const report = trivy("debian", [vuln("openssl")]);
  report.Metadata.ImageConfig = { architecture: "amd64\nEVIL" };
  await rejects(
    readReport(writeReport(report)),
    "INVALID_REPORT",
    /names the image architecture "amd64\\nEVIL", which is not an OCI architecture/,
  );
  const manifest = {
    apiVersion: "v1alpha2",
    metadata: { os: { type: "debian", version: "12" }, config: { arch: "arm", variant: "../v7" } },
    osupdates: [],
  };
  await rejects(readReport(writeReport(manifest)), "INVALID_REPORT", /image variant "\.\.\/v7"/);
});

test("deeply nested JSON is refused before it is parsed, wherever it sits", async () => {
  const depth = 1_000_000;
  // Nested inside a field suture does not read: it would be dropped, but parsing it is the cost.
  const nested = `${"[".repeat(depth)}${"]".repeat(depth)}`;
  const text = JSON.stringify(trivy("debian", [vuln("openssl")])).replace(
    '"SchemaVersion":2',
    `"SchemaVersion":2,"Extra":${nested}`,
  );
  const started = performance.now();
  await rejects(
    readReport(writeReport(text)),
    "INVALID_REPORT",
    /nests JSON deeper than 64 levels \(at byte \d+\); no scanner writes that/,
  );
  assert.ok(performance.now() - started < 5000, "refused without parsing a million levels");
  // Brackets inside strings are text, not nesting.
  const inString = await readReport(
    writeReport(
      JSON.stringify(trivy("debian", [vuln("openssl")], { ArtifactName: `${"[{".repeat(100)}\\"\\\\"` })),
    ),
  );
  assert.equal(inString.updates.length, 1);
  // A SARIF-looking document whose $schema is a deep array: refused, not a stack overflow.
  await rejects(
    readReport(writeReport(`{"runs":[],"$schema":${"[".repeat(50_000)}${"]".repeat(50_000)}}`)),
    "INVALID_REPORT",
    /nests JSON deeper than 64 levels/,
  );
});

test("a report over the size limit is refused before it is read; --max-report-size raises the limit", async () => {
  const sparse = join(scratch, "huge.json");
  writeFileSync(sparse, "");
  execFileSync("truncate", ["-s", "100G", sparse]); // sparse: takes no disk, would take minutes to read
  const started = performance.now();
  await rejects(
    readReport(sparse),
    "INVALID_REPORT",
    /^report .*huge\.json is 100 GiB, more than the 64 MiB a report may be; if it really is one scanner report, raise the limit with --max-report-size 500MiB$/,
  );
  assert.ok(performance.now() - started < 2000, "refused from its size alone");
  const medium = join(scratch, "medium.json");
  writeFileSync(medium, "");
  execFileSync("truncate", ["-s", "70M", medium]);
  await rejects(readReport(medium), "INVALID_REPORT", /is 70 MiB, .*--max-report-size 256MiB/);

  const small = writeReport(trivy("debian", [vuln("openssl")]));
  const size = readFileSync(small).length;
  await rejects(
    readReport(small, { maxReportBytes: size - 1 }),
    "INVALID_REPORT",
    new RegExp(
      `is ${formatBytes(size).replace(".", "\\.")}, more than the ${size - 1} bytes a report may be`,
    ),
  );
  assert.equal((await readReport(small, { maxReportBytes: size })).updates.length, 1);
  // Something that is not a regular file is read only up to the limit.
  await rejects(
    readReport("/dev/zero", { maxReportBytes: 1024 * 1024 }),
    "INVALID_REPORT",
    /report \/dev\/zero is more than the 1 MiB a report may be/,
  );
});

test("--max-report-size values", () => {
  assert.equal(parseReportSizeLimit("64MiB"), DEFAULT_MAX_REPORT_BYTES);
  assert.equal(parseReportSizeLimit("64m"), DEFAULT_MAX_REPORT_BYTES);
  assert.equal(parseReportSizeLimit("100MB"), 100 * 1024 * 1024);
  assert.equal(parseReportSizeLimit("1.5K"), 1536);
  assert.equal(parseReportSizeLimit("4096"), 4096);
  for (const bad of ["", "-1", "0", "12 parsecs", "1e9", "600MiB", "1T"]) {
    assert.throws(
      () => parseReportSizeLimit(bad),
      (e) => isSutureError(e) && e.code === "USAGE" && /invalid --max-report-size/.test(e.message),
      bad,
    );
  }
  assert.equal(formatBytes(DEFAULT_MAX_REPORT_BYTES), "64 MiB");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(100), "100 bytes");
});

test("a report with a hundred thousand findings is read and shown in linear time", async () => {
  const n = 100_000;
  const vulns = Array.from({ length: n }, (_, i) => ({
    VulnerabilityID: `CVE-2024-${i}`,
    PkgName: `lib${i % 25_000}`,
    InstalledVersion: "1.0-1",
    FixedVersion: `1.0-${2 + (i % 3)}`,
  }));
  const file = writeReport(trivy("debian", vulns));
  const started = performance.now();
  const plan = await readReport(file);
  assert.equal(plan.updates.length, 25_000);
  assert.equal(plan.findings, n);
  const table = formatPlanTable(plan);
  assert.equal(table.split("\n").filter((l) => l.includes("→")).length, 25_000);
  // Generous for a shared 2-core machine; anything quadratic would take minutes.
  assert.ok(performance.now() - started < 60_000, `took ${Math.round(performance.now() - started)} ms`);
});

test("a plugin's hostile UpdateManifest is refused naming the plugin; its endless output stops at the limit", async () => {
  const bin = join(scratch, "bin");
  mkdirSync(bin, { recursive: true });
  const plugin = (name: string, script: string) => {
    writeFileSync(join(bin, `copa-${name}`), script);
    chmodSync(join(bin, `copa-${name}`), 0o755);
  };
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}` };
  const manifest = JSON.stringify({
    apiVersion: "v1alpha2",
    metadata: { os: { type: "debian", version: "12" }, config: { arch: "amd64" } },
    osupdates: [{ name: "-oDir=/", installedVersion: "1", fixedVersion: "2", vulnerabilityID: "CVE-1" }],
  });
  plugin("hostile", `#!/bin/sh\ncat <<'EOF'\n${manifest}\nEOF\n`);
  const input = writeReport({ anything: true });
  await rejects(
    runScannerPlugin("hostile", input, { env }),
    "INVALID_REPORT",
    /the UpdateManifest copa-hostile made of .*: \$\.osupdates\[0\] has a package name "-oDir=\/"/,
    /fix the plugin$/,
  );

  // Whatever the plugin started is stopped with it (here a sleeper that never writes, so it
  // would not die of a closed pipe): the plugin runs in its own process group.
  const pidFile = join(scratch, "sleeper.pid");
  plugin("endless", `#!/bin/sh\nsleep 300 &\necho $! > ${pidFile}\nexec yes '{"apiVersion":"v1alpha2"}'\n`);
  const started = performance.now();
  await rejects(
    runScannerPlugin("endless", input, { env, maxReportBytes: 1024 * 1024 }),
    "INVALID_REPORT",
    /^the output of copa-endless is more than the 1 MiB a report may be; .* --max-report-size 128MiB$/,
  );
  assert.ok(performance.now() - started < 10_000);
  const sleeper = Number(readFileSync(pidFile, "utf8"));
  for (let i = 0; i < 50 && isRunning(sleeper); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(isRunning(sleeper), false, "what the plugin started was killed too");
});

function isRunning(pid: number): boolean {
  try {
    // A zombie has exited; only a process still running counts.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
