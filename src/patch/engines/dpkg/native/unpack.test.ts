/**
 * The unpacker against an image and packages that try to make it write beside the root: paths of
 * the image's own records (diversions, file lists) and symlinks that name the root itself, and a
 * package whose trigger names climb out of triggers/. Each is refused before anything lands
 * outside `root`, and the package's files are not installed.
 */
import assert from "node:assert/strict";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildDeb, withDataEntries } from "../../../../../test/lab/deb.ts";
import { readDpkgDatabase } from "../../../../distro/dpkg/database.ts";
import { isSutureError } from "../../../../errors/errors.ts";
import { unpackDeb } from "./unpack.ts";

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-unpack-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

/** A real .deb (dpkg-deb) shipping /usr/bin/demo and the conffile /etc/demo.conf. */
function demoDeb(name: string, controlFiles: Record<string, string> = {}): Promise<string> {
  return buildDeb(
    join(work, `${name}.deb`),
    "Package: demo\nVersion: 2\nArchitecture: all\nMaintainer: T <t@example.org>\nDescription: demo\n",
    [
      { path: "usr/bin/demo", content: "v2\n" },
      { path: "etc/demo.conf", content: "a=2\n" },
    ],
    [
      { path: "conffiles", content: "/etc/demo.conf\n", mode: 0o644 },
      ...Object.entries(controlFiles).map(([path, content]) => ({ path, content, mode: 0o644 })),
    ],
  );
}

/** `<work>/<name>/root`, a classic database with demo 1 installed; the parent holds only root. */
function imageRoot(name: string, diversions = ""): { root: string; parent: string } {
  const parent = join(work, name);
  const root = join(parent, "root");
  const dpkg = join(root, "var/lib/dpkg");
  mkdirSync(join(dpkg, "info"), { recursive: true });
  mkdirSync(join(root, "etc"), { recursive: true });
  writeFileSync(
    join(dpkg, "status"),
    "Package: demo\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n",
  );
  writeFileSync(join(dpkg, "info/demo.list"), "/.\n/usr\n/usr/bin\n/usr/bin/demo\n");
  if (diversions) writeFileSync(join(dpkg, "diversions"), diversions);
  return { root, parent };
}

test("a diversion to the image's root directory is refused; nothing is written beside the root", async () => {
  const { root, parent } = imageRoot("divert-root", "/usr/bin/demo\n/..\n:\n");
  await assert.rejects(
    unpackDeb(root, await demoDeb("divert"), await readDpkgDatabase(root)),
    (e: unknown) => isSutureError(e, "UNSAFE_LAYER") && /"\/\.\." names its root directory/.test(e.message),
  );
  assert.deepEqual(readdirSync(parent), ["root"]);
  assert.deepEqual(
    readdirSync(join(work)).filter((n) => n.endsWith(".dpkg-new")),
    [],
  );
});

test("a conffile that is a symlink to / in the image is refused; nothing is written beside the root", async () => {
  const { root, parent } = imageRoot("conffile-root");
  symlinkSync("/", join(root, "etc/demo.conf"));
  await assert.rejects(
    unpackDeb(root, await demoDeb("conffile"), await readDpkgDatabase(root)),
    (e: unknown) =>
      isSutureError(e, "UNSAFE_LAYER") &&
      /\/etc\/demo\.conf is a symlink to the image's root/.test(e.message),
  );
  assert.deepEqual(readdirSync(parent), ["root"], "no root.dpkg-new beside the root");
  assert.equal(existsSync(join(root, "usr/bin/demo.dpkg-new")), false, "staged files are cleaned up");
});

test("paths in the image's file list that climb with '..' stay inside the root when the old version's files go", async () => {
  const { root, parent } = imageRoot("list-climb");
  writeFileSync(join(parent, "sentinel"), "outside\n");
  writeFileSync(
    join(root, "var/lib/dpkg/info/demo.list"),
    "/.\n/usr\n/usr/bin\n/usr/bin/demo\n/..\n/../sentinel\n/usr/../../sentinel\n",
  );
  const summary = await unpackDeb(root, await demoDeb("list"), await readDpkgDatabase(root), {
    state: "installed",
  });
  assert.equal(existsSync(join(parent, "sentinel")), true, "the file beside the root is untouched");
  assert.deepEqual(summary.removed, []);
});

