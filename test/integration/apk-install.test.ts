/**
 * The native apk installer judged by the real apk: Alpine 3.20.3's minirootfs is unpacked into a
 * root, real newer builds of some of its packages (repackaged from the edge minirootfs, files,
 * modes, scripts and triggers as edge's own apk database lists them) are installed with
 * installApkPackages, their scripts and triggers run with the image's busybox in runc, and then
 * the image's own apk-tools 2.14.4, in runc, says what it thinks of the result.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
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
import zlib from "node:zlib";
import { getAttributeSync } from "@napi-rs/xattr";
import { parseApkIndex } from "../../src/distro/apk/apkindex.ts";
import { parseInstalledDb } from "../../src/distro/apk/installed-db.ts";
import { checkApkAgainstIndex, openApk } from "../../src/distro/apk/package.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import { type ApkInstallItem, installApkPackages } from "../../src/patch/engines/apk/native/install.ts";
import { parseScriptsTar, parseTriggersDb } from "../../src/patch/engines/apk/native/scripts.ts";
import type { EngineSandbox } from "../../src/patch/engines/engine.ts";
import { runInSandbox } from "../../src/sandbox/runtime.ts";
import { withSandbox } from "../../src/sandbox/sandbox.ts";
import { minirootfs } from "../lab/alpine-rootfs.ts";
import { type ApkParts, buildApk, type SegmentFile } from "../lab/apk.ts";
import { requiring } from "../lab/requirements.ts";
import { imageOf, snapshot } from "./sandbox-fixtures.ts";

const { before, after, describe, test } = await requiring("root", "runc");

const APK_REAL = join(import.meta.dirname, "../../../shared/fixtures/apk-real");

let work: string;
/** The edge minirootfs, unpacked: where the newer packages' files come from. */
let edge: string;
let pkgDir: string;

