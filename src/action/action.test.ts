import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import type { PatchResult } from "../patch/patch.ts";
import { actionOutputs, readInputs } from "./run.ts";
import {
  appendSummary,
  errorCommand,
  getBooleanInput,
  getInput,
  getListInput,
  neutraliseCommands,
  outputRecord,
  setOutputs,
} from "./runner-io.ts";
import { elevation } from "./sudo.ts";
import { patchSummary } from "./summary.ts";

test("inputs are read as the runner names them: INPUT_ + upper case, spaces as underscores, trimmed", () => {
  const env = { "INPUT_IMAGE-REPORT": "  r.json \n", INPUT_MY_INPUT: "x", INPUT_PUSH: "True" };
  assert.equal(getInput(env, "image-report"), "r.json");
  assert.equal(getInput(env, "my input"), "x");
  assert.equal(getInput(env, "absent"), "");
  assert.equal(getBooleanInput(env, "push"), true);
  assert.equal(getBooleanInput(env, "absent", true), true);
  assert.throws(
    () => getBooleanInput({ INPUT_PUSH: "yes" }, "push"),
    (e) => isSutureError(e, "USAGE"),
  );
  assert.deepEqual(getListInput({ INPUT_PLATFORMS: "linux/amd64,\n linux/arm64\n\n" }, "platforms"), [
    "linux/amd64",
    "linux/arm64",
  ]);
});

test("readInputs: copa-action's names and defaults; every wrong value is a USAGE error before any work", () => {
  const inputs = readInputs({
    INPUT_IMAGE: "r.example/app:1",
    "INPUT_IMAGE-REPORT": "trivy.json",
    "INPUT_PATCHED-TAG": "1-fixed",
    INPUT_MIRROR: "http://deb.debian.org/debian=http://127.0.0.1:1/debian",
  });
  assert.equal(inputs.timeoutMs, 5 * 60_000);
  assert.equal(inputs.engine, "auto");
  assert.equal(inputs.push, false);
  assert.equal(inputs.report, "trivy.json");
  assert.equal(inputs.patchedTag, "1-fixed");
  assert.deepEqual(inputs.mirrors, { "http://deb.debian.org/debian": "http://127.0.0.1:1/debian" });
  for (const env of [
    {},
    { INPUT_IMAGE: "a:1", INPUT_FORMAT: "cyclonedx" },
    { INPUT_IMAGE: "a:1", INPUT_ENGINE: "docker" },
    { INPUT_IMAGE: "a:1", INPUT_TIMEOUT: "soon" },
    { INPUT_IMAGE: "a:1", INPUT_MIRROR: "nonsense" },
    { INPUT_IMAGE: "a:1", "INPUT_SBOM-FORMAT": "xml" },
  ])
    assert.throws(
      () => readInputs(env),
      (e) => isSutureError(e, "USAGE") && !e.message.includes("\n"),
      JSON.stringify(env),
    );
});

test("outputs: name=value, or a heredoc whose delimiter the value cannot contain", () => {
  assert.equal(outputRecord("vex", "out/vex.json"), "vex=out/vex.json\n");
  const record = outputRecord("notes", "a\nb=c\n");
  const [first, ...rest] = record.split("\n");
  const delimiter = /^notes<<(ghadelimiter_[0-9a-f-]+)$/.exec(first!)?.[1];
  assert.ok(delimiter, record);
  assert.deepEqual(rest, ["a", "b=c", "", delimiter, ""]);
  assert.throws(() => outputRecord("bad\nname", "x"));
});

