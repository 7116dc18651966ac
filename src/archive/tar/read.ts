import { SutureError } from "../../errors/errors.ts";
import type { TarEntry } from "./entry.ts";
import { BLOCK, paddedSize, TarHeaderDecoder } from "./header.ts";

/** One member as the streaming reader yields it. */
export interface TarMember {
  header: TarEntry;
  /**
   * The member's data (empty for everything but files). Consume it before asking for the next
   * member; whatever is left unread is skipped.
   */
  body: AsyncIterable<Buffer>;
}

/** Chunks of a byte stream: a Readable, an async generator, or an array of buffers. */
export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/** The errors a ByteReader raises when its input ends early, in its archive format's terms. */
export interface TruncationErrors {
  /** Input ended inside a fixed-size record (a header). */
  record(): SutureError;
  /** Input ended inside a member's data. */
  data(): SutureError;
}

const TAR_TRUNCATION: TruncationErrors = {
  record: () => new SutureError("INVALID_ARCHIVE", "tar archive is truncated: the layer blob is incomplete"),
  data: () => new SutureError("INVALID_ARCHIVE", "tar archive is truncated inside a file's data"),
};

const EMPTY = Buffer.alloc(0);

/**
 * Pulls exact byte counts out of a chunk source: the one buffered reader of the streaming archive
 * readers (tar here, rpm's cpio payloads in distro/rpm/cpio.ts).
 */
export class ByteReader {
  readonly #it: AsyncIterator<Uint8Array>;
  readonly #truncated: TruncationErrors;
  #buf: Buffer = EMPTY;
  #done = false;

  constructor(source: ByteSource, truncated: TruncationErrors = TAR_TRUNCATION) {
    this.#truncated = truncated;
    this.#it =
      Symbol.asyncIterator in source
        ? source[Symbol.asyncIterator]()
        : (async function* () {
            yield* source;
          })();
  }

  /** The source's next chunk, or null at its end. */
  async #next(): Promise<Buffer | null> {
    if (this.#done) return null;
    const n = await this.#it.next();
    if (n.done) {
      this.#done = true;
      return null;
    }
    return Buffer.isBuffer(n.value) ? n.value : Buffer.from(n.value);
  }

  /**
   * Exactly `n` bytes, or null at a clean end of input; a short read is a truncated archive.
   * Bytes that straddle chunks are copied, only `n` of them: appending each new 256 KiB chunk to
   * the few bytes left of the last one copied whole chunks, once per header that crossed a
   * chunk boundary.
   */
  async read(n: number): Promise<Buffer | null> {
    if (this.#buf.length >= n) {
      const out = this.#buf.subarray(0, n);
      this.#buf = this.#buf.subarray(n);
      return out;
    }
    const pieces: Buffer[] = this.#buf.length ? [this.#buf] : [];
    let have = this.#buf.length;
    this.#buf = EMPTY;
    while (have < n) {
      const chunk = await this.#next();
      if (chunk === null) {
        if (have === 0) return null;
        throw this.#truncated.record();
      }
      pieces.push(chunk);
      have += chunk.length;
    }
    const last = pieces.pop()!;
    const fromLast = n - (have - last.length);
    if (pieces.length === 0) {
      this.#buf = last.subarray(fromLast);
      return last.subarray(0, fromLast);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const p of pieces) off += p.copy(out, off);
    last.copy(out, off, 0, fromLast);
    this.#buf = last.subarray(fromLast);
    return out;
  }

  /** Stream `n` bytes in whatever chunks arrive (the decoders' 256 KiB pieces pass through whole). */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.#buf.length === 0) await this.#refillForData();
      const take = Math.min(left, this.#buf.length);
      const out = this.#buf.subarray(0, take);
      this.#buf = this.#buf.subarray(take);
      left -= take;
      yield out;
    }
  }

  /** Pass over `n` bytes without handing them to anyone (no generator step per chunk). */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.#buf.length === 0) await this.#refillForData();
      const take = Math.min(left, this.#buf.length);
      this.#buf = this.#buf.subarray(take);
      left -= take;
    }
  }

  /** The next chunk into the empty buffer; a member's data cut short by the input's end is an error. */
  async #refillForData(): Promise<void> {
    const chunk = await this.#next();
    if (chunk === null) throw this.#truncated.data();
    this.#buf = chunk;
  }

  /**
   * Stop the source where it is. A reader left early must end its input's iteration: a decoder
   * behind it (the host's xz, a file stream) otherwise stays open, holding the process.
   */
  async close(): Promise<void> {
    this.#buf = EMPTY;
    if (this.#done) return;
    this.#done = true;
    await this.#it.return?.();
  }

  /** Read and discard everything left, so upstream digests cover the whole stream. */
  async drain(): Promise<void> {
    this.#buf = EMPTY;
    while ((await this.#next()) !== null) {
      // discard
    }
  }
}

/**
 * Read a tar stream (ustar, PAX, GNU long names, base-256 numbers; header.ts decodes) member by
 * member. Checksums are verified; after the end-of-archive marker the rest of the input is read
 * and discarded, so a digest computed upstream covers every byte.
 */
export async function* readTar(source: ByteSource): AsyncGenerator<TarMember> {
  const reader = new ByteReader(source);
  const decoder = new TarHeaderDecoder();
  try {
    yield* readMembers(reader, decoder);
  } finally {
    await reader.close(); // a consumer that stopped early (or an error) ends the input too
  }
}

async function* readMembers(reader: ByteReader, decoder: TarHeaderDecoder): AsyncGenerator<TarMember> {
  for (;;) {
    const block = await reader.read(BLOCK);
    if (block === null) return; // no end-of-archive blocks: tolerated, as GNU tar does
    const step = decoder.decode(block);
    if (step.kind === "end") {
      await reader.drain();
      return;
    }
    if (step.kind === "extension") {
      const data = step.size > 0 ? await reader.read(paddedSize(step.size)) : Buffer.alloc(0);
      if (data === null)
        throw new SutureError("INVALID_ARCHIVE", "tar archive is truncated inside a metadata record");
      decoder.extension(data.subarray(0, step.size));
      continue;
    }
    if (step.kind === "skip") {
      await reader.skip(paddedSize(step.size));
      continue;
    }
    const header = step.entry;
    let delivered = 0;
    const body = (async function* () {
      for await (const chunk of reader.chunks(header.size)) {
        delivered += chunk.length;
        yield chunk;
      }
    })();
    yield { header, body };
    await body.return(undefined); // the consumer may have stopped early, or never started
    await reader.skip(paddedSize(header.size) - delivered);
  }
}
