import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parseRpmHeader, RpmSense, RpmTag, RpmType } from "../../../../distro/rpm/header.ts";
import { rpmHeaderDependencies } from "../../../../distro/rpm/header-contents.ts";
import { type InstalledRpm, readInstalledRpms } from "../../../../distro/rpm/installed.ts";
import type { RepoDependency, RepoPackage } from "../../../../distro/rpm/primary.ts";
import type { RpmRepo } from "../../../../distro/rpm/repo-config.ts";
import { parseRpmEvr } from "../../../../distro/rpm/version.ts";
import {
  parseRichDep,
  type RpmCapability,
  type RpmResolution,
  rangesOverlap,
  resolveRpmUpgrade,
  richHolds,
} from "./resolve.ts";

const FIXTURES = join(import.meta.dirname, "../../../../../../shared/fixtures/rpmdb");

// ---- builders ------------------------------------------------------------------------------

/** `name [op evr]` → its parts (`openssl-libs = 1:3.0.7-27`). */
function dep(text: string): { name: string; op?: string; evr?: string } {
  if (text.startsWith("(")) return { name: text };
  const [name, op, evr] = text.split(" ");
  return { name: name!, ...(op ? { op, evr: evr! } : {}) };
}

const SENSE: Record<string, number> = {
  "=": RpmSense.EQUAL,
  "<": RpmSense.LESS,
  "<=": RpmSense.LESS | RpmSense.EQUAL,
  ">": RpmSense.GREATER,
  ">=": RpmSense.GREATER | RpmSense.EQUAL,
};
const FLAGS: Record<string, RepoDependency["flags"]> = {
  "=": "EQ",
  "<": "LT",
  "<=": "LE",
  ">": "GT",
  ">=": "GE",
};

interface Spec {
  name: string;
  /** `[epoch:]version-release`. */
  evr: string;
  arch?: string;
  provides?: string[];
  requires?: string[];
  obsoletes?: string[];
  conflicts?: string[];
  files?: string[];
}

