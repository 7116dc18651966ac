import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { gzipSync } from "node:zlib";
import { buildDeb } from "../../../test/lab/deb.ts";
import { cveIdsIn } from "../changelog-ids.ts";
import { cvesBetween, debChangelogFixes, parseDebChangelog, readDebChangelogs } from "./changelog.ts";
import { openDeb } from "./deb.ts";

const work = mkdtempSync(join(tmpdir(), "suture-changelog-"));
after(() => rmSync(work, { recursive: true, force: true }));

// The shape of openssl's bookworm-security changelog: LTS uploads naming CVEs in bullets that wrap.
const OPENSSL = `openssl (3.0.22-1~deb12u2) bookworm-security; urgency=high

  * Non-maintainer upload by the LTS Team.
  * CVE-2026-84782 ("DTLS Retransmits Handshake Messages From a Stale Buffer
    Offset")
  * CVE-2026-35189 ("Memory Allocation in Relative CRLDP Processing")

 -- Arnaud Rebillout <arnaudr@debian.org>  Wed, 21 Oct 2026 16:54:24 +0700

openssl (3.0.22-1~deb12u1) bookworm-security; urgency=medium

  * Import 3.0.22
  * CVE-2026-42767, CVE-2026-54874 (Fixed excessive memory use)
  * Also fixes CVE-2026-35189 in the CMS code.

 -- Arnaud Rebillout <arnaudr@debian.org>  Mon, 07 Sep 2026 10:00:00 +0700

openssl (3.0.20-1~deb12u2) bookworm-security; urgency=medium

  * CVE-2025-9230 (out-of-bounds read in RFC 3211 KEK unwrap)

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Tue, 30 Sep 2025 21:00:00 +0200

openssl (3.0.20-1~deb12u1) bookworm; urgency=medium

  * CVE-2025-1111 was already fixed upstream.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Tue, 30 Sep 2025 21:00:00 +0200
`;

test("a changelog's entries, newest first, each with its version and text", () => {
  const entries = parseDebChangelog(`preamble CVE-2020-0001 before any heading\n${OPENSSL}`);
  assert.deepEqual(
    entries.map((e) => [e.source, e.version]),
    [
      ["openssl", "3.0.22-1~deb12u2"],
      ["openssl", "3.0.22-1~deb12u1"],
      ["openssl", "3.0.20-1~deb12u2"],
      ["openssl", "3.0.20-1~deb12u1"],
    ],
  );
  assert.match(entries[0]!.text, /CVE-2026-84782/);
  assert.match(entries[0]!.text, / -- Arnaud Rebillout/);
});

test("an upgrade brings the CVEs of the entries after the installed version up to the new one", () => {
  const entries = parseDebChangelog(OPENSSL);
  // Installed 3.0.20-1~deb12u2: its own entry is what it already has.
  assert.deepEqual(cvesBetween(entries, "3.0.20-1~deb12u2", "3.0.22-1~deb12u2"), [
    "CVE-2026-35189",
    "CVE-2026-42767",
    "CVE-2026-54874",
    "CVE-2026-84782",
  ]);
  // Up to and including the new version: a changelog reaching further claims nothing beyond it.
  assert.deepEqual(cvesBetween(entries, "3.0.20-1~deb12u1", "3.0.22-1~deb12u1"), [
    "CVE-2025-9230",
    "CVE-2026-35189",
    "CVE-2026-42767",
    "CVE-2026-54874",
  ]);
  // By dpkg's order, not the text's: ~ sorts before everything.
  assert.deepEqual(cvesBetween(entries, "3.0.22-1~deb12u1", "3.0.22-1~deb12u2"), [
    "CVE-2026-35189",
    "CVE-2026-84782",
  ]);
  assert.deepEqual(cvesBetween(entries, "3.0.22-1~deb12u2", "3.0.22-1~deb12u2"), []);
  // A newly installed package fixes nothing in the image.
  assert.deepEqual(cvesBetween(entries, undefined, "3.0.22-1~deb12u2"), []);
});

test("headings with an invalid version are no entries; their text is not dated", () => {
  const entries = parseDebChangelog(
    "pkg (1.1) unstable; urgency=low\n\n  * CVE-2024-0002\n\npkg (not a version!) unstable; urgency=low\n\n  * CVE-2024-0003\n\npkg (1.0) unstable; urgency=low\n\n  * CVE-2024-0001\n",
  );
  assert.deepEqual(
    entries.map((e) => e.version),
    ["1.1", "1.0"],
  );
  assert.deepEqual(cvesBetween(entries, "1.0", "1.1"), ["CVE-2024-0002"]);
});

test("CVE IDs: standalone mentions only, unique, in numeric order", () => {
  assert.deepEqual(
    cveIdsIn(
      "CVE-2024-10000 and CVE-2024-9999, (CVE-2023-12345678) CVE-2024-9999; xCVE-2024-1111 CVE-2024-2222a CVE-24-1 [CVE-2022-0001]",
    ),
    ["CVE-2022-0001", "CVE-2024-9999", "CVE-2024-10000"],
  );
});

async function deb(
  name: string,
  version: string,
  control: string,
  files: { path: string; content: string | Buffer }[],
) {
  return buildDeb(
    join(work, `${name}_${version}_amd64.deb`),
    `Package: ${name}\nVersion: ${version}\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: t\n${control}`,
    files,
  );
}

