import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import { promisify } from "node:util";
import { getAttribute } from "@napi-rs/xattr";
import { needs } from "../../../test/lab/requirements.ts";
import { listTar } from "../../../test/lab/tar.ts";
import { isSutureError } from "../../errors/errors.ts";
import { readTar } from "./read.ts";
import { encodePaxRecords, encodeTarHeader, type TarWriteEntry, writeTar } from "./write.ts";

const run = promisify(execFile);

async function collect(entries: TarWriteEntry[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of writeTar(entries)) chunks.push(c);
  return Buffer.concat(chunks);
}

const longDir = "usr/share/doc/a-package-with-a-rather-long-name-for-testing-purposes";
const longName = `${longDir}/and-a-file-name-that-takes-the-path-well-over-one-hundred-bytes.txt`;
// A capability blob as setcap writes it (VFS_CAP_REVISION_2, cap_net_bind_service+ep): binary, with NULs.
const capability = Buffer.from("0100000200040000000000000000000000000000", "hex");

function sample(): TarWriteEntry[] {
  return [
    { path: "etc", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: 1700000000 },
    {
      path: "etc/hello",
      type: "file",
      mode: 0o4755,
      uid: 0,
      gid: 0,
      mtime: 1700000001,
      size: 6,
      body: () => Readable.from([Buffer.from("hel"), Buffer.from("lo\n")]),
    },
    {
      path: "etc/link",
      type: "hardlink",
      mode: 0o755,
      uid: 0,
      gid: 0,
      mtime: 1700000001,
      linkname: "etc/hello",
    },
    { path: "etc/sym", type: "symlink", mode: 0o777, uid: 0, gid: 0, mtime: 1, linkname: "hello" },
    { path: longDir, type: "directory", mode: 0o750, uid: 1, gid: 2, mtime: 1700000002 },
    {
      path: longName,
      type: "file",
      mode: 0o644,
      uid: 3_000_000, // beyond the 7 octal digits of ustar
      gid: 3_000_001,
      mtime: 1700000003,
      size: 1000,
      body: () => Readable.from([Buffer.alloc(1000, 0x61)]),
    },
    {
      path: "etc/ünïcode-名前",
      type: "symlink",
      mode: 0o777,
      uid: 0,
      gid: 0,
      mtime: 1700000004,
      linkname: `/${"x".repeat(150)}/target`,
    },
    {
      path: "etc/cap",
      type: "file",
      mode: 0o755,
      uid: 0,
      gid: 0,
      mtime: 1700000005,
      size: 0,
      xattrs: new Map([
        ["security.capability", capability],
        ["user.note", Buffer.from("a=b\nc")],
      ]),
    },
  ];
}

test("the archive is whole blocks ending in two zero blocks, and the same entries give the same bytes", async () => {
  const a = await collect(sample());
  const b = await collect(sample());
  assert.equal(a.length % 512, 0);
  assert.ok(a.subarray(a.length - 1024).equals(Buffer.alloc(1024)));
  assert.ok(a.equals(b));
});

test("Python's tarfile reads back names, types, link targets, ids, modes and xattr records", async () => {
  const seen = await listTar(await collect(sample()), { bodies: true });
  assert.deepEqual(
    seen.map((m) => [m.name, m.type]),
    [
      ["etc/", "directory"],
      ["etc/hello", "file"],
      ["etc/link", "hardlink"],
      ["etc/sym", "symlink"],
      [`${longDir}/`, "directory"],
      [longName, "file"],
      ["etc/ünïcode-名前", "symlink"],
      ["etc/cap", "file"],
    ],
  );
  assert.equal(seen[1]!.mode, 0o4755);
  assert.equal(seen[1]!.body.toString(), "hello\n");
  assert.equal(seen[2]!.linkname, "etc/hello");
  assert.equal(seen[5]!.uid, 3000000);
  assert.equal(seen[5]!.gid, 3000001);
  assert.equal(seen[5]!.body.length, 1000);
  assert.equal(seen[6]!.linkname, `/${"x".repeat(150)}/target`);
  // PAX values are bytes: the binary capability comes back byte for byte.
  assert.deepEqual(seen[7]!.pax.get("SCHILY.xattr.user.note"), Buffer.from("a=b\nc"));
  assert.deepEqual(seen[7]!.pax.get("SCHILY.xattr.security.capability"), capability);
  assert.equal(seen[0]!.uname, "");
  assert.equal(seen[1]!.mtime, 1700000001);
});

