import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { requiring } from "../lab/requirements.ts";

const { after, test } = await requiring("root", "loopback", "runc");

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
const shared = join(import.meta.dirname, "../../../shared/fixtures");

test("suture report prints the plan of a real Trivy report", {
  skip: !existsSync(shared) && "skipped: ../shared not present",
}, async () => {
  const { stdout } = await run(suture, [
    "report",
    join(shared, "trivy-golden/debian-buster.json"),
    "--format",
    "json",
  ]);
  const plan = JSON.parse(stdout);
  const idn = plan.updates.find((u: { name: string }) => u.name === "libidn2-0");
  assert.equal(idn.fixedVersion, "2.0.5-1+deb10u1");
});

test("suture report rejects a malformed report in one line", {
  skip: !existsSync(shared) && "skipped: ../shared not present",
}, async () => {
  await assert.rejects(
    run(suture, ["report", join(shared, "copa-reports/report-invalid.json")]),
    (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 1);
      assert.match(e.stderr, /^error: .*not JSON.*\[INVALID_REPORT\]\n$/);
      return true;
    },
  );
});

test("--version and help work", async () => {
  const v = await run(suture, ["--version"]);
  assert.match(v.stdout, /^\d+\.\d+\.\d+\n$/);
  const h = await run(suture, ["help", "copy"]);
  assert.match(h.stdout, /copy an image or index/);
});

// Inputs that look like options, oversized reports and runaway plugins, through the real CLI.
const scratch = mkdtempSync(join(tmpdir(), "suture-cli-report-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
const bin = join(scratch, "bin");
mkdirSync(bin);
const pluginEnv = { ...process.env, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}` };
function plugin(name: string, script: string): void {
  writeFileSync(join(bin, `copa-${name}`), script);
  chmodSync(join(bin, `copa-${name}`), 0o755);
}
const trivyReport = JSON.stringify({
  SchemaVersion: 2,
  Metadata: { OS: { Family: "debian", Name: "12.5" }, ImageConfig: { architecture: "amd64" } },
  Results: [
    {
      Target: "img (debian 12.5)",
      Class: "os-pkgs",
      Type: "debian",
      Vulnerabilities: [
        {
          VulnerabilityID: "CVE-2024-0727",
          PkgName: "libssl3",
          InstalledVersion: "3.0.11-1~deb12u2",
          FixedVersion: "3.0.13-1~deb12u1",
        },
      ],
    },
  ],
});

/** Expect exit `code` and exactly one line on stderr matching every pattern. */
async function fails(
  args: string[],
  code: number,
  options: { cwd?: string; env?: NodeJS.ProcessEnv },
  ...patterns: RegExp[]
) {
  await assert.rejects(run(suture, args, options), (e: { code: number; stderr: string }) => {
    assert.equal(e.code, code, e.stderr);
    assert.match(e.stderr, /^error: [^\n]*\n$/);
    for (const re of patterns) assert.match(e.stderr, re);
    return true;
  });
}

test("a report path starting with - is a file after --, and reaches a plugin as ./-x, never as an option", async () => {
  const cwd = mkdtempSync(join(scratch, "cwd-"));
  writeFileSync(join(cwd, "-evil.json"), trivyReport);
  const { stdout } = await run(suture, ["report", "--format", "json", "--", "-evil.json"], { cwd });
  assert.deepEqual(
    JSON.parse(stdout).updates.map((u: { name: string; fixedVersion: string }) => [u.name, u.fixedVersion]),
    [["libssl3", "3.0.13-1~deb12u1"]],
  );
  // Without --, it is an unknown option: a usage error, nothing read.
  await assert.rejects(
    run(suture, ["report", "-evil.json"], { cwd }),
    (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 2);
      assert.match(e.stderr, /^error: unknown option '-evil\.json'\n/);
      return true;
    },
  );

  // copa's protocol: the report path is the plugin's only argument. This plugin records its argv
  // and, like a careless plugin would, takes anything starting with - as an option.
  const argvFile = join(scratch, "argv.json");
  const recorder = join(scratch, "record.mjs");
  writeFileSync(
    recorder,
    `import { readFileSync, writeFileSync } from "node:fs";
const args = process.argv.slice(2);
writeFileSync(${JSON.stringify(argvFile)}, JSON.stringify(args));
if (args.some((a) => a.startsWith("-"))) { console.error("unknown option " + args[0]); process.exit(2); }
const report = JSON.parse(readFileSync(args[0], "utf8"));
const v = report.Results[0].Vulnerabilities[0];
console.log(JSON.stringify({ apiVersion: "v1alpha2", metadata: { os: { type: "debian", version: "12" }, config: { arch: "amd64" } },
  osupdates: [{ name: v.PkgName, installedVersion: v.InstalledVersion, fixedVersion: v.FixedVersion, vulnerabilityID: v.VulnerabilityID, type: "debian", class: "os-pkgs" }] }));
`,
  );
  plugin("evil", `#!/bin/sh\nexec "${process.execPath}" "${recorder}" "$@"\n`);
  const viaPlugin = await run(suture, ["report", "-s", "evil", "--", "-evil.json"], { cwd, env: pluginEnv });
  assert.deepEqual(JSON.parse(readFileSync(argvFile, "utf8")), ["./-evil.json"]);
  assert.match(viaPlugin.stdout, /^-evil\.json \(plugin:evil\): debian 12, amd64$/m);
  assert.match(viaPlugin.stdout, /^libssl3\s+3\.0\.11-1~deb12u2\s+→\s+3\.0\.13-1~deb12u1\s+CVE-2024-0727$/m);
  // A plugin name is a name, not a path or an option.
  await fails(
    ["report", "-s", "../evil", "--", "-evil.json"],
    2,
    { cwd, env: pluginEnv },
    /invalid --scanner "\.\.\/evil"/,
  );
});

