import { isDeepStrictEqual } from "node:util";
import type { ImageFileAccess } from "../../fs/in-root.ts";
import type { ProgressEvent, ProgressSink } from "../../progress/events.ts";

/** One answer the early work got: a file's bytes (undefined: none) or a directory's names. */
type Read =
  | { path: string; file: Uint8Array | undefined }
  | { path: string; names: string[] }
  | { path: string; failed: true };

/** Early work as the pipeline holds it: whose it is, and how to stop it. */
export interface StartedEarly {
  readonly owner: object;
  cancel(): Promise<void>;
}

/**
 * Work an engine starts from the image's files while the layers are still being extracted
 * (sandbox/early-view.ts), such as opening the repositories the image's apt configuration names.
 *
 * The early view may answer differently from the finished tree (see early-view.ts), so every
 * read is recorded; `take` replays them against the merged tree and hands the result over only
 * when all agree: the result is then what the same work on the finished tree would have given,
 * its failure included. Its progress events are held until then, so a discarded attempt says
 * nothing.
 */
export class EarlyWork<T> implements StartedEarly {
  /** The engine that started it; only that engine takes it. */
  readonly owner: object;
  readonly #reads: Read[] = [];
  readonly #events: ProgressEvent[] = [];
  readonly #abort = new AbortController();
  readonly #outcome: Promise<{ value: T | undefined } | { error: unknown }>;
  readonly #dispose?: (value: T) => void;
  #taken = false;

  constructor(
    owner: object,
    files: ImageFileAccess,
    signal: AbortSignal | undefined,
    run: (files: ImageFileAccess, progress: ProgressSink, signal: AbortSignal) => Promise<T | undefined>,
    /** Frees what a result holds (open files) when nobody takes it. */
    dispose?: (value: T) => void,
  ) {
    this.owner = owner;
    this.#dispose = dispose;
    // A read that failed is recorded too: the early view's own trouble (a layer dir renamed as
    // it was read) must discard the attempt, not come back as the work's error.
    const record = async <R>(path: string, read: () => Promise<R>, as: (r: R) => Read): Promise<R> => {
      try {
        const r = await read();
        this.#reads.push(as(r));
        return r;
      } catch (e) {
        this.#reads.push({ path, failed: true });
        throw e;
      }
    };
    const recorded: ImageFileAccess = {
      readFile: (path) =>
        record(
          path,
          () => files.readFile(path),
          (file) => ({ path, file }),
        ),
      listDir: (path) =>
        record(
          path,
          () => files.listDir(path),
          (names) => ({ path, names }),
        ),
    };
    const both = signal ? AbortSignal.any([signal, this.#abort.signal]) : this.#abort.signal;
    this.#outcome = run(recorded, (e) => this.#events.push(e), both).then(
      (value) => ({ value }),
      (error) => ({ error }),
    );
  }

  /**
   * The result, when every read gives the same answer in `files` (the finished tree) and the work
   * got that far; its error is thrown then. Undefined when it did not apply (taken before, stopped,
   * decided the image is not its kind, or read something the finished tree has otherwise), and
   * the caller does the work itself.
   */
  async take(files: ImageFileAccess, progress: ProgressSink): Promise<{ value: T } | undefined> {
    if (this.#taken || this.#abort.signal.aborted) return undefined;
    this.#taken = true;
    const outcome = await this.#outcome;
    for (const read of this.#reads) {
      const same =
        "file" in read
          ? isDeepStrictEqual(asComparable(await files.readFile(read.path)), asComparable(read.file))
          : "names" in read && isDeepStrictEqual(await files.listDir(read.path), read.names);
      if (!same) {
        this.#disposeOf(outcome);
        progress({
          type: "info",
          message: `${read.path} changed after the early read (a later layer, or an archive not in tar order): read again from the finished tree`,
        });
        return undefined;
      }
    }
    for (const e of this.#events) progress(e);
    if ("error" in outcome) {
      // Stopped from outside (the user's cancel) is not the work's own answer.
      if (this.#abort.signal.aborted) return undefined;
      throw outcome.error;
    }
    return outcome.value === undefined ? undefined : { value: outcome.value };
  }

  /** Stop it, if it still runs, and wait until it has; a result nobody took is disposed of. */
  async cancel(): Promise<void> {
    const untaken = !this.#taken && !this.#abort.signal.aborted;
    this.#abort.abort();
    const outcome = await this.#outcome;
    if (untaken) this.#disposeOf(outcome);
  }

  #disposeOf(outcome: { value: T | undefined } | { error: unknown }): void {
    if ("value" in outcome && outcome.value !== undefined) this.#dispose?.(outcome.value);
  }
}

function asComparable(v: Uint8Array | undefined) {
  return v && Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}
