import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  mutatedBytes,
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

// Property: detection of an rpm image whose database or manifest is hostile gives a DistroInfo
// whose installed names follow rpm's syntax, or one line of INVALID_MANIFEST. Seeds: SUSE BCI's
// ndb Packages.db and an Azure Linux style manifest.
test("detection of a hostile rpm database or manifest: valid names, or one line of INVALID_MANIFEST", () => {
  const sle = readFileSync(join(import.meta.dirname, "../../../shared/fixtures/rpmdb/sle15-bci/Packages.db"));
  const manifest =
    "bash\t5.1.8-4.cm2\t1700000000\t1690000000\tMicrosoft Corporation\t(none)\t7000000\tx86_64\t0\tbash-5.1.8-4.cm2.src.rpm\n";
  const cases = fc.oneof(
    mutatedBytes(sle).map((b) => ["/usr/lib/sysimage/rpm/Packages.db", b] as const),
    hostileText([manifest]).map(
      (t) => ["/var/lib/rpmmanifest/container-manifest-2", Buffer.from(t)] as const,
    ),
  );
  fc.assert(
    fc.property(cases, ([path, content]) => {
      const distro = withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_MANIFEST"], () => detectFromFiles(new Map([[path, content]]))),
      );
      if (!distro) return;
      assert.equal(distro.packageDb, "rpm");
      for (const name of distro.installed!.keys()) assert.ok(isValidPackageName("rpm", name), name);
    }),
    fuzzParameters(60),
  );
});
