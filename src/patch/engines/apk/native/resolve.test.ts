import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { minirootfs, readRootfsFiles } from "../../../../../test/lab/alpine-rootfs.ts";
import { type ApkIndexEntry, openApkIndex, parseApkIndex } from "../../../../distro/apk/apkindex.ts";
import type { ApkRepository } from "../../../../distro/apk/config.ts";
import { parseInstalledDb } from "../../../../distro/apk/installed-db.ts";
import type { ApkDependency, ApkPackageInfo } from "../../../../distro/apk/records.ts";
import { apkKeyring } from "../../../../distro/apk/signature.ts";
import {
  type ApkResolution,
  type ApkResolveIndex,
  apkVersionSatisfies,
  resolveApkUpgrade,
} from "./resolve.ts";

const MAIN: ApkRepository = {
  url: "https://dl-cdn.alpinelinux.org/alpine/v3.20/main",
  fetchUrl: "https://dl-cdn.alpinelinux.org/alpine/v3.20/main",
  origin: "/etc/apk/repositories:1",
};
const COMMUNITY: ApkRepository = {
  url: "https://dl-cdn.alpinelinux.org/alpine/v3.20/community",
  fetchUrl: "https://dl-cdn.alpinelinux.org/alpine/v3.20/community",
  origin: "/etc/apk/repositories:2",
};

/** The 3.20.3 (installed) and edge (newer builds) x86_64 minirootfs databases: real package relations. */
let installed320: ApkPackageInfo[];
let edge: ApkIndexEntry[];
let world320: string[];

before(async () => {
  const read = async (release: "3.20.3" | "20240923") => {
    const files = await readRootfsFiles(
      minirootfs(release, "x86_64"),
      (p) => p === "lib/apk/db/installed" || p === "etc/apk/world",
    );
    return {
      db: parseInstalledDb(files.get("lib/apk/db/installed")!.toString("utf8")).map((p) => p.info),
      world: files.get("etc/apk/world")!.toString("utf8").split(/\s+/).filter(Boolean),
    };
  };
  const old = await read("3.20.3");
  installed320 = old.db;
  world320 = old.world;
  edge = (await read("20240923")).db as ApkIndexEntry[];
  assert.ok(
    edge.every((e) => e.checksum),
    "the edge db carries every package's C:",
  );
});

/** The lab repository's shape: edge's newer builds plus 3.20.3's own. */
const labIndex = (drop: (e: ApkIndexEntry) => boolean = () => false): ApkResolveIndex[] => [
  { repository: MAIN, entries: [...(installed320 as ApkIndexEntry[]), ...edge].filter((e) => !drop(e)) },
];

const entries = (text: string) => parseApkIndex(text, "test index");
const record = (fields: Record<string, string>) =>
  `${Object.entries({
    C: `Q1${createHash("sha1")
      .update(fields.P! + fields.V!)
      .digest("base64")}`,
    ...fields,
  })
    .map(([k, v]) => `${k}:${v}`)
    .join("\n")}\n\n`;

function summary(r: ApkResolution) {
  return r.install.map((c) => `${c.entry.name} ${c.from ?? "-"} -> ${c.entry.version} (${c.reason})`);
}

test("a target libcrypto3 pulls libssl3, whose = pin it would break (real 3.20.3 -> edge data)", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex(),
    targets: [{ name: "libcrypto3", fixedVersion: "3.3.2-r1" }],
  });
  assert.deepEqual(summary(r), [
    "libcrypto3 3.3.2-r0 -> 3.3.2-r1 (target)",
    "libssl3 3.3.2-r0 -> 3.3.2-r1 (reverse-dependency)",
  ]);
  assert.match(r.install[1]!.why, /libssl3 3\.3\.2-r0 needs libcrypto3=3\.3\.2-r0/);
  assert.deepEqual([r.failed, r.remove, r.warnings], [[], [], []]);
});

