import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { PassThrough, Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { lzma, xz } from "@napi-rs/lzma";
import { describeCause, formatBytes, SutureError } from "../errors/errors.ts";
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

/** A streaming gzip or zstd decoder (the one the layer reader and `decompress` use). */
export function decompressor(kind: Exclude<Compression, "none">): Transform {
  return decoderFor(kind)!;
}

/**
 * A compressor for new layers, as the stages to pipe through (none for uncompressed). Level 6
 * gzip is Docker's default and a good size/speed balance. Its header is the same wherever suture
 * runs (mtime 0, OS Unix: zlib would write the OS it was built for), so the same tar gives the
 * same blob on Linux, macOS or Windows.
 */
export function compressor(kind: Compression): Transform[] {
  if (kind === "gzip") return [new BlockGzip()];
  // 256 KiB pieces out, as the decoders: zlib's 16 KiB default is a threadpool round trip each.
  if (kind === "zstd") return [zlib.createZstdCompress({ chunkSize: DECODER_CHUNK })];
  return [];
}

/** Uncompressed bytes per block of BlockGzip, and how many are compressed at once. */
export const GZIP_BLOCK = 1024 * 1024;
const GZIP_BLOCKS_AT_ONCE = 4;
/** Deflate's window: what a block may refer back to. */
const DEFLATE_WINDOW = 32 * 1024;

const deflateRaw = (input: Buffer, options: zlib.ZlibOptions) =>
  new Promise<Buffer>((resolve, reject) =>
    zlib.deflateRaw(input, options, (error, out) => (error ? reject(error) : resolve(out))),
  );

/**
 * gzip (level 6) whose blocks are compressed at once on the threadpool, pigz's layout: the input
 * in GZIP_BLOCK pieces, each deflated on its own with the 32 KiB before it as preset dictionary
 * and ended by a sync flush (an empty stored block, so the next starts on a byte), the last one
 * with deflate's final block; one gzip header (mtime 0, OS Unix)
 * and the CRC-32 and size of the whole. One gzip member any reader takes; the same input gives the
 * same bytes on every run and host with the same zlib. A single zlib stream kept one core busy
 * while the other idled: 2.1 s for the python lab image's 50 MB patch layer, 1.3 s this way on two
 * cores (load 2), 0.02% smaller (compression.test.ts holds it to zlib's reading).
 */
export class BlockGzip extends Transform {
  #pieces: Buffer[] = [];
  #pieceBytes = 0;
  /** The last DEFLATE_WINDOW bytes before the next block: its dictionary. */
  #window: Buffer = Buffer.alloc(0);
  #compressing: Promise<Buffer>[] = [];
  #crc = 0;
  #size = 0;
  #started = false;
  #finalStarted = false;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.#header();
    this.#crc = zlib.crc32(chunk, this.#crc);
    this.#size += chunk.length;
    this.#pieces.push(chunk);
    this.#pieceBytes += chunk.length;
    this.#drain(false).then(() => done(), done);
  }

  override _flush(done: (error?: Error | null) => void): void {
    this.#header();
    this.#drain(true).then(() => {
      const trailer = Buffer.alloc(8);
      trailer.writeUInt32LE(this.#crc >>> 0, 0);
      trailer.writeUInt32LE(this.#size % 2 ** 32, 4);
      this.push(trailer);
      done();
    }, done);
  }

  /** The gzip header, once, before anything else: deflate, no flags, mtime 0, OS Unix. */
  #header(): void {
    if (this.#started) return;
    this.#started = true;
    this.push(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]));
  }

  /** Start every whole block (and at the end the rest), passing on finished ones in order. */
  async #drain(end: boolean): Promise<void> {
    while (this.#pieceBytes >= GZIP_BLOCK || (end && this.#pieces.length > 0)) {
      const all = this.#pieces.length === 1 ? this.#pieces[0]! : Buffer.concat(this.#pieces);
      // A copy: the block is read on the threadpool after this piece has been handed back.
      const block = Buffer.from(all.subarray(0, Math.min(GZIP_BLOCK, all.length)));
      const rest = all.subarray(block.length);
      this.#pieces = rest.length ? [rest] : [];
      this.#pieceBytes = rest.length;
      this.#startBlock(block, end && rest.length === 0);
      if (this.#compressing.length >= GZIP_BLOCKS_AT_ONCE) this.push(await this.#compressing.shift()!);
    }
    if (end) {
      // Input that ended on a block boundary (or was empty) still needs deflate's final block.
      if (!this.#finalStarted) this.#startBlock(Buffer.alloc(0), true);
      while (this.#compressing.length) this.push(await this.#compressing.shift()!);
    }
  }

  #startBlock(block: Buffer, last: boolean): void {
    this.#finalStarted = last;
    const dictionary = this.#window.length ? this.#window : undefined;
    this.#compressing.push(
      deflateRaw(block, {
        level: 6,
        // The whole output in one buffer: with zlib's 16 KiB default, each block came back to the
        // main thread some 25 times (a threadpool round trip each, waiting on whatever the main
        // thread was doing) before it was done. The output no longer depends on where a buffer
        // ends: zlib adds an empty stored block when a sync flush finds 6 bytes or fewer of output
        // space, which the 16 KiB buffers could hit now and then and this bound never does.
        chunkSize: block.length + (block.length >>> 8) + 1024,
        ...(dictionary ? { dictionary } : {}),
        finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
      }),
    );
    // The next block's dictionary: the last DEFLATE_WINDOW bytes so far.
    this.#window =
      block.length >= DEFLATE_WINDOW
        ? block.subarray(block.length - DEFLATE_WINDOW)
        : Buffer.concat([this.#window, block]).subarray(-DEFLATE_WINDOW);
  }
}

/** The formats `decompress` and `decompressAll` read, named by what the file or member says it is. */
export type DecodeFormat = "gzip" | "zstd" | "xz" | "lzma" | "lz4" | "bzip2" | "none";

export interface DecodeOptions {
  /** What is decompressed, for messages (`index main/binary-amd64/Packages.xz`, `…'s data.tar.xz member`). */
  what: string;
  /** Most decompressed bytes accepted; more is TOO_LARGE. */
  maxBytes?: number;
  /** The remedy a TOO_LARGE message ends with. */
  fix?: string;
  signal?: AbortSignal;
  /** false: the in-process decoders even when the host has xz (tests hold the two to the same results). */
  hostTools?: boolean;
  /** The compressed input's size, when known: small xz inputs are decoded in process (SMALL_XZ_INPUT). */
  inputSize?: number;
}

/**
 * The host's `xz`, when it has one. It streams and runs beside us on the other core, where the
 * in-process binding decompresses a whole input in memory, about 1.7 times slower.
 */
export const HOST_XZ: string | undefined = ["/usr/bin/xz", "/bin/xz"].find((p) => existsSync(p));
/** The host's `lz4` (apt stores its lists lz4-compressed with Acquire::GzipIndexes and lz4 compression). */
const HOST_LZ4: string | undefined = ["/usr/bin/lz4", "/bin/lz4"].find((p) => existsSync(p));
/** The host's `bzip2`: old rpm repositories and packages (before xz and zstd) are bzip2-compressed. */
const HOST_BZIP2: string | undefined = ["/usr/bin/bzip2", "/bin/bzip2"].find((p) => existsSync(p));

/**
 * xz inputs smaller than this are decoded in process even when the host has xz: starting a process
 * from a Node process of a few hundred MB costs tens of ms of the main thread (libuv forks it),
 * measured 1.6 s for the 20 control and data archives of a 10-package patch, while the binding
 * decodes such an input in a few ms on the threadpool. Kept small because the binding decodes the
 * whole input before any limit is checked: LZMA2 expands at most about 7,000 times, so at most a
 * few hundred MB for an input this size, and only from a package whose digest a signed index vouched for.
 */
export const SMALL_XZ_INPUT = 64 * 1024;

/** Whether the in-process binding is here: the Action's bundle leaves it out (src/action/native/lzma.ts). */
const IN_PROCESS_XZ = !("unavailable" in xz);

/**
 * Without a host xz, xz and lzma inputs are decompressed in memory by the binding (it has no
 * streaming API): inputs larger than this are refused rather than read whole.
 */
export const MAX_IN_MEMORY_XZ_INPUT = 2 * 1024 * 1024 * 1024;

/**
 * Decompress `input` of a known format as a stream of pieces: gzip and zstd with zlib, xz and lzma
 * with the host's xz when there is one (else the in-process binding, whole input in memory), lz4
 * with the host's lz4. A malformed stream is INVALID_ARCHIVE, more than `maxBytes` out is
 * TOO_LARGE; either names `what`. The input is destroyed when the iteration ends.
 */
export async function* decompress(
  input: Readable | Uint8Array,
  format: DecodeFormat,
  options: DecodeOptions,
): AsyncGenerator<Buffer> {
  const max = options.maxBytes ?? Number.POSITIVE_INFINITY;
  let total = 0;
  const stream = input instanceof Uint8Array ? undefined : input;
  try {
    for await (const piece of decodedPieces(input, format, options)) {
      total += piece.length;
      if (total > max) {
        throw new SutureError(
          "TOO_LARGE",
          `${options.what} decompresses to more than ${formatBytes(max)} (${max} bytes), the most accepted: ${options.fix ?? "it is corrupt or a decompression bomb"}`,
        );
      }
      yield piece;
    }
  } catch (e) {
    if (e instanceof SutureError) throw e;
    if (options.signal?.aborted) throw options.signal.reason;
    throw new SutureError("INVALID_ARCHIVE", `cannot decompress ${options.what}: ${describeCause(e)}`, {
      cause: e,
    });
  } finally {
    stream?.destroy();
  }
}

/** `decompress` into one buffer (same decoders, same limits and errors). */
export async function decompressAll(
  input: Readable | Uint8Array,
  format: DecodeFormat,
  options: DecodeOptions,
): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const piece of decompress(input, format, options)) pieces.push(piece);
  return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
}

