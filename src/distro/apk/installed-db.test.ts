import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { cleanFailure } from "../../../test/fuzz/fuzz.ts";
import { minirootfs, readRootfsFiles } from "../../../test/lab/alpine-rootfs.ts";
import {
  type InstalledPackage,
  installedPackage,
  installedRecordFields,
  ownedPaths,
  parseInstalledDb,
  serializeInstalledDb,
} from "./installed-db.ts";

const APK_REAL_DB = join(import.meta.dirname, "../../../../shared/fixtures/apk-real/db/installed");

/** lib/apk/db/installed of the 3.20.3 and edge x86_64 minirootfs, read with our tar reader. */
const rootfsDbs = new Map<string, Buffer>();

before(async () => {
  for (const release of ["3.20.3", "20240923"] as const) {
    const files = await readRootfsFiles(minirootfs(release, "x86_64"), (p) => p === "lib/apk/db/installed");
    rootfsDbs.set(release, files.get("lib/apk/db/installed")!);
  }
});

function versions(pkgs: InstalledPackage[]): Record<string, string> {
  return Object.fromEntries(pkgs.map((p) => [p.info.name, p.info.version]));
}

test("real installed databases round-trip byte for byte (apk-real, 3.20.3 and edge minirootfs)", () => {
  const dbs: [string, Buffer][] = [["apk-real", readFileSync(APK_REAL_DB)], ...rootfsDbs];
  for (const [name, bytes] of dbs) {
    const text = bytes.toString("utf8");
    const pkgs = parseInstalledDb(text);
    assert.ok(pkgs.length >= 14, name);
    assert.equal(serializeInstalledDb(pkgs), text, name);
    assert.ok(Buffer.from(serializeInstalledDb(pkgs), "utf8").equals(bytes), name);
  }
});

test("the 3.20.3 database says what the image has: versions, owners and modes, priorities, files", () => {
  const pkgs = parseInstalledDb(rootfsDbs.get("3.20.3")!.toString("utf8"));
  const edge = parseInstalledDb(rootfsDbs.get("20240923")!.toString("utf8"));
  // The README's table of packages with newer builds in edge.
  const old = versions(pkgs);
  const neu = versions(edge);
  const changed = Object.keys(old).filter((n) => neu[n] !== old[n]);
  assert.deepEqual(changed.sort(), [
    "alpine-baselayout",
    "alpine-baselayout-data",
    "alpine-keys",
    "apk-tools",
    "busybox",
    "busybox-binsh",
    "libcrypto3",
    "libssl3",
    "musl",
    "musl-utils",
    "ssl_client",
    "zlib",
  ]);
  assert.deepEqual([old.musl, neu.musl], ["1.2.5-r0", "1.2.5-r3"]);

  const baselayout = pkgs.find((p) => p.info.name === "alpine-baselayout")!;
  assert.equal(baselayout.info.replacesPriority, 1000);
  assert.deepEqual(
    baselayout.info.depends.map((d) => d.name),
    ["alpine-baselayout-data", "/bin/sh"],
  );
  assert.equal(baselayout.info.checksum, "Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=");
  const tmp = baselayout.dirs.find((d) => d.path === "tmp")!;
  assert.deepEqual(tmp.acl, { uid: 0, gid: 0, mode: 0o1777 });
  const crontabs = baselayout.dirs.find((d) => d.path === "etc/crontabs")!;
  assert.deepEqual(crontabs.files, [
    { name: "root", acl: { uid: 0, gid: 0, mode: 0o600 }, checksum: "Q1vfk1apUWI4yLJGhhNRd0kJixfvY=" },
  ]);
  const binsh = pkgs.find((p) => p.info.name === "busybox-binsh")!;
  assert.equal(binsh.info.providerPriority, 100);
  assert.deepEqual(
    binsh.info.provides.map((d) => d.name),
    ["/bin/sh", "cmd:sh"],
  );
  assert.deepEqual(ownedPaths(binsh), { dirs: ["bin"], files: ["bin/sh"] });
  const shadow = pkgs
    .flatMap((p) => p.dirs.flatMap((d) => d.files.map((f) => ({ path: `${d.path}/${f.name}`, acl: f.acl }))))
    .find((f) => f.path === "etc/shadow")!;
  assert.deepEqual(shadow.acl, { uid: 0, gid: 42, mode: 0o640 });
});

