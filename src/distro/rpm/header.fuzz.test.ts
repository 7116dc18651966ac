import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  mutatedBytes,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  withinBudget,
} from "../../../test/fuzz/fuzz.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import { parseRpmHeader, type RpmHeader, RpmType } from "./header.ts";
import { rpmHeaderDependencies, rpmHeaderFiles, rpmHeaderScriptlets } from "./header-contents.ts";

// Property: a header blob, untrusted (an image's rpm database, a downloaded package), either
// parses, and then every tag reads through its typed accessor, or fails with one line of
// INVALID_ARCHIVE, within a time budget. Seeds: real installed headers of CBL-Mariner 2.0.

const MARINER_DB = join(
  import.meta.dirname,
  "../../../../shared/fixtures/rpmdb/cbl-mariner-2.0/rpmdb.sqlite",
);

function seeds(): Buffer[] {
  // Small and large headers: mariner-release (few files) and glibc, read from a private copy.
  const records = readSqlitePackages(readFileSync(MARINER_DB), undefined, "rpmdb.sqlite");
  return records.filter((r) => r.recordNumber === 1 || r.recordNumber === 3).map((r) => Buffer.from(r.blob));
}

function readEveryTag(h: RpmHeader): void {
  for (const e of h.entries) {
    if (e.type === RpmType.BIN) h.binary(e.tag);
    else if (e.type >= RpmType.STRING) h.stringArray(e.tag);
    else h.numberArray(e.tag);
    if (e.type === RpmType.STRING) h.string(e.tag);
  }
  if (h.regionTag !== undefined) h.regionBytes();
  rpmHeaderFiles(h, "fuzzed header");
  for (const kind of ["require", "provide", "conflict", "obsolete"] as const)
    rpmHeaderDependencies(h, kind, "fuzzed header");
  rpmHeaderScriptlets(h);
}

test("mutated real header blobs parse and read, or fail with one line of INVALID_ARCHIVE", () => {
  const [small, large] = seeds();
  fc.assert(
    fc.property(fc.oneof(mutatedBytes(small!), mutatedBytes(large!)), (bytes) => {
      withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_ARCHIVE"], () => readEveryTag(parseRpmHeader(bytes, "fuzzed header"))),
      );
    }),
    fuzzParameters(300),
  );
});