async function* decodedPieces(
  input: Readable | Uint8Array,
  format: DecodeFormat,
  options: DecodeOptions,
): AsyncGenerator<Buffer> {
  const asStream = () => (input instanceof Uint8Array ? Readable.from([Buffer.from(input)]) : input);
  switch (format) {
    case "none":
      if (input instanceof Uint8Array) yield Buffer.from(input);
      else for await (const piece of input) yield piece as Buffer;
      return;
    case "gzip":
    case "zstd": {
      const source = asStream();
      const decoder = decoderFor(format)!;
      // pipe() does not forward the input's errors (a digest mismatch at EOF): pass them on.
      source.on("error", (e) => decoder.destroy(e));
      yield* source.pipe(decoder) as AsyncIterable<Buffer>;
      return;
    }
    case "lz4":
      if (!HOST_LZ4) throw new Error("no lz4 program on this host");
      yield* hostDecoderStream(HOST_LZ4, ["-dc"], asStream());
      return;
    case "bzip2":
      if (!HOST_BZIP2) throw new Error("no bzip2 program on this host");
      yield* hostDecoderStream(HOST_BZIP2, ["-dc"], asStream());
      return;
    case "xz":
    case "lzma":
      if (
        HOST_XZ &&
        options.hostTools !== false &&
        !(IN_PROCESS_XZ && options.inputSize !== undefined && options.inputSize < SMALL_XZ_INPUT)
      ) {
        yield* hostDecoderStream(
          HOST_XZ,
          ["--decompress", "--stdout", "--format=auto", "--quiet", "--threads=0"],
          asStream(),
        );
        return;
      }
      yield await (format === "xz" ? xz : lzma).decompress(
        input instanceof Uint8Array ? input : await readWhole(input, options.what),
        options.signal,
      );
  }
}