test("replacing one package's record leaves every other record byte-identical", () => {
  const text = rootfsDbs.get("3.20.3")!.toString("utf8");
  const pkgs = parseInstalledDb(text);
  const edgeZlib = parseInstalledDb(rootfsDbs.get("20240923")!.toString("utf8")).find(
    (p) => p.info.name === "zlib",
  )!;
  const patched = pkgs.map((p) =>
    p.info.name === "zlib" ? installedPackage(edgeZlib.fields, edgeZlib.dirs, "test") : p,
  );
  const out = serializeInstalledDb(patched);
  const records = (t: string) => t.split("\n\n");
  const before = records(text);
  const after = records(out);
  assert.equal(after.length, before.length);
  const differing = before.map((r, i) => (r === after[i] ? undefined : i)).filter((i) => i !== undefined);
  assert.equal(differing.length, 1);
  assert.match(after[differing[0]!]!, /^C:.*\nP:zlib\nV:1\.3\.1-r2\n/);
  assert.equal(versions(parseInstalledDb(out)).zlib, "1.3.1-r2");
});

test("hostile or damaged databases are refused with one line naming the line and the fix", () => {
  const head = "C:Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=\nP:demo\nV:1.0-r0\nA:x86_64\n";
  const cases: [string, RegExp][] = [
    [`${head}R:orphan\n`, /line 1\) has an R: file before any F: directory: .*apk fix/],
    [`${head}F:../../etc\n`, /has a directory "..\/..\/etc" that is not a plain relative path/],
    [`${head}F:/etc\n`, /has a directory "\/etc" that is not a plain relative path/],
    [`${head}F:etc\nR:a/b\n`, /has a file name "a\/b" that is not a plain name/],
    [`${head}F:etc\nR:..\n`, /has a file name "\.\." that is not a plain name/],
    [`${head}F:etc\nR:x\na:0:0:99999\n`, /owner and mode "0:0:99999" that is not uid:gid:octal-mode/],
    [`${head}F:etc\nM:root:0:755\n`, /owner and mode "root:0:755"/],
    [`${head}F:etc\nR:x\nZ:nope\n`, /malformed Z: checksum "nope"/],
    [`${head}\n${head}`, /lists package demo twice/],
    [`${head}P:other\n`, /has a record with 2 P: lines/],
    [
      "C:Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=\nP:demo\nV:1.0-r0\nA:x86_64/../..\n",
      /package architecture "x86_64\/..\/.."/,
    ],
    [`${head}garbage\n`, /line 5 "garbage" is not an apk field/],
  ];
  for (const [text, pattern] of cases)
    assert.throws(() => parseInstalledDb(text), cleanFailure("INVALID_ARCHIVE", pattern), text);
});

test("M:/a: with an xattr checksum and root-dir files parse and write back", () => {
  const text =
    "C:Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=\nP:demo\nV:1.0-r0\nA:x86_64\nr:old\nq:5\nf:s\nF:\nR:rootfile\nZ:Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=\nF:usr/bin\nM:0:0:755:Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=\nR:ping\na:0:0:4755:Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=\nZ:Q1qKcZ+j23xssAXmgQhkOO8dHnbWw=\n\n";
  const [pkg] = parseInstalledDb(text);
  assert.equal(serializeInstalledDb([pkg!]), text);
  assert.deepEqual(ownedPaths(pkg!), { dirs: ["usr/bin"], files: ["rootfile", "usr/bin/ping"] });
  assert.equal(pkg!.dirs[1]!.files[0]!.acl!.mode, 0o4755);
  assert.deepEqual(pkg!.info.replaces, [{ name: "old", conflict: false }]);
  assert.deepEqual(pkg!.fields.at(-1), ["f", "s"]);
});

test("installedRecordFields writes each real record's package lines as apk wrote them", () => {
  const dbs: [string, Buffer][] = [["apk-real", readFileSync(APK_REAL_DB)], ...rootfsDbs];
  let checked = 0;
  for (const [name, bytes] of dbs) {
    for (const pkg of parseInstalledDb(bytes.toString("utf8"))) {
      const tag = pkg.fields.find(([l]) => l === "s")?.[1];
      const fields = installedRecordFields(
        { ...pkg.info, checksum: pkg.info.checksum! },
        {
          replaces: pkg.info.replaces,
          ...(pkg.info.replacesPriority === undefined ? {} : { replacesPriority: pkg.info.replacesPriority }),
          ...(tag === undefined ? {} : { repositoryTag: tag }),
        },
      );
      assert.deepEqual(fields, pkg.fields, `${name} ${pkg.info.name}`);
      checked++;
    }
  }
  assert.ok(checked > 40);
});
