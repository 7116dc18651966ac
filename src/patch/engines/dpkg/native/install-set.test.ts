import assert from "node:assert/strict";
import { test } from "node:test";
import { parseAptPreferences } from "../../../../distro/dpkg/apt-preferences.ts";
import { installedFromStatus } from "../../../../distro/dpkg/database.ts";
import { makePackagesIndex, parsePackagesIndex } from "../../../../distro/dpkg/packages-index.ts";
import { parseRelease } from "../../../../distro/dpkg/repository.ts";
import { resolveInstallSet } from "./install-set.ts";
import { CandidatePolicy, policyFile } from "./policy.ts";

const sha = "0".repeat(64);
const stanza = (fields: Record<string, string>) =>
  `${Object.entries({
    Architecture: "amd64",
    Filename: `pool/${fields.Package}.deb`,
    Size: "1",
    SHA256: sha,
    ...fields,
  })
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n")}\n`;
const status = (fields: Record<string, string>) =>
  `${Object.entries({ Status: "install ok installed", Architecture: "amd64", ...fields })
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n")}\n`;

// A miniature of bookworm: perl's binaries pin each other exactly; libssl3 is depended on with >=.
const INSTALLED = installedFromStatus(
  [
    status({ Package: "perl-base", Version: "5.36.0-7+deb12u3", Essential: "yes" }),
    status({
      Package: "perl",
      Version: "5.36.0-7+deb12u3",
      Depends: "perl-base (= 5.36.0-7+deb12u3), libperl5.36 (= 5.36.0-7+deb12u3)",
    }),
    status({
      Package: "libperl5.36",
      Version: "5.36.0-7+deb12u3",
      Depends: "perl-base (= 5.36.0-7+deb12u3)",
    }),
    status({ Package: "libssl3", Version: "3.0.20-1~deb12u2" }),
    status({ Package: "openssl", Version: "3.0.20-1~deb12u2", Depends: "libssl3 (>= 3.0.20)" }),
    status({ Package: "libexpat1", Version: "2.5.0-1+deb12u2", Status: "hold ok installed" }),
  ].join("\n"),
);
const INDEX = makePackagesIndex(
  {
    uri: "http://deb.debian.org/debian-security",
    suite: "bookworm-security",
    component: "main",
    arch: "amd64",
    url: "http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz",
    sha256: sha,
  },
  parsePackagesIndex(
    [
      stanza({ Package: "perl-base", Version: "5.36.0-7+deb12u4", Essential: "yes" }),
      stanza({
        Package: "perl",
        Version: "5.36.0-7+deb12u4",
        Depends: "perl-base (= 5.36.0-7+deb12u4), libperl5.36 (= 5.36.0-7+deb12u4)",
      }),
      stanza({
        Package: "libperl5.36",
        Version: "5.36.0-7+deb12u4",
        Depends: "perl-base (= 5.36.0-7+deb12u4)",
      }),
      stanza({ Package: "libssl3", Version: "3.0.22-1~deb12u2", Depends: "libnew1" }),
      stanza({ Package: "libnew1", Version: "1.0-1" }),
      stanza({ Package: "openssl", Version: "3.0.22-1~deb12u2", Depends: "libssl3 (>= 3.0.22)" }),
      stanza({ Package: "libexpat1", Version: "2.5.0-1+deb12u5" }),
      stanza({ Package: "libc6", Version: "2.36-9+deb12u15", Essential: "yes" }),
      stanza({ Package: "needs-essential", Version: "1", Depends: "libc6" }),
    ].join("\n"),
    { repoUri: "http://deb.debian.org/debian-security" },
  ),
);
const resolve = (targets: Parameters<typeof resolveInstallSet>[0]["targets"]) =>
  resolveInstallSet({ installed: INSTALLED, indexes: [INDEX], arch: "amd64", targets });
const names = (r: ReturnType<typeof resolve>) => r.install.map((i) => `${i.entry.package}:${i.reason}`);

