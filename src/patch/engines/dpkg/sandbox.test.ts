import assert from "node:assert/strict";
import { test } from "node:test";
import { chooseVersion } from "./fix-version.ts";
import { aptFailure } from "./run-apt.ts";
import { eligibleVersions, parseAptPolicy, parsePrintUris, verifiedDebEntry } from "./sandbox.ts";

// Real `LC_ALL=C apt-cache policy libssl3 nginx-light` output from a bookworm host (2026-11).
const POLICY = `libssl3:
  Installed: 3.0.19-1~deb12u2
  Candidate: 3.0.22-1~deb12u2
  Version table:
     3.0.22-1~deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     3.0.20-1~deb12u2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 3.0.19-1~deb12u2 100
        100 /var/lib/dpkg/status
     3.0.17-1~deb12u2 500
        500 http://deb.debian.org/debian bookworm-updates/main amd64 Packages
nginx-light:
  Installed: (none)
  Candidate: (none)
  Version table:
`;

test("apt-cache policy: installed, candidate and every version apt offers", () => {
  const p = parseAptPolicy(POLICY);
  assert.deepEqual(p.get("libssl3"), {
    installed: "3.0.19-1~deb12u2",
    candidate: "3.0.22-1~deb12u2",
    versions: ["3.0.22-1~deb12u2", "3.0.20-1~deb12u2", "3.0.19-1~deb12u2", "3.0.17-1~deb12u2"],
    priorities: new Map([
      ["3.0.22-1~deb12u2", 500],
      ["3.0.20-1~deb12u2", 500],
      ["3.0.19-1~deb12u2", 100],
      ["3.0.17-1~deb12u2", 500],
    ]),
  });
  assert.deepEqual(p.get("nginx-light"), { installed: undefined, candidate: "(none)", versions: [] });
});

test("a target takes only versions apt ranks as high as its candidate: a backport or a version pinned lower is not installed", () => {
  // Shaped like apt-cache policy on bookworm with bookworm-backports enabled (NotAutomatic +
  // ButAutomaticUpgrades: priority 100) and a negative pin on one version.
  const p = parseAptPolicy(`curl:
  Installed: 7.88.1-10+deb12u5
  Candidate: 7.88.1-10+deb12u14
  Version table:
     8.14.1-2~bpo12+1 100
        100 http://deb.debian.org/debian bookworm-backports/main amd64 Packages
     7.88.1-10+deb12u15 -1
        -1 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     7.88.1-10+deb12u14 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 7.88.1-10+deb12u5 100
        100 /var/lib/dpkg/status
`).get("curl")!;
  assert.deepEqual(eligibleVersions(p), ["7.88.1-10+deb12u14"]);
  const choose = (fixedVersion: string) =>
    chooseVersion({ name: "curl", fixedVersion }, { ...p, versions: eligibleVersions(p) });
  assert.deepEqual(choose("7.88.1-10+deb12u12"), { version: "7.88.1-10+deb12u14" });
  assert.equal(choose("7.88.1-10+deb12u15"), undefined);
});

test("the newest version at or above the fix is chosen", () => {
  const p = parseAptPolicy(POLICY).get("libssl3")!;
  assert.deepEqual(chooseVersion({ name: "libssl3", fixedVersion: "3.0.20-1~deb12u1" }, p), {
    version: "3.0.22-1~deb12u2",
  });
  assert.equal(chooseVersion({ name: "libssl3", fixedVersion: "3.0.23-1" }, p), undefined);
});

test("an unasked major-version jump is refused in favour of the report's fix line (copa#1441)", () => {
  const policy = {
    installed: "1.1.1n-0+deb11u4",
    candidate: "3.0.22-1",
    versions: ["3.0.22-1", "1.1.1w-0+deb11u2"],
  };
  const choice = chooseVersion({ name: "libssl", fixedVersion: "1.1.1w-0+deb11u1" }, policy);
  assert.equal(choice?.version, "1.1.1w-0+deb11u2");
  assert.match(choice?.note ?? "", /new major version/);
  // Nothing on the fix's line: refused rather than jumping.
  assert.equal(
    chooseVersion(
      { name: "libssl", fixedVersion: "1.1.1w-0+deb11u1" },
      { ...policy, versions: ["3.0.22-1"] },
    ),
    undefined,
  );
  // The report itself asks for the new major: allowed.
  assert.equal(chooseVersion({ name: "libssl", fixedVersion: "3.0.1-1" }, policy)?.version, "3.0.22-1");
});

