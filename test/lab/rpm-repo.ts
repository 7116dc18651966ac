/**
 * The RPM lab's packages and its signed loopback repository (issue 14). No RPM distribution's
 * repository is reachable from the lab machines; Debian's archive is. So the lab's rpms are real
 * Debian bookworm packages, converted: the old build from bookworm main and the fixed build from
 * bookworm-security, each a `.rpm` made by the host's rpmbuild from the `.deb`'s own files.
 *
 * Why a spec per deb and not `alien --to-rpm`: alien drops every dependency, turns Debian's
 * maintainer scripts (debconf, dpkg-maintscript-helper, update-rc.d) into rpm scriptlets that
 * cannot work in an rpm image, and leaves conffiles without `%config(noreplace)`. The converter
 * here (debToRpm) keeps the deb's files byte for byte with their modes (owners are root, as in
 * every deb used), marks its conffiles `%config(noreplace)`, turns its Depends on other converted
 * packages into versioned `Requires:` (`libjq1 (= 1.6-2.1+deb12u3)` → `libjq1 = 1.6-2.1+deb12u3`),
 * states the soname Provides/Requires an rpm distribution's packages carry (rpmbuild's automatic
 * ones are off: they would name every library of the Debian userland), and gives shared libraries
 * rpm's `%post -p /sbin/ldconfig` / `%postun -p /sbin/ldconfig`. rpmbuild's post-install steps
 * (strip, build-id links, byte-compiling) are off, so the files are the deb's.
 *
 * Version mapping (deb → rpm): `[E:]UPSTREAM-REVISION` → Epoch E, Version UPSTREAM with `-` → `_`
 * (`-` is the one character rpm forbids there; `~`, `+` and `.` are legal rpm characters, and rpm's
 * `~` sorts before anything exactly as Debian's does), Release REVISION (`0` for a native package).
 * So `1.6-2.1+deb12u2` → 1.6 / 2.1+deb12u2 and `3.5.0+ds1-0+deb12u1` → 3.5.0+ds1 / 0+deb12u1. Every
 * fixed build is checked to sort after its old one by rpmvercmp (src/distro/rpm/version.ts).
 *
 * Two lab-made changes, and why: (1) one config file per update, /etc/nginx/nginx.conf and
 * /etc/nginx/mime.types, gets a last comment line naming the build (`# suture lab: nginx-common
 * 1.22.1-9+deb12u11`): Debian's security updates almost never change a conffile, and rpm writes
 * `.rpmnew` only when the packaged config changed, so without it no update would meet the image's
 * edited config. (2) `/etc/nginx/nginx.conf` is otherwise Debian's.
 *
 * Packages (all x86_64 unless noted; "fixed" = a newer bookworm-security build exists):
 *   lab:  libjq1 (library, ldconfig scriptlets, fixed), jq (Requires libjq1 = same EVR, fixed),
 *         libonig5 (library libjq1 requires; no fix), unzip (fixed), nginx-common (noarch, 17
 *         `%config(noreplace)` files, fixed), rsync (fixed; the Version itself moves, 3.2.7 →
 *         3.5.0+ds1, while the Release goes down, 1+deb12u6 → 0+deb12u1), lib32z1 (zlib's
 *         32-bit library, fixed; the one with an Epoch: 1:1.2.13.dfsg-1 → 1:1.2.13.dfsg-1+deb12u1)
 *   base: libc6, libgcc-s1, libc-bin (/sbin/ldconfig), libbz2-1.0 — the libraries that let the
 *         shell-less micro and distroless images run jq and unzip; never updated
 *   release: rocky-release, openSUSE-release, azurelinux-release, redhat-release (noarch; the
 *         images' os-release, repository file and the lab key), built here, not converted.
 *
 * Repository: every package above in `Packages/`, both builds of the fixed ones (as Rocky's BaseOS
 * keeps older builds), each signed with the lab OpenPGP key by rpmsign (test/lab/rpm.ts),
 * `createrepo_c` metadata, and `repodata/repomd.xml.asc` (detached, armored, the same key). It is
 * served on 127.0.0.1 under each image's real repository path, e.g.
 * `/pub/rocky/9/BaseOS/x86_64/os/` for `https://dl.rockylinux.org/pub/rocky/$releasever/BaseOS/$basearch/os/`,
 * so a test maps it with `--mirror https://dl.rockylinux.org/pub/rocky=http://127.0.0.1:PORT/pub/rocky`
 * (`repo.mirrorArg(kind)`).
 *
 * Cache (`labCacheDir()`, cache.ts lock + atomic rename):
 *   rpmLabKeys-v1/             the lab and "other" keys (GNUPGHOMEs, public armored files)
 *   rpmLabRepo-<hash16>/debs/  the downloaded debs (checked against the SHA-256 pinned below)
 *                      rpms/   the converted, unsigned rpms
 *                      repo/   the signed repository; repo-other-key/, repo-unsigned/: the same
 *                              packages signed by the other key / not signed, each with its own
 *                              metadata (repomd signed by the lab key), for tamper tests
 *                      packages.json  what it holds (RpmLabPackage[])
 * The hash covers the pinned debs, the keys, REPO_BUILDER and this file's bytes.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, normalize } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { gunzipSync, gzipSync } from "node:zlib";
import { compareRpmVersions } from "../../src/distro/rpm/version.ts";
import { SutureError } from "../../src/errors/errors.ts";
import { cachedEntry, labSha256, memoized } from "./alpine-repo.ts";
import { archiveMirror } from "./archive-mirror.ts";
import { labCacheDir } from "./cache.ts";
import { buildRpm, createRepo, type RpmTestKey, rpmTestKey, signRpms, tool } from "./rpm.ts";

/**
 * Bump when the build below changes in a way this file's bytes do not show, e.g. when rpm.ts's
 * buildRpm/signRpms/createRepo start making something else. rpm.ts itself is not hashed: every
 * branch extends its builders for its own tests, and each would rebuild the whole lab.
 */
