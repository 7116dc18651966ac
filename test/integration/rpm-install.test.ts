/**
 * The native rpm installer judged by the real rpm (Debian's rpm 4.18): the same packages, built
 * with rpmbuild, are installed into two copies of one root, once by `rpm --root R -U` and once by
 * installRpmFiles, and the trees are compared (types, modes, owners, contents, link targets,
 * mtimes, hard links, capabilities, .rpmnew/.rpmsave/.rpmorig), with the file states rpm records.
 * Scriptlets and triggers run with busybox's sh of an Alpine minirootfs in runc, and their order
 * and arguments are compared with what rpm itself runs in the same root.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { getAttributeSync } from "@napi-rs/xattr";
import { readInstalledRpmsInRoot } from "../../src/distro/rpm/installed.ts";
import type { RpmFileState } from "../../src/distro/rpm/installed-header.ts";
import { openRpm } from "../../src/distro/rpm/package.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import type { EngineSandbox } from "../../src/patch/engines/engine.ts";
import { installRpmPackages, type RpmInstallItem } from "../../src/patch/engines/rpm/native/install.ts";
import { runInSandbox } from "../../src/sandbox/runtime.ts";
import { minirootfs } from "../lab/alpine-rootfs.ts";
import { needs, requiring } from "../lab/requirements.ts";
import { buildRpm, type RpmTestPackage, tool } from "../lab/rpm.ts";

const { before, after, describe, test } = await requiring("root", "tool:rpm", "tool:rpmbuild");

let work: string;
let pkgDir: string;

before(() => {
  // On a real disk (runc's bundles and the roots live here), never tmpfs.
  work = mkdtempSync("/var/tmp/suture-rpm-install-");
  pkgDir = join(work, "packages");
  mkdirSync(pkgDir);
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const PASSWD =
  "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\nfoo:x:321:321::/:/sbin/nologin\n";
const GROUP = "root:x:0:\nnobody:x:65534:\nfoo:x:321:\n";

/** A root with only what rpm needs: users and groups, and its database directory. */
function bareRoot(name: string): string {
  const root = join(work, name);
  mkdirSync(join(root, "etc"), { recursive: true });
  mkdirSync(join(root, "var/lib/rpm"), { recursive: true });
  writeFileSync(join(root, "etc/passwd"), PASSWD);
  writeFileSync(join(root, "etc/group"), GROUP);
  return root;
}

/** Alpine's minirootfs (busybox sh) with rpm's database directory: scriptlets can run in it. */
function shellRoot(name: string): string {
  const root = join(work, name);
  mkdirSync(root);
  execFileSync("tar", ["xzf", minirootfs("3.20.3", "x86_64"), "--numeric-owner", "-p", "-C", root]);
  mkdirSync(join(root, "var/lib/rpm"), { recursive: true });
  return root;
}

function copyRoot(from: string, name: string): string {
  const to = join(work, name);
  execFileSync("cp", ["-a", "--", from, to]);
  return to;
}

async function rpmIn(root: string, ...args: string[]): Promise<string> {
  return tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "--nosignature", "--nodeps", ...args]);
}

/** `rpm -q`'s file states of `name`, one `STATE PATH` a line. */
async function rpmStates(root: string, name: string): Promise<string> {
  return tool("rpm", [
    "--root",
    root,
    "--dbpath",
    "/var/lib/rpm",
    "-q",
    "--qf",
    "[%{FILESTATES:fstate} %{FILENAMES}\\n]",
    name,
  ]);
}

/** `rpm -Va` in `root`: what rpm finds changed since the packages were installed (it exits 1 then). */
async function rpmVerifyAll(root: string): Promise<string> {
  try {
    return await tool("rpm", [
      "--root",
      root,
      "--dbpath",
      "/var/lib/rpm",
      "-Va",
      "--nodeps",
      "--nosignature",
    ]);
  } catch (e) {
    return (e as { stdout?: string }).stdout ?? String(e);
  }
}

/** `rpm -qa` in `root`, sorted, with each package's file states. */
async function rpmInventory(root: string): Promise<string> {
  const qa = await tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NEVRA}\\n"]);
  const out: string[] = [];
  for (const nevra of qa.trim().split("\n").sort()) out.push(nevra, await rpmStates(root, nevra));
  return out.join("\n");
}

/** A sandbox whose run() fails the test: no script is expected. */
function noScripts(root: string): EngineSandbox {
  return {
    mergedDir: root,
    run: async (args) => {
      throw new Error(`no script was expected, but ${args.join(" ")} was run`);
    },
  };
}