test("a target libssl3 raises libcrypto3 to its = pin, and installs it first", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex(),
    targets: [{ name: "libssl3", fixedVersion: "3.3.2-r1" }],
  });
  assert.deepEqual(summary(r), [
    "libcrypto3 3.3.2-r0 -> 3.3.2-r1 (dependency)",
    "libssl3 3.3.2-r0 -> 3.3.2-r1 (target)",
  ]);
});

test("busybox brings busybox-binsh (= pin) and ssl_client (install_if busybox=NEW libssl3)", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex(),
    targets: [{ name: "busybox", fixedVersion: "1.36.1-r30" }],
  });
  assert.deepEqual(summary(r), [
    "busybox 1.36.1-r29 -> 1.36.1-r32 (target)",
    "busybox-binsh 1.36.1-r29 -> 1.36.1-r32 (reverse-dependency)",
    "ssl_client 1.36.1-r29 -> 1.36.1-r32 (install-if)",
  ]);
});

test("ssl_client without a newer build: its install_if ends, nothing needs it, so it is removed as apk does", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex((e) => e.name === "ssl_client" && e.version !== "1.36.1-r29"),
    targets: [{ name: "busybox", fixedVersion: "1.36.1-r32" }],
    world: world320,
  });
  assert.deepEqual(
    r.remove.map((x) => `${x.name} ${x.version}`),
    ["ssl_client 1.36.1-r29"],
  );
  assert.match(r.remove[0]!.why, /install_if busybox=1\.36\.1-r29 libssl3 no longer holds/);
  // The image's world naming it keeps it.
  const kept = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex((e) => e.name === "ssl_client" && e.version !== "1.36.1-r29"),
    targets: [{ name: "busybox", fixedVersion: "1.36.1-r32" }],
    world: [...world320, "ssl_client"],
  });
  assert.deepEqual(kept.remove, []);
});

test("update-all raises every package with a newer build, libraries before what needs them", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex(),
    targets: "all",
    world: world320,
  });
  const names = r.install.map((c) => c.entry.name);
  const newer = installed320.filter((p) => edge.find((e) => e.name === p.name)!.version !== p.version);
  assert.equal(newer.length, 12);
  assert.deepEqual([...names].sort(), newer.map((p) => p.name).sort());
  assert.ok(r.install.every((c) => c.entry.version === edge.find((e) => e.name === c.entry.name)!.version));
  const at = (n: string) => names.indexOf(n);
  for (const user of ["libcrypto3", "zlib", "busybox", "musl-utils"]) assert.ok(at("musl") < at(user), user);
  assert.ok(at("libcrypto3") < at("libssl3"));
  assert.ok(at("libssl3") < at("apk-tools") && at("zlib") < at("apk-tools"));
  assert.ok(at("alpine-baselayout-data") < at("alpine-baselayout"));
  assert.ok(at("busybox") < at("busybox-binsh"));
  assert.deepEqual([r.failed, r.remove, r.warnings], [[], [], []]);
});

test("nothing newer: an empty plan, no failure", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: [{ repository: MAIN, entries: installed320 as ApkIndexEntry[] }],
    targets: "all",
  });
  assert.deepEqual([r.install, r.failed, r.warnings], [[], [], []]);
});

test("refusals name the package and the cause: not installed, not offered, not new enough", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex((e) => e.name === "zlib"),
    targets: [
      { name: "curl", fixedVersion: "8.10.0-r0" },
      { name: "zlib", fixedVersion: "1.3.1-r2" },
      { name: "musl", fixedVersion: "1.2.6-r0" },
      { name: "libcrypto3", fixedVersion: "3.3.2-r1" },
    ],
  });
  assert.deepEqual(
    r.failed.map((f) => f.name),
    ["curl", "zlib", "musl"],
  );
  assert.match(r.failed[0]!.reason, /not installed in the image/);
  assert.match(r.failed[1]!.reason, /no repository of the image offers it/);
  assert.match(r.failed[2]!.reason, /offer it up to 1\.2\.5-r3, lower than the fixed 1\.2\.6-r0/);
  // The others still resolve.
  assert.deepEqual(
    r.install.map((c) => c.entry.name),
    ["libcrypto3", "libssl3"],
  );
});

