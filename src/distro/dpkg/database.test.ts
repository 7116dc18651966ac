import assert from "node:assert/strict";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { parseFields } from "./control.ts";
import {
  fieldValue,
  formatStanza,
  installedFromFiles,
  installedPackages,
  orderStatusFields,
  parseDiversions,
  readDpkgDatabase,
  readInstalledPackages,
  withField,
} from "./database.ts";

const BASE = `Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.

`;
const LIBFOO = `Package: libfoo1
Status: hold ok installed
Architecture: amd64
Multi-Arch: same
Version: 1.0-1
Description: foo library

`;
const TOOL = `Package: tool
Status: install ok installed
Architecture: amd64
Version: 2.0-1
Conffiles:
 /etc/tool.conf 0123456789abcdef0123456789abcdef
 /etc/tool-old.conf fedcba9876543210fedcba9876543210 obsolete
Description: a tool
Homepage: https://example.org

`;

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-dpkgdb-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

function classicRoot(name: string): string {
  const root = join(work, name);
  const dpkg = join(root, "var/lib/dpkg");
  mkdirSync(join(dpkg, "info"), { recursive: true });
  mkdirSync(join(dpkg, "updates"), { recursive: true });
  writeFileSync(join(dpkg, "status"), BASE + LIBFOO + TOOL);
  writeFileSync(join(dpkg, "info/libfoo1:amd64.list"), "/.\n/usr\n/usr/lib\n/usr/lib/libfoo.so.1\n");
  writeFileSync(join(dpkg, "info/libfoo1:amd64.shlibs"), "libfoo 1 libfoo1\n");
  writeFileSync(join(dpkg, "info/libfoo1:amd64.triggers"), "activate-noawait ldconfig\n");
  writeFileSync(join(dpkg, "info/tool.list"), "/.\n/usr\n/usr/bin\n/usr/bin/tool\n/etc/tool.conf\n");
  writeFileSync(join(dpkg, "info/tool.postinst"), "#!/bin/sh\n");
  // A package whose name starts with "tool." must not be mistaken for tool's files.
  writeFileSync(join(dpkg, "info/tool.d-extra.list"), "/usr/share/tool.d\n");
  writeFileSync(
    join(dpkg, "diversions"),
    "/usr/bin/tool\n/usr/bin/tool.real\nother\n/etc/x\n/etc/x.local\n:\n",
  );
  writeFileSync(join(dpkg, "statoverride"), "root ssl-cert 710 /etc/ssl/private\n");
  return root;
}

test("a classic database reads: stanzas, multi-arch info names, lists, diversions, statoverrides", async () => {
  const db = await readDpkgDatabase(classicRoot("read"));
  assert.equal(db.layout, "classic");
  assert.deepEqual(
    db.packages.map((p) => `${p.name} ${p.version} ${p.status}`),
    [
      "base-files 12.4+deb12u5 install ok installed",
      "libfoo1 1.0-1 hold ok installed",
      "tool 2.0-1 install ok installed",
    ],
  );
  const libfoo = db.find("libfoo1", "amd64")!;
  assert.deepEqual(await db.fileList(libfoo), ["/.", "/usr", "/usr/lib", "/usr/lib/libfoo.so.1"]);
  assert.equal((await db.readInfoFile(libfoo, "shlibs"))?.toString(), "libfoo 1 libfoo1\n");
  assert.deepEqual(db.find("tool")!.conffiles, [
    {
      path: "/etc/tool.conf",
      hash: "0123456789abcdef0123456789abcdef",
      obsolete: false,
      removeOnUpgrade: false,
    },
    {
      path: "/etc/tool-old.conf",
      hash: "fedcba9876543210fedcba9876543210",
      obsolete: true,
      removeOnUpgrade: false,
    },
  ]);
  assert.deepEqual(db.diversions, [
    { path: "/usr/bin/tool", divertTo: "/usr/bin/tool.real", package: "other" },
    { path: "/etc/x", divertTo: "/etc/x.local", package: undefined },
  ]);
  assert.equal(db.diversionFor("/usr/bin/tool", "tool")?.divertTo, "/usr/bin/tool.real");
  assert.equal(
    db.diversionFor("/usr/bin/tool", "other"),
    undefined,
    "a package's own diversion does not apply to it",
  );
  assert.equal(db.diversionFor("/etc/x", "tool")?.divertTo, "/etc/x.local");
  assert.deepEqual(db.statOverrides, [
    { user: "root", group: "ssl-cert", mode: 0o710, path: "/etc/ssl/private" },
  ]);
  assert.deepEqual(await db.ownersOf("/usr"), ["libfoo1:amd64", "tool"]);
  assert.deepEqual(await db.ownersOf("/usr", "tool"), ["libfoo1:amd64"]);
});

