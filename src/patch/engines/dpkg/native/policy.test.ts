/**
 * apt's candidate rule, checked against the real apt of this host: each scenario is written both
 * as a fake apt root (lists with Release and Packages files, a dpkg status, preferences, apt.conf)
 * for `apt-cache policy`, and as suture's indexes, pins and Default-Release; the candidates and
 * every version's priority must agree. Where apt-cache is missing, the table of expectations below
 * still holds suture to what apt_preferences(5) says.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { AptConfig, parseAptConf } from "../../../../distro/dpkg/apt-conf.ts";
import { parseAptPreferences } from "../../../../distro/dpkg/apt-preferences.ts";
import { makePackagesIndex, parsePackagesIndex } from "../../../../distro/dpkg/packages-index.ts";
import { parseRelease } from "../../../../distro/dpkg/repository.ts";
import { type AptPolicy, parseAptPolicy } from "../sandbox.ts";
import { CandidatePolicy, policyFile } from "./policy.ts";

interface Repo {
  uri: string;
  suite: string;
  release: Record<string, string>;
  /** name, version[, source] */
  packages: [string, string, string?][];
}
interface Scenario {
  repos: Repo[];
  /** name → installed version */
  installed: Record<string, string>;
  preferences?: string;
  aptConf?: string;
  /** package → expected candidate (undefined: none) */
  expect: Record<string, string | undefined>;
}

const MAIN: Repo = {
  uri: "http://deb.example.org/debian",
  suite: "bookworm",
  release: { Origin: "Debian", Label: "Debian", Suite: "stable", Codename: "bookworm", Version: "12.12" },
  packages: [
    ["curl", "7.88.1-10+deb12u14"],
    ["libsystemd0", "252.39-1~deb12u1", "systemd"],
    ["libudev1", "252.39-1~deb12u1", "systemd"],
    ["tzdata", "2026b-0+deb12u1"],
    ["libexpat1", "2.5.0-1+deb12u1", "expat"],
    ["libssl3", "3.0.17-1~deb12u2", "openssl"],
    ["libpcre2-8-0", "10.42-1", "pcre2"],
    ["perl-base", "5.36.0-7+deb12u2", "perl"],
    ["liblzma5", "5.4.1-1", "xz-utils"],
    ["gzip", "1.12-1"],
    ["bzip2", "1.0.8-5+b1"],
  ],
};
const SECURITY: Repo = {
  uri: "http://security.example.org/debian-security",
  suite: "bookworm-security",
  release: {
    Origin: "Debian",
    Label: "Debian-Security",
    Suite: "stable-security",
    Codename: "bookworm-security",
    Version: "12",
  },
  packages: [
    ["curl", "7.88.1-10+deb12u15"],
    ["tzdata", "2026f-0+deb12u1"],
    ["libexpat1", "2.5.0-1+deb12u5", "expat"],
    ["libssl3", "3.0.22-1~deb12u2", "openssl"],
    ["libpcre2-8-0", "10.42-1+deb12u2", "pcre2"],
    ["liblzma5", "5.4.1-1+deb12u2", "xz-utils"],
  ],
};
const BACKPORTS: Repo = {
  uri: "http://deb.example.org/debian",
  suite: "bookworm-backports",
  release: {
    Origin: "Debian Backports",
    Label: "Debian Backports",
    Suite: "bookworm-backports",
    Codename: "bookworm-backports",
    NotAutomatic: "yes",
    ButAutomaticUpgrades: "yes",
  },
  packages: [
    ["curl", "8.14.1-2~bpo12+1"],
    ["libsystemd0", "254.26-1~bpo12+1", "systemd"],
    ["libudev1", "254.26-1~bpo12+1", "systemd"],
    ["perl-base", "5.38.2-5~bpo12+1", "perl"],
  ],
};
const EXPERIMENTAL: Repo = {
  uri: "http://deb.example.org/debian",
  suite: "experimental",
  release: {
    Origin: "Debian",
    Label: "Debian",
    Suite: "experimental",
    Codename: "rc-buggy",
    NotAutomatic: "yes",
  },
  packages: [
    ["gzip", "1.13-1"],
    ["newpkg", "2.0-1"],
  ],
};
const INSTALLED = {
  curl: "7.88.1-10+deb12u5",
  libsystemd0: "252.38-1~deb12u1",
  libudev1: "252.38-1~deb12u1",
  tzdata: "2026b-0+deb12u1",
  libexpat1: "2.5.0-1+deb12u2",
  libssl3: "3.0.15-1~deb12u1",
  "libpcre2-8-0": "10.42-1",
  "perl-base": "5.36.0-7+deb12u2",
  liblzma5: "5.4.1-1",
  gzip: "1.12-1",
  bzip2: "1.0.8-5+b1",
};
const ALL_REPOS = [MAIN, SECURITY, BACKPORTS, EXPERIMENTAL];

