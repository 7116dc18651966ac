import { randomBytes } from "node:crypto";
import { lstat, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { isSutureError, SutureError } from "../errors/errors.ts";
import { placeFile } from "../fs/atomic.ts";
import type { ProgressSink } from "../progress/events.ts";
import { transferAll } from "./fetch.ts";

/**
 * How one kind of package file enters a verified store: the native engines' .deb, .apk and .rpm
 * stores differ only in how a file is named, fetched and proven, so those are the parameters.
 */
export interface PackageStoreKind<I, T> {
  /** The file's name in the store: a content address from signed metadata (one build, one name). */
  storeName(item: I): string;
  /** For progress events: the digest the metadata lists and the size (undefined when unlisted). */
  digest(item: I): string;
  size(item: I): number | undefined;
  /**
   * Download the item into `tmp`, checking what can be checked as it streams; `onBytes` is
   * called with the bytes received so far.
   */
  download(item: I, tmp: string, signal: AbortSignal, onBytes: (bytes: number) => void): Promise<void>;
  /**
   * Prove the file at `path` is the item's (throws, UNTRUSTED, when it is not). `fresh`: it was
   * just downloaded through `download`, whose streaming checks need not be repeated.
   */
  prove(path: string, item: I, fresh: boolean): Promise<void>;
  /** What the caller gets for the proven file at its place in the store. */
  open(path: string, item: I): Promise<T>;
}

export interface PackageStoreOptions {
  /** Verified files live here, named by `storeName`. */
  storeDir: string;
  /** Temporaries (same filesystem as `storeDir`, so a proven file is renamed into place). */
  tmpDir: string;
  concurrency: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

/**
 * Fetch each item into the store (in parallel) and open it. A file already there is used only
 * once it proves again to be the item's (the store is shared by every run and never trusted by
 * itself); one that does not is removed and fetched again, and the fresh copy decides. A download
 * goes to a temporary, is proven, and only then renamed into the store, so nothing unproven is
 * ever there. Emits `blob` progress (`exists` for stored files, `download` every 256 KiB). The
 * first failure stops the other transfers and is thrown (CANCELLED when `signal` aborted).
 * Results are in the order of `items`.
 */
export async function fetchIntoStore<I, T>(
  items: readonly I[],
  kind: PackageStoreKind<I, T>,
  options: PackageStoreOptions,
): Promise<T[]> {
  if (options.signal?.aborted) throw new SutureError("CANCELLED", "package download cancelled");
  await mkdir(options.storeDir, { recursive: true });
  await mkdir(options.tmpDir, { recursive: true });
  const one = async (item: I, signal: AbortSignal): Promise<T> => {
    const name = kind.storeName(item);
    const final = join(options.storeDir, name);
    const digest = kind.digest(item);
    const total = kind.size(item) ?? 0;
    if (await provenStored(final, item, kind)) {
      options.progress?.({ type: "blob", action: "exists", digest, bytes: total, total });
      return kind.open(final, item);
    }
    const tmp = join(options.tmpDir, `${randomBytes(8).toString("hex")}-${name}`);
    try {
      let lastReport = 0;
      await kind.download(item, tmp, signal, (bytes) => {
        // Throttled: the first chunk, then one event per 256 KiB, then the end.
        if (lastReport === 0 || bytes - lastReport >= 256 * 1024 || bytes === total) {
          lastReport = bytes;
          options.progress?.({ type: "blob", action: "download", digest, bytes, total });
        }
      });
      await kind.prove(tmp, item, true);
      await placeFile(tmp, final);
      return await kind.open(final, item);
    } finally {
      await rm(tmp, { force: true });
    }
  };
  return transferAll(items, one, {
    concurrency: options.concurrency,
    signal: options.signal,
    cancelled: "package download cancelled",
  });
}

/** Whether the stored file is there and proves to be the item's; a file that does not is removed. */
async function provenStored<I, T>(path: string, item: I, kind: PackageStoreKind<I, T>): Promise<boolean> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch {
    return false;
  }
  const size = kind.size(item);
  if (st.isFile() && (size === undefined || st.size === size)) {
    try {
      await kind.prove(path, item, false);
      return true;
    } catch (e) {
      // Damaged on disk, or a key the image no longer trusts: fetched again, and the fresh copy
      // decides. Anything but a refusal (a bug) is not hidden.
      if (!isSutureError(e)) throw e;
    }
  }
  await rm(path, { force: true, recursive: st.isDirectory() });
  return false;
}