before(() => {
  // On a real disk (runc's bundle and the roots live here), never tmpfs.
  work = mkdtempSync("/var/tmp/suture-apk-install-");
  edge = join(work, "edge");
  pkgDir = join(work, "packages");
  mkdirSync(edge);
  mkdirSync(pkgDir);
  execFileSync("tar", ["xzf", minirootfs("20240923", "x86_64"), "--numeric-owner", "-p", "-C", edge]);
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function freshRoot(name: string): string {
  const root = join(work, name);
  mkdirSync(root);
  execFileSync("tar", ["xzf", minirootfs("3.20.3", "x86_64"), "--numeric-owner", "-p", "-C", root]);
  return root;
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

/** The image's own apk, in runc. */
async function apk(
  root: string,
  ...args: string[]
): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return runInSandbox({ rootfs: root, args: ["/sbin/apk", ...args], timeoutMs: 120_000, bundleParent: work });
}

const PKGINFO_KEYS: [string, string][] = [
  ["P", "pkgname"],
  ["V", "pkgver"],
  ["T", "pkgdesc"],
  ["U", "url"],
  ["t", "builddate"],
  ["I", "size"],
  ["A", "arch"],
  ["o", "origin"],
  ["c", "commit"],
  ["m", "maintainer"],
  ["L", "license"],
  ["k", "provider_priority"],
  ["q", "replaces_priority"],
];
const MULTI_KEYS: [string, string][] = [
  ["D", "depend"],
  ["p", "provides"],
  ["r", "replaces"],
  ["i", "install_if"],
];

interface EdgeRecord {
  fields: [string, string][];
  dirs: { path: string; acl?: string; files: { name: string; acl?: string }[] }[];
}

/** The edge database's record of `name`, as lines. */
function edgeRecord(name: string): EdgeRecord {
  const text = readFileSync(join(edge, "lib/apk/db/installed"), "utf8");
  for (const block of text.split("\n\n")) {
    const lines = block.split("\n").filter(Boolean);
    if (!lines.includes(`P:${name}`)) continue;
    const rec: EdgeRecord = { fields: [], dirs: [] };
    for (const line of lines) {
      const [l, v] = [line[0]!, line.slice(2)];
      const dir = rec.dirs.at(-1);
      if (l === "F") rec.dirs.push({ path: v, files: [] });
      else if (l === "M") dir!.acl = v;
      else if (l === "R") dir!.files.push({ name: v });
      else if (l === "a") dir!.files.at(-1)!.acl = v;
      else if (l !== "Z") rec.fields.push([l, v]);
    }
    return rec;
  }
  throw new Error(`edge has no ${name}`);
}

function aclOf(acl: string | undefined, mode: number) {
  const [uid, gid, m] = (acl ?? `0:0:${mode.toString(8)}`).split(":");
  return { uid: Number(uid), gid: Number(gid), mode: Number.parseInt(m!, 8) };
}

/**
 * A real edge package rebuilt as abuild lays it out: .PKGINFO from its record, its scripts from
 * edge's scripts.tar, its files (directories, files, symlinks with their SHA-1 checksums) from
 * the edge rootfs. `change` may alter the parts (a hostile variant).
 */
async function edgePackage(name: string, change?: (parts: ApkParts) => void): Promise<ApkInstallItem> {
  const rec = edgeRecord(name);
  const get = (l: string) => rec.fields.find(([x]) => x === l)?.[1];
  const version = get("V")!;
  const lines: string[] = [];
  for (const [l, key] of PKGINFO_KEYS) if (get(l) !== undefined) lines.push(`${key} = ${get(l)}`);
  for (const [l, key] of MULTI_KEYS)
    for (const w of (get(l) ?? "").split(" ").filter(Boolean)) lines.push(`${key} = ${w}`);
  const checksum = get("C")!;
  const triggers = parseTriggersDb(readFileSync(join(edge, "lib/apk/db/triggers"), "utf8")).find(
    (t) => t.checksum === checksum,
  );
  if (triggers) lines.push(`triggers = ${triggers.globs.join(" ")}`);
  const scripts: SegmentFile[] = [];
  const edgeScripts = (await parseScriptsTar(readFileSync(join(edge, "lib/apk/db/scripts.tar")))).get(
    checksum,
  );
  for (const [type, data] of edgeScripts ?? []) scripts.push({ name: type, data, mode: 0o755 });
  const files: SegmentFile[] = [];
  for (const d of rec.dirs) {
    if (d.path !== "") files.push({ name: d.path, type: "directory", ...aclOf(d.acl, 0o755) });
    for (const f of d.files) {
      const path = d.path ? `${d.path}/${f.name}` : f.name;
      const host = join(edge, path);
      const acl = aclOf(f.acl, 0o644);
      if (lstatSync(host).isSymbolicLink()) {
        const target = readlinkSync(host);
        const sha1 = createHash("sha1").update(target).digest("hex");
        files.push({
          name: path,
          type: "symlink",
          linkname: target,
          ...acl,
          pax: { "APK-TOOLS.checksum.SHA1": sha1 },
        });
      } else files.push({ name: path, data: readFileSync(host), ...acl });
    }
  }
  const parts: ApkParts = { pkginfo: `${lines.join("\n")}\n`, scripts, files };
  change?.(parts);
  const built = buildApk(parts);
  const file = join(pkgDir, `${name}-${version}-${Math.random().toString(36).slice(2)}.apk`);
  writeFileSync(file, built.bytes);
  const indexText = `${rec.fields
    .filter(([l]) => !"rqs".includes(l))
    .map(([l, v]) =>
      l === "C" ? `C:${built.checksum}` : l === "S" ? `S:${built.bytes.length}` : `${l}:${v}`,
    )
    .join("\n")}\n`;
  const [entry] = parseApkIndex(indexText, "test index");
  const pkg = await openApk(file);
  checkApkAgainstIndex(pkg, entry!);
  return { pkg, entry: entry!, repository: "http://127.0.0.1/test/main" };
}

/**
 * Every package of the edge minirootfs newer than 3.20.3's, in the order the image's apk installs
 * them (`apk add` of the twelve files prints it).
 */
const UPGRADES = [
  "alpine-baselayout-data",
  "musl",
  "busybox",
  "libcrypto3",
  "libssl3",
  "ssl_client",
  "busybox-binsh",
  "alpine-baselayout",
  "alpine-keys",
  "zlib",
  "apk-tools",
  "musl-utils",
];

/** The path of an item's package file as the real apk sees it (pkgDir mounted at /pkgs). */
function fileArg(item: ApkInstallItem): string {
  return `/pkgs/${item.pkg.path.slice(pkgDir.length + 1)}`;
}

/** The image's own apk, in runc, with the test's packages at /pkgs; it must succeed. */
async function realApk(root: string, ...args: string[]): Promise<void> {
  const real = await runInSandbox({
    rootfs: root,
    args: ["/sbin/apk", ...args, "--no-network", "--allow-untrusted"],
    mounts: [{ destination: "/pkgs", source: pkgDir, options: ["ro"] }],
    timeoutMs: 120_000,
    bundleParent: work,
  });
  assert.equal(real.exitCode, 0, `${real.stdout}${real.stderr}`);
}

/** Both roots hold the same tree (types, modes, owners, sizes, targets) and the same apk databases. */
function assertSameAsApk(ours: string, theirs: string): void {
  const tree = (root: string) => {
    const out = new Map<string, string>();
    for (const [path, line] of snapshot(root)) {
      // Times and inode numbers differ between any two installs; apk's world lists what it was
      // asked for; runc mounts a tmpfs on /dev, so what apk made there is not in its root.
      const [kind, mode, owner, size] = line.split(" ");
      if (path === "etc/apk/world" || path.startsWith("pkgs") || path.startsWith("dev/")) continue;
      out.set(
        path,
        `${kind} ${mode} ${owner} ${kind === "d" ? "" : size} ${line.slice(line.lastIndexOf(" ["))}`,
      );
    }
    return out;
  };
  const a = tree(ours);
  const b = tree(theirs);
  const differ = [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
  assert.deepEqual(
    differ.map((k) => `${k}: suture ${a.get(k)} apk ${b.get(k)}`),
    [],
  );
  for (const db of ["lib/apk/db/installed", "lib/apk/db/triggers", "lib/apk/db/scripts.tar"])
    assert.deepEqual(readFileSync(join(ours, db), "latin1"), readFileSync(join(theirs, db), "latin1"), db);
}

/**
 * A package new to the image: its own /usr/sbin tool (with an xattr, and a hardlink to it),
 * busybox's /etc/securetty (taken over when `extra` says it replaces busybox), and install
 * scripts that leave a note of how they were run.
 */
async function newPackage(name: string, extra: string, preInstall?: string): Promise<ApkInstallItem> {
  const pkginfo = `pkgname = ${name}\npkgver = 1.0-r0\npkgdesc = site policy\nurl = https://example.org\nbuilddate = 1700000000\nsize = 8192\narch = x86_64\norigin = ${name}\nlicense = MIT\ndepend = busybox\n${extra}`;
  const script = (type: string) => ({
    name: `.${type}`,
    data: `#!/bin/sh\necho "${type} $*" >> /root/installed\n`,
    mode: 0o755,
  });
  const built = buildApk({
    pkginfo,
    scripts: [
      preInstall === undefined
        ? script("pre-install")
        : { name: ".pre-install", data: preInstall, mode: 0o755 },
      script("post-install"),
    ],
    files: [
      { name: "etc", type: "directory" },
      { name: "etc/securetty", data: "console\n" },
      { name: "usr", type: "directory" },
      // Narrower than alpine-baselayout's 0755: apk combines the owners' modes.
      { name: "usr/sbin", type: "directory", mode: 0o750 },
      {
        name: "usr/sbin/site-policy",
        data: "#!/bin/sh\nexit 0\n",
        mode: 0o755,
        xattrs: { "user.site": "policy" },
      },
      { name: "usr/sbin/site-policy-check", type: "hardlink", linkname: "usr/sbin/site-policy", mode: 0o755 },
    ],
  });
  const file = join(pkgDir, `${name}-1.0-r0-${Math.random().toString(36).slice(2)}.apk`);
  writeFileSync(file, built.bytes);
  const [entry] = parseApkIndex(
    `C:${built.checksum}\nP:${name}\nV:1.0-r0\nA:x86_64\nS:${built.bytes.length}\nI:8192\nT:site policy\nU:https://example.org\nL:MIT\no:${name}\nt:1700000000\nD:busybox\n`,
    "test index",
  );
  return { pkg: await openApk(file), entry: entry!, repository: "http://127.0.0.1/test/main" };
}

describe("installApkPackages on Alpine 3.20.3, judged by its own apk", () => {
  test("upgrades twelve real packages: scripts and triggers run, apk sees the new versions and a clean system", async () => {
    const root = freshRoot("upgrade");
    const auditBefore = new Set((await apk(root, "audit")).stdout.trim().split("\n"));
    // The image's author edited a protected config file.
    writeFileSync(join(root, "etc/motd"), "Welcome to our image\n");
    const items: ApkInstallItem[] = [];
    for (const name of UPGRADES) items.push(await edgePackage(name));
    const sandbox = runcSandbox(root);
    const { warnings, scriptsMs } = await installApkPackages(items, [], { sandbox, progress: () => {} });

    assert.deepEqual(warnings, [
      "alpine-baselayout 3.6.8-r0: kept /etc/motd, which the image changed; the package's version is /etc/motd.apk-new",
    ]);
    assert.ok(scriptsMs > 0);
    // apk's order: pre-upgrade, post-upgrade per package, then busybox's trigger on the bin dirs.
    assert.deepEqual(
      sandbox.calls.map((c) => c.join(" ")),
      [
        "/lib/apk/exec/busybox-1.36.1-r32.post-upgrade 1.36.1-r32 1.36.1-r29",
        "/lib/apk/exec/alpine-baselayout-3.6.8-r0.pre-upgrade 3.6.8-r0 3.6.5-r0",
        "/lib/apk/exec/alpine-baselayout-3.6.8-r0.post-upgrade 3.6.8-r0 3.6.5-r0",
        "/lib/apk/exec/busybox-1.36.1-r32.trigger /bin /sbin /usr/bin /usr/sbin",
      ],
    );
    assert.equal(readFileSync(join(root, "etc/motd"), "utf8"), "Welcome to our image\n");
    assert.deepEqual(readFileSync(join(root, "etc/motd.apk-new")), readFileSync(join(edge, "etc/motd")));
    // The files the new versions moved or dropped, and the directory alpine-baselayout's script migrated.
    assert.equal(existsSync(join(root, "lib/sysctl.d/00-alpine.conf")), false);
    assert.ok(existsSync(join(root, "usr/lib/sysctl.d/00-alpine.conf")));
    assert.equal(readlinkSync(join(root, "var/lock")), "../run/lock");
    assert.ok(existsSync(join(root, "usr/share/apk/keys/loongarch64")));
    // Nothing of suture's staging or apk's script runs is left.
    assert.deepEqual(
      readdirSync(root).filter((n) => n.startsWith(".")),
      [],
    );
    assert.deepEqual(readdirSync(join(root, "lib/apk/exec")), []);

    const info = await apk(root, "info", "-v");
    assert.equal(info.exitCode, 0, info.stderr);
    const versions = info.stdout.trim().split("\n").sort();
    for (const name of UPGRADES) {
      const v = edgeRecord(name).fields.find(([l]) => l === "V")![1];
      assert.ok(versions.includes(`${name}-${v}`), `${name}-${v} in ${versions.join(" ")}`);
    }
    const audit = await apk(root, "audit", "--system");
    assert.equal(audit.exitCode, 0, audit.stderr);
    assert.equal(audit.stdout, "");
    // apk's own view of the configuration: what changed since before the upgrade is the edited
    // motd and what busybox's adduser did (the accounts files and their backups; the image
    // shipped its shadow already changed).
    const config = await apk(root, "audit");
    assert.deepEqual(
      config.stdout
        .trim()
        .split("\n")
        .filter((l) => !auditBefore.has(l))
        .sort(),
      ["A etc/group-", "A etc/passwd-", "A etc/shadow-", "U etc/group", "U etc/motd", "U etc/passwd"],
    );
    const owner = await apk(root, "info", "--who-owns", "/usr/lib/sysctl.d/00-alpine.conf");
    assert.match(owner.stdout, /owned by alpine-baselayout-3\.6\.8-r0/);

    // The databases as apk keeps them: the new versions' scripts under their checksums, busybox's
    // trigger line for its new build.
    const db = parseInstalledDb(readFileSync(join(root, "lib/apk/db/installed"), "utf8"));
    const busybox = db.find((p) => p.info.name === "busybox")!;
    assert.equal(busybox.info.checksum, items[UPGRADES.indexOf("busybox")]!.entry.checksum);
    const scripts = await parseScriptsTar(readFileSync(join(root, "lib/apk/db/scripts.tar")));
    assert.deepEqual([...(scripts.get(busybox.info.checksum!)?.keys() ?? [])].sort(), [
      ".post-install",
      ".post-upgrade",
      ".trigger",
    ]);
    assert.equal(scripts.size, 2);
    assert.deepEqual(parseTriggersDb(readFileSync(join(root, "lib/apk/db/triggers"), "utf8")), [
      {
        checksum: busybox.info.checksum,
        globs: ["/bin", "/usr/bin", "/sbin", "/usr/sbin", "/lib/modules/*", "/usr/lib/modules/*"],
      },
    ]);
    // Running apk again over the result changes nothing: it agrees on what is installed.
    const fix = await apk(root, "fix", "--simulate", "--no-network");
    assert.equal(fix.exitCode, 0, `${fix.stdout}${fix.stderr}`);
  });

  test("the same packages installed by the real apk give the same tree and the same database", async () => {
    const ours = freshRoot("diff-suture");
    const theirs = freshRoot("diff-apk");
    const items: ApkInstallItem[] = [];
    for (const name of UPGRADES) items.push(await edgePackage(name));
    await installApkPackages(items, [], { sandbox: runcSandbox(ours), progress: () => {} });
    await realApk(theirs, "add", ...items.map(fileArg));
    assertSameAsApk(ours, theirs);
  });

  test("removing a package: what apk del leaves", async () => {
    const ours = freshRoot("del-suture");
    const theirs = freshRoot("del-apk");
    await installApkPackages([], ["alpine-keys"], { sandbox: runcSandbox(ours), progress: () => {} });
    await realApk(theirs, "del", "alpine-keys");
    assert.equal(existsSync(join(ours, "usr/share/apk/keys/x86_64")), false);
    assertSameAsApk(ours, theirs);
  });

  test("a new package taking another's file by replaces: what apk add does, scripts included", async () => {
    const ours = freshRoot("replaces-suture");
    const theirs = freshRoot("replaces-apk");
    const item = await newPackage("securetty-site", "replaces = busybox\n");
    const sandbox = runcSandbox(ours);
    await installApkPackages([item], [], { sandbox, progress: () => {} });
    assert.deepEqual(
      sandbox.calls.map((c) => c.join(" ")),
      [
        "/lib/apk/exec/securetty-site-1.0-r0.pre-install 1.0-r0",
        "/lib/apk/exec/securetty-site-1.0-r0.post-install 1.0-r0",
        "/lib/apk/exec/busybox-1.36.1-r29.trigger /usr/sbin",
      ],
    );
    assert.equal(readFileSync(join(ours, "etc/securetty"), "utf8"), "console\n");
    assert.equal(
      readFileSync(join(ours, "root/installed"), "utf8"),
      "pre-install 1.0-r0\npost-install 1.0-r0\n",
    );
    // The xattr is set and recorded (its checksum in `a:`), the hardlink is one file with the
    // checksum of its target.
    assert.equal(getAttributeSync(join(ours, "usr/sbin/site-policy"), "user.site")?.toString(), "policy");
    assert.equal(
      lstatSync(join(ours, "usr/sbin/site-policy-check")).ino,
      lstatSync(join(ours, "usr/sbin/site-policy")).ino,
    );
    const record = parseInstalledDb(readFileSync(join(ours, "lib/apk/db/installed"), "utf8")).find(
      (p) => p.info.name === "securetty-site",
    )!;
    const sbin = record.dirs.find((d) => d.path === "usr/sbin")!;
    assert.match(sbin.files[0]!.acl?.xattrChecksum ?? "", /^Q1/);
    assert.equal(sbin.files[1]!.checksum, sbin.files[0]!.checksum);
    await realApk(theirs, "add", fileArg(item));
    assertSameAsApk(ours, theirs);
    const owner = await apk(ours, "info", "--who-owns", "/etc/securetty");
    assert.match(owner.stdout, /owned by securetty-site-1\.0-r0/);
  });

  test("scripts never see suture's staging directory, so they cannot plant links the host would follow", async () => {
    const root = freshRoot("staging-hidden");
    // Run between staging and moving into place, as a hostile package's script would be.
    const probe = `#!/bin/sh
for d in /.suture-apk-*; do
  echo "dir $d: $(ls -A "$d" | wc -l) entries" >> /root/staging-seen
  ln -s /etc/shadow "$d/0" 2>/dev/null && echo planted >> /root/staging-seen || echo refused >> /root/staging-seen
done
`;
    const item = await newPackage("staging-probe", "replaces = busybox\n", probe);
    await installApkPackages([item], [], { sandbox: runcSandbox(root), progress: () => {} });
    const seen = readFileSync(join(root, "root/staging-seen"), "utf8");
    assert.match(seen, /^dir \/\.suture-apk-\S+: 0 entries\nrefused\n$/, seen);
    // The package was installed from what was staged, not from anything a script put there.
    assert.equal(readFileSync(join(root, "usr/sbin/site-policy"), "utf8"), "#!/bin/sh\nexit 0\n");
    assert.ok(!readdirSync(root).some((n) => n.startsWith(".suture-apk-")), "staging removed");
  });

  test("a new package overwriting another's file without replaces: refused, nothing changed", async () => {
    const root = freshRoot("conflict");
    const before = snapshot(root);
    const item = await newPackage("securetty-site", "");
    await assert.rejects(
      installApkPackages([item], [], { sandbox: runcSandbox(root), progress: () => {} }),
      (e) =>
        isSutureError(e, "PATCH_FAILED") &&
        e.message.includes("/etc/securetty (owned by busybox 1.36.1-r29)") &&
        !e.message.includes("\n"),
    );
    const now = snapshot(root);
    now.delete(".");
    before.delete(".");
    assert.deepEqual(now, before);
  });

  test("over the image's layers in the sandbox's overlay, as the engine runs it", async () => {
    const { image } = await imageOf([zlib.gunzipSync(readFileSync(minirootfs("3.20.3", "x86_64")))]);
    const items: ApkInstallItem[] = [];
    for (const name of UPGRADES) items.push(await edgePackage(name));
    const sandboxes = join(work, "overlay");
    await withSandbox(image, { cacheDir: join(sandboxes, "cache"), workRoot: sandboxes }, async (s) => {
      const { warnings } = await installApkPackages(items, [], { sandbox: s, progress: () => {} });
      assert.deepEqual(warnings, []);
      const audit = await s.run(["/sbin/apk", "audit", "--system"]);
      assert.equal(`${audit.stdout}${audit.stderr}`, "");
      const info = await s.run(["/sbin/apk", "info", "-v"]);
      assert.match(info.stdout, /^busybox-1\.36\.1-r32$/m);
      // Only what the upgrade changed is in the upper dir: no staging, no script files.
      const upper = readdirSync(s.upperDir).sort();
      assert.deepEqual(
        upper.filter((n) => n.startsWith(".")),
        [],
      );
      assert.deepEqual(readdirSync(join(s.upperDir, "lib/apk/exec")), []);
      assert.ok(existsSync(join(s.upperDir, "usr/lib/sysctl.d/00-alpine.conf")));
    });
  });

  test("real melange-built packages (owner names, a top-level file): what apk add does", async () => {
    const ours = freshRoot("melange-suture");
    const theirs = freshRoot("melange-apk");
    // Built by melange with its author's user and group names: the image's dialout group (20) is
    // found by name, the unknown user keeps the archive's uid.
    const file = join(pkgDir, "replaces-0.0.1-r0.apk");
    copyFileSync(join(APK_REAL, "replaces-0.0.1-r0.apk"), file);
    const pkg = await openApk(file);
    const entry = { ...pkg.info, checksum: pkg.controlChecksum, size: lstatSync(file).size };
    await installApkPackages([{ pkg, entry, repository: "file" }], [], {
      sandbox: runcSandbox(ours),
      progress: () => {},
    });
    assert.equal(lstatSync(join(ours, "hello")).gid, 20);
    await realApk(theirs, "add", "/pkgs/replaces-0.0.1-r0.apk");
    assertSameAsApk(ours, theirs);
  });

  test("an image without /bin/sh: no script runs, a warning names them, nothing is added", async () => {
    const root = freshRoot("no-shell");
    rmSync(join(root, "bin/sh"));
    const items = [await edgePackage("busybox"), await edgePackage("zlib")];
    const sandbox = runcSandbox(root);
    const { warnings } = await installApkPackages(items, [], { sandbox, progress: () => {} });
    assert.deepEqual(sandbox.calls, []);
    assert.deepEqual(warnings, [
      "the image has no /bin/sh, so these apk scripts were not run: busybox post-upgrade, busybox trigger",
    ]);
    assert.deepEqual(readdirSync(join(root, "lib/apk/exec")), []);
    const audit = await apk(root, "audit", "--system");
    assert.equal(audit.stdout, "X bin/sh\n");
  });

  test("a package whose data does not match its datahash changes nothing", async () => {
    const root = freshRoot("datahash");
    const before = snapshot(root);
    const good = await edgePackage("zlib");
    const bad = await edgePackage("busybox", (parts) => {
      parts.datahash = "0".repeat(64);
    });
    await assert.rejects(
      installApkPackages([good, bad], [], { sandbox: runcSandbox(root), progress: () => {} }),
      (e) => isSutureError(e, "UNTRUSTED") && /busybox/.test(e.message),
    );
    const afterwards = snapshot(root);
    before.delete(".");
    afterwards.delete(".");
    assert.deepEqual(afterwards, before);
  });

  test("hostile packages write nothing outside the root, and nothing at all", async () => {
    const root = freshRoot("hostile");
    const outside = join(work, "outside");
    mkdirSync(outside, { recursive: true });
    // The image itself has a symlink that would lead out of the root if followed on the host.
    symlinkSync(`../../../../../../..${outside}`, join(root, "opt/escape"));
    const before = snapshot(root);
    const cases: [string, (p: ApkParts) => void, string, RegExp][] = [
      [
        "a member climbing out with ..",
        (p) => {
          p.files = p.files.concat({ name: "usr/../../outside/evil", data: "x" });
        },
        "INVALID_ARCHIVE",
        /zlib .*climbs/,
      ],
      [
        "a file through the package's own symlink",
        (p) => {
          p.files = p.files.concat(
            { name: "usr/lib/link", type: "symlink", linkname: outside },
            { name: "usr/lib/link/evil", data: "x" },
          );
        },
        "INVALID_ARCHIVE",
        /zlib .*below its own symlink/,
      ],
      [
        "a directory entry after a symlink of the same path",
        (p) => {
          p.files = p.files.concat(
            { name: "usr/lib/link", type: "symlink", linkname: outside },
            { name: "usr/lib/link", type: "directory" },
            { name: "usr/lib/link/evil", data: "x" },
          );
        },
        "INVALID_ARCHIVE",
        /zlib .*(both a file and a directory|below its own symlink)/,
      ],
    ];
    for (const [what, change, code, message] of cases) {
      const item = await edgePackage("zlib", change);
      await assert.rejects(
        installApkPackages([item], [], { sandbox: runcSandbox(root), progress: () => {} }),
        (e) => isSutureError(e, code as "INVALID_ARCHIVE") && message.test(e.message),
        what,
      );
      assert.deepEqual(readdirSync(outside), [], what);
      const now = snapshot(root);
      now.delete(".");
      const was = new Map(before);
      was.delete(".");
      assert.deepEqual(now, was, what);
    }
    // Through the image's own symlink: resolved inside the root, as the image would see it.
    mkdirSync(join(root, outside), { recursive: true });
    const through = await edgePackage("zlib", (p) => {
      p.files = p.files.concat(
        { name: "opt", type: "directory" },
        { name: "opt/escape", type: "directory" },
        { name: "opt/escape/planted", data: "inside\n" },
      );
    });
    await installApkPackages([through], [], { sandbox: runcSandbox(root), progress: () => {} });
    assert.deepEqual(readdirSync(outside), []);
    assert.equal(readFileSync(join(root, outside, "planted"), "utf8"), "inside\n");

    // The image plants a symlink where a script is written to be run: the script replaces it.
    const hostFile = join(outside, "host-file");
    writeFileSync(hostFile, "untouched\n");
    symlinkSync(hostFile, join(root, "lib/apk/exec/busybox-1.36.1-r32.post-upgrade"));
    await installApkPackages([await edgePackage("busybox")], [], {
      sandbox: runcSandbox(root),
      progress: () => {},
    });
    assert.equal(readFileSync(hostFile, "utf8"), "untouched\n");
    assert.deepEqual(readdirSync(join(root, "lib/apk/exec")), []);
  });
});
