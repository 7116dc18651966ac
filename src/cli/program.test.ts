import assert from "node:assert/strict";
import { test } from "node:test";
import { buildProgram, runCli } from "./program.ts";

function helpOf(command: string): string {
  const cmd = buildProgram().commands.find((c) => c.name() === command)!;
  return cmd.helpInformation().replace(/\s+/g, " ");
}

/** Run the CLI in this process as a user would, catching what it writes (usage errors touch nothing). */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = { stdout: "", stderr: "" };
  const saved = { stdout: process.stdout.write, stderr: process.stderr.write };
  // The test runner's own messages to its parent pass through stdout too, as serialized binary:
  // they go on to where they were going, only text is the CLI's.
  const capture = (stream: "stdout" | "stderr") =>
    ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === "string") out[stream] += chunk;
      else return (saved[stream] as (...a: unknown[]) => boolean).call(process[stream], chunk, ...rest);
      return true;
    }) as typeof process.stdout.write;
  process.stdout.write = capture("stdout");
  process.stderr.write = capture("stderr");
  try {
    return { code: await runCli(args), ...out };
  } finally {
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
  }
}

test("patch's help says what --engine auto picks, per package manager, and names the dry-run plan format", () => {
  const help = helpOf("patch");
  assert.match(
    help,
    /patch an image's OS packages and add exactly one layer: suture's native engine where it can serve the image's package manager \(every dpkg and apk image\), else the image's own package manager in runc/,
  );
  assert.match(
    help,
    /--engine <engine> what applies the updates\. auto: per package manager, suture's native engine where it can serve \(every dpkg and apk image\), else the sandbox engine \(the image's own package manager in runc\); native or sandbox: that one \(choices: "auto", "native", "sandbox", default: "auto"\)/,
  );
  assert.doesNotMatch(help, /apt when the image has it|with its own apt in a runc sandbox|\(auto: native\)/);
  assert.match(
    help,
    /--plan-format <format> how --dry-run prints its plan .*\(choices: "table", "json", default: "table"\)/,
  );
  assert.match(help, /--compression <c> .*\(choices: "gzip", "zstd", "uncompressed", default: "gzip"\)/);
  assert.match(help, /-f, --format <format> VEX format \(choices: "openvex", default: "openvex"\)/);
  assert.match(help, /-a, --addr <address> copa's BuildKit address: accepted and ignored/);
  for (const command of ["patch", "copy", "inspect"])
    assert.match(
      helpOf(command),
      /--progress <mode> .*auto, plain, tty, json, quiet, rawjson .*unknown: auto, as copa\) \(default: "auto"\)/,
    );
  assert.match(helpOf("inspect"), /--format <format> .*\(choices: "text", "json", default: "text"\)/);
  assert.match(helpOf("report"), /--format <format> .*\(choices: "table", "json", default: "table"\)/);
});

test("a value outside an option's choices is a one-line usage error (exit 2) naming the choices, before any work", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["patch", "-i", "oci:/nonexistent", "--engine", "apt"],
      /^error: option '--engine <engine>' argument 'apt' is invalid\. Allowed choices are auto, native, sandbox\.\n/,
    ],
    [
      ["patch", "-i", "oci:/nonexistent", "--compression", "xz"],
      /^error: option '--compression <c>' argument 'xz' is invalid\. Allowed choices are gzip, zstd, uncompressed\.\n/,
    ],
    [
      ["patch", "-i", "oci:/nonexistent", "--plan-format", "yaml"],
      /^error: option '--plan-format <format>' argument 'yaml' is invalid\. Allowed choices are table, json\.\n/,
    ],
    [
      ["patch", "-i", "oci:/nonexistent", "-f", "cyclonedx"],
      /^error: option '-f, --format <format>' argument 'cyclonedx' is invalid\. Allowed choices are openvex\.\n/,
    ],
    [
      ["inspect", "--format", "yaml", "oci:/nonexistent"],
      /^error: option '--format <format>' argument 'yaml' is invalid\. Allowed choices are text, json\.\n/,
    ],
  ];
  for (const [args, message] of cases) {
    const { code, stdout, stderr } = await cli(args);
    assert.equal(code, 2, args.join(" "));
    assert.equal(stdout, "");
    assert.match(stderr, message);
  }
});

test("an unknown --progress is a warning and auto, as copa treats it", async () => {
  const { code, stderr } = await cli([
    "copy",
    "--progress",
    "fancy",
    "oci:/nonexistent",
    "oci:/nonexistent2",
  ]);
  assert.match(stderr, /^warning: unknown --progress "fancy", using auto\n/);
  assert.doesNotMatch(stderr, /is invalid/);
  assert.notEqual(code, 2);
});
