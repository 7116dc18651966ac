import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { requiring } from "../../../test/lab/requirements.ts";
import {
  buildRpm,
  createRepo,
  type RepoCompression,
  type RpmTestKey,
  rpmQuery,
  rpmScratch,
  rpmTestKey,
  signRpms,
} from "../../../test/lab/rpm.ts";
import { isSutureError } from "../../errors/errors.ts";
import { parseKeyring } from "../../trust/keyring.ts";
import { checkRpmAgainstIndex, openRpm } from "./package.ts";
import { type ReadPrimaryOptions, readPrimary } from "./primary.ts";
import { readRpmRepoConfig, repoKeyring } from "./repo-config.ts";
import { parseRepomd, repomdEntry, verifyRepomdSignature } from "./repomd.ts";
import { verifyRpmSignature } from "./signature.ts";

// Real packages and repositories come from the host's rpm tools (scripts/install-system-deps.sh).
const { after, before, test } = await requiring(
  "tool:rpmbuild",
  "tool:rpmsign",
  "tool:rpm",
  "tool:createrepo_c",
  "tool:gpg",
  "tool:bzip2",
);

let scratch: Awaited<ReturnType<typeof rpmScratch>>;
let key: RpmTestKey;
let other: RpmTestKey;
let rpms: string[];

before(async () => {
  scratch = await rpmScratch();
  [key, other] = await Promise.all([rpmTestKey(scratch.dir, "rsa2048"), rpmTestKey(scratch.dir, "ed25519")]);
  rpms = [
    await buildRpm(scratch.dir, {
      name: "hello",
      version: "1.0",
      release: "1.el9",
      epoch: 2,
      files: [
        { path: "/etc/hello.conf", content: "greeting=hi\n", config: true },
        { path: "/usr/bin/hello", content: "#!/bin/sh\necho hi\n", mode: "0755" },
        { path: "/usr/bin/hi", symlinkTo: "hello" },
        { path: "/usr/share/doc/hello/README", content: "docs\n" },
        { path: "/var/log/hello.log", ghost: true },
      ],
      requires: ["bash >= 5.0", "/bin/sh", "(coreutils or busybox)"],
      requiresPre: ["shadow-utils"],
      provides: ["greeter = 1.0"],
      obsoletes: ["oldhello < 1.0"],
      conflicts: ["badhello"],
    }),
    await buildRpm(scratch.dir, {
      name: "libtiny",
      version: "3.0.7",
      release: "27",
      files: [{ path: "/usr/lib/libtiny.txt", content: "tiny\n" }],
    }),
  ];
});

after(() => scratch?.remove());

async function openRepo(compress: RepoCompression, checksum: "sha1" | "sha256" | "sha512" = "sha256") {
  const repo = await createRepo(scratch.dir, rpms, { compress, checksum, key });
  const repomd = parseRepomd(repo.repomd, `${repo.dir}/repodata/repomd.xml`);
  const primary = repomdEntry(repomd, "primary", "repomd.xml");
  return { repo, repomd, primary };
}

