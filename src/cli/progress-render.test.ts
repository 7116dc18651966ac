import assert from "node:assert/strict";
import { test } from "node:test";
import { createRenderer } from "./progress-render.ts";

/** A stand-in for process.stderr that records what was written. */
function stream(isTTY: boolean) {
  const chunks: string[] = [];
  return {
    chunks,
    text: () => chunks.join(""),
    s: { isTTY, columns: 80, write: (c: string) => chunks.push(c) > 0 } as unknown as NodeJS.WriteStream,
  };
}

test("on a terminal, downloads redraw one status line that a step line then clears", () => {
  const out = stream(true);
  const saved = process.env.CI;
  delete process.env.CI;
  try {
    const r = createRenderer("auto", out.s);
    r({
      type: "blob",
      action: "download",
      digest: `sha256:${"a".repeat(64)}`,
      bytes: 1024 * 1024,
      total: 4 * 1024 * 1024,
    });
    r({
      type: "blob",
      action: "download",
      digest: `sha256:${"a".repeat(64)}`,
      bytes: 4 * 1024 * 1024,
      total: 4 * 1024 * 1024,
    });
    r({ type: "step", step: "apply", message: "updating packages", platform: "linux/arm64" });
    r.finish();
  } finally {
    if (saved !== undefined) process.env.CI = saved;
  }
  const text = out.text();
  assert.match(text, /\r\x1b\[K {2}download aaaaaaaaaaaa 1\.0 MiB\/4\.0 MiB/);
  assert.match(text, /\r\x1b\[K {2}download aaaaaaaaaaaa 4\.0 MiB\/4\.0 MiB/);
  assert.match(
    text,
    /\r\x1b\[K\[linux\/arm64\] » updating packages\n$/,
    "the status line is cleared before the step line",
  );
});

test("CI=true or a pipe gets plain lines; json mode one event per line", () => {
  const saved = process.env.CI;
  process.env.CI = "true";
  try {
    const plain = stream(true);
    const r = createRenderer("auto", plain.s);
    r({ type: "step", step: "layer", message: "building the patch layer" });
    r({ type: "step-done", step: "layer", elapsedMs: 1500 });
    r({ type: "blob", action: "download", digest: `sha256:${"b".repeat(64)}`, bytes: 10, total: 100 });
    assert.equal(plain.text(), "» building the patch layer\n  done layer (1.5s)\n");
  } finally {
    if (saved === undefined) delete process.env.CI;
    else process.env.CI = saved;
  }
  const json = stream(false);
  const j = createRenderer("json", json.s);
  j({ type: "warning", message: "held", platform: "linux/amd64" });
  j({ type: "info", message: "x" });
  const lines = json
    .text()
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => [l.type, l.message, l.platform]),
    [
      ["warning", "held", "linux/amd64"],
      ["info", "x", undefined],
    ],
  );
  assert.ok(lines.every((l) => typeof l.time === "string"));
});

test("without a terminal each upload is said once, and nothing is rendered after finish", () => {
  const out = stream(false);
  const r = createRenderer("auto", out.s);
  const digest = `sha256:${"c".repeat(64)}`;
  for (const bytes of [0, 1024 * 1024, 2 * 1024 * 1024, 2 * 1024 * 1024])
    r({ type: "blob", action: "upload", digest, bytes, total: 2 * 1024 * 1024 });
  r({ type: "blob", action: "exists", digest: `sha256:${"d".repeat(64)}`, bytes: 0, total: 10 });
  r({ type: "blob", action: "exists", digest: `sha256:${"d".repeat(64)}`, bytes: 0, total: 10 });
  r.finish();
  r({ type: "blob", action: "upload", digest: `sha256:${"e".repeat(64)}`, bytes: 5, total: 5 });
  r({ type: "step", step: "cleanup", message: "removing the sandbox" });
  assert.equal(out.text(), `  upload sha256:cccccccccccc 2.0 MiB\n  exists sha256:dddddddddddd 0.0 MiB\n`);
});
