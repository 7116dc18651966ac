import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { cleanFailure } from "../../../test/fuzz/fuzz.ts";
import { minirootfs, readRootfsFiles } from "../../../test/lab/alpine-rootfs.ts";
import { apkTestKey, buildApkIndex } from "../../../test/lab/apk.ts";
import { openApkIndex, parseApkIndex } from "./apkindex.ts";
import { type ApkKeyring, apkKeyring } from "./signature.ts";

const APK_REAL = join(import.meta.dirname, "../../../../shared/fixtures/apk-real");
const REAL_INDEX = join(APK_REAL, "alpine-316-aarch64/APKINDEX.tar.gz");
const REAL_KEY = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub";

/** Every Alpine key, read from the aarch64 minirootfs as an image would ship them. */
let alpineKeys: ApkKeyring;
/** Alpine's keys without the one that signed the v3.16 index. */
let otherKeys: ApkKeyring;

before(async () => {
  const files = await readRootfsFiles(minirootfs("3.20.3", "aarch64"), (p) =>
    /^usr\/share\/apk\/keys\/[^/]+\.rsa\.pub$/.test(p),
  );
  const entries = [...files].map(([path, pem]) => ({ name: path.split("/").pop()!, pem }));
  assert.ok(
    entries.some((e) => e.name === REAL_KEY),
    "the minirootfs ships the key that signed v3.16",
  );
  alpineKeys = apkKeyring(entries, "alpine-minirootfs-3.20.3-aarch64");
  otherKeys = apkKeyring(
    entries.filter((e) => e.name !== REAL_KEY),
    "alpine-minirootfs-3.20.3-aarch64",
  );
});

test("Alpine's real v3.16 APKINDEX.tar.gz verifies with the key from the minirootfs and parses", async () => {
  const index = await openApkIndex(readFileSync(REAL_INDEX), alpineKeys, "v3.16/main/APKINDEX.tar.gz");
  assert.equal(index.signedBy, REAL_KEY);
  assert.equal(index.description, "v3.16.3-13-g4d933a1fa3");
  assert.equal(index.packages.length, 4929);
  const busybox = index.packages.find((p) => p.name === "busybox")!;
  assert.deepEqual(busybox, {
    name: "busybox",
    version: "1.35.0-r17",
    arch: "x86_64",
    checksum: "Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY=",
    size: 507831,
    installedSize: 962560,
    description: "Size optimized toolbox of many common UNIX utilities",
    url: "https://busybox.net/",
    license: "GPL-2.0-only",
    origin: "busybox",
    maintainer: "Sören Tempel <soeren+alpine@soeren-tempel.net>",
    buildTime: 1659366884,
    commit: "2bf6ec48e526113f87216683cd341a78af5f0b3f",
    depends: [{ name: "so:libc.musl-x86_64.so.1", conflict: false }],
    provides: [
      { name: "/bin/sh", conflict: false },
      { name: "cmd:busybox", conflict: false, op: "=", version: "1.35.0-r17" },
      { name: "cmd:sh", conflict: false, op: "=", version: "1.35.0-r17" },
    ],
    installIf: [],
    replaces: [],
  });
  const jit = index.packages.find((p) => p.name === "postgresql13-jit")!;
  assert.equal(jit.providerPriority, 13);
  assert.deepEqual(jit.provides, [{ name: "postgresql-jit", conflict: false }]);
  const ssh = index.packages.find((p) => p.name === "openssh-client-default")!;
  assert.deepEqual(
    ssh.depends.find((d) => d.conflict),
    { name: "openssh-client-krb5", conflict: true },
  );
  const zshDoc = index.packages.find((p) => p.installIf.some((d) => d.name === "zsh"))!;
  assert.deepEqual(zshDoc.installIf, [
    { name: "zsh", conflict: false, op: "=", version: "5.8.1-r4" },
    { name: "git", conflict: false },
  ]);
  const versioned = index.packages.flatMap((p) => p.depends).find((d) => d.op === ">=")!;
  assert.ok(versioned.version);
});

test("a tampered byte anywhere in the signed part of the real index is refused", async () => {
  const bytes = readFileSync(REAL_INDEX);
  for (const at of [667 + 10, Math.floor(bytes.length / 2), bytes.length - 9]) {
    const tampered = Buffer.from(bytes);
    tampered[at]! ^= 0x01;
    await assert.rejects(
      openApkIndex(tampered, alpineKeys, "v3.16/main/APKINDEX.tar.gz"),
      cleanFailure(
        "UNTRUSTED",
        /v3\.16\/main\/APKINDEX\.tar\.gz has a signature by key "alpine-devel@lists\.alpinelinux\.org-6165ee59\.rsa\.pub" that does not verify/,
      ),
    );
  }
  // Bytes appended after the signed part are signed content too (apk hashes to the end).
  await assert.rejects(
    openApkIndex(Buffer.concat([bytes, Buffer.from("x")]), alpineKeys, "idx"),
    cleanFailure("UNTRUSTED", /does not verify/),
  );
});

