import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { listArMembers, openArMember } from "./ar.ts";

function header(name: string, size: number): Buffer {
  const field = (v: string, w: number) => v.padEnd(w, " ");
  return Buffer.from(
    field(name, 16) +
      field("1700000000", 12) +
      field("0", 6) +
      field("0", 6) +
      field("100644", 8) +
      field(String(size), 10) +
      "`\n",
    "latin1",
  );
}

function member(name: string, data: string): Buffer {
  const body = Buffer.from(data);
  return Buffer.concat([
    header(name, body.length),
    body,
    body.length % 2 ? Buffer.from("\n") : Buffer.alloc(0),
  ]);
}

test("ar members of a .deb-shaped archive: System V and BSD names, odd sizes padded", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "suture-ar-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "x.deb");
  const longName = "control.tar.xz.extra";
  await writeFile(
    path,
    Buffer.concat([
      Buffer.from("!<arch>\n"),
      member("debian-binary/", "2.0\n"),
      member("control.tar.gz", "abc"),
      member(`#1/${longName.length}`, `${longName}hello`),
      member("empty", ""),
    ]),
  );
  const members = await listArMembers(path);
  assert.deepEqual(
    members.map((m) => [m.name, m.size]),
    [
      ["debian-binary", 4],
      ["control.tar.gz", 3],
      [longName, 5],
      ["empty", 0],
    ],
  );
  assert.equal(members[0]!.mode, 0o100644);
  assert.equal(await text(openArMember(path, members[0]!)), "2.0\n");
  assert.equal(await text(openArMember(path, members[1]!)), "abc");
  assert.equal(await text(openArMember(path, members[2]!)), "hello");
  assert.equal(await text(openArMember(path, members[3]!)), "");
});

test("non-ar and truncated files are INVALID_ARCHIVE", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "suture-ar-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const notAr = join(dir, "a");
  await writeFile(notAr, "<html>not found</html>");
  await assert.rejects(
    listArMembers(notAr),
    (e: unknown) => isSutureError(e, "INVALID_ARCHIVE") && /magic/.test(e.message),
  );
  const truncated = join(dir, "b");
  await writeFile(
    truncated,
    Buffer.concat([Buffer.from("!<arch>\n"), header("debian-binary", 400), Buffer.from("2.0\n")]),
  );
  await assert.rejects(
    listArMembers(truncated),
    (e: unknown) => isSutureError(e, "INVALID_ARCHIVE") && /past the end/.test(e.message),
  );
});