test("replacing one stanza leaves every other byte of the status file as it was; new packages go in name order", async () => {
  const root = classicRoot("write");
  const db = await readDpkgDatabase(root);
  const old = db.find("libfoo1", "amd64")!;
  const fields = withField(withField(old.fields, "Version", "1.0-2"), "Status", "hold ok unpacked");
  db.setPackage(orderStatusFields(withField(fields, "Config-Version", "1.0-1")));
  db.setPackage(parseFields("Package: aaa\nStatus: install ok unpacked\nArchitecture: all\nVersion: 1\n"));
  db.setPackage(parseFields("Package: zzz\nStatus: install ok unpacked\nArchitecture: all\nVersion: 1\n"));
  await db.commit();
  const text = readFileSync(join(root, "var/lib/dpkg/status"), "utf8");
  const newLibfoo = LIBFOO.replace("hold ok installed", "hold ok unpacked").replace(
    "Version: 1.0-1\n",
    "Version: 1.0-2\nConfig-Version: 1.0-1\n",
  );
  assert.equal(
    text,
    "Package: aaa\nStatus: install ok unpacked\nArchitecture: all\nVersion: 1\n\n" +
      BASE +
      newLibfoo +
      TOOL +
      "Package: zzz\nStatus: install ok unpacked\nArchitecture: all\nVersion: 1\n\n",
  );
  // Read back through the same parser dpkg-style tools use.
  const again = await readDpkgDatabase(root);
  assert.equal(again.find("libfoo1", "amd64")?.version, "1.0-2");
});

test("info files are written under the multi-arch name and stale ones removed, others untouched", async () => {
  const root = classicRoot("info");
  const db = await readDpkgDatabase(root);
  const libfoo = db.find("libfoo1", "amd64")!;
  const info = join(root, "var/lib/dpkg/info");
  // A planted symlink is replaced, never written through.
  const outside = join(work, "outside-target");
  writeFileSync(outside, "keep me");
  symlinkSync(outside, join(info, "libfoo1:amd64.md5sums"));
  // Read (and kept) before the write: what is written replaces what was read.
  assert.deepEqual(await db.ownersOf("/usr/lib/libfoo.so.1"), ["libfoo1:amd64"]);
  await db.writeInfoFiles(
    libfoo,
    new Map([
      ["list", Buffer.from("/.\n/usr\n/usr/lib\n/usr/lib/libfoo.so.1.1\n")],
      ["md5sums", Buffer.from("d41d8cd98f00b204e9800998ecf8427e  usr/lib/libfoo.so.1.1\n")],
      ["postinst", Buffer.from("#!/bin/sh\n")],
    ]),
    libfoo,
  );
  assert.deepEqual(readdirSync(info).sort(), [
    "libfoo1:amd64.list",
    "libfoo1:amd64.md5sums",
    "libfoo1:amd64.postinst",
    "tool.d-extra.list",
    "tool.list",
    "tool.postinst",
  ]);
  assert.equal(readFileSync(outside, "utf8"), "keep me");
  assert.equal(readFileSync(join(info, "libfoo1:amd64.postinst")).length > 0, true);
  assert.deepEqual(await db.ownersOf("/usr/lib/libfoo.so.1.1"), ["libfoo1:amd64"]);
  assert.deepEqual(await db.ownersOf("/usr/lib/libfoo.so.1"), []);
  assert.deepEqual(await db.fileList(libfoo), ["/.", "/usr", "/usr/lib", "/usr/lib/libfoo.so.1.1"]);
});

