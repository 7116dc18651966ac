import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import {
  exportRpmHeader,
  parseRpmHeader,
  RpmTag,
  rpmHeaderRawEntry,
  rpmInt32Addition,
  rpmStringsAddition,
} from "./header.ts";

const MARINER = join(import.meta.dirname, "../../../../shared/fixtures/rpmdb/cbl-mariner-2.0/rpmdb.sqlite");

test("every header CBL-Mariner's rpm stored is its region plus its added tags, laid out as exportRpmHeader lays them out", () => {
  const records = readSqlitePackages(readFileSync(MARINER), undefined, "rpmdb.sqlite");
  assert.equal(records.length, 129);
  for (const record of records) {
    const stored = parseRpmHeader(record.blob, "stored");
    // The package's own header (what its .rpm carried), and what rpm added at install.
    const region = parseRpmHeader(stored.regionBytes().subarray(8), "region", { exactSize: true });
    const added = stored.entries
      .filter((e) => !e.inRegion)
      .map((e) => ({ tag: e.tag, ...rpmHeaderRawEntry(stored, e.tag)! }));
    assert.ok(added.some((a) => a.tag === RpmTag.INSTALLTIME));
    assert.ok(
      Buffer.from(exportRpmHeader(region, added)).equals(Buffer.from(record.blob)),
      `record ${record.recordNumber}`,
    );
  }
});

test("additions are sorted by tag and aligned for their type, and a tag cannot be added twice", () => {
  const [record] = readSqlitePackages(readFileSync(MARINER), undefined, "rpmdb.sqlite");
  const region = parseRpmHeader(parseRpmHeader(record!.blob, "stored").regionBytes().subarray(8), "region", {
    exactSize: true,
  });
  const blob = exportRpmHeader(region, [
    rpmInt32Addition(RpmTag.INSTALLTIME, [7]),
    rpmStringsAddition(RpmTag.INSTPREFIXES, ["/x"]),
  ]);
  const header = parseRpmHeader(blob, "exported");
  assert.deepEqual(
    header.entries.filter((e) => !e.inRegion).map((e) => e.tag),
    [RpmTag.INSTALLTIME, RpmTag.INSTPREFIXES],
  );
  assert.equal(header.number(RpmTag.INSTALLTIME), 7);
  assert.deepEqual(header.stringArray(RpmTag.INSTPREFIXES), ["/x"]);
  assert.equal(header.entry(RpmTag.INSTALLTIME)!.offset % 4, 0);
  assert.throws(
    () => exportRpmHeader(region, [rpmStringsAddition(RpmTag.NAME, ["other"])]),
    (e) => isSutureError(e, "INTERNAL"),
  );
  assert.throws(
    () =>
      exportRpmHeader(region, [
        rpmInt32Addition(RpmTag.INSTALLTIME, [1]),
        rpmInt32Addition(RpmTag.INSTALLTIME, [2]),
      ]),
    (e) => isSutureError(e, "INTERNAL"),
  );
});
