import { asSutureError, SutureError } from "../errors/errors.ts";
import { readFileCapped } from "../fs/read-capped.ts";
import { formatBytes, parseByteSize } from "../image/limits.ts";

/**
 * How large a report may be unless the user says otherwise (`--max-report-size`). Trivy's report
 * of a large image with language packages is a few MiB; 64 MiB leaves room for the largest real
 * ones while a wrong file (an image tarball, /dev/zero, a log) is refused before it is read.
 */
export const DEFAULT_MAX_REPORT_BYTES = 64 * 1024 * 1024;

/**
 * The largest limit `--max-report-size` takes: V8 cannot hold a string of more than about 2^29
 * characters, so a larger report could not be parsed anyway.
 */
export const MAX_REPORT_BYTES_CEILING = 500 * 1024 * 1024;

/**
 * No scanner nests its JSON anywhere near this deep (Grype's image source is the deepest seen,
 * about ten levels). A document nested deeper is refused before JSON.parse, which would take
 * seconds per million levels, and before anything walks it recursively.
 */
export const MAX_REPORT_NESTING = 64;

/** `--max-report-size` text → bytes (parseByteSize's units), within 1 byte … MAX_REPORT_BYTES_CEILING. */
export function parseReportSizeLimit(text: string, flag = "--max-report-size"): number {
  const bytes = parseByteSize(text);
  if (bytes === undefined) {
    throw new SutureError("USAGE", `invalid ${flag} "${text}": use a size such as 64MiB, 100M or 1G`);
  }
  if (bytes > MAX_REPORT_BYTES_CEILING) {
    throw new SutureError(
      "USAGE",
      `invalid ${flag} "${text}": use a size from 1 byte to ${formatBytes(MAX_REPORT_BYTES_CEILING)}`,
    );
  }
  return bytes;
}

/** The next power-of-two MiB at least twice `bytes`: a limit worth suggesting in an error. */
function suggestedLimit(bytes: number): string {
  let mib = 128;
  while (mib * 1024 * 1024 < bytes * 2 && mib < MAX_REPORT_BYTES_CEILING / 1024 / 1024) mib *= 2;
  return `${Math.min(mib, MAX_REPORT_BYTES_CEILING / 1024 / 1024)}MiB`;
}

/** The one-line error for a report (or plugin output) over the limit. */
export function reportTooLargeError(what: string, size: number | undefined, limit: number): SutureError {
  const actual = size === undefined ? "more than" : `${formatBytes(size)}, more than`;
  return new SutureError(
    "INVALID_REPORT",
    `${what} is ${actual} the ${formatBytes(limit)} a report may be; if it really is one scanner report, raise the limit with --max-report-size ${suggestedLimit(size ?? limit)}`,
  );
}

/**
 * Read a report file, refusing it before it is read whole when it is over `limit`: a regular
 * file by its size, anything else (a FIFO, /dev/zero) by stopping at `limit + 1` bytes.
 */
export async function readReportFile(file: string, limit: number): Promise<Buffer> {
  try {
    return await readFileCapped(file, {
      limit,
      what: `report ${file}`,
      tooLarge: (size) => reportTooLargeError(`report ${file}`, size, limit),
    });
  } catch (e) {
    throw asSutureError(e, "IO", `cannot read report ${file}`);
  }
}

/**
 * Refuse JSON nested deeper than `limit` levels, in one pass over the bytes (strings skipped, so
 * brackets inside them do not count). Throws INVALID_REPORT naming `what` and the byte offset.
 */
export function checkJsonNesting(bytes: Uint8Array, what: string, limit = MAX_REPORT_NESTING): void {
  let depth = 0;
  const n = bytes.length;
  for (let i = 0; i < n; i++) {
    const c = bytes[i]!;
    if (c === 0x22) {
      // Jump to the closing quote: the next one not escaped by an odd run of backslashes.
      for (;;) {
        const q = bytes.indexOf(0x22, i + 1);
        if (q < 0) return; // unterminated string: JSON.parse will say so
        let backslashes = 0;
        while (bytes[q - 1 - backslashes] === 0x5c) backslashes++;
        i = q;
        if (backslashes % 2 === 0) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) {
        throw new SutureError(
          "INVALID_REPORT",
          `${what} nests JSON deeper than ${limit} levels (at byte ${i}); no scanner writes that, so it is not a report: pass the JSON the scanner wrote`,
        );
      }
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
}
