import { damagedDb, type RpmDbRecord, sortedRecords } from "./records.ts";

/**
 * rpm's Berkeley DB backend (`Packages`: RHEL/CentOS ≤ 8, Amazon Linux 2), read without Berkeley
 * DB, as rpm's own read-only reader (lib/backend/bdb_ro.cc) does. What is read:
 *
 * - The file is pages of `pagesize` bytes. Page 0 is the hash metadata page: LSN (8 bytes),
 *   pgno (4), magic 0x061561 (4, at 12), version (4: 8–10 for hash), pagesize (4, at 20),
 *   encrypt_alg (1, at 24), type (1), metaflags (1, at 26), unused (1), free (4), last_pgno (4, at
 *   32), …, max_bucket (4, at 72), high_mask (76), low_mask (80), …, spares[32] (4 each, at 96).
 *   Integers are in the byte order the database was created with: the magic read little- or
 *   big-endian tells which (both occur: a database keeps its creator's order).
 * - Every other page starts with a 26-byte header: LSN (8), pgno (4, at 8), prev_pgno (12),
 *   next_pgno (16), entries (2, at 20), hf_offset (2, at 22), level (1), type (1, at 25); then
 *   `entries` 2-byte item offsets.
 * - Bucket b (0 … max_bucket) starts at page `b + spares[bits(b)]`, where bits(b) is the number of
 *   bits needed to write b; its pages are chained by next_pgno and have type 2 (hash, unsorted)
 *   or 13 (hash). Items come in key/value pairs: item 2i is a key, 2i+1 its value; an item's
 *   bytes run from its offset to the previous item's offset (the page's end for item 0).
 * - An item is H_KEYDATA (type byte 1, then the bytes) or H_OFFPAGE (type 3, 3 unused bytes, the
 *   first overflow page, the total length): overflow pages (type 7) hold hf_offset bytes each
 *   from offset 26, chained by next_pgno.
 * - rpm's key is the 4-byte header number in the database's byte order; the value is the header
 *   blob. Key 0 holds rpm's next free header number, not a package, and is skipped.
 *
 * Every offset, length, page number and chain is checked; a page is visited at most once, so a
 * hostile file cannot loop. Anything off is a one-line INVALID_ARCHIVE.
 */

const HASH_MAGIC = 0x061561;
const BTREE_MAGIC = 0x053162;
const PAGE_HEADER = 26;
const P_HASH_UNSORTED = 2;
const P_OVERFLOW = 7;
const P_HASH = 13;
const H_KEYDATA = 1;
const H_OFFPAGE = 3;
/** metaflags bit for page checksums, which move the item offsets (rpm never sets it). */
const DBMETA_CHKSUM = 0x01;

/** Whether `bytes` start like a Berkeley DB hash database, in either byte order. */
export function isBdbHash(bytes: Uint8Array): boolean {
  if (bytes.length < 16) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return view.getUint32(12, true) === HASH_MAGIC || view.getUint32(12, false) === HASH_MAGIC;
}

