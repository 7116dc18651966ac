import assert from "node:assert/strict";
import { before, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  withinBudget,
} from "../../test/fuzz/fuzz.ts";
import { minirootfs, readRootfsFiles } from "../../test/lab/alpine-rootfs.ts";
import { detectFromFiles } from "./detect.ts";
import { isValidPackageName } from "./package-syntax.ts";

// Property: detection of an apk image whose installed db is hostile gives a DistroInfo or one line
// of INVALID_MANIFEST (the installed-db reader's own fuzz test covers the reader; this one the
// code detection turns its refusals into), within a time budget. Seed: Alpine 3.20.3's files.

let seed: Map<string, Buffer>;

before(async () => {
  const files = await readRootfsFiles(minirootfs("3.20.3", "x86_64"), (p) =>
    [
      "lib/apk/db/installed",
      "etc/os-release",
      "etc/apk/repositories",
      "etc/apk/arch",
      "etc/apk/world",
    ].includes(p),
  );
  seed = new Map([...files].map(([p, c]) => [`/${p}`, c]));
  seed.set("/sbin/apk", Buffer.from("\x7fELF"));
  assert.equal(seed.size, 6);
});

test("detection of a hostile apk database: packages with valid names, or one line of INVALID_MANIFEST", () => {
  fc.assert(
    fc.property(hostileText([seed.get("/lib/apk/db/installed")!.toString("utf8")]), (db) => {
      const files = new Map(seed);
      files.set("/lib/apk/db/installed", Buffer.from(db));
      const distro = withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_MANIFEST"], () => detectFromFiles(files)),
      );
      if (!distro) return;
      assert.equal(distro.packageDb, "apk");
      for (const name of distro.installed!.keys()) assert.ok(isValidPackageName("apk", name), name);
    }),
    fuzzParameters(150),
  );
});