function runcSandbox(root: string): EngineSandbox & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    mergedDir: root,
    calls,
    run: async (args, options = {}) => {
      calls.push(args);
      return runInSandbox({
        rootfs: root,
        args,
        ...(options.env ? { env: options.env } : {}),
        ...(options.mounts ? { mounts: options.mounts } : {}),
        timeoutMs: options.timeoutMs ?? 120_000,
        bundleParent: work,
      });
    },
  };
}

const built = new Map<string, string>();
async function rpmOf(pkg: RpmTestPackage): Promise<string> {
  const key = `${pkg.name}-${pkg.version}-${pkg.release}`;
  let path = built.get(key);
  if (!path) {
    path = await buildRpm(pkgDir, pkg);
    built.set(key, path);
  }
  return path;
}

/**
 * Install `rpms` into `root` with suture, each replacing the installed package of its name (and
 * erasing `obsoleted` names), as the native engine will call it; the database step is left to
 * the test (wt-rpmdbwrite's writer).
 */
async function sutureInstall(
  root: string,
  rpms: readonly string[],
  options: { sandbox?: EngineSandbox; runScripts?: boolean; obsoleted?: string[] } = {},
) {
  const db = await readInstalledRpmsInRoot(root);
  assert.ok(db, "the root has an rpm database");
  const items: RpmInstallItem[] = [];
  for (const file of rpms) {
    const pkg = await openRpm(file);
    const replaces = db.packages.find((p) => p.nevra.name === pkg.nevra.name);
    items.push({ pkg, file, repository: "test", ...(replaces ? { replaces } : {}) });
  }
  return installRpmPackages(items, {
    sandbox: options.sandbox ?? noScripts(root),
    database: db.location,
    installed: db.packages,
    obsoleted: db.packages.filter((p) => options.obsoleted?.includes(p.nevra.name)),
    runScripts: options.runScripts ?? true,
    progress: () => {},
  });
}

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  sha?: string;
  link?: string;
  caps?: string;
  /** Other names of the same inode. */
  links?: string;
}

/** Every path below `root` but rpm's database, as the comparison needs it. */
function tree(
  root: string,
  skip: (path: string) => boolean = (p) => p.startsWith("/var/lib/rpm"),
): Map<string, Node> {
  const out = new Map<string, Node>();
  const inodes = new Map<number, string[]>();
  const walk = (dir: string) => {
    for (const name of readdirSync(join(root, dir)).sort()) {
      const path = `${dir}/${name}`;
      if (skip(path)) continue;
      const st = lstatSync(join(root, path));
      const node: Node = { type: "other", mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) node.type = "dir";
      else if (st.isSymbolicLink()) {
        node.type = "symlink";
        node.link = readlinkSync(join(root, path));
        node.mtime = Math.floor(st.mtimeMs / 1000);
        node.mode = 0;
      } else if (st.isFile()) {
        node.type = "file";
        node.sha = createHash("sha256")
          .update(readFileSync(join(root, path)))
          .digest("hex");
        node.mtime = Math.floor(st.mtimeMs / 1000);
        try {
          const caps = getAttributeSync(join(root, path), "security.capability");
          if (caps) node.caps = Buffer.from(caps).toString("hex");
        } catch {
          // none
        }
        if (st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), path]);
      }
      out.set(path, node);
      if (st.isDirectory()) walk(path);
    }
  };
  walk("");
  for (const names of inodes.values()) for (const n of names) out.get(n)!.links = names.join(" ");
  return out;
}

function assertSameTrees(ours: Map<string, Node>, rpms: Map<string, Node>): void {
  const diffs: string[] = [];
  for (const path of new Set([...ours.keys(), ...rpms.keys()])) {
    const a = ours.get(path);
    const b = rpms.get(path);
    if (JSON.stringify(a) !== JSON.stringify(b))
      diffs.push(`${path}: suture ${JSON.stringify(a)} rpm ${JSON.stringify(b)}`);
  }
  assert.deepEqual(diffs, [], "suture's tree differs from rpm's");
}

const RPM_STATE_NAMES: Record<RpmFileState, string> = {
  normal: "normal",
  replaced: "replaced",
  notinstalled: "not installed",
  netshared: "net shared",
  wrongcolor: "wrong color",
};

