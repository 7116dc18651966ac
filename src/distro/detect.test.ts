import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { detectDistroInRoot, detectFromFiles, detectionWants } from "./detect.ts";

const WOLFI_OS_RELEASE =
  'ID=wolfi\nNAME="Wolfi"\nPRETTY_NAME="Wolfi"\nVERSION_ID="20230201"\nHOME_URL="https://wolfi.dev"\n';
const CHAINGUARD_OS_RELEASE =
  'ID=chainguard\nNAME="Chainguard"\nPRETTY_NAME="Chainguard"\nVERSION_ID="20230214"\nHOME_URL="https://chainguard.dev/"\n';

/** Two records as apk writes them (the file lists abridged). */
const WOLFI_DB = [
  "C:Q1yk2Jm3R8kRoQ7bXFyR8c5mIl5Aw=\nP:wolfi-baselayout\nV:20230201-r15\nA:x86_64\nS:6529\nI:28672\nT:baselayout data for Wolfi\no:wolfi-baselayout\nF:etc\nR:os-release\na:0:0:644\nZ:Q1aFqIjJtw6bzVoPsW6VIS2XMTLg0=\n",
  "P:glibc\nV:2.40-r3\nA:x86_64\nS:1969216\nI:6172672\nT:the GNU C library\nD:wolfi-baselayout\nF:usr\nF:usr/lib\nR:libc.so.6\nZ:Q1xmCf+5DNBzj6V+Z0Ls8rFQRVyKk=\n",
].join("\n");

