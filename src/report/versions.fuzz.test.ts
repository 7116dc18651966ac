import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { fuzzParameters, PARSE_BUDGET_MS, parsesOrFailsCleanly, withinBudget } from "../../test/fuzz/fuzz.ts";
import { compareApkVersions, isValidApkVersion } from "../distro/apk/version.ts";
import { compareDebVersions, isValidDebVersion, parseDebVersion } from "../distro/dpkg/version.ts";
import { compareRpmVersions, isValidRpmVersion, rpmvercmp } from "../distro/rpm/version.ts";

// Property: version comparators decide which package is "fixed"; on valid versions they must be a
// total order (reflexive, antisymmetric, transitive) and never throw; validity checks are total on
// any string; dpkg's parser refuses invalid input with one line of INVALID_VERSION.

const digits = fc.stringMatching(/^(0|[1-9][0-9]{0,5}|[0-9]{1,25})$/);
const alnumDot = (chars: string, max: number) =>
  fc.array(fc.constantFrom(...chars), { minLength: 1, maxLength: max }).map((a) => a.join(""));

/** dpkg: [epoch:]upstream[-revision], upstream starting with a digit. */
const debVersion = fc
  .tuple(
    fc.option(
      digits.filter((d) => d.length <= 9),
      { nil: undefined },
    ),
    digits,
    fc.option(alnumDot("0123456789abcxyzABZ.+~", 8), { nil: undefined }),
    fc.option(alnumDot("0123456789abzAZ.+~", 8), { nil: undefined }),
  )
  .map(([epoch, head, tail, rev]) => `${epoch ? `${epoch}:` : ""}${head}${tail ?? ""}${rev ? `-${rev}` : ""}`)
  .filter(isValidDebVersion);

const APK_SUFFIXES = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"];
/** apk: digits(.digits)*[letter](_suffix[digits])*[~hash][-rN]. */
const apkVersion = fc
  .tuple(
    fc.array(digits, { minLength: 1, maxLength: 4 }),
    fc.option(fc.constantFrom("a", "b", "z"), { nil: undefined }),
    fc.array(fc.tuple(fc.constantFrom(...APK_SUFFIXES), fc.option(digits, { nil: undefined })), {
      maxLength: 2,
    }),
    fc.option(digits, { nil: undefined }),
  )
  .map(
    ([nums, letter, suffixes, rel]) =>
      `${nums.join(".")}${letter ?? ""}${suffixes.map(([s, n]) => `_${s}${n ?? ""}`).join("")}${rel === undefined ? "" : `-r${rel}`}`,
  )
  .filter(isValidApkVersion);

/** rpm: [epoch:]version[-release] from rpm's character set. */
const rpmVersion = fc
  .tuple(
    fc.option(digits, { nil: undefined }),
    alnumDot("0123456789abzAZ._+~^", 10),
    fc.option(alnumDot("0123456789abzel._+~^", 8), { nil: undefined }),
  )
  .map(([epoch, version, release]) => `${epoch ? `${epoch}:` : ""}${version}${release ? `-${release}` : ""}`)
  .filter(isValidRpmVersion);

const SCHEMES = [
  { name: "dpkg", arb: debVersion, compare: compareDebVersions },
  { name: "apk", arb: apkVersion, compare: compareApkVersions },
  { name: "rpm", arb: rpmVersion, compare: compareRpmVersions },
] as const;

for (const { name, arb, compare } of SCHEMES) {
  test(`${name}: compare is a total order on valid versions`, () => {
    fc.assert(
      fc.property(arb, arb, arb, (a, b, c) => {
        const ab = compare(a, b);
        assert.ok(ab === -1 || ab === 0 || ab === 1);
        assert.equal(compare(a, a), 0, `${a} != itself`);
        assert.equal(compare(b, a), -ab, `antisymmetry: ${a} vs ${b}`);
        if (ab <= 0 && compare(b, c) <= 0)
          assert.ok(compare(a, c) <= 0, `transitivity: ${a} <= ${b} <= ${c}`);
      }),
      fuzzParameters(1500),
    );
  });
}

test("validity checks and the apk/rpm comparators are total on arbitrary strings", () => {
  const anyVersion = fc.oneof(
    fc.string({ unit: "binary", maxLength: 40 }),
    fc
      .array(
        fc.constantFrom(
          "1",
          "9",
          "0",
          ".",
          "-",
          ":",
          "~",
          "^",
          "_",
          "+",
          "a",
          "r",
          "p",
          "rc",
          "\n",
          " ",
          "_constructor",
          "_tostring",
        ),
        {
          maxLength: 30,
        },
      )
      .map((a) => a.join("")),
    fc.constant(`1.${"0".repeat(5000)}`),
    fc.constant(`${"9".repeat(400)}:1`),
  );
  fc.assert(
    fc.property(anyVersion, anyVersion, (a, b) => {
      withinBudget(PARSE_BUDGET_MS, () => {
        isValidDebVersion(a);
        isValidApkVersion(a);
        isValidRpmVersion(a);
        for (const compare of [compareApkVersions, compareRpmVersions, rpmvercmp]) {
          const r = compare(a, b);
          assert.ok(r === -1 || r === 0 || r === 1);
        }
        const parsed = parsesOrFailsCleanly(["INVALID_VERSION"], () => parseDebVersion(a));
        assert.equal(parsed !== undefined, isValidDebVersion(a));
        parsesOrFailsCleanly(["INVALID_VERSION"], () => compareDebVersions(a, b));
      });
    }),
    fuzzParameters(1500),
  );
});

// Regression: a case the properties above found, kept as a plain test.
test("regression: apk suffixes named like Object.prototype members are invalid, and ordering stays antisymmetric", () => {
  assert.equal(isValidApkVersion("1_constructor"), false);
  assert.equal(compareApkVersions("1_constructor", "1_p"), -compareApkVersions("1_p", "1_constructor"));
});
