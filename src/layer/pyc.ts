/**
 * Compiled Python whose source the patch layer leaves to the lowers.
 *
 * A package manager that rewrites every file of an upgraded package (dpkg in the sandbox engine)
 * gives a byte-identical `.py` a new mtime, and the package's scripts then byte-compile it
 * (`py3compile`): the `.pyc` records that new mtime in its header. The patch layer drops the
 * byte-identical source (only bytes that changed go in), so the image keeps the lowers' copy with
 * its old mtime, and Python would find every such `.pyc` stale: it recompiles on each import and,
 * in a read-only or unprivileged container, never manages to save the result. The layer instead
 * carries the `.pyc` with the time of the source the image keeps; the code in it came from the
 * same bytes, so it is exactly what compiling that source gives. The native engine leaves
 * identical files untouched, so its scripts record the kept time to begin with: both engines'
 * layers then agree (test/e2e/engine-differential.test.ts, python3.11's update).
 *
 * Formats: PEP 3147 names (`DIR/__pycache__/NAME.TAG[.opt-N].pyc` for `DIR/NAME.py`), PEP 552
 * headers (magic, flags, then for flags 0 the source's mtime and size, each 32-bit little-endian).
 * Hash-based `.pyc`s (flags 1 or 3) do not record times and are left alone.
 */

/** Larger compiled files are left as they are (none of Debian's comes near). */
export const MAX_PYC_BYTES = 16 * 1024 * 1024;

const HEADER_BYTES = 16;

/** The source a `__pycache__` file was compiled from, as a layer path; undefined for anything else. */
export function pycSourceOf(rel: string): string | undefined {
  if (!rel.endsWith(".pyc")) return undefined;
  const slash = rel.lastIndexOf("/");
  const dir = rel.slice(0, slash);
  if (slash === -1 || !(dir === "__pycache__" || dir.endsWith("/__pycache__"))) return undefined;
  const file = rel.slice(slash + 1);
  const dot = file.indexOf(".");
  if (dot <= 0) return undefined;
  const parent = dir.slice(0, -"__pycache__".length);
  return `${parent}${file.slice(0, dot)}.py`;
}

/** The source mtime and size a timestamp-based `.pyc` header records (both modulo 2^32). */
export function recordedSource(pyc: Uint8Array): { mtime: number; size: number } | undefined {
  if (pyc.length < HEADER_BYTES) return undefined;
  const view = new DataView(pyc.buffer, pyc.byteOffset, pyc.byteLength);
  // The magic number ends in \r\n; the flags word is 0 for a timestamp-based file.
  if (pyc[2] !== 0x0d || pyc[3] !== 0x0a || view.getUint32(4, true) !== 0) return undefined;
  return { mtime: view.getUint32(8, true), size: view.getUint32(12, true) };
}

/** A copy of `pyc` recording `mtime` (seconds) as its source's time. */
export function withRecordedTime(pyc: Uint8Array, mtime: number): Buffer {
  const out = Buffer.from(pyc);
  out.writeUInt32LE(Number(BigInt(mtime) & 0xffffffffn), 8);
  return out;
}

/** A time or size as a `.pyc` header records it. */
export function asRecorded(value: bigint): number {
  return Number(value & 0xffffffffn);
}