test(
  "GNU tar extracts the archive with the same metadata and binary xattrs",
  await needs("root", "tool:getcap"),
  async (t) => {
    const dir = await fs.mkdtemp(join(tmpdir(), "suture-tarw-"));
    t.after(() => fs.rm(dir, { recursive: true, force: true }));
    const archive = join(dir, "a.tar");
    await fs.writeFile(archive, await collect(sample()));
    const out = join(dir, "out");
    await fs.mkdir(out);
    const { stderr } = await run("tar", [
      "--xattrs",
      "--xattrs-include=*",
      "--numeric-owner",
      "-xpf",
      archive,
      "-C",
      out,
    ]);
    assert.equal(stderr, "");
    const hello = await fs.lstat(join(out, "etc/hello"));
    assert.equal(hello.mode & 0o7777, 0o4755);
    assert.equal(hello.mtimeMs, 1700000001000);
    assert.equal(hello.nlink, 2, "etc/link is a hardlink to etc/hello");
    const long = await fs.lstat(join(out, longName));
    assert.equal(long.uid, 3_000_000);
    assert.equal(long.gid, 3_000_001);
    assert.equal(await fs.readlink(join(out, "etc/ünïcode-名前")), `/${"x".repeat(150)}/target`);
    assert.deepEqual(await getAttribute(join(out, "etc/cap"), "security.capability"), capability);
    assert.deepEqual(await getAttribute(join(out, "etc/cap"), "user.note"), Buffer.from("a=b\nc"));
    const { stdout } = await run("getcap", [join(out, "etc/cap")]);
    assert.match(stdout, /cap_net_bind_service=ep/);
  },
);

test("a PAX record's length counts its own digits, also across a digit-count boundary", () => {
  for (let n = 80; n < 1010; n++) {
    const records = encodePaxRecords(new Map([["path", Buffer.alloc(n, 0x61)]]));
    const space = records.indexOf(0x20);
    assert.equal(Number(records.subarray(0, space).toString()), records.length, `value of ${n} bytes`);
    assert.equal(records[records.length - 1], 0x0a);
  }
});

test("the header checksum is the byte sum with the checksum field as spaces", () => {
  const header = encodeTarHeader({ path: "a", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0 });
  assert.equal(header.length, 512);
  const stored = Number.parseInt(header.subarray(148, 154).toString(), 8);
  const copy = Buffer.from(header);
  copy.fill(0x20, 148, 156);
  assert.equal(
    stored,
    copy.reduce((s, b) => s + b, 0),
  );
});

test("a body shorter or longer than the size it was listed with is an error", async () => {
  const entry = (bytes: number): TarWriteEntry => ({
    path: "f",
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 0,
    size: 10,
    body: () => Readable.from([Buffer.alloc(bytes)]),
  });
  await assert.rejects(collect([entry(5)]), { code: "IO" });
  await assert.rejects(collect([entry(11)]), { code: "IO" });
});

test("other PAX records come back as the reader's otherPax; records the writer derives cannot be set", async () => {
  const checksum = Buffer.from("Q1abc=");
  const bytes = await collect([
    {
      path: "usr/bin/tool",
      type: "file",
      mode: 0o755,
      uid: 0,
      gid: 0,
      mtime: 0,
      size: 2,
      otherPax: new Map([["APK-TOOLS.checksum.SHA1", checksum]]),
      body: () => [Buffer.from("hi")],
    },
  ]);
  const members = [];
  for await (const m of readTar([bytes])) {
    for await (const _ of m.body);
    members.push(m.header);
  }
  assert.equal(members.length, 1);
  assert.equal(members[0]!.path, "usr/bin/tool");
  assert.deepEqual(members[0]!.otherPax, new Map([["APK-TOOLS.checksum.SHA1", checksum]]));
  for (const key of ["path", "size", "SCHILY.xattr.user.x", "a=b"])
    assert.throws(
      () =>
        encodeTarHeader({
          path: "f",
          type: "file",
          mode: 0o644,
          uid: 0,
          gid: 0,
          mtime: 0,
          otherPax: new Map([[key, Buffer.from("1")]]),
        }),
      (e) => isSutureError(e, "INVALID_ARCHIVE"),
      key,
    );
});
