import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, test } from "node:test";
import { cleanFailure } from "../../../test/fuzz/fuzz.ts";
import { needs } from "../../../test/lab/requirements.ts";
import { readBdbPackages } from "./database/bdb.ts";
import { parseRpmManifest } from "./database/manifest.ts";
import { readNdbPackages } from "./database/ndb.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import { formatRpmEvr, type RpmNevra, RpmTag } from "./header.ts";
import {
  findRpmDatabase,
  type InstalledRpm,
  installedRpmVersions,
  RPM_MANIFEST_PATH,
  type RpmDatabaseLocation,
  readInstalledRpms,
  readInstalledRpmsInRoot,
} from "./installed.ts";

// Requirements resolved before any test is registered: an await between test() calls lets the
// file's after() hook run before the later tests.
const withRpm = await needs("tool:rpm");
const withDbLoad = await needs("tool:db5.3_load");
const withDbLoadAndRpm = await needs("tool:db5.3_load", "tool:rpm");

const FIXTURES = join(import.meta.dirname, "../../../../shared/fixtures/rpmdb");
const MARINER = readFileSync(join(FIXTURES, "cbl-mariner-2.0/rpmdb.sqlite"));
const SLE = readFileSync(join(FIXTURES, "sle15-bci/Packages.db"));

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-rpmdb-test-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

/** Read a database from these files (image path → bytes). */
function read(location: RpmDatabaseLocation, files: Record<string, Uint8Array>): InstalledRpm[] {
  return readInstalledRpms(location, (p) => files[p]);
}

const sqliteAt = (path = "/var/lib/rpm/rpmdb.sqlite"): RpmDatabaseLocation => ({ path, backend: "sqlite" });

/** One line per package, as the test compares with rpm: NAME EPOCHNUM VERSION RELEASE ARCH. */
function lines(packages: readonly { nevra: RpmNevra }[]): string[] {
  return packages
    .map(({ nevra: n }) => `${n.name} ${n.epoch ?? 0} ${n.version} ${n.release} ${n.arch ?? "(none)"}`)
    .sort();
}

/** What the host's rpm lists for the database in `dir` (a copy: rpm may write beside it). */
function rpmQa(dir: string, backend?: string): string[] {
  const args = ["--dbpath", dir, "-qa", "--qf", "%{NAME} %{EPOCHNUM} %{VERSION} %{RELEASE} %{ARCH}\\n"];
  if (backend) args.unshift("--define", `_db_backend ${backend}`);
  return execFileSync("rpm", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
    .split("\n")
    .filter(Boolean)
    .sort();
}

test("sqlite: every package of CBL-Mariner 2.0's rpmdb.sqlite, as the host's rpm lists them", withRpm, () => {
  const packages = read(sqliteAt(), { "/var/lib/rpm/rpmdb.sqlite": MARINER });
  assert.equal(packages.length, 129);
  const dir = join(work, "mariner");
  mkdirSync(dir);
  writeFileSync(join(dir, "rpmdb.sqlite"), MARINER);
  assert.deepEqual(lines(packages), rpmQa(dir));
  // The header is kept as stored: its region digest is the package's own SHA256HEADER.
  for (const p of packages) {
    const h = p.header!;
    assert.equal(createHash("sha256").update(h.regionBytes()).digest("hex"), h.string(RpmTag.SHA256HEADER));
  }
  const curl = packages.find((p) => p.nevra.name === "curl")!;
  assert.equal(curl.sourceRpm, `curl-${curl.nevra.version}-${curl.nevra.release}.src.rpm`);
});

test("sqlite: transactions in the write-ahead log are seen, and the image's files are never opened in place", () => {
  // A copy of the database in WAL mode with one package erased and not checkpointed, as rpm
  // leaves it while another rpm process holds the database open.
  const dir = join(work, "wal");
  mkdirSync(dir);
  const file = join(dir, "rpmdb.sqlite");
  writeFileSync(file, MARINER);
  const db = new DatabaseSync(file, { enableForeignKeyConstraints: false });
  db.exec("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0");
  db.exec("DELETE FROM Packages WHERE hnum = 5");
  const main = readFileSync(file);
  const wal = readFileSync(`${file}-wal`);
  db.close();
  assert.ok(wal.length > 0);
  const files = { "/var/lib/rpm/rpmdb.sqlite": main, "/var/lib/rpm/rpmdb.sqlite-wal": wal };
  const withLog = read(sqliteAt(), files);
  assert.equal(withLog.length, 128);
  assert.ok(!withLog.some((p) => p.recordNumber === 5));
  // Without its log the same file still shows what was checkpointed before.
  assert.equal(read(sqliteAt(), { "/var/lib/rpm/rpmdb.sqlite": main }).length, 129);
});

test("sqlite: a damaged or foreign database is one INVALID_ARCHIVE line naming the file", () => {
  const what = "/var/lib/rpm/rpmdb.sqlite";
  assert.throws(
    () => readSqlitePackages(Buffer.from("not a database"), undefined, what),
    cleanFailure("INVALID_ARCHIVE", /rpmdb\.sqlite is damaged: it is not an SQLite database/),
  );
  // Cut short: SQLite's own refusal, in one line.
  assert.throws(
    () => readSqlitePackages(MARINER.subarray(0, 8192), undefined, what),
    cleanFailure("INVALID_ARCHIVE", /SQLite cannot read it/),
  );
  // A database whose Packages is a view: the image's SQL is not run.
  const dir = join(work, "view");
  mkdirSync(dir);
  const viewDb = new DatabaseSync(join(dir, "v.sqlite"));
  viewDb.exec("CREATE TABLE t(hnum INTEGER, blob BLOB); CREATE VIEW Packages AS SELECT hnum, blob FROM t");
  viewDb.close();
  assert.throws(
    () => readSqlitePackages(readFileSync(join(dir, "v.sqlite")), undefined, what),
    cleanFailure("INVALID_ARCHIVE", /has no Packages table/),
  );
  // A header that is not a header.
  const bad = new DatabaseSync(join(dir, "b.sqlite"));
  bad.exec("CREATE TABLE Packages(hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)");
  bad.prepare("INSERT INTO Packages VALUES (7, ?)").run(Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]));
  bad.close();
  assert.throws(
    () => read(sqliteAt(), { [what]: readFileSync(join(dir, "b.sqlite")) }),
    cleanFailure("INVALID_ARCHIVE", /package record 7 of \/var\/lib\/rpm\/rpmdb\.sqlite is damaged/),
  );
});

