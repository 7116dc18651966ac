/**
 * The GitHub Action run as a runner runs it: action.yml and the committed dist/ copied into an
 * empty directory (no node_modules anywhere above it), `node <runs.main>` started there with the
 * inputs as `INPUT_*` variables and the runner's files (GITHUB_OUTPUT, GITHUB_STEP_SUMMARY,
 * RUNNER_TEMP), against a loopback registry that wants the credentials docker/login-action
 * leaves in DOCKER_CONFIG. What it pushed is read back with skopeo and umoci, independently.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parse as parseYaml } from "yaml";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { labImage, pendingSecurityFixes, trivyReportFor } from "../lab/images.ts";
import { labIndex } from "../lab/lab-index.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "tool:docker-registry",
  "tool:mmdebstrap",
  "tool:skopeo",
  "tool:umoci",
);

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const repo = join(import.meta.dirname, "../..");
const suture = join(repo, "bin/suture");
const schema = join(repo, "../shared/fixtures/openvex/openvex_json_schema.json");
let registry: LabRegistry;
let work: string;
/** The checkout as the runner has it: action.yml and dist/ only. */
let actionDir: string;
let main: string;
let single: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-action-"));
  actionDir = join(work, "action");
  await mkdir(actionDir);
  await cp(join(repo, "action.yml"), join(actionDir, "action.yml"));
  await cp(join(repo, "dist"), join(actionDir, "dist"), { recursive: true });
  const action = parseYaml(await readFile(join(actionDir, "action.yml"), "utf8"));
  assert.equal(action.runs.using, "node24");
  main = action.runs.main;
  registry = await startRegistry({ auth: "htpasswd" });
  single = `${registry.host}/lab/minbase:1`;
  await cli(["copy", (await labImage("bookwormMinbase")).reference, `docker://${single}`]);
});
after(async () => {
  await Promise.all([registry?.stop(), work && rm(work, { recursive: true, force: true })]);
});

function cli(args: string[]) {
  return run(suture, args, {
    env: { ...process.env, CI: "true", DOCKER_CONFIG: registry.dockerConfigDir },
    maxBuffer: 64 * 1024 * 1024,
  });
}

interface StepResult {
  code: number;
  stdout: string;
  outputs: Record<string, string>;
  summary: string;
}

/**
 * One step: `node <main>` in a fresh workspace, inputs as the runner names them (INPUT_ + the
 * name upper-cased, dashes kept), the runner's files, credentials where docker/login-action puts
 * them. Relative paths in inputs are the workspace's, as in a job.
 */