const REPO_BUILDER = 1;
/** 2026-01-01T00:00:00Z, the lab's fixed build time (as images.ts). */
export const RPM_LAB_EPOCH = 1767225600;

// ---------------------------------------------------------------------------------------------
// The packages

/** One build of a deb in Debian's archive: its path below deb.debian.org and its SHA-256. */
interface DebBuild {
  version: string;
  /** `debian/pool/…` or `debian-security/pool/updates/…`. */
  path: string;
  sha256: string;
}

type PackageRole = "lab" | "base";

interface LabDeb {
  name: string;
  role: PackageRole;
  old: DebBuild;
  fixed?: DebBuild;
  /** Soname provides/requires as an rpm distribution states them (rpmbuild's automatic ones are off). */
  provides?: string[];
  requires?: string[];
  /** A shared library: `%post -p /sbin/ldconfig`, `%postun -p /sbin/ldconfig`. */
  ldconfig?: boolean;
  /** Config files given a last comment line naming the build (see the file comment). */
  stampConfig?: string[];
}

const MAIN = "debian/pool/main";
const SECURITY = "debian-security/pool/updates/main";

/** The debs the lab converts (bookworm main = old, bookworm-security = fixed), pinned by SHA-256. */
export const RPM_LAB_DEBS: readonly LabDeb[] = [
  {
    name: "libonig5",
    role: "lab",
    old: {
      version: "6.9.8-1",
      path: `${MAIN}/libo/libonig/libonig5_6.9.8-1_amd64.deb`,
      sha256: "59ecfce6d88c7c4b09496ce182b3b8303e8e8477664e009b16ae83a09cd12be7",
    },
    provides: ["libonig.so.5()(64bit)"],
    ldconfig: true,
  },
  {
    name: "libjq1",
    role: "lab",
    old: {
      version: "1.6-2.1+deb12u2",
      path: `${MAIN}/j/jq/libjq1_1.6-2.1+deb12u2_amd64.deb`,
      sha256: "f501b6349a3c2462af59e7a598ebd71e7889de46c9ddf852eb12ebeba7df21a2",
    },
    fixed: {
      version: "1.6-2.1+deb12u3",
      path: `${SECURITY}/j/jq/libjq1_1.6-2.1+deb12u3_amd64.deb`,
      sha256: "5e9a7081ba10ce826f6d3d103aa9b912170c5adc836e2561000733571995dd5b",
    },
    provides: ["libjq.so.1()(64bit)"],
    requires: ["libonig.so.5()(64bit)"],
    ldconfig: true,
  },
  {
    name: "jq",
    role: "lab",
    old: {
      version: "1.6-2.1+deb12u2",
      path: `${MAIN}/j/jq/jq_1.6-2.1+deb12u2_amd64.deb`,
      sha256: "f2303584378ac85f6d3a9ae8e46412196061681e81610d3b020abe4b5d389eb0",
    },
    fixed: {
      version: "1.6-2.1+deb12u3",
      path: `${SECURITY}/j/jq/jq_1.6-2.1+deb12u3_amd64.deb`,
      sha256: "c25f3fda201207ed98b1d63686f2d81b9dfeb99f1ab2d1d35fb3f7b6a1c107dc",
    },
    requires: ["libjq.so.1()(64bit)"],
  },
  {
    name: "unzip",
    role: "lab",
    old: {
      version: "6.0-28",
      path: `${MAIN}/u/unzip/unzip_6.0-28_amd64.deb`,
      sha256: "b3d9529c34382cc8d2e6cc8299a18536504edbc284b9133ffbe522704865068e",
    },
    fixed: {
      version: "6.0-28+deb12u1",
      path: `${SECURITY}/u/unzip/unzip_6.0-28+deb12u1_amd64.deb`,
      sha256: "1c27c879f4f7f056499c5393d422fd6c77ff6fbfa450c3f91f2f205ca788cc36",
    },
  },
  {
    name: "nginx-common",
    role: "lab",
    old: {
      version: "1.22.1-9+deb12u9",
      path: `${MAIN}/n/nginx/nginx-common_1.22.1-9+deb12u9_all.deb`,
      sha256: "12b7b98e914da6d233c9e35cec0f59f06bceb727e4d1f1ce039215b074a7267d",
    },
    fixed: {
      version: "1.22.1-9+deb12u11",
      path: `${SECURITY}/n/nginx/nginx-common_1.22.1-9+deb12u11_all.deb`,
      sha256: "8ef1715ff5a9764fb5f810116acee417f4e092032212b6e4f392e8d2cd6b0952",
    },
    stampConfig: ["/etc/nginx/nginx.conf", "/etc/nginx/mime.types"],
  },
  {
    name: "rsync",
    role: "lab",
    old: {
      version: "3.2.7-1+deb12u6",
      path: `${MAIN}/r/rsync/rsync_3.2.7-1+deb12u6_amd64.deb`,
      sha256: "ce99de6b36cbb62dc614a73463e467f2c1ef509545a9a2b33cab19b50530b672",
    },
    fixed: {
      version: "3.5.0+ds1-0+deb12u1",
      path: `${SECURITY}/r/rsync/rsync_3.5.0+ds1-0+deb12u1_amd64.deb`,
      sha256: "26ea59ef1c3d05595e9637002ace6f4e00181638b438ecad0f1cf1659ebb67ed",
    },
  },
  {
    // The one with an epoch: Trivy writes its versions `1:1.2.13.dfsg-1`, rpm sorts by it first.
    name: "lib32z1",
    role: "lab",
    old: {
      version: "1:1.2.13.dfsg-1",
      path: `${MAIN}/z/zlib/lib32z1_1.2.13.dfsg-1_amd64.deb`,
      sha256: "9e1040f57ad4756609fa13f58272b7fe5463ba1d8bf7996fe891ddacac807a40",
    },
    fixed: {
      version: "1:1.2.13.dfsg-1+deb12u1",
      path: `${SECURITY}/z/zlib/lib32z1_1.2.13.dfsg-1+deb12u1_amd64.deb`,
      sha256: "a294e9f53f46a22a2b3d5c02475c4db2c0f3f01219222e7b06b36b60f5c1ef35",
    },
    provides: ["libz.so.1"],
    ldconfig: true,
  },
  {
    name: "libc6",
    role: "base",
    old: {
      version: "2.36-9+deb12u14",
      path: `${MAIN}/g/glibc/libc6_2.36-9+deb12u14_amd64.deb`,
      sha256: "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf",
    },
    provides: ["libc.so.6()(64bit)", "ld-linux-x86-64.so.2()(64bit)"],
  },
  {
    name: "libgcc-s1",
    role: "base",
    old: {
      version: "12.2.0-14+deb12u1",
      path: `${MAIN}/g/gcc-12/libgcc-s1_12.2.0-14+deb12u1_amd64.deb`,
      sha256: "3016e62cb4b7cd8038822870601f5ed131befe942774d0f745622cc77d8a88f7",
    },
    provides: ["libgcc_s.so.1()(64bit)"],
  },
  {
    name: "libc-bin",
    role: "base",
    old: {
      version: "2.36-9+deb12u14",
      path: `${MAIN}/g/glibc/libc-bin_2.36-9+deb12u14_amd64.deb`,
      sha256: "e667401af91fad95f15b3ebd25d1abd8373fd18b00dc32219678413170544e84",
    },
  },
  {
    name: "libbz2-1.0",
    role: "base",
    old: {
      version: "1.0.8-5+b1",
      path: `${MAIN}/b/bzip2/libbz2-1.0_1.0.8-5+b1_amd64.deb`,
      sha256: "54149da3f44b22d523b26b692033b84503d822cc5122fed606ea69cc83ca5aeb",
    },
    provides: ["libbz2.so.1.0()(64bit)"],
    ldconfig: true,
  },
];

