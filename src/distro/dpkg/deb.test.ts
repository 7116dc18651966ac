import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { buildDeb } from "../../../test/lab/deb.ts";
import { isSutureError } from "../../errors/errors.ts";
import { field } from "./control.ts";
import { checkDebIdentity, openDeb } from "./deb.ts";

let work: string;

/** The demo package (conffile, postinst, a binary file), built by dpkg-deb with `compression`. */
function buildDemo(compression: "xz" | "gzip" | "zstd" | "none"): Promise<string> {
  return buildDeb(
    join(work, `demo-${compression}.deb`),
    "Package: demo\nVersion: 1.0-1\nArchitecture: amd64\nMulti-Arch: same\nMaintainer: Test <t@example.org>\nDescription: demo\n long text\n",
    [
      { path: "etc/demo/demo.conf", content: "setting=1\n" },
      { path: "usr/bin/demo", content: Buffer.from([0, 1, 2, 255]) },
    ],
    [
      {
        path: "conffiles",
        content: "/etc/demo/demo.conf\nremove-on-upgrade /etc/demo/old.conf\n",
        mode: 0o644,
      },
      { path: "postinst", content: "#!/bin/sh\nexit 0\n" },
    ],
    compression,
  );
}

before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-deb-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

for (const compression of ["xz", "gzip", "zstd", "none"] as const) {
  test(`a ${compression} .deb built by dpkg-deb opens: control, control members, data entries`, async () => {
    const deb = await openDeb(await buildDemo(compression));
    assert.equal(deb.name, "demo");
    assert.equal(deb.version, "1.0-1");
    assert.equal(deb.architecture, "amd64");
    assert.equal(deb.multiArch, "same");
    assert.equal(field(deb.control, "Description"), "demo\nlong text");
    assert.deepEqual([...deb.controlMembers.keys()].sort(), ["conffiles", "control", "postinst"]);
    assert.equal(deb.controlMembers.get("postinst")!.toString(), "#!/bin/sh\nexit 0\n");
    assert.deepEqual(deb.conffiles, ["/etc/demo/demo.conf"]);
    assert.deepEqual(deb.removeOnUpgrade, ["/etc/demo/old.conf"]);
    const entries: string[] = [];
    let binary: Buffer | undefined;
    for await (const e of deb.dataEntries()) {
      entries.push(`${e.header.type} ${e.header.path} ${e.header.uid}:${e.header.gid}`);
      const chunks: Buffer[] = [];
      for await (const c of e.body) chunks.push(c);
      if (e.header.path === "./usr/bin/demo") binary = Buffer.concat(chunks);
    }
    assert.ok(entries.includes("file ./etc/demo/demo.conf 0:0"), entries.join("\n"));
    assert.ok(entries.includes("directory ./usr/bin/ 0:0"), entries.join("\n"));
    assert.deepEqual(binary, Buffer.from([0, 1, 2, 255]));
    // Entries can be read again.
    let again = 0;
    for await (const _ of deb.dataEntries()) again++;
    assert.equal(again, entries.length);
  });
}

/** An ar archive of the given members, as `ar` writes them (System V names). */
function ar(members: [string, Buffer][]): Buffer {
  const parts: Buffer[] = [Buffer.from("!<arch>\n")];
  for (const [name, data] of members) {
    const header = `${`${name}/`.padEnd(16)}${"0".padEnd(12)}${"0".padEnd(6)}${"0".padEnd(6)}${"100644".padEnd(8)}${String(data.length).padEnd(10)}\`\n`;
    parts.push(Buffer.from(header, "latin1"), data);
    if (data.length % 2) parts.push(Buffer.from("\n"));
  }
  return Buffer.concat(parts);
}