function v1(): RpmTestPackage {
  return {
    name: "foo",
    version: "1.0",
    release: "1",
    files: [
      { path: "/etc/foo/noreplace.conf", content: "v1 noreplace\n", config: true },
      { path: "/etc/foo/plain.conf", content: "v1 plain\n", configPlain: true },
      { path: "/etc/foo/same.conf", content: "same\n", config: true },
      { path: "/etc/foo/untouched.conf", content: "v1 untouched\n", config: true },
      { path: "/etc/foo/gone.conf", content: "v1 gone\n", configPlain: true },
      { path: "/etc/foo/no-longer-config", content: "v1 was config\n", configPlain: true },
      { path: "/etc/foo/deleted.conf", content: "v1 deleted\n", config: true },
      { path: "/etc/foo/link.conf", symlinkTo: "noreplace.conf", config: true },
      { path: "/etc/foo/becomes-config", content: "v1 plain file\n" },
      { path: "/usr/bin/foo", content: "#!/bin/sh\necho v1\n", mode: "0755" },
      { path: "/usr/lib/foo", directory: true, mode: "0750" },
      { path: "/usr/lib/foo/a", content: "A1\n" },
      { path: "/usr/lib/foo/b", hardlinkTo: "/usr/lib/foo/a" },
      { path: "/usr/lib/foo/link", symlinkTo: "a" },
      { path: "/usr/share/foo/old-only", content: "old\n" },
      { path: "/usr/share/foo/owned", content: "owned v1\n", user: "nobody", group: "nobody" },
      { path: "/var/log/foo.log", ghost: true },
      { path: "/usr/share/doc/foo/README", content: "readme v1\n", doc: true },
    ],
  };
}

function v2(): RpmTestPackage {
  return {
    name: "foo",
    version: "2.0",
    release: "1",
    files: [
      { path: "/etc/foo/noreplace.conf", content: "v2 noreplace\n", config: true },
      { path: "/etc/foo/plain.conf", content: "v2 plain\n", configPlain: true },
      { path: "/etc/foo/same.conf", content: "same\n", config: true },
      { path: "/etc/foo/untouched.conf", content: "v2 untouched\n", config: true },
      { path: "/etc/foo/fresh.conf", content: "fresh\n", config: true },
      { path: "/etc/foo/fresh-plain.conf", content: "fresh plain\n", configPlain: true },
      { path: "/etc/foo/no-longer-config", content: "v2 not config\n" },
      { path: "/etc/foo/deleted.conf", content: "v2 deleted\n", config: true },
      { path: "/etc/foo/link.conf", symlinkTo: "same.conf", config: true },
      { path: "/etc/foo/becomes-config", content: "v2 config\n", config: true },
      {
        path: "/usr/bin/foo",
        content: "#!/bin/sh\necho v2\n",
        mode: "0755",
        caps: "cap_net_raw,cap_net_bind_service=ep",
      },
      { path: "/usr/lib/foo", directory: true, mode: "0750" },
      { path: "/usr/lib/foo/a", content: "A2\n" },
      { path: "/usr/lib/foo/b", hardlinkTo: "/usr/lib/foo/a" },
      { path: "/usr/lib/foo/c", hardlinkTo: "/usr/lib/foo/a" },
      { path: "/usr/lib/foo/link", symlinkTo: "b" },
      { path: "/usr/lib/foo/new-file", content: "new\n", mode: "4755", user: "foo", group: "foo" },
      { path: "/usr/share/foo/owned", content: "owned v2\n", user: "nobody", group: "nobody" },
      { path: "/usr/share/foo/unknown-owner", content: "x\n", user: "nosuchuser", group: "nosuchgroup" },
      { path: "/var/log/foo.log", ghost: true },
      { path: "/usr/share/doc/foo/README", content: "readme v2\n", doc: true },
      { path: "/usr/share/doc/foo/NEWS", content: "news v2\n", doc: true },
      { path: "/usr/share/locale/de/foo.mo", content: "de\n", lang: "de" },
      { path: "/usr/share/locale/fr/foo.mo", content: "fr\n", lang: "fr" },
    ],
  };
}

function editConfigs(root: string): void {
  writeFileSync(join(root, "etc/foo/noreplace.conf"), "edited noreplace\n");
  writeFileSync(join(root, "etc/foo/plain.conf"), "edited plain\n");
  writeFileSync(join(root, "etc/foo/same.conf"), "edited same\n");
  writeFileSync(join(root, "etc/foo/gone.conf"), "edited gone\n");
  writeFileSync(join(root, "etc/foo/no-longer-config"), "edited\n");
  rmSync(join(root, "etc/foo/deleted.conf"));
  rmSync(join(root, "etc/foo/link.conf"));
  symlinkSync("plain.conf", join(root, "etc/foo/link.conf"));
  writeFileSync(join(root, "etc/foo/becomes-config"), "edited plain file\n");
  // Config files v2 adds, already in the image and not owned by anything.
  writeFileSync(join(root, "etc/foo/fresh.conf"), "the image's own\n");
  writeFileSync(join(root, "etc/foo/fresh-plain.conf"), "the image's own plain\n");
}

