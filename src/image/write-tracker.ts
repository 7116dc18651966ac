import type { Readable } from "node:stream";
import { SutureError } from "../errors/errors.ts";

/**
 * Tracks a sink's writes in flight so `abort` can stop them and wait until none can still create
 * files: copy runs several writes at once and aborts on the first failure while others are running.
 */
export class WriteTracker {
  readonly #active = new Set<{ done: Promise<unknown>; streams: Readable[] }>();
  #closed = false;

  get closed(): boolean {
    return this.#closed;
  }

  /** Run one write; `track` registers a stream to destroy if the sink is aborted meanwhile. */
  async run<T>(what: string, fn: (track: (s: Readable) => Readable) => Promise<T>): Promise<T> {
    if (this.#closed) throw new SutureError("CANCELLED", `${what}: the write was aborted`);
    const entry = { done: Promise.resolve() as Promise<unknown>, streams: [] as Readable[] };
    const track = (s: Readable) => {
      if (this.#closed) s.destroy(new SutureError("CANCELLED", `${what}: the write was aborted`));
      entry.streams.push(s);
      return s;
    };
    const done = fn(track);
    entry.done = done;
    this.#active.add(entry);
    try {
      return await done;
    } finally {
      this.#active.delete(entry);
    }
  }

  /** Refuse new writes, stop running ones, and wait until every one has settled. */
  async close(): Promise<void> {
    this.#closed = true;
    const active = [...this.#active];
    for (const a of active) {
      for (const s of a.streams) s.destroy(new SutureError("CANCELLED", "the write was aborted"));
    }
    await Promise.allSettled(active.map((a) => a.done));
  }
}
