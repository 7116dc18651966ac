import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { compareDebVersions, isValidDebVersion } from "../../src/distro/dpkg/version.ts";
import { seededRandom as rng } from "../fuzz/fuzz.ts";
import { needs } from "../lab/requirements.ts";

const run = promisify(execFile);
// The real dpkg answers for thousands of versions (a dpkg process per comparison: minutes on two
// cores), so this lives in the integration tier; src/distro/dpkg/version.test.ts has the table tests.
const SHARED = join(import.meta.dirname, "../../../shared/fixtures");
const withDpkg = await needs("tool:dpkg");

/**
 * Ask the real dpkg: one shell per batch loops over the pairs (one dpkg exec per comparison
 * would spend most of the time in process start-up).
 */
async function dpkgCompare(pairs: [string, string][]): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), "suture-dpkg-"));
  try {
    const batches: [string, string][][] = [];
    for (let i = 0; i < pairs.length; i += 800) batches.push(pairs.slice(i, i + 800));
    const script = [
      "while IFS=$'\\t' read -r a b; do",
      '  if dpkg --compare-versions "$a" lt "$b" 2>/dev/null; then echo -1',
      '  elif dpkg --compare-versions "$a" eq "$b" 2>/dev/null; then echo 0',
      "  else echo 1; fi",
      'done < "$1"',
    ].join("\n");
    const out: number[][] = [];
    // Two batches at a time: the machine has two cores shared with others.
    for (let i = 0; i < batches.length; i += 2) {
      const results = await Promise.all(
        batches.slice(i, i + 2).map(async (batch, k) => {
          const file = join(dir, `pairs-${i + k}.tsv`);
          writeFileSync(file, batch.map(([a, b]) => `${a}\t${b}\n`).join(""));
          const { stdout } = await run("bash", ["-c", script, "dpkg-batch", file], { maxBuffer: 1 << 24 });
          return stdout.trim().split("\n").map(Number);
        }),
      );
      out.push(...results);
    }
    return out.flat();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Versions dpkg accepts without a warning (exit 0 and nothing on stderr). */
async function dpkgValidity(versions: string[]): Promise<boolean[]> {
  const dir = mkdtempSync(join(tmpdir(), "suture-dpkg-"));
  try {
    const file = join(dir, "versions.txt");
    writeFileSync(file, versions.map((v) => `${v}\n`).join(""));
    const script = [
      "while IFS= read -r v; do",
      '  err=$(dpkg --compare-versions "$v" eq "$v" 2>&1 >/dev/null); rc=$?',
      '  if [ $rc -eq 0 ] && [ -z "$err" ]; then echo 1; else echo 0; fi',
      'done < "$1"',
    ].join("\n");
    const { stdout } = await run("bash", ["-c", script, "dpkg-valid", file]);
    return stdout
      .trim()
      .split("\n")
      .map((l) => l === "1");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Real versions from Debian's archive, kept in the project (src/distro/dpkg/testdata/bookworm-versions.txt says
 * where they come from): the host's own dpkg status would make the test's reach depend on what
 * happens to be installed on the machine running it.
 */
function archiveVersions(): string[] {
  return readFileSync(
    join(import.meta.dirname, "../../src/distro/dpkg/testdata/bookworm-versions.txt"),
    "utf8",
  )
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
}

function fixtureVersions(): string[] {
  const out: string[] = [];
  for (const dir of ["trivy-golden", "copa-reports"]) {
    const path = join(SHARED, dir);
    for (const f of readdirSync(path)) {
      const text = readFileSync(join(path, f), "utf8");
      for (const m of text.matchAll(
        /"(?:InstalledVersion|FixedVersion|installedVersion|fixedVersion)": "([^"]*)"/g,
      )) {
        for (const v of m[1]!.split(",")) if (v.trim()) out.push(v.trim());
      }
    }
  }
  return out;
}

/** Versions built from a small alphabet so that equal, near-equal and tilde cases are frequent. */
function syntheticVersion(r: () => number): string {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const upstreamParts = [
    "0",
    "00",
    "1",
    "01",
    "2",
    "9",
    "10",
    "010",
    "a",
    "b",
    "Z",
    "~",
    "~~",
    "~a",
    "+",
    ".",
    "+b1",
    "~rc1",
    ".0",
    "-",
  ];
  const revisionParts = [
    "0",
    "1",
    "00",
    "a",
    "~",
    "+",
    ".",
    "deb12u1",
    "~deb12u2",
    "ubuntu0.1",
    "+b2",
    "~bpo",
  ];
  let upstream = pick(["0", "1", "1", "2", "10", "0001"]);
  const n = Math.floor(r() * 4);
  for (let i = 0; i < n; i++) upstream += pick(upstreamParts);
  let v = upstream;
  if (r() < 0.6) {
    let rev = pick(["0", "1", "2", "1a", "a", "~", "1~"]);
    for (let i = 0, m = Math.floor(r() * 3); i < m; i++) rev += pick(revisionParts);
    v += `-${rev}`;
  }
  if (r() < 0.25) v = `${pick(["0", "1", "2", "00", "10"])}:${v}`;
  return v;
}

