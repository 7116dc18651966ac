import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

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
