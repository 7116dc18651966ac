import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { test } from "node:test";
import { gunzipSync, gzipSync, zstdCompressSync } from "node:zlib";
import { lzma, xz } from "@napi-rs/lzma";
import { formatBytes, isSutureError, SutureError } from "../errors/errors.ts";
import {
  compressor,
  type DecodeFormat,
  decompress,
  decompressAll,
  GZIP_BLOCK,
  HOST_XZ,
} from "./compression.ts";

/** Text with repeats (compresses) and random bytes (does not): 1 MiB, several decoder pieces. */
const PLAIN = Buffer.concat([
  Buffer.from("Package: libssl3\nVersion: 3.0.15-1~deb12u1\n\n".repeat(10_000)),
  randomBytes(512 * 1024),
]);

const ENCODED: [DecodeFormat, Buffer][] = [
  ["gzip", gzipSync(PLAIN)],
  ["zstd", zstdCompressSync(PLAIN)],
  // xz-utils' own output carries a CRC64, so a corrupt stream is noticed (the binding writes none).
  [
    "xz",
    HOST_XZ
      ? execFileSync(HOST_XZ, ["-1", "-c"], { input: PLAIN, maxBuffer: 1 << 26 })
      : xz.compressSync(PLAIN),
  ],
  ["lzma", lzma.compressSync(PLAIN)],
  ["none", PLAIN],
];

/** Both xz decoders when the host has xz (the host's is the default), else the in-process one. */
const XZ_DECODERS = HOST_XZ ? [true, false] : [false];

async function collect(pieces: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const p of pieces) out.push(p);
  return Buffer.concat(out);
}

test("each format decodes to the same bytes, streamed or whole, from a buffer or a stream", async () => {
  for (const [format, bytes] of ENCODED) {
    for (const hostTools of format === "xz" || format === "lzma" ? XZ_DECODERS : [true]) {
      const options = { what: `a ${format} test input`, hostTools };
      const label = `${format} (host tools: ${hostTools})`;
      assert.ok((await decompressAll(bytes, format, options)).equals(PLAIN), `${label}, whole`);
      const streamed = await collect(
        decompress(Readable.from([bytes.subarray(0, 100), bytes.subarray(100)]), format, options),
      );
      assert.ok(streamed.equals(PLAIN), `${label}, streamed`);
    }
  }
});

test("apt's lz4-compressed lists decode with the host's lz4", async (t) => {
  let encoded: Buffer;
  try {
    encoded = execFileSync("lz4", ["-c"], { input: PLAIN, maxBuffer: 1 << 26 });
  } catch {
    return t.skip("skipped: the host has no lz4 (apt-get install lz4)");
  }
  assert.ok((await decompressAll(encoded, "lz4", { what: "a list" })).equals(PLAIN));
});

test("more output than maxBytes is TOO_LARGE naming the input and the limit, with every decoder", async () => {
  for (const [format, bytes] of ENCODED) {
    for (const hostTools of format === "xz" || format === "lzma" ? XZ_DECODERS : [true]) {
      const what = `index ${format}`;
      await assert.rejects(
        decompressAll(bytes, format, {
          what,
          maxBytes: PLAIN.length - 1,
          hostTools,
          fix: "use another mirror",
        }),
        (e: unknown) => {
          assert.ok(isSutureError(e, "TOO_LARGE"), `${format} (${hostTools}): ${String(e)}`);
          assert.equal(
            e.message,
            `${what} decompresses to more than ${formatBytes(PLAIN.length - 1)} (${PLAIN.length - 1} bytes), the most accepted: use another mirror`,
          );
          return true;
        },
      );
      // Exactly the limit is accepted.
      assert.equal(
        (await decompressAll(bytes, format, { what, maxBytes: PLAIN.length, hostTools })).length,
        PLAIN.length,
      );
    }
  }
});

test("a corrupt or truncated input is one-line INVALID_ARCHIVE naming the input, with every decoder", async () => {
  for (const [format, bytes] of ENCODED) {
    if (format === "none" || (format === "xz" && !HOST_XZ)) continue;
    for (const hostTools of format === "xz" || format === "lzma" ? XZ_DECODERS : [true]) {
      const corrupt = Buffer.from(bytes);
      corrupt.fill(0x55, 40, 200);
      for (const [kind, input] of [
        ["corrupt", corrupt],
        ["truncated", bytes.subarray(0, bytes.length >> 1)],
      ] as const) {
        await assert.rejects(
          decompressAll(input, format, { what: `the ${kind} input`, hostTools }),
          (e: unknown) => {
            assert.ok(isSutureError(e, "INVALID_ARCHIVE"), `${format} ${kind} (${hostTools}): ${String(e)}`);
            assert.ok(e.message.startsWith(`cannot decompress the ${kind} input: `), e.message);
            assert.ok(!e.message.includes("\n"), e.message);
            return true;
          },
        );
      }
    }
  }
});

test("the input stream's own error is what a reader sees, not the decoder's complaint about the cut", async () => {
  for (const [format, bytes] of ENCODED) {
    for (const hostTools of format === "xz" || format === "lzma" ? XZ_DECODERS : [true]) {
      const input = Readable.from(
        (async function* () {
          yield bytes.subarray(0, 1000);
          throw new SutureError("DIGEST_MISMATCH", "the index does not match its signed hash");
        })(),
      );
      await assert.rejects(collect(decompress(input, format, { what: "x", hostTools })), (e: unknown) =>
        isSutureError(e, "DIGEST_MISMATCH"),
      );
    }
  }
});

test("a new layer's gzip, compressed in blocks at once, reads back with zlib and with gzip(1), the same bytes every time", async () => {
  const text = Buffer.from("usr/lib/x86_64-linux-gnu/libssl.so.3 ".repeat(90_000));
  const inputs = [
    Buffer.alloc(0),
    Buffer.from("x"),
    text.subarray(0, GZIP_BLOCK - 1),
    text.subarray(0, GZIP_BLOCK),
    text.subarray(0, GZIP_BLOCK + 1),
    Buffer.concat([text, randomBytes(GZIP_BLOCK / 2), text.subarray(0, 3 * 1024 * 1024)]),
  ];
  const compress = async (input: Buffer, cut: number) => {
    const pieces: Buffer[] = [];
    for (let at = 0; at < input.length; at += cut) pieces.push(input.subarray(at, at + cut));
    const out: Buffer[] = [];
    for await (const c of Readable.from(pieces).pipe(compressor("gzip")[0]!)) out.push(c as Buffer);
    return Buffer.concat(out);
  };
  for (const input of inputs) {
    const gz = await compress(input, 300_000);
    assert.equal(gz[9], 3, "OS Unix");
    assert.equal(gz.readUInt32LE(4), 0, "mtime 0");
    assert.ok(gunzipSync(gz).equals(input), `zlib reads ${input.length} bytes back`);
    assert.ok(execFileSync("gzip", ["-dc"], { input: gz, maxBuffer: 1 << 28 }).equals(input), "gzip(1) too");
    execFileSync("gzip", ["-t"], { input: gz });
    assert.ok((await compress(input, 65_536)).equals(gz), "pieces of another size give the same bytes");
  }
});