for (const compress of ["gz", "bz2", "xz", "zstd"] as const) {
  test(`createrepo_c's ${compress} repository: repomd.xml and primary read as rpm -qp describes the packages`, async () => {
    const { repo, repomd, primary } = await openRepo(compress);
    assert.deepEqual([...repomd.data.keys()].sort(), ["filelists", "other", "primary"]);
    assert.equal(primary.checksum.type, "sha256");
    assert.match(
      primary.location,
      new RegExp(`^repodata/[0-9a-f]{64}-primary\\.xml\\.${compress === "zstd" ? "zst" : compress}$`),
    );
    const packages = await readPrimary(createReadStream(join(repo.dir, primary.location)), primary, {
      what: primary.location,
    });
    assert.deepEqual(packages.map((p) => p.name).sort(), ["hello", "libtiny"]);
    const hello = packages.find((p) => p.name === "hello")!;
    const fmt = "%{EPOCH} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM} %{SIZE}";
    const [epoch, version, release, arch, sourceRpm, installed] = (
      await rpmQuery(scratch.dir, rpms[0]!, fmt)
    ).split(" ");
    assert.equal(hello.epoch, Number(epoch));
    assert.equal(hello.version, version);
    assert.equal(hello.release, release);
    assert.equal(hello.arch, arch);
    assert.equal(hello.sourceRpm, sourceRpm);
    assert.equal(hello.installedSize, Number(installed));
    const file = await readFile(rpms[0]!);
    assert.equal(hello.packageSize, file.length);
    assert.equal(hello.checksum.value, createHash("sha256").update(file).digest("hex"));
    assert.equal(hello.location, "Packages/hello-1.0-1.el9.noarch.rpm");
    assert.ok(hello.headerRange && hello.headerRange.end > hello.headerRange.start);
    // Dependencies as rpm lists them (createrepo_c leaves out rpmlib() and what the package provides itself).
    const requires = (await rpmQuery(scratch.dir, rpms[0]!, "[%{REQUIRENAME}\\n]"))
      .split("\n")
      .filter((n) => n && !n.startsWith("rpmlib(") && !hello.provides.some((p) => p.name === n));
    assert.deepEqual(hello.requires.map((d) => d.name).sort(), [...new Set(requires)].sort());
    assert.deepEqual(
      hello.requires.find((d) => d.name === "bash"),
      { name: "bash", flags: "GE", epoch: "0", version: "5.0" },
    );
    assert.equal(hello.requires.find((d) => d.name === "shadow-utils")?.pre, true);
    assert.ok(hello.requires.some((d) => d.name === "(coreutils or busybox)"));
    assert.deepEqual(
      hello.provides.find((d) => d.name === "hello"),
      { name: "hello", flags: "EQ", epoch: "2", version: "1.0", release: "1.el9" },
    );
    assert.deepEqual(hello.obsoletes, [{ name: "oldhello", flags: "LT", epoch: "0", version: "1.0" }]);
    assert.deepEqual(hello.conflicts, [{ name: "badhello" }]);
    // primary carries the /etc and bin files, not /usr/share.
    assert.deepEqual(
      hello.files.map((f) => f.path),
      ["/etc/hello.conf", "/usr/bin/hello", "/usr/bin/hi"],
    );
  });
}

for (const checksum of ["sha1", "sha512"] as const) {
  test(`a repository with ${checksum} checksums verifies with them`, async () => {
    const { repo, primary } = await openRepo("gz", checksum);
    assert.equal(primary.checksum.type, checksum);
    const packages = await readPrimary(createReadStream(join(repo.dir, primary.location)), primary, {
      what: "primary",
    });
    assert.equal(packages.find((p) => p.name === "libtiny")?.checksum.type, checksum);
  });
}

test("a tampered primary is refused as UNTRUSTED, whatever the tampering broke first", async () => {
  const { repo, primary } = await openRepo("gz");
  const bytes = await readFile(join(repo.dir, primary.location));
  const flipped = Buffer.from(bytes);
  flipped[Math.floor(bytes.length / 2)]! ^= 0xff;
  for (const altered of [
    flipped,
    Buffer.concat([bytes, Buffer.from("x")]),
    bytes.subarray(0, bytes.length - 9),
  ]) {
    await assert.rejects(
      readPrimary(Readable.from([altered]), primary, { what: "primary" }),
      (e: unknown) =>
        isSutureError(e, "UNTRUSTED") &&
        /repomd\.xml lists/.test((e as Error).message) &&
        !(e as Error).message.includes("\n"),
    );
  }
  // Metadata whose checksum matches but whose XML is bad (a broken repository, not tampering).
  const bad = Buffer.from(
    '<?xml version="1.0"?><metadata xmlns="http://linux.duke.edu/metadata/common"><package>',
  );
  await assert.rejects(
    readPlainPrimary(bad),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") && /primary .*(ends early|well-formed)/.test((e as Error).message),
  );
});

/** An uncompressed primary.xml whose repomd entry is made to match it (its contents are the test). */
function readPlainPrimary(bytes: Buffer, options: Omit<ReadPrimaryOptions, "what"> = {}) {
  return readPrimary(
    Readable.from([bytes]),
    {
      type: "primary",
      location: "repodata/p.xml",
      checksum: { type: "sha256", value: createHash("sha256").update(bytes).digest("hex") },
    },
    { what: "primary", ...options },
  );
}