describe("the native rpm installer against rpm -U", () => {
  test("an upgrade: config files kept, saved and replaced, files removed, links, owners, capabilities and file states as rpm leaves them", async () => {
    const base = bareRoot("upgrade-base");
    await rpmIn(base, "-U", await rpmOf(v1()));
    editConfigs(base);
    const ours = copyRoot(base, "upgrade-suture");
    const theirs = copyRoot(base, "upgrade-rpm");
    await rpmIn(theirs, "-U", await rpmOf(v2()));
    const outcome = await sutureInstall(ours, [await rpmOf(v2())]);

    assertSameTrees(tree(ours), tree(theirs));
    assert.equal(readFileSync(join(ours, "etc/foo/noreplace.conf"), "utf8"), "edited noreplace\n");
    assert.equal(readFileSync(join(ours, "etc/foo/noreplace.conf.rpmnew"), "utf8"), "v2 noreplace\n");
    assert.equal(readFileSync(join(ours, "etc/foo/plain.conf.rpmsave"), "utf8"), "edited plain\n");
    assert.equal(readFileSync(join(ours, "etc/foo/gone.conf.rpmsave"), "utf8"), "edited gone\n");
    assert.equal(readFileSync(join(ours, "etc/foo/no-longer-config.rpmsave"), "utf8"), "edited\n");
    assert.equal(readFileSync(join(ours, "etc/foo/deleted.conf"), "utf8"), "v2 deleted\n");
    assert.equal(readlinkSync(join(ours, "etc/foo/link.conf")), "plain.conf");
    assert.equal(readlinkSync(join(ours, "etc/foo/link.conf.rpmnew")), "same.conf");
    assert.equal(readFileSync(join(ours, "etc/foo/becomes-config"), "utf8"), "edited plain file\n");
    assert.equal(existsSync(join(ours, "usr/share/foo/old-only")), false);
    assert.equal(existsSync(join(ours, "var/log/foo.log")), false);
    assert.ok(
      outcome.warnings.some((w) =>
        w.includes("/etc/foo/noreplace.conf created as /etc/foo/noreplace.conf.rpmnew"),
      ),
    );
    assert.ok(outcome.warnings.some((w) => w.includes('user "nosuchuser" does not exist')));

    // The image's own rpm sees the same packages, file states and changes in both databases.
    assert.equal(await rpmInventory(ours), await rpmInventory(theirs));
    assert.equal(await rpmVerifyAll(ours), await rpmVerifyAll(theirs));
    assert.match(await rpmInventory(ours), /foo-2\.0-1\.noarch/);
    assert.ok(tree(ours).get("/usr/bin/foo")?.caps, "the capabilities are set (security.capability)");

    // The file states rpm recorded are the ones suture hands to the database writer.
    const [states] = [...outcome.fileStates.values()];
    const recorded = (await rpmStates(theirs, "foo")).trim().split("\n");
    const pkg = await openRpm(await rpmOf(v2()));
    assert.deepEqual(
      pkg.files.map((f, i) => `${RPM_STATE_NAMES[states![i]!]} ${f.path}`),
      recorded,
    );
  });

  test("docs and languages left out as the image's rpm macros say, recorded as not installed", async () => {
    const base = bareRoot("nodocs-base");
    await rpmIn(base, "-U", await rpmOf(v1()));
    mkdirSync(join(base, "etc/rpm"), { recursive: true });
    writeFileSync(join(base, "etc/rpm/macros.image"), "%_excludedocs 1\n%_install_langs en_US:de_DE\n");
    const ours = copyRoot(base, "nodocs-suture");
    const theirs = copyRoot(base, "nodocs-rpm");
    // rpm --root reads the host's macros, not the root's: the same settings on its command line.
    await rpmIn(theirs, "--define", "_install_langs en_US:de_DE", "--excludedocs", "-U", await rpmOf(v2()));
    const outcome = await sutureInstall(ours, [await rpmOf(v2())]);
    assertSameTrees(tree(ours), tree(theirs));
    assert.equal(existsSync(join(ours, "usr/share/doc/foo/NEWS")), false);
    assert.equal(existsSync(join(ours, "usr/share/locale/fr/foo.mo")), false);
    assert.equal(existsSync(join(ours, "usr/share/locale/de/foo.mo")), true);
    const [states] = [...outcome.fileStates.values()];
    const recorded = (await rpmStates(theirs, "foo")).trim().split("\n");
    const pkg = await openRpm(await rpmOf(v2()));
    assert.deepEqual(
      pkg.files.map((f, i) => `${RPM_STATE_NAMES[states![i]!]} ${f.path}`),
      recorded,
    );
  });

  test("a fresh install over the image's own config files keeps them as rpm does (.rpmnew, .rpmorig)", async () => {
    const base = bareRoot("fresh-base");
    mkdirSync(join(base, "etc/foo"), { recursive: true });
    writeFileSync(join(base, "etc/foo/noreplace.conf"), "the image's own\n");
    writeFileSync(join(base, "etc/foo/plain.conf"), "the image's own plain\n");
    await tool("rpm", ["--root", base, "--dbpath", "/var/lib/rpm", "--initdb"]);
    const ours = copyRoot(base, "fresh-suture");
    const theirs = copyRoot(base, "fresh-rpm");
    await rpmIn(theirs, "-U", await rpmOf(v1()));
    await sutureInstall(ours, [await rpmOf(v1())]);
    assertSameTrees(tree(ours), tree(theirs));
    assert.equal(readFileSync(join(ours, "etc/foo/plain.conf.rpmorig"), "utf8"), "the image's own plain\n");
    assert.equal(readFileSync(join(ours, "etc/foo/noreplace.conf.rpmnew"), "utf8"), "v1 noreplace\n");
  });
});

