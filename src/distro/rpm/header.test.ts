import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cleanFailure } from "../../../test/fuzz/fuzz.ts";
import { needs } from "../../../test/lab/requirements.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import {
  formatRpmEvr,
  formatRpmNevra,
  parseRpmHeader,
  RPM_HEADER_MAGIC,
  RpmFileFlag,
  RpmSense,
  RpmSigTag,
  RpmTag,
  RpmType,
  readRpmHeaderAt,
  rpmHeaderNevra,
} from "./header.ts";
import { rpmHeaderDependencies, rpmHeaderFiles, rpmHeaderScriptlets } from "./header-contents.ts";

// Requirements resolved before any test is registered: an await between test() calls lets the
// file's after() hook run before the later tests.
const withRpmbuild = await needs("tool:rpmbuild", "tool:rpm");
const withRpm = await needs("tool:rpm");

const MARINER_DB = join(
  import.meta.dirname,
  "../../../../shared/fixtures/rpmdb/cbl-mariner-2.0/rpmdb.sqlite",
);

/** Every header blob of the CBL-Mariner 2.0 database, by hnum (read from a private copy). */
function marinerBlobs(): Map<number, Uint8Array> {
  const records = readSqlitePackages(readFileSync(MARINER_DB), undefined, "rpmdb.sqlite");
  return new Map(records.map((r) => [r.recordNumber, r.blob]));
}

// A real package, built by the host's rpmbuild: an epoch, every kind of dependency, a
// %config(noreplace), a %ghost, a symlink and two scriptlets, one with an interpreter.
const SPEC = `Name: suture-hdr
Epoch: 3
Version: 1.2
Release: 4.el9
Summary: header test
License: MIT and BSD
Vendor: suture tests
BuildArch: noarch
Requires: bash >= 4.0
Provides: suture-virtual = 2
Obsoletes: old-hdr < 1
Conflicts: bad-hdr
%description
A package for suture's header tests.
%install
mkdir -p %{buildroot}/etc %{buildroot}/usr/share/suture-hdr %{buildroot}/var/log
echo conf > %{buildroot}/etc/suture-hdr.conf
echo data > %{buildroot}/usr/share/suture-hdr/data
ln -s data %{buildroot}/usr/share/suture-hdr/link
touch %{buildroot}/var/log/suture-hdr.log
%pre
echo pre
%post -p /bin/sh
echo post
%postun -p /bin/true
%files
%config(noreplace) /etc/suture-hdr.conf
%dir /usr/share/suture-hdr
/usr/share/suture-hdr/link
%ghost /var/log/suture-hdr.log
%caps(cap_net_raw=ep) /usr/share/suture-hdr/data
`;

let work: string;
let rpmFile: string | undefined;

before(async () => {
  work = mkdtempSync(join(tmpdir(), "suture-rpm-header-"));
  if (withRpmbuild.skip !== undefined) return;
  mkdirSync(join(work, "SPECS"));
  writeFileSync(join(work, "SPECS/t.spec"), SPEC);
  execFileSync("rpmbuild", ["--define", `_topdir ${work}`, "-bb", join(work, "SPECS/t.spec")], {
    stdio: "ignore",
  });
  const dir = join(work, "RPMS/noarch");
  rpmFile = join(dir, readdirSync(dir)[0]!);
});

after(() => rmSync(work, { recursive: true, force: true }));

function rpmQuery(format: string): string {
  return execFileSync("rpm", ["-qp", "--nosignature", "--nodigest", "--qf", format, rpmFile!], {
    encoding: "utf8",
  });
}

