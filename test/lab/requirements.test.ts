import assert from "node:assert/strict";
import { test } from "node:test";
import { needs } from "./requirements.ts";

const MISSING = "tool:suture-no-such-tool";

async function withCi<T>(value: string | undefined, run: () => Promise<T>): Promise<T> {
  const before = process.env.CI;
  if (value === undefined) delete process.env.CI;
  else process.env.CI = value;
  try {
    return await run();
  } finally {
    if (before === undefined) delete process.env.CI;
    else process.env.CI = before;
  }
}

test("a missing requirement skips with the reason; what is there adds nothing", async () => {
  await withCi(undefined, async () => {
    assert.deepEqual(await needs("tool:sh"), {});
    assert.deepEqual(await needs("tool:sh", MISSING), {
      skip: "needs suture-no-such-tool: install it (npm run lab:install as root)",
    });
  });
});

test("under CI a missing requirement is a failure, never a skip", async () => {
  await withCi("true", async () => {
    await assert.rejects(
      needs(MISSING),
      /^Error: CI is set, so every test must run here, but a test needs suture-no-such-tool/,
    );
    assert.deepEqual(await needs("tool:sh"), {});
  });
});