const SCENARIOS: Record<string, Scenario> = {
  "Release flags alone: backports (100) and experimental (1) never replace the default suites": {
    repos: ALL_REPOS,
    installed: INSTALLED,
    expect: {
      curl: "7.88.1-10+deb12u15",
      libsystemd0: "252.39-1~deb12u1",
      gzip: "1.12-1",
      newpkg: "2.0-1", // not installed and only in experimental: priority 1 still makes a candidate
      tzdata: "2026f-0+deb12u1",
    },
  },
  "package pins: by version, release, origin, label, src:, globs, regexes; the first matching pin wins": {
    repos: ALL_REPOS,
    installed: INSTALLED,
    preferences: `# a version pin above 1000 keeps the installed tzdata
Package: tzdata
Pin: version 2026b*
Pin-Priority: 1001

Explanation: and one above 1000 on an older version is a downgrade candidate
Package: libexpat1
Pin: version 2.5.0-1+deb12u1
Pin-Priority: 1001

Package: src:openssl
Pin: version 3.0.17*
Pin-Priority: 600

Package: libpcre2-8-0
Pin: release n=bookworm-security
Pin-Priority: -10

Package: perl*
Pin: release l=Debian Backports
Pin-Priority: 700

Package: /^liblzma[0-9]+$/
Pin: origin security.example.org
Pin-Priority: 50

Package: libudev1
Pin: version 254*
Pin-Priority: 200

Package: libudev1
Pin: release a=bookworm-backports
Pin-Priority: 990

Package: gzip bzip2
Pin: release n=rc-buggy
Pin-Priority: 600
`,
    expect: {
      tzdata: "2026b-0+deb12u1",
      libexpat1: "2.5.0-1+deb12u1",
      libssl3: "3.0.17-1~deb12u2",
      "libpcre2-8-0": "10.42-1",
      "perl-base": "5.38.2-5~bpo12+1",
      liblzma5: "5.4.1-1",
      libudev1: "252.39-1~deb12u1",
      gzip: "1.13-1",
      curl: "7.88.1-10+deb12u15",
    },
  },
  "Package: * pins set whole suites; the first match per suite wins; never beats everything": {
    repos: ALL_REPOS,
    installed: INSTALLED,
    preferences: `Package: *
Pin: release a=bookworm-backports
Pin-Priority: 500

Package: *
Pin: release o=Debian Backports
Pin-Priority: 50

Package: *
Pin: origin security.example.org
Pin-Priority: never

Package: curl
Pin: version 7.88.1-10+deb12u15
Pin-Priority: 1000
`,
    expect: {
      curl: "8.14.1-2~bpo12+1",
      libsystemd0: "254.26-1~bpo12+1",
      tzdata: "2026b-0+deb12u1",
      libssl3: "3.0.17-1~deb12u2",
    },
  },
  "APT::Default-Release raises its suite to 990": {
    repos: ALL_REPOS,
    installed: INSTALLED,
    aptConf: 'APT::Default-Release "bookworm-backports";\n',
    expect: { curl: "8.14.1-2~bpo12+1", "perl-base": "5.38.2-5~bpo12+1", tzdata: "2026f-0+deb12u1" },
  },
};

function packagesText(repo: Repo): string {
  return repo.packages
    .map(
      ([name, version, source]) =>
        `Package: ${name}\nVersion: ${version}\n${source ? `Source: ${source}\n` : ""}Architecture: amd64\nFilename: pool/${name}_${version}.deb\nSize: 1\nSHA256: ${"0".repeat(64)}\nDescription: x\n`,
    )
    .join("\n");
}

function releaseText(repo: Repo): string {
  const fields = { ...repo.release, Architectures: "amd64", Components: "main" };
  return `${Object.entries(fields)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n")}\nSHA256:\n ${"0".repeat(64)} 1 main/binary-amd64/Packages\n`;
}

function statusText(installed: Record<string, string>): string {
  return Object.entries(installed)
    .map(
      ([name, version]) =>
        `Package: ${name}\nStatus: install ok installed\nVersion: ${version}\nArchitecture: amd64\nMaintainer: x\nDescription: x\n`,
    )
    .join("\n");
}