// go-rpmdb's SUSE Linux Enterprise 15 BCI package list (pkg/testdata/sle15-bci/packages.csv, from
// `rpm -qa` in the image) names these packages plus skelcd-EULA-bci, which the image its
// Packages.db fixture was taken from did not have yet; versions differ (later image).
const SLE_NAMES =
  `system-user-root filesystem glibc libpcre1 libgmp10 libgcc_s1 libcap2 libstdc++6 libncurses6
  terminfo-base libattr1 libselinux1 libreadline7 bash libacl1 coreutils sles-release
  ca-certificates-mozilla-prebuilt libpopt0 file-magic libbz2-1 liblua5_3-5 liblzma5 libz1 libzstd1
  libmagic1 libcrypt1 libgpg-error0 libdw1 libebl-plugins libelf1 perl-base libgcrypt20 rpm-config-SUSE
  rpm-ndb`.split(/\s+/);

test("ndb: SUSE BCI's Packages.db, every blob's checksum and every header's digest verified", () => {
  const packages = read(
    { path: "/usr/lib/sysimage/rpm/Packages.db", backend: "ndb" },
    { "/usr/lib/sysimage/rpm/Packages.db": SLE },
  );
  assert.deepEqual(packages.map((p) => p.nevra.name).sort(), [...SLE_NAMES].sort());
  // The host's rpm has no ndb backend; what proves each header was read whole is its own digest.
  for (const p of packages) {
    assert.equal(
      createHash("sha256").update(p.header!.regionBytes()).digest("hex"),
      p.header!.string(RpmTag.SHA256HEADER),
    );
  }
  const glibc = packages.find((p) => p.nevra.name === "glibc")!;
  assert.deepEqual(glibc.nevra, { name: "glibc", version: "2.31", release: "9.3.2", arch: "x86_64" });
  assert.equal(glibc.sourceRpm, "glibc-2.31-9.3.2.src.rpm");
  assert.equal(packages.find((p) => p.nevra.name === "rpm-ndb")!.recordNumber, 40);
});

test(
  "ndb: the host's rpm, given the same header blobs in its sqlite backend, lists the same packages",
  withRpm,
  () => {
    // Debian's rpm has no ndb backend; moving the blobs our reader took out of Packages.db into an
    // (emptied) rpm sqlite database lets rpm itself parse every one of them.
    const dir = join(work, "ndb-as-sqlite");
    mkdirSync(dir);
    const file = join(dir, "rpmdb.sqlite");
    writeFileSync(file, MARINER);
    const db = new DatabaseSync(file, { enableForeignKeyConstraints: false });
    for (const t of db
      .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
      .all()) {
      db.exec(`DELETE FROM "${String(t.name)}"`);
    }
    const records = readNdbPackages(SLE, "Packages.db");
    for (const r of records) db.prepare("INSERT INTO Packages VALUES (?, ?)").run(r.recordNumber, r.blob);
    db.close();
    const ours = read(
      { path: "/usr/lib/sysimage/rpm/Packages.db", backend: "ndb" },
      { "/usr/lib/sysimage/rpm/Packages.db": SLE },
    );
    assert.deepEqual(lines(ours), rpmQa(dir));
  },
);

