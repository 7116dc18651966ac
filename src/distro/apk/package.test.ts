import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cleanFailure } from "../../../test/fuzz/fuzz.ts";
import { minirootfs, readRootfsFiles } from "../../../test/lab/alpine-rootfs.ts";
import { apkTestKey, buildApk } from "../../../test/lab/apk.ts";
import type { ErrorCode } from "../../errors/errors.ts";
import {
  type ApkDataEntry,
  type ApkPackage,
  checkApkAgainstIndex,
  formatApkChecksum,
  openApk,
} from "./package.ts";
import { type ApkKeyring, apkKeyring } from "./signature.ts";

// Golden values read from the real files once on the host (python's tarfile and zlib, openssl
// dgst -verify, sha256sum of each member's raw bytes) and written down here.

const APK_REAL = join(import.meta.dirname, "../../../../shared/fixtures/apk-real");
const BASELAYOUT = join(APK_REAL, "alpine-316-aarch64/alpine-baselayout-3.2.0-r23.apk");
const WOLFI = join(APK_REAL, "hello-wolfi-2.12.1-r0.apk");
const MELANGE_REPLACES = join(APK_REAL, "replaces-0.0.1-r0.apk");

let alpineKeys: ApkKeyring;
let work: string;

before(async () => {
  const files = await readRootfsFiles(minirootfs("3.20.3", "aarch64"), (p) =>
    /^usr\/share\/apk\/keys\/[^/]+\.rsa\.pub$/.test(p),
  );
  alpineKeys = apkKeyring(
    [...files].map(([path, pem]) => ({ name: path.split("/").pop()!, pem })),
    "alpine-minirootfs-3.20.3-aarch64",
  );
  work = mkdtempSync(join(tmpdir(), "suture-apk-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

async function allEntries(pkg: ApkPackage): Promise<(ApkDataEntry & { content: Buffer })[]> {
  const out: (ApkDataEntry & { content: Buffer })[] = [];
  for await (const e of pkg.dataEntries()) {
    const chunks: Buffer[] = [];
    for await (const c of e.body) chunks.push(c);
    out.push({ ...e, content: Buffer.concat(chunks) });
  }
  return out;
}

test("Alpine's alpine-baselayout 3.2.0-r23: .PKGINFO, scripts, control checksum, signature, data with checksums", async () => {
  const pkg = await openApk(BASELAYOUT);
  assert.equal(pkg.info.name, "alpine-baselayout");
  assert.equal(pkg.info.version, "3.2.0-r23");
  assert.equal(pkg.info.arch, "aarch64");
  assert.equal(pkg.info.installedSize, 339968);
  assert.equal(pkg.info.origin, "alpine-baselayout");
  assert.equal(pkg.info.commit, "348653a9ba0701e8e968b3344e72313a9ef334e4");
  assert.equal(pkg.info.buildTime, 1662926906);
  assert.deepEqual(pkg.info.depends, [
    { name: "alpine-baselayout-data", conflict: false, op: "=", version: "3.2.0-r23" },
    { name: "/bin/sh", conflict: false },
    { name: "so:libc.musl-aarch64.so.1", conflict: false },
  ]);
  assert.deepEqual(pkg.info.provides, [
    { name: "cmd:mkmntdirs", conflict: false, op: "=", version: "3.2.0-r23" },
  ]);
  assert.equal(pkg.datahash, "1a3a8e47d2287da6d505d973412cee1ad64bcc17bc5995069e4e932055ecb0c4");
  assert.equal(pkg.controlChecksum, "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=");
  assert.deepEqual(
    [...pkg.scripts.keys()],
    [".pre-install", ".pre-upgrade", ".post-upgrade", ".post-install"],
  );
  assert.equal(
    pkg.scripts.get(".pre-install")!.toString(),
    "#!/bin/sh\n\naddgroup -S -g 42 shadow 2>/dev/null\n\nexit 0\n",
  );
  assert.deepEqual(
    pkg.signatures.map((s) => [s.keyName, s.algorithm]),
    [["alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub", "sha1"]],
  );
  assert.equal(pkg.verifySignature(alpineKeys), "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub");
  assert.deepEqual([pkg.dataOffset, pkg.dataSize], [2229, 8783]);
  await pkg.checkData();

  const entries = await allEntries(pkg);
  assert.equal(entries.length, 83);
  assert.equal(entries.filter((e) => e.checksum).length, 14);
  const crontab = entries.find((e) => e.header.path === "etc/crontabs/root")!;
  assert.equal(crontab.header.mode, 0o600);
  assert.deepEqual(crontab.checksum, { algorithm: "sha1", hex: "bdf9356a9516238c8b2468613517749098b17ef6" });
  assert.equal(createHash("sha1").update(crontab.content).digest("hex"), crontab.checksum!.hex);
  const varRun = entries.find((e) => e.header.path === "var/run")!;
  assert.equal(varRun.header.type, "symlink");
  assert.equal(varRun.header.linkname, "/run");
  // apk checksums a symlink's target text.
  assert.equal(varRun.checksum!.hex, createHash("sha1").update("/run").digest("hex"));
  assert.equal(
    formatApkChecksum("sha1", Buffer.from(crontab.checksum!.hex, "hex")),
    `Q1${Buffer.from("bdf9356a9516238c8b2468613517749098b17ef6", "hex").toString("base64")}`,
  );
  checkApkAgainstIndex(pkg, {
    name: "alpine-baselayout",
    version: "3.2.0-r23",
    checksum: "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=",
  });
});

test("Wolfi's hello-wolfi (signed by melange's key) and melange's unsigned replaces package", async () => {
  const hello = await openApk(WOLFI);
  assert.deepEqual(
    [hello.info.name, hello.info.version, hello.info.arch],
    ["hello-wolfi", "2.12.1-r0", "x86_64"],
  );
  assert.equal(hello.datahash, "3a6c21f20a07bebf261162b5ab13cb041d7c1cc3e1edc644aaa99f109f87d887");
  assert.equal(hello.controlChecksum, "Q1j9huCmxqWKDR+abKskcY8e/aZMo=");
  assert.deepEqual(
    hello.info.depends.map((d) => d.name),
    ["so:ld-linux-x86-64.so.2", "so:libc.so.6"],
  );
  assert.equal(hello.scripts.size, 0);
  assert.throws(
    () => hello.verifySignature(alpineKeys),
    cleanFailure(
      "UNTRUSTED",
      /is signed by key "melange\.rsa\.pub", which this image does not trust: .*\/etc\/apk\/keys.*--keyring PATH\/melange\.rsa\.pub/,
    ),
  );
  const entries = await allEntries(hello);
  assert.equal(entries.length, 144);
  assert.deepEqual(entries.find((e) => e.header.path === "usr/bin/hello")!.checksum, {
    algorithm: "sha1",
    hex: "5445a8546f7818d0d624f62328bee1c4ffdf0c2d",
  });

  const replaces = await openApk(MELANGE_REPLACES);
  assert.deepEqual(replaces.signatures, []);
  assert.equal(replaces.controlChecksum, "Q1fHE4AsjeXVD+2kHg7AHvGDN+FPg=");
  assert.deepEqual(replaces.info.replaces, [
    { name: "foo", conflict: false },
    { name: "bar", conflict: false },
  ]);
  assert.equal(replaces.datahash, "71b14cc95cf71f4f6c1666cb1699b3bc4f52d17f5575c893324c8f62bb19d9b3");
  assert.throws(() => replaces.verifySignature(alpineKeys), cleanFailure("UNTRUSTED", /is not signed/));
  const files = await allEntries(replaces);
  assert.deepEqual(
    files.map((e) => e.header.path),
    [
      "hello",
      "var",
      "var/lib",
      "var/lib/db",
      "var/lib/db/sbom",
      "var/lib/db/sbom/replaces-0.0.1-r0.spdx.json",
    ],
  );
  assert.deepEqual([files[0]!.header.uid, files[0]!.header.gid], [501, 20]);
});

test("a package whose data or control was changed is refused: datahash, index C: and signature", async () => {
  const bytes = readFileSync(BASELAYOUT);
  const tamperedData = Buffer.from(bytes);
  tamperedData[bytes.length - 20]! ^= 0x01; // inside the data member's deflate stream or trailer
  const dataPath = join(work, "tampered-data.apk");
  writeFileSync(dataPath, tamperedData);
  const pkg = await openApk(dataPath);
  await assert.rejects(
    pkg.checkData(),
    cleanFailure("UNTRUSTED", /has data with SHA-256 [0-9a-f]{64} where its \.PKGINFO says 1a3a8e47/),
  );
  // However the change breaks the stream (deflate, CRC, tar), the reader says what happened.
  await assert.rejects(
    allEntries(pkg),
    cleanFailure("UNTRUSTED", /has data with SHA-256 [0-9a-f]{64} where/),
  );
  for (const at of [pkg.dataOffset + 40, pkg.dataOffset + 4000]) {
    const copy = Buffer.from(bytes);
    copy[at]! ^= 0x10;
    writeFileSync(dataPath, copy);
    await assert.rejects(
      allEntries(await openApk(dataPath)),
      cleanFailure("UNTRUSTED", /has data with SHA-256 [0-9a-f]{64} where/),
    );
  }

  // A rebuilt control segment (another .PKGINFO) no longer matches the index nor the signature.
  const key = apkTestKey();
  const forged = buildApk({
    pkginfo: "pkgname = alpine-baselayout\npkgver = 3.2.0-r23\narch = aarch64\n",
    files: [],
    key,
  });
  const forgedPath = join(work, "forged.apk");
  writeFileSync(forgedPath, forged.bytes);
  const other = await openApk(forgedPath);
  assert.throws(
    () =>
      checkApkAgainstIndex(other, {
        name: "alpine-baselayout",
        version: "3.2.0-r23",
        checksum: "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=",
      }),
    cleanFailure(
      "UNTRUSTED",
      /has control checksum Q1.* where its signed index says "Q1LLq2qDNrS\/qRnhxQ3hsY\/sHbQnc="/,
    ),
  );
  assert.throws(
    () =>
      checkApkAgainstIndex(other, {
        name: "alpine-baselayout",
        version: "3.2.0-r24",
        checksum: forged.checksum,
      }),
    cleanFailure("UNTRUSTED", /says pkgver "3\.2\.0-r23" where its signed index says "3\.2\.0-r24"/),
  );
  const ring = apkKeyring([{ name: key.name, pem: key.publicPem }], "test");
  assert.equal(other.verifySignature(ring), key.name);
  // The same control bytes under a signature of the real package: does not verify.
  const spliced = Buffer.concat([bytes.subarray(0, 666), forged.control, forged.data]);
  const splicedPath = join(work, "spliced.apk");
  writeFileSync(splicedPath, spliced);
  const splicedPkg = await openApk(splicedPath);
  assert.throws(() => splicedPkg.verifySignature(alpineKeys), cleanFailure("UNTRUSTED", /does not verify/));
});

test("built packages: RSA256 signature, scripts and triggers; no datahash; bad structure; caps", async () => {
  const key = apkTestKey("suture-61a1.rsa.pub");
  const ring = apkKeyring([{ name: key.name, pem: key.publicPem }], "test");
  const built = buildApk({
    pkginfo:
      "# Generated by abuild\npkgname = demo\npkgver = 1.0-r0\narch = x86_64\nsize = 4096\ntriggers = /usr/lib/demo /usr/share/demo/*\nreplaces = old-demo\nreplaces_priority = 10\nprovider_priority = 5\ninstall_if = demo-base docs\n",
    scripts: [
      { name: ".post-upgrade", data: "#!/bin/sh\necho up\n", mode: 0o755 },
      { name: ".trigger", data: "#!/bin/sh\necho trig\n", mode: 0o755 },
    ],
    files: [
      { name: "usr", type: "directory" },
      { name: "usr/bin", type: "directory" },
      { name: "usr/bin/demo", data: "demo\n", mode: 0o755 },
    ],
    key,
    algorithm: "sha256",
  });
  const path = join(work, "demo.apk");
  writeFileSync(path, built.bytes);
  const pkg = await openApk(path);
  assert.equal(pkg.verifySignature(ring), key.name);
  assert.deepEqual(
    pkg.signatures.map((s) => s.algorithm),
    ["sha256"],
  );
  assert.equal(pkg.controlChecksum, built.checksum);
  assert.deepEqual(pkg.triggers, ["/usr/lib/demo", "/usr/share/demo/*"]);
  assert.deepEqual([...pkg.scripts.keys()], [".post-upgrade", ".trigger"]);
  assert.equal(pkg.info.replacesPriority, 10);
  assert.equal(pkg.info.providerPriority, 5);
  assert.deepEqual(
    pkg.info.installIf.map((d) => d.name),
    ["demo-base", "docs"],
  );
  const entries = await allEntries(pkg);
  assert.deepEqual(entries.at(-1)!.checksum, {
    algorithm: "sha1",
    hex: createHash("sha1").update("demo\n").digest("hex"),
  });

  const noHash = buildApk({
    pkginfo: "pkgname = demo\npkgver = 1.0-r0\n",
    files: [{ name: "a", data: "a" }],
    datahash: false,
  });
  writeFileSync(path, noHash.bytes);
  const unverifiable = await openApk(path);
  await assert.rejects(unverifiable.checkData(), cleanFailure("UNTRUSTED", /has no datahash/));
  await assert.rejects(allEntries(unverifiable), cleanFailure("UNTRUSTED", /has no datahash/));

  const cases: [Buffer, ErrorCode, RegExp][] = [
    [
      Buffer.from("not a package"),
      "INVALID_ARCHIVE",
      /is not a valid apk package: its signature or control segment is not a gzip member \(gzip member at byte 0 is truncated\); remove it/,
    ],
    [
      built.bytes.subarray(0, built.bytes.length - built.data.length),
      "INVALID_ARCHIVE",
      /has no data archive/,
    ],
    [buildApk({ pkginfo: "pkgver = 1.0-r0\n", files: [] }).bytes, "INVALID_ARCHIVE", /without P: \(name\)/],
    [
      buildApk({ pkginfo: "pkgname = ../../x\npkgver = 1.0-r0\n", files: [] }).bytes,
      "INVALID_ARCHIVE",
      /package name "..\/..\/x" that breaks apk-tools' package syntax/,
    ],
    [
      buildApk({
        pkginfo: "pkgname = a\npkgver = 1.0-r0\n",
        scripts: [{ name: "etc/passwd", data: "x" }],
        files: [],
      }).bytes,
      "INVALID_ARCHIVE",
      /control segment member "etc\/passwd" is not a top-level control file/,
    ],
    [
      buildApk({ pkginfo: "pkgname = a\npkgver = 1.0-r0\ntriggers = relative/path\n", files: [] }).bytes,
      "INVALID_ARCHIVE",
      /trigger "relative\/path" is not an absolute path/,
    ],
  ];
  for (const [bytes, code, pattern] of cases) {
    writeFileSync(path, bytes);
    await assert.rejects(openApk(path), cleanFailure(code, pattern));
  }

  writeFileSync(path, built.bytes);
  await assert.rejects(
    openApk(path, { maxDataBytes: 10 }),
    cleanFailure("TOO_LARGE", /its data archive is \d+ bytes, more than the 10 bytes accepted/),
  );
  const small = await openApk(path, { maxUnpackedBytes: 1000 });
  await assert.rejects(
    allEntries(small),
    cleanFailure("TOO_LARGE", /unpacks to more than the 1000 bytes accepted/),
  );
});
