/**
 * What every ServiceStore (the embedded one and Postgres) must do, as one test body both stores'
 * test files run: `serviceStoreContract(test, () => openStore())`. Each call of `open` must return
 * a store over a fresh, empty database.
 */
import assert from "node:assert/strict";
import type { test as nodeTest } from "node:test";
import type { PatchRecord, Rule, ServiceStore } from "../../src/serve/store.ts";
import { seenKey } from "../../src/serve/store.ts";

const rule = (id: string, extra: Partial<Rule> = {}): Rule => ({
  id,
  image: "127.0.0.1:5000/team/app",
  tags: { strategy: "pattern", pattern: "^1\\.", maxTags: 3, exclude: ["1.0-rc"] },
  target: { tag: "{{ .Tag }}-patched" },
  platforms: ["linux/amd64"],
  intervalSeconds: 300,
  ...extra,
});

function result(
  jobId: string,
  repository: string,
  finishedAt: string,
  extra: Partial<PatchRecord> = {},
): PatchRecord {
  return {
    jobId,
    ruleId: "app",
    repository,
    tag: "1.2",
    source: `${repository}:1.2@sha256:${"a".repeat(64)}`,
    reason: "new-tag",
    state: "succeeded",
    outcome: {
      status: "patched",
      target: `${repository}:1.2-patched`,
      digest: `sha256:${"b".repeat(64)}`,
      changed: [{ name: "libssl3", from: "3.0.11-1~deb12u2", to: "3.0.15-1~deb12u1" }],
      cves: ["CVE-2024-5535"],
    },
    durationMs: 4200,
    finishedAt,
    ...extra,
  };
}

export function serviceStoreContract(test: typeof nodeTest, open: () => Promise<ServiceStore>): void {
  test("rules: put, get, list by id, replace, delete", async () => {
    const store = await open();
    try {
      assert.deepEqual(await store.rules.list(), []);
      await store.rules.put(rule("web"));
      await store.rules.put(
        rule("api", { scanner: { command: ["trivy", "image", "{image}"], format: "trivy" } }),
      );
      assert.deepEqual(await store.rules.get("web"), rule("web"));
      assert.deepEqual(
        (await store.rules.list()).map((r) => r.id),
        ["api", "web"],
      );
      await store.rules.put(rule("web", { intervalSeconds: 60, tags: { strategy: "latest" } }));
      assert.deepEqual(
        await store.rules.get("web"),
        rule("web", { intervalSeconds: 60, tags: { strategy: "latest" } }),
      );
      assert.equal((await store.rules.list()).length, 2, "a put of the same id replaces it");
      assert.equal(await store.rules.delete("web"), true);
      assert.equal(await store.rules.delete("web"), false, "deleting what is gone says so");
      assert.equal(await store.rules.get("web"), undefined);
    } finally {
      await store.close();
    }
  });

  test("seen digests: per rule, repository and tag; a new digest replaces the old", async () => {
    const store = await open();
    try {
      const key = seenKey("web", "127.0.0.1:5000/team/app", "1.2");
      assert.equal(await store.seen.get(key), undefined);
      await store.seen.set(key, `sha256:${"1".repeat(64)}`);
      await store.seen.set(seenKey("api", "127.0.0.1:5000/team/app", "1.2"), `sha256:${"2".repeat(64)}`);
      assert.equal(await store.seen.get(key), `sha256:${"1".repeat(64)}`);
      await store.seen.set(key, `sha256:${"3".repeat(64)}`);
      assert.equal(await store.seen.get(key), `sha256:${"3".repeat(64)}`);
    } finally {
      await store.close();
    }
  });

  test("results: an image's history and the recent ones, newest first", async () => {
    const store = await open();
    try {
      const app = "127.0.0.1:5000/team/app";
      const db = "127.0.0.1:5000/team/db";
      await store.results.add(result("j1", app, "2026-12-01T10:00:00.000Z"));
      await store.results.add(result("j2", db, "2026-12-01T11:00:00.000Z"));
      const { outcome: _none, ...withoutOutcome } = result("j3", app, "2026-12-01T12:00:00.000Z");
      const failed: PatchRecord = {
        ...withoutOutcome,
        state: "failed",
        error: { code: "PATCH_FAILED", message: "libssl3 did not reach 3.0.15-1~deb12u1" },
      };
      await store.results.add(failed);
      assert.deepEqual(
        (await store.results.forImage(app)).map((r) => r.jobId),
        ["j3", "j1"],
      );
      assert.deepEqual((await store.results.forImage(app))[0], failed);
      assert.deepEqual((await store.results.forImage(app))[1], result("j1", app, "2026-12-01T10:00:00.000Z"));
      assert.deepEqual(
        (await store.results.recent(2)).map((r) => r.jobId),
        ["j3", "j2"],
      );
      assert.deepEqual(await store.results.forImage("127.0.0.1:5000/team/none"), []);
      // A job that failed once and then succeeded keeps both runs, the last first.
      await store.results.add(
        result("j4", db, "2026-12-01T13:00:00.000Z", { state: "failed", outcome: undefined }),
      );
      await store.results.add(result("j4", db, "2026-12-01T13:05:00.000Z"));
      assert.deepEqual(
        (await store.results.forImage(db)).map((r) => `${r.jobId} ${r.state}`),
        ["j4 succeeded", "j4 failed", "j2 succeeded"],
      );
    } finally {
      await store.close();
    }
  });

  test("VEX documents by job, byte for byte", async () => {
    const store = await open();
    try {
      const doc = `${JSON.stringify({ "@context": "https://openvex.dev/ns/v0.2.0", statements: [] }, null, 2)}\n`;
      assert.equal(await store.vex.get("j1"), undefined);
      await store.vex.put("j1", doc);
      assert.equal(await store.vex.get("j1"), doc);
    } finally {
      await store.close();
    }
  });
}
