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

// ---------------------------------------------------------------------------------------------
// A table of small worlds: what is installed, what the sources offer, and what apt would do.
// ---------------------------------------------------------------------------------------------

type Fields = Record<string, string>;

function world(installed: Fields[], available: Fields[], extraIndexes: Fields[][] = []) {
  const index = (suite: string, entries: Fields[]) =>
    makePackagesIndex(
      { ...INDEX, suite },
      parsePackagesIndex(entries.map(stanza).join("\n"), { repoUri: "http://deb.debian.org/debian" }),
    );
  const indexes = [
    index("bookworm-security", available),
    ...extraIndexes.map((e, i) => index(`extra${i}`, e)),
  ];
  const packages = installedFromStatus(installed.map(status).join("\n"));
  return (
    targets: Parameters<typeof resolveInstallSet>[0]["targets"],
    extra: { upgradeAllowsNew?: boolean } = {},
  ) => resolveInstallSet({ installed: packages, indexes, arch: "amd64", targets, ...extra });
}
const fix = (name: string, fixedVersion: string) => [{ name, fixedVersion }];
const plan = (r: ReturnType<typeof resolveInstallSet>) =>
  r.install.map((i) => `${i.entry.package} ${i.from ?? "-"}>${i.entry.version} ${i.reason}`);

test("dependency closure: a versioned dependency pulls its own dependencies, deepest first", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1", Depends: "bb (>= 1)" },
      { Package: "bb", Version: "1", Depends: "cc" },
      { Package: "cc", Version: "1" },
    ],
    [
      { Package: "aa", Version: "2", Depends: "bb (>= 2)" },
      { Package: "bb", Version: "2", Depends: "cc (>= 2)" },
      { Package: "cc", Version: "2" },
    ],
  );
  const r = resolve(fix("aa", "2"));
  assert.deepEqual(plan(r), ["cc 1>2 dependency", "bb 1>2 dependency", "aa 1>2 target"]);
  assert.deepEqual(r.failed, []);
});

test("a dependency the installed version already satisfies is not upgraded (--only-upgrade touches no more)", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1", Depends: "bb (>= 1)" },
      { Package: "bb", Version: "1" },
    ],
    [
      { Package: "aa", Version: "2", Depends: "bb (>= 1)" },
      { Package: "bb", Version: "2" },
    ],
  );
  assert.deepEqual(plan(resolve(fix("aa", "2"))), ["aa 1>2 target"]);
});

test("alternatives: a satisfied one is enough; otherwise the first installed one that can be upgraded", () => {
  const installed: Fields[] = [
    { Package: "aa", Version: "1", Depends: "xx | yy" },
    { Package: "xx", Version: "1" },
    { Package: "yy", Version: "1" },
  ];
  const available: Fields[] = [
    { Package: "xx", Version: "2" },
    { Package: "yy", Version: "2" },
  ];
  const satisfied = world(installed, [
    ...available,
    { Package: "aa", Version: "2", Depends: "xx | yy (>= 2)" },
  ]);
  assert.deepEqual(plan(satisfied(fix("aa", "2"))), ["aa 1>2 target"]);
  const upgradeFirst = world(installed, [
    ...available,
    { Package: "aa", Version: "2", Depends: "xx (>= 2) | yy (>= 2)" },
  ]);
  assert.deepEqual(plan(upgradeFirst(fix("aa", "2"))), ["xx 1>2 dependency", "aa 1>2 target"]);
  const onlySecond = world(installed, [
    { Package: "yy", Version: "2" },
    { Package: "aa", Version: "2", Depends: "xx (>= 2) | yy (>= 2)" },
  ]);
  assert.deepEqual(plan(onlySecond(fix("aa", "2"))), ["yy 1>2 dependency", "aa 1>2 target"]);
});