/** The lab packages of the shell-less images: jq (and its libraries), unzip, nginx-common, lib32z1. */
export const RPM_LAB_MINIMAL_SET: readonly string[] = [
  "libonig5",
  "libjq1",
  "jq",
  "unzip",
  "nginx-common",
  "lib32z1",
];

/** A deb version as rpm's epoch, version and release (see the file comment). */
export function debToRpmEvr(debVersion: string): { epoch?: number; version: string; release: string } {
  const colon = debVersion.indexOf(":");
  const epoch = colon >= 0 ? Number(debVersion.slice(0, colon)) : undefined;
  const rest = colon >= 0 ? debVersion.slice(colon + 1) : debVersion;
  const dash = rest.lastIndexOf("-");
  const upstream = dash >= 0 ? rest.slice(0, dash) : rest;
  const revision = dash >= 0 ? rest.slice(dash + 1) : "0";
  return {
    ...(epoch !== undefined ? { epoch } : {}),
    version: upstream.replaceAll("-", "_"),
    release: revision,
  };
}

/**
 * A Debian relation as rpm's. A bare version stays bare (`libc6 (>= 2.34)` → `libc6 >= 2.34`: any
 * release matches). Debian's `>> 2.36` also holds for 2.36-9, rpm's `> 2.36` does not (it compares
 * versions only): such a relation becomes `>= 2.36`.
 */
function relationOf(name: string, op: string, debVersion: string): string {
  const evr = debToRpmEvr(debVersion);
  if (debVersion.includes("-")) return `${name} ${OPERATORS[op]} ${rpmEvrString(evr)}`;
  const bare = `${evr.epoch !== undefined ? `${evr.epoch}:` : ""}${evr.version}`;
  return `${name} ${op === ">>" ? ">=" : OPERATORS[op]} ${bare}`;
}

/** `[E:]V-R`, as Trivy writes rpm versions and rpm's EVR comparisons take them. */
export function rpmEvrString(evr: { epoch?: number; version: string; release: string }): string {
  return `${evr.epoch !== undefined ? `${evr.epoch}:` : ""}${evr.version}-${evr.release}`;
}

/** One package the repository holds. */
export interface RpmLabPackage {
  name: string;
  arch: "x86_64" | "noarch";
  role: PackageRole | "release";
  /** The build the images install: `V-R` (with `E:` if any) and its file in `Packages/`. */
  installed: { evr: string; file: string };
  /** The bookworm-security build, when there is one. */
  fixed?: { evr: string; file: string; cves: string[] };
}

// ---------------------------------------------------------------------------------------------
// Keys

export interface RpmLabKey extends RpmTestKey {
  /** Host path of the armored public key (what `gpgkey=file://…` and `--keyring` take). */
  publicKeyFile: string;
}

const keyMemo = new Map<string, Promise<{ lab: RpmLabKey; other: RpmLabKey }>>();

/**
 * The lab's OpenPGP signing key (the images trust it: /etc/pki/rpm-gpg/… and their rpmdb's
 * gpg-pubkey) and an "other" key nobody trusts. RSA 2048, made once per cache and kept there.
 */
export function rpmLabKeys(): Promise<{ lab: RpmLabKey; other: RpmLabKey }> {
  const dir = join(labCacheDir(), "rpmLabKeys-v1");
  return memoized(keyMemo, dir, async () => {
    await cachedEntry(dir, "keys.json", async (staged) => {
      const keys: Record<string, unknown> = {};
      for (const role of ["lab", "other"] as const) {
        const key = await rpmTestKey(
          staged,
          "rsa2048",
          `suture rpm lab ${role} key <rpm-lab-${role}@suture.invalid>`,
        );
        const file = `RPM-GPG-KEY-suture-${role}`;
        await writeFile(join(staged, file), key.publicArmored);
        keys[role] = { ...key, gnupgHome: key.gnupgHome.slice(staged.length + 1), publicKeyFile: file };
      }
      // gpg-agent sockets must not outlive the build in the cache entry.
      await tool("gpgconf", ["--kill", "all"], {
        GNUPGHOME: join(staged, (keys.lab as RpmTestKey).gnupgHome),
      });
      await tool("gpgconf", ["--kill", "all"], {
        GNUPGHOME: join(staged, (keys.other as RpmTestKey).gnupgHome),
      });
      await writeFile(join(staged, "keys.json"), JSON.stringify(keys, null, 1));
    });
    const keys = JSON.parse(await readFile(join(dir, "keys.json"), "utf8")) as Record<string, RpmLabKey>;
    const load = (role: string): RpmLabKey => ({
      ...keys[role]!,
      gnupgHome: join(dir, keys[role]!.gnupgHome),
      publicKeyFile: join(dir, keys[role]!.publicKeyFile),
    });
    return { lab: load("lab"), other: load("other") };
  });
}