test("an unsatisfiable dependency leaves its target out whole, the other targets go in", () => {
  // libssl3 r1 pins libcrypto3=3.3.2-r1, which this repository does not have.
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex((e) => e.name === "libcrypto3" && e.version === "3.3.2-r1"),
    targets: [
      { name: "libssl3", fixedVersion: "3.3.2-r1" },
      { name: "zlib", fixedVersion: "1.3.1-r2" },
    ],
  });
  assert.deepEqual(r.failed, [
    {
      name: "libssl3",
      reason:
        "needs libcrypto3=3.3.2-r1, but libcrypto3 3.3.2-r0 is installed and no repository offers a version that satisfies it",
    },
  ]);
  assert.deepEqual(summary(r), ["zlib 1.3.1-r1 -> 1.3.1-r2 (target)"]);
});

test("update-all keeps back what cannot be raised, with a warning, and raises the rest", () => {
  const r = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex((e) => e.name === "libcrypto3" && e.version === "3.3.2-r1"),
    targets: "all",
  });
  assert.deepEqual(r.failed, []);
  assert.ok(!r.install.some((c) => c.entry.name === "libssl3" || c.entry.name === "libcrypto3"));
  assert.ok(r.install.some((c) => c.entry.name === "zlib"));
  assert.equal(r.warnings.length, 1);
  assert.match(r.warnings[0]!, /^libssl3 is kept at its installed version, as apk upgrade would keep it: /);
});

const TINY_INSTALLED = entries(
  record({ P: "app", V: "1.0-r0", D: "so:libfoo.so.1" }) +
    record({ P: "libfoo", V: "1.0-r0", p: "so:libfoo.so.1=1" }) +
    record({ P: "tool", V: "2.0-r0", D: "!oldtool" }) +
    record({ P: "legacy", V: "1.0-r0" }),
);

test("new dependencies: by so: provide, by versioned pc: provide, by ~ (fuzzy) constraint", () => {
  const index = entries(
    record({ P: "app", V: "1.1-r0", D: "so:libfoo.so.2 pc:bar>=2 baz~3.1" }) +
      record({ P: "libfoo2", V: "2.0-r0", p: "so:libfoo.so.2=2" }) +
      record({ P: "bar-dev", V: "1.0-r0", p: "pc:bar=1.0" }) +
      record({ P: "bar2-dev", V: "2.1-r0", p: "pc:bar=2.1" }) +
      record({ P: "baz", V: "3.2-r0" }) +
      record({ P: "baz", V: "3.1.4-r1" }),
  );
  const r = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [{ repository: MAIN, entries: index }],
    targets: [{ name: "app", fixedVersion: "1.1-r0" }],
  });
  assert.deepEqual(summary(r), [
    "bar2-dev - -> 2.1-r0 (new-dependency)",
    "baz - -> 3.1.4-r1 (new-dependency)",
    "libfoo2 - -> 2.0-r0 (new-dependency)",
    "app 1.0-r0 -> 1.1-r0 (target)",
  ]);
});

test("unversioned provides: provider priority (k:) decides; without it apk does not choose", () => {
  const base = (k?: string) =>
    entries(
      record({ P: "app", V: "1.1-r0", D: "/bin/sh" }) +
        record({ P: "dash-binsh", V: "1-r0", p: "/bin/sh" }) +
        record({ P: "busybox-binsh", V: "1-r0", p: "/bin/sh", ...(k ? { k } : {}) }),
    );
  const chosen = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [{ repository: MAIN, entries: base("100") }],
    targets: [{ name: "app", fixedVersion: "1.1-r0" }],
  });
  assert.deepEqual(summary(chosen), [
    "busybox-binsh - -> 1-r0 (new-dependency)",
    "app 1.0-r0 -> 1.1-r0 (target)",
  ]);
  const refused = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [{ repository: MAIN, entries: base() }],
    targets: [{ name: "app", fixedVersion: "1.1-r0" }],
  });
  assert.deepEqual(refused.install, []);
  assert.match(
    refused.failed[0]!.reason,
    /needs \/bin\/sh, which dash-binsh, busybox-binsh provide; apk does not choose/,
  );
});

