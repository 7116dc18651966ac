import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import zlib from "node:zlib";
import { isSutureError } from "../errors/errors.ts";
import { readGzipMember } from "./gzip-members.ts";

function fails(code: string, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(isSutureError(e, code as never), String(e));
    assert.match((e as Error).message, pattern);
    return true;
  };
}

test("concatenated members are read one by one with their exact byte ranges", () => {
  const a = zlib.gzipSync("first member");
  const b = zlib.gzipSync(Buffer.alloc(100_000, 7));
  const all = Buffer.concat([a, b]);
  const first = readGzipMember(all, 0, 1024, "t");
  assert.deepEqual([first.start, first.end, first.data.toString()], [0, a.length, "first member"]);
  const second = readGzipMember(all, first.end, 1 << 20, "t");
  assert.equal(second.end, all.length);
  assert.ok(second.data.equals(Buffer.alloc(100_000, 7)));
});

test("headers with a file name, comment, extra field and header CRC (as gzip(1) writes them)", () => {
  const dir = mkdtempSync(join(tmpdir(), "suture-gz-"));
  try {
    writeFileSync(join(dir, "named.txt"), "hello\n");
    execFileSync("gzip", ["-k", join(dir, "named.txt")]);
    const named = readFileSync(join(dir, "named.txt.gz"));
    assert.ok(named[3]! & 0x08, "gzip(1) records the file name");
    const member = readGzipMember(Buffer.concat([named, named]), 0, 1024, "t");
    assert.deepEqual([member.end, member.data.toString()], [named.length, "hello\n"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const plain = zlib.gzipSync("x");
  const header = Buffer.from(plain.subarray(0, 10));
  header[3] = 0x04 | 0x10 | 0x02; // FEXTRA, FCOMMENT, FHCRC
  const extra = Buffer.from([3, 0, 1, 2, 3]);
  const rebuilt = Buffer.concat([
    header,
    extra,
    Buffer.from("comment\0"),
    Buffer.from([0, 0]),
    plain.subarray(10),
  ]);
  assert.equal(readGzipMember(rebuilt, 0, 16, "t").data.toString(), "x");
});

test("corrupt, truncated, oversized and non-gzip members fail with one line", () => {
  const good = zlib.gzipSync("some text that compresses");
  const badCrc = Buffer.from(good);
  badCrc[good.length - 8]! ^= 1;
  const badSize = Buffer.from(good);
  badSize[good.length - 1]! ^= 1;
  const cases: [Buffer, string, RegExp][] = [
    [badCrc, "INVALID_ARCHIVE", /^what: gzip member at byte 0 fails its CRC32 check$/],
    [badSize, "INVALID_ARCHIVE", /has a wrong size in its trailer/],
    [good.subarray(0, good.length - 3), "INVALID_ARCHIVE", /is truncated/],
    [good.subarray(0, 15), "INVALID_ARCHIVE", /is truncated/],
    [Buffer.from("plain text, not gzip at all"), "INVALID_ARCHIVE", /no gzip member starts at byte 0/],
    [zlib.gzipSync(Buffer.alloc(5000)), "TOO_LARGE", /decompresses to more than 1 KiB/],
  ];
  for (const [bytes, code, pattern] of cases)
    assert.throws(() => readGzipMember(bytes, 0, 1024, "what"), fails(code, pattern));
});

test("a member that runs past the end of a prefix read is TOO_LARGE, of a whole input truncated", () => {
  const big = zlib.gzipSync(randomBytes(20_000));
  const prefix = big.subarray(0, 1000);
  assert.throws(
    () => readGzipMember(prefix, 0, 1 << 20, "w", true),
    fails("TOO_LARGE", /does not end within the first 1000 bytes/),
  );
  assert.throws(() => readGzipMember(prefix, 0, 1 << 20, "w"), fails("INVALID_ARCHIVE", /is truncated/));
});
