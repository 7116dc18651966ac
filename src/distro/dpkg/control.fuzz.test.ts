import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  parsesOrFailsCleanlyAsync,
  withinBudget,
} from "../../../test/fuzz/fuzz.ts";
import { SutureError } from "../../errors/errors.ts";
import { parseOsRelease } from "../os-release.ts";
import { field, parseControl, parseFields } from "./control.ts";
import {
  installedFromStatus,
  md5sumsPaths,
  parseConffilesField,
  parseDiversions,
  parseStatOverrides,
  readDpkgDatabase,
} from "./database.ts";
import { debUrl, parsePackagesIndex, parseRelations, sourceOf } from "./packages-index.ts";
import { parseRelease } from "./repository.ts";
import { defaultSourcesFor, parseDeb822Sources, parseSourcesList } from "./sources.ts";

// Property: the deb822 family (control files, Packages, Release, dpkg status, apt sources,
// os-release) comes from images and mirrors; every parser returns a value or throws a one-line
// SutureError, within PARSE_BUDGET_MS (which catches super-linear blow-ups).

/** A real bookworm Packages stanza (libssl3), with the fields the resolver reads. */
const PACKAGES = `Package: libssl3
Source: openssl
Version: 3.0.20-1~deb12u2
Installed-Size: 6030
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit - shared libraries
Multi-Arch: same
Homepage: https://www.openssl.org/
Section: libs
Priority: optional
Filename: pool/main/o/openssl/libssl3_3.0.20-1~deb12u2_amd64.deb
Size: 2036016
MD5sum: 4efab63a42e193c6107a3e1d1c46eaa4
SHA256: 89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025

Package: ca-certificates
Version: 20230311+deb12u1
Architecture: all
Essential: no
Pre-Depends: debconf (>= 0.5) | debconf-2.0
Filename: pool/main/c/ca-certificates/ca-certificates_20230311+deb12u1_all.deb
Size: 153600
SHA256: 5308b9bd88eebe2a48be3168cb3d87677aaec5da9c63ad0cf561a29b8219115c
`;

/** The head of bookworm-security's Release (signed text of its InRelease). */
const RELEASE = `Origin: Debian
Label: Debian-Security
Suite: oldstable-security
Version: 12
Codename: bookworm-security
Date: Sun, 29 Nov 2026 00:53:13 UTC
Valid-Until: Sun, 06 Dec 2026 00:53:13 UTC
Acquire-By-Hash: yes
Architectures: amd64 arm64 armhf i386 ppc64el
Components: updates/main updates/contrib updates/non-free-firmware updates/non-free
Description: Debian 12 - Security Updates
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 contrib/Contents-amd64
 f61f27bd17de546264aa58f40f3aafaac7021e0ef69c17f6b1b4cd7664a037ec       20 contrib/Contents-amd64.gz
 89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025   123456 updates/main/binary-amd64/Packages.xz
`;

const STATUS = `Package: libssl3
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 6030
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Multi-Arch: same
Source: openssl
Version: 3.0.11-1~deb12u2
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit - shared libraries

Package: base-files
Essential: yes
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5
Conffiles:
 /etc/debian_version 9a1b5d4e7b0b5d1c4f0d4e1b8f8a6c3e
 /etc/issue 3e9e0b8f5a1c2d4e6f708192a3b4c5d6 obsolete
Description: Debian base system miscellaneous files

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
`;

const SOURCES_LIST = `# See sources.list(5)
deb http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main contrib
deb-src http://deb.debian.org/debian bookworm main
deb [trusted=yes] file:/local ./
`;

const DEB822_SOURCES = `Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Architectures: amd64
Enabled: yes
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZ
 -----END PGP PUBLIC KEY BLOCK-----
`;

