import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { describeCause, isSutureError, SutureError } from "../../../errors/errors.ts";
import { READ_POLICY, readFileInRoot, walkInRoot } from "../../../fs/in-root.ts";
import { parseRpmHeader, type RpmHeader, RpmTag } from "../header.ts";
import type { InstalledRpm, RpmDatabaseLocation } from "../installed.ts";
import { damagedDb } from "./records.ts";
import { isSqliteDb } from "./sqlite.ts";
import type { RpmDatabaseChange } from "./write.ts";
import { overwriteImageFile } from "./write-file.ts";
import { RPM_INDEXES, type RpmIndex, rpmIndexRows } from "./write-index.ts";

/**
 * Writing rpm's sqlite backend (`rpmdb.sqlite`) as rpm 4.18's lib/rpmdb.c and
 * lib/backend/sqlite.c write it: a package is a row `Packages(hnum, blob)` (hnum from SQLite's
 * AUTOINCREMENT, so `rpm -qa` lists it last, as after an rpm upgrade) plus its rows in the 18
 * index tables; a removed package's rows go from all of them. Everything happens in one
 * transaction.
 *
 * The image's file is never opened by SQLite in place: SQLite creates -wal/-shm/-journal files
 * beside a database it opens and follows symlinks on its own. The database (with its -wal, so
 * SQLite replays what rpm committed there, as rpm's SQLite and the reader do) is copied into a
 * private directory, changed there, checkpointed and closed, and the finished bytes are written
 * over the image's file in place, as rpm's SQLite writes it (the same inode keeps its mode, owner
 * and SELinux label; write-file.ts overwriteImageFile). The journal
 * mode is the file's own (rpm sets WAL; it is recorded in the file and left as it was). A -wal
 * the image had with frames in it is emptied, since its frames are now in the file (replaying
 * them would undo the change); an empty one is left, as rpm leaves it. A hot rollback journal (an
 * interrupted transaction in a database someone switched out of WAL mode) is refused: SQLite
 * would roll the file back, so it is not what the reader read and planned from.
 */

/** rpm's table of headers, `(hnum, blob)`. */
const PACKAGES_TABLE = "Packages";

const FIX = "rebuild it in the image (rpmdb --rebuilddb) or patch with --engine sandbox";