// ---------------------------------------------------------------------------------------------
// The images' release packages and repository locations

export type RpmLabKind = "dnf" | "zypper" | "tdnf" | "micro" | "distroless";
export const RPM_LAB_KINDS: readonly RpmLabKind[] = ["dnf", "zypper", "tdnf", "micro", "distroless"];

export interface RpmLabDistro {
  /** The release package the image has (name, version, release). */
  release: { name: string; version: string; release: string };
  /** /usr/lib/os-release of the image. */
  osRelease: string;
  /** Trivy's OS family and name for it. */
  trivy: { family: string; name: string };
  /** Repository file: its path in the image, its text (baseurl with $releasever/$basearch). */
  repoFile: { path: string; text: string };
  /** The repository URL the image names, expanded, and where the test server serves it. */
  repoUrl: string;
  /** `--mirror` FROM: the part of repoUrl a test maps to the server. */
  mirrorFrom: string;
  /** The served path of the repository (repoUrl's path, with a trailing slash). */
  servedPath: string;
  /** Where the lab key is in the image. */
  keyPath: string;
  /** Extra files of the release package. */
  extra: { path: string; content?: string; symlinkTo?: string; config?: boolean }[];
  provides: string[];
}

const DISTROS: Record<"rocky" | "opensuse" | "azurelinux" | "redhat", RpmLabDistro> = {
  rocky: {
    release: { name: "rocky-release", version: "9.4", release: "1.7.el9" },
    osRelease: [
      'NAME="Rocky Linux"',
      'VERSION="9.4 (Blue Onyx)"',
      'ID="rocky"',
      'ID_LIKE="rhel centos fedora"',
      'VERSION_ID="9.4"',
      'PLATFORM_ID="platform:el9"',
      'PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"',
      'ANSI_COLOR="0;32"',
      'LOGO="fedora-logo-icon"',
      'CPE_NAME="cpe:/o:rocky:rocky:9::baseos"',
      'HOME_URL="https://rockylinux.org/"',
      'BUG_REPORT_URL="https://bugs.rockylinux.org/"',
      'ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"',
      'ROCKY_SUPPORT_PRODUCT_VERSION="9.4"',
      'REDHAT_SUPPORT_PRODUCT="Rocky Linux"',
      'REDHAT_SUPPORT_PRODUCT_VERSION="9.4"',
      "",
    ].join("\n"),
    trivy: { family: "rocky", name: "9.4" },
    repoFile: {
      path: "/etc/yum.repos.d/rocky.repo",
      text: [
        "# Rocky-Linux-BaseOS.repo (suture lab: the lab key instead of Rocky's)",
        "[baseos]",
        "name=Rocky Linux $releasever - BaseOS",
        "#mirrorlist=https://mirrors.rockylinux.org/mirrorlist?arch=$basearch&repo=BaseOS-$releasever",
        "baseurl=https://dl.rockylinux.org/pub/rocky/$releasever/BaseOS/$basearch/os/",
        "gpgcheck=1",
        "repo_gpgcheck=1",
        "enabled=1",
        "countme=1",
        "metadata_expire=6h",
        "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-lab",
        "",
      ].join("\n"),
    },
    repoUrl: "https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os/",
    mirrorFrom: "https://dl.rockylinux.org/pub/rocky",
    servedPath: "/pub/rocky/9/BaseOS/x86_64/os/",
    keyPath: "/etc/pki/rpm-gpg/RPM-GPG-KEY-lab",
    extra: [
      { path: "/etc/rocky-release", content: "Rocky Linux release 9.4 (Blue Onyx)\n" },
      { path: "/etc/redhat-release", symlinkTo: "rocky-release" },
      { path: "/etc/system-release", symlinkTo: "rocky-release" },
      { path: "/etc/system-release-cpe", content: "cpe:/o:rocky:rocky:9::baseos\n" },
    ],
    provides: [
      "system-release = 9.4-1.7.el9",
      "system-release(releasever) = 9",
      "redhat-release = 9.4-1.7.el9",
    ],
  },
  opensuse: {
    release: { name: "openSUSE-release", version: "15.6", release: "lp156.1.1" },
    osRelease: [
      'NAME="openSUSE Leap"',
      'VERSION="15.6"',
      'ID="opensuse-leap"',
      'ID_LIKE="suse opensuse"',
      'VERSION_ID="15.6"',
      'PRETTY_NAME="openSUSE Leap 15.6"',
      'ANSI_COLOR="0;32"',
      'CPE_NAME="cpe:/o:opensuse:leap:15.6"',
      'BUG_REPORT_URL="https://bugs.opensuse.org"',
      'HOME_URL="https://www.opensuse.org/"',
      'DOCUMENTATION_URL="https://en.opensuse.org/Portal:Leap"',
      'LOGO="distributor-logo-Leap"',
      "",
    ].join("\n"),
    trivy: { family: "opensuse-leap", name: "15.6" },
    repoFile: {
      path: "/etc/zypp/repos.d/repo-oss.repo",
      text: [
        "[repo-oss]",
        "name=Main Repository",
        "enabled=1",
        "autorefresh=1",
        "baseurl=http://download.opensuse.org/distribution/leap/$releasever/repo/oss/",
        "type=rpm-md",
        "gpgcheck=1",
        "keeppackages=0",
        "",
      ].join("\n"),
    },
    repoUrl: "http://download.opensuse.org/distribution/leap/15.6/repo/oss/",
    mirrorFrom: "http://download.opensuse.org/distribution/leap",
    servedPath: "/distribution/leap/15.6/repo/oss/",
    keyPath: "/usr/lib/rpm/gnupg/keys/gpg-pubkey-suture-lab.asc",
    extra: [
      {
        path: "/etc/products.d/openSUSE.prod",
        content: [
          '<?xml version="1.0" encoding="UTF-8"?>',
          '<product schemeversion="0">',
          "  <vendor>openSUSE</vendor>",
          "  <name>openSUSE</name>",
          "  <version>15.6</version>",
          "  <release>1</release>",
          "  <endoflife>2025-12-31</endoflife>",
          "  <arch>x86_64</arch>",
          "  <cpeid>cpe:/o:opensuse:leap:15.6</cpeid>",
          "  <productline>Leap</productline>",
          "  <summary>openSUSE Leap 15.6</summary>",
          "</product>",
          "",
        ].join("\n"),
      },
      { path: "/etc/products.d/baseproduct", symlinkTo: "openSUSE.prod" },
      { path: "/etc/SUSE-brand", content: "openSUSE\nVERSION = 15.6\n" },
    ],
    provides: ["product() = openSUSE", "product(openSUSE) = 15.6-1", "distribution-release"],
  },
  azurelinux: {
    release: { name: "azurelinux-release", version: "3.0", release: "25.azl3" },
    osRelease: [
      'NAME="Microsoft Azure Linux"',
      'VERSION="3.0.20250910"',
      "ID=azurelinux",
      'VERSION_ID="3.0"',
      'PRETTY_NAME="Microsoft Azure Linux 3.0"',
      'ANSI_COLOR="1;34"',
      'HOME_URL="https://aka.ms/azurelinux"',
      'BUG_REPORT_URL="https://aka.ms/azurelinux"',
      'SUPPORT_URL="https://aka.ms/azurelinux"',
      "",
    ].join("\n"),
    trivy: { family: "azurelinux", name: "3.0" },
    repoFile: {
      path: "/etc/yum.repos.d/azurelinux-official-base.repo",
      text: [
        "[azurelinux-official-base]",
        "name=Azure Linux Official Base $releasever $basearch",
        "baseurl=https://packages.microsoft.com/azurelinux/$releasever/prod/base/$basearch",
        "gpgkey=file:///etc/pki/rpm-gpg/MICROSOFT-RPM-GPG-KEY",
        "gpgcheck=1",
        "repo_gpgcheck=1",
        "enabled=1",
        "skip_if_unavailable=True",
        "sslverify=1",
        "",
      ].join("\n"),
    },
    repoUrl: "https://packages.microsoft.com/azurelinux/3.0/prod/base/x86_64",
    mirrorFrom: "https://packages.microsoft.com/azurelinux",
    servedPath: "/azurelinux/3.0/prod/base/x86_64/",
    keyPath: "/etc/pki/rpm-gpg/MICROSOFT-RPM-GPG-KEY",
    extra: [
      {
        path: "/etc/azurelinux-release",
        content: "Microsoft Azure Linux 3.0\nAZURELINUX_BUILD_NUMBER=3.0.20250910\n",
      },
      { path: "/etc/lsb-release", content: 'DISTRIB_ID="azurelinux"\nDISTRIB_RELEASE="3.0.20250910"\n' },
    ],
    provides: ["system-release = 3.0-25.azl3", "system-release(releasever) = 3.0"],
  },
  redhat: {
    release: { name: "redhat-release", version: "9.4", release: "0.5.el9" },
    osRelease: [
      'NAME="Red Hat Enterprise Linux"',
      'VERSION="9.4 (Plow)"',
      'ID="rhel"',
      'ID_LIKE="fedora"',
      'VERSION_ID="9.4"',
      'PLATFORM_ID="platform:el9"',
      'PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"',
      'ANSI_COLOR="0;31"',
      'LOGO="fedora-logo-icon"',
      'CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"',
      'HOME_URL="https://www.redhat.com/"',
      'REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux 9"',
      'REDHAT_SUPPORT_PRODUCT_VERSION="9.4"',
      "",
    ].join("\n"),
    trivy: { family: "redhat", name: "9.4" },
    repoFile: {
      path: "/etc/yum.repos.d/ubi.repo",
      text: [
        "[ubi-9-baseos-rpms]",
        "name = Red Hat Universal Base Image 9 (RPMs) - BaseOS",
        "baseurl = https://cdn-ubi.redhat.com/content/public/ubi/dist/ubi9/9/$basearch/baseos/os",
        "enabled = 1",
        "gpgkey = file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release",
        "gpgcheck = 1",
        "",
      ].join("\n"),
    },
    repoUrl: "https://cdn-ubi.redhat.com/content/public/ubi/dist/ubi9/9/x86_64/baseos/os",
    mirrorFrom: "https://cdn-ubi.redhat.com/content/public/ubi",
    servedPath: "/content/public/ubi/dist/ubi9/9/x86_64/baseos/os/",
    keyPath: "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release",
    extra: [
      { path: "/etc/redhat-release", content: "Red Hat Enterprise Linux release 9.4 (Plow)\n" },
      { path: "/etc/system-release", symlinkTo: "redhat-release" },
      { path: "/etc/system-release-cpe", content: "cpe:/o:redhat:enterprise_linux:9::baseos\n" },
    ],
    provides: ["system-release = 9.4-0.5.el9", "system-release(releasever) = 9"],
  },
};