describe("usrmerge", () => {
  test("a package directory where the image has a symlink to a directory keeps the symlink, as rpm does", async () => {
    const base = bareRoot("usrmerge-base");
    mkdirSync(join(base, "usr/lib"), { recursive: true });
    symlinkSync("usr/lib", join(base, "lib"));
    await tool("rpm", ["--root", base, "--dbpath", "/var/lib/rpm", "--initdb"]);
    const ours = copyRoot(base, "usrmerge-suture");
    const theirs = copyRoot(base, "usrmerge-rpm");
    const merged = await rpmOf({
      name: "merged",
      version: "1.0",
      release: "1",
      files: [
        { path: "/lib", directory: true },
        { path: "/lib/merged", directory: true, mode: "0700" },
        { path: "/lib/merged/file", content: "m\n" },
        { path: "/usr/lib/merged/file", content: "m\n" },
      ],
    });
    await rpmIn(theirs, "-U", merged);
    await sutureInstall(ours, [merged]);
    assertSameTrees(tree(ours), tree(theirs));
    assert.equal(readlinkSync(join(ours, "lib")), "usr/lib");
  });
});

describe("obsoletes", () => {
  test("a package another obsoletes is erased as rpm -U erases it: its files the new one has stay, scriptlets get $1 = 0", async () => {
    const base = bareRoot("obsoletes-base");
    const old = await rpmOf({
      name: "oldname",
      version: "1.0",
      release: "1",
      files: [
        { path: "/usr/share/oldname/kept", content: "same\n" },
        { path: "/usr/share/oldname/dropped", content: "dropped\n" },
        { path: "/etc/oldname.conf", content: "old conf\n", configPlain: true },
      ],
    });
    await rpmIn(base, "-U", old);
    writeFileSync(join(base, "etc/oldname.conf"), "edited\n");
    const ours = copyRoot(base, "obsoletes-suture");
    const theirs = copyRoot(base, "obsoletes-rpm");
    const renamed = await rpmOf({
      name: "newname",
      version: "2.0",
      release: "1",
      obsoletes: ["oldname < 2"],
      files: [
        { path: "/usr/share/oldname/kept", content: "same\n" },
        { path: "/usr/share/newname/file", content: "n\n" },
      ],
    });
    await rpmIn(theirs, "-U", renamed);
    await sutureInstall(ours, [renamed], { obsoleted: ["oldname"] });
    assertSameTrees(tree(ours), tree(theirs));
    assert.equal(readFileSync(join(ours, "etc/oldname.conf.rpmsave"), "utf8"), "edited\n");
    assert.equal(await rpmInventory(ours), await rpmInventory(theirs));
  });
});