test("ndb: damaged slots and blobs are one INVALID_ARCHIVE line", () => {
  const what = "/usr/lib/sysimage/rpm/Packages.db";
  const damaged = (edit: (b: Buffer, v: DataView) => void) => {
    const b = Buffer.from(SLE);
    edit(b, new DataView(b.buffer, b.byteOffset, b.byteLength));
    return () => readNdbPackages(b, what);
  };
  const firstBlob = new DataView(SLE.buffer, SLE.byteOffset).getUint32(32 + 8, true) * 16;
  assert.throws(
    damaged((b) => b.write("XpmP", 0, "latin1")),
    cleanFailure("INVALID_ARCHIVE", /does not start with ndb's magic/),
  );
  assert.throws(
    damaged((b) => {
      b[firstBlob + 100]! ^= 1;
    }),
    cleanFailure("INVALID_ARCHIVE", /blob of package 1 fails its adler32 checksum/),
  );
  assert.throws(
    damaged((_b, v) => v.setUint32(32 + 8, 0x7fffffff, true)),
    cleanFailure("INVALID_ARCHIVE", /slot 0 \(package 1\) points at blocks/),
  );
  assert.throws(
    damaged((_b, v) => v.setUint32(32 + 4, 2, true)),
    cleanFailure("INVALID_ARCHIVE", /blob of package 2 belongs to package 1/),
  );
  assert.throws(
    damaged((_b, v) => v.setUint32(12, 100000, true)),
    cleanFailure("INVALID_ARCHIVE", /claims 100000 slot pages/),
  );
  assert.throws(
    () => readNdbPackages(SLE.subarray(0, SLE.length - 8), what),
    cleanFailure("INVALID_ARCHIVE", /not a multiple of 16/),
  );
});

/**
 * A Berkeley DB hash `Packages` written by Berkeley DB itself (db5.3_load), holding the
 * CBL-Mariner headers under 4-byte keys in the database's byte order, plus rpm's key 0 (its next
 * header number), as rpm's bdb backend stores them.
 */
function buildBdb(dir: string, options: { pagesize: number; littleEndian: boolean }): Buffer {
  const rows = readSqlitePackages(MARINER, undefined, "mariner").map((r) => ({
    hnum: r.recordNumber,
    blob: r.blob,
  }));
  const key = (n: number) => {
    const b = Buffer.alloc(4);
    if (options.littleEndian) b.writeUInt32LE(n);
    else b.writeUInt32BE(n);
    return b.toString("hex");
  };
  const dump = [
    "VERSION=3",
    "format=bytevalue",
    "type=hash",
    "HEADER=END",
    ` ${key(0)}`,
    ` ${key(rows.length + 1)}`,
    ...rows.flatMap((r) => [` ${key(Number(r.hnum))}`, ` ${Buffer.from(r.blob).toString("hex")}`]),
    "DATA=END",
    "",
  ].join("\n");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "dump.txt"), dump);
  execFileSync("db5.3_load", [
    "-c",
    `db_pagesize=${options.pagesize}`,
    "-c",
    `db_lorder=${options.littleEndian ? 1234 : 4321}`,
    "-f",
    join(dir, "dump.txt"),
    join(dir, "Packages"),
  ]);
  return readFileSync(join(dir, "Packages"));
}

test(
  "bdb: Berkeley DB hash Packages in both byte orders and three page sizes read as the host's rpm reads them",
  withDbLoadAndRpm,
  () => {
    const expected = lines(read(sqliteAt(), { "/var/lib/rpm/rpmdb.sqlite": MARINER }));
    for (const [pagesize, littleEndian] of [
      [512, true],
      [4096, false],
      [65536, true],
      [65536, false],
    ] as const) {
      const dir = join(work, `bdb-${pagesize}-${littleEndian ? "le" : "be"}`);
      const bytes = buildBdb(dir, { pagesize, littleEndian });
      const packages = read(
        { path: "/var/lib/rpm/Packages", backend: "bdb" },
        { "/var/lib/rpm/Packages": bytes },
      );
      assert.equal(packages.length, 129, `${pagesize} ${littleEndian}`);
      assert.deepEqual(lines(packages), expected);
      // rpm's own read-only Berkeley DB reader agrees.
      assert.deepEqual(rpmQa(dir, "bdb_ro"), expected, `${pagesize} ${littleEndian}`);
    }
  },
);