test("a real .rpm's signature and main headers read as rpm reads them", withRpmbuild, () => {
  const bytes = readFileSync(rpmFile!);
  // The lead (96 bytes), then the signature header, padded to 8, then the main header.
  const sig = readRpmHeaderAt(bytes, 96, "the signature header", { regionTag: RpmTag.HEADERSIGNATURES });
  assert.equal(sig.end % 8, 0);
  const main = readRpmHeaderAt(bytes, sig.end, "the main header", {
    regionTag: RpmTag.HEADERIMMUTABLE,
    exactSize: true,
  });
  const h = main.header;
  assert.equal(h.regionTag, RpmTag.HEADERIMMUTABLE);
  assert.equal(h.regionEntryCount, h.entries.length);
  // The header's digests in the signature header are over the region with its magic.
  const region = h.regionBytes();
  assert.equal(sig.header.string(RpmSigTag.SHA256), createHash("sha256").update(region).digest("hex"));
  assert.equal(sig.header.string(RpmSigTag.SHA1), createHash("sha1").update(region).digest("hex"));
  // rpm's SIZE: header + payload (sig.end is where the main header's magic starts).
  assert.equal(sig.header.number(RpmSigTag.SIZE), bytes.length - sig.end);

  assert.equal(
    `${h.string(RpmTag.NAME)} ${h.number(RpmTag.EPOCH)} ${h.string(RpmTag.VERSION)} ${h.string(RpmTag.RELEASE)} ${h.string(RpmTag.ARCH)}`,
    rpmQuery("%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH}"),
  );
  const nevra = rpmHeaderNevra(h, "suture-hdr.rpm", "rebuild it");
  assert.deepEqual(nevra, {
    name: "suture-hdr",
    epoch: 3,
    version: "1.2",
    release: "4.el9",
    arch: "noarch",
  });
  assert.equal(formatRpmNevra(nevra), "suture-hdr-3:1.2-4.el9.noarch");
  assert.equal(formatRpmEvr(nevra), "3:1.2-4.el9");
  assert.equal(formatRpmEvr({ epoch: 0, version: "1", release: "2" }), "1-2");
  assert.equal(h.string(RpmTag.LICENSE), "MIT and BSD");
  assert.equal(h.string(RpmTag.VENDOR), "suture tests");
  assert.equal(h.string(RpmTag.SUMMARY), "header test");
  assert.equal(h.string(RpmTag.SOURCERPM), rpmQuery("%{SOURCERPM}"));
  assert.equal(h.number(RpmTag.SIZE), Number(rpmQuery("%{SIZE}")));
  assert.equal(h.string(RpmTag.PAYLOADCOMPRESSOR), rpmQuery("%{PAYLOADCOMPRESSOR}"));
  assert.equal(h.string(RpmTag.PAYLOADFORMAT), "cpio");

  // Files: directory/basename split, modes, flags, digests, link targets, owners.
  const dirs = h.stringArray(RpmTag.DIRNAMES);
  const paths = h
    .numberArray(RpmTag.DIRINDEXES)
    .map((d, i) => `${dirs[d]}${h.stringArray(RpmTag.BASENAMES)[i]}`);
  const files = rpmQuery(
    "[%{FILENAMES}\t%{FILEMODES}\t%{FILEFLAGS}\t%{FILEDIGESTS}\t%{FILELINKTOS}\t%{FILEUSERNAME}\t%{FILESIZES}\n]",
  );
  const ours = paths.map((p, i) =>
    [
      p,
      h.numberArray(RpmTag.FILEMODES)[i],
      h.numberArray(RpmTag.FILEFLAGS)[i],
      h.stringArray(RpmTag.FILEDIGESTS)[i],
      h.stringArray(RpmTag.FILELINKTOS)[i],
      h.stringArray(RpmTag.FILEUSERNAME)[i],
      h.numberArray(RpmTag.FILESIZES)[i],
    ].join("\t"),
  );
  assert.equal(`${ours.join("\n")}\n`, files);
  const flagsOf = (p: string) => h.numberArray(RpmTag.FILEFLAGS)[paths.indexOf(p)]!;
  assert.equal(flagsOf("/etc/suture-hdr.conf"), RpmFileFlag.CONFIG | RpmFileFlag.NOREPLACE);
  assert.equal(flagsOf("/var/log/suture-hdr.log"), RpmFileFlag.GHOST);
  assert.equal(h.number(RpmTag.FILEDIGESTALGO), Number(rpmQuery("%{FILEDIGESTALGO}")));

  // Dependencies with their senses.
  const req = h.stringArray(RpmTag.REQUIRENAME).indexOf("bash");
  assert.equal(h.stringArray(RpmTag.REQUIREVERSION)[req], "4.0");
  assert.equal(
    h.numberArray(RpmTag.REQUIREFLAGS)[req]! & RpmSense.SENSEMASK,
    RpmSense.GREATER | RpmSense.EQUAL,
  );
  const prov = h.stringArray(RpmTag.PROVIDENAME).indexOf("suture-virtual");
  assert.equal(h.stringArray(RpmTag.PROVIDEVERSION)[prov], "2");
  assert.deepEqual(h.stringArray(RpmTag.OBSOLETENAME), ["old-hdr"]);
  assert.equal(h.numberArray(RpmTag.OBSOLETEFLAGS)[0]! & RpmSense.SENSEMASK, RpmSense.LESS);
  assert.deepEqual(h.stringArray(RpmTag.CONFLICTNAME), ["bad-hdr"]);

  // Scriptlets and their interpreters.
  assert.equal(h.string(RpmTag.PREIN), "echo pre");
  assert.equal(h.string(RpmTag.POSTIN), "echo post");
  assert.deepEqual(h.stringArray(RpmTag.POSTINPROG), ["/bin/sh"]);
  assert.equal(h.has(RpmTag.PREUN), false);
  assert.equal(h.string(RpmTag.PREUN), undefined);
  assert.deepEqual(h.stringArray(RpmTag.TRIGGERNAME), []);
});