test("alternatives with none installed: apt installs the first one the sources have", () => {
  const resolve = world(
    [{ Package: "aa", Version: "1" }],
    [
      { Package: "aa", Version: "2", Depends: "gone | xx | yy" },
      { Package: "xx", Version: "1" },
      { Package: "yy", Version: "1" },
    ],
  );
  const r = resolve(fix("aa", "2"));
  assert.deepEqual(plan(r), ["xx ->1 new-dependency", "aa 1>2 target"]);
  assert.match(r.warnings.join("\n"), /aa 2 needs xx, which is not installed: installing it/);
});

test("a versioned dependency no source satisfies fails the target, naming the relation", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1", Depends: "bb" },
      { Package: "bb", Version: "1" },
    ],
    [
      { Package: "aa", Version: "2", Depends: "bb (>= 3)" },
      { Package: "bb", Version: "2" },
    ],
  );
  const r = resolve(fix("aa", "2"));
  assert.deepEqual(r.install.length === 0 || r.failed.length > 0, true);
  assert.match(r.failed.find((f) => f.name === "aa")!.reason, /bb \(>= 3\)/);
});

test("Provides: a virtual package an installed one provides satisfies the dependency", () => {
  const resolve = world(
    [
      { Package: "mailer", Version: "1", Depends: "exim4" },
      { Package: "exim4", Version: "4.96-1", Provides: "mail-transport-agent" },
    ],
    [
      { Package: "mailer", Version: "2", Depends: "default-mta | mail-transport-agent" },
      { Package: "default-mta", Version: "1" },
    ],
  );
  const r = resolve(fix("mailer", "2"));
  assert.deepEqual(plan(r), ["mailer 1>2 target"], "nothing new: exim4 provides mail-transport-agent");
  assert.deepEqual(r.failed, []);
});

test("Provides with a version: a versioned dependency on a virtual package is met by the provided version", () => {
  const resolve = world(
    [
      { Package: "app", Version: "1", Depends: "libabi (>= 1)" },
      { Package: "libimpl", Version: "2", Provides: "libabi (= 2)" },
    ],
    [{ Package: "app", Version: "2", Depends: "libabi (>= 2)" }],
  );
  assert.deepEqual(plan(resolve(fix("app", "2"))), ["app 1>2 target"]);
  const tooOld = world(
    [
      { Package: "app", Version: "1", Depends: "libabi (>= 1)" },
      { Package: "libimpl", Version: "1", Provides: "libabi (= 1)" },
    ],
    [{ Package: "app", Version: "2", Depends: "libabi (>= 2)" }],
  );
  assert.match(tooOld(fix("app", "2")).failed[0]?.reason ?? "", /libabi \(>= 2\)/);
  // apt upgrades the provider when its new version provides enough.
  const upgradable = world(
    [
      { Package: "app", Version: "1", Depends: "libabi (>= 1)" },
      { Package: "libimpl", Version: "1", Provides: "libabi (= 1)" },
    ],
    [
      { Package: "app", Version: "2", Depends: "libabi (>= 2)" },
      { Package: "libimpl", Version: "2", Provides: "libabi (= 2)" },
    ],
  );
  assert.deepEqual(plan(upgradable(fix("app", "2"))), ["libimpl 1>2 dependency", "app 1>2 target"]);
});

test("Breaks and Conflicts: the broken installed package is upgraded past the break, or the target is refused", () => {
  for (const relation of ["Breaks", "Conflicts"]) {
    const installed = [
      { Package: "aa", Version: "1" },
      { Package: "plugin", Version: "1" },
    ];
    const target = { Package: "aa", Version: "2", [relation]: "plugin (<< 2)" };
    const fixable = world(installed, [target, { Package: "plugin", Version: "2" }]);
    assert.deepEqual(
      plan(fixable(fix("aa", "2"))),
      ["aa 1>2 target", "plugin 1>2 reverse-dependency"],
      relation,
    );
    const refused = world(installed, [target]);
    const r = refused(fix("aa", "2"));
    assert.match(
      r.failed.find((f) => f.name === "aa")?.reason ?? "",
      /conflicts with the installed plugin 1 \(plugin \(<< 2\)\) and no version of plugin fixes that/,
      relation,
    );
  }
});

