import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
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