export async function writeSqliteRpmDatabase(
  root: string,
  location: RpmDatabaseLocation,
  change: RpmDatabaseChange,
): Promise<void> {
  const what = location.path;
  const walk = walkInRoot(root, location.path, READ_POLICY);
  if (walk.kind !== "found" || !walk.stat.isFile()) {
    throw new SutureError("IO", `cannot write the rpm database ${what}: it is not a file in the image`);
  }
  const dbHost = walk.host;
  const db = await readFileInRoot(root, location.path);
  if (db === undefined) throw new SutureError("IO", `cannot read the rpm database ${what} in the image`);
  if (!isSqliteDb(db)) throw damagedDb(what, "it is not an SQLite database (no SQLite magic)");
  const wal = await sidecar(root, `${location.path}-wal`);
  const journal = await sidecar(root, `${location.path}-journal`);
  if (journal !== undefined && isHotJournal(journal.bytes)) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `the rpm database ${what} has an unfinished transaction (${what}-journal): run rpm in the image once so that SQLite rolls it back, or patch with --engine sandbox`,
    );
  }

  const dir = mkdtempSync(join(tmpdir(), "suture-rpmdb-write-"));
  let written: Buffer;
  try {
    const file = join(dir, "rpmdb.sqlite");
    writeFileSync(file, db, { mode: 0o600 });
    if (wal?.bytes.length) writeFileSync(`${file}-wal`, wal.bytes, { mode: 0o600 });
    applyChange(file, what, change);
    written = readFileSync(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  await overwriteImageFile(dbHost, written, what);
  if (wal !== undefined && wal.bytes.length > 0)
    await overwriteImageFile(wal.host, new Uint8Array(0), `${what}-wal`);
}

/** SQLite's rollback journal header magic: a journal starting with it is hot (pager.c aJournalMagic). */
const JOURNAL_MAGIC = Buffer.from([0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]);

function isHotJournal(bytes: Buffer): boolean {
  return bytes.length >= 8 && bytes.subarray(0, 8).equals(JOURNAL_MAGIC);
}

interface Sidecar {
  host: string;
  bytes: Buffer;
}

/** A file beside the database (its -wal or -journal), when the image has one. */
async function sidecar(root: string, path: string): Promise<Sidecar | undefined> {
  const walk = walkInRoot(root, path, READ_POLICY);
  if (walk.kind !== "found" || !walk.stat.isFile()) return undefined;
  const bytes = await readFileInRoot(root, path);
  return bytes === undefined ? undefined : { host: walk.host, bytes };
}

/** Open the private copy, check its schema, apply the change in one transaction, checkpoint. */
function applyChange(file: string, what: string, change: RpmDatabaseChange): void {
  let handle: DatabaseSync | undefined;
  try {
    // rpm never turns SQLite's foreign key checks on (its index rows reference Packages but are
    // deleted after the package's row); neither does suture.
    handle = new DatabaseSync(file, { enableForeignKeyConstraints: false });
    handle.enableDefensive(true);
    handle.exec("PRAGMA trusted_schema = OFF");
    handle.exec("PRAGMA secure_delete = OFF");
    const missing = checkSchema(handle, what);
    if (!missing.some((m) => m.table === "Installtid")) checkInstalltidOrder(handle, what);
    const journalMode = String(handle.prepare("PRAGMA journal_mode").get()?.journal_mode ?? "");
    handle.exec("BEGIN IMMEDIATE");
    try {
      for (const index of missing) createIndexTable(handle, index, what);
      removePackages(handle, change, what);
      for (const { pkg, header } of change.update ?? []) updatePackage(handle, pkg, header, what);
      for (const { header } of change.add) addPackage(handle, header, what);
      handle.exec("COMMIT");
    } catch (e) {
      handle.exec("ROLLBACK");
      throw e;
    }
    if (journalMode === "wal") handle.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  } catch (e) {
    if (isSutureError(e)) throw e;
    throw damagedDb(what, `SQLite cannot write it (${describeCause(e).split("\n")[0]})`);
  } finally {
    handle?.close();
  }
}

/**
 * The schema must be rpm's: Packages and the index tables with their columns, nothing that runs
 * SQL of its own (a trigger or view in an image's database would run on our writes). Returns the
 * index tables that are missing (rpm creates them when it opens the index, and fills them).
 */
function checkSchema(handle: DatabaseSync, what: string): RpmIndex[] {
  const objects = handle.prepare("SELECT type, name FROM sqlite_schema").all();
  const tables = new Set<string>();
  for (const o of objects) {
    if (o.type === "trigger" || o.type === "view") {
      throw damagedDb(
        what,
        `it has the SQL ${String(o.type)} ${JSON.stringify(String(o.name).slice(0, 60))}, which rpm never creates; ${FIX}`,
      );
    }
    if (o.type === "table") tables.add(String(o.name));
  }
  if (!tables.has(PACKAGES_TABLE)) throw damagedDb(what, "it has no Packages table");
  expectColumns(handle, PACKAGES_TABLE, ["hnum", "blob"], what);
  const missing: RpmIndex[] = [];
  for (const index of RPM_INDEXES) {
    if (tables.has(index.table)) expectColumns(handle, index.table, ["key", "hnum", "idx"], what);
    else missing.push(index);
  }
  return missing;
}

function expectColumns(handle: DatabaseSync, table: string, columns: readonly string[], what: string): void {
  const found = handle
    .prepare(`SELECT name FROM pragma_table_info(?)`)
    .all(table)
    .map((r) => String(r.name));
  if (found.length !== columns.length || columns.some((c, i) => found[i] !== c)) {
    throw damagedDb(
      what,
      `its ${table} table has the columns (${found.join(", ")}), not rpm's (${columns.join(", ")})`,
    );
  }
}

/** rpm's own statements (init_table, init_index), then the rows of the packages already there. */
function createIndexTable(handle: DatabaseSync, index: RpmIndex, what: string): void {
  handle.exec(
    `CREATE TABLE IF NOT EXISTS '${index.table}' (key '${index.keyType}' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum))`,
  );
  if (index.keyIndex)
    handle.exec(`CREATE INDEX IF NOT EXISTS '${index.table}_key_idx' ON '${index.table}'(key ASC)`);
  if (index.hnumIndex)
    handle.exec(`CREATE INDEX IF NOT EXISTS '${index.table}_hnum_idx' ON '${index.table}'(hnum ASC)`);
  const insert = insertStatement(handle, index);
  for (const row of handle.prepare("SELECT hnum, blob FROM Packages ORDER BY hnum").all()) {
    const hnum = Number(row.hnum);
    const header = parseRpmHeader(row.blob as Uint8Array, `package record ${hnum} of ${what}`);
    for (const r of rpmIndexRows(header, index, `package record ${hnum} of ${what}`))
      insert.run(r.key, hnum, r.idx);
  }
}

function insertStatement(handle: DatabaseSync, index: RpmIndex) {
  // TEXT keys are bound as bytes and cast, so a file name that is not UTF-8 keeps its bytes.
  const key = index.keyType === "TEXT" ? "CAST(? AS TEXT)" : "?";
  return handle.prepare(`INSERT INTO '${index.table}' VALUES (${key}, ?, ?)`);
}

/**
 * The package must still be the one that was read: anything else means the database changed
 * under the patch, and deleting or rewriting by number would hit another package.
 */
function checkUnchanged(handle: DatabaseSync, pkg: InstalledRpm, what: string): void {
  const row = handle.prepare("SELECT blob FROM Packages WHERE hnum = ?").get(pkg.recordNumber);
  const stored = row?.blob as Uint8Array | undefined;
  if (stored === undefined || (pkg.header && !Buffer.from(stored).equals(Buffer.from(pkg.header.blob)))) {
    throw new SutureError(
      "INTERNAL",
      `package record ${pkg.recordNumber} of ${what} is no longer ${pkg.nevra.name}: the database changed while it was patched`,
    );
  }
}

function deleteIndexRows(handle: DatabaseSync, hnum: number): void {
  for (const index of RPM_INDEXES) handle.prepare(`DELETE FROM '${index.table}' WHERE hnum = ?`).run(hnum);
}

function removePackages(handle: DatabaseSync, change: RpmDatabaseChange, what: string): void {
  for (const pkg of change.remove) {
    checkUnchanged(handle, pkg, what);
    handle.prepare("DELETE FROM Packages WHERE hnum = ?").run(pkg.recordNumber);
    deleteIndexRows(handle, pkg.recordNumber);
  }
}

/** A header rewritten in place (rpm's INSERT OR REPLACE under the same hnum), its rows refiled. */
function updatePackage(handle: DatabaseSync, pkg: InstalledRpm, blob: Uint8Array, what: string): void {
  checkUnchanged(handle, pkg, what);
  const header = parseRpmHeader(blob, `package record ${pkg.recordNumber} of ${what}`);
  handle.prepare("UPDATE Packages SET blob = ? WHERE hnum = ?").run(blob, pkg.recordNumber);
  deleteIndexRows(handle, pkg.recordNumber);
  insertIndexRows(handle, header, pkg.recordNumber, what);
}

function addPackage(handle: DatabaseSync, blob: Uint8Array, what: string): void {
  const header: RpmHeader = parseRpmHeader(blob, `a package added to ${what}`);
  const result = handle.prepare("INSERT INTO Packages VALUES (NULL, ?)").run(blob);
  const hnum = Number(result.lastInsertRowid);
  if (hnum > 0xffffffff) throw damagedDb(what, "its package numbers have run past rpm's 32-bit limit");
  insertIndexRows(handle, header, hnum, what);
}

function insertIndexRows(handle: DatabaseSync, header: RpmHeader, hnum: number, what: string): void {
  const name = header.string(RpmTag.NAME) ?? "";
  for (const index of RPM_INDEXES) {
    const insert = insertStatement(handle, index);
    for (const r of rpmIndexRows(header, index, `${name} in ${what}`))
      insert.run(r.key as SQLInputValue, hnum, r.idx);
  }
}

/**
 * rpm keys Installtid by the integer in its host's byte order; suture writes little-endian (every
 * architecture suture patches). A database whose rows are big-endian (s390x) is refused rather
 * than given a row rpm would never find.
 */
function checkInstalltidOrder(handle: DatabaseSync, what: string): void {
  const row = handle
    .prepare(
      "SELECT i.key AS key, p.blob AS blob FROM Installtid i JOIN Packages p ON p.hnum = i.hnum ORDER BY i.rowid LIMIT 1",
    )
    .get();
  if (row === undefined) return;
  const key = row.key as Uint8Array;
  const tid = parseRpmHeader(row.blob as Uint8Array, what).number(RpmTag.INSTALLTID);
  if (tid === undefined || key.length !== 4) return;
  if (new DataView(key.buffer, key.byteOffset, 4).getUint32(0, true) !== tid) {
    throw new SutureError(
      "UNSUPPORTED_OS",
      `the rpm database ${what} keys its install transactions big-endian (an s390x image?): the native engine writes little-endian databases; patch with --engine sandbox`,
    );
  }
}