test("an installed package that Breaks the new version is upgraded to one that does not", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1" },
      { Package: "old-tool", Version: "1", Breaks: "aa (>= 2)" },
    ],
    [
      { Package: "aa", Version: "2" },
      { Package: "old-tool", Version: "2" },
    ],
  );
  assert.deepEqual(plan(resolve(fix("aa", "2"))), ["aa 1>2 target", "old-tool 1>2 reverse-dependency"]);
});

test("Pre-Depends are dependencies too, and come first in the order", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1", "Pre-Depends": "loader (>= 1)" },
      { Package: "loader", Version: "1" },
    ],
    [
      { Package: "aa", Version: "2", "Pre-Depends": "loader (>= 2)" },
      { Package: "loader", Version: "2" },
    ],
  );
  assert.deepEqual(plan(resolve(fix("aa", "2"))), ["loader 1>2 dependency", "aa 1>2 target"]);
});

test("exact pins between binaries of one source upgrade them together, the reverse way too", () => {
  const resolve = world(
    [
      { Package: "libfoo1", Version: "1.0-1" },
      { Package: "foo-tools", Version: "1.0-1", Depends: "libfoo1 (= 1.0-1)" },
    ],
    [
      { Package: "libfoo1", Version: "1.0-2" },
      { Package: "foo-tools", Version: "1.0-2", Depends: "libfoo1 (= 1.0-2)" },
    ],
  );
  assert.deepEqual(plan(resolve(fix("libfoo1", "1.0-2"))), [
    "libfoo1 1.0-1>1.0-2 target",
    "foo-tools 1.0-1>1.0-2 reverse-dependency",
  ]);
});

test("Essential: an upgraded essential package is fine; a new essential dependency is refused", () => {
  const resolve = world(
    [
      { Package: "bash", Version: "5.2-1", Essential: "yes" },
      { Package: "aa", Version: "1" },
    ],
    [
      { Package: "bash", Version: "5.2-2", Essential: "yes" },
      { Package: "aa", Version: "2", Depends: "newutils" },
      { Package: "newutils", Version: "1", Essential: "yes" },
    ],
  );
  assert.deepEqual(plan(resolve(fix("bash", "5.2-2"))), ["bash 5.2-1>5.2-2 target"]);
  const r = resolve(fix("aa", "2"));
  assert.deepEqual(r.install, []);
  assert.match(r.failed[0]!.reason, /needs newutils, a new Essential package suture will not add/);
});

test("a held dependency is not upgraded for a target: the target fails; update-all keeps it back", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1", Depends: "bb (>= 1)" },
      { Package: "bb", Version: "1", Status: "hold ok installed" },
    ],
    [
      { Package: "aa", Version: "2", Depends: "bb (>= 2)" },
      { Package: "bb", Version: "2" },
    ],
  );
  const r = resolve(fix("aa", "2"));
  assert.deepEqual(r.install, []);
  assert.match(r.failed.find((f) => f.name === "aa")!.reason, /bb \(>= 2\)/);
  const all = resolve("all");
  assert.deepEqual(all.install, []);
  assert.deepEqual(all.failed, []);
  assert.match(all.warnings.join("\n"), /bb is held/);
  assert.match(all.warnings.join("\n"), /aa is kept back/);
});

test("update-all: upgrades everything upgradable, keeps back what needs a new package unless --with-new-pkgs", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1" },
      { Package: "bb", Version: "1" },
      { Package: "cc", Version: "1" },
    ],
    [
      { Package: "aa", Version: "2" },
      { Package: "bb", Version: "2", Depends: "libnew" },
      { Package: "libnew", Version: "1" },
    ],
  );
  const all = resolve("all");
  assert.deepEqual(plan(all), ["aa 1>2 target"]);
  assert.match(all.warnings.join("\n"), /bb is kept back .*needs libnew, which is not installed/);
  const withNew = resolve("all", { upgradeAllowsNew: true });
  assert.deepEqual(plan(withNew), ["aa 1>2 target", "libnew ->1 new-dependency", "bb 1>2 target"]);
});

