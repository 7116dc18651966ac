import { createHash } from "node:crypto";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { SutureError } from "../../errors/errors.ts";
import { tempPathBeside } from "../../fs/atomic.ts";
import { BatchedWriter } from "../../fs/batched-writer.ts";

/**
 * Decompressed data archives of .debs, kept by the .deb's SHA-256, so a second patch of the same
 * base (its patch layer rebuilt) unpacks the same packages without running xz again: decoding
 * was most of the unpack's time (one host xz process per package, each a fork of a Node process
 * of a few hundred MB), and reading a verified plain tar costs a hash pass over it.
 *
 * An entry is one file, `<deb sha256>.tar`: a fixed-size header naming the SHA-256 and size of the
 * tar that follows it, then the tar. It is written beside its place and renamed in only once the
 * decoder reached the end of the member, so a reader sees a whole entry or none. Before an entry
 * is used its tar is hashed again; one that does not match its header (a crash before the data
 * reached the disk, a damaged disk, another program's edit) is removed and the member decoded
 * from the .deb again, which writes a fresh entry. Keyed by the .deb's content, an entry never
 * goes stale: the same package file always decodes to the same bytes.
 */
export interface DebDataCache {
  /** Where entries live (created on first write). */
  dir: string;
  /**
   * The SHA-256 of the .deb being opened, as its signed index lists it and the package store
   * proved it this run: the entry's name, so only that package's bytes are ever read back for it.
   */
  debSha256: string;
  /** Told when an entry was there but did not prove, and is being rebuilt. */
  onDamaged?: (path: string, why: string) => void;
}

const MAGIC = "suture-deb-data 1";
/** Header: `MAGIC <sha256 hex> <size>`, padded with spaces, ending in a newline. */
const HEADER_BYTES = 128;
const PIECE_BYTES = 1024 * 1024;

/** The entry's path for a .deb (INVALID_ARGUMENT unless `debSha256` is a SHA-256 in hex). */
export function debDataEntryPath(cache: Pick<DebDataCache, "dir" | "debSha256">): string {
  if (!/^[0-9a-f]{64}$/.test(cache.debSha256))
    throw new SutureError(
      "INTERNAL",
      `${JSON.stringify(cache.debSha256)} is not a SHA-256 in hex: the decoded-package cache is keyed by the .deb's verified digest`,
    );
  return join(cache.dir, `${cache.debSha256}.tar`);
}

/**
 * The member's decompressed bytes: from a proven cache entry when there is one, else from
 * `decode()`, whose pieces are written to a new entry as they pass (placed when `decode` ends
 * normally; a consumer that stops early leaves no entry).
 */
export async function* cachedDataPieces(
  cache: DebDataCache,
  decode: () => AsyncGenerator<Buffer>,
): AsyncGenerator<Buffer> {
  const path = debDataEntryPath(cache);
  const proven = await provenEntry(path, cache);
  if (proven) {
    yield* readEntry(path, proven.size);
    return;
  }
  yield* decodeIntoEntry(path, cache.dir, decode());
}

/** The entry's tar size when the entry is there and its tar hashes to what its header says. */
async function provenEntry(path: string, cache: DebDataCache): Promise<{ size: number } | undefined> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "r");
  } catch {
    return undefined;
  }
  let why: string | undefined;
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(header, 0, HEADER_BYTES, 0);
    const m = /^suture-deb-data 1 ([0-9a-f]{64}) (\d{1,15}) *\n$/.exec(
      header.toString("latin1", 0, bytesRead),
    );
    const size = Number(m?.[2]);
    const { size: fileSize } = await handle.stat();
    if (bytesRead !== HEADER_BYTES || !m) why = "its header is not a decoded-package header";
    else if (fileSize !== HEADER_BYTES + size) why = `it holds ${fileSize - HEADER_BYTES} bytes, not ${size}`;
    else {
      const hash = createHash("sha256");
      const buf = Buffer.allocUnsafe(PIECE_BYTES);
      for (let at = HEADER_BYTES; at < fileSize; ) {
        const n = (await handle.read(buf, 0, Math.min(PIECE_BYTES, fileSize - at), at)).bytesRead;
        if (n === 0) break;
        hash.update(buf.subarray(0, n));
        at += n;
      }
      if (hash.digest("hex") !== m[1]) why = "its content does not hash to the SHA-256 its header names";
      else return { size };
    }
  } catch (e) {
    why = `it cannot be read (${(e as Error).message})`;
  } finally {
    await handle.close();
  }
  cache.onDamaged?.(path, why);
  await rm(path, { force: true });
  return undefined;
}

async function* readEntry(path: string, size: number): AsyncGenerator<Buffer> {
  const handle = await open(path, "r");
  try {
    for (let at = HEADER_BYTES; at < HEADER_BYTES + size; ) {
      // A fresh buffer per piece: the consumer may hold on to it (a read-ahead queue).
      const buf = Buffer.allocUnsafe(Math.min(PIECE_BYTES, HEADER_BYTES + size - at));
      const n = (await handle.read(buf, 0, buf.length, at)).bytesRead;
      if (n === 0)
        throw new SutureError(
          "IO",
          `${path} ended early while it was read; remove it and run the patch again`,
        );
      at += n;
      yield n === buf.length ? buf : buf.subarray(0, n);
    }
  } finally {
    await handle.close();
  }
}

/**
 * Pass `pieces` on, writing them to a new entry as they go. Writing is best effort: a cache that
 * cannot be written (a full disk, a read-only dir) costs the next patch a decode, never this one.
 */
async function* decodeIntoEntry(
  path: string,
  dir: string,
  pieces: AsyncGenerator<Buffer>,
): AsyncGenerator<Buffer> {
  const tmp = tempPathBeside(path);
  const file = await mkdir(dir, { recursive: true })
    .then(() => open(tmp, "wx", 0o644))
    .catch(() => undefined);
  // Batched, one write in flight: the unpack is not held for a write per piece.
  let out = file && new BatchedWriter(file, tmp);
  const hash = createHash("sha256");
  let size = 0;
  const add = async (bytes: Buffer) => {
    try {
      await out?.add(bytes);
    } catch {
      await out?.close().catch(() => {});
      out = undefined;
    }
  };
  try {
    await add(Buffer.alloc(HEADER_BYTES, " "));
    for await (const piece of pieces) {
      if (out) {
        hash.update(piece);
        await add(piece);
      }
      size += piece.length;
      yield piece;
    }
    const done = out;
    out = undefined;
    if (!done) return;
    const header = Buffer.alloc(HEADER_BYTES, " ");
    header.write(`${MAGIC} ${hash.digest("hex")} ${size}`, "latin1");
    header[HEADER_BYTES - 1] = 0x0a;
    // No fsync: an entry cut short by a crash fails its hash check and is decoded again.
    const written = await done.rewriteAt(header, 0).then(
      () => true,
      () => false,
    );
    const closed = await done.close().then(
      () => true,
      () => false,
    );
    if (written && closed) await rename(tmp, path).catch(() => {});
  } finally {
    await out?.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
  }
}