test("perl pulls the binaries that pin it exactly, dependencies first", () => {
  const r = resolve([{ name: "perl", fixedVersion: "5.36.0-7+deb12u4" }]);
  assert.deepEqual(names(r), ["perl-base:dependency", "libperl5.36:dependency", "perl:target"]);
  assert.deepEqual(r.failed, []);
});

test("a library alone stays alone; a new dependency is installed with a warning", () => {
  const r = resolve([{ name: "libssl3", fixedVersion: "3.0.21" }]);
  assert.deepEqual(names(r), ["libnew1:new-dependency", "libssl3:target"]);
  assert.match(r.warnings.join("\n"), /needs libnew1, which is not installed/);
});

test("held and missing targets fail with the fix; update-all skips held packages", () => {
  const r = resolve([
    { name: "libexpat1", fixedVersion: "2.5.0-1+deb12u3" },
    { name: "nginx", fixedVersion: "1.22.1-9+deb12u11" },
  ]);
  assert.deepEqual(r.install, []);
  assert.match(r.failed.find((f) => f.name === "libexpat1")!.reason, /apt-mark unhold libexpat1/);
  assert.match(r.failed.find((f) => f.name === "nginx")!.reason, /not installed/);

  const all = resolve("all");
  assert.ok(!names(all).some((n) => n.startsWith("libexpat1")));
  assert.match(all.warnings.join("\n"), /libexpat1 is held/);
  // As apt-get upgrade: libssl3's upgrade needs a new package, so it is kept back, and openssl,
  // whose upgrade needs the new libssl3, with it.
  assert.deepEqual(all.install.map((i) => i.entry.package).sort(), ["libperl5.36", "perl", "perl-base"]);
  assert.match(all.warnings.join("\n"), /libssl3 is kept back .*needs libnew1, which is not installed/);
  assert.match(all.warnings.join("\n"), /openssl is kept back .*libssl3/);
  assert.deepEqual(all.failed, []);
});

test("an installed package whose dependency the upgrade breaks, with no version that fixes it, fails the patch naming it", () => {
  const installed = [
    ...INSTALLED,
    ...installedFromStatus(status({ Package: "needs-old", Version: "1", Depends: "libssl3 (<< 3.0.21)" })),
  ];
  const r = resolveInstallSet({
    installed,
    indexes: [INDEX],
    arch: "amd64",
    targets: [{ name: "libssl3", fixedVersion: "3.0.22" }],
  });
  assert.match(r.failed.map((f) => f.reason).join("\n"), /needs-old 1 .*no version of needs-old fixes that/);
});

