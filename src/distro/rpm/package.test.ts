import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { requiring } from "../../../test/lab/requirements.ts";
import {
  buildRpm,
  cpioListing,
  type RpmTestKey,
  type RpmTestPackage,
  rpmCheckSig,
  rpmQuery,
  rpmScratch,
  rpmTestKey,
  signRpms,
  tool,
} from "../../../test/lab/rpm.ts";
import { isSutureError } from "../../errors/errors.ts";
import { parseKeyring } from "../../trust/keyring.ts";
import { readCpio } from "./cpio.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import { parseRpmHeader } from "./header.ts";
import { openRpm, type RpmPackage, rpmPayloadEntries } from "./package.ts";
import { readRpmGpgDir, rpmdbKeyring, verifyRpmSignature } from "./signature.ts";

// Real packages and repositories come from the host's rpm tools (scripts/install-system-deps.sh).
const { after, before, test } = await requiring(
  "tool:rpmbuild",
  "tool:rpmsign",
  "tool:rpm",
  "tool:rpm2cpio",
  "tool:cpio",
  "tool:gpg",
  "tool:bzip2",
);

let scratch: Awaited<ReturnType<typeof rpmScratch>>;
let rsa: RpmTestKey;
let eddsa: RpmTestKey;
const built = new Map<string, string>();

const BIG = Buffer.alloc(3 * 1024 * 1024 + 17, "suture rpm payload streaming ");

function spec(payload: string): RpmTestPackage {
  return {
    name: "hello",
    version: "1.0",
    release: "1.el9",
    epoch: 2,
    arch: "x86_64",
    payload,
    files: [
      { path: "/etc/hello.conf", content: "greeting=hi\n", config: true },
      { path: "/usr/bin/hello", content: "#!/bin/sh\necho hi\n", mode: "0755", caps: "cap_net_raw=ep" },
      { path: "/usr/bin/hello-again", hardlinkTo: "/usr/bin/hello" },
      { path: "/usr/bin/hi", symlinkTo: "hello" },
      { path: "/usr/share/hello", directory: true },
      { path: "/usr/share/hello/big.txt", content: BIG.toString() },
      { path: "/usr/share/hello/empty", content: "" },
      { path: "/var/log/hello.log", ghost: true },
    ],
    requires: ["/bin/sh"],
  };
}

before(async () => {
  scratch = await rpmScratch();
  [rsa, eddsa] = await Promise.all([rpmTestKey(scratch.dir, "rsa2048"), rpmTestKey(scratch.dir, "ed25519")]);
  for (const [name, payload] of [
    ["gzip", "w9.gzdio"],
    ["xz", "w2.xzdio"],
    ["zstd", "w19.zstdio"],
    ["bzip2", "w9.bzdio"],
  ] as const) {
    built.set(name, await buildRpm(scratch.dir, spec(payload)));
  }
  for (const [name, key, rpmv3] of [
    ["rsa", rsa, false],
    ["eddsa", eddsa, false],
    ["rsa-v3", rsa, true],
  ] as const) {
    const copy = join(scratch.dir, `hello-${name}.rpm`);
    await copyFile(built.get("gzip")!, copy);
    await signRpms(key, [copy], rpmv3);
    built.set(name, copy);
  }
});
after(() => scratch?.remove());

async function readAll(pkg: RpmPackage): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const entry of rpmPayloadEntries(pkg)) {
    const chunks: Buffer[] = [];
    for await (const c of entry.body) chunks.push(c);
    out.set(entry.file.path, Buffer.concat(chunks));
  }
  return out;
}