test("readDebChangelogs reads changelog.Debian.gz and a binNMU's changelog.Debian.<arch>.gz from the .deb", async () => {
  const file = await deb("libfoo1", "1.2-3+b1", "Source: foo (1.2-3)\n", [
    {
      path: "usr/share/doc/libfoo1/changelog.Debian.gz",
      content: gzipSync("foo (1.2-3) unstable; urgency=high\n\n  * CVE-2024-1234\n"),
    },
    {
      path: "usr/share/doc/libfoo1/changelog.Debian.amd64.gz",
      content: gzipSync("foo (1.2-3+b1) unstable; urgency=low, binary-only=yes\n\n  * Rebuild.\n"),
    },
    { path: "usr/share/doc/libfoo1/copyright", content: "CVE-2000-0001 is no changelog\n" },
    { path: "usr/lib/libfoo.so.1", content: "ELF" },
  ]);
  const opened = await openDeb(file);
  const logs = await readDebChangelogs(opened);
  assert.equal(logs.source, "foo");
  assert.equal(logs.sourceVersion, "1.2-3");
  assert.match(logs.changelog ?? "", /CVE-2024-1234/);
  assert.match(logs.binNmu ?? "", /binary-only=yes/);

  // From 1.2-2 to the binNMU: the source upload's CVE, found through the main changelog.
  const fixes = debChangelogFixes([{ name: "libfoo1", from: "1.2-2", to: "1.2-3+b1", changelogs: logs }]);
  assert.deepEqual(fixes.get("libfoo1"), ["CVE-2024-1234"]);
  // From the source upload to its binNMU: a rebuild fixes nothing.
  assert.deepEqual(
    debChangelogFixes([{ name: "libfoo1", from: "1.2-3", to: "1.2-3+b1", changelogs: logs }]).get("libfoo1"),
    [],
  );
});

test("a package whose doc directory links to a sibling's takes the sibling's changelog (same source and version)", async () => {
  const changelog = gzipSync(
    "bar (2.0-2) bookworm-security; urgency=high\n\n  * CVE-2025-0002\n\n -- m <m@x>  Mon, 01 Jan 2025 00:00:00 +0000\n\nbar (2.0-1) bookworm; urgency=low\n\n  * CVE-2025-0001\n",
  );
  const main = await deb("bar", "2.0-2", "", [
    { path: "usr/share/doc/bar/changelog.Debian.gz", content: changelog },
  ]);
  // dpkg-deb cannot take a symlink from this helper's tree; a package with no doc dir is the same case.
  const data = await deb("bar-data", "2.0-2", "Source: bar\n", [
    { path: "usr/share/bar/data", content: "x" },
  ]);
  const other = await deb("baz-tools", "2.0-2", "Source: baz\n", [{ path: "usr/bin/baz", content: "x" }]);
  const read = async (f: string) => readDebChangelogs(await openDeb(f));
  const fixes = debChangelogFixes([
    { name: "bar-data", from: "2.0-1", to: "2.0-2", changelogs: await read(data) },
    { name: "bar", from: "2.0-1", to: "2.0-2", changelogs: await read(main) },
    { name: "baz-tools", from: "2.0-1", to: "2.0-2", changelogs: await read(other) },
  ]);
  assert.deepEqual(fixes.get("bar"), ["CVE-2025-0002"]);
  assert.deepEqual(fixes.get("bar-data"), ["CVE-2025-0002"]);
  // No changelog of its own and no updated sibling of its source: nothing is claimed for it.
  assert.equal(fixes.has("baz-tools"), false);
});

test("a changelog that decompresses to more than the limit is TOO_LARGE naming the .deb", async () => {
  const huge = gzipSync(Buffer.alloc(1024 * 1024 + 1, 0x20));
  const file = await deb("big", "1.0-1", "", [
    { path: "usr/share/doc/big/changelog.Debian.gz", content: huge },
  ]);
  await assert.rejects(
    readDebChangelogs(await openDeb(file), { maxBytes: 1024 * 1024 }),
    (e: Error & { code?: string }) => {
      assert.equal(e.code, "TOO_LARGE");
      assert.match(e.message, /big_1\.0-1_amd64\.deb/);
      return true;
    },
  );
});

test("a native package's changelog.gz is its Debian changelog; a non-native package's is upstream's and ignored", async () => {
  const debian = gzipSync(
    "ca-certificates (20250419~deb12u2) bookworm-security; urgency=medium\n\n  * CVE-2025-0100\n\n -- m <m@x>  Mon, 01 Jan 2025 00:00:00 +0000\n",
  );
  const native = await deb("ca-certificates", "20250419~deb12u2", "", [
    { path: "usr/share/doc/ca-certificates/changelog.gz", content: debian },
  ]);
  const logs = await readDebChangelogs(await openDeb(native));
  assert.match(logs.changelog ?? "", /CVE-2025-0100/);
  assert.deepEqual(
    debChangelogFixes([
      { name: "ca-certificates", from: "20230311", to: "20250419~deb12u2", changelogs: logs },
    ]).get("ca-certificates"),
    ["CVE-2025-0100"],
  );
  // unzip ships upstream's history as changelog.gz beside its changelog.Debian.gz.
  const upstream = await deb("unzip", "6.0-28", "", [
    { path: "usr/share/doc/unzip/changelog.gz", content: gzipSync("6.00 fixed CVE-2014-0001\n") },
  ]);
  assert.equal((await readDebChangelogs(await openDeb(upstream))).changelog, undefined);
});