test("every header of a real rpmdb.sqlite parses, with the immutable region kept as rpm stored it", () => {
  const blobs = marinerBlobs();
  assert.equal(blobs.size, 129);
  for (const [hnum, blob] of blobs) {
    const h = parseRpmHeader(blob, `package ${hnum}`);
    assert.equal(h.blob, blob, "the blob is kept as is, for writing back");
    assert.equal(h.regionTag, RpmTag.HEADERIMMUTABLE);
    // Installed headers carry dribbles rpm added on install, outside the signed region.
    assert.ok(h.regionEntryCount < h.entries.length, `package ${hnum} has dribbles`);
    assert.equal(h.entry(RpmTag.INSTALLTIME)?.inRegion, false);
    assert.equal(h.entry(RpmTag.NAME)?.inRegion, true);
    assert.ok(h.number(RpmTag.INSTALLTIME)! > 1_500_000_000);
    // The region's SHA-256 is what the package's SHA256HEADER says, so the region is untouched.
    const sha256 = h.string(RpmTag.SHA256HEADER);
    if (sha256 !== undefined) {
      assert.equal(createHash("sha256").update(h.regionBytes()).digest("hex"), sha256, `package ${hnum}`);
    }
  }
});

/** A header from entries and a data store, for the hostile cases: [tag, type, offset, count]. */
function blob(entries: [number, number, number, number][], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + entries.length * 16 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, entries.length);
  view.setUint32(4, data.length);
  entries.forEach(([tag, type, offset, count], i) => {
    view.setInt32(8 + i * 16, tag);
    view.setUint32(12 + i * 16, type);
    view.setInt32(16 + i * 16, offset);
    view.setUint32(20 + i * 16, count);
  });
  out.set(data, 8 + entries.length * 16);
  return out;
}

const text = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));

test("a legacy header without a region reads; strings, arrays and integers come back typed", () => {
  const data = new Uint8Array(24);
  data.set(text("bash\0"), 0);
  data.set(text("a\0bb\0"), 5);
  new DataView(data.buffer).setUint32(12, 42);
  new DataView(data.buffer).setBigUint64(16, 1n << 40n);
  const h = parseRpmHeader(
    blob(
      [
        [RpmTag.NAME, RpmType.STRING, 0, 1],
        [RpmTag.BASENAMES, RpmType.STRING_ARRAY, 5, 2],
        [RpmTag.EPOCH, RpmType.INT32, 12, 1],
        [RpmTag.LONGSIZE, RpmType.INT64, 16, 1],
      ],
      data,
    ),
    "a legacy header",
  );
  assert.equal(h.regionTag, undefined);
  assert.equal(h.string(RpmTag.NAME), "bash");
  assert.deepEqual(h.stringArray(RpmTag.BASENAMES), ["a", "bb"]);
  assert.equal(h.number(RpmTag.EPOCH), 42);
  assert.equal(h.number(RpmTag.LONGSIZE), 2 ** 40);
  assert.throws(
    () => h.number(RpmTag.NAME),
    cleanFailure("INVALID_ARCHIVE", /tag 1000 is of type STRING, expected CHAR/),
  );
  assert.throws(() => h.string(RpmTag.EPOCH), cleanFailure("INVALID_ARCHIVE", /tag 1003 is of type INT32/));
});

