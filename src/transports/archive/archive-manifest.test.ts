import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { parseReference } from "../../ref/reference.ts";
import { type ArchiveItem, repoTagFor, repoTagMatches, selectArchiveItem } from "./archive-manifest.ts";

test("RepoTags match references the way Docker normalises names", () => {
  assert.ok(repoTagMatches("nginx:latest", parseReference("docker.io/library/nginx")));
  assert.ok(repoTagMatches("docker.io/library/nginx:1.25", parseReference("nginx:1.25")));
  assert.ok(repoTagMatches("localhost:5000/app:v1", parseReference("localhost:5000/app:v1")));
  assert.ok(!repoTagMatches("nginx:1.25", parseReference("nginx:1.26")));
  assert.ok(!repoTagMatches("other/nginx:1.25", parseReference("nginx:1.25")));
  assert.ok(!repoTagMatches("NOT A REF", parseReference("nginx")));
  assert.equal(repoTagFor(parseReference("nginx:1.25")), "nginx:1.25");
  assert.equal(repoTagFor(parseReference("ghcr.io/a/b:c")), "ghcr.io/a/b:c");
});

test("archive items are chosen by tag, by image ID, or as the only one", async () => {
  const items: ArchiveItem[] = [
    { Config: "a.json", RepoTags: ["a:1"], Layers: [] },
    { Config: "b.json", RepoTags: ["b:2", "b:latest"], Layers: [] },
  ];
  const options = {
    name: "docker-archive:x.tar",
    configDigest: async (i: ArchiveItem) => `sha256:${i.Config[0]!.repeat(64)}`,
  };
  assert.equal((await selectArchiveItem(items, parseReference("b"), options)).Config, "b.json");
  assert.equal(
    (await selectArchiveItem(items, parseReference(`x@sha256:${"a".repeat(64)}`), options)).Config,
    "a.json",
  );
  await assert.rejects(selectArchiveItem(items, undefined, options), (e) =>
    isSutureError(e, "INVALID_REFERENCE"),
  );
  await assert.rejects(selectArchiveItem(items, parseReference("c"), options), (e) =>
    isSutureError(e, "NOT_FOUND"),
  );
  const single = [items[0]!];
  assert.equal((await selectArchiveItem(single, undefined, options)).Config, "a.json");
  await assert.rejects(selectArchiveItem(single, parseReference("c"), options), (e) =>
    isSutureError(e, "NOT_FOUND"),
  );
  assert.equal(
    (await selectArchiveItem(single, parseReference("c"), { ...options, acceptSingle: true })).Config,
    "a.json",
  );
});