/** A legacy (region-less) header blob holding a package's identity, dependencies and files. */
function headerBlob(spec: Spec): Uint8Array {
  const { epoch, version, release } = parseRpmEvr(spec.evr);
  const entries: { tag: number; type: number; value: string | string[] | number[] }[] = [
    { tag: RpmTag.NAME, type: RpmType.STRING, value: spec.name },
    { tag: RpmTag.VERSION, type: RpmType.STRING, value: version },
    { tag: RpmTag.RELEASE, type: RpmType.STRING, value: release! },
    { tag: RpmTag.ARCH, type: RpmType.STRING, value: spec.arch ?? "x86_64" },
  ];
  if (epoch !== undefined) entries.push({ tag: RpmTag.EPOCH, type: RpmType.INT32, value: [Number(epoch)] });
  const deps = (list: string[] | undefined, [n, f, v]: [number, number, number]) => {
    if (!list?.length) return;
    const parsed = list.map(dep);
    entries.push({ tag: n, type: RpmType.STRING_ARRAY, value: parsed.map((d) => d.name) });
    entries.push({
      tag: f,
      type: RpmType.INT32,
      value: parsed.map(
        (d) => (d.op ? SENSE[d.op]! : 0) | (d.name.startsWith("rpmlib(") ? RpmSense.RPMLIB : 0),
      ),
    });
    entries.push({ tag: v, type: RpmType.STRING_ARRAY, value: parsed.map((d) => d.evr ?? "") });
  };
  deps(spec.provides, [RpmTag.PROVIDENAME, RpmTag.PROVIDEFLAGS, RpmTag.PROVIDEVERSION]);
  deps(spec.requires, [RpmTag.REQUIRENAME, RpmTag.REQUIREFLAGS, RpmTag.REQUIREVERSION]);
  deps(spec.obsoletes, [RpmTag.OBSOLETENAME, RpmTag.OBSOLETEFLAGS, RpmTag.OBSOLETEVERSION]);
  deps(spec.conflicts, [RpmTag.CONFLICTNAME, RpmTag.CONFLICTFLAGS, RpmTag.CONFLICTVERSION]);
  if (spec.files?.length) {
    const dirs = [...new Set(spec.files.map((f) => f.slice(0, f.lastIndexOf("/") + 1)))];
    entries.push({
      tag: RpmTag.BASENAMES,
      type: RpmType.STRING_ARRAY,
      value: spec.files.map((f) => f.slice(f.lastIndexOf("/") + 1)),
    });
    entries.push({ tag: RpmTag.DIRNAMES, type: RpmType.STRING_ARRAY, value: dirs });
    entries.push({
      tag: RpmTag.DIRINDEXES,
      type: RpmType.INT32,
      value: spec.files.map((f) => dirs.indexOf(f.slice(0, f.lastIndexOf("/") + 1))),
    });
  }
  entries.sort((a, b) => a.tag - b.tag);
  const chunks: number[] = [];
  const index: [number, number, number, number][] = [];
  for (const e of entries) {
    if (e.type === RpmType.INT32) {
      while (chunks.length % 4) chunks.push(0);
      const offset = chunks.length;
      for (const n of e.value as number[])
        chunks.push((n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
      index.push([e.tag, e.type, offset, (e.value as number[]).length]);
    } else {
      const offset = chunks.length;
      const strings = typeof e.value === "string" ? [e.value] : (e.value as string[]);
      for (const s of strings) chunks.push(...Buffer.from(`${s}\0`, "utf8"));
      index.push([e.tag, e.type, offset, strings.length]);
    }
  }
  const out = new Uint8Array(8 + index.length * 16 + chunks.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, index.length);
  view.setUint32(4, chunks.length);
  index.forEach(([tag, type, offset, count], i) => {
    view.setInt32(8 + i * 16, tag);
    view.setUint32(12 + i * 16, type);
    view.setInt32(16 + i * 16, offset);
    view.setUint32(20 + i * 16, count);
  });
  out.set(chunks, 8 + index.length * 16);
  return out;
}

let record = 0;
function installed(spec: Spec): InstalledRpm {
  const { epoch, version, release } = parseRpmEvr(spec.evr);
  return {
    recordNumber: ++record,
    nevra: {
      name: spec.name,
      version,
      release: release!,
      ...(epoch === undefined ? {} : { epoch: Number(epoch) }),
      arch: spec.arch ?? "x86_64",
    },
    header: parseRpmHeader(headerBlob(spec), spec.name),
  };
}

function offered(spec: Spec): RepoPackage {
  const { epoch, version, release } = parseRpmEvr(spec.evr);
  const repoDeps = (list: string[] | undefined): RepoDependency[] =>
    (list ?? []).map((t) => {
      const d = dep(t);
      if (!d.op) return { name: d.name };
      const e = parseRpmEvr(d.evr!);
      return {
        name: d.name,
        flags: FLAGS[d.op]!,
        epoch: e.epoch ?? "0",
        version: e.version,
        ...(e.release === undefined ? {} : { release: e.release }),
      };
    });
  const arch = spec.arch ?? "x86_64";
  return {
    name: spec.name,
    arch,
    epoch: Number(epoch ?? 0),
    version,
    release: release!,
    checksum: { type: "sha256", value: "0".repeat(64) },
    location: `Packages/${spec.name}-${version}-${release}.${arch}.rpm`,
    packageSize: 1000,
    installedSize: 1000,
    provides: repoDeps(spec.provides),
    requires: repoDeps(spec.requires),
    obsoletes: repoDeps(spec.obsoletes),
    conflicts: repoDeps(spec.conflicts),
    files: (spec.files ?? []).map((path) => ({ path, type: "file" as const })),
  };
}

const REPO: RpmRepo = {
  id: "baseos",
  origin: "/etc/yum.repos.d/lab.repo:1",
  enabled: true,
  baseurls: ["https://example.invalid/baseos"],
  fetchUrls: ["https://example.invalid/baseos"],
  gpgcheck: true,
  repoGpgcheck: false,
  gpgkeys: [],
};

function resolve(
  have: InstalledRpm[],
  offer: RepoPackage[],
  targets: { name: string; fixedVersion: string }[] | "all",
  arch = "x86_64",
): RpmResolution {
  return resolveRpmUpgrade({
    installed: have,
    repositories: [{ repo: REPO, packages: offer }],
    targets,
    arch,
  });
}

const chosen = (r: RpmResolution) =>
  r.install.map(
    (c) =>
      `${c.pkg.name}.${c.pkg.arch} ${c.from ?? "-"} -> ${c.pkg.epoch ? `${c.pkg.epoch}:` : ""}${c.pkg.version}-${c.pkg.release}`,
  );

// ---- version ranges and rich dependencies ----------------------------------------------------

const cap = (t: string): RpmCapability => {
  const d = dep(t);
  return d.op ? { name: d.name, op: FLAGS[d.op]!, evr: parseRpmEvr(d.evr!) } : { name: d.name };
};

test("version ranges overlap as rpm's rpmdsCompare says: a release left out matches any, a missing epoch is 0", () => {
  const cases: [string, string, boolean][] = [
    ["foo = 1.0-5", "foo = 1.0", true],
    ["foo = 1.0-5", "foo <= 1.0", true],
    ["foo = 1.0-5", "foo < 1.0", false],
    ["foo = 1.0-5", "foo >= 1.0-6", false],
    ["foo = 1.0-5", "foo > 1.0-4", true],
    ["foo = 1:1.0-5", "foo >= 2.0", true],
    ["foo = 1.0-5", "foo >= 0:1.0-5", true],
    ["foo = 1.0~rc1-1", "foo >= 1.0", false],
    ["foo", "foo >= 9", true],
    ["foo = 2", "foo", true],
    ["foo >= 2", "foo < 3", true],
    ["foo >= 3", "foo < 3", false],
  ];
  for (const [provide, require, expected] of cases)
    assert.equal(rangesOverlap(cap(provide), cap(require)), expected, `${provide} vs ${require}`);
});

test("rich dependencies parse and evaluate as rpm's boolean dependencies", () => {
  const have = new Set(["a", "c"]);
  const holds = (c: RpmCapability) => have.has(c.name);
  const cases: [string, boolean][] = [
    ["(a and c)", true],
    ["(a and b)", false],
    ["(b or c)", true],
    ["(b if a)", false],
    ["(b if z)", true],
    ["(b if z else c)", true],
    ["(b unless a)", true],
    ["(b unless z)", false],
    ["((b or a) and (c if a))", true],
    ["(foo >= 1.2-3 or a)", true],
  ];
  for (const [text, expected] of cases)
    assert.equal(richHolds(parseRichDep(text, "t"), holds), expected, text);
  const parsed = parseRichDep("(foo >= 1:1.2-3 or bar)", "t");
  assert.deepEqual(parsed, {
    kind: "or",
    items: [
      { kind: "cap", cap: { name: "foo", op: "GE", evr: { epoch: "1", version: "1.2", release: "3" } } },
      { kind: "cap", cap: { name: "bar" } },
    ],
  });
  for (const bad of ["(a and b or c)", "(a and", "(a) b", "(a if b if c)", "(and a)"])
    assert.throws(
      () => parseRichDep(bad, "pkg 1-1"),
      (e: Error & { code?: string }) => e.code === "PATCH_FAILED" && !e.message.includes("\n"),
      bad,
    );
  assert.throws(() => richHolds(parseRichDep("(a with b)", "t"), holds), /--engine sandbox/);
});

// ---- targets --------------------------------------------------------------------------------

test("a target is raised to the newest build of its name and arch, even past the fixed version; other arches are left alone", () => {
  const have = [
    installed({ name: "zlib", evr: "1.2.11-31" }),
    installed({ name: "zlib", evr: "1.2.11-31", arch: "i686" }),
  ];
  const offer = [
    offered({ name: "zlib", evr: "1.2.11-32" }),
    offered({ name: "zlib", evr: "1.2.11-40" }),
    offered({ name: "zlib", evr: "1.2.11-41", arch: "aarch64" }),
    offered({ name: "zlib", evr: "1.2.11-33", arch: "i686" }),
  ];
  const r = resolve(have, offer, [{ name: "zlib", fixedVersion: "1.2.11-32" }]);
  assert.deepEqual(chosen(r).sort(), [
    "zlib.i686 1.2.11-31 -> 1.2.11-33",
    "zlib.x86_64 1.2.11-31 -> 1.2.11-40",
  ]);
  assert.equal(r.install.find((c) => c.pkg.arch === "x86_64")!.replaces, have[0]);
  assert.deepEqual(r.failed, []);
});

test("noarch may become the image's arch and the other way round, as dnf allows", () => {
  const have = [installed({ name: "tzdata", evr: "2024a-1", arch: "noarch" })];
  const r = resolve(
    have,
    [offered({ name: "tzdata", evr: "2024b-1", arch: "x86_64" })],
    [{ name: "tzdata", fixedVersion: "2024b" }],
  );
  assert.deepEqual(chosen(r), ["tzdata.x86_64 2024a-1 -> 2024b-1"]);
});

test("targets that cannot be made are failures naming why; the others still go in", () => {
  const have = [installed({ name: "curl", evr: "7.76.0-6" }), installed({ name: "bash", evr: "5.1.8-1" })];
  const offer = [offered({ name: "curl", evr: "7.76.0-7" }), offered({ name: "bash", evr: "5.1.8-4" })];
  const r = resolve(have, offer, [
    { name: "curl", fixedVersion: "8.0.0-1" },
    { name: "vim", fixedVersion: "9.0-1" },
    { name: "bash", fixedVersion: "5.1.8-2" },
  ]);
  assert.deepEqual(chosen(r), ["bash.x86_64 5.1.8-1 -> 5.1.8-4"]);
  assert.match(
    r.failed.find((f) => f.name === "curl")!.reason,
    /up to 7\.76\.0-7, lower than the fixed 8\.0\.0-1/,
  );
  assert.match(r.failed.find((f) => f.name === "vim")!.reason, /not installed/);
});

test("the epoch counts: 1:1.0 is newer than 2.0, so a fix of 2.0 is met by 1:1.0", () => {
  const have = [installed({ name: "openssl", evr: "1:0.9-1" })];
  const r = resolve(
    have,
    [offered({ name: "openssl", evr: "1:1.0-1" })],
    [{ name: "openssl", fixedVersion: "2.0-1" }],
  );
  assert.deepEqual(chosen(r), ["openssl.x86_64 1:0.9-1 -> 1:1.0-1"]);
});

test("install-only packages (the kernel) and gpg-pubkey entries are never upgraded in place", () => {
  const have = [
    installed({ name: "kernel-core", evr: "5.14-1", provides: ["installonlypkg(kernel)"] }),
    installed({ name: "gpg-pubkey", evr: "fd431d51-4ae0493b" }),
  ];
  const offer = [
    offered({ name: "kernel-core", evr: "5.14-2", provides: ["installonlypkg(kernel)"] }),
    offered({ name: "gpg-pubkey", evr: "fd431d51-5000000" }),
  ];
  const r = resolve(have, offer, [{ name: "kernel-core", fixedVersion: "5.14-2" }]);
  assert.deepEqual(r.install, []);
  assert.match(r.failed[0]!.reason, /install-only/);
  assert.deepEqual(resolve(have, offer, "all").install, []);
});

// ---- dependencies ----------------------------------------------------------------------------

test("an installed package pinned to the old version (openssl = openssl-libs' EVR) is raised with it", () => {
  const have = [
    installed({ name: "openssl-libs", evr: "1:3.0.7-27", provides: ["libcrypto.so.3()(64bit)"] }),
    installed({
      name: "openssl",
      evr: "1:3.0.7-27",
      requires: ["openssl-libs = 1:3.0.7-27", "libcrypto.so.3()(64bit)"],
    }),
  ];
  const offer = [
    offered({ name: "openssl-libs", evr: "1:3.0.7-28", provides: ["libcrypto.so.3()(64bit)"] }),
    offered({ name: "openssl", evr: "1:3.0.7-28", requires: ["openssl-libs = 1:3.0.7-28"] }),
  ];
  const r = resolve(have, offer, [{ name: "openssl-libs", fixedVersion: "1:3.0.7-28" }]);
  assert.deepEqual(chosen(r), [
    "openssl-libs.x86_64 1:3.0.7-27 -> 1:3.0.7-28",
    "openssl.x86_64 1:3.0.7-27 -> 1:3.0.7-28",
  ]);
  assert.equal(r.install[1]!.reason, "reverse-dependency");
  assert.match(
    r.install[1]!.why,
    /needs openssl-libs = 1:3\.0\.7-27, which the upgrade of openssl-libs no longer provides/,
  );
  // Without a newer openssl the target cannot be made: it is left out whole.
  const stuck = resolve(have, offer.slice(0, 1), [{ name: "openssl-libs", fixedVersion: "1:3.0.7-28" }]);
  assert.deepEqual(stuck.install, []);
  assert.match(stuck.failed[0]!.reason, /installed openssl 1:3\.0\.7-27 needs openssl-libs = 1:3\.0\.7-27/);
});

test("new Requires pull the newest provider: an installed name raised first, a new package otherwise; files from headers count", () => {
  const have = [
    installed({ name: "glibc", evr: "2.34-2", provides: ["libc.so.6(GLIBC_2.34)(64bit)"] }),
    installed({ name: "bash", evr: "5.1-1", files: ["/usr/bin/bash", "/usr/share/doc/bash/README"] }),
    installed({ name: "curl", evr: "7.76-6", requires: ["libc.so.6(GLIBC_2.34)(64bit)"] }),
  ];
  const offer = [
    offered({
      name: "glibc",
      evr: "2.34-5",
      provides: ["libc.so.6(GLIBC_2.34)(64bit)", "libc.so.6(GLIBC_2.35)(64bit)"],
    }),
    offered({ name: "libnghttp2", evr: "1.46-1", provides: ["libnghttp2.so.14()(64bit)"] }),
    offered({
      name: "curl",
      evr: "7.76-7",
      requires: [
        "libc.so.6(GLIBC_2.35)(64bit)",
        "libnghttp2.so.14()(64bit)",
        "/usr/share/doc/bash/README",
        "rpmlib(PayloadIsZstd) <= 5.4.18-1",
        "config(curl) = 7.76-7",
      ],
      provides: ["config(curl) = 7.76-7"],
    }),
  ];
  const r = resolve(have, offer, [{ name: "curl", fixedVersion: "7.76-7" }]);
  assert.deepEqual(chosen(r), [
    "glibc.x86_64 2.34-2 -> 2.34-5",
    "libnghttp2.x86_64 - -> 1.46-1",
    "curl.x86_64 7.76-6 -> 7.76-7",
  ]);
  assert.equal(r.install[0]!.reason, "dependency");
  assert.equal(r.install[1]!.reason, "new-dependency");
  assert.match(r.install[1]!.why, /new dependency of curl 7\.76-7 \(libnghttp2\.so\.14\(\)\(64bit\)\)/);
});

test("a Requires no repository meets, an unknown rpmlib feature, or a file only filelists name: the target fails", () => {
  const have = [installed({ name: "curl", evr: "1-1" })];
  const cases: [string, RegExp][] = [
    ["libmissing.so.1()(64bit)", /needs libmissing\.so\.1\(\)\(64bit\), which no enabled repository/],
    ["rpmlib(FutureFeature) <= 9-1", /a feature of a newer rpm/],
    ["/usr/lib64/libfoo.so.1", /only the repositories' filelists could name/],
  ];
  for (const [need, reason] of cases) {
    const r = resolve(
      have,
      [offered({ name: "curl", evr: "1-2", requires: [need] })],
      [{ name: "curl", fixedVersion: "1-2" }],
    );
    assert.deepEqual(r.install, [], need);
    assert.match(r.failed[0]!.reason, reason, need);
  }
});

test("a Requires the installed version had and the image lacked is not added (a distroless image without /bin/sh)", () => {
  const have = [installed({ name: "ca-certificates", evr: "1-1", requires: ["/bin/sh"] })];
  const offer = [
    offered({ name: "ca-certificates", evr: "1-2", requires: ["/bin/sh"] }),
    offered({ name: "bash", evr: "5-1", files: ["/bin/sh"] }),
  ];
  const r = resolve(have, offer, [{ name: "ca-certificates", fixedVersion: "1-2" }]);
  assert.deepEqual(chosen(r), ["ca-certificates.x86_64 1-1 -> 1-2"]);
  assert.match(r.warnings.join("\n"), /needs \/bin\/sh, which the image lacks already/);
});

test("Obsoletes erase the installed package they name; Conflicts are refused unless raising the other side ends them", () => {
  const have = [
    installed({ name: "libfoo", evr: "1-1" }),
    installed({ name: "foo-compat", evr: "0.9-1" }),
    installed({ name: "bar", evr: "1-1" }),
  ];
  const r = resolve(
    have,
    [offered({ name: "libfoo", evr: "1-2", obsoletes: ["foo-compat < 1.0"] })],
    [{ name: "libfoo", fixedVersion: "1-2" }],
  );
  assert.deepEqual(chosen(r), ["libfoo.x86_64 1-1 -> 1-2"]);
  assert.equal(r.obsoleted.length, 1);
  assert.equal(r.obsoleted[0]!.installed, have[1]);
  assert.match(r.obsoleted[0]!.why, /libfoo 1-2 obsoletes foo-compat < 1\.0/);

  const conflicting = [offered({ name: "libfoo", evr: "1-2", conflicts: ["bar < 2"] })];
  const refused = resolve(have, conflicting, [{ name: "libfoo", fixedVersion: "1-2" }]);
  assert.deepEqual(refused.install, []);
  assert.match(refused.failed[0]!.reason, /libfoo 1-2 conflicts with bar 1-1 \(bar < 2\), and rpm refuses/);

  const raised = resolve(
    have,
    [...conflicting, offered({ name: "bar", evr: "2-1" })],
    [{ name: "libfoo", fixedVersion: "1-2" }],
  );
  assert.deepEqual(chosen(raised).sort(), ["bar.x86_64 1-1 -> 2-1", "libfoo.x86_64 1-1 -> 1-2"]);

  // An installed package's Conflicts against the new version count too.
  const theirs = [
    installed({ name: "libfoo", evr: "1-1" }),
    installed({ name: "old", evr: "1-1", conflicts: ["libfoo >= 1-2"] }),
  ];
  const byInstalled = resolve(
    theirs,
    [offered({ name: "libfoo", evr: "1-2" })],
    [{ name: "libfoo", fixedVersion: "1-2" }],
  );
  assert.match(byInstalled.failed[0]!.reason, /old 1-1 conflicts with libfoo 1-2/);
});

test("rich Requires are met by pulling what makes them hold; (a if b) pulls nothing while b is absent", () => {
  const have = [installed({ name: "app", evr: "1-1" }), installed({ name: "selinux-policy", evr: "3-1" })];
  const offer = [
    offered({
      name: "app",
      evr: "1-2",
      requires: ["(libA or libB)", "(app-selinux if selinux-policy)", "(app-x11 if xorg)"],
    }),
    offered({ name: "libB", evr: "1-1" }),
    offered({ name: "app-selinux", evr: "1-1" }),
    offered({ name: "app-x11", evr: "1-1" }),
  ];
  const r = resolve(have, offer, [{ name: "app", fixedVersion: "1-2" }]);
  assert.deepEqual(chosen(r).sort(), [
    "app-selinux.x86_64 - -> 1-1",
    "app.x86_64 1-1 -> 1-2",
    "libB.x86_64 - -> 1-1",
  ]);

  const withDep = resolve(
    have,
    [offered({ name: "app", evr: "1-2", requires: ["(libA with libB)"] })],
    [{ name: "app", fixedVersion: "1-2" }],
  );
  assert.deepEqual(withDep.install, []);
  assert.match(withDep.failed[0]!.reason, /with .*--engine sandbox/);
});

test("update-all raises every package with a newer build and keeps back what cannot be raised, with a warning", () => {
  const have = [
    installed({ name: "a", evr: "1-1" }),
    installed({ name: "b", evr: "1-1" }),
    installed({ name: "c", evr: "1-1" }),
  ];
  const offer = [
    offered({ name: "a", evr: "1-2" }),
    offered({ name: "b", evr: "1-2", requires: ["nowhere"] }),
    offered({ name: "c", evr: "1-1" }),
  ];
  const r = resolve(have, offer, "all");
  assert.deepEqual(chosen(r), ["a.x86_64 1-1 -> 1-2"]);
  assert.deepEqual(r.failed, []);
  assert.match(r.warnings.join("\n"), /b is kept at its installed version.*nowhere/);
});

test("packages are ordered with what they require first", () => {
  const have = [
    installed({ name: "z-lib", evr: "1-1" }),
    installed({ name: "a-app", evr: "1-1", requires: ["z-lib = 1-1"] }),
  ];
  const offer = [
    offered({ name: "z-lib", evr: "1-2" }),
    offered({ name: "a-app", evr: "1-2", requires: ["z-lib = 1-2"] }),
  ];
  const r = resolve(have, offer, "all");
  assert.deepEqual(
    r.install.map((c) => c.pkg.name),
    ["z-lib", "a-app"],
  );
});

// ---- a real database ----------------------------------------------------------------------------

test("CBL-Mariner 2.0's real database: upgrading openssl-libs raises openssl (it requires openssl-libs = its EVR), glibc's provides from its header meet the rest", () => {
  const db = readFileSync(join(FIXTURES, "cbl-mariner-2.0/rpmdb.sqlite"));
  const have = readInstalledRpms({ path: "/var/lib/rpm/rpmdb.sqlite", backend: "sqlite" }, (p) =>
    p === "/var/lib/rpm/rpmdb.sqlite" ? db : undefined,
  );
  // The next build provides what the installed one does (its sonames and symbol versions), at its EVR.
  const oldLibs = have.find((p) => p.nevra.name === "openssl-libs")!;
  const provides = rpmHeaderDependencies(oldLibs.header!, "provide", "openssl-libs").map((d) =>
    d.version ? `${d.name} = 1.1.1k-8.cm2` : d.name,
  );
  assert.ok(provides.includes("libcrypto.so.1.1(OPENSSL_1_1_0)(64bit)"));
  const libs = offered({
    name: "openssl-libs",
    evr: "1.1.1k-8.cm2",
    provides,
    requires: ["libc.so.6(GLIBC_2.34)(64bit)", "glibc", "libgcc", "/sbin/ldconfig"],
  });
  const openssl = offered({
    name: "openssl",
    evr: "1.1.1k-8.cm2",
    requires: ["openssl-libs = 1.1.1k-8.cm2", "libcrypto.so.1.1()(64bit)", "/bin/sh"],
  });
  const r = resolve(have, [libs, openssl], [{ name: "openssl-libs", fixedVersion: "1.1.1k-8.cm2" }]);
  assert.deepEqual(r.failed, []);
  assert.deepEqual(chosen(r), [
    "openssl-libs.x86_64 1.1.1k-7.cm2 -> 1.1.1k-8.cm2",
    "openssl.x86_64 1.1.1k-7.cm2 -> 1.1.1k-8.cm2",
  ]);
  assert.deepEqual(r.failed, []);
  assert.equal(r.install[0]!.replaces?.nevra.name, "openssl-libs");
  // Everything else in the image stays: nothing else required openssl-libs at its old EVR
  // (tdnf requires only the library's sonames).
  assert.deepEqual(r.obsoleted, []);
});

test("update-all replaces an installed package by the package that obsoletes it (a rename), as dnf upgrade does", () => {
  const have = [installed({ name: "oldname", evr: "1-1" }), installed({ name: "keep", evr: "1-1" })];
  const offer = [
    offered({ name: "newname", evr: "2-1", obsoletes: ["oldname < 2"], provides: ["oldname = 2-1"] }),
    offered({ name: "unrelated", evr: "1-1", obsoletes: ["gone < 1"] }),
  ];
  const r = resolve(have, offer, "all");
  assert.deepEqual(chosen(r), ["newname.x86_64 - -> 2-1"]);
  assert.equal(r.obsoleted[0]!.installed, have[0]);
  // A report's targets never pull a rename on their own.
  assert.deepEqual(resolve(have, offer, [{ name: "keep", fixedVersion: "1-1" }]).install, []);
});

test("a file Requires primary.xml cannot answer is reported for the filelists; once they are read, a provider they name is pulled", () => {
  const have = [installed({ name: "app", evr: "1-1" })];
  const data = offered({ name: "app-data", evr: "1-1" });
  const offer = [offered({ name: "app", evr: "1-2", requires: ["/usr/share/app/data.bin"] }), data];
  const first = resolve(have, offer, [{ name: "app", fixedVersion: "1-2" }]);
  assert.deepEqual(first.unknownFiles, ["/usr/share/app/data.bin"]);
  assert.deepEqual(first.install, []);
  // What filelists.xml says app-data has, added to its entry (repositories.ts: addRepoFilelists).
  data.files.push({ path: "/usr/share/app/data.bin", type: "file" });
  const second = resolveRpmUpgrade({
    installed: have,
    repositories: [{ repo: REPO, packages: offer }],
    targets: [{ name: "app", fixedVersion: "1-2" }],
    arch: "x86_64",
    filelistsRead: true,
  });
  assert.deepEqual(chosen(second), ["app-data.x86_64 - -> 1-1", "app.x86_64 1-1 -> 1-2"]);
  assert.deepEqual(second.unknownFiles, []);
  // Read and still nowhere: the ordinary refusal.
  data.files.length = 0;
  const third = resolveRpmUpgrade({
    installed: have,
    repositories: [{ repo: REPO, packages: offer }],
    targets: [{ name: "app", fixedVersion: "1-2" }],
    arch: "x86_64",
    filelistsRead: true,
  });
  assert.match(
    third.failed[0]!.reason,
    /needs \/usr\/share\/app\/data\.bin, which no enabled repository of the image provides/,
  );
});
