import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { PassThrough, type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { describeCause, SutureError } from "../errors/errors.ts";
import type { Compression } from "../oci/media-types.ts";

export type DetectedCompression = Compression | "xz" | "bzip2";

/** Identify a compression format from the first bytes of a stream. */
export function sniffCompression(head: Uint8Array): DetectedCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd)
    return "zstd";
  if (
    head.length >= 6 &&
    head[0] === 0xfd &&
    head[1] === 0x37 &&
    head[2] === 0x7a &&
    head[3] === 0x58 &&
    head[4] === 0x5a &&
    head[5] === 0x00
  )
    return "xz";
  if (head.length >= 3 && head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return "bzip2";
  return "none";
}

/**
 * Decompress a stream whose format is found from its magic bytes, so a layer whose media type
 * lies about its compression (common in docker-archives) still reads correctly.
 */
export function decompressAuto(input: Readable): Readable {
  // pipeline() below destroys `out` with the decoder's own error (zlib's "invalid distance too
  // far back") before our catch can; converting here makes every error a reader sees a SutureError.
  const out = new PassThrough({
    destroy(error, callback) {
      callback(error === null || error instanceof SutureError ? error : decompressError(error));
    },
  });
  let decided = false;
  let head = Buffer.alloc(0);
  const sniffer = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (decided) return cb(null, chunk);
      head = Buffer.concat([head, chunk]);
      if (head.length < 6) return cb();
      decided = true;
      cb(null, head);
    },
    flush(cb) {
      if (!decided) {
        decided = true;
        this.push(head);
      }
      cb();
    },
  });
  // Buffer the first bytes, pick a decoder, then stream the rest through it.
  (async () => {
    // pipe() would drop the input's errors (e.g. a digest mismatch at EOF); forward them.
    input.on("error", (e) => sniffer.destroy(e));
    const iterator = input.pipe(sniffer)[Symbol.asyncIterator]();
    const first = await iterator.next();
    if (first.done) {
      out.end();
      return;
    }
    const firstChunk = first.value as Buffer;
    const kind = sniffCompression(firstChunk);
    const decoder = decoderFor(kind);
    async function* rest() {
      yield firstChunk;
      for (;;) {
        const n = await iterator.next();
        if (n.done) return;
        yield n.value as Buffer;
      }
    }
    if (decoder) await pipeline(rest, decoder, out);
    else await pipeline(rest, out);
  })().catch((e) => out.destroy(e));
  return out;
}

function decompressError(e: unknown): SutureError {
  return new SutureError("INVALID_ARCHIVE", `cannot decompress stream: ${describeCause(e)}`, {
    cause: e,
  });
}

/**
 * Output piece size of the decoders. zlib's default (16 KiB) means one threadpool round trip per
 * 16 KiB of a layer: for a 164 MB base layer, 10,000 of them, and the extractor waiting on each.
 */
const DECODER_CHUNK = 256 * 1024;

function decoderFor(kind: DetectedCompression): Transform | undefined {
  switch (kind) {
    case "gzip":
      return zlib.createGunzip({ chunkSize: DECODER_CHUNK });
    case "zstd":
      return zlib.createZstdDecompress({ chunkSize: DECODER_CHUNK });
    case "none":
      return undefined;
    default:
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${kind} compressed layers are not supported: recompress the layer with gzip or zstd`,
      );
  }
}

/** A compressor for new layers. Level 6 gzip is Docker's default and a good size/speed balance. */
export function compressor(kind: Compression): Transform | undefined {
  if (kind === "gzip") return zlib.createGzip({ level: 6 });
  if (kind === "zstd") return zlib.createZstdCompress();
  return undefined;
}

/**
 * The host's `xz`, when it has one. It streams and runs beside us on the other core, where the
 * in-process binding decompresses a whole input in memory, about 1.7 times slower.
 */
export const HOST_XZ: string | undefined = ["/usr/bin/xz", "/bin/xz"].find((p) => existsSync(p));

/** Decompress an xz (or lzma) stream with the host's xz; the process ends with the iteration. */
export async function* hostXzStream(input: Readable): AsyncGenerator<Buffer> {
  if (!HOST_XZ) throw new SutureError("INVALID_ARCHIVE", "no xz program on this host");
  const child = spawn(HOST_XZ, ["--decompress", "--stdout", "--format=auto", "--quiet", "--threads=0"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  input.on("error", (e) => child.stdin.destroy(e));
  child.stdin.on("error", () => {}); // xz stopping early (corrupt input) closes its stdin: reported via its exit code
  input.pipe(child.stdin);
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    if (code !== 0) throw new Error(`xz: ${stderr.trim() || `exit ${code}`}`);
  } finally {
    input.destroy();
    if (child.exitCode === null) child.kill();
  }
}