for (const compression of ["gzip", "xz", "zstd", "bzip2"] as const) {
  test(`a ${compression} package rpmbuild made reads as rpm -qp and rpm2cpio | cpio -t describe it`, async () => {
    const path = built.get(compression)!;
    const pkg = await openRpm(path);
    assert.equal(pkg.payloadCompressor, compression);
    const [name, epoch, version, release, arch] = (
      await rpmQuery(scratch.dir, path, "%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH}")
    ).split(" ");
    assert.deepEqual(pkg.nevra, { name, epoch: Number(epoch), version, release, arch });
    const listed = (
      await rpmQuery(
        scratch.dir,
        path,
        "[%{FILENAMES}\\t%{FILEMODES}\\t%{FILESIZES}\\t%{FILEFLAGS}\\t%{FILELINKTOS}\\t%{FILEDIGESTS}\\t%{FILECAPS}\\n]",
      )
    )
      .split("\n")
      .filter(Boolean);
    assert.deepEqual(
      pkg.files.map((f) => [f.path, f.mode, f.size, f.flags, f.linkTo, f.digest, f.caps].join("\t")),
      listed,
    );
    const conf = pkg.files.find((f) => f.path === "/etc/hello.conf")!;
    assert.deepEqual([conf.config, conf.noreplace, conf.ghost], [true, true, false]);
    assert.equal(pkg.files.find((f) => f.path === "/var/log/hello.log")?.ghost, true);
    assert.equal(pkg.files.find((f) => f.path === "/usr/bin/hello")?.caps, "cap_net_raw=ep");
    assert.ok(pkg.payloadDigest && pkg.payloadDigest.algorithm === "sha256");

    // The payload, streamed: the members cpio lists, in its order; contents as built.
    const order: string[] = [];
    const contents = new Map<string, Buffer>();
    for await (const entry of rpmPayloadEntries(pkg)) {
      order.push(`.${entry.file.path}`);
      const chunks: Buffer[] = [];
      for await (const c of entry.body) chunks.push(c);
      if (entry.size) contents.set(entry.file.path, Buffer.concat(chunks));
    }
    assert.deepEqual(order, await cpioListing(path));
    assert.equal(contents.get("/etc/hello.conf")?.toString(), "greeting=hi\n");
    assert.ok(contents.get("/usr/share/hello/big.txt")?.equals(BIG));
    assert.equal(contents.get("/usr/bin/hi")?.toString(), "hello");
    // The hard link set carries its content once.
    assert.equal(
      [contents.get("/usr/bin/hello"), contents.get("/usr/bin/hello-again")].filter(
        (c) => c?.toString() === "#!/bin/sh\necho hi\n",
      ).length,
      1,
    );
  });
}

test("signatures: RSA and EdDSA header signatures verify with the signer's key, as rpm -K says", async () => {
  for (const [name, key] of [
    ["rsa", rsa],
    ["eddsa", eddsa],
  ] as const) {
    const path = built.get(name)!;
    assert.match(
      await rpmCheckSig(scratch.dir, path, [key.publicArmored]),
      /Signature, key ID [0-9a-f]+: OK/,
    );
    const pkg = await openRpm(path);
    const ring = await parseKeyring(Buffer.from(key.publicArmored), `RPM-GPG-KEY-${name}`);
    const signers = await verifyRpmSignature(pkg, ring);
    assert.equal(signers[0]?.fingerprint, key.fingerprint);
    // Signing left the payload and the file contents as they were.
    assert.equal((await readAll(pkg)).get("/etc/hello.conf")?.toString(), "greeting=hi\n");
  }
});

test("rpmsign --rpmv3: the header+payload signature verifies too, and a changed payload byte breaks it", async () => {
  const path = built.get("rsa-v3")!;
  assert.match(
    await rpmCheckSig(scratch.dir, path, [rsa.publicArmored]),
    /Header V4 RSA\/SHA\d+ Signature, key ID [0-9a-f]+: OK\n[\s\S]*\n {4}V4 RSA\/SHA\d+ Signature, key ID [0-9a-f]+: OK/,
  );
  const ring = await parseKeyring(Buffer.from(rsa.publicArmored), "RPM-GPG-KEY-rsa");
  const pkg = await openRpm(path);
  assert.equal((await verifyRpmSignature(pkg, ring, { everySignature: true })).length, 2);
  const bytes = Buffer.from(await readFile(path));
  bytes[bytes.length - 200]! ^= 0x01;
  const tampered = join(scratch.dir, "v3-tampered.rpm");
  await writeFile(tampered, bytes);
  await assert.rejects(
    verifyRpmSignature(await openRpm(tampered), ring, { everySignature: true }),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /bad signature/.test((e as Error).message),
  );
});