test("a distroless status.d database reads and writes its stanza and md5sums pair", async () => {
  const root = join(work, "distroless");
  const statusD = join(root, "var/lib/dpkg/status.d");
  mkdirSync(statusD, { recursive: true });
  writeFileSync(
    join(statusD, "libssl3"),
    "Package: libssl3\nVersion: 3.0.1-1\nArchitecture: amd64\nMulti-Arch: same\n",
  );
  writeFileSync(join(statusD, "libssl3.md5sums"), "0123456789abcdef0123456789abcdef  usr/lib/libssl.so.3\n");
  writeFileSync(join(statusD, "tzdata"), "Package: tzdata\nVersion: 2024a-1\nArchitecture: all\n");
  const db = await readDpkgDatabase(root);
  assert.equal(db.layout, "status.d");
  assert.deepEqual(
    db.packages.map((p) => `${p.name} ${p.version} ${p.statusFile}`),
    ["libssl3 3.0.1-1 libssl3", "tzdata 2024a-1 tzdata"],
  );
  const libssl = db.find("libssl3", "amd64")!;
  assert.deepEqual(await db.fileList(libssl), ["/usr/lib/libssl.so.3"]);
  const updated = db.setPackage(withField(libssl.fields, "Version", "3.0.2-1"));
  await db.writeInfoFiles(
    updated,
    new Map([
      ["md5sums", Buffer.from("ffffffffffffffffffffffffffffffff  usr/lib/libssl.so.3\n")],
      ["postinst", Buffer.from("x")],
    ]),
  );
  await db.commit();
  assert.deepEqual(readdirSync(statusD).sort(), ["libssl3", "libssl3.md5sums", "tzdata"]);
  assert.equal(
    readFileSync(join(statusD, "libssl3"), "utf8"),
    "Package: libssl3\nVersion: 3.0.2-1\nArchitecture: amd64\nMulti-Arch: same\n",
  );
  assert.match(readFileSync(join(statusD, "libssl3.md5sums"), "utf8"), /^f{32} {2}usr\/lib\/libssl.so.3\n$/);
  assert.equal(
    readFileSync(join(statusD, "tzdata"), "utf8"),
    "Package: tzdata\nVersion: 2024a-1\nArchitecture: all\n",
  );
});

test("stanza fields keep spelling and continuation lines; dpkg's field order is applied", () => {
  const fields = parseFields(
    "Package: x\nVersion: 1\nHomepage: h\nStatus: install ok installed\nDescription: d\n long\n .\n more\n",
  );
  assert.equal(fieldValue(fields, "description"), "d\n long\n .\n more");
  assert.equal(
    formatStanza(orderStatusFields(withField(fields, "Conffiles", "\n /etc/a 0123"))),
    "Package: x\nStatus: install ok installed\nVersion: 1\nConffiles:\n /etc/a 0123\nDescription: d\n long\n .\n more\nHomepage: h",
  );
});

test("damaged databases are refused with the fix", async () => {
  assert.throws(
    () => parseDiversions("/a\n/b\n"),
    (e: unknown) => isSutureError(e) && /multiple of 3/.test(e.message),
  );
  const root = classicRoot("journal");
  writeFileSync(join(root, "var/lib/dpkg/updates/0001"), "Package: tool\n");
  await assert.rejects(
    readDpkgDatabase(root),
    (e: unknown) => isSutureError(e, "PATCH_FAILED") && /updates/.test(e.message),
  );
  const empty = join(work, "no-dpkg");
  mkdirSync(empty);
  await assert.rejects(readDpkgDatabase(empty), (e: unknown) => isSutureError(e, "UNSUPPORTED_OS"));
  assert.equal(existsSync(join(empty, "var")), false);
});

/**
 * A stanza whose Architecture climbs out of info/: `info/<name>:<arch>.<kind>` would name
 * `<work>/escaped.<kind>`, beside the image root. Every path built from it is refused instead.
 */