test("an upgrade that drops what an installed package needs is refused, naming both", () => {
  const r = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [
      { repository: MAIN, entries: entries(record({ P: "libfoo", V: "2.0-r0", p: "so:libfoo.so.2=2" })) },
    ],
    targets: [{ name: "libfoo", fixedVersion: "2.0-r0" }],
  });
  assert.deepEqual(r.install, []);
  assert.deepEqual(r.failed, [
    {
      name: "libfoo",
      reason:
        "installed app 1.0-r0 needs so:libfoo.so.1, which the upgrade no longer provides, and no repository offers a newer app",
    },
  ]);
});

test("conflicts: refused when the installed side stays, resolved when raising it ends the conflict", () => {
  const conflicting = entries(record({ P: "app", V: "1.1-r0", D: "!legacy<2" }));
  const refused = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [{ repository: MAIN, entries: conflicting }],
    targets: [{ name: "app", fixedVersion: "1.1-r0" }],
  });
  assert.deepEqual(refused.install, []);
  assert.deepEqual(refused.failed, [
    {
      name: "app",
      reason: "app 1.1-r0 conflicts with legacy 1.0-r0 (!legacy<2), and apk refuses to install both",
    },
  ]);
  const raised = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [
      { repository: MAIN, entries: [...conflicting, ...entries(record({ P: "legacy", V: "2.0-r0" }))] },
    ],
    targets: [{ name: "app", fixedVersion: "1.1-r0" }],
  });
  assert.deepEqual(summary(raised), [
    "app 1.0-r0 -> 1.1-r0 (target)",
    "legacy 1.0-r0 -> 2.0-r0 (reverse-dependency)",
  ]);
});

test("the first repository wins between equal versions; a newer one anywhere wins", () => {
  const a = entries(
    record({ P: "libfoo", V: "1.1-r0", p: "so:libfoo.so.1=1", C: "Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=" }),
  );
  const b = entries(
    record({ P: "libfoo", V: "1.1-r0", p: "so:libfoo.so.1=1", C: "Q1BBBBBBBBBBBBBBBBBBBBBBBBBBB=" }),
  );
  const r = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [
      { repository: MAIN, entries: a },
      { repository: COMMUNITY, entries: b },
    ],
    targets: [{ name: "libfoo", fixedVersion: "1.1-r0" }],
  });
  assert.equal(r.install[0]!.repository, MAIN);
  assert.equal(r.install[0]!.entry.checksum, "Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
  const newer = entries(record({ P: "libfoo", V: "1.2-r0", p: "so:libfoo.so.1=1" }));
  const r2 = resolveApkUpgrade({
    installed: TINY_INSTALLED,
    indexes: [
      { repository: MAIN, entries: a },
      { repository: COMMUNITY, entries: newer },
    ],
    targets: [{ name: "libfoo", fixedVersion: "1.1-r0" }],
  });
  assert.equal(r2.install[0]!.repository, COMMUNITY);
  assert.equal(r2.install[0]!.entry.version, "1.2-r0");
});

