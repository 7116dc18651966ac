import assert from "node:assert/strict";
import { test } from "node:test";
import { makePackagesIndex, parsePackagesIndex } from "../../../distro/dpkg/packages-index.ts";
import { parseDpkgStatus } from "../../../distro/dpkg/status.ts";
import { resolveInstallSet } from "./install-set.ts";

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
const INSTALLED = parseDpkgStatus(
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
    ...parseDpkgStatus(status({ Package: "needs-old", Version: "1", Depends: "libssl3 (<< 3.0.21)" })),
  ];
  const r = resolveInstallSet({
    installed,
    indexes: [INDEX],
    arch: "amd64",
    targets: [{ name: "libssl3", fixedVersion: "3.0.22" }],
  });
  assert.match(r.failed.map((f) => f.reason).join("\n"), /needs-old 1 .*no version of needs-old fixes that/);
});