async function step(name: string, inputs: Record<string, string>): Promise<StepResult> {
  const workspace = join(work, name);
  const runnerTemp = join(work, `${name}-temp`);
  await mkdir(workspace, { recursive: true });
  await mkdir(runnerTemp);
  const outputFile = join(runnerTemp, "github_output");
  const summaryFile = join(runnerTemp, "step_summary");
  await writeFile(outputFile, "");
  await writeFile(summaryFile, "");
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/root",
    CI: "true",
    GITHUB_ACTIONS: "true",
    GITHUB_WORKSPACE: workspace,
    GITHUB_OUTPUT: outputFile,
    GITHUB_STEP_SUMMARY: summaryFile,
    RUNNER_TEMP: runnerTemp,
    DOCKER_CONFIG: registry.dockerConfigDir,
    // The lab's archive mirror (a runner reaches the archive directly).
    ...Object.fromEntries(
      ["http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"].flatMap((k) =>
        process.env[k] ? [[k, process.env[k]!]] : [],
      ),
    ),
  };
  for (const [k, v] of Object.entries(inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
  let code = 0;
  let stdout: string;
  try {
    ({ stdout } = await run(process.execPath, [join(actionDir, main)], {
      cwd: workspace,
      env,
      maxBuffer: 64 * 1024 * 1024,
    }));
  } catch (e) {
    const err = e as { code: number; stdout: string };
    code = err.code;
    stdout = err.stdout;
  }
  return {
    code,
    stdout,
    outputs: parseOutputs(await readFile(outputFile, "utf8")),
    summary: await readFile(summaryFile, "utf8"),
  };
}

/** GITHUB_OUTPUT as the runner reads it: `name=value` lines and `name<<DELIM` … `DELIM` blocks. */
function parseOutputs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line) continue;
    const heredoc = /^([^=<]+)<<(.+)$/.exec(line);
    if (heredoc) {
      const end = lines.indexOf(heredoc[2]!, i + 1);
      assert.ok(end > i, `output ${heredoc[1]} has its closing delimiter`);
      out[heredoc[1]!] = lines.slice(i + 1, end).join("\n");
      i = end;
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(eq > 0, `output line ${JSON.stringify(line)} is name=value`);
    out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** The manifest digest the registry serves for `ref`, and its platforms when it is an index (skopeo). */
async function registryDigest(ref: string): Promise<string> {
  const { stdout } = await run("skopeo", [
    "inspect",
    "--raw",
    "--tls-verify=false",
    "--authfile",
    join(registry.dockerConfigDir, "config.json"),
    `docker://${ref}`,
  ]);
  const { createHash } = await import("node:crypto");
  return `sha256:${createHash("sha256").update(stdout).digest("hex")}`;
}

/** dpkg-query's versions in the image skopeo pulls for `platform` (arm64 runs under binfmt's QEMU). */
async function installedVersions(ref: string, names: readonly string[], arch = "amd64") {
  const layout = join(work, `layout-${Math.random().toString(36).slice(2)}`);
  await run("skopeo", [
    "copy",
    "--src-tls-verify=false",
    "--src-authfile",
    join(registry.dockerConfigDir, "config.json"),
    "--override-arch",
    arch,
    `docker://${ref}`,
    `oci:${layout}:x`,
  ]);
  const root = join(layout, "rootfs");
  await run("umoci", ["raw", "unpack", "--image", `${layout}:x`, root]);
  const { stdout } = await run("chroot", [
    root,
    "dpkg-query",
    "-W",
    "-f",
    "$" + "{Package} $" + "{Version}\n",
    ...names,
  ]);
  await rm(layout, { recursive: true, force: true });
  return new Map(
    stdout
      .trim()
      .split("\n")
      .map((l) => l.split(" ") as [string, string]),
  );
}

test("with a report: patches, pushes with the login's credentials, writes VEX and SBOM, fills outputs and the summary", async () => {
  const { path: reportFile, report, fixes } = await trivyReportFor("bookwormMinbase");
  assert.ok(fixes.length > 0, "the lab image has pending fixes");
  const before = await registryDigest(single);
  const workspaceReport = "trivy.json";
  await mkdir(join(work, "report"));
  await cp(reportFile, join(work, "report", workspaceReport));

  const r = await step("report", {
    image: single,
    "image-report": workspaceReport,
    "patched-tag": "1-fixed",
    push: "true",
    output: "vex.json",
    sbom: "sbom.cdx.json",
  });
  assert.equal(r.code, 0, r.stdout);
  assert.doesNotMatch(r.stdout, /::error::/);

  const patched = r.outputs["patched-image"]!;
  assert.match(patched, new RegExp(`^${registry.host}/lab/minbase@sha256:[0-9a-f]{64}$`));
  assert.equal(r.outputs["patched-reference"], `${registry.host}/lab/minbase:1-fixed`);
  assert.equal(await registryDigest(`${registry.host}/lab/minbase:1-fixed`), patched.split("@")[1]);
  assert.equal(await registryDigest(single), before, "the source tag is untouched");
  const versions = await installedVersions(
    patched,
    fixes.map((f) => f.name),
  );
  for (const f of fixes) assert.equal(versions.get(f.name), f.fixed, f.name);

  assert.equal(r.outputs.status, "patched");
  const vexPath = join(work, "report", r.outputs.vex!);
  const vex = JSON.parse(await readFile(vexPath, "utf8"));
  const v = validateOpenVex(vex, schema);
  assert.ok(v.valid, v.errors.join("; "));
  assert.ok(
    vex.statements.every((s: { products: { "@id": string }[] }) =>
      s.products.some((p) => p["@id"].includes(`@${patched.split("@")[1]}`)),
    ),
    "the VEX names the pushed digest",
  );
  const sbom = JSON.parse(await readFile(join(work, "report", r.outputs.sbom!), "utf8"));
  assert.equal(sbom.bomFormat, "CycloneDX");

  // The summary: the pushed reference, a row for the platform, every fixed package and CVE.
  assert.ok(
    r.summary.includes(`Pushed \`${registry.host}/lab/minbase:1-fixed\` as \`${patched}\`.`),
    r.summary,
  );
  assert.match(r.summary, /\| `linux\/amd64` \| patched \| \d+ \| \d+ \|/);
  const ids = new Set(report.Results.flatMap((res) => res.Vulnerabilities.map((x) => x.VulnerabilityID)));
  for (const f of fixes)
    assert.ok(r.summary.includes(`| \`${f.name}\` | \`${f.installed}\` | \`${f.fixed}\``), f.name);
  for (const id of ids) assert.ok(r.summary.includes(`\`${id}\``), id);
});

test("without a report: update-all brings every package to its fixed version; no VEX", async () => {
  const pending = await pendingSecurityFixes("bookwormMinbase");
  const r = await step("update-all", { image: single, "patched-tag": "1-all", push: "true" });
  assert.equal(r.code, 0, r.stdout);
  const patched = r.outputs["patched-image"]!;
  assert.match(patched, new RegExp(`^${registry.host}/lab/minbase@sha256:`));
  assert.equal(await registryDigest(`${registry.host}/lab/minbase:1-all`), patched.split("@")[1]);
  const versions = await installedVersions(
    patched,
    pending.map((f) => f.name),
  );
  for (const f of pending) assert.equal(versions.get(f.name), f.fixed, f.name);
  assert.equal(r.outputs.vex, "", "no report, no VEX");
  assert.match(r.summary, /Mode: update-all/);
  assert.match(r.summary, /\| `linux\/amd64` \| patched \| \d+ \| – \|/);
  for (const f of pending) assert.ok(r.summary.includes(`| \`${f.name}\` |`), f.name);
});

test("a multi-platform index: each platform patched from its report, pushed as one index", async () => {
  await run("bash", [join(repo, "scripts/install-system-deps.sh"), "--arm64-emulation"]);
  const index = await labIndex(["bookwormMinbase", "bookwormMinbaseArm64"], join(work, "index"));
  const multi = `${registry.host}/lab/multi:1`;
  await cli(["copy", index.reference, `docker://${multi}`]);
  const reports = join(work, "multi", "reports");
  await mkdir(reports, { recursive: true });
  for (const [recipe, arch] of [
    ["bookwormMinbase", "amd64"],
    ["bookwormMinbaseArm64", "arm64"],
  ] as const) {
    const { fixes } = await trivyReportFor(recipe, {
      only: ["liblzma5"],
      outFile: join(reports, `${arch}.json`),
    });
    assert.equal(fixes.length, 1, `liblzma5 has a pending fix for ${arch}`);
  }

  const r = await step("multi", {
    image: multi,
    "image-report": "reports",
    push: "true",
    output: "vex.json",
  });
  assert.equal(r.code, 0, r.stdout);
  const patched = r.outputs["patched-image"]!;
  assert.match(patched, new RegExp(`^${registry.host}/lab/multi@sha256:`));
  const digest = patched.split("@")[1]!;
  assert.equal(await registryDigest(`${registry.host}/lab/multi:1-patched`), digest, "the index digest");
  for (const arch of ["amd64", "arm64"]) {
    assert.equal((await installedVersions(patched, ["liblzma5"], arch)).get("liblzma5"), "5.4.1-1+deb12u2");
    assert.match(r.summary, new RegExp(`\\| \`linux/${arch}\` \\| patched \\| 1 \\| \\d+ \\|`));
    assert.match(r.summary, new RegExp(`### \`linux/${arch}\``));
  }
});

test("bad inputs: one ::error:: line, the exit code, no outputs", async () => {
  const cases: [Record<string, string>, RegExp, number | undefined][] = [
    [{ image: single, push: "yes" }, /^::error::input push is "yes": use true or false \[USAGE\]$/m, 2],
    // Referrers need a registry: attach without push is refused before any work.
    [{ image: single, attach: "true" }, /^::error::--attach needs a destination that holds referrers/m, 2],
    [
      { image: single, "sign-key": "key.pem", push: "true" },
      /^::error::--sign-key signs what --attach attaches/m,
      2,
    ],
    [
      { image: single, "image-report": "missing.json", push: "true" },
      /^::error::.*missing\.json/m,
      undefined,
    ],
  ];
  let n = 0;
  for (const [inputs, pattern, code] of cases) {
    const r = await step(`bad-${n++}`, inputs);
    if (code === undefined) assert.notEqual(r.code, 0, r.stdout);
    else assert.equal(r.code, code, r.stdout);
    assert.match(r.stdout, pattern);
    assert.equal(r.stdout.split("\n").filter((l) => l.startsWith("::error::")).length, 1, r.stdout);
    assert.deepEqual(r.outputs, {});
    assert.equal(r.summary, "");
  }
});