test("primary entries that would name files outside the repository or hostile identities are refused", async () => {
  const pkg = (location: string, name = "x") =>
    Buffer.from(
      `<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm"><package type="rpm"><name>${name}</name><arch>noarch</arch><version epoch="0" ver="1" rel="1"/><checksum type="sha256" pkgid="YES">${"a".repeat(64)}</checksum><size package="1" installed="1" archive="1"/><location href="${location}"/></package></metadata>`,
    );
  const read = (bytes: Buffer) => readPlainPrimary(bytes);
  assert.equal((await read(pkg("Packages/x.rpm")))[0]?.location, "Packages/x.rpm");
  for (const location of ["../../etc/passwd", "/x.rpm", "http://evil.example/x.rpm", "a//b.rpm"]) {
    await assert.rejects(read(pkg(location)), (e: unknown) => isSutureError(e, "UNTRUSTED"));
  }
  await assert.rejects(
    read(pkg("x.rpm", "-rf")),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /package name/.test((e as Error).message),
  );
  await assert.rejects(read(Buffer.concat([pkg("x.rpm"), Buffer.alloc(0)]).subarray(0, 10)), (e: unknown) =>
    isSutureError(e, "UNTRUSTED"),
  );
});

test("repomd.xml.asc: the repository's key verifies it; another key, a tampered repomd or no signature is refused", async () => {
  const { repo } = await openRepo("gz");
  const signature = await readFile(join(repo.dir, "repodata/repomd.xml.asc"));
  const ring = await parseKeyring(Buffer.from(key.publicArmored), "RPM-GPG-KEY-test");
  const signers = await verifyRepomdSignature(repo.repomd, signature, ring, { what: "repomd.xml" });
  assert.equal(signers[0]?.fingerprint, key.fingerprint);
  const otherRing = await parseKeyring(Buffer.from(other.publicArmored), "RPM-GPG-KEY-other");
  const oneLine = (code: string, pattern: RegExp) => (e: unknown) =>
    isSutureError(e, code as "UNTRUSTED") &&
    pattern.test((e as Error).message) &&
    !(e as Error).message.includes("\n");
  await assert.rejects(
    verifyRepomdSignature(repo.repomd, signature, otherRing, { what: "repomd.xml" }),
    oneLine("UNTRUSTED", /unknown key/),
  );
  const tampered = Buffer.from(repo.repomd.toString().replace(/<size>\d+/, "<size>1"));
  await assert.rejects(
    verifyRepomdSignature(tampered, signature, ring, { what: "repomd.xml" }),
    oneLine("UNTRUSTED", /bad signature/),
  );
  await assert.rejects(
    verifyRepomdSignature(repo.repomd, undefined, ring, { what: "repomd.xml" }),
    oneLine("UNTRUSTED", /repo_gpgcheck=1/),
  );
});

test("repomd.xml that is not one, lists a type twice or points outside the repository is refused", () => {
  const doc = (data: string) =>
    Buffer.from(
      `<?xml version="1.0"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>${data}</repomd>`,
    );
  const entry = (type: string, href: string) =>
    `<data type="${type}"><checksum type="sha256">${"b".repeat(64)}</checksum><location href="${href}"/><size>10</size></data>`;
  const ok = parseRepomd(doc(entry("primary", "repodata/p.xml.gz")), "repomd.xml");
  assert.equal(ok.revision, "1");
  assert.deepEqual(ok.data.get("primary"), {
    type: "primary",
    checksum: { type: "sha256", value: "b".repeat(64) },
    location: "repodata/p.xml.gz",
    size: 10,
  });
  const refused = (bytes: Buffer, pattern: RegExp) =>
    assert.throws(
      () => parseRepomd(bytes, "repomd.xml"),
      (e: unknown) => isSutureError(e, "UNTRUSTED") && pattern.test((e as Error).message),
    );
  refused(doc(entry("primary", "repodata/a") + entry("primary", "repodata/b")), /listed twice/);
  refused(doc(entry("primary", "../x")), /not a plain relative path/);
  refused(doc(entry("primary", "https://elsewhere/x")), /outside the repository/);
  refused(doc(entry("primary", "repodata/p").replace("sha256", "md5")), /checksum type/);
  refused(doc(entry("primary", "repodata/p").replace("b".repeat(64), "b".repeat(63))), /hex digits/);
  refused(Buffer.from("<html>nope</html>"), /not a repomd\.xml/);
  refused(doc(entry("primary", "x")).subarray(0, 80), /well-formed/);
  refused(
    Buffer.from('<!DOCTYPE x [<!ENTITY a "b">]><repomd xmlns="http://linux.duke.edu/metadata/repo"/>'),
    /DOCTYPE/,
  );
  assert.throws(
    () => repomdEntry(ok, "filelists", "repomd.xml"),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /no filelists/.test((e as Error).message),
  );
});

