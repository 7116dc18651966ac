import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { DescriptorVerifyingStream } from "../image/digest.ts";
import { BackgroundSha256 } from "./background-sha256.ts";

const MiB = 1024 * 1024;

test("the worker's digest is SHA-256 of the bytes in order, for streams side by side and pieces of any size", async () => {
  const data = randomBytes(9 * MiB + 12345);
  // Piece sizes across the 1 MiB staging buffers: tiny, exact, larger than several buffers, empty.
  const cuts = [1, 4095, MiB, 0, 3.5 * MiB, 17, MiB - 1, 2 * MiB + 3];
  const hashOf = async (offset: number) => {
    const h = new BackgroundSha256();
    let at = 0;
    for (let i = 0; at < data.length; i++) {
      const n = cuts[(i + offset) % cuts.length]!;
      await h.update(data.subarray(at, at + n));
      at += n;
    }
    return h.digest();
  };
  const expected = createHash("sha256").update(data).digest("hex");
  assert.deepEqual(await Promise.all([0, 1, 2, 3].map(hashOf)), [expected, expected, expected, expected]);
  const empty = new BackgroundSha256();
  assert.equal(await empty.digest(), createHash("sha256").digest("hex"));
});

test("a large blob hashed on the worker still fails on one changed byte, and passes unchanged", async () => {
  const blob = randomBytes(20 * MiB);
  const digest = `sha256:${createHash("sha256").update(blob).digest("hex")}`;
  const run = async (bytes: Buffer) => {
    const pieces = Array.from({ length: 80 }, (_, i) => bytes.subarray(i * 256 * 1024, (i + 1) * 256 * 1024));
    let seen = 0;
    await pipeline(
      Readable.from(pieces),
      new DescriptorVerifyingStream({ digest, size: blob.length }, "layer blob"),
      new Writable({
        write(chunk: Buffer, _e, cb) {
          seen += chunk.length;
          cb();
        },
      }),
    );
    return seen;
  };
  assert.equal(await run(blob), blob.length);
  const tampered = Buffer.from(blob);
  tampered[15 * MiB] ^= 1;
  await assert.rejects(
    run(tampered),
    (e) => isSutureError(e) && e.code === "DIGEST_MISMATCH" && /layer blob has digest/.test(e.message),
  );
});

test("a stream dropped part-way neither keeps the process alive nor breaks the next one", () => {
  const script = `
    import { BackgroundSha256 } from ${JSON.stringify(new URL("./background-sha256.ts", import.meta.url).href)};
    import { createHash } from "node:crypto";
    const dropped = new BackgroundSha256();
    const big = Buffer.alloc(8 * 1024 * 1024, 7);
    // Not awaited: it may be waiting for buffers when the stream is dropped.
    dropped.update(big).catch(() => {});
    dropped.dispose();
    const next = new BackgroundSha256();
    await next.update(big);
    const ok = (await next.digest()) === createHash("sha256").update(big).digest("hex");
    new BackgroundSha256().update(big); // open, never finished: must not hold the process
    console.log(ok ? "same digest" : "different digest");
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.signal, null, "the process did not exit by itself");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), "same digest");
});
