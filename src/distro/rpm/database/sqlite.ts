import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { describeCause, isSutureError } from "../../../errors/errors.ts";
import { damagedDb, type RpmDbRecord, sortedRecords } from "./records.ts";

/**
 * rpm's sqlite backend (`rpmdb.sqlite`: RHEL 9+, Fedora, Amazon Linux 2023, Azure Linux), read
 * with Node's own SQLite. rpm's lib/backend/sqlite.cc keeps each header as one row of
 * `Packages(hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)`; the other tables are
 * indexes rpm rebuilds from the headers.
 *
 * The image's files are never opened in place: SQLite writes beside a database it opens (a -shm
 * file, a WAL checkpoint), which would change the image or land in the patch layer. The bytes are
 * copied into a private temporary directory instead, with the image's write-ahead log
 * (`rpmdb.sqlite-wal`) when it has one, so transactions rpm committed but did not checkpoint are
 * seen as rpm sees them; the copy is opened read-only with SQLite's defensive mode on.
 */

/** The first 16 bytes of every SQLite database file. */
const SQLITE_MAGIC = "SQLite format 3\0";

/** Whether `bytes` start like an SQLite database. */
export function isSqliteDb(bytes: Uint8Array): boolean {
  return bytes.length >= 16 && Buffer.from(bytes.subarray(0, 16)).toString("latin1") === SQLITE_MAGIC;
}

/** Every package record of an `rpmdb.sqlite` (and its `-wal`); `what` names it in errors. */
export function readSqlitePackages(db: Uint8Array, wal: Uint8Array | undefined, what: string): RpmDbRecord[] {
  if (!isSqliteDb(db)) throw damagedDb(what, "it is not an SQLite database (no SQLite magic)");
  const dir = mkdtempSync(join(tmpdir(), "suture-rpmdb-"));
  try {
    const file = join(dir, "rpmdb.sqlite");
    writeFileSync(file, db, { mode: 0o600 });
    if (wal !== undefined && wal.length > 0) writeFileSync(`${file}-wal`, wal, { mode: 0o600 });
    let handle: DatabaseSync | undefined;
    try {
      handle = new DatabaseSync(file, { readOnly: true, enableForeignKeyConstraints: false });
      handle.enableDefensive(true);
      // Only a real table is read: a view or virtual table of that name would run the image's SQL.
      const kind = handle.prepare("SELECT type, sql FROM sqlite_schema WHERE name = 'Packages'").get();
      if (kind?.type !== "table") throw damagedDb(what, "it has no Packages table");
      const rows = handle.prepare("SELECT hnum, blob FROM Packages").all();
      const records: RpmDbRecord[] = [];
      for (const row of rows) {
        const hnum = row.hnum;
        const blob = row.blob;
        if (typeof hnum !== "number" || !Number.isSafeInteger(hnum) || hnum < 1 || hnum > 0xffffffff) {
          throw damagedDb(what, `a package row has the header number ${String(hnum).slice(0, 40)}`);
        }
        if (!(blob instanceof Uint8Array))
          throw damagedDb(what, `the header of package ${hnum} is not a blob`);
        records.push({ recordNumber: hnum, blob });
      }
      return sortedRecords(records, what);
    } catch (e) {
      if (isSutureError(e)) throw e;
      // SQLite's own refusal (a corrupt page, a malformed schema): one line, with its reason.
      throw damagedDb(what, `SQLite cannot read it (${describeCause(e).split("\n")[0]})`);
    } finally {
      handle?.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