const HOSTILE_ARCH = `amd64/${"../".repeat(6)}escaped`;

test("a hostile stanza in the image's status file names no path: reads, ownership and writes are refused", async () => {
  const root = classicRoot("hostile");
  const dpkg = join(root, "var/lib/dpkg");
  writeFileSync(
    join(dpkg, "status"),
    `${BASE}Package: evil\nStatus: install ok installed\nArchitecture: ${HOSTILE_ARCH}\nMulti-Arch: same\nVersion: 1\n\n${TOOL}`,
  );
  // What the hostile name would reach, so a read through it would succeed without the check.
  writeFileSync(join(work, "escaped.list"), "/etc/passwd\n");
  const db = await readDpkgDatabase(root);
  const evil = db.find("evil")!;
  const refused = (e: unknown) =>
    isSutureError(e, "UNSAFE_LAYER") &&
    /status has a package architecture "amd64\/\.\.\/.*Debian Policy.*rebuild the image/.test(e.message);
  await assert.rejects(db.fileList(evil), refused);
  await assert.rejects(db.readInfoFile(evil, "postinst"), refused);
  await assert.rejects(db.ownersOf("/etc/passwd"), refused, "ownership reads every installed package's list");
  const infoBefore = readdirSync(join(dpkg, "info")).sort();
  await assert.rejects(
    db.writeInfoFiles(evil, new Map([["postinst", Buffer.from("#!/bin/sh\ntouch /pwned\n")]])),
    refused,
  );
  assert.throws(
    () => db.setPackage(withField(evil.fields, "Version", "2")),
    (e: unknown) => isSutureError(e, "UNSAFE_LAYER"),
  );
  assert.equal(existsSync(join(work, "escaped.postinst")), false, "nothing written beside the root");
  assert.deepEqual(readdirSync(join(dpkg, "info")).sort(), infoBefore, "info/ unchanged");
  // The good stanzas are still usable.
  assert.deepEqual(await db.fileList(db.find("tool")!), [
    "/.",
    "/usr",
    "/usr/bin",
    "/usr/bin/tool",
    "/etc/tool.conf",
  ]);
});

test("status.d: a stanza or info kind that is not a plain name writes nothing; trigger names stay in triggers/", async () => {
  const root = join(work, "hostile-statusd");
  const statusD = join(root, "var/lib/dpkg/status.d");
  mkdirSync(statusD, { recursive: true });
  writeFileSync(join(statusD, "tzdata"), "Package: tzdata\nVersion: 2024a-1\nArchitecture: all\n");
  const db = await readDpkgDatabase(root);
  assert.throws(
    () => db.setPackage(parseFields(`Package: ../../../../escaped\nVersion: 1\nArchitecture: amd64\n`)),
    (e: unknown) =>
      isSutureError(e, "UNSAFE_LAYER") && /package name "\.\.\/\.\.\/\.\.\/\.\.\/escaped"/.test(e.message),
  );
  assert.throws(
    () => db.setPackage(parseFields(`Package: tzdata\nVersion: 1\nArchitecture: ${HOSTILE_ARCH}\n`)),
    (e: unknown) => isSutureError(e, "UNSAFE_LAYER") && /architecture/.test(e.message),
  );
  await db.commit();
  assert.deepEqual(readdirSync(statusD), ["tzdata"], "nothing added to status.d");

  const classic = await readDpkgDatabase(classicRoot("hostile-kind"));
  const tool = classic.find("tool")!;
  await assert.rejects(
    classic.writeInfoFiles(
      tool,
      new Map([
        ["list", Buffer.from("/.\n")],
        ["../../../../../../escaped", Buffer.from("x")],
      ]),
    ),
    (e: unknown) =>
      isSutureError(e, "INVALID_ARCHIVE") && /package tool has a control file named/.test(e.message),
  );
  assert.equal(
    readFileSync(join(work, "hostile-kind/var/lib/dpkg/info/tool.list"), "utf8"),
    "/.\n/usr\n/usr/bin\n/usr/bin/tool\n/etc/tool.conf\n",
    "no info file was written before the bad name was found",
  );
  await assert.rejects(classic.triggerInterests("../../../../etc"), (e: unknown) =>
    isSutureError(e, "UNSAFE_LAYER"),
  );
  assert.deepEqual(
    await classic.triggerInterests("/usr/lib/x"),
    [],
    "a file trigger is no file of triggers/",
  );
});