test("version constraints as apk reads them", () => {
  const dep = (op: string, version: string) => ({ name: "x", conflict: false, op, version }) as never;
  assert.ok(apkVersionSatisfies("1.2.3-r1", dep(">=", "1.2.3")));
  assert.ok(!apkVersionSatisfies("1.2.3-r1", dep("<", "1.2.3")));
  assert.ok(apkVersionSatisfies("1.2.3-r1", dep("~", "1.2")));
  assert.ok(!apkVersionSatisfies("1.3-r0", dep("~", "1.2")));
  assert.ok(apkVersionSatisfies("1.2-r0", dep("=", "1.2-r0")));
  assert.ok(!apkVersionSatisfies("1.2-r1", dep("=", "1.2-r0")));
  assert.ok(apkVersionSatisfies("1.0", dep("><", "Q1abc="), "Q1abc="));
  assert.ok(!apkVersionSatisfies("1.0", dep("><", "Q1abc="), "Q1xyz="));
});

test("a static image without /bin/sh gets no shell: a dependency the image already went without is left out, with a warning", () => {
  const staticImage = installed320.filter(
    (p) => !["busybox", "busybox-binsh", "ssl_client", "apk-tools"].includes(p.name),
  );
  const r = resolveApkUpgrade({
    installed: staticImage,
    indexes: labIndex(),
    targets: [{ name: "alpine-baselayout", fixedVersion: "3.6.8-r0" }],
  });
  assert.deepEqual(summary(r), [
    "alpine-baselayout-data 3.6.5-r0 -> 3.6.8-r0 (dependency)",
    "alpine-baselayout 3.6.5-r0 -> 3.6.8-r0 (target)",
  ]);
  assert.deepEqual(r.warnings, [
    "alpine-baselayout 3.6.8-r0 needs /bin/sh, which the image lacks already (its installed 3.6.5-r0 needed it too): not added, as the image was built without it",
  ]);
});

/** A rebuild of every package: each `-rN` one release up, in versions and in versioned relations. */
function rebuilt(entries: readonly ApkIndexEntry[]): ApkIndexEntry[] {
  const bump = (v: string) => v.replace(/-r(\d+)$/, (_m, n: string) => `-r${Number(n) + 1}`);
  const deps = (list: readonly ApkDependency[]) =>
    list.map((d) => (d.version === undefined || d.op === "><" ? d : { ...d, version: bump(d.version) }));
  return entries.map((e) => ({
    ...e,
    version: bump(e.version),
    depends: deps(e.depends),
    provides: deps(e.provides),
    installIf: deps(e.installIf),
  }));
}

test("update-all of a whole real index (Alpine 3.16 main, 4929 packages, all installed) against its rebuild", async () => {
  const fixture = join(import.meta.dirname, "../../../../../../shared/fixtures/apk-real/alpine-316-aarch64");
  const keyName = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub";
  const keys = await readRootfsFiles(
    minirootfs("3.20.3", "aarch64"),
    (p) => p === `usr/share/apk/keys/${keyName}`,
  );
  const index = await openApkIndex(
    readFileSync(join(fixture, "APKINDEX.tar.gz")),
    apkKeyring([{ name: keyName, pem: keys.get(`usr/share/apk/keys/${keyName}`)! }], "test"),
    "Alpine v3.16 main aarch64",
  );
  assert.equal(index.packages.length, 4929);
  const started = performance.now();
  const r = resolveApkUpgrade({
    installed: index.packages,
    indexes: [{ repository: MAIN, entries: rebuilt(index.packages) }],
    targets: "all",
  });
  const ms = performance.now() - started;
  assert.deepEqual(r.failed, [], "update-all keeps back, it does not fail");
  // Everything is raised, even alternatives that exclude each other (dropbear-scp and
  // openssh-client): they were installed so already, and the rebuild does not make it so.
  // tiny-cloud-aws needs nvme-cli, which is in community: the rebuild does not add what the
  // installed version went without.
  assert.deepEqual(r.warnings, [
    "tiny-cloud-aws 2.0.0-r1 needs nvme-cli, which the image lacks already (its installed 2.0.0-r0 needed it too): not added, as the image was built without it",
  ]);
  // All but six: aspell-ru 0.99f7-r0 and opensmtpd's 6.8.0p2-r4 are not valid apk versions, and
  // apk's order (by their valid prefix) sees no difference from their rebuilds either.
  const notRaised = index.packages.filter((p) => !r.install.some((c) => c.entry.name === p.name));
  assert.deepEqual(
    notRaised.map((p) => p.version),
    ["0.99f7-r0", ...Array(5).fill("6.8.0p2-r4")],
  );
  const by = new Map(r.install.map((c) => [c.entry.name, c]));
  assert.equal(by.get("busybox")!.entry.version, "1.35.0-r18");
  // Installation order: what a package needs (among the raised ones) comes first, cycles aside.
  const at = new Map(r.install.map((c, i) => [c.entry.name, i]));
  let before = 0;
  let edges = 0;
  for (const c of r.install)
    for (const d of c.entry.depends) {
      const dep = by.get(d.name);
      if (!dep || d.conflict || dep === c) continue;
      edges++;
      if (at.get(dep.entry.name)! < at.get(c.entry.name)!) before++;
    }
  assert.ok(before / edges > 0.99, `${before} of ${edges} dependencies ordered first`);
  assert.ok(ms < 20_000, `resolved in ${Math.round(ms)} ms`);
});