const OS_RELEASE = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
ID_LIKE='rhel "fedora"'
HOME_URL="https://www.debian.org/"
`;

test("seeds parse (so mutations start from real documents)", () => {
  assert.equal(parsePackagesIndex(PACKAGES, { repoUri: "http://x/debian" }).length, 2);
  assert.equal(parseRelease(RELEASE).files.size, 3);
  assert.equal(installedFromStatus(STATUS).length, 2);
  assert.equal(parseSourcesList(SOURCES_LIST).length, 3);
  assert.equal(parseDeb822Sources(DEB822_SOURCES).length, 3);
  assert.equal(parseOsRelease(OS_RELEASE).versionCodename, "bookworm");
});

test("control, status, stanza and dpkg-database text parsers never throw", () => {
  fc.assert(
    fc.property(hostileText([PACKAGES, STATUS, RELEASE, DEB822_SOURCES]), (text) => {
      withinBudget(PARSE_BUDGET_MS, () => {
        for (const p of parseControl(text)) {
          for (const [k, v] of p) {
            assert.equal(k, k.toLowerCase());
            assert.equal(field(p, k), v);
          }
        }
        for (const pkg of installedFromStatus(text)) assert.ok(pkg.name && pkg.version);
        const fields = parseFields(text);
        for (const f of fields) if (f.name.toLowerCase() === "conffiles") parseConffilesField(f.value);
        parseStatOverrides(text);
        md5sumsPaths(text);
        parsesOrFailsCleanly(["INVALID_MANIFEST"], () => parseDiversions(text));
      });
    }),
    fuzzParameters(600),
  );
});

test("Packages index: entries or one-line INVALID_MANIFEST / UNTRUSTED; an entry's URL never leaves the repository", () => {
  fc.assert(
    fc.property(hostileText([PACKAGES]), (text) => {
      // UNTRUSTED: a signed index whose entry names a package outside Debian Policy's syntax.
      const entries = withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_MANIFEST", "UNTRUSTED"], () =>
          parsePackagesIndex(text, { repoUri: "http://mirror/debian" }),
        ),
      );
      for (const e of entries ?? []) {
        assert.match(e.sha256, /^[0-9a-f]{64}$/);
        assert.ok(Number.isSafeInteger(e.size) && e.size >= 0);
        sourceOf(e);
        for (const relations of [e.depends, e.preDepends, e.provides, e.conflicts, e.breaks, e.replaces])
          parsesOrFailsCleanly(["INVALID_MANIFEST"], () => parseRelations(relations));
        const url = parsesOrFailsCleanly(["UNTRUSTED"], () => debUrl(e));
        if (url) {
          assert.ok(url.startsWith("http://mirror/debian/"), url);
          assert.ok(!new URL(url).pathname.split("/").includes(".."), url);
        }
      }
    }),
    fuzzParameters(600),
  );
});

test("Release: parsed or one-line UNTRUSTED", () => {
  fc.assert(
    fc.property(hostileText([RELEASE]), (text) => {
      const info = withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["UNTRUSTED"], () => parseRelease(text)),
      );
      if (info) {
        assert.ok(info.files.size > 0);
        if (info.date) assert.ok(!Number.isNaN(info.date.getTime()));
        if (info.validUntil) assert.ok(!Number.isNaN(info.validUntil.getTime()));
      }
    }),
    fuzzParameters(500),
  );
});

test("apt sources (one-line and deb822): sources or one-line INVALID_MANIFEST", () => {
  fc.assert(
    fc.property(hostileText([SOURCES_LIST, DEB822_SOURCES]), (text) => {
      withinBudget(PARSE_BUDGET_MS, () => {
        for (const parse of [parseSourcesList, parseDeb822Sources]) {
          for (const s of parsesOrFailsCleanly(["INVALID_MANIFEST"], () => parse(text, "/etc/apt/x")) ?? []) {
            assert.match(s.uri, /^[a-z][a-z0-9+.-]*:/i);
            assert.ok(s.suite.length > 0);
          }
        }
      });
    }),
    fuzzParameters(600),
  );
});

test("os-release: always a value with an id", () => {
  fc.assert(
    fc.property(hostileText([OS_RELEASE]), (text) => {
      const os = withinBudget(PARSE_BUDGET_MS, () => parseOsRelease(text));
      assert.equal(typeof os.id, "string");
      assert.ok(Array.isArray(os.idLike));
      // A distroless image's sources come from its os-release alone.
      for (const source of parsesOrFailsCleanly(["UNSUPPORTED_OS"], () => defaultSourcesFor(os)) ?? []) {
        assert.equal(typeof source.suite, "string");
        assert.ok(source.suite.length > 0 && !/\s/.test(source.suite), source.suite);
      }
    }),
    fuzzParameters(400),
  );
});

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-dpkgdb-fuzz-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

test("dpkg database of an image: read or one-line error, from mutated status and diversions", async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      hostileText([STATUS]),
      hostileText(["/usr/bin/a\n/usr/bin/a.distrib\npkg\n"]),
      async (status, diversions) => {
        const root = join(work, `r-${n++}`);
        mkdirSync(join(root, "var/lib/dpkg/info"), { recursive: true });
        writeFileSync(join(root, "var/lib/dpkg/status"), status);
        writeFileSync(join(root, "var/lib/dpkg/diversions"), diversions);
        await parsesOrFailsCleanlyAsync(["INVALID_MANIFEST", "UNSUPPORTED_OS"], () => readDpkgDatabase(root));
        rmSync(root, { recursive: true, force: true });
      },
    ),
    fuzzParameters(25),
  );
});

// Regressions: cases the properties above found, kept as plain tests.
test("regression: a Release Date and an apt source line with line breaks give one-line errors", () => {
  assert.throws(
    () => parseRelease(`Date: \0 Sun\n x\nSHA256:\n ${"a".repeat(64)} 1 main/Packages\n`),
    (e: Error) =>
      e.message === 'Release has an unreadable Date "\\u0000 Sun\\nx": the repository metadata is broken',
  );
  assert.throws(
    () => parseSourcesList("\0\r See sources.list(5)\n", "/etc/apt/sources.list"),
    (e: Error) => !/[\r\n]/.test(e.message) && e.message.includes('"\\u0000\\r See sources.list(5)"'),
  );
});

test("regression: a VERSION_ID named like an Object.prototype member is an unknown release", () => {
  assert.throws(
    () => defaultSourcesFor(parseOsRelease("ID=debian\nVERSION_ID=constructor\n")),
    (e: Error) => e instanceof SutureError && e.code === "UNSUPPORTED_OS",
  );
});

test("regression: a relation or Filename continued onto a second line gives a one-line error", () => {
  const [entry] = parsePackagesIndex(
    PACKAGES.replace("Depends: libc6 (>= 2.34)", "Depends: libc6 (>= 2.34)\n x y").replace(
      "Filename: pool/",
      "Filename: /pool\n ",
    ),
    { repoUri: "http://mirror/debian" },
  );
  assert.throws(
    () => parseRelations(entry!.depends),
    (e: Error) => e.message === 'malformed package relation "libc6 (>= 2.34)\\nx y"',
  );
  assert.throws(
    () => debUrl(entry!),
    (e: Error) => e instanceof SutureError && e.code === "UNTRUSTED" && !/[\r\n]/.test(e.message),
  );
});