test("backports and pins: targets and their dependencies take apt's candidates, never a backport it ranks lower", () => {
  const bpoRelease = parseRelease(
    `Suite: bookworm-backports\nCodename: bookworm-backports\nNotAutomatic: yes\nButAutomaticUpgrades: yes\nSHA256:\n ${sha} 1 main/binary-amd64/Packages\n`,
  );
  const bpoIndex = makePackagesIndex(
    { ...INDEX, suite: "bookworm-backports", url: "http://deb.debian.org/debian/bpo/Packages.xz" },
    parsePackagesIndex(
      [
        stanza({ Package: "libssl3", Version: "3.5.1-1~bpo12+1" }),
        stanza({ Package: "openssl", Version: "3.5.1-1~bpo12+1", Depends: "libssl3 (>= 3.5.1)" }),
        stanza({ Package: "libexpat1", Version: "2.7.1-1~bpo12+1" }),
        stanza({ Package: "perl-base", Version: "5.36.0-7+deb12u1", Essential: "yes" }),
      ].join("\n"),
      { repoUri: "http://deb.debian.org/debian" },
    ),
  );
  const securityRelease = parseRelease(
    `Suite: oldstable-security\nCodename: bookworm-security\nSHA256:\n ${sha} 1 main/binary-amd64/Packages\n`,
  );
  const policy = (pins = "") =>
    new CandidatePolicy({
      indexes: [
        { index: INDEX, file: policyFile(securityRelease, INDEX) },
        { index: bpoIndex, file: policyFile(bpoRelease, bpoIndex) },
      ],
      pins: parseAptPreferences(pins),
      arch: "amd64",
    });
  const resolveWith = (targets: Parameters<typeof resolve>[0], pins?: string) =>
    resolveInstallSet({ installed: INSTALLED, indexes: [], arch: "amd64", targets, policy: policy(pins) });

  const openssl = resolveWith([{ name: "openssl", fixedVersion: "3.0.22-1~deb12u2" }]);
  assert.deepEqual(
    openssl.install.map((i) => `${i.entry.package} ${i.entry.version}`),
    ["libnew1 1.0-1", "libssl3 3.0.22-1~deb12u2", "openssl 3.0.22-1~deb12u2"],
  );

  // The fix only exists in backports: as apt-get install --only-upgrade, no.
  const onlyBpo = resolveWith([{ name: "openssl", fixedVersion: "3.5.0" }]);
  assert.deepEqual(onlyBpo.install, []);
  assert.match(onlyBpo.failed[0]!.reason, /3\.5\.1-1~bpo12\+1 \(priority 100.*ranks lower.*preferences/);

  // Pinned up, backports is the candidate, and a dependency follows it.
  const pinned = resolveWith(
    [{ name: "openssl", fixedVersion: "3.5.0" }],
    "Package: openssl libssl3\nPin: release n=bookworm-backports\nPin-Priority: 600\n",
  );
  assert.deepEqual(
    pinned.install.map((i) => `${i.entry.package} ${i.entry.version}`),
    ["libssl3 3.5.1-1~bpo12+1", "openssl 3.5.1-1~bpo12+1"],
  );

  // A pin at or above 1000 on an older version would be a downgrade: suture leaves the package.
  const all = resolveWith("all", "Package: perl-base\nPin: version 5.36.0-7+deb12u1\nPin-Priority: 1001\n");
  assert.ok(!all.install.some((i) => i.entry.package.startsWith("perl")));
  assert.match(
    all.warnings.join("\n"),
    /perl-base is pinned to 5\.36\.0-7\+deb12u1 .*suture never downgrades/,
  );
  assert.match(all.warnings.join("\n"), /perl is kept back/);
  assert.ok(!all.install.some((i) => /~bpo/.test(i.entry.version)), "update-all takes no backport");
});

test("update-all keeps back an upgrade whose Recommends would go unmet, as apt-get upgrade does (libapt-pkg6.0 with apt held)", () => {
  const installed = installedFromStatus(
    [
      status({
        Package: "apt",
        Version: "2.6.1",
        Status: "hold ok installed",
        Depends: "libapt-pkg6.0 (>= 2.6.1)",
      }),
      status({ Package: "libapt-pkg6.0", Version: "2.6.1", Recommends: "apt (>= 2.6.1)" }),
    ].join("\n"),
  );
  const index = makePackagesIndex(
    { ...INDEX, suite: "bookworm" },
    parsePackagesIndex(
      [
        stanza({ Package: "apt", Version: "2.6.2", Depends: "libapt-pkg6.0 (>= 2.6.2)" }),
        stanza({ Package: "libapt-pkg6.0", Version: "2.6.2", Recommends: "apt (>= 2.6.2)" }),
      ].join("\n"),
      { repoUri: "http://deb.debian.org/debian" },
    ),
  );
  const held = resolveInstallSet({ installed, indexes: [index], arch: "amd64", targets: "all" });
  assert.deepEqual(held.install, []);
  assert.match(held.warnings.join("\n"), /libapt-pkg6\.0 is kept back .*recommends apt \(>= 2\.6\.2\)/);
  // With APT::Install-Recommends "false" apt does not look at Recommends.
  const noRecommends = resolveInstallSet({
    installed,
    indexes: [index],
    arch: "amd64",
    targets: "all",
    recommendsMatter: false,
  });
  assert.deepEqual(
    noRecommends.install.map((i) => i.entry.package),
    ["libapt-pkg6.0"],
  );
});
