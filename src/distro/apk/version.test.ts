import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { compareApkVersions, compareApkVersionsFuzzy, isValidApkVersion } from "./version.ts";

const APK_VECTORS = join(import.meta.dirname, "../../../../shared/fixtures/vectors/apk-version.data");

test("apk-tools' own version vectors: order, fuzzy match and validity", (t) => {
  if (!existsSync(APK_VECTORS)) return t.skip("skipped: ../shared not present");
  let checked = 0;
  for (const raw of readFileSync(APK_VECTORS, "utf8").split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) continue;
    const parts = line.split(/\s+/);
    if (parts.length === 1) {
      const [v] = parts as [string];
      const invalid = v.startsWith("!");
      assert.equal(isValidApkVersion(invalid ? v.slice(1) : v), !invalid, `validity of ${v}`);
    } else {
      const [a, op, b] = parts as [string, string, string];
      const negate = op.startsWith("!");
      const bare = negate ? op.slice(1) : op;
      const fuzzy = bare.includes("~");
      const r = fuzzy ? compareApkVersionsFuzzy(a, b) : compareApkVersions(a, b);
      const ok =
        (bare.includes("<") && r < 0) ||
        (bare.includes(">") && r > 0) ||
        ((bare.includes("=") || bare.includes("~")) && r === 0);
      assert.equal(negate ? !ok : ok, true, `${a} ${op} ${b} (got ${r})`);
    }
    checked++;
  }
  assert.ok(checked > 700, `only ${checked} vectors`);
});

test("apk ordering of the versions in copa's and Trivy's Alpine reports", () => {
  assert.equal(compareApkVersions("1.1.1d-r2", "1.1.1c-r0"), 1);
  assert.equal(compareApkVersions("2.12.6-r0", "2.12.5-r1"), 1);
  assert.equal(compareApkVersions("1.1.20-r5", "1.1.20-r4"), 1);
  assert.equal(compareApkVersions("3.3.2-r5", "3.3.2-r5"), 0);
  assert.equal(compareApkVersions("1.2_rc1-r0", "1.2-r0"), -1);
});