test("/etc/pki/rpm-gpg: every key file in the image, other files skipped", async () => {
  const root = join(scratch.dir, "gpg-root");
  await mkdir(join(root, "etc/pki/rpm-gpg"), { recursive: true });
  await writeFile(join(root, "etc/pki/rpm-gpg/RPM-GPG-KEY-rsa"), rsa.publicArmored);
  await writeFile(join(root, "etc/pki/rpm-gpg/RPM-GPG-KEY-eddsa"), eddsa.publicArmored);
  await writeFile(join(root, "etc/pki/rpm-gpg/README"), "keys live here\n");
  const { keyring, skipped } = await readRpmGpgDir(root);
  assert.deepEqual(
    keyring.keys.map((k) => k.getFingerprint()).sort(),
    [rsa.fingerprint, eddsa.fingerprint].sort(),
  );
  assert.deepEqual(skipped, ["/etc/pki/rpm-gpg/README"]);
});

test("a package signed by a key the image does not trust, or not signed at all, is refused in one line", async () => {
  const oneLine = (pattern: RegExp) => (e: unknown) =>
    isSutureError(e, "UNTRUSTED") &&
    pattern.test((e as Error).message) &&
    !(e as Error).message.includes("\n");
  const otherRing = await parseKeyring(Buffer.from(eddsa.publicArmored), "RPM-GPG-KEY-other");
  assert.match(await rpmCheckSig(scratch.dir, built.get("rsa")!, [eddsa.publicArmored]), /NOKEY|FAILED/);
  await assert.rejects(
    verifyRpmSignature(await openRpm(built.get("rsa")!), otherRing),
    oneLine(/unknown key.*--keyring/),
  );
  await assert.rejects(
    verifyRpmSignature(await openRpm(built.get("zstd")!), otherRing),
    oneLine(/is not signed/),
  );
});

test("tampering: a changed header, a changed payload byte, a cut-off file are UNTRUSTED, as rpm -K finds them", async () => {
  const original = await readFile(built.get("rsa")!);
  const pkg = await openRpm(built.get("rsa")!);
  const ring = await parseKeyring(Buffer.from(rsa.publicArmored), "RPM-GPG-KEY-rsa");

  // A header byte inside the file list's strings: the header digests no longer match.
  const headerTampered = Buffer.from(original);
  const at = headerTampered.indexOf("hello.conf", pkg.headerOffset);
  headerTampered[at] = "j".charCodeAt(0);
  const headerPath = join(scratch.dir, "header-tampered.rpm");
  await writeFile(headerPath, headerTampered);
  assert.match(await rpmCheckSig(scratch.dir, headerPath, [rsa.publicArmored]), /BAD|FAILED/);
  await assert.rejects(
    openRpm(headerPath),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /SHA256/.test((e as Error).message),
  );

  // A payload byte: the header and its signature still verify, the payload digest does not.
  const payloadTampered = Buffer.from(original);
  payloadTampered[pkg.payloadOffset + Math.floor((original.length - pkg.payloadOffset) / 2)]! ^= 0x40;
  const payloadPath = join(scratch.dir, "payload-tampered.rpm");
  await writeFile(payloadPath, payloadTampered);
  assert.match(await rpmCheckSig(scratch.dir, payloadPath, [rsa.publicArmored]), /BAD|FAILED/);
  const opened = await openRpm(payloadPath);
  await verifyRpmSignature(opened, ring);
  await assert.rejects(
    readAll(opened),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /payload whose sha256/.test((e as Error).message),
  );

  // Cut short: the size the signature header records no longer matches.
  const cutPath = join(scratch.dir, "cut.rpm");
  await writeFile(cutPath, original.subarray(0, original.length - 100));
  await assert.rejects(
    openRpm(cutPath),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /cut short or altered/.test((e as Error).message),
  );

  // Not an rpm at all.
  const junkPath = join(scratch.dir, "junk.rpm");
  await writeFile(junkPath, Buffer.alloc(200, 1));
  await assert.rejects(
    openRpm(junkPath),
    (e: unknown) => isSutureError(e, "INVALID_ARCHIVE") && /lead magic/.test((e as Error).message),
  );
});