async function readWhole(input: Readable, what: string): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let total = 0;
  for await (const piece of input) {
    total += (piece as Buffer).length;
    if (total > MAX_IN_MEMORY_XZ_INPUT)
      throw new SutureError(
        "TOO_LARGE",
        `${what} is larger than the ${formatBytes(MAX_IN_MEMORY_XZ_INPUT)} decompressed in memory without a host xz: install xz-utils`,
      );
    pieces.push(piece as Buffer);
  }
  return Buffer.concat(pieces);
}

/** Decompress with a host program reading stdin and writing stdout; the process ends with the iteration. */
async function* hostDecoderStream(program: string, args: string[], input: Readable): AsyncGenerator<Buffer> {
  const child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve(code));
  });
  exited.catch(() => {}); // awaited below; a spawn failure also ends stdout
  let inputError: unknown;
  input.on("error", (e) => {
    inputError = e;
    child.stdin.destroy(e);
  });
  child.stdin.on("error", () => {}); // the decoder stopping early (corrupt input) closes its stdin: reported via its exit code
  input.pipe(child.stdin);
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    // The input's own failure (a digest mismatch, a read error) is the cause, not the decoder's exit.
    if (inputError !== undefined) throw inputError;
    if (code !== 0) throw new Error(`${basename(program)}: ${stderr.trim() || `exit ${code}`}`);
  } finally {
    input.destroy();
    if (child.exitCode === null) child.kill();
  }
}