/** The distribution each lab image imitates. */
export const RPM_LAB_DISTRO: Record<RpmLabKind, RpmLabDistro> = {
  dnf: DISTROS.rocky,
  zypper: DISTROS.opensuse,
  tdnf: DISTROS.azurelinux,
  micro: DISTROS.redhat,
  distroless: DISTROS.azurelinux,
};

// ---------------------------------------------------------------------------------------------
// Building the repository

export interface BuiltRpmRepo {
  /** The entry directory. */
  dir: string;
  /** The lab-signed repository (the directory with `Packages/` and `repodata/`). */
  root: string;
  /** The same packages signed by the other key / unsigned, with their own metadata. */
  otherKeyRoot: string;
  unsignedRoot: string;
  packages: RpmLabPackage[];
  keys: { lab: RpmLabKey; other: RpmLabKey };
}

const repoMemo = new Map<string, Promise<BuiltRpmRepo>>();

/** The lab repository, from the cache or built (about a minute cold: downloads, rpmbuild, signing). */
export function rpmLabRepoFiles(): Promise<BuiltRpmRepo> {
  return memoized(repoMemo, labCacheDir(), obtainRepo);
}

async function obtainRepo(): Promise<BuiltRpmRepo> {
  const keys = await rpmLabKeys();
  const hash = labSha256(
    JSON.stringify({
      builder: REPO_BUILDER,
      debs: RPM_LAB_DEBS,
      distros: DISTROS,
      keys: [keys.lab.fingerprint, keys.other.fingerprint],
      code: labSha256(await readFile(new URL(import.meta.url))),
    }),
  );
  const dir = join(labCacheDir(), `rpmLabRepo-${hash.slice(0, 16)}`);
  await cachedEntry(dir, "packages.json", (staged) => buildRepo(staged, keys));
  return {
    dir,
    root: join(dir, "repo"),
    otherKeyRoot: join(dir, "repo-other-key"),
    unsignedRoot: join(dir, "repo-unsigned"),
    packages: JSON.parse(await readFile(join(dir, "packages.json"), "utf8")) as RpmLabPackage[],
    keys,
  };
}