test("an index signed by a key the image does not have is refused, naming the key and how to trust it", async () => {
  await assert.rejects(
    openApkIndex(readFileSync(REAL_INDEX), otherKeys, "https://mirror/v3.16/main/x86_64/APKINDEX.tar.gz"),
    cleanFailure(
      "UNTRUSTED",
      /^https:\/\/mirror\/v3\.16\/main\/x86_64\/APKINDEX\.tar\.gz is signed by key "alpine-devel@lists\.alpinelinux\.org-6165ee59\.rsa\.pub", which this image does not trust: .*\/etc\/apk\/keys.*--keyring PATH\/alpine-devel@lists\.alpinelinux\.org-6165ee59\.rsa\.pub$/,
    ),
  );
});

test("an unsigned index (the real one without its signature member) is refused", async () => {
  const unsigned = readFileSync(REAL_INDEX).subarray(667);
  await assert.rejects(
    openApkIndex(unsigned, alpineKeys, "idx"),
    cleanFailure("UNTRUSTED", /^idx is not signed .*\/etc\/apk\/keys.*--keyring/),
  );
});

test("RSA256 (SHA-256) signatures verify; the same bytes under another key's name do not", async () => {
  const key = apkTestKey("suture-test-61a1.rsa.pub");
  const impostor = apkTestKey("suture-test-61a1.rsa.pub");
  const text =
    "C:Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY=\nP:demo\nV:1.0-r0\nA:x86_64\nS:10\nI:20\nD:!old-demo so:libc.musl-x86_64.so.1 musl>=1.2\n\n";
  const ring = apkKeyring([{ name: key.name, pem: key.publicPem }], "test");
  const index = await openApkIndex(buildApkIndex(text, key, "sha256"), ring, "idx");
  assert.equal(index.signedBy, key.name);
  assert.deepEqual(index.packages[0]!.depends, [
    { name: "old-demo", conflict: true },
    { name: "so:libc.musl-x86_64.so.1", conflict: false },
    { name: "musl", conflict: false, op: ">=", version: "1.2" },
  ]);
  await assert.rejects(
    openApkIndex(buildApkIndex(text, impostor, "sha256"), ring, "idx"),
    cleanFailure("UNTRUSTED", /does not verify/),
  );
});

test("index entries with hostile identity fields, no checksum or bad dependencies are refused", () => {
  const entry = (extra: string) => `C:Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY=\nV:1.0-r0\nA:x86_64\n${extra}\n`;
  const cases: [string, RegExp][] = [
    [entry("P:../../etc/passwd"), /package name "..\/..\/etc\/passwd" that breaks apk-tools' package syntax/],
    [entry("P:-rf"), /package name "-rf"/],
    [entry("P:demo\nD:foo>>1"), /dependency "foo>>1" that has an unknown version operator/],
    [entry("P:demo\nD:foo=1/../x"), /dependency "foo=1\/..\/x" that has an invalid version/],
    ["C:Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY=\nP:demo\nV:1;rm\n", /package version "1;rm"/],
    [entry("P:demo\nS:-1"), /S: "-1", which is not a non-negative integer/],
    ["C:not-a-checksum\nP:demo\nV:1.0-r0\n", /malformed C: checksum "not-a-checksum"/],
    ["P:demo\nV:1.0-r0\n", /without a C: checksum/],
    ["P:demo\nV 1.0\n", /line 2 "V 1.0" is not an apk field/],
  ];
  for (const [text, pattern] of cases)
    assert.throws(() => parseApkIndex(text, "idx"), cleanFailure("INVALID_ARCHIVE", pattern), text);
});

test("a checksum pin (><Q1…) and every version operator parse", () => {
  const [pkg] = parseApkIndex(
    "C:Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY=\nP:demo\nV:1.0-r0\nD:a<1 b<=2 c>3 d>=4 e=5 f~6 g~=7 h><Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY= cmd:[\n",
    "idx",
  );
  assert.deepEqual(
    pkg!.depends.map((d) => d.op ?? ""),
    ["<", "<=", ">", ">=", "=", "~", "~=", "><", ""],
  );
  assert.equal(pkg!.depends[7]!.version, "Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY=");
  assert.equal(pkg!.depends[8]!.name, "cmd:[");
});