test("bdb: damaged pages, loops and foreign databases are one INVALID_ARCHIVE line", withDbLoad, () => {
  const bytes = buildBdb(join(work, "bdb-damage"), { pagesize: 4096, littleEndian: true });
  const what = "/var/lib/rpm/Packages";
  const damaged = (edit: (v: DataView) => void) => {
    const b = Buffer.from(bytes);
    edit(new DataView(b.buffer, b.byteOffset, b.byteLength));
    return () => readBdbPackages(b, what);
  };
  const page = 4096;
  // The first bucket's page and its first value's overflow chain.
  const bucket0 = 0 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(96, true);
  assert.throws(
    damaged((v) => v.setUint32(12, 0x12345678, true)),
    cleanFailure("INVALID_ARCHIVE", /not a Berkeley DB hash database/),
  );
  assert.throws(
    damaged((v) => v.setUint32(12, 0x053162, true)),
    cleanFailure("INVALID_ARCHIVE", /a Berkeley DB btree/),
  );
  assert.throws(
    damaged((v) => v.setUint32(32, 1_000_000, true)),
    cleanFailure("INVALID_ARCHIVE", /claims 1000001 pages/),
  );
  assert.throws(
    damaged((v) => v.setUint32(bucket0 * page + 16, bucket0, true)),
    cleanFailure("INVALID_ARCHIVE", /a second time \(a loop\)/),
  );
  assert.throws(
    damaged((v) => v.setUint32(bucket0 * page + 8, 999, true)),
    cleanFailure("INVALID_ARCHIVE", /says it is page 999/),
  );
  assert.throws(
    damaged((v) => v.setUint16(bucket0 * page + 26, 5000, true)),
    cleanFailure("INVALID_ARCHIVE", /overlap or lie outside it/),
  );
  assert.throws(
    () => readBdbPackages(bytes.subarray(0, 8 * page), what),
    cleanFailure("INVALID_ARCHIVE", /pages of 4096 bytes but has 32768 bytes/),
  );
});

test("manifest: Azure Linux distroless's container-manifest-2 lists what rpm lists", withRpm, () => {
  // The manifest Azure Linux's image build writes, made by the host's rpm from the real database.
  const dir = join(work, "manifest");
  mkdirSync(dir);
  writeFileSync(join(dir, "rpmdb.sqlite"), MARINER);
  const text = execFileSync(
    "rpm",
    [
      "--dbpath",
      dir,
      "-qa",
      "--qf",
      "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{INSTALLTIME}\\t%{BUILDTIME}\\t%{VENDOR}\\t%{EPOCH}\\t%{SIZE}\\t%{ARCH}\\t%{EPOCHNUM}\\t%{SOURCERPM}\\n",
    ],
    { encoding: "utf8" },
  );
  const packages = read(
    { path: RPM_MANIFEST_PATH, backend: "manifest" },
    { [RPM_MANIFEST_PATH]: Buffer.from(text) },
  );
  assert.equal(packages.length, 129);
  assert.deepEqual(lines(packages), rpmQa(dir));
  assert.equal(packages[0]!.header, undefined);
  assert.match(packages[0]!.sourceRpm!, /\.src\.rpm$/);
});

test("manifest: a line that is not rpm's ten fields, or breaks rpm's syntax, is refused naming the line", () => {
  const what = RPM_MANIFEST_PATH;
  const good =
    "bash\t5.1.8-4.cm2\t1700000000\t1690000000\tMicrosoft Corporation\t(none)\t7000000\tx86_64\t0\tbash-5.1.8-4.cm2.src.rpm";
  assert.deepEqual(parseRpmManifest(`${good}\n\n`, what)[0]!.nevra, {
    name: "bash",
    version: "5.1.8",
    release: "4.cm2",
    arch: "x86_64",
  });
  const epoch = good.replace("(none)\t7000000\tx86_64\t0", "2\t7000000\tx86_64\t2");
  assert.equal(formatRpmEvr(parseRpmManifest(epoch, what)[0]!.nevra), "2:5.1.8-4.cm2");
  for (const [text, message] of [
    ["bash\t5.1.8-4.cm2", /line 1 has 2 tab-separated fields, not 10/],
    [good.replace("5.1.8-4.cm2", "5.1.8"), /not VERSION-RELEASE/],
    [good.replace("\t0\tbash-", "\tx\tbash-"), /the epoch "x"/],
    [`${good}\n${good.replace("bash", "../x")}`, /line 2 has a package name "\.\.\/x"/],
  ] as const) {
    assert.throws(() => parseRpmManifest(text, what), cleanFailure("INVALID_ARCHIVE", message));
  }
});