test("apt's verification failures become one UNTRUSTED line; other failures keep apt's E: lines", () => {
  // What apt-get install printed when a mirror served an altered .deb (2026-11, bookworm apt 2.6).
  const tampered = `Get:1 http://127.0.0.1:40123/debian-security bookworm-security/main amd64 libexpat1 amd64 2.5.0-1+deb12u5 [107 kB]
Err:1 http://127.0.0.1:40123/debian-security bookworm-security/main amd64 libexpat1 amd64 2.5.0-1+deb12u5
  Hash Sum mismatch
  Hashes of expected file:
   - SHA256:0d5d7c9a0d3c0f8e1c7f1f3e2b0a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b
   - Filesize:107940 [weak]
E: Failed to fetch http://127.0.0.1:40123/debian-security/pool/updates/main/e/expat/libexpat1_2.5.0-1+deb12u5_amd64.deb  Hash Sum mismatch
E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?`;
  const e = aptFailure("apt-get install", 100, tampered);
  assert.equal(e.code, "UNTRUSTED");
  assert.match(
    e.message,
    /^apt-get install: apt refused .*Failed to fetch .*libexpat1.*Hash Sum mismatch.*use another mirror$/,
  );
  assert.doesNotMatch(e.message, /\n/);

  const other = aptFailure(
    "apt-get update",
    100,
    "Reading package lists...\nE: Could not get lock /var/lib/apt/lists/lock",
  );
  assert.equal(other.code, "PATCH_FAILED");
  assert.match(other.message, /exit 100\): E: Could not get lock/);
});

test("--print-uris lines give URI, file name and size; a hash apt prints is not taken", () => {
  // apt 2.6 prints no hash (the real bookworm output); older apts print one, which is ignored.
  const out = `'http://deb.debian.org/debian-security/pool/updates/main/e/expat/libexpat1_2.5.0-1%2bdeb12u5_amd64.deb' libexpat1_2.5.0-1+deb12u5_amd64.deb 107940 
'http://deb.debian.org/debian/pool/main/t/tzdata/tzdata_2026f-0%2bdeb12u1_all.deb' tzdata_2026f-0+deb12u1_all.deb 257000 SHA256:${"b".repeat(64)}
'http://evil/../x.deb' ../x.deb 10 SHA256:${"c".repeat(64)}`;
  assert.deepEqual(parsePrintUris(out), [
    {
      uri: "http://deb.debian.org/debian-security/pool/updates/main/e/expat/libexpat1_2.5.0-1%2bdeb12u5_amd64.deb",
      filename: "libexpat1_2.5.0-1+deb12u5_amd64.deb",
      size: 107940,
    },
    {
      uri: "http://deb.debian.org/debian/pool/main/t/tzdata/tzdata_2026f-0%2bdeb12u1_all.deb",
      filename: "tzdata_2026f-0+deb12u1_all.deb",
      size: 257000,
    },
  ]);
});

test("a .deb apt will fetch gets its SHA-256 from the verified Packages index of its repository only", () => {
  const group = {
    prefix: "deb.debian.org_debian-security_dists_bookworm-security_",
    repoUri: "http://deb.debian.org/debian-security",
    keyring: { keys: [], sources: [] },
  };
  const sha = "cae5ded666d8573dd33060bc66fbac21eea8b101a6b56e2af8bd590fcfa65d79";
  const packages = Buffer.from(`Package: libexpat-dev
Filename: pool/updates/main/e/expat/libexpat1-dev_2.5.0-1+deb12u5_amd64.deb
Size: 150000
SHA256: ${"d".repeat(64)}

Package: libexpat1
Source: expat
Version: 2.5.0-1+deb12u5
Architecture: amd64
Filename: pool/updates/main/e/expat/libexpat1_2.5.0-1+deb12u5_amd64.deb
Size: 107940
SHA256: ${sha}
`);
  const lists = new Map([
    [`${group.prefix}main_binary-amd64_Packages`, { bytes: packages, packages, date: new Date(0), group }],
  ]);
  const wanted = parsePrintUris(
    "'http://deb.debian.org/debian-security/pool/updates/main/e/expat/libexpat1_2.5.0-1%2bdeb12u5_amd64.deb' libexpat1_2.5.0-1+deb12u5_amd64.deb 107940 ",
  )[0]!;
  const entry = verifiedDebEntry(wanted, lists);
  assert.deepEqual(
    entry && [
      entry.package,
      entry.version,
      entry.architecture,
      entry.size,
      entry.sha256,
      entry.repoUri,
      entry.filename,
    ],
    [
      "libexpat1",
      "2.5.0-1+deb12u5",
      "amd64",
      107940,
      sha,
      "http://deb.debian.org/debian-security/pool/updates/main/e/expat",
      "libexpat1_2.5.0-1+deb12u5_amd64.deb",
    ],
  );
  // Another size than the index's, another repository, or a file the index does not list: none.
  assert.equal(verifiedDebEntry({ ...wanted, size: 107941 }, lists), undefined);
  assert.equal(
    verifiedDebEntry({ ...wanted, uri: wanted.uri.replace("deb.debian.org", "evil.example") }, lists),
    undefined,
  );
  assert.equal(
    verifiedDebEntry({ ...wanted, uri: wanted.uri.replace("deb12u5", "deb12u6") }, lists),
    undefined,
  );
});