test("malformed packages are refused with INVALID_ARCHIVE naming the file", async () => {
  const good = readFileSync(await buildDemo("gzip"));
  const cases: [string, Buffer, RegExp][] = [
    ["not-ar.deb", Buffer.from("hello world\n"), /not a valid ar archive/],
    ["truncated.deb", good.subarray(0, good.length - 100), /runs past the end|cannot be read/],
    ["no-binary.deb", ar([["control.tar.gz", Buffer.alloc(10)]]), /first member is not debian-binary/],
    ["format3.deb", ar([["debian-binary", Buffer.from("3.0\n")]]), /unsupported format version "3.0"/],
    [
      "no-data.deb",
      ar([
        ["debian-binary", Buffer.from("2.0\n")],
        ["control.tar.gz", Buffer.alloc(10)],
      ]),
      /expected a data.tar member/,
    ],
    [
      "bad-control.deb",
      ar([
        ["debian-binary", Buffer.from("2.0\n")],
        ["control.tar.gz", Buffer.from("not gzip at all")],
        ["data.tar.gz", Buffer.alloc(10)],
      ]),
      /control archive cannot be read|no control file/,
    ],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(work, name);
    writeFileSync(path, bytes);
    await assert.rejects(openDeb(path), (e: unknown) => {
      assert.ok(isSutureError(e, "INVALID_ARCHIVE"), `${name}: ${String(e)}`);
      assert.match(e.message, message, name);
      assert.ok(e.message.includes(path), `${name}: the message names the file`);
      return true;
    });
  }
});

/** A .deb whose control file says what dpkg-deb's own checks would refuse (built with --nocheck). */
function hostileDeb(name: string, control: string): Promise<string> {
  return buildDeb(join(work, `${name}.deb`), `${control}Maintainer: T <t@example.org>\nDescription: x\n`, [
    { path: "usr/lib/x", content: "x" },
  ]);
}

test("control fields that would name a path outside the database are refused before the package is used", async () => {
  const cases: [string, string, RegExp][] = [
    [
      "arch-escape",
      `Package: libfoo1\nVersion: 1.0-1\nArchitecture: amd64/${"../".repeat(8)}tmp/x\nMulti-Arch: same\n`,
      /^package "libfoo1" \(.*arch-escape\.deb\) has a package architecture "amd64\/\.\.\/.*" that breaks Debian Policy/,
    ],
    [
      "name-escape",
      "Package: ../../x\nVersion: 1.0-1\nArchitecture: amd64\n",
      /package name "\.\.\/\.\.\/x"/,
    ],
    [
      "version-escape",
      "Package: libfoo1\nVersion: 1.0/../../x\nArchitecture: amd64\n",
      /package version "1\.0\/\.\.\/\.\.\/x"/,
    ],
    [
      "multi-arch",
      "Package: libfoo1\nVersion: 1.0-1\nArchitecture: amd64\nMulti-Arch: same/../x\n",
      /Multi-Arch field "same\/\.\.\/x"/,
    ],
  ];
  for (const [name, control, message] of cases) {
    await assert.rejects(openDeb(await hostileDeb(name, control)), (e: unknown) => {
      assert.ok(isSutureError(e, "INVALID_ARCHIVE"), `${name}: ${String(e)}`);
      assert.match(e.message, message, name);
      return true;
    });
  }
});

test("a package that is not the one its index entry names is UNTRUSTED, naming both values", async () => {
  const deb = await openDeb(await buildDemo("gzip"));
  assert.doesNotThrow(() => checkDebIdentity(deb, { name: "demo", version: "1.0-1", architecture: "amd64" }));
  assert.throws(
    () => checkDebIdentity(deb, { name: "demo", version: "1.0-2", architecture: "amd64" }),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") &&
      /^package "demo" "1\.0-2" downloaded from the repository says Version "1\.0-1" where its signed index says "1\.0-2": the repository serves a package that is not the one its signed index describes; /.test(
        e.message,
      ),
  );
  assert.throws(
    () => checkDebIdentity(deb, { name: "libssl3", version: "1.0-1", architecture: "amd64" }),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") &&
      /says Package "demo" where its signed index says "libssl3"/.test(e.message),
  );
  assert.throws(
    () => checkDebIdentity(deb, { name: "demo", version: "1.0-1", architecture: "all" }),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /Architecture "amd64"/.test(e.message),
  );
});

