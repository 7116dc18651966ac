import assert from "node:assert/strict";
import { test } from "node:test";
import type { BulkJob, BulkJobResult } from "../../bulk/run.ts";
import { createBulkRenderer, formatResultTable } from "./bulk-table.ts";

/** A stream that keeps what is written, as a terminal of `columns` or a pipe. */
function capture(isTTY: boolean) {
  const chunks: string[] = [];
  const stream = { isTTY, columns: 200, write: (s: string) => chunks.push(s) > 0 };
  return { stream: stream as unknown as NodeJS.WriteStream, text: () => chunks.join("") };
}

const job: BulkJob = {
  id: "reg/web:1.0 → reg/web:1.0-patched",
  name: "web",
  source: "reg/web:1.0",
  baseTarget: "1.0-patched",
};

const done: BulkJobResult = {
  ...job,
  status: "patched",
  target: "reg/web:1.0-patched",
  digest: "sha256:1",
  platforms: [
    {
      platform: "linux/amd64",
      status: "patched",
      packages: [{ name: "libssl3", from: "1", to: "2" }],
      failedPackages: [],
      cvesFixed: ["CVE-1", "CVE-2"],
    },
    { platform: "linux/arm64", status: "skipped", reason: "not selected", packages: [], failedPackages: [] },
  ],
  warnings: [],
  durationMs: 12_300,
};

test("the final table: a row per platform patched, with packages, CVEs fixed, time and the patched tag", () => {
  const failed: BulkJobResult = {
    ...job,
    id: "reg/odd:1 → reg/odd:1-patched",
    name: "odd",
    source: "reg/odd:1",
    status: "failed",
    reason: "an unknown OS is not supported",
    platforms: [],
    warnings: [],
    durationMs: 800,
  };
  const lines = formatResultTable([done, failed]).trimEnd().split("\n");
  assert.match(lines[0]!, /^IMAGE\s+SOURCE\s+PLATFORM\s+STATE\s+PACKAGES\s+CVES FIXED\s+TIME\s+DETAILS$/);
  assert.match(
    lines[1]!,
    /^web\s+reg\/web:1\.0\s+linux\/amd64\s+patched\s+1\s+2\s+12\.3s\s+→ reg\/web:1\.0-patched$/,
  );
  assert.match(lines[2]!, /^odd\s+reg\/odd:1\s+-\s+failed\s+-\s+-\s+0\.8s\s+an unknown OS is not supported$/);
  assert.equal(lines.length, 3, "the platform carried over is not a row");
});

test("on a terminal the table is redrawn in place; without one each change is a plain line", async () => {
  const tty = capture(true);
  const live = createBulkRenderer("tty", tty.stream);
  live({ type: "discovered", jobs: [job] });
  live({ type: "job-state", job: job.id, state: "patching", target: "reg/web:1.0-patched" });
  live({ type: "warning", message: 'tag "x" is a prerelease', image: "web" });
  await new Promise((r) => setTimeout(r, 150));
  live({ type: "job-done", job: job.id, result: done });
  live.finish();
  const out = tty.text();
  assert.match(out, /web\s+reg\/web:1\.0\s+-\s+patching/);
  // Redrawn: the cursor goes back up over the table (CSI n F) before the next frame.
  assert.match(out, /\x1b\[2F\x1b\[J/);
  assert.match(out, /warning: web: tag "x" is a prerelease\n/);
  assert.match(out, /linux\/amd64\s+patched\s+1\s+2/);

  const pipe = capture(false);
  const plain = createBulkRenderer("auto", pipe.stream);
  plain({ type: "discovered", jobs: [job] });
  plain({ type: "job-state", job: job.id, state: "patching", target: "reg/web:1.0-patched" });
  plain({
    type: "job-progress",
    job: job.id,
    event: { type: "step", step: "detect", message: "detecting", platform: "linux/amd64" },
  });
  plain({ type: "job-done", job: job.id, result: done });
  plain.finish();
  assert.equal(
    pipe.text(),
    [
      "1 job: reg/web:1.0",
      "[reg/web:1.0] patching → reg/web:1.0-patched",
      "[reg/web:1.0] [linux/amd64] » detecting",
      "[reg/web:1.0] patched reg/web:1.0-patched: 1 package, 2 CVEs fixed (12.3s)",
      "",
    ].join("\n"),
  );
  assert.doesNotMatch(pipe.text(), /\x1b/);
});
