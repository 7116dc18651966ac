import assert from "node:assert/strict";
import { test } from "node:test";
import { selectTags, tagVersion } from "./discover.ts";

const NGINX_TAGS = [
  "latest",
  "1.25",
  "1.25.0",
  "1.25.1",
  "1.25.2",
  "1.25.3",
  "1.25.3-alpine",
  "1.25.10",
  "1.26.0",
  "1.25.4-rc1",
  "mainline",
  "stable-bookworm",
];

test("tags are versions as copa reads them: an optional v, one to three parts, stable without a prerelease", () => {
  assert.equal(tagVersion("1.25.3")?.version, "1.25.3");
  assert.equal(tagVersion("v2")?.version, "2.0.0");
  assert.equal(tagVersion("12.4")?.version, "12.4.0");
  assert.deepEqual(tagVersion("12.4-slim")?.prerelease, ["slim"]);
  assert.equal(tagVersion("bookworm"), undefined);
  assert.equal(tagVersion("1.2.3.4"), undefined);
  assert.equal(tagVersion("01.2"), undefined);
});

test("pattern: matching stable semver tags minus exclude, newest maxTags, oldest first; the rest are said", () => {
  const picked = selectTags(
    { strategy: "pattern", pattern: /^1\.25\.[0-9]+/, maxTags: 2, exclude: ["1.25.10"] },
    NGINX_TAGS,
  );
  assert.deepEqual(picked.tags, ["1.25.2", "1.25.3"]);
  assert.ok(picked.warnings.some((w) => w.includes('"1.25.3-alpine" is a prerelease')));
  assert.ok(picked.warnings.some((w) => w.includes('"1.25.4-rc1" is a prerelease')));
  // Versions compare as numbers: 1.25.10 is newer than 1.25.3.
  const all = selectTags({ strategy: "pattern", pattern: /^1\.25\.[0-9]+$/, exclude: [] }, NGINX_TAGS);
  assert.deepEqual(all.tags, ["1.25.0", "1.25.1", "1.25.2", "1.25.3", "1.25.10"]);
  assert.deepEqual(all.warnings, []);
  assert.deepEqual(selectTags({ strategy: "pattern", pattern: /^3\./, exclude: [] }, NGINX_TAGS), {
    tags: [],
    warnings: [],
  });
});

test("latest: the highest stable semver tag, minus exclude", () => {
  assert.deepEqual(selectTags({ strategy: "latest", exclude: [] }, NGINX_TAGS).tags, ["1.26.0"]);
  assert.deepEqual(selectTags({ strategy: "latest", exclude: ["1.26.0"] }, NGINX_TAGS).tags, ["1.25.10"]);
  const none = selectTags({ strategy: "latest", exclude: [] }, ["latest", "bookworm"]);
  assert.deepEqual(none.tags, []);
  assert.match(none.warnings[0]!, /no tag is a stable semantic version/);
});
