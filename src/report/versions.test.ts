import assert from "node:assert/strict";
import { test } from "node:test";
import { versionSchemeFor } from "./versions.ts";

test("version schemes by package type", () => {
  assert.equal(versionSchemeFor("deb").compare("1.0~rc1", "1.0"), -1);
  assert.equal(versionSchemeFor("apk").compare("1.0_rc1", "1.0"), -1);
  assert.equal(versionSchemeFor("rpm").compare("1.0~rc1", "1.0"), -1);
  assert.equal(versionSchemeFor("deb").isValid("a1"), false);
  assert.equal(versionSchemeFor("apk").isValid("1.0-1"), false);
  assert.equal(versionSchemeFor(undefined).compare("1.10", "1.9"), 1);
});
