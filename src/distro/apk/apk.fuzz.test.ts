import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  mutatedBytes,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  parsesOrFailsCleanlyAsync,
  withinBudget,
} from "../../../test/fuzz/fuzz.ts";
import { minirootfs, readRootfsFiles } from "../../../test/lab/alpine-rootfs.ts";
import { apkTestKey, buildApk, buildApkIndex } from "../../../test/lab/apk.ts";
import { isValidPackageName } from "../package-syntax.ts";
import { openApkIndex, parseApkIndex } from "./apkindex.ts";
import { parseInstalledDb, serializeInstalledDb } from "./installed-db.ts";
import { openApk } from "./package.ts";
import { apkKeyring } from "./signature.ts";

// Properties: APKINDEX text, the installed database, a signed APKINDEX.tar.gz and an .apk, all
// untrusted, either parse or fail with one line of a stable code, within a time budget; and a
// mutated signed index or package never yields content other than what was signed. Seeds are
// real: the start of Alpine's v3.16 index, the 3.20.3 minirootfs database, melange's package.

const APK_REAL = join(import.meta.dirname, "../../../../shared/fixtures/apk-real");

let indexText: string;
let dbText: string;
let work: string;
const key = apkTestKey("fuzz.rsa.pub", 1024);
const ring = apkKeyring([{ name: key.name, pem: key.publicPem }], "fuzz");

before(async () => {
  const real = readFileSync(join(APK_REAL, "alpine-316-aarch64/APKINDEX.tar.gz"));
  const opened = await openApkIndex(real, apkKeyring([], "none"), "seed").catch(() => undefined);
  assert.equal(opened, undefined, "the seed index must not open without its key");
  // The first records of the real index text (the second gzip member's APKINDEX), as the seed.
  const { gunzipSync } = await import("node:zlib");
  const tar = gunzipSync(real.subarray(667));
  const text = tar.toString("utf8");
  const start = text.indexOf("C:Q1");
  indexText = text.slice(start, text.indexOf("\n\n", start + 6000) + 2);
  const dbs = await readRootfsFiles(minirootfs("3.20.3", "x86_64"), (p) => p === "lib/apk/db/installed");
  dbText = dbs.get("lib/apk/db/installed")!.toString("utf8");
  work = mkdtempSync(join(tmpdir(), "suture-apk-fuzz-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

test("APKINDEX text: entries with valid identities, or one line of INVALID_ARCHIVE", () => {
  fc.assert(
    fc.property(hostileText([indexText]), (text) => {
      const entries = withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_ARCHIVE"], () => parseApkIndex(text, "fuzz")),
      );
      for (const e of entries ?? []) {
        assert.ok(isValidPackageName("apk", e.name), e.name);
        assert.match(e.checksum, /^Q[12]/);
      }
    }),
    fuzzParameters(200),
  );
});

test("installed db: parses (and writes back stably) or fails with one line of INVALID_ARCHIVE", () => {
  fc.assert(
    fc.property(hostileText([dbText]), (text) => {
      const pkgs = withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_ARCHIVE"], () => parseInstalledDb(text)),
      );
      if (!pkgs) return;
      const written = serializeInstalledDb(pkgs);
      assert.equal(serializeInstalledDb(parseInstalledDb(written)), written);
      for (const p of pkgs)
        for (const d of p.dirs) {
          assert.ok(!d.path.split("/").includes(".."), d.path);
          for (const f of d.files) assert.ok(!f.name.includes("/"), f.name);
        }
    }),
    fuzzParameters(150),
  );
});

test("signed APKINDEX.tar.gz: a mutated index opens only with the signed content", async () => {
  const seedText = indexText.slice(0, indexText.indexOf("\n\n", 1500) + 2);
  const seed = buildApkIndex(seedText, key);
  const expected = (await openApkIndex(seed, ring, "seed")).packages;
  await fc.assert(
    fc.asyncProperty(mutatedBytes(seed), async (bytes) => {
      const index = await parsesOrFailsCleanlyAsync(["UNTRUSTED", "INVALID_ARCHIVE", "TOO_LARGE"], () =>
        openApkIndex(bytes, ring, "fuzz", { maxIndexBytes: 1024 * 1024 }),
      );
      if (index) assert.deepEqual(index.packages, expected);
    }),
    fuzzParameters(150),
  );
});

test(".apk: a mutated package opens and reads, or fails cleanly; read data is what its datahash says", async () => {
  const built = buildApk({
    pkginfo:
      "pkgname = demo\npkgver = 1.0-r0\narch = x86_64\ndepend = so:libc.musl-x86_64.so.1\ntriggers = /usr/lib/demo\n",
    scripts: [{ name: ".post-upgrade", data: "#!/bin/sh\nexit 0\n", mode: 0o755 }],
    files: [
      { name: "usr", type: "directory" },
      { name: "usr/bin/demo", data: "demo\n".repeat(40), mode: 0o755 },
      { name: "usr/bin/alias", type: "symlink", linkname: "demo" },
    ],
    key,
  });
  const seeds = [built.bytes, readFileSync(join(APK_REAL, "replaces-0.0.1-r0.apk"))];
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...seeds).chain((s) => mutatedBytes(s)),
      async (bytes) => {
        const path = join(work, `p${n++ % 4}.apk`);
        writeFileSync(path, bytes);
        await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE", "UNTRUSTED", "TOO_LARGE"], async () => {
          const pkg = await openApk(path, { maxUnpackedBytes: 1024 * 1024 });
          const seen: string[] = [];
          for await (const e of pkg.dataEntries()) {
            for await (const _ of e.body) void _;
            seen.push(e.header.path);
          }
          // Reading completed, so the data member hashes to the control segment's datahash; when
          // that control segment is the signed one, the data is the seed's.
          if (pkg.controlChecksum === built.checksum)
            assert.deepEqual(seen, ["usr/", "usr/bin/demo", "usr/bin/alias"]);
        });
      },
    ),
    fuzzParameters(120),
  );
});

// Regression (found by the property above): a truncated data member failed inside a file's body,
// where the consumer reads, with zlib's raw "unexpected end of file" instead of a SutureError.
test("a package whose data member is cut short fails with UNTRUSTED while a body is read", async () => {
  const real = readFileSync(join(APK_REAL, "replaces-0.0.1-r0.apk"));
  const path = join(work, "truncated.apk");
  writeFileSync(path, real.subarray(0, 280 + 419));
  const pkg = await openApk(path);
  await assert.rejects(
    (async () => {
      for await (const e of pkg.dataEntries()) for await (const _ of e.body) void _;
    })(),
    (e) => {
      assert.ok(e instanceof Error && "code" in e && e.code === "UNTRUSTED", String(e));
      assert.match(e.message, /has data with SHA-256 [0-9a-f]{64} where its \.PKGINFO says 71b14cc9/);
      return true;
    },
  );
});
