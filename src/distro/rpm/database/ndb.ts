import { damagedDb, type RpmDbRecord, sortedRecords } from "./records.ts";

/**
 * rpm's ndb backend (`Packages.db`, SUSE), read as rpm's lib/backend/ndb/rpmpkg.c reads it. All
 * integers are little-endian.
 *
 * - The file is a sequence of 16-byte blocks. Its first `slotnpages` pages of 4096 bytes hold the
 *   32-byte file header (magic "RpmP", version 0, generation, slotnpages, nextpkgidx) and then
 *   16-byte slots: magic "Slot", pkgidx, blkoff, blkcnt. A slot with blkoff 0 is free.
 * - A used slot points at `blkcnt` blocks from block `blkoff` (after the slot pages) holding one
 *   blob: a 16-byte head (magic "BlbS", pkgidx, generation, bloblen), the header blob, zero
 *   padding to the block size, and a 12-byte tail (adler32 of head, blob and padding; bloblen;
 *   magic "BlbE").
 *
 * Every slot and blob is checked as rpmpkgReadSlots and rpmpkgReadBlob (with its checksum, as
 * rpmpkgVerifyblob) check them; anything off is a one-line INVALID_ARCHIVE.
 */

const BLK_SIZE = 16;
const SLOT_SIZE = 16;
const PAGE_SIZE = 4096;
const HEADER_SIZE = 32;
const BLOBHEAD_SIZE = 16;
const BLOBTAIL_SIZE = 12;

const fourcc = (s: string) =>
  s.charCodeAt(0) | (s.charCodeAt(1) << 8) | (s.charCodeAt(2) << 16) | ((s.charCodeAt(3) << 24) >>> 0);
const PKGDB_MAGIC = fourcc("RpmP") >>> 0;
const SLOT_MAGIC = fourcc("Slot") >>> 0;
const BLOBHEAD_MAGIC = fourcc("BlbS") >>> 0;
const BLOBTAIL_MAGIC = fourcc("BlbE") >>> 0;

/** Whether `bytes` start like an ndb Packages.db. */
export function isNdbPackages(bytes: Uint8Array): boolean {
  return (
    bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === PKGDB_MAGIC
  );
}

/** Every package record of an ndb `Packages.db`; `what` names it in errors. */
export function readNdbPackages(bytes: Uint8Array, what: string): RpmDbRecord[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (at: number) => view.getUint32(at, true);
  if (bytes.length < HEADER_SIZE || u32(0) !== PKGDB_MAGIC)
    throw damagedDb(what, "it does not start with ndb's magic RpmP");
  const version = u32(4);
  if (version !== 0) throw damagedDb(what, `it is ndb version ${version}, rpm knows version 0`);
  if (bytes.length % BLK_SIZE !== 0)
    throw damagedDb(what, `its size ${bytes.length} is not a multiple of ${BLK_SIZE} bytes`);
  const slotnpages = u32(12);
  if (slotnpages === 0 || slotnpages * PAGE_SIZE > bytes.length) {
    throw damagedDb(what, `it claims ${slotnpages} slot pages in a file of ${bytes.length} bytes`);
  }
  const fileblks = bytes.length / BLK_SIZE;
  const minblkoff = (slotnpages * PAGE_SIZE) / BLK_SIZE;
  const records: RpmDbRecord[] = [];
  for (let at = HEADER_SIZE; at < slotnpages * PAGE_SIZE; at += SLOT_SIZE) {
    const slot = (at - HEADER_SIZE) / SLOT_SIZE;
    if (u32(at) !== SLOT_MAGIC) throw damagedDb(what, `slot ${slot} has no slot magic`);
    const blkoff = u32(at + 8);
    if (blkoff === 0) continue;
    const pkgidx = u32(at + 4);
    const blkcnt = u32(at + 12);
    if (pkgidx === 0 || blkcnt === 0 || blkoff < minblkoff || blkoff + blkcnt > fileblks) {
      throw damagedDb(
        what,
        `slot ${slot} (package ${pkgidx}) points at blocks ${blkoff}+${blkcnt} outside the ${fileblks} blocks of data`,
      );
    }
    records.push({ recordNumber: pkgidx, blob: readBlob(bytes, view, pkgidx, blkoff, blkcnt, what) });
  }
  return sortedRecords(records, what);
}

function readBlob(
  bytes: Uint8Array,
  view: DataView,
  pkgidx: number,
  blkoff: number,
  blkcnt: number,
  what: string,
): Uint8Array {
  const start = blkoff * BLK_SIZE;
  const end = start + blkcnt * BLK_SIZE;
  const bad = (detail: string) => damagedDb(what, `the blob of package ${pkgidx} ${detail}`);
  if (blkcnt * BLK_SIZE < BLOBHEAD_SIZE + BLOBTAIL_SIZE) throw bad(`has only ${blkcnt} blocks`);
  if (view.getUint32(start, true) !== BLOBHEAD_MAGIC) throw bad("has no blob magic");
  if (view.getUint32(start + 4, true) !== pkgidx)
    throw bad(`belongs to package ${view.getUint32(start + 4, true)}`);
  const bloblen = view.getUint32(start + 12, true);
  if (Math.ceil((BLOBHEAD_SIZE + bloblen + BLOBTAIL_SIZE) / BLK_SIZE) !== blkcnt) {
    throw bad(`claims ${bloblen} bytes, which do not fill its ${blkcnt} blocks`);
  }
  const tail = end - BLOBTAIL_SIZE;
  if (view.getUint32(tail + 8, true) !== BLOBTAIL_MAGIC) throw bad("has no end magic");
  if (view.getUint32(tail + 4, true) !== bloblen)
    throw bad("has a tail whose length disagrees with its head");
  if (adler32(bytes, start, tail) !== view.getUint32(tail, true)) throw bad("fails its adler32 checksum");
  return bytes.subarray(start + BLOBHEAD_SIZE, start + BLOBHEAD_SIZE + bloblen);
}

/** Adler-32 (RFC 1950) of bytes[from, to). */
function adler32(bytes: Uint8Array, from: number, to: number): number {
  let a = 1;
  let b = 0;
  // 5552 is the most bytes that can be summed before b may overflow 2^32 (zlib's NMAX).
  for (let i = from; i < to; ) {
    const stop = Math.min(to, i + 5552);
    for (; i < stop; i++) {
      a += bytes[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}
