import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { compareDebVersions, formatDebVersion, parseDebVersion } from "./version.ts";

// The differential tests against the real dpkg (thousands of pairs) are in
// test/integration/dpkg-version-differential.test.ts: they take minutes, and need dpkg.

test("dpkg ordering basics (Policy §5.6.12 examples)", () => {
  const lt = (a: string, b: string) => {
    assert.equal(compareDebVersions(a, b), -1, `${a} < ${b}`);
    assert.equal(compareDebVersions(b, a), 1, `${b} > ${a}`);
  };
  lt("1.0~rc1", "1.0");
  lt("1.0~~", "1.0~");
  lt("1.0~", "1.0");
  lt("1.0", "1.0a");
  lt("1.0a", "1.0+");
  lt("1.0", "1.0.1");
  lt("1.9", "1.10");
  lt("9.9", "1:0.1");
  lt("3.0.11-1~deb12u1", "3.0.11-1~deb12u2");
  lt("3.0.11-1~deb12u2", "3.0.11-1");
  lt("2.28-10", "2.28-10+deb10u1");
  assert.equal(compareDebVersions("1.0", "1.0-0"), 0);
  assert.equal(compareDebVersions("0:1.01", "1.1"), 0);
  assert.equal(compareDebVersions("1.0-00", "1.0"), 0);
  // digit runs longer than any machine integer still compare numerically
  lt("1.99999999999999999999998", "1.99999999999999999999999");
});

test("parseDebVersion splits epoch, upstream and revision at the right separators", () => {
  assert.deepEqual(parseDebVersion("1:2.30-4-5"), { epoch: 1, upstream: "2.30-4", revision: "5" });
  assert.deepEqual(parseDebVersion("2:1:3.0"), { epoch: 2, upstream: "1:3.0", revision: "" });
  assert.deepEqual(parseDebVersion(" 3.0.11-1~deb12u2 "), {
    epoch: 0,
    upstream: "3.0.11",
    revision: "1~deb12u2",
  });
  assert.equal(formatDebVersion(parseDebVersion("0:1.2-3")), "1.2-3");
  assert.equal(formatDebVersion(parseDebVersion("7:1.2")), "7:1.2");
});

test("parseDebVersion rejects invalid versions with the reason", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["1.0 2", /embedded spaces/],
    [":1.0", /epoch in version is empty/],
    ["a:1.0", /epoch in version is not number/],
    ["99999999999:1.0", /epoch in version is too big/],
    ["1:", /nothing after colon/],
    ["1.0-", /revision number is empty/],
    ["-1", /version number is empty/],
    ["a1.0", /does not start with digit/],
    ["1.0_1", /invalid character in version number/],
    ["1:1.0-1:2", /invalid character in revision number/],
    ["1.0-1_2", /invalid character in revision number/],
  ];
  for (const [v, reason] of cases) {
    assert.throws(
      () => parseDebVersion(v),
      (e) =>
        isSutureError(e, "INVALID_VERSION") &&
        reason.test(e.message) &&
        e.message.includes(JSON.stringify(v)),
      v,
    );
    assert.throws(
      () => compareDebVersions(v, "1.0"),
      (e) => isSutureError(e, "INVALID_VERSION"),
    );
  }
});