describe("refusals", () => {
  test("a package file below the package's own symlink is refused before anything is written", async () => {
    const root = bareRoot("escape-package");
    await tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "--initdb"]);
    const evil = await rpmOf({
      name: "evil",
      version: "1.0",
      release: "1",
      // rpmbuild itself finds the file only through the symlink; told not to mind, it packs it.
      preamble: ["%define _unpackaged_files_terminate_build 0"],
      files: [
        { path: "/srv", directory: true },
        { path: "/opt/evil", symlinkTo: "../srv" },
        { path: "/opt/evil/planted", content: "x\n" },
      ],
    });
    const before = tree(root, () => false);
    await assert.rejects(
      sutureInstall(root, [evil]),
      (e: unknown) =>
        isSutureError(e, "UNSAFE_LAYER") &&
        /"\/opt\/evil\/planted" below its own symlink "\/opt\/evil"/.test(e.message),
    );
    assertSameTrees(
      tree(root, () => false),
      before,
    );
  });

  test("a file another installed package owns with other content is a conflict, and nothing is written", async () => {
    const root = bareRoot("conflict");
    const bar = await rpmOf({
      name: "bar",
      version: "1.0",
      release: "1",
      files: [{ path: "/usr/share/foo/owned", content: "bar's\n" }],
    });
    await rpmIn(root, "-U", bar);
    const before = tree(root, () => false);
    await assert.rejects(
      sutureInstall(root, [await rpmOf(v1())]),
      (e: unknown) =>
        isSutureError(e, "PATCH_FAILED") &&
        /\/usr\/share\/foo\/owned conflicts with the file of installed bar-1\.0-1\.noarch/.test(e.message) &&
        !e.message.includes("\n"),
    );
    assertSameTrees(
      tree(root, () => false),
      before,
    );
    // rpm refuses the same transaction.
    await assert.rejects(rpmIn(root, "-U", await rpmOf(v1())), /conflicts with file from package bar/);
  });

  test("an image symlink pointing at a host path is followed inside the root only", async () => {
    const root = bareRoot("escape-image");
    await tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "--initdb"]);
    const hostDir = mkdtempSync(join(work, "host-"));
    mkdirSync(join(root, "usr"), { recursive: true });
    symlinkSync(hostDir, join(root, "usr/lib"));
    await sutureInstall(root, [await rpmOf(v1())]);
    assert.deepEqual(readdirSync(hostDir), [], "nothing was written outside the root");
    assert.equal(readFileSync(join(root, hostDir, "foo/a"), "utf8"), "A1\n");
  });

  test("a scriptlet in rpm's embedded Lua is refused naming --engine sandbox, and nothing is written", async () => {
    const root = bareRoot("lua");
    await tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "--initdb"]);
    const lua = await rpmOf({
      name: "lua-user",
      version: "1.0",
      release: "1",
      files: [{ path: "/usr/share/lua-user/file", content: "x\n" }],
      sections: ["%post -p <lua>\nprint('hello')\n"],
    });
    const before = tree(root, () => false);
    await assert.rejects(
      sutureInstall(root, [lua]),
      (e: unknown) =>
        isSutureError(e, "PATCH_FAILED") &&
        /%post scriptlet is written in rpm's embedded Lua/.test(e.message) &&
        /--engine sandbox/.test(e.message),
    );
    assertSameTrees(
      tree(root, () => false),
      before,
    );
  });

  test("without a shell a package with a shell scriptlet is refused; an ldconfig one is not", async () => {
    const root = bareRoot("noshell");
    await tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "--initdb"]);
    const shell = await rpmOf({
      name: "needs-shell",
      version: "1.0",
      release: "1",
      files: [{ path: "/usr/share/needs-shell/file", content: "x\n" }],
      sections: ["%post\necho hello > /tmp/marker\n"],
    });
    await assert.rejects(
      sutureInstall(root, [shell], { runScripts: false }),
      (e: unknown) => isSutureError(e, "PATCH_FAILED") && /%post scriptlet needs \/bin\/sh/.test(e.message),
    );
    const ldconfig = await rpmOf({
      name: "lib-only",
      version: "1.0",
      release: "1",
      files: [{ path: "/usr/lib/libonly.so.1", content: "not really\n" }],
      sections: ["%post -p /sbin/ldconfig\n%postun -p /sbin/ldconfig\n"],
    });
    const outcome = await sutureInstall(root, [ldconfig], { runScripts: false });
    assert.equal(readFileSync(join(root, "usr/lib/libonly.so.1"), "utf8"), "not really\n");
    assert.ok(outcome.warnings.some((w) => w.includes("lib-only-1.0-1.noarch from test %post")));
  });
});

const SCRIPTS = (v: string) => `
%pretrans
echo "${v} pretrans $1" >> /markers
%pre
echo "${v} pre $1" >> /markers
%post
echo "${v} post $1" >> /markers
%preun
echo "${v} preun $1" >> /markers
%postun
echo "${v} postun $1" >> /markers
%posttrans
echo "${v} posttrans $1" >> /markers
`;

