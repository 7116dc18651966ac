import assert from "node:assert/strict";
import { test } from "node:test";
import { buildProgram } from "./program.ts";

test("patch's help says the default engine is suture's own, and names the dry-run plan format", () => {
  const patch = buildProgram().commands.find((c) => c.name() === "patch")!;
  const help = patch.helpInformation().replace(/\s+/g, " ");
  assert.match(help, /patch an image's OS packages with suture's own deb engine/);
  assert.match(help, /--engine <engine> auto \| native \| sandbox: .*\(auto: native\)/);
  assert.doesNotMatch(help, /apt when the image has it|with its own apt in a runc sandbox/);
  assert.match(help, /--plan-format <format> how --dry-run prints its plan: table \| json/);
  assert.match(help, /-a, --addr <address> copa's BuildKit address: accepted and ignored/);
});