async function buildRepo(staged: string, keys: { lab: RpmLabKey; other: RpmLabKey }): Promise<void> {
  const debs = join(staged, "debs");
  const rpms = join(staged, "rpms");
  const work = join(staged, "work");
  await mkdir(debs);
  await mkdir(rpms);
  await mkdir(work);
  const packages: RpmLabPackage[] = [];
  const files: string[] = [];
  const universe = new Set(RPM_LAB_DEBS.map((d) => d.name));
  for (const deb of RPM_LAB_DEBS) {
    const oldDeb = await downloadDeb(deb.old, debs);
    const old = await debToRpm(work, oldDeb, deb, universe);
    files.push(old.file);
    const entry: RpmLabPackage = {
      name: deb.name,
      arch: old.arch,
      role: deb.role,
      installed: { evr: old.evr, file: old.fileName },
    };
    if (deb.fixed) {
      const fixedDeb = await downloadDeb(deb.fixed, debs);
      const fixed = await debToRpm(work, fixedDeb, deb, universe);
      if (compareRpmVersions(fixed.evr, old.evr) <= 0)
        throw new SutureError("INTERNAL", `rpm lab: ${deb.name} ${fixed.evr} does not sort after ${old.evr}`);
      files.push(fixed.file);
      entry.fixed = { evr: fixed.evr, file: fixed.fileName, cves: await changelogCves(fixedDeb, deb) };
    }
    packages.push(entry);
  }
  for (const distro of Object.values(DISTROS)) {
    const file = await releaseRpm(work, distro, keys.lab);
    files.push(file);
    const { version, release, name } = distro.release;
    packages.push({
      name,
      arch: "noarch",
      role: "release",
      installed: { evr: `${version}-${release}`, file: file.split("/").at(-1)! },
    });
  }
  for (const f of files) await cp(f, join(rpms, f.split("/").at(-1)!));
  // Three repositories of the same packages: lab-signed, other-signed, unsigned.
  const variants: [string, RpmLabKey | undefined][] = [
    ["repo", keys.lab],
    ["repo-other-key", keys.other],
    ["repo-unsigned", undefined],
  ];
  for (const [name, signer] of variants) {
    const copies = join(work, `${name}-rpms`);
    await mkdir(copies);
    const paths: string[] = [];
    for (const f of await readdir(rpms)) {
      await cp(join(rpms, f), join(copies, f));
      paths.push(join(copies, f));
    }
    if (signer) await signRpms(signer, paths);
    const made = await createRepo(work, paths, { compress: "gz", key: keys.lab });
    await tool("mv", [made.dir, join(staged, name)]);
  }
  await rm(work, { recursive: true, force: true });
  await tool("gpgconf", ["--kill", "all"], { GNUPGHOME: keys.lab.gnupgHome });
  await tool("gpgconf", ["--kill", "all"], { GNUPGHOME: keys.other.gnupgHome });
  await writeFile(join(staged, "packages.json"), JSON.stringify(packages, null, 1));
}

/** The deb at `build.path` in Debian's archive, through the lab's recording mirror, checked. */
async function downloadDeb(build: DebBuild, dir: string): Promise<string> {
  const mirror = await archiveMirror();
  const file = join(dir, build.path.split("/").at(-1)!);
  const res = await fetch(`${mirror.url}/${build.path}`);
  if (!res.ok || !res.body)
    throw new SutureError("IO", `rpm lab: ${build.path} from the archive mirror: HTTP ${res.status}`);
  await pipeline(Readable.fromWeb(res.body as never), createWriteStream(file));
  const digest = createHash("sha256")
    .update(await readFile(file))
    .digest("hex");
  if (digest !== build.sha256)
    throw new SutureError(
      "IO",
      `rpm lab: ${build.path} has SHA-256 ${digest}, not the pinned ${build.sha256}`,
    );
  return file;
}

interface ConvertedRpm {
  file: string;
  fileName: string;
  evr: string;
  arch: "x86_64" | "noarch";
}

/** Debian's relation operators as rpm's. */
const OPERATORS: Record<string, string> = { "=": "=", ">=": ">=", "<=": "<=", ">>": ">", "<<": "<" };

