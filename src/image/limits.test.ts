import assert from "node:assert/strict";
import { test } from "node:test";
import { formatBytes, isSutureError } from "../errors/errors.ts";
import { checkBlobSize, checkLayerCount, parseByteSize } from "./limits.ts";

test("--max-blob-size takes Docker's binary units", () => {
  assert.equal(parseByteSize("16G"), 16 * 1024 ** 3);
  assert.equal(parseByteSize("16GiB"), 16 * 1024 ** 3);
  assert.equal(parseByteSize("16gb"), 16 * 1024 ** 3);
  assert.equal(parseByteSize("500MiB"), 500 * 1024 ** 2);
  assert.equal(parseByteSize("1.5k"), 1536);
  assert.equal(parseByteSize("4096"), 4096);
  assert.equal(parseByteSize("4096b"), 4096);
  for (const bad of ["", "0", "lots", "-1G", "16 G B", "1e9", "16X"])
    assert.equal(parseByteSize(bad), undefined, bad);
});

test("sizes in messages are short and exact where they can be", () => {
  assert.equal(formatBytes(512), "512 bytes");
  assert.equal(formatBytes(16 * 1024 ** 3), "16 GiB");
  assert.equal(formatBytes(100 * 1000 ** 3), "93.1 GiB");
});

test("claimed sizes and layer counts over the limits are TOO_LARGE, naming blob, claim, limit and flag", () => {
  const d = { digest: `sha256:${"a".repeat(64)}`, size: 2048 };
  checkBlobSize(d, 2048, "img");
  assert.throws(
    () => checkBlobSize(d, 1024, "img"),
    (e) =>
      isSutureError(e, "TOO_LARGE") &&
      /img: blob sha256:a{64} claims 2 KiB \(2048 bytes\), more than the 1 KiB allowed: pass --max-blob-size/.test(
        e.message,
      ),
  );
  checkLayerCount(1000, "img");
  assert.throws(
    () => checkLayerCount(1001, "img"),
    (e) => isSutureError(e, "TOO_LARGE"),
  );
});