describe("scriptlets and triggers in runc", async () => {
  const runc = await needs("runc");
  test(
    "run in rpm's order with rpm's arguments, file triggers with their files, as rpm runs them",
    runc,
    async () => {
      const base = shellRoot("scripts-base");
      const old = await rpmOf({
        name: "scripted",
        version: "1.0",
        release: "1",
        files: [
          { path: "/usr/lib/scripted/one", content: "1\n" },
          { path: "/usr/lib/scripted/old", content: "old\n" },
        ],
        sections: [SCRIPTS("v1")],
      });
      const watcher = await rpmOf({
        name: "watcher",
        version: "1.0",
        release: "1",
        files: [{ path: "/usr/share/watcher/file", content: "w\n" }],
        sections: [
          "%transfiletriggerin -- /usr/lib/scripted",
          'echo "transfiletriggerin $1" >> /markers',
          "sort | sed 's/^/  in: /' >> /markers",
          "%transfiletriggerpostun -- /usr/lib/scripted",
          'echo "transfiletriggerpostun $1" >> /markers',
          "%filetriggerin -- /usr/lib/scripted",
          'echo "filetriggerin $1 $2" >> /markers',
          "sort | sed 's/^/  file: /' >> /markers",
          "%filetriggerun -- /usr/lib/scripted",
          'echo "filetriggerun $1" >> /markers',
          "sort | sed 's/^/  un: /' >> /markers",
          "%filetriggerpostun -- /usr/lib/scripted",
          'echo "filetriggerpostun $1" >> /markers',
          "sort | sed 's/^/  postun: /' >> /markers",
          "%transfiletriggerun -- /usr/lib/scripted",
          'echo "transfiletriggerun $1" >> /markers',
          "sort | sed 's/^/  tun: /' >> /markers",
          "%triggerin -- scripted",
          'echo "triggerin $1 $2" >> /markers',
          "%triggerun -- scripted",
          'echo "triggerun $1 $2" >> /markers',
          "%triggerpostun -- scripted < 2.0",
          'echo "triggerpostun $1 $2" >> /markers',
        ],
      });
      await rpmIn(base, "-U", old, watcher);
      writeFileSync(join(base, "markers"), "");
      const ours = copyRoot(base, "scripts-suture");
      const theirs = copyRoot(base, "scripts-rpm");
      const next = await rpmOf({
        name: "scripted",
        version: "2.0",
        release: "1",
        files: [
          { path: "/usr/lib/scripted/one", content: "1 again\n" },
          { path: "/usr/lib/scripted/two", content: "2\n" },
        ],
        sections: [SCRIPTS("v2")],
      });
      await rpmIn(theirs, "-U", next);
      const sandbox = runcSandbox(ours);
      await sutureInstall(ours, [next], { sandbox });
      const expected = readFileSync(join(theirs, "markers"), "utf8");
      assert.match(expected, /v2 pre 2\n/);
      assert.equal(readFileSync(join(ours, "markers"), "utf8"), expected);
      assertSameTrees(
        tree(ours, (p) => p.startsWith("/var/lib/rpm") || p === "/markers" || p.startsWith("/var/tmp")),
        tree(theirs, (p) => p.startsWith("/var/lib/rpm") || p === "/markers" || p.startsWith("/var/tmp")),
      );
    },
  );

  test(
    "a failing %pre stops the install with the script's last line; a failing %post is a warning",
    runc,
    async () => {
      const root = shellRoot("failing");
      await tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "--initdb"]);
      const bad = await rpmOf({
        name: "bad-pre",
        version: "1.0",
        release: "1",
        files: [{ path: "/usr/share/bad-pre/file", content: "x\n" }],
        sections: ["%pre\necho 'no room for this' >&2\nexit 3\n"],
      });
      await assert.rejects(
        sutureInstall(root, [bad], { sandbox: runcSandbox(root) }),
        (e: unknown) =>
          isSutureError(e, "PATCH_FAILED") &&
          /%pre scriptlet of bad-pre-1\.0-1\.noarch from test failed with exit code 3 \("no room for this"\)/.test(
            e.message,
          ),
      );
      assert.equal(existsSync(join(root, "usr/share/bad-pre")), false);
      const post = await rpmOf({
        name: "bad-post",
        version: "1.0",
        release: "1",
        files: [{ path: "/usr/share/bad-post/file", content: "x\n" }],
        sections: ["%post\nexit 1\n"],
      });
      const outcome = await sutureInstall(root, [post], { sandbox: runcSandbox(root) });
      assert.equal(readFileSync(join(root, "usr/share/bad-post/file"), "utf8"), "x\n");
      assert.ok(
        outcome.warnings.some((w) => /%post scriptlet of bad-post.* failed with exit code 1/.test(w)),
      );
      assert.deepEqual(
        readdirSync(join(root, "var/tmp")).filter((n) => n.startsWith("rpm-tmp.")),
        [],
        "the scriptlet files are removed",
      );
      assert.equal(readdirSync(root).filter((n) => n.startsWith(".suture-rpm-")).length, 0);
    },
  );
});

