import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  HOSTILE_TOKENS,
  mutatedBytes,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  withinBudget,
} from "../../../../test/fuzz/fuzz.ts";
import { parseRpmHeader } from "../header.ts";
import { readSqlitePackages } from "./sqlite.ts";
import { RPM_INDEXES, richDependencyKeys, rpmIndexRows } from "./write-index.ts";

// Property: the index rows of an untrusted header (an image's database, a downloaded package)
// are computed, or the header is refused with one line of INVALID_ARCHIVE, within a time budget;
// a rich dependency, whatever its text, gives a list of keys and never throws.

const MARINER_DB = join(
  import.meta.dirname,
  "../../../../../shared/fixtures/rpmdb/cbl-mariner-2.0/rpmdb.sqlite",
);

test("mutated real headers give their index rows or fail with one line of INVALID_ARCHIVE", () => {
  const records = readSqlitePackages(readFileSync(MARINER_DB), undefined, "rpmdb.sqlite");
  const [small, large] = records
    .filter((r) => r.recordNumber === 1 || r.recordNumber === 3)
    .map((r) => Buffer.from(r.blob));
  fc.assert(
    fc.property(fc.oneof(mutatedBytes(small!), mutatedBytes(large!)), (bytes) => {
      withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_ARCHIVE"], () => {
          const header = parseRpmHeader(bytes, "fuzzed header");
          for (const index of RPM_INDEXES) rpmIndexRows(header, index, "fuzzed header");
        }),
      );
    }),
    fuzzParameters(200),
  );
});

test("any rich dependency text gives keys and never throws", () => {
  const token = fc.oneof(
    fc.constantFrom(
      "(",
      ")",
      " ",
      ",",
      "and",
      "or",
      "if",
      "else",
      "unless",
      "with",
      "without",
      ">=",
      "=",
      "rpmlib(x)",
      "a",
      "b(c)",
    ),
    fc.constantFrom(...HOSTILE_TOKENS),
    fc.string({ maxLength: 8 }),
  );
  fc.assert(
    fc.property(fc.array(token, { maxLength: 40 }), (tokens) => {
      const keys = withinBudget(PARSE_BUDGET_MS, () => richDependencyKeys(`(${tokens.join(" ")})`));
      for (const k of keys)
        if (typeof k !== "string" || k === "" || k.startsWith(" ")) throw new Error(`bad key ${k}`);
    }),
    fuzzParameters(500),
  );
});