/** suture's view of a scenario. */
function suturePolicy(s: Scenario): CandidatePolicy {
  const config = parseAptConf(s.aptConf ?? "", new AptConfig());
  return new CandidatePolicy({
    indexes: s.repos.map((repo) => {
      const index = makePackagesIndex(
        {
          uri: repo.uri,
          suite: repo.suite,
          component: "main",
          arch: "amd64",
          url: `${repo.uri}/dists/${repo.suite}/main/binary-amd64/Packages`,
          sha256: "0".repeat(64),
        },
        parsePackagesIndex(packagesText(repo), { repoUri: repo.uri }),
      );
      return { index, file: policyFile(parseRelease(releaseText(repo)), index) };
    }),
    pins: parseAptPreferences(s.preferences ?? "", "preferences"),
    defaultRelease: config.get("APT::Default-Release"),
    arch: "amd64",
  });
}

/** `apt-cache policy` of the host's apt over the scenario as a fake root; undefined without apt. */
function realAptPolicy(s: Scenario, names: string[]): ReturnType<typeof parseAptPolicy> | undefined {
  const dir = mkdtempSync(join(tmpdir(), "suture-policy-"));
  try {
    const etc = join(dir, "etc/apt");
    const lists = join(dir, "lists");
    for (const d of [
      join(etc, "apt.conf.d"),
      join(etc, "preferences.d"),
      join(lists, "partial"),
      join(dir, "cache"),
    ])
      mkdirSync(d, { recursive: true });
    writeFileSync(join(etc, "sources.list"), s.repos.map((r) => `deb ${r.uri} ${r.suite} main\n`).join(""));
    for (const r of s.repos) {
      const base = `${r.uri.replace(/^\w+:\/\//, "").replaceAll("/", "_")}_dists_${r.suite}`;
      writeFileSync(join(lists, `${base}_Release`), releaseText(r));
      writeFileSync(join(lists, `${base}_main_binary-amd64_Packages`), packagesText(r));
    }
    writeFileSync(join(dir, "status"), statusText(s.installed));
    writeFileSync(join(etc, "preferences"), s.preferences ?? "");
    // APT_CONFIG is read first and points every other location into the fake root.
    const conf = join(dir, "apt-config");
    writeFileSync(
      conf,
      `Dir "${dir}/";\nDir::Etc "${etc}/";\nDir::Etc::Parts "${etc}/apt.conf.d/";\nDir::Etc::Main "${etc}/apt.conf";\nDir::State::Lists "${lists}/";\nDir::State::status "${dir}/status";\nDir::Cache "${dir}/cache/";\nAPT::Architecture "amd64";\nAPT::Architectures { "amd64"; };\nDebug::NoLocking "true";\n`,
    );
    writeFileSync(join(etc, "apt.conf"), s.aptConf ?? "");
    const out = execFileSync("apt-cache", ["policy", ...names], {
      env: { ...process.env, APT_CONFIG: conf, LC_ALL: "C" },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    return parseAptPolicy(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const [title, scenario] of Object.entries(SCENARIOS)) {
  test(`policy: ${title}`, (t) => {
    const policy = suturePolicy(scenario);
    const names = [
      ...new Set([
        ...Object.keys(scenario.installed),
        ...scenario.repos.flatMap((r) => r.packages.map((p) => p[0])),
      ]),
    ].sort();
    const ours = new Map(
      names.map((name) => {
        const installed = scenario.installed[name];
        const ref = installed ? { version: installed } : undefined;
        return [
          name,
          {
            candidate: policy.candidate(name, ref)?.version,
            priorities: new Map(policy.versions(name, ref).map((v) => [v.version, v.priority])),
          },
        ] as const;
      }),
    );
    for (const [name, expected] of Object.entries(scenario.expect)) {
      assert.equal(ours.get(name)?.candidate, expected, `suture's candidate of ${name}`);
    }
    const apt = realAptPolicy(scenario, names);
    if (!apt) {
      t.diagnostic("apt-cache is not installed: compared with the expectations only");
      return;
    }
    for (const name of names) {
      const a: AptPolicy | undefined = apt.get(name);
      assert.ok(a, `apt-cache policy shows ${name}`);
      const candidate: string | undefined = a.candidate === "(none)" ? undefined : a.candidate;
      assert.equal(ours.get(name)!.candidate, candidate, `candidate of ${name}: suture vs apt`);
      assert.deepEqual(
        Object.fromEntries(ours.get(name)!.priorities),
        Object.fromEntries(a.priorities ?? []),
        `priorities of ${name}'s versions: suture vs apt`,
      );
    }
  });
}
