import assert from "node:assert/strict";
import test from "node:test";
import { dlCacheLibcmp, finalizeStrings } from "./ld-so-cache.ts";

test("_dl_cache_libcmp: digit runs compare as numbers, a digit sorts after any other byte, a prefix first", () => {
  assert.ok(dlCacheLibcmp("liblzma.so.5.10.0", "liblzma.so.5.4.1") > 0, "10 > 4, not '1' < '4'");
  assert.ok(dlCacheLibcmp("libfoo.so.1", "libfoo.so.1") === 0);
  assert.ok(dlCacheLibcmp("libfoo.so", "libfoo.so.1") < 0, "the shorter name first");
  assert.ok(dlCacheLibcmp("libfoo1.so", "libfoo.so") > 0, "a digit after '.'");
  assert.ok(dlCacheLibcmp("libz.so.1", "libzstd.so.1") < 0);
  assert.ok(dlCacheLibcmp("lib2.so", "lib10.so") < 0);
  assert.equal(dlCacheLibcmp("lib01.so", "lib1.so"), 0, "leading zeros are the same number");
});

test("the string table shares suffixes as ldconfig's stringtable_finalize does", () => {
  const { offsets, bytes } = finalizeStrings([
    "libz.so.1",
    "/lib/x86_64-linux-gnu/libz.so.1",
    "libc.so.6",
    "x86-64-v3",
  ]);
  // Sorted by reversed bytes, descending (last bytes '6', '3', '1'), the longer of a shared suffix first.
  assert.equal(bytes.toString("latin1"), "libc.so.6\0x86-64-v3\0/lib/x86_64-linux-gnu/libz.so.1\0");
  assert.equal(offsets.get("libc.so.6"), 0);
  assert.equal(offsets.get("x86-64-v3"), 10);
  assert.equal(offsets.get("/lib/x86_64-linux-gnu/libz.so.1"), 20);
  assert.equal(offsets.get("libz.so.1"), 20 + "/lib/x86_64-linux-gnu/".length, "points into the path");
  assert.deepEqual(finalizeStrings([]).bytes, Buffer.alloc(0));
});
