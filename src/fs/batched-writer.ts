import type { FileHandle } from "node:fs/promises";
import { SutureError } from "../errors/errors.ts";

/** Bytes gathered before one write: about 16 of an xz pipe's pieces (its reads give at most 64 KiB). */
const WRITE_BATCH = 1024 * 1024;

/**
 * A file written from a stream of pieces in batches (one writev each, no copy), one batch in flight
 * while the next is gathered. A write per piece, awaited before the piece was passed on, was a
 * threadpool round trip per 64 KiB that held the producer meanwhile: ~800 for Debian's main index
 * (queued behind the layers' inflate while they are extracted), and one per piece of every package
 * written to the decoded-data cache while it was unpacked. Pieces are kept until written: the
 * caller must not change them afterwards (decoders hand out fresh buffers).
 *
 * Writes go to the file's current position, so a caller may fill a placeholder first and rewrite
 * it with `rewriteAt` once `end` has returned.
 */
export class BatchedWriter {
  readonly #file: FileHandle;
  readonly #path: string;
  #batch: Buffer[] = [];
  #batched = 0;
  #writing: Promise<void> | undefined;

  constructor(file: FileHandle, path: string) {
    this.#file = file;
    this.#path = path;
  }

  /** Takes `piece`; waits only when the previous batch is still being written (and rejects if it failed). */
  async add(piece: Buffer): Promise<void> {
    this.#batch.push(piece);
    this.#batched += piece.length;
    if (this.#batched >= WRITE_BATCH) await this.#flush();
  }

  /** Writes what is gathered and waits until every byte is written. */
  async end(): Promise<void> {
    await this.#flush();
    await this.#writing;
  }

  /** Overwrites `bytes` at `position`, after every batch is written (a header filled in last). */
  async rewriteAt(bytes: Buffer, position: number): Promise<void> {
    await this.end();
    const { bytesWritten } = await this.#file.write(bytes, 0, bytes.length, position);
    if (bytesWritten !== bytes.length)
      throw new SutureError("IO", `short write to ${this.#path} (${bytesWritten} of ${bytes.length} bytes)`);
  }

  /** Closes the file once no write is in flight (an error of one was reported by add or end, or is moot). */
  async close(): Promise<void> {
    await this.#writing?.catch(() => undefined);
    await this.#file.close();
  }

  async #flush(): Promise<void> {
    await this.#writing;
    if (this.#batched === 0) return;
    const batch = this.#batch;
    const length = this.#batched;
    this.#batch = [];
    this.#batched = 0;
    const writing = this.#file.writev(batch).then(({ bytesWritten }) => {
      if (bytesWritten !== length)
        throw new SutureError("IO", `short write to ${this.#path} (${bytesWritten} of ${length} bytes)`);
    });
    // Observed at once: it is awaited by the next add, end or close, maybe ticks later.
    writing.catch(() => undefined);
    this.#writing = writing;
  }
}
