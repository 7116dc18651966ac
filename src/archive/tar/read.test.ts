import assert from "node:assert/strict";
import { test } from "node:test";
import { readTar } from "./read.ts";
import { type TarWriteEntry, writeTar } from "./write.ts";

async function tarOf(entries: TarWriteEntry[]): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const piece of writeTar(entries)) out.push(Buffer.from(piece));
  return Buffer.concat(out);
}

const file = (path: string, body: Buffer): TarWriteEntry => ({
  path,
  type: "file",
  mode: 0o644,
  uid: 0,
  gid: 0,
  mtime: 1,
  size: body.length,
  body: () => [body],
});

test("members read the same whatever the pieces, with headers split across them and bodies left unread", async () => {
  const bodies = Array.from({ length: 12 }, (_, i) => Buffer.alloc(i * 700 + 1, i + 1));
  // A long name makes a PAX record: a header of several blocks.
  const entries = bodies.map((b, i) => file(`dir/${"n".repeat(i === 5 ? 200 : 3)}${i}`, b));
  const tar = await tarOf(entries);
  for (const size of [1, 7, 511, 512, 513, 1500, 100_000]) {
    const pieces: Buffer[] = [];
    for (let at = 0; at < tar.length; at += size) pieces.push(tar.subarray(at, at + size));
    const seen: string[] = [];
    let i = 0;
    for await (const { header, body } of readTar(pieces)) {
      // Every other body is read; the others are passed over by the reader.
      if (i % 2 === 0) {
        const got: Buffer[] = [];
        for await (const c of body) got.push(c);
        assert.deepEqual(Buffer.concat(got), bodies[i], `${header.path} in pieces of ${size}`);
      }
      seen.push(header.path);
      i++;
    }
    assert.deepEqual(
      seen,
      entries.map((e) => e.path),
      `pieces of ${size}`,
    );
  }
});