test("the installed view: detection (files), the sandbox engine (root) and the native engine (database) read the same packages", async () => {
  const states = [
    "Package: configured\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\nSource: src-a (0.9)\n",
    "Package: unpacked\nStatus: install ok unpacked\nArchitecture: amd64\nVersion: 2.0-1\n",
    "Package: pending\nStatus: install ok triggers-pending\nArchitecture: all\nVersion: 3\n",
    "Package: removed\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 4\n",
    "Package: purged\nStatus: purge ok not-installed\nArchitecture: amd64\n",
  ];
  const expected = [
    // Files on disk count, as dpkg counts them; removed and purged packages do not.
    ["configured", "1.0-1", "amd64", "src-a"],
    ["unpacked", "2.0-1", "amd64", "unpacked"],
    ["pending", "3", "all", "pending"],
  ];
  const view = (
    pkgs: { name: string; version: string; architecture: string; source: string }[] | undefined,
  ) => pkgs?.map((p) => [p.name, p.version, p.architecture, p.source]);

  const classic = join(work, "installed-classic");
  mkdirSync(join(classic, "var/lib/dpkg"), { recursive: true });
  writeFileSync(join(classic, "var/lib/dpkg/status"), states.join("\n"));
  assert.deepEqual(view(await readInstalledPackages(classic)), expected);
  assert.deepEqual(view(installedPackages((await readDpkgDatabase(classic)).packages)), expected);
  const fromFiles = installedFromFiles(states.join("\n"), new Map());
  assert.equal(fromFiles?.layout, "classic");
  assert.deepEqual(view(fromFiles?.packages), expected);

  // status.d (distroless): one stanza a file, md5sums beside them, usually no Status field.
  const distroless = join(work, "installed-status.d");
  const statusD = new Map([
    ["base-files", "Package: base-files\nArchitecture: amd64\nVersion: 12.4\n"],
    ["base-files.md5sums", "0123456789abcdef0123456789abcdef  etc/debian_version\n"],
    ["libssl3", "Package: libssl3\nArchitecture: amd64\nVersion: 3.0.11-1~deb12u2\nSource: openssl\n"],
  ]);
  mkdirSync(join(distroless, "var/lib/dpkg/status.d"), { recursive: true });
  for (const [name, text] of statusD) writeFileSync(join(distroless, "var/lib/dpkg/status.d", name), text);
  const distrolessExpected = [
    ["base-files", "12.4", "amd64", "base-files"],
    ["libssl3", "3.0.11-1~deb12u2", "amd64", "openssl"],
  ];
  assert.deepEqual(view(await readInstalledPackages(distroless)), distrolessExpected);
  assert.deepEqual(
    view(installedPackages((await readDpkgDatabase(distroless)).packages)),
    distrolessExpected,
  );
  const distrolessFiles = installedFromFiles(undefined, statusD);
  assert.equal(distrolessFiles?.layout, "status.d");
  assert.deepEqual(view(distrolessFiles?.packages), distrolessExpected);

  // No database at all; and a status planted as a symlink to a host file is read inside the root.
  assert.equal(await readInstalledPackages(join(work, "no-such-root")), undefined);
  assert.equal(installedFromFiles(undefined, new Map()), undefined);
  const planted = join(work, "installed-planted");
  mkdirSync(join(planted, "var/lib/dpkg"), { recursive: true });
  mkdirSync(join(planted, "host"), { recursive: true });
  writeFileSync(join(planted, "host/status"), "Package: inside\nStatus: install ok installed\nVersion: 1\n");
  symlinkSync("/host/status", join(planted, "var/lib/dpkg/status"));
  assert.deepEqual(view(await readInstalledPackages(planted)), [["inside", "1", "all", "inside"]]);
});
