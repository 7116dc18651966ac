import assert from "node:assert/strict";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { getAttributeSync } from "@napi-rs/xattr";
import { needs } from "../../../test/lab/requirements.ts";
import { fixChecksum, rawHeader, withData } from "../../../test/lab/tar.ts";
import type { TarEntry } from "./entry.ts";
import { extractTar } from "./extract.ts";
import { normaliseEntryPath } from "./member-path.ts";
import { TarIndex } from "./random-access.ts";
import { readTar } from "./read.ts";
import { encodeTarHeader, TAR_END, type TarWriteEntry } from "./write.ts";

// The streaming reader, the extractor and the random-access index share one header decoder; this
// holds them to the same reading of an archive that uses every extension at once. The extractor
// needs root (ownership, xattrs), as suture does.

const MTIME = 1_700_000_000;
const paxName = `usr/share/doc/${"pax-long-directory/".repeat(5)}copyright`;
const gnuName = `usr/lib/${"gnu-long-directory/".repeat(6)}libthing.so.1`;
const gnuTarget = `../../${"gnu-link-target/".repeat(7)}elsewhere`;
// A value that is not UTF-8 (0xff, 0xfe, a lone continuation byte 0x80) with a NUL inside: a
// decoder that turned PAX values into strings would change it.
const binaryXattr = Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x41, 0xc3]);
const bigUid = 3_000_000;

function header(entry: Omit<TarWriteEntry, "mode" | "uid" | "gid" | "mtime"> & { mode?: number }): Buffer {
  return encodeTarHeader({ mode: 0o644, uid: 0, gid: 0, mtime: MTIME, ...entry });
}

function member(entry: Parameters<typeof header>[0], content: string): Buffer {
  return withData(header({ ...entry, size: content.length }), Buffer.from(content));
}

/** A ustar header whose size and uid are GNU base-256 numbers instead of octal. */
function base256Member(path: string, content: string): Buffer {
  const block = header({ path, type: "file", size: 0 });
  block.fill(0, 124, 136);
  block[124] = 0x80;
  block.writeUIntBE(content.length, 136 - 6, 6);
  block.fill(0, 108, 116);
  block[108] = 0x80;
  block.writeUIntBE(bigUid, 116 - 4, 4);
  return withData(fixChecksum(block), Buffer.from(content));
}

const TRICKY = Buffer.concat([
  header({ path: ".", type: "directory", mode: 0o755 }),
  header({ path: "usr", type: "directory", mode: 0o755 }),
  // A PAX path over 100 bytes, with a binary xattr record.
  member({ path: paxName, type: "file", xattrs: new Map([["user.binary", binaryXattr]]) }, "pax long name\n"),
  // GNU long name (L) for a file, and GNU long link (K) for a symlink's target.
  withData(rawHeader("././@LongLink", "L", gnuName.length + 1, true), Buffer.from(`${gnuName}\0`)),
  withData(rawHeader("name-the-long-name-replaces", "0", 9, true), Buffer.from("gnu name\n")),
  withData(rawHeader("././@LongLink", "K", gnuTarget.length + 1, true), Buffer.from(`${gnuTarget}\0`)),
  rawHeader("usr/lib/link-with-long-target", "2", 0, true),
  // Size and uid in base-256.
  base256Member("usr/base256", "sized in base 256\n"),
  // A hardlink to the PAX-named file, under a ./ spelling of its name.
  header({ path: "usr/hardlink", type: "hardlink", linkname: `./${paxName}` }),
  TAR_END,
]);

interface Seen {
  entry: TarEntry;
  content: string;
}

/** What the streaming reader gives, keyed by normalised path, hardlink targets normalised too. */
async function viaReader(): Promise<Map<string, Seen>> {
  const out = new Map<string, Seen>();
  for await (const { header, body } of readTar([TRICKY])) {
    let content = "";
    for await (const c of body) content += c.toString("latin1");
    const path = normaliseEntryPath(header.path).join("/");
    const linkname =
      header.type === "hardlink" ? normaliseEntryPath(header.linkname).join("/") : header.linkname;
    if (path !== "") out.set(path, { entry: { ...header, path, linkname }, content });
  }
  return out;
}

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-tar-agree-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

test("the reader decodes the tricky archive as intended", async () => {
  const seen = await viaReader();
  assert.deepEqual(
    [...seen.keys()],
    ["usr", paxName, gnuName, "usr/lib/link-with-long-target", "usr/base256", "usr/hardlink"],
  );
  assert.equal(seen.get(paxName)!.content, "pax long name\n");
  assert.deepEqual(seen.get(paxName)!.entry.xattrs.get("user.binary"), binaryXattr);
  assert.equal(seen.get(gnuName)!.content, "gnu name\n");
  assert.equal(seen.get("usr/lib/link-with-long-target")!.entry.linkname, gnuTarget);
  assert.equal(seen.get("usr/base256")!.entry.size, "sized in base 256\n".length);
  assert.equal(seen.get("usr/base256")!.entry.uid, bigUid);
  assert.equal(seen.get("usr/base256")!.content, "sized in base 256\n");
  assert.equal(seen.get("usr/hardlink")!.entry.linkname, paxName);
});

test("the index finds the same entries, at offsets holding the same data", async (t) => {
  const file = join(work, "tricky.tar");
  writeFileSync(file, TRICKY);
  const index = await TarIndex.open(file);
  t.after(() => index.close());
  const seen = await viaReader();
  assert.deepEqual([...index.entries.keys()], [...seen.keys()]);
  for (const [path, { entry, content }] of seen) {
    const { offset, ...indexed } = index.entries.get(path)!;
    assert.deepEqual(indexed, entry, path);
    assert.equal((await index.readRange(offset, indexed.size)).toString("latin1"), content, path);
  }
  // Through the hardlink, the index reaches the PAX-named file's data.
  assert.equal((await index.readFile(index.resolve("usr/hardlink")!)).toString(), "pax long name\n");
});

// Writing the archive's owners (a base-256 uid among them) needs root.
test(
  "the extractor writes the same entries: types, modes, owners, times, targets, data and xattrs",
  await needs("root"),
  async () => {
    const root = join(work, "root");
    mkdirSync(root);
    const stats = await extractTar([TRICKY], root, { whiteouts: "overlay" });
    const seen = await viaReader();
    assert.equal(stats.entries, seen.size + 1, "every member, the root's own entry too");
    for (const [path, { entry, content }] of seen) {
      const abs = join(root, path);
      const st = lstatSync(abs);
      const type = st.isDirectory()
        ? "directory"
        : st.isSymbolicLink()
          ? "symlink"
          : st.isFile()
            ? entry.type === "hardlink"
              ? "hardlink"
              : "file"
            : "other";
      assert.equal(type, entry.type, path);
      assert.equal(st.uid, entry.uid, path);
      assert.equal(st.gid, entry.gid, path);
      if (entry.type === "symlink") {
        assert.equal(readlinkSync(abs), entry.linkname, path);
        continue;
      }
      assert.equal(st.mode & 0o7777, entry.mode, path);
      assert.equal(st.mtimeMs / 1000, entry.mtime, path);
      if (entry.type === "hardlink") {
        assert.equal(
          st.ino,
          lstatSync(join(root, entry.linkname)).ino,
          `${path} is a link to ${entry.linkname}`,
        );
      } else if (entry.type === "file") {
        assert.equal(readFileSync(abs).toString("latin1"), content, path);
        assert.equal(st.size, entry.size, path);
      }
      for (const [key, value] of entry.xattrs)
        assert.deepEqual(getAttributeSync(abs, key), value, `${path} ${key}`);
    }
  },
);
