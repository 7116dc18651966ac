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
