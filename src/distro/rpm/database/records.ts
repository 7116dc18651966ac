import { SutureError } from "../../../errors/errors.ts";

/**
 * One package's record as an rpm database backend stores it: its key (the header instance rpm
 * calls hdrNum: sqlite's `hnum`, the Berkeley DB key, ndb's `pkgidx`) and its header blob.
 */
export interface RpmDbRecord {
  recordNumber: number;
  blob: Uint8Array;
}

/** The fix every damaged-database message ends with. */
export const DAMAGED_DB_FIX =
  "the image's rpm database is damaged or not an rpm database; rebuild it in the image (rpmdb --rebuilddb) or use an intact image";

/** One line naming the database (`what`) and the fault, as INVALID_ARCHIVE. */
export function damagedDb(what: string, detail: string): SutureError {
  return new SutureError(
    "INVALID_ARCHIVE",
    `the rpm database ${what} is damaged: ${detail}; ${DAMAGED_DB_FIX}`,
  );
}

/** Records sorted by record number; two records with one number are a damaged database. */
export function sortedRecords(records: RpmDbRecord[], what: string): RpmDbRecord[] {
  records.sort((a, b) => a.recordNumber - b.recordNumber);
  for (let i = 1; i < records.length; i++) {
    if (records[i]!.recordNumber === records[i - 1]!.recordNumber) {
      throw damagedDb(what, `package record ${records[i]!.recordNumber} appears twice`);
    }
  }
  return records;
}
