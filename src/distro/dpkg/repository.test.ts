import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { parseRelease } from "./repository.ts";

// The head of bookworm-security's Release as the archive publishes it (MD5Sum section omitted).
const SECURITY_RELEASE = `Origin: Debian
Label: Debian-Security
Suite: oldstable-security
Version: 12
Codename: bookworm-security
Date: Mon, 23 Nov 2026 11:22:37 UTC
Valid-Until: Mon, 30 Nov 2026 11:22:37 UTC
Acquire-By-Hash: yes
Architectures: amd64 arm64 armhf i386 ppc64el
Components: updates/main updates/contrib updates/non-free-firmware updates/non-free
Description: Debian 12 - Security Updates
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 contrib/Contents-amd64
 6a76270e9f19326bc8681136eba244cc44c18da5f16a5f0d427189e16f24bac1  2526003 main/binary-amd64/Packages
 36712c7d22dfc0a49c79e3e7a22e7f545a50bbf09d6111fe0ce4149addd93cad   378656 main/binary-amd64/Packages.xz
`;

test("Release: dates in UTC, by-hash, architectures, components and the SHA256 list", () => {
  const r = parseRelease(SECURITY_RELEASE, "InRelease");
  assert.equal(r.codename, "bookworm-security");
  assert.equal(r.suite, "oldstable-security");
  assert.equal(r.date?.toISOString(), "2026-11-23T11:22:37.000Z");
  assert.equal(r.validUntil?.toISOString(), "2026-11-30T11:22:37.000Z");
  assert.equal(r.acquireByHash, true);
  assert.equal(r.archAllInArchIndexes, false);
  assert.deepEqual(r.architectures, ["amd64", "arm64", "armhf", "i386", "ppc64el"]);
  assert.equal(r.components[0], "updates/main");
  assert.deepEqual(r.files.get("main/binary-amd64/Packages.xz"), {
    sha256: "36712c7d22dfc0a49c79e3e7a22e7f545a50bbf09d6111fe0ce4149addd93cad",
    size: 378656,
  });
  assert.equal(r.files.size, 3);
});

test("Release without SHA256 sums, or with an unreadable date, is UNTRUSTED", () => {
  assert.throws(
    () =>
      parseRelease(
        "Origin: x\nMD5Sum:\n 0123456789abcdef0123456789abcdef 1 main/binary-amd64/Packages\n",
        "R",
      ),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /R lists no SHA256/.test(e.message),
  );
  assert.throws(
    () => parseRelease(SECURITY_RELEASE.replace("Valid-Until: Mon, 30 Nov", "Valid-Until: someday"), "R"),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /unreadable Valid-Until/.test(e.message),
  );
  assert.equal(
    parseRelease(`${SECURITY_RELEASE}No-Support-for-Architecture-all: Packages\n`).archAllInArchIndexes,
    true,
  );
  const offset = parseRelease(
    SECURITY_RELEASE.replace("Date: Mon, 23 Nov 2026 11:22:37 UTC", "Date: 23 Nov 2026 13:22 +0200"),
  );
  assert.equal(offset.date?.toISOString(), "2026-11-23T11:22:00.000Z");
});