/** One deb as an rpm built by rpmbuild from the deb's own files (see the file comment). */
async function debToRpm(
  work: string,
  debFile: string,
  deb: LabDeb,
  universe: ReadonlySet<string>,
): Promise<ConvertedRpm> {
  const top = await mkdtemp(join(work, `${deb.name}-`));
  const tree = join(top, "tree");
  const control = join(top, "control");
  await tool("dpkg-deb", ["-x", debFile, tree]);
  await tool("dpkg-deb", ["-e", debFile, control]);
  const field = async (name: string) => (await tool("dpkg-deb", ["-f", debFile, name])).trim();
  const debVersion = await field("Version");
  const debArch = await field("Architecture");
  const evr = debToRpmEvr(debVersion);
  const arch = debArch === "all" ? "noarch" : "x86_64";
  const description = (await field("Description")).split("\n");
  const conffiles = new Set(
    (await readFile(join(control, "conffiles"), "utf8").catch(() => ""))
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l.startsWith("/")),
  );
  for (const path of deb.stampConfig ?? []) {
    await writeFile(
      join(tree, path),
      `${await readFile(join(tree, path), "utf8")}# suture lab: ${deb.name} ${debVersion}\n`,
    );
  }
  // Depends on converted packages become versioned Requires; the rest is the Debian userland's.
  const requires = [...(deb.requires ?? [])];
  for (const group of (await field("Depends")).split(",")) {
    const first = group.split("|")[0]!.trim();
    const m = /^([a-z0-9][a-z0-9+.-]*)(?::\S+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?$/.exec(first);
    if (!m || !universe.has(m[1]!)) continue;
    requires.push(m[2] ? relationOf(m[1]!, m[2], m[3]!) : m[1]!);
  }
  const listing = (await tool("find", [tree, "-mindepth", "1", "-printf", "%y %P\\n"]))
    .split("\n")
    .filter(Boolean)
    .map((l) => ({ type: l[0]!, path: `/${l.slice(2)}` }));
  const owned = (p: string) => p.split("/").some((c) => c === deb.name);
  const quote = (p: string) => `"${p.replaceAll("%", "%%")}"`;
  const fileLines = ["%defattr(-,root,root,-)"];
  for (const e of listing) {
    if (e.type === "d") {
      if (owned(e.path)) fileLines.push(`%dir ${quote(e.path)}`);
    } else if (conffiles.has(e.path)) fileLines.push(`%config(noreplace) ${quote(e.path)}`);
    else fileLines.push(quote(e.path));
  }
  const spec = [
    `Name: ${deb.name}`,
    ...(evr.epoch !== undefined ? [`Epoch: ${evr.epoch}`] : []),
    `Version: ${evr.version}`,
    `Release: ${evr.release}`,
    `Summary: ${description[0]}`,
    "License: see /usr/share/doc/%{name}/copyright",
    `URL: ${(await field("Homepage")) || "https://www.debian.org/"}`,
    "Vendor: suture lab (Debian bookworm, converted)",
    `BuildArch: ${arch}`,
    "AutoReqProv: no",
    ...(deb.provides ?? []).map((p) => `Provides: ${p}`),
    ...requires.map((r) => `Requires: ${r}`),
    "%description",
    `${description.slice(1).join("\n").replace(/^ \.$/gm, "").replace(/^ /gm, "") || description[0]}`,
    `Converted by the suture lab from the Debian package ${deb.name} ${debVersion} (${debFile.split("/").at(-1)}).`,
    "%install",
    `cp -a ${tree}/. %{buildroot}/`,
    ...(deb.ldconfig ? ["%post -p /sbin/ldconfig", "%postun -p /sbin/ldconfig"] : []),
    "%files",
    ...fileLines,
    "",
  ].join("\n");
  const specFile = join(top, `${deb.name}.spec`);
  await writeFile(specFile, spec);
  await tool(
    "rpmbuild",
    [
      "--define",
      `_topdir ${top}`,
      "--define",
      "_binary_payload w19.zstdio",
      "--define",
      "_build_id_links none",
      "--define",
      "debug_package %{nil}",
      "--define",
      "__spec_install_post %{nil}",
      "--define",
      "_buildhost suture-lab",
      "--define",
      "use_source_date_epoch_as_buildtime 1",
      "--define",
      "clamp_mtime_to_source_epoch 1",
      "--quiet",
      "-bb",
      specFile,
    ],
    { SOURCE_DATE_EPOCH: String(RPM_LAB_EPOCH) },
  );
  const rpmDir = join(top, "RPMS", arch);
  const [fileName] = (await readdir(rpmDir)).filter((n) => n.endsWith(".rpm"));
  return { file: join(rpmDir, fileName!), fileName: fileName!, evr: rpmEvrString(evr), arch };
}

