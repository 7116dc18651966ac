import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { openSqliteStore } from "./sqlite-store.ts";
import { seenKey } from "./store.ts";

test("rules, seen digests, results and VEX survive a restart", async () => {
  const dir = await mkdtemp(join(tmpdir(), "suture-store-"));
  try {
    const file = join(dir, "state", "state.db");
    let store = openSqliteStore(file);
    await store.rules.put({
      id: "a",
      image: "r.example/x",
      tags: { strategy: "latest" },
      intervalSeconds: 60,
    });
    await store.seen.set(seenKey("a", "r.example/x", "1.0"), "sha256:1");
    for (const [jobId, tag] of [
      ["j1", "1.0"],
      ["j2", "1.1"],
    ])
      await store.results.add({
        jobId,
        ruleId: "a",
        repository: "r.example/x",
        tag,
        source: `r.example/x:${tag}@sha256:1`,
        reason: "new-tag",
        state: "succeeded",
        durationMs: 5,
        finishedAt: new Date().toISOString(),
      });
    await store.vex.put("j1", '{"statements":[]}');
    await store.close();

    store = openSqliteStore(file);
    assert.deepEqual(
      (await store.rules.list()).map((r) => r.id),
      ["a"],
    );
    assert.equal(await store.seen.get(seenKey("a", "r.example/x", "1.0")), "sha256:1");
    assert.equal(await store.seen.get(seenKey("a", "r.example/x", "1.1")), undefined);
    assert.deepEqual(
      (await store.results.forImage("r.example/x")).map((r) => r.jobId),
      ["j2", "j1"],
    );
    assert.deepEqual(
      (await store.results.recent(1)).map((r) => r.jobId),
      ["j2"],
    );
    assert.equal(await store.vex.get("j1"), '{"statements":[]}');
    assert.equal(await store.rules.delete("a"), true);
    assert.equal(await store.rules.delete("a"), false);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
