import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { seededRandom as rng } from "../../../test/fuzz/fuzz.ts";
import { needs } from "../../../test/lab/requirements.ts";
import { compareRpmVersions, parseRpmEvr } from "./version.ts";

const run = promisify(execFile);
const SHARED = join(import.meta.dirname, "../../../../shared/fixtures");

/** Versions in the rpm-family Trivy fixtures plus synthetic ones stressing rpmvercmp's rules. */
function rpmVersions(r: () => number): string[] {
  const real: string[] = [];
  const dir = join(SHARED, "trivy-golden");
  if (existsSync(dir)) {
    for (const f of readdirSync(dir)) {
      if (!/centos|alma|rocky|amazon|oracle|mariner|photon|opensuse|ubi|sl-micro/.test(f)) continue;
      for (const m of readFileSync(join(dir, f), "utf8").matchAll(
        /"(?:InstalledVersion|FixedVersion)": "([^"]+)"/g,
      )) {
        real.push(m[1]!);
      }
    }
  }
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const parts = [
    "0",
    "1",
    "01",
    "2",
    "10",
    "a",
    "b",
    "rc",
    "~",
    "~~",
    "^",
    ".",
    "_",
    "+",
    "el7",
    "el8_5",
    "git20240101",
    "amzn2",
  ];
  const synthetic = Array.from({ length: 400 }, () => {
    let v = pick(["1", "1.0", "2", "0.9", "1.0.1", "10"]);
    for (let i = 0, n = Math.floor(r() * 3); i < n; i++) v += pick(parts);
    if (r() < 0.7) {
      let rel = pick(["1", "2", "0.1", "1.el7", "1.el8"]);
      for (let i = 0, n = Math.floor(r() * 2); i < n; i++) rel += pick(parts);
      v += `-${rel}`;
    }
    if (r() < 0.2) v = `${pick(["0", "1", "2", "01"])}:${v}`;
    return v;
  });
  return [...new Set([...real, ...synthetic])].filter((v) => !v.endsWith("-") && !v.startsWith("-"));
}

test(
  "rpm ordering agrees with the real rpm (rpm.vercmp) on thousands of pairs",
  await needs("tool:rpm"),
  async () => {
    const r = rng(99);
    const versions = rpmVersions(r);
    const pick = () => versions[Math.floor(r() * versions.length)]!;
    const pairs: [string, string][] = [];
    for (let i = 0; i < 2500; i++) pairs.push([pick(), pick()]);
    // Near misses: same string with a suffix, or identical.
    for (let i = 0; i < 500; i++) {
      const v = pick();
      pairs.push([v, `${v}${["~1", "^1", ".0", "a", ".1", "_1"][i % 6]}`], [v, v]);
    }
    const dir = mkdtempSync(join(tmpdir(), "suture-rpm-"));
    try {
      const file = join(dir, "pairs.tsv");
      writeFileSync(file, pairs.map(([a, b]) => `${a}\t${b}\n`).join(""));
      // One rpm process evaluates every pair in Lua: rpm.vercmp is the EVR comparison rpm uses.
      const lua = `%{lua: for line in io.lines("${file}") do local a, b = line:match("^(.-)\\t(.*)$"); print(rpm.vercmp(a, b) .. "\\n") end}`;
      const { stdout } = await run("rpm", ["--eval", lua], { maxBuffer: 1 << 24 });
      const expected = stdout.trim().split("\n").map(Number);
      assert.equal(expected.length, pairs.length);
      const mismatches = pairs
        .map(([a, b], i) => ({ a, b, rpm: expected[i], ours: compareRpmVersions(a, b) }))
        .filter((m) => m.rpm !== m.ours);
      assert.deepEqual(
        mismatches.slice(0, 10),
        [],
        `${mismatches.length} of ${pairs.length} pairs disagree with rpm`,
      );
      for (const outcome of [-1, 0, 1])
        assert.ok(expected.filter((e) => e === outcome).length > 100, `outcome ${outcome}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test("rpm EVR split and the orders from the rpm-family fixtures", () => {
  assert.deepEqual(parseRpmEvr("1:1.0.2k-16.el7"), { epoch: "1", version: "1.0.2k", release: "16.el7" });
  assert.deepEqual(parseRpmEvr("7.61.1"), { epoch: undefined, version: "7.61.1", release: undefined });
  assert.equal(compareRpmVersions("1:1.0.2k-19.el7", "1:1.0.2k-16.el7"), 1);
  assert.equal(compareRpmVersions("1:1.1.1k-5.el8_5", "1:1.1.1k-4.el8"), 1);
  assert.equal(compareRpmVersions("1.0.2k-19.el7", "1:1.0.2k-16.el7"), -1);
  assert.equal(compareRpmVersions("7.61.1-12.amzn2.0.1", "7.61.1-9.amzn2.0.1"), 1);
  assert.equal(compareRpmVersions("1.0~rc1-1", "1.0-1"), -1);
});