/** Every package record of a Berkeley DB `Packages`; `what` names it in errors. */
export function readBdbPackages(bytes: Uint8Array, what: string): RpmDbRecord[] {
  if (bytes.length < 512)
    throw damagedDb(what, `it has ${bytes.length} bytes, less than a Berkeley DB metadata page`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let le: boolean;
  if (view.getUint32(12, true) === HASH_MAGIC) le = true;
  else if (view.getUint32(12, false) === HASH_MAGIC) le = false;
  else if (view.getUint32(12, true) === BTREE_MAGIC || view.getUint32(12, false) === BTREE_MAGIC) {
    throw damagedDb(what, "it is a Berkeley DB btree, but rpm's Packages is a hash database");
  } else throw damagedDb(what, "it is not a Berkeley DB hash database (no hash magic)");
  const u32 = (at: number) => view.getUint32(at, le);
  const u16 = (at: number) => view.getUint16(at, le);

  const version = u32(16);
  if (version < 8 || version > 10)
    throw damagedDb(what, `it is hash version ${version}; rpm reads versions 8 to 10`);
  const pagesize = u32(20);
  if (pagesize < 512 || pagesize > 65536 || (pagesize & (pagesize - 1)) !== 0) {
    throw damagedDb(what, `its page size ${pagesize} is not a power of two from 512 to 65536`);
  }
  if (bytes[24] !== 0) throw damagedDb(what, "it is encrypted");
  if ((bytes[26]! & DBMETA_CHKSUM) !== 0)
    throw damagedDb(what, "it has page checksums, which rpm's databases never use");
  const lastPage = u32(32);
  if ((lastPage + 1) * pagesize > bytes.length) {
    throw damagedDb(
      what,
      `it claims ${lastPage + 1} pages of ${pagesize} bytes but has ${bytes.length} bytes`,
    );
  }
  const maxBucket = u32(72);
  if (maxBucket > lastPage)
    throw damagedDb(what, `it claims ${maxBucket + 1} buckets in ${lastPage + 1} pages`);
  const spares = Array.from({ length: 32 }, (_, i) => u32(96 + 4 * i));

  const visited = new Uint8Array(lastPage + 1);
  /** The page `pgno`, checked: in range, not seen before, numbered as itself, of one of `types`. */
  const page = (pgno: number, types: readonly number[], role: string): number => {
    if (pgno === 0 || pgno > lastPage)
      throw damagedDb(what, `${role} points at page ${pgno}, outside pages 1 to ${lastPage}`);
    if (visited[pgno]) throw damagedDb(what, `${role} reaches page ${pgno} a second time (a loop)`);
    visited[pgno] = 1;
    const at = pgno * pagesize;
    if (u32(at + 8) !== pgno) throw damagedDb(what, `page ${pgno} says it is page ${u32(at + 8)}`);
    if (!types.includes(bytes[at + 25]!))
      throw damagedDb(what, `page ${pgno} (${role}) has page type ${bytes[at + 25]}`);
    return at;
  };

  const overflow = (first: number, length: number, role: string): Uint8Array => {
    const out = new Uint8Array(length);
    let filled = 0;
    let pgno = first;
    while (filled < length) {
      if (pgno === 0) throw damagedDb(what, `${role} ends after ${filled} of its ${length} bytes`);
      const at = page(pgno, [P_OVERFLOW], role);
      const n = u16(at + 22);
      if (n === 0 || PAGE_HEADER + n > pagesize || filled + n > length) {
        throw damagedDb(what, `overflow page ${pgno} of ${role} holds ${n} bytes, which do not fit`);
      }
      out.set(bytes.subarray(at + PAGE_HEADER, at + PAGE_HEADER + n), filled);
      filled += n;
      pgno = u32(at + 16);
    }
    return out;
  };

  /** An item's bytes (on the page, or from its overflow chain). */
  const item = (at: number, pgno: number, offset: number, length: number, role: string): Uint8Array => {
    if (length < 1 || offset + length > pagesize)
      throw damagedDb(what, `an item on page ${pgno} runs past the page`);
    const type = bytes[at + offset];
    if (type === H_KEYDATA) return bytes.subarray(at + offset + 1, at + offset + length);
    if (type === H_OFFPAGE && length === 12) {
      const total = u32(at + offset + 8);
      if (total === 0 || total > bytes.length)
        throw damagedDb(what, `${role} on page ${pgno} claims ${total} bytes`);
      return overflow(u32(at + offset + 4), total, role);
    }
    throw damagedDb(what, `an item on page ${pgno} has type ${type}, not a plain or overflow item`);
  };

  const records: RpmDbRecord[] = [];
  for (let bucket = 0; bucket <= maxBucket; bucket++) {
    const bits = bucket === 0 ? 0 : 32 - Math.clz32(bucket);
    let pgno = bucket + spares[bits]!;
    while (pgno !== 0) {
      const at = page(pgno, [P_HASH_UNSORTED, P_HASH], `bucket ${bucket}`);
      const entries = u16(at + 20);
      if (entries % 2 !== 0 || PAGE_HEADER + 2 * entries > pagesize) {
        throw damagedDb(what, `page ${pgno} claims ${entries} items, not key/value pairs that fit`);
      }
      const itemsStart = PAGE_HEADER + 2 * entries;
      let previous = pagesize;
      for (let i = 0; i < entries; i += 2) {
        const keyOffset = u16(at + PAGE_HEADER + 2 * i);
        const valueOffset = u16(at + PAGE_HEADER + 2 * i + 2);
        if (valueOffset < itemsStart || keyOffset <= valueOffset || keyOffset >= previous) {
          throw damagedDb(what, `the items of page ${pgno} overlap or lie outside it`);
        }
        const key = item(at, pgno, keyOffset, previous - keyOffset, "a key");
        if (key.length !== 4)
          throw damagedDb(what, `a key on page ${pgno} has ${key.length} bytes, not a 4-byte header number`);
        const recordNumber = new DataView(key.buffer, key.byteOffset, 4).getUint32(0, le);
        previous = valueOffset;
        const value = item(
          at,
          pgno,
          valueOffset,
          keyOffset - valueOffset,
          `the value of header ${recordNumber}`,
        );
        if (recordNumber !== 0) records.push({ recordNumber, blob: value });
      }
      pgno = u32(at + 16);
    }
  }
  return sortedRecords(records, what);
}