test("outputs and the summary are appended to the runner's files", async () => {
  const dir = await mkdtemp(join(tmpdir(), "suture-action-unit-"));
  try {
    const env = { GITHUB_OUTPUT: join(dir, "out"), GITHUB_STEP_SUMMARY: join(dir, "summary") };
    await writeFile(env.GITHUB_OUTPUT, "earlier=1\n");
    setOutputs(env, { "patched-image": "r/a:1@sha256:00", vex: "" });
    appendSummary(env, "# hi");
    assert.equal(
      await readFile(env.GITHUB_OUTPUT, "utf8"),
      "earlier=1\npatched-image=r/a:1@sha256:00\nvex=\n",
    );
    assert.equal(await readFile(env.GITHUB_STEP_SUMMARY, "utf8"), "# hi\n");
    // Outside a runner there is nowhere to write: nothing happens.
    setOutputs({}, { a: "b" });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("an error annotation stays one workflow command", () => {
  assert.equal(
    errorCommand("100% bad\r\nsecond ::set-output"),
    "::error::100%25 bad%0D%0Asecond ::set-output\n",
  );
});

test("progress text from an image cannot issue workflow commands", () => {
  assert.equal(
    neutraliseCommands("ok\n::add-mask::x\n  ::stop-commands::t\na ::b::\n"),
    "ok\n: :add-mask::x\n  : :stop-commands::t\na ::b::\n",
  );
});

const digest = `sha256:${"ab".repeat(32)}`;

function result(overrides: Partial<PatchResult> = {}): PatchResult {
  return {
    status: "patched",
    target: "docker://r.example/app:1-patched",
    digest,
    platforms: [
      {
        platform: "linux/amd64",
        status: "patched",
        changed: [
          { name: "libssl3", from: "3.0.11-1~deb12u1", to: "3.0.17-1~deb12u2" },
          { name: "openssl|`x`", from: "1", to: "2" },
        ],
        failed: [],
        warnings: [],
        plan: {
          source: { format: "trivy", file: "r.json" },
          updates: [
            {
              name: "libssl3",
              installedVersion: "3.0.11-1~deb12u1",
              fixedVersion: "3.0.17-1~deb12u2",
              vulnerabilities: ["CVE-2024-0001", "CVE-2024-0002"],
              type: "debian",
              class: "os-pkgs",
            },
          ],
          skipped: [],
          findings: 2,
        },
      },
      {
        platform: "linux/arm64",
        status: "skipped",
        reason: "not selected",
        changed: [],
        failed: [],
        warnings: [],
      },
    ],
    droppedAttestations: [],
    replacedPatchLayers: [],
    changed: [],
    failed: [],
    ...overrides,
  };
}

test("patched-image is the pushed repository pinned by digest (no tag: skopeo refuses both); empty when nothing was written", () => {
  assert.deepEqual(actionOutputs(result()), {
    "patched-image": `r.example/app@${digest}`,
    "patched-reference": "r.example/app:1-patched",
    vex: "",
    sbom: "",
    status: "patched",
  });
  assert.equal(
    actionOutputs(result({ target: "docker-daemon:r.example/app:1-patched" }))["patched-image"],
    "r.example/app:1-patched",
  );
  assert.equal(actionOutputs(result({ status: "up-to-date", digest: undefined }))["patched-image"], "");
});

test("the summary: a row per platform with packages and CVEs, then each package; foreign text cannot break the table", () => {
  const md = patchSummary({
    source: "r.example/app:1",
    result: result(),
    patchedImage: `r.example/app@${digest}`,
    patchedReference: "r.example/app:1-patched",
    pushed: true,
  });
  assert.match(md, /^## suture: `r\.example\/app:1`$/m);
  assert.match(
    md,
    new RegExp(`^Pushed \`r\\.example/app:1-patched\` as \`r\\.example/app@${digest}\`\\.$`, "m"),
  );
  assert.match(md, /^\| `linux\/amd64` \| patched \| 2 \| 2 \|$/m);
  assert.match(md, /^\| `linux\/arm64` \| skipped: not selected \| 0 \| – \|$/m);
  assert.match(
    md,
    /^\| `libssl3` \| `3\.0\.11-1~deb12u1` \| `3\.0\.17-1~deb12u2` \| `CVE-2024-0001` `CVE-2024-0002` \|$/m,
  );
  // A pipe is escaped and a backtick dropped: the row keeps its four cells.
  const row = md.split("\n").find((l) => l.includes("openssl"))!;
  assert.equal(row.replace(/\\\|/g, "").split("|").length, 6, row);
  const upToDate = patchSummary({ source: "a:1", result: result({ status: "up-to-date" }), pushed: true });
  assert.match(upToDate, /Nothing to patch/);
});

test("root runs as it is; otherwise sudo -n re-runs the same script, or a one-line refusal", () => {
  assert.deepEqual(
    elevation({}, 0, () => true),
    { kind: "run" },
  );
  const sudo = elevation(
    { HOME: "/home/runner", INPUT_IMAGE: "a:1" },
    1001,
    () => true,
    "/a/index.mjs",
    "/n/node",
  );
  assert.equal(sudo.kind, "sudo");
  if (sudo.kind === "sudo") {
    assert.deepEqual([sudo.command, ...sudo.args], ["sudo", "-n", "-E", "/n/node", "/a/index.mjs"]);
    assert.equal(sudo.env.DOCKER_CONFIG, "/home/runner/.docker", "login-action's credentials stay found");
    assert.equal(sudo.env.INPUT_IMAGE, "a:1");
  }
  const refused = elevation({}, 1001, () => false);
  assert.equal(refused.kind, "refuse");
  // A sudo that did not make us root must not start another one.
  assert.equal(elevation({ SUTURE_ACTION_ELEVATED: "1" }, 1001, () => true).kind, "refuse");
});