/** Small edits of a real version: the comparisons scanners and apt actually make. */
function mutate(v: string, r: () => number): string {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  switch (Math.floor(r() * 7)) {
    case 0:
      return `${v}~${pick(["1", "deb12u1", "rc1", "bpo1"])}`;
    case 1:
      return `${v}+${pick(["b1", "deb12u1", "1", "0"])}`;
    case 2:
      return v.replace(/\d+(?=\D*$)/, (d) => String(Number(d) + pick([-1, 1, 10])).replace("-", ""));
    case 3:
      return v.includes(":") ? v.replace(/^\d+:/, "") : `1:${v}`;
    case 4:
      return v.replace(/\d+/, (d) => `0${d}`);
    case 5:
      return `${v}.${pick(["0", "1", "a"])}`;
    default:
      return v.includes("-") ? v.slice(0, v.lastIndexOf("-")) : `${v}-0`;
  }
}

test("validity agrees with the real dpkg (no warning, no error)", withDpkg, async () => {
  const r = rng(7);
  const candidates = [
    ...archiveVersions().filter((_, i) => i % 33 === 0),
    ...Array.from({ length: 120 }, () => syntheticVersion(r)),
    "a1.0",
    "1.0_1",
    "1.0-1:2",
    "1:",
    ":1",
    "1.0-",
    "-1",
    "1..0",
    "1.0~-~",
    "0:0",
    "1:1:1",
    "1.0-a-b",
    "1.0-+",
    "a:1",
    "1 2",
    "1.0-1~a+b.c",
    "1.0é",
  ];
  const dpkg = await dpkgValidity(candidates);
  for (const [i, v] of candidates.entries()) {
    assert.equal(isValidDebVersion(v), dpkg[i], `validity of ${JSON.stringify(v)}`);
  }
});

test("ordering agrees with the real dpkg --compare-versions on thousands of pairs", withDpkg, async () => {
  const r = rng(20240611);
  const archive = archiveVersions();
  assert.ok(archive.length > 1500, `expected many real versions, got ${archive.length}`);
  assert.deepEqual(
    archive.filter((v) => !isValidDebVersion(v)),
    [],
    "the archive's versions are all valid",
  );
  // The scanners' fixtures add Ubuntu's and older Debian releases' versions when ../shared is there.
  const real = [...new Set([...archive, ...(existsSync(SHARED) ? fixtureVersions() : [])])].filter(
    isValidDebVersion,
  );
  const pairs: [string, string][] = [];
  const add = (a: string, b: string) => {
    if (isValidDebVersion(a) && isValidDebVersion(b)) pairs.push([a, b]);
  };
  const pick = () => real[Math.floor(r() * real.length)]!;
  // Neighbours in a lexical sort share prefixes: the interesting comparisons.
  const sorted = [...real].sort();
  for (let i = 1; i < sorted.length; i++) add(sorted[i - 1]!, sorted[i]!);
  for (let i = 0; i < 700; i++) add(pick(), pick());
  for (let i = 0; i < 900; i++) {
    const v = pick();
    add(v, mutate(v, r));
  }
  for (let i = 0; i < 1200; i++) add(syntheticVersion(r), syntheticVersion(r));
  for (let i = 0; i < 100; i++) {
    const v = syntheticVersion(r);
    add(v, v);
  }
  assert.ok(pairs.length >= 3000, `generated ${pairs.length} pairs`);
  const expected = await dpkgCompare(pairs);
  assert.equal(expected.length, pairs.length);
  const mismatches = pairs
    .map(([a, b], i) => ({ a, b, dpkg: expected[i], ours: compareDebVersions(a, b) }))
    .filter((m) => m.dpkg !== m.ours);
  assert.deepEqual(
    mismatches.slice(0, 10),
    [],
    `${mismatches.length} of ${pairs.length} pairs disagree with dpkg`,
  );
  // Every outcome must have been exercised, or the generator is too narrow to prove anything.
  for (const outcome of [-1, 0, 1])
    assert.ok(expected.filter((e) => e === outcome).length > 50, `outcome ${outcome}`);
});
