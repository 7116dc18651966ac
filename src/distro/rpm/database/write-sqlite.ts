import { mkdtempSync, readFileSync, rmSync, type Stats, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { describeCause, isSutureError, SutureError } from "../../../errors/errors.ts";
import { READ_POLICY, readFileInRoot, walkInRoot } from "../../../fs/in-root.ts";
import { parseRpmHeader, type RpmHeader, RpmTag } from "../header.ts";
import type { RpmDatabaseLocation } from "../installed.ts";
import { damagedDb } from "./records.ts";
import { isSqliteDb } from "./sqlite.ts";
import type { RpmDatabaseChange } from "./write.ts";
import { replaceImageFile } from "./write-file.ts";
import { RPM_INDEXES, type RpmIndex, rpmIndexRows } from "./write-index.ts";

/**
 * Writing rpm's sqlite backend (`rpmdb.sqlite`) as rpm 4.18's lib/rpmdb.c and
 * lib/backend/sqlite.c write it: a package is a row `Packages(hnum, blob)` (hnum from SQLite's
 * AUTOINCREMENT, so `rpm -qa` lists it last, as after an rpm upgrade) plus its rows in the 18
 * index tables; a removed package's rows go from all of them. Everything happens in one
 * transaction.
 *
 * The image's file is never opened by SQLite in place: SQLite creates -wal/-shm/-journal files
 * beside a database it opens and follows symlinks on its own. The database (with its -wal and a
 * hot -journal, so SQLite replays or rolls back what rpm left exactly as rpm's SQLite would) is
 * copied into a private directory, changed there, checkpointed and closed, and the finished file
 * is renamed over the image's (src/fs/atomic.ts) with the original's mode and owner. The journal
 * mode is the file's own (rpm sets WAL; it is recorded in the file and left as it was). A -wal
 * the image had with frames in it is emptied, since its frames are now in the file (replaying
 * them would undo the change); an empty one is left, as rpm leaves it; a hot journal is removed
 * for the same reason.
 */

/** Tables and columns rpm creates; anything else in the schema (triggers, views) is refused. */
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
  const sidecars = {
    wal: await sidecar(root, `${location.path}-wal`),
    journal: await sidecar(root, `${location.path}-journal`),
  };

  const dir = mkdtempSync(join(tmpdir(), "suture-rpmdb-write-"));
  let written: Buffer;
  try {
    const file = join(dir, "rpmdb.sqlite");
    writeFileSync(file, db, { mode: 0o600 });
    if (sidecars.wal?.bytes.length) writeFileSync(`${file}-wal`, sidecars.wal.bytes, { mode: 0o600 });
    if (sidecars.journal?.bytes.length)
      writeFileSync(`${file}-journal`, sidecars.journal.bytes, { mode: 0o600 });
    applyChange(file, what, change);
    written = readFileSync(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  await replaceImageFile(dbHost, walk.stat, written, what);
  if (sidecars.wal !== undefined && sidecars.wal.bytes.length > 0) {
    await replaceImageFile(sidecars.wal.host, sidecars.wal.stat, Buffer.alloc(0), `${what}-wal`);
  }
  if (sidecars.journal !== undefined && sidecars.journal.bytes.length > 0) {
    await rm(sidecars.journal.host, { force: true }).catch((e) => {
      throw new SutureError("IO", `cannot remove ${what}-journal in the image: ${describeCause(e)}`, {
        cause: e,
      });
    });
  }
}

interface Sidecar {
  host: string;
  stat: Stats;
  bytes: Buffer;
}

/** A file beside the database (its -wal or -journal), when the image has one. */
async function sidecar(root: string, path: string): Promise<Sidecar | undefined> {
  const walk = walkInRoot(root, path, READ_POLICY);
  if (walk.kind !== "found" || !walk.stat.isFile()) return undefined;
  const bytes = await readFileInRoot(root, path);
  return bytes === undefined ? undefined : { host: walk.host, stat: walk.stat, bytes };
}

/** Open the private copy, check its schema, apply the change in one transaction, checkpoint. */
function applyChange(file: string, what: string, change: RpmDatabaseChange): void {
  let handle: DatabaseSync | undefined;
  try {
    // rpm leaves foreign keys unenforced (its deletes run Packages first).
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

function removePackages(handle: DatabaseSync, change: RpmDatabaseChange, what: string): void {
  const get = handle.prepare("SELECT blob FROM Packages WHERE hnum = ?");
  for (const pkg of change.remove) {
    const row = get.get(pkg.recordNumber);
    const stored = row?.blob as Uint8Array | undefined;
    // The package must still be the one that was read: anything else means the database changed
    // under the patch, and deleting by number would remove another package.
    if (stored === undefined || (pkg.header && !Buffer.from(stored).equals(Buffer.from(pkg.header.blob)))) {
      throw new SutureError(
        "INTERNAL",
        `package record ${pkg.recordNumber} of ${what} is no longer ${pkg.nevra.name}: the database changed while it was patched`,
      );
    }
    handle.prepare("DELETE FROM Packages WHERE hnum = ?").run(pkg.recordNumber);
    for (const index of RPM_INDEXES) {
      handle.prepare(`DELETE FROM '${index.table}' WHERE hnum = ?`).run(pkg.recordNumber);
    }
  }
}

function addPackage(handle: DatabaseSync, blob: Uint8Array, what: string): void {
  const header: RpmHeader = parseRpmHeader(blob, `a package added to ${what}`);
  const result = handle.prepare("INSERT INTO Packages VALUES (NULL, ?)").run(blob);
  const hnum = Number(result.lastInsertRowid);
  if (hnum > 0xffffffff) throw damagedDb(what, "its package numbers have run past rpm's 32-bit limit");
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
