import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { getAttributeSync } from "@napi-rs/xattr";
import { needs } from "../../../test/lab/requirements.ts";
import { tarOf } from "../../../test/lab/tar.ts";
import { isSutureError } from "../../errors/errors.ts";
import { extractTar } from "./extract.ts";
import { normaliseEntryPath } from "./member-path.ts";
import { readTar } from "./read.ts";

// Some tests create device nodes, set ownership and trusted.* xattrs: they need root, as suture does.
const asRoot = await needs("root");

let work: string;
let n = 0;
before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-tar-extract-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

/** A fresh root and a sibling "outside" dir that a malicious layer would like to write into. */
function freshRoot(): { root: string; outside: string } {
  const base = join(work, String(n++));
  mkdirSync(join(base, "root"), { recursive: true });
  mkdirSync(join(base, "outside"));
  return { root: join(base, "root"), outside: join(base, "outside") };
}

async function extract(bytes: Buffer, root: string) {
  return extractTar([bytes], root, { whiteouts: "overlay" });
}

async function rejectsUnsafe(bytes: Buffer, root: string, mentions: string) {
  await assert.rejects(extract(bytes, root), (e: unknown) => {
    assert.ok(isSutureError(e, "UNSAFE_LAYER"), `expected UNSAFE_LAYER, got ${String(e)}`);
    assert.ok(e.message.includes(mentions), `message should name ${mentions}: ${e.message}`);
    return true;
  });
}

describe("normaliseEntryPath", () => {
  test("strips ./ and empty components, resolves inner ..", () => {
    assert.deepEqual(normaliseEntryPath("./a//b/./c/"), ["a", "b", "c"]);
    assert.deepEqual(normaliseEntryPath("a/x/../b"), ["a", "b"]);
    assert.deepEqual(normaliseEntryPath("./"), []);
  });
  test("refuses absolute paths and escapes", () => {
    for (const bad of ["/etc/passwd", "../x", "a/../../x", "./.."]) {
      assert.throws(
        () => normaliseEntryPath(bad),
        (e: unknown) => isSutureError(e, "UNSAFE_LAYER"),
        bad,
      );
    }
  });
});

describe("readTar", () => {
  test(
    "reads GNU tar's PAX output: long names, big uids, sub-second mtimes, binary xattrs",
    asRoot,
    async () => {
      const src = join(work, `gnu-${n++}`);
      const longDir = join(src, "d".repeat(80), "e".repeat(80));
      mkdirSync(longDir, { recursive: true });
      const file = join(longDir, "f".repeat(60));
      writeFileSync(file, "payload");
      execFileSync("chown", ["3000000:3000001", file]);
      execFileSync("touch", ["-d", "@1700000000.5", file]);
      // A capability set whose bytes are not valid UTF-8 (CAP_SETUID is bit 7 = 0x80).
      execFileSync("setcap", ["cap_setuid,cap_net_raw+ep", file]);
      const capBytes = getAttributeSync(file, "security.capability")!;
      assert.ok(
        capBytes.some((b) => b >= 0x80),
        "test needs a non-UTF-8 capability value",
      );
      const archive = execFileSync("tar", [
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "--format=posix",
        "-C",
        src,
        "-cf",
        "-",
        ".",
      ]);
      const seen = new Map<string, { uid: number; mtime: number; cap?: Buffer; body: string }>();
      for await (const { header, body } of readTar([archive])) {
        let text = "";
        for await (const c of body) text += c.toString();
        seen.set(header.path, {
          uid: header.uid,
          mtime: header.mtime,
          cap: header.xattrs.get("security.capability"),
          body: text,
        });
      }
      const rel = `./${"d".repeat(80)}/${"e".repeat(80)}/${"f".repeat(60)}`;
      const f = seen.get(rel);
      assert.ok(f, `long name read back: ${[...seen.keys()].join(", ")}`);
      assert.equal(f.uid, 3000000);
      assert.equal(f.mtime, 1700000000.5);
      assert.deepEqual(f.cap, capBytes);
      assert.equal(f.body, "payload");
    },
  );

  test("refuses a corrupt header and a truncated archive", async () => {
    const good = await tarOf([{ name: "a", content: "x".repeat(2000) }]);
    const corrupt = Buffer.from(good);
    corrupt[0] = 0x41 + ((corrupt[0]! + 1) % 26);
    await assert.rejects(extract(corrupt, freshRoot().root), (e: unknown) =>
      isSutureError(e, "INVALID_ARCHIVE"),
    );
    await assert.rejects(extract(good.subarray(0, 1024), freshRoot().root), (e: unknown) =>
      isSutureError(e, "INVALID_ARCHIVE"),
    );
  });
});

