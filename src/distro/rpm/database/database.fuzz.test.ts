import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  mutatedBytes,
  mutatedText,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  withinBudget,
} from "../../../../test/fuzz/fuzz.ts";
import { RPM_MANIFEST_PATH, type RpmDatabaseLocation, readInstalledRpms } from "../installed.ts";
import { readSqlitePackages } from "./sqlite.ts";

// Properties: an image's rpm database, untrusted, in each backend — ndb, Berkeley DB hash,
// sqlite, and Azure Linux's manifest — either reads (every header parsed, every identity
// checked) or fails with one line of INVALID_ARCHIVE, within a time budget. Seeds are real: SUSE
// BCI's Packages.db, a Berkeley DB file written by db5.3_load, CBL-Mariner's rpmdb.sqlite.

const FIXTURES = join(import.meta.dirname, "../../../../../shared/fixtures/rpmdb");
const work = mkdtempSync(join(tmpdir(), "suture-rpmdb-fuzz-"));
after(() => rmSync(work, { recursive: true, force: true }));

function readsOrFailsCleanly(location: RpmDatabaseLocation, bytes: Uint8Array): void {
  withinBudget(PARSE_BUDGET_MS, () =>
    parsesOrFailsCleanly(["INVALID_ARCHIVE"], () =>
      readInstalledRpms(location, (p) => (p === location.path ? bytes : undefined)),
    ),
  );
}

test("mutated ndb Packages.db reads or fails with one line", () => {
  const seed = readFileSync(join(FIXTURES, "sle15-bci/Packages.db"));
  const location: RpmDatabaseLocation = { path: "/usr/lib/sysimage/rpm/Packages.db", backend: "ndb" };
  fc.assert(
    fc.property(mutatedBytes(seed), (bytes) => readsOrFailsCleanly(location, bytes)),
    fuzzParameters(60),
  );
});

test("mutated Berkeley DB Packages reads or fails with one line", () => {
  const seed = readFileSync(join(import.meta.dirname, "../testdata/Packages-be-512"));
  const location: RpmDatabaseLocation = { path: "/var/lib/rpm/Packages", backend: "bdb" };
  fc.assert(
    fc.property(mutatedBytes(seed), (bytes) => readsOrFailsCleanly(location, bytes)),
    fuzzParameters(300),
  );
});

test("mutated rpmdb.sqlite reads or fails with one line", () => {
  // A small real database: three of CBL-Mariner's headers in rpm's Packages table.
  const records = readSqlitePackages(
    readFileSync(join(FIXTURES, "cbl-mariner-2.0/rpmdb.sqlite")),
    undefined,
    "seed",
  );
  const file = join(work, "seed.sqlite");
  const db = new DatabaseSync(file);
  db.exec("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)");
  for (const r of records.slice(0, 3))
    db.prepare("INSERT INTO Packages VALUES (?, ?)").run(r.recordNumber, r.blob);
  db.close();
  const seed = readFileSync(file);
  const location: RpmDatabaseLocation = { path: "/var/lib/rpm/rpmdb.sqlite", backend: "sqlite" };
  fc.assert(
    fc.property(mutatedBytes(seed), (bytes) => readsOrFailsCleanly(location, bytes)),
    fuzzParameters(60),
  );
});

test("mutated container-manifest-2 reads or fails with one line", () => {
  const seed = [
    "bash\t5.1.8-4.cm2\t1700000000\t1690000000\tMicrosoft Corporation\t(none)\t7000000\tx86_64\t0\tbash-5.1.8-4.cm2.src.rpm",
    "tar\t1.34-2.cm2\t1700000000\t1690000000\tMicrosoft Corporation\t2\t3000000\tx86_64\t2\ttar-1.34-2.cm2.src.rpm",
    "",
  ].join("\n");
  const location: RpmDatabaseLocation = { path: RPM_MANIFEST_PATH, backend: "manifest" };
  fc.assert(
    fc.property(mutatedText(seed), (text) => readsOrFailsCleanly(location, Buffer.from(text, "utf8"))),
    fuzzParameters(300),
  );
});