test("--max-report-size: reports over the limit are refused before they are read; the flag raises it", async () => {
  const huge = join(scratch, "huge.json");
  writeFileSync(huge, "");
  execFileSync("truncate", ["-s", "100M", huge]); // sparse
  await fails(
    ["report", huge],
    1,
    {},
    /huge\.json is 100 MiB, more than the 64 MiB a report may be; .* --max-report-size 256MiB \[INVALID_REPORT\]/,
  );
  // Raised past its size, a file is read, and its content (NULs) is what is wrong with it.
  const medium = join(scratch, "medium.json");
  writeFileSync(medium, "");
  execFileSync("truncate", ["-s", "3M", medium]);
  await fails(["report", "--max-report-size", "4MiB", medium], 1, {}, /medium\.json is not JSON/);
  const report = join(scratch, "small.json");
  writeFileSync(report, trivyReport);
  const size = statSync(report).size;
  await fails(
    ["report", "--max-report-size", String(size - 1), report],
    1,
    {},
    /more than the \d+ bytes a report may be/,
  );
  const { stdout } = await run(suture, ["report", "--max-report-size", String(size), report]);
  assert.match(stdout, /^1 package to update \(1 vulnerability\)/m);
  await fails(["report", "--max-report-size", "lots", report], 2, {}, /invalid --max-report-size "lots"/);
  // patch takes the flag too, and checks the report before touching any image.
  await fails(
    [
      "patch",
      "-i",
      "oci:/nonexistent-image-dir:v1",
      "-t",
      "fixed",
      "--oci-dir",
      join(scratch, "patched"),
      "-r",
      huge,
      "--max-report-size",
      "1MiB",
    ],
    1,
    {},
    /huge\.json is 100 MiB, more than the 1 MiB a report may be/,
  );
  assert.equal(existsSync(join(scratch, "patched")), false, "nothing written");
});

test("a plugin that prints without end is stopped at the limit and killed", async () => {
  const pidFile = join(scratch, "endless.pid");
  plugin("endless", `#!/bin/sh\necho $$ > ${pidFile}\nexec yes '{"apiVersion": "v1alpha2"}'\n`);
  const report = join(scratch, "input.json");
  writeFileSync(report, "{}");
  const started = performance.now();
  await fails(
    ["report", "-s", "endless", "--max-report-size", "2MiB", report],
    1,
    { env: pluginEnv },
    /^error: the output of copa-endless is more than the 2 MiB a report may be; .*--max-report-size 128MiB \[INVALID_REPORT\]$/m,
  );
  assert.ok(performance.now() - started < 20_000, "stopped, not read to the end");
  const pid = Number(readFileSync(pidFile, "utf8"));
  assert.equal(existsSync(`/proc/${pid}`), false, "the plugin is gone");
});

test("patch: --mirror takes only plain http(s) URLs, -s only a plugin name", async () => {
  const base = [
    "patch",
    "-i",
    "oci:/nonexistent-image-dir:v1",
    "-t",
    "fixed",
    "--oci-dir",
    join(scratch, "out"),
  ];
  // A newline would add a field (Trusted: yes) to the apt sources file the mirror is written to.
  await fails(
    [...base, "--mirror", "http://deb.debian.org/debian=http://mirror.example/debian\nTrusted: yes"],
    2,
    {},
    /invalid --mirror "http:\/\/deb\.debian\.org\/debian=http:\/\/mirror\.example\/debian\\nTrusted: yes": use FROM=TO with http\(s\) URIs/,
  );
  await fails(
    [...base, "--mirror", "http://deb.debian.org/debian=file:///srv/mirror"],
    2,
    {},
    /invalid --mirror/,
  );
  await fails([...base, "-r", "/etc/hostname", "-s", "/tmp/evil"], 2, {}, /invalid --scanner "\/tmp\/evil"/);
  assert.equal(existsSync(join(scratch, "out")), false, "nothing written");
});