test("a trigger name that climbs out of triggers/ is the package's error, raised before any file is unpacked", async () => {
  const { root } = imageRoot("trigger");
  mkdirSync(join(root, "var/lib/dpkg/triggers"), { recursive: true });
  await assert.rejects(
    unpackDeb(
      root,
      await demoDeb("trigger", { triggers: "activate-noawait ../../../../etc\n" }),
      await readDpkgDatabase(root),
    ),
    (e: unknown) =>
      isSutureError(e, "INVALID_ARCHIVE") &&
      /^package demo 2 \(.*trigger\.deb\) activates trigger "\.\.\/\.\.\/\.\.\/\.\.\/etc", which is neither a file path nor a plain trigger name/.test(
        e.message,
      ),
  );
  assert.equal(existsSync(join(root, "usr/bin/demo")), false);
});

test("a data.tar member with a newline in its name cannot claim another path in the file list", async () => {
  const { root } = imageRoot("newline");
  // dpkg-deb refuses such a name; the data member is replaced by one no honest builder writes.
  const deb = await withDataEntries(await demoDeb("newline"), [
    { path: "./usr/bin/x\n/etc/passwd", type: "file", content: "x" },
  ]);
  await assert.rejects(
    unpackDeb(root, deb, await readDpkgDatabase(root)),
    (e: unknown) =>
      isSutureError(e, "INVALID_ARCHIVE") &&
      /^package demo 2 .* has a data\.tar member "\.\/usr\/bin\/x\\n\/etc\/passwd" with a newline/.test(
        e.message,
      ),
  );
  assert.equal(existsSync(join(root, "usr/bin")), false, "nothing unpacked");
});

test("a .deb that is not the package it was resolved as is UNTRUSTED before anything is written", async () => {
  const { root } = imageRoot("identity");
  await assert.rejects(
    unpackDeb(root, await demoDeb("identity"), await readDpkgDatabase(root), {
      expected: { name: "demo", version: "3", architecture: "all" },
    }),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") && /says Version "2" where its signed index says "3"/.test(e.message),
  );
  assert.equal(existsSync(join(root, "usr/bin/demo")), false);
});

test("a .dpkg-new the image left beside a package file (a file, or a symlink out of the root) is replaced, never followed", async () => {
  const { root, parent } = imageRoot("leftover-staged");
  mkdirSync(join(root, "usr/bin"), { recursive: true });
  writeFileSync(join(root, "usr/bin/demo"), "v1\n");
  writeFileSync(join(root, "usr/bin/demo.dpkg-new"), "an interrupted run's\n");
  const outside = join(parent, "outside");
  symlinkSync(outside, join(root, "etc/demo.conf.dpkg-new"));
  await unpackDeb(root, await demoDeb("leftover"), await readDpkgDatabase(root));
  assert.equal(readFileSync(join(root, "usr/bin/demo"), "utf8"), "v2\n");
  assert.equal(readFileSync(join(root, "etc/demo.conf"), "utf8"), "a=2\n");
  assert.equal(existsSync(join(root, "usr/bin/demo.dpkg-new")), false);
  assert.equal(existsSync(join(root, "etc/demo.conf.dpkg-new")), false);
  assert.deepEqual(readdirSync(parent), ["root"], "nothing written through the link");
});

test("a leftover .dpkg-new beside a member the upgrade leaves as it is goes too, as with dpkg; a directory there is removed whole", async () => {
  const { root } = imageRoot("leftover-unchanged");
  mkdirSync(join(root, "usr/bin"), { recursive: true });
  writeFileSync(join(root, "usr/bin/demo"), "v2\n", { mode: 0o644 });
  mkdirSync(join(root, "usr/bin/demo.dpkg-new/inner"), { recursive: true });
  writeFileSync(join(root, "usr/bin/demo.dpkg-new/inner/file"), "left\n");
  writeFileSync(join(root, "usr/bin/other.dpkg-new"), "not the package's member\n");
  const summary = await unpackDeb(root, await demoDeb("leftover-unchanged"), await readDpkgDatabase(root));
  assert.equal(summary.filesUnchanged >= 1, true, "usr/bin/demo was identical");
  assert.equal(readFileSync(join(root, "usr/bin/demo"), "utf8"), "v2\n");
  assert.equal(existsSync(join(root, "usr/bin/demo.dpkg-new")), false);
  assert.equal(existsSync(join(root, "usr/bin/other.dpkg-new")), true, "only the members' own are removed");
});
