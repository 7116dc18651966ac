import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { requiring } from "../../../test/lab/requirements.ts";
import { buildRpm, type RpmTestKey, rpmScratch, rpmTestKey, signRpms, tool } from "../../../test/lab/rpm.ts";
import { isSutureError } from "../../errors/errors.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import { parseRpmHeader, type RpmHeader, RpmTag, rpmHeaderRawEntry } from "./header.ts";
import { type InstalledRpm, readInstalledRpms } from "./installed.ts";
import { installedRpmHeader, type RpmFileState, rpmTransactionColor } from "./installed-header.ts";
import { openRpm, type RpmPackage } from "./package.ts";

// The judge is the host's rpm 4.18: it installs the same packages and the header it
// stores is compared with the one suture builds, tag by tag and byte for byte.
const { after, before, test } = await requiring("tool:rpmbuild", "tool:rpmsign", "tool:rpm", "tool:gpg");

let scratch: Awaited<ReturnType<typeof rpmScratch>>;
let key: RpmTestKey;
/** Package name → its .rpm, opened. */
const packages = new Map<string, RpmPackage>();
/** Package name → the header the host's rpm stored for it. */
const stored = new Map<string, RpmHeader>();
let installed: InstalledRpm[];

const STATE_NAMES: readonly RpmFileState[] = [
  "normal",
  "replaced",
  "notinstalled",
  "netshared",
  "wrongcolor",
];

before(async () => {
  scratch = await rpmScratch();
  key = await rpmTestKey(scratch.dir);
  const relocatable = await buildRpm(scratch.dir, {
    name: "reloc",
    version: "1.0",
    release: "1",
    epoch: 3,
    files: [
      { path: "/opt/reloc", directory: true },
      { path: "/opt/reloc/run", content: "#!/bin/sh\necho reloc\n", mode: "0755" },
      { path: "/opt/reloc/reloc.conf", content: "a=1\n", config: true },
      { path: "/opt/reloc/README", content: "read me\n", doc: true },
      { path: "/opt/reloc/latest", symlinkTo: "run" },
      { path: "/opt/reloc/state.log", ghost: true },
    ],
    requires: ["(coreutils if bash)", "/bin/sh"],
    requiresPre: ["/bin/sh"],
    provides: ["reloc-api = 3"],
    preamble: ["Prefix: /opt", "Vendor: suture test vendor", "Group: Applications/Test"],
  });
  await signRpms(key, [relocatable]);
  const plain = await buildRpm(scratch.dir, {
    name: "plain",
    version: "2.5",
    release: "4.el9",
    files: [{ path: "/usr/share/plain/data", content: "data\n" }],
  });
  for (const path of [relocatable, plain]) {
    const pkg = await openRpm(path);
    packages.set(pkg.nevra.name, pkg);
  }
  const root = join(scratch.dir, "root");
  await mkdir(root);
  // A real install into a scratch root; --excludedocs: README is recorded as not installed, a
  // state suture must be able to write.
  await tool("rpm", [
    "--root",
    root,
    "--dbpath",
    "/var/lib/rpm",
    "-i",
    "--nodeps",
    "--noscripts",
    "--nosignature",
    "--excludedocs",
    relocatable,
    plain,
  ]);
  const bytes = await readFile(join(root, "var/lib/rpm/rpmdb.sqlite"));
  for (const record of readSqlitePackages(bytes, undefined, "rpmdb")) {
    const header = parseRpmHeader(record.blob, "rpmdb");
    stored.set(header.string(RpmTag.NAME)!, header);
  }
  installed = readInstalledRpms({ path: "/rpmdb.sqlite", backend: "sqlite" }, () => bytes);
});
after(() => scratch?.remove());

/** What suture builds for `name`, stamped with the time, transaction and color rpm used. */
function suturesHeader(name: string): Uint8Array {
  const real = stored.get(name)!;
  return installedRpmHeader(
    packages.get(name)!,
    {
      time: real.number(RpmTag.INSTALLTIME)!,
      tid: real.number(RpmTag.INSTALLTID)!,
      color: real.number(RpmTag.INSTALLCOLOR)!,
    },
    real.numberArray(RpmTag.FILESTATES).map((s) => STATE_NAMES[s]!),
  );
}

for (const name of ["reloc", "plain"]) {
  test(`${name}: the installed header is the one rpm 4.18 stores, tag for tag and byte for byte`, () => {
    const real = stored.get(name)!;
    const mine = parseRpmHeader(suturesHeader(name), "suture's header");
    assert.deepEqual(
      mine.entries.map((e) => e.tag),
      real.entries.map((e) => e.tag),
    );
    for (const e of real.entries) {
      assert.deepEqual(rpmHeaderRawEntry(mine, e.tag), rpmHeaderRawEntry(real, e.tag), `tag ${e.tag}`);
    }
    assert.ok(Buffer.from(mine.blob).equals(Buffer.from(real.blob)));
    // The immutable region is the package's own: its digest is still the package's SHA256HEADER.
    assert.deepEqual(mine.regionBytes(), packages.get(name)!.header.regionBytes());
  });
}

test("the signed, relocatable package carries its signature, its prefixes and a not-installed doc file", () => {
  const mine = parseRpmHeader(suturesHeader("reloc"), "suture's header");
  const sig = packages.get("reloc")!.signatureHeader;
  assert.ok(Buffer.from(mine.binary(RpmTag.RSAHEADER)!).equals(Buffer.from(sig.binary(268)!)));
  assert.equal(mine.string(RpmTag.SHA256HEADER), sig.string(273));
  assert.deepEqual(mine.stringArray(RpmTag.INSTPREFIXES), ["/opt"]);
  const files = packages.get("reloc")!.files.map((f) => f.path);
  const states = mine.numberArray(RpmTag.FILESTATES);
  assert.equal(states[files.indexOf("/opt/reloc/README")], 2);
  assert.equal(states[files.indexOf("/opt/reloc/run")], 0);
});

test("the transaction color is the one the database's packages were installed with", () => {
  const color = stored.get("plain")!.number(RpmTag.INSTALLCOLOR)!;
  assert.equal(rpmTransactionColor(installed, "noarch"), color);
  // An empty database: rpm's platform default (Debian's rpm runs as x86_64 here).
  assert.equal(rpmTransactionColor([], "x86_64"), 3);
  assert.equal(rpmTransactionColor([], "armv7hl"), 0);
});

test("file states must be one per file of the package", () => {
  assert.throws(
    () => installedRpmHeader(packages.get("reloc")!, { time: 1, tid: 1 }, ["normal"]),
    (e) => isSutureError(e, "INTERNAL") && /1 file states for 6 files/.test(e.message),
  );
});
