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
} from "../../../../../test/fuzz/fuzz.ts";
import { readSqlitePackages } from "../../../../distro/rpm/database/sqlite.ts";
import { parseRpmHeader } from "../../../../distro/rpm/header.ts";
import { capabilityXattr } from "../../../../fs/capabilities.ts";
import { rpmHeaderFileTriggers, rpmHeaderTriggers, scriptNeed } from "./scripts.ts";

// Properties: the triggers of an untrusted header (an image's rpm database, a downloaded
// package) read as a list or fail with one line of INVALID_ARCHIVE; a package's capabilities
// text becomes an attribute value or fails the same way. Seed: CBL-Mariner 2.0's cracklib, whose
// installed header carries %triggerin/%triggerun entries.

const MARINER_DB = join(
  import.meta.dirname,
  "../../../../../../shared/fixtures/rpmdb/cbl-mariner-2.0/rpmdb.sqlite",
);

function seed(): Buffer {
  const records = readSqlitePackages(readFileSync(MARINER_DB), undefined, "rpmdb.sqlite");
  return Buffer.from(records.find((r) => r.recordNumber === 36)!.blob);
}

test("mutated real headers give their triggers or fail with one line of INVALID_ARCHIVE", () => {
  const blob = seed();
  fc.assert(
    fc.property(mutatedBytes(blob), (bytes) => {
      withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_ARCHIVE"], () => {
          const h = parseRpmHeader(bytes, "fuzzed header");
          for (const t of rpmHeaderTriggers(h, "fuzzed header")) scriptNeed(t.script);
          for (const trans of [false, true])
            for (const t of rpmHeaderFileTriggers(h, trans, "fuzzed header")) scriptNeed(t.script);
        }),
      );
    }),
    fuzzParameters(300),
  );
});

test("any capabilities text becomes an xattr value or fails with one line of INVALID_ARCHIVE", () => {
  const token = fc.oneof(
    fc.constantFrom("cap_net_raw", "cap_bpf", "all", "=", "+", "-", "e", "i", "p", ",", " ", "63", "64", ""),
    fc.constantFrom(...HOSTILE_TOKENS),
    fc.string({ maxLength: 8 }),
  );
  fc.assert(
    fc.property(fc.array(token, { maxLength: 24 }), (parts) => {
      withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_ARCHIVE"], () => capabilityXattr(parts.join(""))),
      );
    }),
    fuzzParameters(500),
  );
});
