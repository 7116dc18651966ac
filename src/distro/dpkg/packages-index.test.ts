import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import {
  debUrl,
  entryParagraph,
  makePackagesIndex,
  newestCandidate,
  type PackageEntry,
  parsePackagesIndex,
  parseRelations,
  sourceOf,
} from "./packages-index.ts";

const H = (c: string) => c.repeat(64);

// Shaped like real bookworm-security stanzas (fields in archive order, multi-line Description).
const SECURITY = `Package: libssl3
Source: openssl
Version: 3.0.15-1~deb12u1
Installed-Size: 6237
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Multi-Arch: same
Depends: libc6 (>= 2.34)
Breaks: readline-common (<< 8.2-1)
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation.
 .
 It provides the libssl and libcrypto shared libraries.
Filename: pool/updates/main/o/openssl/libssl3_3.0.15-1~deb12u1_amd64.deb
Size: 2024412
SHA256: ${H("a")}
Description-md5: 88547c6206c7fbc4fcc7d09ce100d210

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Essential: yes
Provides: tzdata-bookworm
Depends: debconf (>= 0.5) | debconf-2.0
Filename: pool/updates/main/t/tzdata/tzdata_2024a-0+deb12u1_all.deb
Size: 255584
SHA256: ${H("b")}

Package: no-checksum
Version: 1.0
Architecture: amd64
Filename: pool/main/n/no-checksum/no-checksum_1.0_amd64.deb
Size: 10
MD5sum: 0123456789abcdef0123456789abcdef
`;

const MAIN = `Package: libssl3
Source: openssl (3.0.11-1~deb12u2)
Version: 3.0.11-1~deb12u2+b1
Architecture: amd64
Filename: pool/main/o/openssl/libssl3_3.0.11-1~deb12u2+b1_amd64.deb
Size: 2000000
SHA256: ${H("c")}

Package: libssl3
Version: 9.9.9-1
Architecture: arm64
Filename: pool/main/o/openssl/libssl3_9.9.9-1_arm64.deb
Size: 2000000
SHA256: ${H("d")}

Package: tzdata
Version: 2024a-0+deb12u2
Architecture: all
Filename: pool/main/t/tzdata/tzdata_2024a-0+deb12u2_all.deb
Size: 255000
SHA256: ${H("e")}
`;

function index(text: string, repoUri: string, suite: string) {
  return makePackagesIndex(
    { uri: repoUri, suite, component: "main", arch: "amd64", url: `${repoUri}/x`, sha256: H("0") },
    parsePackagesIndex(text, { repoUri }),
  );
}

test("Packages stanzas give the fields a resolver and downloader need; unverifiable ones are dropped", () => {
  const entries = parsePackagesIndex(SECURITY, { repoUri: "http://deb.debian.org/debian-security" });
  assert.deepEqual(
    entries.map((e) => e.package),
    ["libssl3", "tzdata"],
  );
  const ssl = entries[0]!;
  assert.equal(ssl.version, "3.0.15-1~deb12u1");
  assert.equal(ssl.architecture, "amd64");
  assert.equal(ssl.size, 2024412);
  assert.equal(ssl.sha256, H("a"));
  assert.equal(ssl.multiArch, "same");
  assert.equal(ssl.depends, "libc6 (>= 2.34)");
  assert.equal(ssl.breaks, "readline-common (<< 8.2-1)");
  assert.equal(ssl.essential, false);
  assert.deepEqual(sourceOf(ssl), { name: "openssl", version: "3.0.15-1~deb12u1" });
  assert.equal(
    entryParagraph(ssl).get("description"),
    "Secure Sockets Layer toolkit - shared libraries\nThis package is part of the OpenSSL project's implementation.\n.\nIt provides the libssl and libcrypto shared libraries.",
  );
  assert.equal(
    debUrl(ssl),
    "http://deb.debian.org/debian-security/pool/updates/main/o/openssl/libssl3_3.0.15-1~deb12u1_amd64.deb",
  );
  const tz = entries[1]!;
  assert.equal(tz.essential, true);
  assert.equal(tz.provides, "tzdata-bookworm");
  assert.deepEqual(sourceOf(tz), { name: "tzdata", version: "2024a-0+deb12u1" });
});

