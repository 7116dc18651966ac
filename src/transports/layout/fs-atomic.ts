import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { asSutureError, SutureError } from "../../errors/errors.ts";

/** A fresh name beside `path` (same directory, so a rename onto `path` is atomic). */
export function tempPathBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
}

/**
 * Write `data` to `path` so that readers see either the old file or the whole new one: write a
 * temporary file beside it, flush it to disk, then rename it over `path`.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = tempPathBeside(path);
  try {
    const handle = await open(tmp, "wx", 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw asSutureError(e, "IO", `cannot write ${path}`);
  }
}

/**
 * Stream `input` (through optional transforms) into `tmp`, flushed to disk. The caller renames it
 * into place once it has checked what was written; on failure `tmp` is removed and the error
 * (e.g. a DIGEST_MISMATCH from a verifying transform) is rethrown.
 */
export async function streamToFile(input: Readable, transforms: Transform[], tmp: string): Promise<void> {
  try {
    const out = createWriteStream(tmp, { flags: "wx", mode: 0o644 });
    await pipeline([input, ...transforms, out]);
    const handle = await open(tmp, "r+");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (e) {
    input.destroy();
    await rm(tmp, { force: true }).catch(() => {});
    throw asSutureError(e, "IO", `cannot write ${tmp}`);
  }
}

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