test("damaged or hostile headers are one-line INVALID_ARCHIVE errors naming the fault", () => {
  const what = "package 7 of rpmdb.sqlite";
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(5), /only 5 bytes/],
    [
      blob([[RpmTag.NAME, RpmType.STRING, 0, 1]], text("bash\0")).subarray(0, 20),
      /index entries and 5 data bytes make 29/,
    ],
    [Uint8Array.of(0, 1, 0, 0, 0, 0, 0, 0), /65536 index entries, more than rpm's limit of 65535/],
    [Uint8Array.of(0, 0, 0, 0, 0x10, 0, 0, 0), /268435456 data bytes, more than rpm's limit/],
    [blob([[RpmTag.NAME, RpmType.STRING, 0, 1]], text("bash")), /not NUL-terminated/],
    [blob([[RpmTag.NAME, RpmType.STRING, 0, 2]], text("a\0b\0")), /not NUL-terminated/],
    [blob([[RpmTag.EPOCH, RpmType.INT32, 2, 1]], new Uint8Array(8)), /not aligned for INT32/],
    [blob([[RpmTag.EPOCH, RpmType.INT32, 4, 2]], new Uint8Array(8)), /runs past the 8 data bytes/],
    [blob([[RpmTag.EPOCH, RpmType.INT32, 0, 0]], new Uint8Array(8)), /count out of range/],
    [blob([[RpmTag.EPOCH, RpmType.INT32, 12, 1]], new Uint8Array(8)), /offset outside/],
    [blob([[RpmTag.EPOCH, 12, 0, 1]], new Uint8Array(8)), /unknown data type/],
    [blob([[50, RpmType.INT32, 0, 1]], new Uint8Array(8)), /tags below 100 are reserved/],
    [
      blob(
        [
          [RpmTag.NAME, RpmType.STRING, 0, 1],
          [RpmTag.VERSION, RpmType.STRING, 2, 1],
        ],
        text("bash\0"),
      ),
      /overlaps the previous entry's/,
    ],
    [
      blob(
        [
          [RpmTag.NAME, RpmType.STRING, 0, 1],
          [RpmTag.NAME, RpmType.STRING, 5, 1],
        ],
        text("bash\0evil\0"),
      ),
      /index entry 1 \(tag 1000.*tag 1000 appears twice/,
    ],
  ];
  for (const [bytes, message] of cases) {
    assert.throws(
      () => parseRpmHeader(bytes, what),
      cleanFailure("INVALID_ARCHIVE", /package 7 of rpmdb\.sqlite/),
    );
    assert.throws(() => parseRpmHeader(bytes, what), cleanFailure("INVALID_ARCHIVE", message));
  }
});

/** A region header: region entry, NAME, and a 16-byte trailer saying `ril` entries. */
function regionBlob(
  trailer: { tag?: number; type?: number; offset?: number; count?: number } = {},
): Uint8Array {
  const data = new Uint8Array(24);
  data.set(text("bash\0"), 0);
  const view = new DataView(data.buffer);
  view.setInt32(8, trailer.tag ?? RpmTag.HEADERIMMUTABLE);
  view.setUint32(12, trailer.type ?? RpmType.BIN);
  view.setInt32(16, trailer.offset ?? -32);
  view.setUint32(20, trailer.count ?? 16);
  return blob(
    [
      [RpmTag.HEADERIMMUTABLE, RpmType.BIN, 8, 16],
      [RpmTag.NAME, RpmType.STRING, 0, 1],
    ],
    data,
  );
}

test("region trailers are checked as rpm checks them", () => {
  const good = parseRpmHeader(regionBlob(), "h", { regionTag: RpmTag.HEADERIMMUTABLE, exactSize: true });
  assert.equal(good.regionEntryCount, 2);
  assert.equal(good.string(RpmTag.NAME), "bash");
  const cases: [Uint8Array, RegExp][] = [
    [regionBlob({ tag: RpmTag.HEADERSIGNATURES }), /region trailer \(tag 62.*does not match region 63/],
    [regionBlob({ type: RpmType.INT32 }), /region trailer/],
    [regionBlob({ offset: -40 }), /region claims 40 bytes of index entries/],
    [regionBlob({ offset: -48 }), /region claims 48 bytes/],
    [regionBlob({ offset: 0 }), /covers no index entries/],
  ];
  for (const [bytes, message] of cases)
    assert.throws(() => parseRpmHeader(bytes, "h"), cleanFailure("INVALID_ARCHIVE", message));
  // A region covering one entry leaves NAME as a dribble: fine in a database, not in a package.
  const partial = parseRpmHeader(regionBlob({ offset: -16 }), "h");
  assert.equal(partial.entry(RpmTag.NAME)?.inRegion, false);
  assert.throws(
    () =>
      parseRpmHeader(regionBlob({ offset: -16 }), "h", {
        exactSize: true,
        regionTag: RpmTag.HEADERIMMUTABLE,
      }),
    cleanFailure("INVALID_ARCHIVE", /a package's header is all region/),
  );
  assert.throws(
    () => parseRpmHeader(regionBlob(), "h", { regionTag: RpmTag.HEADERSIGNATURES }),
    cleanFailure("INVALID_ARCHIVE", /starts with tag 63, not the region tag 62/),
  );
});

test("a dribble added on install replaces the region's entry of its tag, as in rpm", () => {
  const data = new Uint8Array(28);
  data.set(text("bash\0"), 0);
  const view = new DataView(data.buffer);
  view.setInt32(8, RpmTag.HEADERIMMUTABLE);
  view.setUint32(12, RpmType.BIN);
  view.setInt32(16, -32);
  view.setUint32(20, 16);
  data.set(text("zsh\0"), 24);
  const h = parseRpmHeader(
    blob(
      [
        [RpmTag.HEADERIMMUTABLE, RpmType.BIN, 8, 16],
        [RpmTag.NAME, RpmType.STRING, 0, 1],
        [RpmTag.NAME, RpmType.STRING, 24, 1],
      ],
      data,
    ),
    "h",
  );
  assert.equal(h.string(RpmTag.NAME), "zsh");
  assert.equal(h.entry(RpmTag.NAME)?.inRegion, false);
  assert.equal(h.regionEntryCount, 2);
});

test("a .rpm header needs its magic and enough bytes", () => {
  const inner = regionBlob();
  const file = new Uint8Array(8 + inner.length);
  file.set(RPM_HEADER_MAGIC);
  file.set(inner, 8);
  const { header, end } = readRpmHeaderAt(file, 0, "x.rpm");
  assert.equal(end, file.length);
  assert.deepEqual(header.blob, inner);
  const bad = file.slice();
  bad[3] = 2;
  assert.throws(() => readRpmHeaderAt(bad, 0, "x.rpm"), cleanFailure("INVALID_ARCHIVE", /header magic/));
  assert.throws(
    () => readRpmHeaderAt(file.subarray(0, 40), 0, "x.rpm"),
    cleanFailure("INVALID_ARCHIVE", /cut short/),
  );
});

test("a header's identity must follow rpm's package syntax", () => {
  const identity = (name: string, version: string) => {
    const data = text(`${name}\0${version}\0${"1"}\0`);
    return parseRpmHeader(
      blob(
        [
          [RpmTag.NAME, RpmType.STRING, 0, 1],
          [RpmTag.VERSION, RpmType.STRING, name.length + 1, 1],
          [RpmTag.RELEASE, RpmType.STRING, name.length + version.length + 2, 1],
        ],
        data,
      ),
      "package 3 of Packages",
    );
  };
  // gpg-pubkey pseudo-packages have no ARCH and no EPOCH.
  assert.deepEqual(rpmHeaderNevra(identity("gpg-pubkey", "3228467c"), "p", "fix"), {
    name: "gpg-pubkey",
    version: "3228467c",
    release: "1",
  });
  for (const [name, version, message] of [
    ["../etc", "1", /package name "\.\.\/etc"/],
    ["-rf", "1", /package name "-rf"/],
    ["bash", "1 2", /package version/],
    ["bash", "1-2", /whose parts contain '-' or ':'/],
  ] as const) {
    assert.throws(
      () => rpmHeaderNevra(identity(name, version), "package 3 of Packages", "fix"),
      cleanFailure("INVALID_ARCHIVE", message),
    );
  }
  const noVersion = parseRpmHeader(blob([[RpmTag.NAME, RpmType.STRING, 0, 1]], text("a\0")), "p");
  assert.throws(
    () => rpmHeaderNevra(noVersion, "package 3", "fix"),
    cleanFailure("INVALID_ARCHIVE", /without VERSION/),
  );
});

test("files, dependencies and scriptlets of a real .rpm, as rpm -qp lists them", withRpmbuild, () => {
  const bytes = readFileSync(rpmFile!);
  const sig = readRpmHeaderAt(bytes, 96, "sig", { regionTag: RpmTag.HEADERSIGNATURES });
  const h = readRpmHeaderAt(bytes, sig.end, "suture-hdr.rpm", {
    regionTag: RpmTag.HEADERIMMUTABLE,
    exactSize: true,
  }).header;
  const files = rpmHeaderFiles(h, "suture-hdr.rpm");
  assert.equal(
    files
      .map((f) =>
        [f.path, f.mode, f.size, f.flags, f.digest, f.linkTo, f.user, f.group, f.mtime, f.caps].join("\t"),
      )
      .join("\n") + "\n",
    rpmQuery(
      "[%{FILENAMES}\\t%{FILEMODES}\\t%{FILESIZES}\\t%{FILEFLAGS}\\t%{FILEDIGESTS}\\t%{FILELINKTOS}\\t%{FILEUSERNAME}\\t%{FILEGROUPNAME}\\t%{FILEMTIMES}\\t%{FILECAPS}\\n]",
    ),
  );
  assert.equal(files.find((f) => f.path === "/usr/share/suture-hdr/data")?.caps, "cap_net_raw=ep");
  assert.equal(files[0]!.state, undefined, "a package file has no install states");
  for (const [kind, tag] of [
    ["require", "REQUIRE"],
    ["provide", "PROVIDE"],
    ["obsolete", "OBSOLETE"],
    ["conflict", "CONFLICT"],
  ] as const) {
    const ours = rpmHeaderDependencies(h, kind, "suture-hdr.rpm").map(
      (d) => `${d.name}\t${d.flags}\t${d.version}\n`,
    );
    assert.equal(ours.join(""), rpmQuery(`[%{${tag}NAME}\\t%{${tag}FLAGS}\\t%{${tag}VERSION}\\n]`), kind);
  }
  assert.deepEqual(
    rpmHeaderScriptlets(h).map((s) => [s.kind, s.body, s.interpreter]),
    [
      ["pre", "echo pre", ["/bin/sh"]],
      ["post", "echo post", ["/bin/sh"]],
      ["postun", undefined, ["/bin/true"]],
    ],
  );
});

test("every installed header's file list, as the host's rpm lists the database's files", withRpm, () => {
  const dir = mkdtempSync(join(work, "db-"));
  writeFileSync(join(dir, "rpmdb.sqlite"), readFileSync(MARINER_DB));
  const ours: string[] = [];
  for (const [hnum, b] of marinerBlobs()) {
    const files = rpmHeaderFiles(parseRpmHeader(b, `package ${hnum}`), `package ${hnum}`);
    // Installed headers say which files were installed (FILESTATES).
    if (files.length > 0)
      assert.ok(
        files.every((f) => f.state !== undefined),
        `package ${hnum}`,
      );
    for (const f of files) ours.push(`${f.path} ${f.mode} ${f.size} ${f.flags} ${f.state}`);
  }
  const theirs = execFileSync(
    "rpm",
    [
      "--dbpath",
      dir,
      "-qa",
      "--qf",
      "[%{FILENAMES} %{FILEMODES} %{FILESIZES} %{FILEFLAGS} %{FILESTATES}\\n]",
    ],
    { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
  );
  assert.deepEqual(ours.sort(), theirs.split("\n").filter(Boolean).sort());
});

test("parallel arrays that disagree are one INVALID_ARCHIVE line", () => {
  const data = new Uint8Array(20);
  data.set(text("a\0b\0/usr/\0"), 0);
  const header = (dirIndexCount: number, dirIndex: number) => {
    const d = data.slice();
    new DataView(d.buffer).setUint32(12, dirIndex);
    new DataView(d.buffer).setUint32(16, 0);
    return parseRpmHeader(
      blob(
        [
          [RpmTag.BASENAMES, RpmType.STRING_ARRAY, 0, 2],
          [RpmTag.DIRNAMES, RpmType.STRING_ARRAY, 4, 1],
          [RpmTag.DIRINDEXES, RpmType.INT32, 12, dirIndexCount],
        ],
        d,
      ),
      "h",
    );
  };
  assert.throws(
    () => rpmHeaderFiles(header(1, 0), "p.rpm"),
    cleanFailure("INVALID_ARCHIVE", /p\.rpm is inconsistent: 2 BASENAMES but 1 DIRINDEXES/),
  );
  assert.throws(
    () => rpmHeaderFiles(header(2, 7), "p.rpm"),
    cleanFailure("INVALID_ARCHIVE", /file 0 names directory 7 of 1/),
  );
  const deps = parseRpmHeader(
    blob(
      [
        [RpmTag.REQUIREFLAGS, RpmType.INT32, 0, 2],
        [RpmTag.REQUIRENAME, RpmType.STRING_ARRAY, 8, 1],
      ],
      new Uint8Array([0, 0, 0, 8, 0, 0, 0, 8, 97, 0]),
    ),
    "h",
  );
  assert.throws(
    () => rpmHeaderDependencies(deps, "require", "p.rpm"),
    cleanFailure("INVALID_ARCHIVE", /1 require names but 2 flags/),
  );
});