/** The CVE ids of the fixed deb's changelog entries newer than the old build. */
async function changelogCves(fixedDeb: string, deb: LabDeb): Promise<string[]> {
  const tmp = await mkdtemp(join(labCacheDir(), ".rpmlab-changelog-"));
  try {
    await tool("dpkg-deb", ["-x", fixedDeb, tmp]);
    const text = await readFile(join(tmp, "usr/share/doc", deb.name, "changelog.Debian.gz"))
      .then((b) => gunzipSync(b).toString("utf8"))
      .catch(() => "");
    const oldHeader = text.search(new RegExp(`^\\S+ \\(${deb.old.version.replace(/[.+]/g, "\\$&")}\\)`, "m"));
    const newer = oldHeader >= 0 ? text.slice(0, oldHeader) : "";
    return [...new Set(newer.match(/CVE-\d{4}-\d{4,}/g) ?? [])].sort();
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The release package of `distro`: os-release, repository file, the lab key, the release files. */
async function releaseRpm(work: string, distro: RpmLabDistro, key: RpmLabKey): Promise<string> {
  const { name, version, release } = distro.release;
  return buildRpm(work, {
    name,
    version,
    release,
    files: [
      { path: "/usr/lib/os-release", content: distro.osRelease },
      { path: "/etc/os-release", symlinkTo: "../usr/lib/os-release" },
      { path: distro.repoFile.path, content: distro.repoFile.text, config: true },
      { path: distro.keyPath, content: key.publicArmored },
      ...distro.extra,
    ],
    provides: distro.provides,
    payload: "w19.zstdio",
  });
}

// ---------------------------------------------------------------------------------------------
// Serving

export type RpmRepoTamper =
  /** repomd.xml changed after it was signed (its `.asc` no longer verifies). */
  | "repomd"
  /** primary.xml.gz changed (its checksum in repomd.xml no longer matches). */
  | "primary"
  /** Packages signed by the other key (metadata consistent, repomd signed by the lab key). */
  | "package-other-key"
  /** Packages whose bytes changed after the metadata was made (checksum and digests fail). */
  | "package-bytes"
  /** Packages without a signature (metadata consistent). */
  | "package-unsigned";

export interface RpmTestRepoOptions {
  tamper?: RpmRepoTamper;
  /** The packages `package-*` tampering applies to (default: every fixed build). */
  tamperPackages?: readonly string[];
}

export interface RpmTestRepo {
  /** The server's origin, http://127.0.0.1:PORT. */
  url: string;
  /** The repository URL the `kind` image's repo file names (expanded), as served here. */
  repoUrl(kind: RpmLabKind): string;
  /** `--mirror` value mapping the `kind` image's repository to this server. */
  mirrorArg(kind: RpmLabKind): string;
  /** The lab key's armored public key file (for `--keyring`). */
  publicKeyFile: string;
  /** The other key's (a `--keyring` that must not help). */
  otherPublicKeyFile: string;
  packages: RpmLabPackage[];
  /** Paths requested so far, in order. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Serves the lab repository on 127.0.0.1 (ephemeral port) under every lab image's repository path.
 * With `tamper`, a private copy with the damage is served; the cache is not touched.
 */
export async function startRpmTestRepo(options: RpmTestRepoOptions = {}): Promise<RpmTestRepo> {
  const built = await rpmLabRepoFiles();
  const tamper = options.tamper;
  let root =
    tamper === "package-other-key"
      ? built.otherKeyRoot
      : tamper === "package-unsigned"
        ? built.unsignedRoot
        : built.root;
  let scratch: string | undefined;
  const only = options.tamperPackages;
  if (tamper === "package-other-key" || tamper === "package-unsigned") {
    if (only) {
      // The chosen packages from the variant, the rest lab-signed: new metadata, repomd signed.
      scratch = await mkdtemp(join(labCacheDir(), ".rpm-tampered-"));
      root = await mixedRepo(scratch, built, root, only);
    }
  } else if (tamper) {
    scratch = await mkdtemp(join(labCacheDir(), ".rpm-tampered-"));
    root = join(scratch, "repo");
    await cp(built.root, root, { recursive: true });
    await applyTamper(root, built, tamper, only);
  }
  const served = [...new Set(Object.values(DISTROS).map((d) => d.servedPath))];
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? "/").split("?")[0]!);
    requests.push(path);
    const base = served.find((s) => path.startsWith(s));
    const rel = base ? normalize(path.slice(base.length)) : "..";
    if (rel.startsWith("..") || rel.startsWith("/") || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404).end();
      return;
    }
    readFile(join(root, rel)).then(
      (bytes) => {
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes.length });
        res.end(req.method === "HEAD" ? undefined : bytes);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    repoUrl: (kind) => `${url}${RPM_LAB_DISTRO[kind].servedPath}`,
    mirrorArg: (kind) => {
      const d = RPM_LAB_DISTRO[kind];
      return `${d.mirrorFrom}=${url}${new URL(d.mirrorFrom).pathname}`;
    },
    publicKeyFile: built.keys.lab.publicKeyFile,
    otherPublicKeyFile: built.keys.other.publicKeyFile,
    packages: built.packages,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (scratch) await rm(scratch, { recursive: true, force: true });
    },
  };
}

function tamperedFiles(built: BuiltRpmRepo, only: readonly string[] | undefined): string[] {
  return built.packages
    .filter((p) => p.fixed && (!only || only.includes(p.name)))
    .map((p) => p.fixed!.file)
    .concat(
      only
        ? built.packages.filter((p) => !p.fixed && only.includes(p.name)).map((p) => p.installed.file)
        : [],
    );
}

async function mixedRepo(scratch: string, built: BuiltRpmRepo, variant: string, only: readonly string[]) {
  const chosen = new Set(tamperedFiles(built, only));
  const paths: string[] = [];
  const dir = join(scratch, "rpms");
  await mkdir(dir);
  for (const f of await readdir(join(built.root, "Packages"))) {
    await cp(join(chosen.has(f) ? variant : built.root, "Packages", f), join(dir, f));
    paths.push(join(dir, f));
  }
  const made = await createRepo(scratch, paths, { compress: "gz", key: built.keys.lab });
  await tool("gpgconf", ["--kill", "all"], { GNUPGHOME: built.keys.lab.gnupgHome });
  return made.dir;
}

async function applyTamper(
  root: string,
  built: BuiltRpmRepo,
  tamper: "repomd" | "primary" | "package-bytes",
  only: readonly string[] | undefined,
): Promise<void> {
  const repodata = join(root, "repodata");
  if (tamper === "repomd") {
    // One letter of the revision changes; the signature stays.
    const path = join(repodata, "repomd.xml");
    const text = await readFile(path, "utf8");
    await writeFile(
      path,
      text.replace(/<revision>(\d)/, (_m, d: string) => `<revision>${(Number(d) + 1) % 10}`),
    );
  } else if (tamper === "primary") {
    const name = (await readdir(repodata)).find((n) => n.endsWith("-primary.xml.gz"))!;
    const xml = gunzipSync(await readFile(join(repodata, name))).toString("utf8");
    await writeFile(
      join(repodata, name),
      gzipSync(Buffer.from(xml.replace("<summary>", "<summary>tampered "))),
    );
  } else {
    for (const f of tamperedFiles(built, only)) {
      const path = join(root, "Packages", f);
      const bytes = await readFile(path);
      // A byte of the compressed payload, near the end of the file.
      bytes[bytes.length - 64] = bytes[bytes.length - 64]! ^ 0x01;
      await writeFile(path, bytes);
    }
  }
  await chmod(root, 0o755);
}