test("cpio: rpm's stripped 07070X members take their sizes from the header; bad magic is one line", async () => {
  const newc = (name: string, size: number, mode = 0o100644) => {
    const fields = [1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, Buffer.byteLength(name) + 1, 0];
    const head = Buffer.from(
      `070701${fields.map((n) => n.toString(16).padStart(8, "0")).join("")}${name}\0`,
      "latin1",
    );
    return Buffer.concat([head, Buffer.alloc((4 - (head.length % 4)) % 4)]);
  };
  const stripped = (index: number, data: string) => {
    const head = Buffer.from(`07070X${index.toString(16).padStart(8, "0")}\0\0`, "latin1");
    const body = Buffer.from(data);
    return Buffer.concat([head, body, Buffer.alloc((4 - (body.length % 4)) % 4)]);
  };
  const archive = Buffer.concat([stripped(1, "abcde"), stripped(0, "xy"), newc("TRAILER!!!", 0)]);
  const sizes = [2, 5];
  const seen: [number | undefined, string][] = [];
  for await (const m of readCpio([archive], { what: "payload", strippedSize: (i) => sizes[i] })) {
    const chunks: Buffer[] = [];
    for await (const c of m.body) chunks.push(c);
    seen.push([m.fileIndex, Buffer.concat(chunks).toString()]);
  }
  assert.deepEqual(seen, [
    [1, "abcde"],
    [0, "xy"],
  ]);
  const drain = async (bytes: Buffer) => {
    for await (const m of readCpio([bytes], { what: "payload", strippedSize: (i) => sizes[i] }))
      for await (const _ of m.body);
  };
  await assert.rejects(
    drain(Buffer.from("070707garbage")),
    (e: unknown) => isSutureError(e, "INVALID_ARCHIVE") && /not a cpio magic/.test((e as Error).message),
  );
  await assert.rejects(
    drain(stripped(7, "zz")),
    (e: unknown) => isSutureError(e, "INVALID_ARCHIVE") && /does not list/.test((e as Error).message),
  );
  await assert.rejects(
    drain(newc("./a", 10)),
    (e: unknown) => isSutureError(e, "INVALID_ARCHIVE") && /ends inside/.test((e as Error).message),
  );
});

test("a package whose file list climbs out of the root is refused (UNSAFE_LAYER), even with its unsigned digests redone", async () => {
  const path = built.get("gzip")!;
  const pkg = await openRpm(path);
  const bytes = Buffer.from(await readFile(path));
  const dir = Buffer.from("/usr/share/hello/\0");
  const at = bytes.indexOf(dir, pkg.headerOffset);
  assert.ok(at > 0 && at < pkg.payloadOffset);
  bytes.write("/../../etc/hello/", at, "latin1");
  // An attacker can recompute the digests no key vouches for.
  const oldHeader = (await readFile(path)).subarray(pkg.headerOffset, pkg.payloadOffset);
  const newHeader = bytes.subarray(pkg.headerOffset, pkg.payloadOffset);
  for (const algorithm of ["sha256", "sha1"]) {
    const old = Buffer.from(createHash(algorithm).update(oldHeader).digest("hex"));
    const where = bytes.indexOf(old, 96);
    assert.ok(where > 0 && where < pkg.headerOffset);
    bytes.write(createHash(algorithm).update(newHeader).digest("hex"), where, "latin1");
  }
  const hostile = join(scratch.dir, "hostile.rpm");
  await writeFile(hostile, bytes);
  await assert.rejects(
    openRpm(hostile),
    (e: unknown) => isSutureError(e, "UNSAFE_LAYER") && /\/\.\.\/\.\.\/etc\/hello/.test((e as Error).message),
  );
});

test("keys imported into an rpm database (rpm --import) verify the packages they signed", async () => {
  const db = join(scratch.dir, "rpmdb-import");
  await mkdir(db);
  for (const [i, key] of [rsa, eddsa].entries()) {
    const file = join(scratch.dir, `import-${i}.asc`);
    await writeFile(file, key.publicArmored);
    await tool("rpm", ["--dbpath", db, "--import", file]);
  }
  // Read with the one rpm database reader, as an image's database would be.
  const wal = await readFile(join(db, "rpmdb.sqlite-wal")).catch(() => undefined);
  const headers = readSqlitePackages(await readFile(join(db, "rpmdb.sqlite")), wal, db).map((r) =>
    parseRpmHeader(r.blob, `package ${r.recordNumber}`),
  );
  const { keyring, skipped } = await rpmdbKeyring(headers, db);
  assert.deepEqual(skipped, []);
  assert.deepEqual(
    keyring.keys.map((k) => k.getFingerprint()).sort(),
    [rsa.fingerprint, eddsa.fingerprint].sort(),
  );
  for (const name of ["rsa", "eddsa"]) {
    assert.equal((await verifyRpmSignature(await openRpm(built.get(name)!), keyring)).length, 1);
  }
});
