/**
 * Pull a byte source ahead of its consumer, up to `limit` buffered bytes, so the work behind it
 * (a decompressor in another thread or process) overlaps with whatever the consumer does first.
 *
 * Errors from the source reach the consumer at the point it would have read them. `close()` stops
 * a read-ahead nobody will consume (the source is returned, so a child process ends).
 */
export class ReadAhead {
  readonly #source: AsyncIterator<Buffer>;
  readonly #limit: number;
  readonly #queue: Buffer[] = [];
  #buffered = 0;
  #done = false;
  #error: unknown;
  #closed = false;
  /** Wakes the consumer (data or end arrived) or the pump (room freed, or closed). */
  #wake: (() => void) | undefined;

  constructor(source: AsyncIterable<Buffer>, limit: number) {
    this.#source = source[Symbol.asyncIterator]();
    this.#limit = limit;
    void this.#pump();
  }

  async #pump(): Promise<void> {
    try {
      while (!this.#closed) {
        if (this.#buffered >= this.#limit) {
          await new Promise<void>((r) => {
            this.#wake = r;
          });
          continue;
        }
        const n = await this.#source.next();
        if (n.done) break;
        this.#queue.push(n.value);
        this.#buffered += n.value.length;
        this.#notify();
      }
    } catch (e) {
      this.#error = e;
    }
    this.#done = true;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const chunk = this.#queue.shift();
        if (chunk) {
          this.#buffered -= chunk.length;
          this.#notify();
          yield chunk;
          continue;
        }
        if (this.#done) {
          if (this.#error !== undefined) throw this.#error;
          return;
        }
        await new Promise<void>((r) => {
          this.#wake = r;
        });
      }
    } finally {
      await this.close();
    }
  }

  /** Stop reading ahead and release the source; buffered bytes are dropped. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.length = 0;
    this.#notify();
    if (!this.#done) await this.#source.return?.(undefined).catch(() => {});
  }
}
