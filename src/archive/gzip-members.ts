import zlib from "node:zlib";
import { describeCause, SutureError } from "../errors/errors.ts";
import { formatBytes } from "../image/limits.ts";

/**
 * Concatenated gzip members read one at a time, with their raw byte ranges. apk's formats are
 * built from such members (a package is signature + control + data, an APKINDEX.tar.gz is
 * signature + index), and what is signed or hashed is a member's compressed bytes, so the
 * boundaries must be found exactly, not just the decompressed stream.
 */
export interface GzipMember {
  /** Offset of the member's first byte (the 0x1f 0x8b magic) in the input. */
  start: number;
  /** Offset just after the member's trailer (CRC32 + ISIZE). */
  end: number;
  /** The decompressed bytes. */
  data: Buffer;
}

const FTEXT_FHCRC = 0x02;
const FEXTRA = 0x04;
const FNAME = 0x08;
const FCOMMENT = 0x10;
const RESERVED_FLAGS = 0xe0;

/**
 * Read the gzip member starting at `start` in `bytes` (RFC 1952: header, one deflate stream,
 * CRC32 and size trailer). Its decompressed size may not exceed `maxOutput` (TOO_LARGE); a
 * malformed, truncated or corrupt member is INVALID_ARCHIVE. `bytesArePrefix`: `bytes` is only
 * the beginning of the input, so a member running past its end is TOO_LARGE (longer than the
 * caller reads), not truncated. Messages start with `what`.
 */
export function readGzipMember(
  bytes: Buffer,
  start: number,
  maxOutput: number,
  what: string,
  bytesArePrefix = false,
): GzipMember {
  const bad = (why: string, cause?: unknown) =>
    new SutureError("INVALID_ARCHIVE", `${what}: ${why}`, cause === undefined ? {} : { cause });
  const truncated = (cause?: unknown) =>
    bytesArePrefix
      ? new SutureError(
          "TOO_LARGE",
          `${what}: gzip member at byte ${start} does not end within the first ${formatBytes(bytes.length)}, more than such a member ever takes`,
        )
      : bad(`gzip member at byte ${start} is truncated`, cause);
  if (bytes.length - start < 18) throw truncated();
  if (bytes[start] !== 0x1f || bytes[start + 1] !== 0x8b) throw bad(`no gzip member starts at byte ${start}`);
  if (bytes[start + 2] !== 8) throw bad(`gzip member at byte ${start} is not deflate-compressed`);
  const flags = bytes[start + 3]!;
  if (flags & RESERVED_FLAGS) throw bad(`gzip member at byte ${start} has reserved header flags set`);
  let pos = start + 10;
  const need = (n: number) => {
    if (pos + n > bytes.length) throw truncated();
  };
  if (flags & FEXTRA) {
    need(2);
    pos += 2 + bytes.readUInt16LE(pos);
  }
  for (const flag of [FNAME, FCOMMENT]) {
    if (!(flags & flag)) continue;
    const nul = bytes.indexOf(0, pos);
    if (nul === -1) throw bad(`gzip member at byte ${start} has an unterminated header string`);
    pos = nul + 1;
  }
  if (flags & FTEXT_FHCRC) pos += 2;
  need(0);

  let inflated: { buffer: Buffer; engine: zlib.InflateRaw };
  try {
    // `info` exposes the engine, whose bytesWritten is the input the deflate stream consumed:
    // zlib stops at the stream's end, so that is exactly where the trailer begins.
    inflated = zlib.inflateRawSync(bytes.subarray(pos), {
      info: true,
      maxOutputLength: maxOutput,
    }) as unknown as { buffer: Buffer; engine: zlib.InflateRaw };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE")
      throw new SutureError(
        "TOO_LARGE",
        `${what}: gzip member at byte ${start} decompresses to more than ${formatBytes(maxOutput)}, more than such a member ever holds`,
      );
    // zlib's code for a deflate stream that stops before its end.
    if ((e as NodeJS.ErrnoException).code === "Z_BUF_ERROR") throw truncated(e);
    throw bad(`gzip member at byte ${start} cannot be decompressed (${describeCause(e)})`, e);
  }
  const trailer = pos + inflated.engine.bytesWritten;
  if (trailer + 8 > bytes.length) throw truncated();
  const data = inflated.buffer;
  if (bytes.readUInt32LE(trailer) !== zlib.crc32(data))
    throw bad(`gzip member at byte ${start} fails its CRC32 check`);
  if (bytes.readUInt32LE(trailer + 4) !== data.length % 2 ** 32)
    throw bad(`gzip member at byte ${start} has a wrong size in its trailer`);
  return { start, end: trailer + 8, data };
}