test("a primary listing more packages than accepted is TOO_LARGE", async () => {
  const one = `<package type="rpm"><name>x</name><arch>noarch</arch><version epoch="0" ver="1" rel="1"/><checksum type="sha256" pkgid="YES">${"a".repeat(64)}</checksum><size package="1" installed="1"/><location href="x.rpm"/></package>`;
  const doc = Buffer.from(
    `<metadata xmlns="http://linux.duke.edu/metadata/common">${one.repeat(3)}</metadata>`,
  );
  assert.equal((await readPlainPrimary(doc, { maxPackages: 3 })).length, 3);
  // Kept or not, every package counts and is checked.
  assert.deepEqual(await readPlainPrimary(doc, { keep: () => false }), []);
  await assert.rejects(readPlainPrimary(doc, { keep: () => false, maxPackages: 2 }), (e: unknown) =>
    isSutureError(e, "TOO_LARGE"),
  );
  await assert.rejects(readPlainPrimary(doc, { maxPackages: 2 }), (e: unknown) =>
    isSutureError(e, "TOO_LARGE"),
  );
});

test("an image's signed repository end to end: .repo and gpgkey → repomd.xml.asc → primary → the package it lists, checked and verified", async () => {
  const signed = join(scratch.dir, "hello-signed.rpm");
  await copyFile(rpms[0]!, signed);
  await signRpms(key, [signed]);
  const repo = await createRepo(scratch.dir, [signed, rpms[1]!], { compress: "xz", key });
  const root = join(scratch.dir, "image-root");
  await mkdir(join(root, "etc/yum.repos.d"), { recursive: true });
  await mkdir(join(root, "etc/pki/rpm-gpg"), { recursive: true });
  await writeFile(join(root, "etc/pki/rpm-gpg/RPM-GPG-KEY-lab"), key.publicArmored);
  await writeFile(
    join(root, "etc/yum.repos.d/lab.repo"),
    `[lab]\nname=lab $basearch\nbaseurl=file://${repo.dir}\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-lab\n`,
  );
  const [lab] = (await readRpmRepoConfig(root, "dnf", { arch: "x86_64" })).repos;
  assert.deepEqual([lab!.gpgcheck, lab!.repoGpgcheck, lab!.name], [true, true, "lab x86_64"]);
  const keyring = await repoKeyring(root, lab!);
  const base = lab!.fetchUrls[0]!.replace(/^file:\/\//, "");
  const repomdBytes = await readFile(join(base, "repodata/repomd.xml"));
  await verifyRepomdSignature(repomdBytes, await readFile(join(base, "repodata/repomd.xml.asc")), keyring, {
    what: "lab repomd.xml",
  });
  const primary = repomdEntry(parseRepomd(repomdBytes, "lab repomd.xml"), "primary", "lab repomd.xml");
  const [hello] = await readPrimary(createReadStream(join(base, primary.location)), primary, {
    what: "lab primary",
    keep: (p) => p.name === "hello",
  });
  assert.ok(hello);
  const pkg = await openRpm(join(base, hello.location));
  await checkRpmAgainstIndex(pkg, hello);
  assert.equal((await verifyRpmSignature(pkg, keyring))[0]?.fingerprint, key.fingerprint);

  // The mirror swaps in another package under the listed name: refused before anything is read.
  const swapped = join(scratch.dir, "swapped.rpm");
  await copyFile(rpms[0]!, swapped);
  await assert.rejects(
    checkRpmAgainstIndex(await openRpm(swapped), hello),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /repository lists/.test((e as Error).message),
  );
  const libtiny = (
    await readPrimary(createReadStream(join(base, primary.location)), primary, { what: "lab primary" })
  ).find((p) => p.name === "libtiny")!;
  await assert.rejects(
    checkRpmAgainstIndex(pkg, { ...libtiny, packageSize: pkg.fileSize, checksum: hello.checksum }),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") &&
      /"hello-2:1\.0-1\.el9\.noarch" but the repository lists "libtiny/.test((e as Error).message),
  );
});