test("targets: already fixed or newer is a no-op; a fix newer than any source fails with the best there is", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "2" },
      { Package: "bb", Version: "1" },
    ],
    [
      { Package: "aa", Version: "2" },
      { Package: "bb", Version: "1.5" },
    ],
  );
  const done = resolve(fix("aa", "1.5"));
  assert.deepEqual([done.install, done.failed], [[], []]);
  const r = resolve(fix("bb", "2"));
  assert.deepEqual(r.install, []);
  assert.match(r.failed[0]!.reason, /no version ≥ 2 in the image's apt sources \(best: 1\.5\)/);
});

test("version constraints from the report: the fix line's version, not an unasked new major version", () => {
  const resolve = world(
    [{ Package: "aa", Version: "1.0-1" }],
    [{ Package: "aa", Version: "2.0-1" }],
    [[{ Package: "aa", Version: "1.0-2" }]],
  );
  const r = resolve(fix("aa", "1.0-2"));
  assert.deepEqual(plan(r), ["aa 1.0-1>1.0-2 target"]);
  assert.match(r.warnings.join("\n"), /2\.0-1 is a new major version; installing 1\.0-2/);
  // Asked for the new major version, it is what is installed.
  assert.deepEqual(plan(resolve(fix("aa", "2.0"))), ["aa 1.0-1>2.0-1 target"]);
  // The newest version of the fix line wins over an older one that also fixes it.
  assert.deepEqual(plan(resolve(fix("aa", "1.0-1.1"))), ["aa 1.0-1>1.0-2 target"]);
});

test("Multi-Arch: packages of another architecture are not the image's; :any relations match the native one", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1", Depends: "python3:any" },
      { Package: "python3", Version: "3.11-1", "Multi-Arch": "allowed" },
      { Package: "libx", Version: "1", Architecture: "i386", "Multi-Arch": "same" },
    ],
    [
      { Package: "aa", Version: "2", Depends: "python3:any (>= 3.11)" },
      { Package: "libx", Version: "2", "Multi-Arch": "same" },
    ],
  );
  assert.deepEqual(plan(resolve(fix("aa", "2"))), ["aa 1>2 target"]);
  // libx is installed only for i386: not installed as far as the amd64 image's targets go.
  assert.match(resolve(fix("libx", "2")).failed[0]!.reason, /not installed/);
  // Architecture: all and Multi-Arch: foreign packages satisfy dependencies like native ones.
  const foreign = world(
    [
      { Package: "aa", Version: "1" },
      { Package: "tzdata", Version: "2024a-1", Architecture: "all", "Multi-Arch": "foreign" },
    ],
    [
      { Package: "aa", Version: "2", Depends: "tzdata (>= 2024a)" },
      { Package: "tzdata", Version: "2025a-1", Architecture: "all", "Multi-Arch": "foreign" },
    ],
  );
  assert.deepEqual(plan(foreign(fix("aa", "2"))), ["aa 1>2 target"]);
});

test("an index package of another architecture is never a candidate", () => {
  const resolve = world(
    [{ Package: "aa", Version: "1" }],
    [{ Package: "aa", Version: "2", Architecture: "arm64" }],
  );
  assert.match(resolve(fix("aa", "2")).failed[0]!.reason, /no version ≥ 2/);
});

test("a target that cannot be installed is left out whole; the other targets still resolve (--ignore-errors)", () => {
  const resolve = world(
    [
      { Package: "aa", Version: "1" },
      { Package: "bb", Version: "1" },
      { Package: "shared", Version: "1" },
    ],
    [
      { Package: "aa", Version: "2", Depends: "shared (>= 2), missing-lib" },
      { Package: "bb", Version: "2", Depends: "shared (>= 2)" },
      { Package: "shared", Version: "2" },
    ],
  );
  const r = resolve([
    { name: "aa", fixedVersion: "2" },
    { name: "bb", fixedVersion: "2" },
  ]);
  assert.deepEqual(plan(r), ["shared 1>2 dependency", "bb 1>2 target"]);
  assert.deepEqual(
    r.failed.map((f) => f.name),
    ["aa"],
  );
  assert.match(r.failed[0]!.reason, /missing-lib/);
});