/** A root directory holding these files (path → content), removed after the test. */
async function rootWith(t: { after(fn: () => Promise<void>): void }, files: Record<string, string>) {
  const root = await mkdtemp(join(tmpdir(), "suture-detect-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
  return root;
}

test("a Wolfi root: apk database and /usr/bin/apk (where Wolfi keeps it), its /etc/apk files kept for inspect", async (t) => {
  const root = await rootWith(t, {
    "etc/os-release": WOLFI_OS_RELEASE,
    "usr/bin/apk": "\x7fELF",
    "lib/apk/db/installed": WOLFI_DB,
    "etc/apk/arch": "x86_64\n",
    "etc/apk/world": "glibc wolfi-baselayout\n",
    "etc/apk/repositories": "https://packages.wolfi.dev/os\n",
    "etc/apk/repositories.d/local.list": "@local /srv/packages\n",
    "etc/apk/repositories.d/local.list.bak": "https://old.example/os\n",
  });
  const distro = await detectDistroInRoot(root);
  assert.equal(distro.osRelease?.id, "wolfi");
  assert.equal(distro.packageDb, "apk");
  assert.equal(distro.packageManager, "apk");
  assert.deepEqual(
    distro.installed,
    new Map([
      ["wolfi-baselayout", "20230201-r15"],
      ["glibc", "2.40-r3"],
    ]),
  );
  assert.deepEqual([...distro.files.keys()].filter((p) => p.startsWith("/etc/apk/")).sort(), [
    "/etc/apk/arch",
    "/etc/apk/repositories",
    "/etc/apk/repositories.d/local.list",
    "/etc/apk/world",
  ]);
});

test("a Chainguard static image: the apk database without apk is an apk image nothing in it can change", () => {
  const files = new Map([
    ["/etc/os-release", Buffer.from(CHAINGUARD_OS_RELEASE)],
    ["/lib/apk/db/installed", Buffer.from(WOLFI_DB)],
  ]);
  const distro = detectFromFiles(files);
  assert.equal(distro.osRelease?.id, "chainguard");
  assert.equal(distro.packageDb, "apk");
  assert.equal(distro.packageManager, "none");
  assert.equal(distro.installed?.get("glibc"), "2.40-r3");
});

test("apk's tool alone does not make a dpkg image an apk one", () => {
  const files = new Map([
    ["/etc/os-release", Buffer.from("ID=debian\nVERSION_ID=12\n")],
    [
      "/var/lib/dpkg/status",
      Buffer.from("Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n"),
    ],
    ["/sbin/apk", Buffer.from("\x7fELF")],
  ]);
  const distro = detectFromFiles(files);
  assert.equal(distro.packageDb, "dpkg");
  assert.equal(distro.packageManager, "none");
});

test("detection wants apk's configuration files and only the *.list files of repositories.d", () => {
  for (const path of [
    "/lib/apk/db/installed",
    "/sbin/apk",
    "/usr/bin/apk",
    "/etc/apk/arch",
    "/etc/apk/repositories",
    "/etc/apk/world",
    "/etc/apk/repositories.d/edge.list",
  ])
    assert.ok(detectionWants(path), path);
  for (const path of [
    "/etc/apk/repositories.d/edge.list.apk-new",
    "/etc/apk/repositories.d/sub/x.list",
    "/etc/apk/keys/alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub",
    "/lib/apk/db/scripts.tar",
  ])
    assert.ok(!detectionWants(path), path);
});

test("a damaged apk database in the patch sandbox's root is one INVALID_MANIFEST line, not a crash", async (t) => {
  const root = await rootWith(t, {
    "etc/os-release": "ID=alpine\nVERSION_ID=3.20.3\n",
    "lib/apk/db/installed": "P:musl\nV:not a version!\n\n",
  });
  await assert.rejects(detectDistroInRoot(root), (e: unknown) => {
    assert.ok(isSutureError(e, "INVALID_MANIFEST"), String(e));
    assert.match(e.message, /\/lib\/apk\/db\/installed/);
    assert.doesNotMatch(e.message, /\n/);
    return true;
  });
});

// rpm images: the database in each backend, read by distro/rpm/installed.ts.
const RPM_FIXTURES = join(import.meta.dirname, "../../../shared/fixtures/rpmdb");
const MARINER_DB = readFileSync(join(RPM_FIXTURES, "cbl-mariner-2.0/rpmdb.sqlite"));
const SLE_DB = readFileSync(join(RPM_FIXTURES, "sle15-bci/Packages.db"));
const ELF = Buffer.from("\x7fELF\x02\x01\x01");
const PY = Buffer.from("#!/usr/bin/python3 -s\nimport dnf.cli.main\n");

test("a CBL-Mariner root: rpmdb.sqlite, tdnf, versions as Trivy reports them (epoch:version-release)", () => {
  const distro = detectFromFiles(
    new Map([
      ["/etc/os-release", Buffer.from('ID=mariner\nVERSION_ID="2.0"\nNAME="Common Base Linux Mariner"\n')],
      ["/var/lib/rpm/rpmdb.sqlite", MARINER_DB],
      ["/usr/bin/tdnf", ELF],
      ["/usr/bin/rpm", ELF],
    ]),
  );
  assert.equal(distro.packageDb, "rpm");
  assert.equal(distro.packageManager, "tdnf");
  assert.deepEqual(distro.rpm?.database, { path: "/var/lib/rpm/rpmdb.sqlite", backend: "sqlite" });
  assert.equal(distro.rpm?.packages.length, 129);
  assert.equal(distro.installed?.size, 129);
  assert.equal(distro.installed?.get("glibc"), "2.34-2.cm2");
  // An epoch is part of the installed version; 0 or none is left out.
  assert.equal(distro.installed?.get("ca-certificates-base"), "1:2.0.0-1.cm2");
});

test("a SUSE root: Packages.db under /usr/lib/sysimage/rpm (reached through /var/lib/rpm's symlink), zypper", async (t) => {
  const root = await rootWith(t, { "usr/bin/zypper": "\x7fELF", "usr/bin/rpm": "\x7fELF" });
  await mkdir(join(root, "usr/lib/sysimage/rpm"), { recursive: true });
  await writeFile(join(root, "usr/lib/sysimage/rpm/Packages.db"), SLE_DB);
  await mkdir(join(root, "var/lib"), { recursive: true });
  await symlink("../../usr/lib/sysimage/rpm", join(root, "var/lib/rpm"));
  const distro = await detectDistroInRoot(root);
  assert.equal(distro.packageDb, "rpm");
  assert.equal(distro.packageManager, "zypper");
  assert.equal(distro.rpm?.database.backend, "ndb");
  assert.equal(distro.installed?.get("bash"), "4.4-19.6.1");
  assert.equal(distro.installed?.size, 35);
});

test("the rpm front end an image has: dnf 4, dnf5 (also under dnf's name), microdnf, yum, tdnf, zypper, rpm, none", () => {
  const db: [string, Buffer] = ["/var/lib/rpm/rpmdb.sqlite", MARINER_DB];
  const manager = (...tools: [string, Buffer][]) => detectFromFiles(new Map([db, ...tools])).packageManager;
  assert.equal(manager(["/usr/bin/dnf", PY], ["/usr/bin/yum", PY], ["/usr/bin/rpm", ELF]), "dnf");
  assert.equal(manager(["/usr/bin/dnf", PY], ["/usr/bin/dnf5", ELF]), "dnf");
  // Fedora 41+: /usr/bin/dnf is a symlink to dnf5 (detection sees the file it leads to).
  assert.equal(manager(["/usr/bin/dnf", ELF], ["/usr/bin/dnf5", ELF]), "dnf5");
  assert.equal(manager(["/usr/bin/dnf5", ELF]), "dnf5");
  assert.equal(manager(["/usr/bin/microdnf", ELF], ["/usr/bin/rpm", ELF]), "microdnf");
  assert.equal(manager(["/usr/bin/yum", PY], ["/usr/bin/rpm", ELF]), "yum");
  assert.equal(manager(["/usr/bin/tdnf", ELF], ["/usr/bin/dnf", ELF]), "tdnf");
  assert.equal(manager(["/usr/bin/zypper", ELF], ["/usr/bin/rpm", ELF]), "zypper");
  assert.equal(manager(["/usr/bin/rpm", ELF]), "rpm");
  assert.equal(manager(), "none");
  // rpm's tools without an rpm database do not make an image an rpm one.
  const noDb = detectFromFiles(
    new Map([
      ["/usr/bin/rpm", ELF],
      ["/usr/bin/dnf", PY],
    ]),
  );
  assert.deepEqual([noDb.packageDb, noDb.packageManager, noDb.rpm], ["none", "none", undefined]);
});

test("an Azure Linux distroless root: only the rpm manifest, no package tool", () => {
  const manifest =
    "bash\t5.1.8-4.cm2\t1700000000\t1690000000\tMicrosoft Corporation\t(none)\t7000000\tx86_64\t0\tbash-5.1.8-4.cm2.src.rpm\n" +
    "tar\t1.34-2.cm2\t1700000000\t1690000000\tMicrosoft Corporation\t2\t3000000\tx86_64\t2\ttar-1.34-2.cm2.src.rpm\n";
  const distro = detectFromFiles(
    new Map([["/var/lib/rpmmanifest/container-manifest-2", Buffer.from(manifest)]]),
  );
  assert.equal(distro.packageDb, "rpm");
  assert.equal(distro.packageManager, "none");
  assert.equal(distro.rpm?.database.backend, "manifest");
  assert.deepEqual(Object.fromEntries(distro.installed!), { bash: "5.1.8-4.cm2", tar: "2:1.34-2.cm2" });
});

test("a damaged rpm database is one INVALID_MANIFEST line naming it", () => {
  const damaged = Buffer.from(SLE_DB);
  damaged[damaged.length - 40]! ^= 0xff;
  assert.throws(
    () => detectFromFiles(new Map([["/usr/lib/sysimage/rpm/Packages.db", damaged]])),
    (e) =>
      isSutureError(e, "INVALID_MANIFEST") &&
      /^the rpm database \/usr\/lib\/sysimage\/rpm\/Packages\.db is damaged: the blob of package \d+ fails its adler32 checksum; .*rpmdb --rebuilddb/.test(
        e.message,
      ) &&
      !e.message.includes("\n"),
  );
});

test("detection wants every rpm database file, sqlite's write-ahead log and the manifest", () => {
  for (const path of [
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite-wal",
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite-wal",
    "/usr/lib/sysimage/rpm/Packages",
    "/usr/lib/sysimage/rpm/Packages.db",
    "/var/lib/rpmmanifest/container-manifest-2",
    "/usr/bin/dnf5",
    "/usr/bin/dnf-3",
    "/usr/bin/microdnf",
  ]) {
    assert.ok(detectionWants(path), path);
  }
  for (const path of ["/var/lib/rpm/Name", "/var/lib/rpm/rpmdb.sqlite-shm", "/var/lib/rpm/.rpm.lock"]) {
    assert.ok(!detectionWants(path), path);
  }
});