test("an index with stanzas but no usable entry is refused; an empty one is empty", () => {
  assert.throws(
    () => parsePackagesIndex("Package: x\nVersion: 1\n\nPackage: y\n", { repoUri: "http://r", what: "idx" }),
    (e: unknown) => isSutureError(e, "INVALID_MANIFEST") && /idx has 2 stanzas/.test(e.message),
  );
  assert.deepEqual(parsePackagesIndex("", { repoUri: "http://r" }), []);
});

test("newestCandidate picks the highest dpkg version across suites, honouring arch and arch all", () => {
  const main = index(MAIN, "http://deb.debian.org/debian", "bookworm");
  const security = index(SECURITY, "http://deb.debian.org/debian-security", "bookworm-security");
  const ssl = newestCandidate([main, security], "libssl3", "amd64");
  assert.equal(ssl?.version, "3.0.15-1~deb12u1", "3.0.15 beats 3.0.11+b1; arm64 9.9.9 ignored");
  assert.equal(ssl?.repoUri, "http://deb.debian.org/debian-security");
  assert.equal(newestCandidate([main, security], "libssl3", "arm64")?.version, "9.9.9-1");
  assert.equal(newestCandidate([security, main], "libssl3:arm64", "amd64")?.version, "9.9.9-1");
  assert.equal(newestCandidate([main, security], "tzdata", "arm64")?.version, "2024a-0+deb12u2");
  assert.equal(
    newestCandidate([{ indexes: [main, security] }], "tzdata", "amd64")?.version,
    "2024a-0+deb12u2",
  );
  assert.equal(newestCandidate([main, security], "absent", "amd64"), undefined);
  // An injected comparator is used instead of dpkg order.
  const lexical = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  assert.equal(newestCandidate([main, security], "libssl3", "amd64", lexical)?.version, "3.0.15-1~deb12u1");
});

test("debUrl refuses Filenames that escape the repository", () => {
  const base: PackageEntry = parsePackagesIndex(MAIN, { repoUri: "http://r.example/debian" })[0]!;
  for (const filename of ["../../etc/passwd", "/etc/passwd", "pool//x.deb", "http://evil.example/x.deb"]) {
    assert.throws(
      () => debUrl({ ...base, filename }),
      (e: unknown) => isSutureError(e, "UNTRUSTED"),
    );
  }
});

test("parseRelations reads alternatives, versions, arch qualifiers and old operators", () => {
  assert.deepEqual(
    parseRelations(
      "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any, foo (< 1), bar (>> 2~) [amd64] <!nocheck>",
    ),
    [
      [{ name: "libc6", op: ">=", version: "2.34" }],
      [{ name: "debconf", op: ">=", version: "0.5" }, { name: "debconf-2.0" }],
      [{ name: "python3", arch: "any" }],
      [{ name: "foo", op: "<=", version: "1" }],
      [{ name: "bar", op: ">>", version: "2~" }],
    ],
  );
  assert.deepEqual(parseRelations(undefined), []);
  assert.deepEqual(parseRelations("a (= 1:2.3-4)")[0], [{ name: "a", op: "=", version: "1:2.3-4" }]);
});

test("an index entry whose identity could name a path is refused as UNTRUSTED, naming the index and package", () => {
  for (const [field, value] of [
    ["Architecture", `amd64/${"../".repeat(8)}tmp/x`],
    ["Version", "1.0/../../x"],
  ] as const) {
    const stanza = `Package: libfoo1\nVersion: ${field === "Version" ? value : "1.0-1"}\nArchitecture: ${field === "Architecture" ? value : "amd64"}\nFilename: pool/x.deb\nSize: 1\nSHA256: ${H("a")}\n`;
    assert.throws(
      () =>
        parsePackagesIndex(stanza, {
          repoUri: "http://r",
          what: "http://r/dists/s/main/binary-amd64/Packages",
        }),
      (e: unknown) =>
        isSutureError(e, "UNTRUSTED") &&
        e.message.startsWith(
          `the signed index http://r/dists/s/main/binary-amd64/Packages (package "libfoo1") has a package ${field.toLowerCase()} `,
        ),
      field,
    );
  }
});