describe("extractTar", () => {
  test("keeps types, content, owners, modes, mtimes and xattrs", asRoot, async () => {
    const { root } = freshRoot();
    const bytes = await tarOf([
      { name: "./", type: "directory", mode: 0o755, mtime: 1_600_000_000 },
      { name: "usr/", type: "directory", mtime: 1_600_000_001 },
      { name: "usr/bin/", type: "directory", mtime: 1_600_000_002 },
      { name: "usr/bin/tool", content: "#!/bin/sh\n", mode: 0o755 },
      { name: "usr/bin/su", content: "su", mode: 0o4755 },
      { name: "usr/bin/wall", content: "wall", mode: 0o2755, gid: 5 },
      { name: "usr/bin/hard", type: "hardlink", linkname: "usr/bin/tool" },
      { name: "usr/bin/sym", type: "symlink", linkname: "tool", mtime: 1_500_000_000 },
      { name: "tmp/", type: "directory", mode: 0o1777 },
      { name: "home/user/notes", content: "hi", uid: 1000, gid: 1000, mode: 0o600 },
      { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
      { name: "dev/loop0", type: "block", devmajor: 7, devminor: 0, mode: 0o660, gid: 6 },
      { name: "run/initctl", type: "fifo", mode: 0o600 },
      { name: "etc/tagged", content: "x", xattrs: { "user.origin": "test" } },
    ]);
    const stats = await extract(bytes, root);
    assert.equal(stats.files, 5);
    assert.equal(stats.specialFiles, 3);

    const st = (p: string) => lstatSync(join(root, p));
    assert.equal(readFileSync(join(root, "usr/bin/tool"), "utf8"), "#!/bin/sh\n");
    assert.equal(st("usr/bin/tool").mode & 0o7777, 0o755);
    assert.equal(st("usr/bin/su").mode & 0o7777, 0o4755);
    assert.equal(st("usr/bin/wall").mode & 0o7777, 0o2755);
    assert.equal(st("usr/bin/wall").gid, 5);
    assert.equal(st("tmp").mode & 0o7777, 0o1777);
    assert.equal(st("usr/bin/hard").ino, st("usr/bin/tool").ino);
    assert.ok(st("usr/bin/sym").isSymbolicLink());
    assert.equal(st("usr/bin/sym").mtimeMs, 1_500_000_000_000);
    assert.equal(st("home/user/notes").uid, 1000);
    assert.ok(st("dev/null").isCharacterDevice());
    assert.equal(st("dev/null").rdev, (1 << 8) | 3);
    assert.equal(st("dev/null").mode & 0o777, 0o666);
    assert.ok(st("dev/loop0").isBlockDevice());
    assert.equal(st("dev/loop0").gid, 6);
    assert.ok(st("run/initctl").isFIFO());
    assert.equal(getAttributeSync(join(root, "etc/tagged"), "user.origin")?.toString(), "test");
    // Directory mtimes are set after their contents were written.
    assert.equal(st("usr/bin").mtimeMs, 1_600_000_002_000);
    assert.equal(st("usr").mtimeMs, 1_600_000_001_000);
    assert.equal(st(".").mtimeMs, 1_600_000_000_000);
  });

  test("turns OCI whiteouts into overlayfs whiteouts", asRoot, async () => {
    const { root } = freshRoot();
    const bytes = await tarOf([
      { name: "etc/", type: "directory" },
      { name: "etc/.wh.gone", content: "" },
      { name: "opt/old/", type: "directory" },
      { name: "opt/old/.wh..wh..opq", content: "" },
      { name: "opt/old/new", content: "n" },
      { name: ".wh..wh.plnk/", type: "directory" },
    ]);
    const stats = await extract(bytes, root);
    assert.equal(stats.whiteouts, 1);
    assert.equal(stats.opaqueDirs, 1);
    const wh = lstatSync(join(root, "etc/gone"));
    assert.ok(wh.isCharacterDevice());
    assert.equal(wh.rdev, 0);
    assert.equal(getAttributeSync(join(root, "opt/old"), "trusted.overlay.opaque")?.toString(), "y");
    assert.deepEqual(readdirSync(root).sort(), ["etc", "opt"]);
  });

  test("a later member replaces an earlier one at the same path", async () => {
    const { root } = freshRoot();
    const bytes = await tarOf([
      { name: "a", content: "first" },
      { name: "a", type: "symlink", linkname: "/etc/passwd" },
      { name: "a", content: "third" },
      { name: "d/x", content: "x" },
      { name: "d", type: "symlink", linkname: "elsewhere" },
    ]);
    await extract(bytes, root);
    assert.equal(readFileSync(join(root, "a"), "utf8"), "third");
    assert.ok(lstatSync(join(root, "d")).isSymbolicLink());
  });

  test("parents the archive does not list get a fixed time, so layers built over them do not depend on when they were extracted", async () => {
    const { root } = freshRoot();
    const bytes = await tarOf([
      { name: "usr/share/listed/", type: "directory", mtime: 1_700_000_000 },
      { name: "usr/share/listed/f", content: "f" },
    ]);
    await extract(bytes, root);
    assert.equal(lstatSync(join(root, "usr")).mtimeMs, 0);
    assert.equal(lstatSync(join(root, "usr/share")).mtimeMs, 0);
    assert.equal(lstatSync(join(root, "usr/share/listed")).mtimeMs, 1_700_000_000_000);
  });

  test("ignores trusted.overlay.* xattrs from the archive", async () => {
    const { root } = freshRoot();
    const bytes = await tarOf([
      { name: "dir/", type: "directory", xattrs: { "trusted.overlay.opaque": "y" } },
    ]);
    const stats = await extract(bytes, root);
    assert.equal(getAttributeSync(join(root, "dir"), "trusted.overlay.opaque"), null);
    assert.deepEqual(stats.ignoredXattrs, ["dir: trusted.overlay.opaque"]);
  });

  describe("refuses layers that would write outside the root", () => {
    test("../ in a member name", async () => {
      const { root, outside } = freshRoot();
      await rejectsUnsafe(
        await tarOf([{ name: "../outside/escape", content: "x" }]),
        root,
        "../outside/escape",
      );
      assert.deepEqual(readdirSync(outside), []);
    });

    test("an absolute member name", async () => {
      const { root } = freshRoot();
      await rejectsUnsafe(await tarOf([{ name: "/abs", content: "x" }]), root, "/abs");
    });

    test("writing through an absolute symlink", async () => {
      const { root, outside } = freshRoot();
      const bytes = await tarOf([
        { name: "evil", type: "symlink", linkname: outside },
        { name: "evil/pwned", content: "x" },
      ]);
      await rejectsUnsafe(bytes, root, "evil/pwned");
      assert.deepEqual(readdirSync(outside), []);
    });

    test("writing through a relative symlink that climbs out", async () => {
      const { root, outside } = freshRoot();
      const bytes = await tarOf([
        { name: "up", type: "symlink", linkname: "../outside" },
        { name: "up/sub/pwned", content: "x" },
      ]);
      await rejectsUnsafe(bytes, root, "up/sub/pwned");
      assert.deepEqual(readdirSync(outside), []);
    });

    test("whiteouts, opaque markers and devices through a symlink", async () => {
      for (const entry of [
        { name: "evil/.wh.victim", content: "" },
        { name: "evil/.wh..wh..opq", content: "" },
        { name: "evil/null", type: "char" as const, devmajor: 1, devminor: 3 },
      ]) {
        const { root, outside } = freshRoot();
        writeFileSync(join(outside, "victim"), "keep");
        await rejectsUnsafe(
          await tarOf([{ name: "evil", type: "symlink", linkname: outside }, entry]),
          root,
          entry.name,
        );
        assert.deepEqual(readdirSync(outside), ["victim"]);
        assert.equal(getAttributeSync(outside, "trusted.overlay.opaque"), null);
      }
    });

    test("hardlinks to files outside the layer", async () => {
      const before = statSync("/etc/passwd").nlink;
      for (const linkname of ["/etc/passwd", "../../../../../../etc/passwd"]) {
        const { root } = freshRoot();
        await rejectsUnsafe(await tarOf([{ name: "pw", type: "hardlink", linkname }]), root, "pw");
      }
      const { root } = freshRoot();
      await rejectsUnsafe(
        await tarOf([
          { name: "etc", type: "symlink", linkname: "/etc" },
          { name: "pw", type: "hardlink", linkname: "etc/passwd" },
        ]),
        root,
        "pw",
      );
      assert.equal(statSync("/etc/passwd").nlink, before);
    });
  });
});