test("a control member whose name is not a dpkg info-file name is refused when the package is opened", async () => {
  const tree = join(work, "tree-member");
  mkdirSync(join(tree, "DEBIAN"), { recursive: true });
  writeFileSync(
    join(tree, "DEBIAN/control"),
    "Package: demo\nVersion: 1\nArchitecture: all\nDescription: d\n",
  );
  writeFileSync(join(tree, "DEBIAN/Post.inst"), "#!/bin/sh\n");
  const control = join(work, "control.tar.gz");
  execFileSync("tar", ["-czf", control, "-C", join(tree, "DEBIAN"), "./control", "./Post.inst"]);
  const data = join(work, "data.tar.gz");
  execFileSync("tar", ["-czf", data, "-T", "/dev/null"]);
  const path = join(work, "member.deb");
  writeFileSync(
    path,
    ar([
      ["debian-binary", Buffer.from("2.0\n")],
      ["control.tar.gz", readFileSync(control)],
      ["data.tar.gz", readFileSync(data)],
    ]),
  );
  await assert.rejects(
    openDeb(path),
    (e: unknown) =>
      isSutureError(e, "INVALID_ARCHIVE") &&
      /control archive member "Post\.inst" is not a dpkg control file name/.test(e.message),
  );
});

test("a control archive that decompresses past 64 MiB is TOO_LARGE naming the package and the limit, gzip or zstd", async () => {
  // A small member that expands into more than any real control archive (a decompression bomb).
  const zeros = Buffer.alloc(64 * 1024 * 1024 + 1);
  // xz goes through the same limit (src/archive/compression.test.ts), only slower to build here.
  const compressed: [string, Buffer][] = [
    ["control.tar.gz", gzipSync(zeros, { level: 1 })],
    ["control.tar.zst", zstdCompressSync(zeros)],
  ];
  for (const [member, bytes] of compressed) {
    const path = join(work, `bomb-${member}.deb`);
    writeFileSync(
      path,
      ar([
        ["debian-binary", Buffer.from("2.0\n")],
        [member, bytes],
        ["data.tar.gz", gzipSync(Buffer.alloc(1024))],
      ]),
    );
    await assert.rejects(openDeb(path), (e: unknown) => {
      assert.ok(isSutureError(e, "TOO_LARGE"), `${member}: ${String(e)}`);
      assert.ok(e.message.includes(path) && e.message.includes(member), e.message);
      assert.match(e.message, /more than 64 MiB \(67108864 bytes\)/);
      return true;
    });
  }
});

test("stopping a data read early ends the decoder: no host xz is left running", async () => {
  // Incompressible data larger than a pipe's buffer: xz blocks writing it unless it is stopped.
  const deb = await buildDeb(
    join(work, "big-xz.deb"),
    "Package: big\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: Test <t@example.org>\nDescription: big\n",
    [
      { path: "usr/share/big/a", content: "first\n" },
      { path: "usr/share/big/b", content: randomBytes(4 * 1024 * 1024) },
    ],
    [],
    "xz",
  );
  for (const readAhead of [undefined, 1024 * 1024]) {
    const opened = await openDeb(deb, readAhead === undefined ? {} : { readAhead });
    for await (const _ of opened.dataEntries()) break;
    await opened.close();
    const deadline = Date.now() + 5000;
    let children = xzChildren();
    while (children !== "" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      children = xzChildren();
    }
    assert.equal(children, "", `xz still running after an early stop (readAhead ${readAhead})`);
  }
});

function xzChildren(): string {
  try {
    return execFileSync("pgrep", ["-a", "-P", String(process.pid), "xz"], { encoding: "utf8" }).trim();
  } catch {
    return ""; // pgrep exits 1 when nothing matches
  }
}