describe("an image that fights back", async () => {
  const runc = await needs("runc");
  test(
    "a trigger that swaps a kept config file for a symlink to a host file: the host file keeps its mode, the package's file is put back",
    runc,
    async () => {
      const root = shellRoot("swap-to-host");
      // Outside the root: what a chmod through the image's symlink would reach.
      const hostFile = join(work, "host-secret");
      writeFileSync(hostFile, "host secret\n");
      chmodSync(hostFile, 0o600);
      const conf = { path: "/etc/swap.conf", content: "same content\n", configPlain: true, mode: "0644" };
      const old = await rpmOf({ name: "swap", version: "1", release: "1", files: [conf] });
      const fixed = await rpmOf({ name: "swap", version: "2", release: "1", files: [conf] });
      // The image's own package: between the fate decision ("touch": the image has v2's content
      // already) and the files placed, its %triggerprein puts a symlink there.
      const evil = await rpmOf({
        name: "swapper",
        version: "1",
        release: "1",
        files: [{ path: "/usr/share/swapper/x", content: "x\n" }],
        sections: [`%triggerprein -- swap\nrm -f /etc/swap.conf; ln -s ${hostFile} /etc/swap.conf\n`],
      });
      await rpmIn(root, "--noscripts", "--notriggers", "-U", old, evil);

      const sandbox = runcSandbox(root);
      let refused: unknown;
      try {
        await sutureInstall(root, [fixed], { sandbox });
      } catch (e) {
        refused = e;
      }
      assert.ok(sandbox.calls.length > 0, "the trigger ran (the scenario needs it to have swapped the file)");
      assert.equal(lstatSync(hostFile).mode & 0o7777, 0o600, "the host file's mode is untouched");
      assert.equal(readFileSync(hostFile, "utf8"), "host secret\n");
      if (refused) {
        assert.ok(isSutureError(refused), String(refused));
        assert.doesNotMatch(refused.message, /\n/);
      } else {
        const st = lstatSync(join(root, "etc/swap.conf"));
        assert.ok(st.isFile(), "the symlink was replaced by the package's file");
        assert.equal(st.mode & 0o7777, 0o644);
        assert.equal(readFileSync(join(root, "etc/swap.conf"), "utf8"), "same content\n");
      }
    },
  );
});

describe("a package that owns /", () => {
  test("`%dir /` (the filesystem package) is upgraded as rpm -U does: the root takes its metadata, nothing fails", async () => {
    const files = [
      { path: "/", directory: true, mode: "0555" },
      { path: "/etc/fs.txt", content: "a\n" },
    ];
    const old = await rpmOf({ name: "filesystem", version: "1", release: "1", files });
    const fixed = await rpmOf({ name: "filesystem", version: "2", release: "1", files });
    const base = bareRoot("root-owner-base");
    await rpmIn(base, "-U", old);
    chmodSync(base, 0o755);
    const ours = copyRoot(base, "root-owner-ours");
    const theirs = copyRoot(base, "root-owner-rpm");
    await rpmIn(theirs, "-U", fixed);
    await sutureInstall(ours, [fixed]);
    const meta = (p: string) => {
      const st = lstatSync(p);
      return {
        mode: (st.mode & 0o7777).toString(8),
        uid: st.uid,
        gid: st.gid,
        mtime: Math.floor(st.mtimeMs / 1000),
      };
    };
    assert.deepEqual(meta(ours), meta(theirs), "the root's owner, mode and mtime are rpm's");
    assert.equal(meta(ours).mode, "555");
    assertSameTrees(tree(ours), tree(theirs));
    assert.equal(await rpmStates(ours, "filesystem"), await rpmStates(theirs, "filesystem"));
  });

  test("a package with a file at / is refused before anything is written", async () => {
    // rpmbuild makes no such package: a header's file list whose only entry is / as a regular file.
    const root = bareRoot("root-file");
    await tool("rpm", ["--root", root, "--dbpath", "/var/lib/rpm", "--initdb"]);
    const ok = await rpmOf({
      name: "fine",
      version: "1",
      release: "1",
      files: [{ path: "/usr/share/fine/x", content: "x\n" }],
    });
    const pkg = await openRpm(ok);
    const entry = pkg.files[0]!;
    const hostile = { ...pkg, files: [{ ...entry, path: "/" }] } as typeof pkg;
    const before = tree(root, () => false);
    const db = await readInstalledRpmsInRoot(root);
    assert.ok(db);
    await assert.rejects(
      installRpmPackages([{ pkg: hostile, file: ok, repository: "test" }], {
        sandbox: noScripts(root),
        database: db.location,
        installed: db.packages,
        obsoleted: [],
        runScripts: true,
        progress: () => {},
      }),
      (e: unknown) =>
        isSutureError(e, "UNSAFE_LAYER") && /has a file at \/ instead of a directory/.test(e.message),
    );
    assertSameTrees(
      tree(root, () => false),
      before,
    );
  });
});