test("the database an image's rpm uses: sysimage before /var/lib/rpm, newest backend first, the manifest last", () => {
  const has =
    (...paths: string[]) =>
    (p: string) =>
      paths.includes(p);
  assert.deepEqual(findRpmDatabase(has("/var/lib/rpm/Packages")), {
    path: "/var/lib/rpm/Packages",
    backend: "bdb",
  });
  assert.deepEqual(findRpmDatabase(has("/var/lib/rpm/Packages", "/var/lib/rpm/rpmdb.sqlite")), {
    path: "/var/lib/rpm/rpmdb.sqlite",
    backend: "sqlite",
  });
  assert.deepEqual(findRpmDatabase(has("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/Packages.db")), {
    path: "/usr/lib/sysimage/rpm/Packages.db",
    backend: "ndb",
  });
  assert.deepEqual(findRpmDatabase(has(RPM_MANIFEST_PATH, "/var/lib/rpm/Packages")), {
    path: "/var/lib/rpm/Packages",
    backend: "bdb",
  });
  assert.deepEqual(findRpmDatabase(has(RPM_MANIFEST_PATH)), { path: RPM_MANIFEST_PATH, backend: "manifest" });
  assert.equal(findRpmDatabase(has("/var/lib/rpm/Name")), undefined);
});

test("in a root, the image's /var/lib/rpm symlink is followed inside the root, never outside", async () => {
  const root = join(work, "root");
  mkdirSync(join(root, "usr/lib/sysimage/rpm"), { recursive: true });
  mkdirSync(join(root, "var/lib"), { recursive: true });
  copyFileSync(join(FIXTURES, "sle15-bci/Packages.db"), join(root, "usr/lib/sysimage/rpm/Packages.db"));
  symlinkSync("../../usr/lib/sysimage/rpm", join(root, "var/lib/rpm"));
  const found = await readInstalledRpmsInRoot(root);
  assert.equal(found?.location.backend, "ndb");
  assert.equal(found?.packages.length, 35);
  // An absolute symlink to the host's database resolves inside the root, where there is none.
  const hostile = join(work, "hostile");
  mkdirSync(join(hostile, "var/lib"), { recursive: true });
  mkdirSync(join(work, "host-rpm"));
  writeFileSync(join(work, "host-rpm/rpmdb.sqlite"), MARINER);
  symlinkSync(join(work, "host-rpm"), join(hostile, "var/lib/rpm"));
  assert.equal(await readInstalledRpmsInRoot(hostile), undefined);
});

test("installed versions: [epoch:]version-release, the newest of a name installed twice, no gpg-pubkey", () => {
  const pkg = (name: string, version: string, release: string, epoch?: number): InstalledRpm => ({
    recordNumber: 1,
    nevra: { name, version, release, arch: "x86_64", ...(epoch === undefined ? {} : { epoch }) },
  });
  const versions = installedRpmVersions([
    pkg("kernel", "5.14.0", "70.el9"),
    pkg("kernel", "5.14.0", "362.el9"),
    pkg("kernel", "5.14.0", "100.el9"),
    pkg("tar", "1.34", "6.el9", 2),
    pkg("bash", "5.1.8", "6.el9", 0),
    { recordNumber: 9, nevra: { name: "gpg-pubkey", version: "fd431d51", release: "4ae0493b" } },
  ]);
  assert.deepEqual(Object.fromEntries(versions), {
    kernel: "5.14.0-362.el9",
    tar: "2:1.34-6.el9",
    bash: "5.1.8-6.el9",
  });
});

test("bdb: a committed big-endian Packages with 512-byte pages (no Berkeley DB tools needed)", () => {
  const bytes = readFileSync(join(import.meta.dirname, "testdata/Packages-be-512"));
  const packages = read(
    { path: "/var/lib/rpm/Packages", backend: "bdb" },
    { "/var/lib/rpm/Packages": bytes },
  );
  assert.deepEqual(
    packages.map((p) => `${p.recordNumber} ${p.nevra.name}-${formatRpmEvr(p.nevra)}.${p.nevra.arch}`),
    ["8 zstd-libs-1.5.0-1.cm2.x86_64", "92 zstd-devel-1.5.0-1.cm2.x86_64", "93 popt-devel-1.16-7.cm2.x86_64"],
  );
});