test("the image's world constraints hold: a pinned package is not raised past its pin", () => {
  const pinned = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex(),
    targets: [{ name: "zlib", fixedVersion: "1.3.1-r2" }],
    world: [...world320, "zlib<1.3.1-r2"],
  });
  assert.deepEqual(pinned.install, []);
  assert.deepEqual(pinned.failed, [
    {
      name: "zlib",
      reason:
        "the image's /etc/apk/world allows it only up to 1.3.1-r1 (zlib<1.3.1-r2), lower than the fixed 1.3.1-r2; change it in the image to allow the fix",
    },
  ]);
  // Update-all leaves it where the world keeps it and raises the rest; a tag (@edge) only says where from.
  const all = resolveApkUpgrade({
    installed: installed320,
    indexes: labIndex(),
    targets: "all",
    world: [...world320, "zlib@edge<1.3.1-r2", "!curl"],
  });
  assert.ok(!all.install.some((c) => c.entry.name === "zlib"));
  assert.equal(all.install.length, 11);
  assert.deepEqual(all.failed, []);
});

test("a tagged repository serves only the names the world pins to its tag", () => {
  const EDGE: ApkRepository = {
    ...COMMUNITY,
    url: "https://dl-cdn.alpinelinux.org/alpine/edge/main",
    tag: "edge",
  };
  const stable = entries(record({ P: "libfoo", V: "1.1-r0", p: "so:libfoo.so.1=1" }));
  const tagged = entries(record({ P: "libfoo", V: "1.3-r0", p: "so:libfoo.so.1=1" }));
  const indexes = [
    { repository: MAIN, entries: stable },
    { repository: EDGE, entries: tagged },
  ];
  const targets = [{ name: "libfoo", fixedVersion: "1.1-r0" }];
  // Not pinned: the tagged repository's newer build is not apk's to take.
  const unpinned = resolveApkUpgrade({ installed: TINY_INSTALLED, indexes, targets, world: ["libfoo"] });
  assert.equal(unpinned.install[0]!.entry.version, "1.1-r0");
  assert.equal(unpinned.install[0]!.repository, MAIN);
  // `libfoo@edge` in the world: the pinned name may come from edge.
  const pinned = resolveApkUpgrade({ installed: TINY_INSTALLED, indexes, targets, world: ["libfoo@edge"] });
  assert.equal(pinned.install[0]!.entry.version, "1.3-r0");
  assert.equal(pinned.install[0]!.repository, EDGE);
  // Pinned to another tag: edge's build stays out.
  const other = resolveApkUpgrade({ installed: TINY_INSTALLED, indexes, targets, world: ["libfoo@testing"] });
  assert.equal(other.install[0]!.entry.version, "1.1-r0");
});
