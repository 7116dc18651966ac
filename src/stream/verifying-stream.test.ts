import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { DescriptorVerifyingStream } from "../image/digest.ts";
import { ChecksumStream } from "./checksum.ts";
import type { VerifyingStream } from "./verifying-stream.ts";

const content = Buffer.from("the bytes a manifest or a signed index names\n");
const hex = createHash("sha256").update(content).digest("hex");

/** Stream `chunks` through `verifier`; what came out, and the error if it failed. */
async function run(verifier: VerifyingStream, chunks: Buffer[]): Promise<{ out: Buffer; error?: unknown }> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(chunk);
      cb();
    },
  });
  try {
    await pipeline(Readable.from(chunks), verifier, sink);
    return { out: Buffer.concat(out) };
  } catch (error) {
    return { out: Buffer.concat(out), error };
  }
}

const descriptor = (size: number, digest = `sha256:${hex}`) =>
  new DescriptorVerifyingStream({ digest, size }, "blob x");
const signed = (size: number, sha256 = hex) =>
  new ChecksumStream({ size, sha256 }, "foo.deb", "use another mirror");

test("content that matches passes through whole, for an image blob and for a signed package", async () => {
  for (const verifier of [descriptor(content.length), descriptor(-1), signed(content.length)]) {
    const { out, error } = await run(verifier, [content.subarray(0, 10), content.subarray(10)]);
    assert.equal(error, undefined);
    assert.deepEqual(out, content);
  }
});

test("more bytes than named stop the stream there, none of the excess passed on", async () => {
  const excess = [content, Buffer.alloc(1024 * 1024)];
  const blob = await run(descriptor(content.length), excess);
  assert.ok(isSutureError(blob.error, "DIGEST_MISMATCH"), String(blob.error));
  assert.match((blob.error as Error).message, /larger than the \d+ bytes its descriptor names/);
  assert.ok(blob.out.length <= content.length);
  const deb = await run(signed(content.length), excess);
  assert.ok(isSutureError(deb.error, "UNTRUSTED"));
  assert.match(
    (deb.error as Error).message,
    /larger than the \d+ bytes the signed index lists: use another mirror/,
  );
});

test("a short or altered stream fails at its end, with each caller's code and wording", async () => {
  const short = content.subarray(0, 20);
  const altered = Buffer.from(content);
  altered[0] = 0x54;
  const cases: [VerifyingStream, Buffer, string, RegExp][] = [
    [descriptor(content.length), short, "DIGEST_MISMATCH", /^blob x is 20 bytes, expected \d+$/],
    [
      descriptor(content.length),
      altered,
      "DIGEST_MISMATCH",
      /^blob x has digest sha256:[0-9a-f]{64}, expected sha256:/,
    ],
    [signed(content.length), short, "UNTRUSTED", /^foo\.deb is 20 bytes but the signed index lists \d+/],
    [
      signed(content.length),
      altered,
      "UNTRUSTED",
      /^foo\.deb has SHA256 [0-9a-f]{64} but the signed index lists/,
    ],
  ];
  for (const [verifier, bytes, code, message] of cases) {
    const { error } = await run(verifier, [bytes]);
    assert.ok(isSutureError(error) && error.code === code, String(error));
    assert.match((error as Error).message, message);
  }
});

test("a sink adds no second hash behind a source stream that already checks the same digest and size", async () => {
  const { sinkVerifiers } = await import("../image/digest.ts");
  const d = { digest: `sha256:${hex}`, size: content.length };
  assert.deepEqual(sinkVerifiers(descriptor(content.length), d, "blob x"), []);
  // Anything else is checked by the sink itself: another digest, an unknown size, a plain stream.
  for (const input of [
    descriptor(content.length, `sha256:${"0".repeat(64)}`),
    descriptor(-1),
    Readable.from([content]),
  ]) {
    const verifiers = sinkVerifiers(input, d, "blob x");
    assert.equal(verifiers.length, 1);
    const { error } = await run(verifiers[0]!, [Buffer.from("not the named bytes")]);
    assert.ok(isSutureError(error) && error.code === "DIGEST_MISMATCH");
  }
});
