import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  closeSync,
  fchmodSync,
  fchownSync,
  constants as fsConstants,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  type Stats,
  symlinkSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, join } from "node:path";
import { normaliseEntryPath } from "../../../../archive/tar/member-path.ts";
import { ImageAccounts, type OwnerNames } from "../../../../distro/accounts.ts";
import type { ApkIndexEntry } from "../../../../distro/apk/apkindex.ts";
import {
  type ApkAcl,
  INSTALLED_DB_PATH,
  type InstalledDir,
  type InstalledFile,
  type InstalledPackage,
  installedPackage,
  installedRecordFields,
  readInstalledDbInRoot,
  serializeInstalledDb,
} from "../../../../distro/apk/installed-db.ts";
import {
  type ApkDataEntry,
  type ApkPackage,
  type ApkScriptName,
  checkApkAgainstIndex,
  formatApkChecksum,
} from "../../../../distro/apk/package.ts";
import type { ApkDependency } from "../../../../distro/apk/records.ts";
import { compareApkVersions, compareApkVersionsFuzzy } from "../../../../distro/apk/version.ts";
import { describeCause, isSutureError, quoteUntrusted, SutureError } from "../../../../errors/errors.ts";
import { writeFileAtomic } from "../../../../fs/atomic.ts";
import { childPath, readFileInRoot, walkInRoot } from "../../../../fs/in-root.ts";
import { applyXattrs } from "../../../../fs/xattrs.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import type { EngineSandbox } from "../../engine.ts";
import { matchesPathname, type ProtectedPaths, readProtectedPaths } from "./protected-paths.ts";
import {
  hasShell,
  parseScriptsTar,
  parseTriggersDb,
  SCRIPTS_DB_PATH,
  ScriptRunner,
  type ScriptsOwner,
  serializeScriptsTar,
  serializeTriggersDb,
  TRIGGERS_DB_PATH,
} from "./scripts.ts";

/**
 * Installing verified apk packages into an image's root as apk-tools 2.14 does
 * (`apk_db_install_pkg` and the commit around it), without apk:
 *
 * 1. Every package's data archive is unpacked into a staging directory inside the root, with the
 *    archive's modes, owners, mtimes, symlinks, hardlinks and xattrs; its `datahash` is checked
 *    when the archive ends. Which files each package may take from other installed packages
 *    (apk's replaces rules) is decided here too. Any failure removes the staging directory: the
 *    root is as it was.
 * 2. Per package, in the caller's order: `.pre-upgrade` (`.pre-install`), directories created,
 *    files renamed into place (a protected config file the image modified is kept and the new
 *    one written as `NAME.apk-new`), the old version's remaining files and now-unowned empty
 *    directories removed, `.post-upgrade` (`.post-install`).
 * 3. Directories brought to the owner and mode their packages combine to (where the image had
 *    them as the db said), the `.trigger` scripts of packages whose trigger globs match a changed
 *    directory (every directory for a package installed now), then `installed`, `scripts.tar`
 *    and `triggers` written atomically, byte for byte as apk writes them.
 *
 * Scripts run with the image's own `/bin/sh` through `sandbox.run`; an image without one gets
 * none run (a warning names them) and nothing added. Every path goes through the one in-root
 * resolver: nothing is written or followed outside the root.
 */

export interface ApkInstallItem {
  /** openApk'd and already verified (control vs index `C:`). */
  pkg: ApkPackage;
  /** The index entry it was resolved from. */
  entry: ApkIndexEntry;
  /** Repository URL as the image lists it, for messages. */
  repository: string;
}

export interface ApkInstallOptions {
  /** `mergedDir` is the root; `run()` runs in runc. */
  sandbox: EngineSandbox;
  progress: ProgressSink;
  signal?: AbortSignal;
  /** Per script. */
  timeoutMs?: number;
  /** Whether scripts run (the caller's plan decided it with `hasShell`); default: `hasShell(root)`. */
  runScripts?: boolean;
}

const FILE_ACL_DEFAULT: ApkAcl = { uid: 0, gid: 0, mode: 0o644 };
const DIR_ACL_DEFAULT: ApkAcl = { uid: 0, gid: 0, mode: 0o755 };
const MALFORMED = "the package is malformed or hostile, so nothing was installed";

/** A directory of a package's data archive, created in phase 2 where the image has none. */
interface StagedDir {
  path: string;
  acl: ApkAcl;
  owner: OwnerNames;
  xattrs: Map<string, Buffer>;
  record: InstalledDir;
}

/** A file, symlink or hardlink of a package's data archive, written under the staging directory. */
interface StagedFile {
  dir: string;
  name: string;
  staged: string;
  /** The archive's ids and mode (the record's `a:` is set once names are resolved). */
  acl: ApkAcl;
  owner: OwnerNames;
  symlink: boolean;
  record: InstalledFile;
  /** Left out: an installed package that replaces this one owns the path (apk's replaces priority). */
  skip?: boolean;
  /** The db's checksum of the path before this package took it (its old version's, or another package's). */
  recordedBefore?: string;
}

interface StagedPackage {
  item: ApkInstallItem;
  old: InstalledPackage | undefined;
  dirs: StagedDir[];
  files: StagedFile[];
  /** The new installed record (its file list the files this package owns). */
  record: InstalledPackage;
}

/** Where a file of the installed db lives in the records, to move it between packages. */
interface Owner {
  pkg: InstalledPackage;
  dir: InstalledDir;
  file: InstalledFile;
}

export async function installApkPackages(
  items: readonly ApkInstallItem[],
  remove: readonly string[],
  options: ApkInstallOptions,
): Promise<{ warnings: string[]; scriptsMs: number }> {
  try {
    return await install(items, remove, options);
  } catch (e) {
    // A file operation the host refused (EPERM on chown or an xattr, ENOSPC, EROFS): one line
    // with its errno text, not an internal error.
    if (isSutureError(e) || typeof (e as NodeJS.ErrnoException).code !== "string") throw e;
    throw new SutureError(
      "IO",
      `cannot install the apk packages into the image: ${describeCause(e)}; check the space and permissions of --cache-dir`,
      { cause: e },
    );
  }
}

async function install(
  items: readonly ApkInstallItem[],
  remove: readonly string[],
  options: ApkInstallOptions,
): Promise<{ warnings: string[]; scriptsMs: number }> {
  const root = options.sandbox.mergedDir;
  const warnings: string[] = [];
  const state = await readApkState(root);
  const protectedPaths = await readProtectedPaths(root);
  const runner =
    (options.runScripts ?? hasShell(root)) ? new ScriptRunner(options.sandbox, options.timeoutMs) : undefined;
  const skippedScripts: string[] = [];
  const accounts = new ImageAccounts(root);

  const seen = new Set<string>();
  for (const { pkg, entry } of items) {
    checkApkAgainstIndex(pkg, entry);
    if (seen.has(entry.name) || remove.includes(entry.name))
      throw new SutureError(
        "INTERNAL",
        `package ${entry.name} is to be installed twice or installed and removed`,
      );
    seen.add(entry.name);
  }
  for (const name of remove)
    if (!state.byName.has(name))
      throw new SutureError("INTERNAL", `package ${name} is to be removed but is not installed`);

  // Phase 1: stage every package (nothing visible in the root yet).
  const staging = mkdtempSync(join(root, ".suture-apk-"));
  runner?.hide(`/${basename(staging)}`);
  let staged: StagedPackage[];
  try {
    const owners = ownersOf(state.packages);
    for (const name of remove) releaseAll(owners, state.byName.get(name)!);
    staged = [];
    for (const item of items) {
      options.signal?.throwIfAborted();
      const s = await stagePackage(root, staging, item, state.byName.get(item.entry.name), staged.length);
      claimFiles(s, owners);
      staged.push(s);
    }
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }

  // Phase 2: apply, package by package, as apk commits a changeset.
  const modifiedDirs = new Set<string>();
  const permissionUpdates = new Set<string>();
  const changed = new Set([...staged.map((s) => s.item.entry.name), ...remove]);
  const triggerLines = triggerPackages(state, staged, changed);
  const scripts = (
    pkg: { name: string; version: string },
    type: ApkScriptName,
    body: Buffer | undefined,
    args: string[],
  ) => {
    if (!body) return;
    if (!runner) {
      skippedScripts.push(`${pkg.name} ${type.slice(1)}`);
      return;
    }
    options.progress({ type: "info", message: `running ${pkg.name}-${pkg.version}${type}` });
    return runner.run(pkg, type, body, args).finally(() => accounts.forget());
  };
  try {
    await applyAll();
  } finally {
    rmSync(staging, { recursive: true, force: true });
    runner?.finish();
  }
  await writeApkState(root, state, staged, triggerLines);
  if (skippedScripts.length)
    warnings.push(
      `the image has no /bin/sh, so these apk scripts were not run: ${skippedScripts.join(", ")}`,
    );
  return { warnings, scriptsMs: runner?.ms ?? 0 };

  async function applyAll(): Promise<void> {
    for (const name of remove) {
      options.signal?.throwIfAborted();
      const old = state.byName.get(name)!;
      const oldScripts = state.scripts.get(old.info.checksum ?? "");
      await scripts(old.info, ".pre-deinstall", oldScripts?.get(".pre-deinstall"), [old.info.version]);
      purge(root, old, state, protectedPaths, modifiedDirs);
      state.byName.delete(name);
      await scripts(old.info, ".post-deinstall", oldScripts?.get(".post-deinstall"), [old.info.version]);
    }
    for (const s of staged) {
      options.signal?.throwIfAborted();
      const { pkg, entry } = s.item;
      const args = s.old ? [entry.version, s.old.info.version] : [entry.version];
      const unpacks = (entry.installedSize ?? 1) !== 0;
      if (unpacks)
        await scripts(
          entry,
          s.old ? ".pre-upgrade" : ".pre-install",
          pkg.scripts.get(s.old ? ".pre-upgrade" : ".pre-install"),
          args,
        );
      await placePackage(
        root,
        s,
        [...state.byName.values()],
        permissionUpdates,
        accounts,
        protectedPaths,
        modifiedDirs,
        warnings,
      );
      state.byName.set(entry.name, s.record);
      if (s.old) purge(root, s.old, state, protectedPaths, modifiedDirs);
      await scripts(
        entry,
        s.old ? ".post-upgrade" : ".post-install",
        pkg.scripts.get(s.old ? ".post-upgrade" : ".post-install"),
        args,
      );
    }
    updateDirectoryPermissions(root, permissionUpdates, state.byName.values());
    // Then the triggers of the packages whose globs match a changed directory.
    for (const t of triggerLines) {
      options.signal?.throwIfAborted();
      const dirs = firedDirs(state, t.globs, t.runAll ? undefined : modifiedDirs);
      if (dirs.length) await scripts(t.pkg.info, ".trigger", t.scripts.get(".trigger"), dirs);
    }
  }
}

/** The image's apk databases, as read at the start. */
interface ApkState {
  packages: InstalledPackage[];
  /** The installed packages as the commit goes on. */
  byName: Map<string, InstalledPackage>;
  scripts: Map<string, Map<ApkScriptName, Buffer>>;
  triggers: { checksum: string; globs: string[] }[];
}

async function readApkState(root: string): Promise<ApkState> {
  const packages = await readInstalledDbInRoot(
    root,
    () =>
      new SutureError(
        "PATCH_FAILED",
        `the image has no ${INSTALLED_DB_PATH}, so its apk packages cannot be updated: it is not an apk-managed image`,
      ),
  );
  const scriptsTar = await readFileInRoot(root, SCRIPTS_DB_PATH);
  const triggersText = await readFileInRoot(root, TRIGGERS_DB_PATH);
  return {
    packages,
    byName: new Map(packages.map((p) => [p.info.name, p])),
    scripts: scriptsTar ? await parseScriptsTar(scriptsTar) : new Map(),
    triggers: triggersText ? parseTriggersDb(triggersText.toString("utf8")) : [],
  };
}

function joinPath(dir: string, name: string): string {
  return dir === "" ? name : `${dir}/${name}`;
}

function ownersOf(packages: readonly InstalledPackage[]): Map<string, Owner> {
  const owners = new Map<string, Owner>();
  for (const pkg of packages)
    for (const dir of pkg.dirs)
      for (const file of dir.files) owners.set(joinPath(dir.path, file.name), { pkg, dir, file });
  return owners;
}

/** A package being removed gives up its files: another package may take them. */
function releaseAll(owners: Map<string, Owner>, pkg: InstalledPackage): void {
  for (const [path, o] of owners) if (o.pkg === pkg) owners.delete(path);
}

function packageError(item: ApkInstallItem, why: string): SutureError {
  return new SutureError(
    "INVALID_ARCHIVE",
    `package ${item.entry.name} ${item.entry.version} from ${item.repository} ${why}; ${MALFORMED}`,
  );
}

/** A data archive member's path as components, refused when absolute, climbing or unprintable. */
function memberPath(item: ApkInstallItem, raw: string, what: string): string[] {
  // One line per path in the installed db: a control character would let a package claim a path
  // it never shipped. apk refuses such names too.
  if (/[\0-\x1f\x7f]/.test(raw))
    throw packageError(item, `has a data ${what} ${quoteUntrusted(raw)} with a control character`);
  if (raw.split("/").includes(".."))
    throw packageError(item, `has a data ${what} ${quoteUntrusted(raw)} that climbs with '..'`);
  return normaliseEntryPath(raw, raw, (name, why) =>
    packageError(item, `has a data ${what} ${quoteUntrusted(name)} that ${why}`),
  );
}

function aclOf(entry: ApkDataEntry, xattrs: Map<string, Buffer>): ApkAcl {
  const acl: ApkAcl = { uid: entry.header.uid, gid: entry.header.gid, mode: entry.header.mode & 0o7777 };
  const sum = xattrChecksum(xattrs);
  if (sum) acl.xattrChecksum = sum;
  return acl;
}

function ownerNames(entry: ApkDataEntry): OwnerNames {
  const names: OwnerNames = {};
  if (entry.header.uname) names.user = entry.header.uname;
  if (entry.header.gname) names.group = entry.header.gname;
  return names;
}

/**
 * The owner apk gives a package file (`apk_resolve_uid`): the archive's owner name looked up in the
 * image's /etc/passwd (group in /etc/group), its numeric id when the image has no such name.
 */
async function resolveAcl(accounts: ImageAccounts, acl: ApkAcl, names: OwnerNames): Promise<ApkAcl> {
  if (names.user === undefined && names.group === undefined) return acl;
  const { uid, gid } = await accounts.ids(names);
  return { ...acl, uid: uid ?? acl.uid, gid: gid ?? acl.gid };
}

function sameAcl(a: ApkAcl, b: ApkAcl): boolean {
  return a.uid === b.uid && a.gid === b.gid && a.mode === b.mode && a.xattrChecksum === b.xattrChecksum;
}

/** apk's checksum of a path's xattrs: SHA-1 over the name-sorted (length, name, length, value) pairs. */
function xattrChecksum(xattrs: ReadonlyMap<string, Buffer>): string | undefined {
  if (xattrs.size === 0) return undefined;
  const hash = createHash("sha1");
  const len = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  for (const name of [...xattrs.keys()].sort()) {
    const key = Buffer.from(name);
    const value = xattrs.get(name)!;
    hash.update(len(key.length)).update(key).update(len(value.length)).update(value);
  }
  return formatApkChecksum("sha1", hash.digest());
}

/** What apk records as a member's `Z:`: its SHA-1 (or MD5) PAX checksum; apk 2 knows no other. */
function recordedChecksum(entry: ApkDataEntry): string | undefined {
  const c = entry.checksum;
  if (!c || c.algorithm === "sha256") return undefined;
  return formatApkChecksum(c.algorithm, Buffer.from(c.hex, "hex"));
}

const CREATE = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/**
 * Unpack one package's data archive under `staging` and build its installed record, as apk's
 * `apk_db_install_archive_entry` reads the archive: directories open a `F:` entry, files must
 * lie in a directory the archive listed (or the root), `.keep_*` files and top-level dot names
 * are skipped, a hardlink must point to an earlier file of the package.
 */
async function stagePackage(
  root: string,
  staging: string,
  item: ApkInstallItem,
  old: InstalledPackage | undefined,
  index: number,
): Promise<StagedPackage> {
  const { pkg, entry } = item;
  const dirs: StagedDir[] = [];
  const stagedDirs = new Set<string>();
  const recordDirs = new Map<string, InstalledDir>();
  const files: StagedFile[] = [];
  const byPath = new Map<string, StagedFile>();
  const symlinks = new Set<string>();
  const dirOf = (path: string): InstalledDir => {
    const d = recordDirs.get(path) ?? { path, files: [] };
    recordDirs.set(path, d);
    return d;
  };
  const place = join(staging, String(index));
  mkdirSync(place);
  let n = 0;
  if ((entry.installedSize ?? 1) !== 0) {
    for await (const member of pkg.dataEntries()) {
      const h = member.header;
      const parts = memberPath(item, h.path, "member");
      // apk-tools reads every top-level dot name of the data archive as metadata, never a file.
      if (parts.length === 0 || h.path.startsWith(".")) {
        for await (const _ of member.body);
        continue;
      }
      const path = parts.join("/");
      // A path below one of the package's own symlinks would be written through it, past the
      // ownership checks that name the path as the package does.
      for (let i = 1; i < parts.length; i++)
        if (symlinks.has(parts.slice(0, i).join("/")))
          throw packageError(
            item,
            `has ${quoteUntrusted(path)} below its own symlink ${quoteUntrusted(parts.slice(0, i).join("/"))}`,
          );
      if (h.type === "directory") {
        if (byPath.has(path))
          throw packageError(item, `has ${quoteUntrusted(path)} as both a file and a directory`);
        const d = dirOf(path);
        if (!stagedDirs.has(path))
          dirs.push({
            path,
            acl: aclOf(member, h.xattrs),
            owner: ownerNames(member),
            xattrs: h.xattrs,
            record: d,
          });
        stagedDirs.add(path);
        continue;
      }
      const name = parts.at(-1)!;
      const dir = parts.slice(0, -1).join("/");
      if (name.startsWith(".keep_")) continue;
      if (dir !== "" && !recordDirs.has(dir))
        throw packageError(item, `has ${quoteUntrusted(path)} without an entry for its directory`);
      if (recordDirs.has(path))
        throw packageError(item, `has ${quoteUntrusted(path)} as both a file and a directory`);
      if (h.type !== "file" && h.type !== "symlink" && h.type !== "hardlink")
        throw new SutureError(
          "INVALID_ARCHIVE",
          `package ${entry.name} ${entry.version} ships ${h.type} device ${quoteUntrusted(path)}: packages with device nodes or fifos cannot be installed natively; use --engine sandbox`,
        );
      const record: InstalledFile = { name };
      const staged = join(place, String(n++));
      let checksum = recordedChecksum(member);
      if (h.type === "file") {
        const fd = openSync(staged, CREATE, 0o600);
        try {
          for await (const chunk of member.body) {
            let off = 0;
            while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
          }
          fchownSync(fd, h.uid, h.gid);
          fchmodSync(fd, h.mode & 0o7777);
          futimesSync(fd, h.mtime, h.mtime);
        } finally {
          closeSync(fd);
        }
        applyXattrs(staged, h.xattrs, { isSymlink: false, what: `${path} of the package` });
      } else if (h.type === "symlink") {
        symlinkSync(h.linkname, staged);
        lchownSync(staged, h.uid, h.gid);
        symlinks.add(path);
      } else {
        const target = byPath.get(memberPath(item, h.linkname, `hardlink ${path} target`).join("/"));
        if (!target || !lstatSync(target.staged).isFile())
          throw packageError(
            item,
            `has a hardlink ${quoteUntrusted(path)} to ${quoteUntrusted(h.linkname)}, which is not an earlier file of the package`,
          );
        linkSync(target.staged, staged);
        checksum = target.record.checksum;
      }
      if (checksum !== undefined) record.checksum = checksum;
      const previous = byPath.get(path);
      if (previous) {
        // A later member of the same path replaces the earlier one, as extraction would.
        previous.skip = true;
        const d = recordDirs.get(previous.dir)!;
        d.files = d.files.filter((f) => f !== previous.record);
      }
      const file: StagedFile = {
        dir,
        name,
        staged,
        acl: aclOf(member, h.xattrs),
        owner: ownerNames(member),
        symlink: h.type === "symlink",
        record,
      };
      dirOf(dir).files.push(record);
      byPath.set(path, file);
      files.push(file);
    }
  }
  const fields = installedRecordFields(entry, {
    replaces: pkg.info.replaces,
    ...(pkg.info.replacesPriority === undefined ? {} : { replacesPriority: pkg.info.replacesPriority }),
    ...repositoryTagOf(old),
  });
  const record = installedPackage(fields, [...recordDirs.values()], `package ${entry.name} ${entry.version}`);
  const s: StagedPackage = { item, old, dirs, files: files.filter((f) => !f.skip), record };
  checkTree(root, s);
  return s;
}

function repositoryTagOf(old: InstalledPackage | undefined): { repositoryTag?: string } {
  const tag = old?.fields.find(([l]) => l === "s")?.[1];
  return tag === undefined ? {} : { repositoryTag: tag };
}

/**
 * What the image has where the package puts things, checked before anything is changed: a
 * directory where the package has a file, or a file where it has a directory, is a conflict
 * apk would fail on half-way.
 */
function checkTree(root: string, s: StagedPackage): void {
  const { entry } = s.item;
  const conflict = (path: string, what: string) =>
    new SutureError(
      "PATCH_FAILED",
      `cannot install ${entry.name} ${entry.version}: /${path} is ${what} in the image; remove it from the image or use --engine sandbox`,
    );
  for (const d of s.dirs) {
    const walk = walkInRoot(root, `/${d.path}`, { followFinal: false, keepDirlinks: true });
    if (walk.kind === "not-directory") throw conflict(walk.path.slice(1), "not a directory");
    if (walk.kind === "found" && !walk.stat.isDirectory())
      throw conflict(d.path, "a file, where the package has a directory");
  }
  for (const f of s.files) {
    const walk = walkInRoot(root, `/${joinPath(f.dir, f.name)}`, { followFinal: false });
    if (walk.kind === "not-directory") throw conflict(walk.path.slice(1), "not a directory");
    // A directory the old version had may become a file (alpine-baselayout's /var/lock): its
    // pre-upgrade script migrates it, or it is removed when it holds nothing but the old
    // version's empty directories (placePackage).
    const path = joinPath(f.dir, f.name);
    if (walk.kind === "found" && walk.stat.isDirectory() && !s.old?.dirs.some((d) => d.path === path))
      throw conflict(path, "a directory, where the package has a file");
  }
}

/**
 * Make room for a file where the image has a directory the old version owned: its empty
 * directories listed by the old version are removed, deepest first; anything else in it is a
 * conflict (PATCH_FAILED).
 */
function clearOldDirectory(root: string, s: StagedPackage, path: string, host: string): void {
  const below = (s.old?.dirs ?? [])
    .map((d) => d.path)
    .filter((p) => p === path || p.startsWith(`${path}/`))
    .sort((a, b) => b.split("/").length - a.split("/").length);
  for (const p of below) {
    const walk = walkInRoot(root, `/${p}`, { followFinal: false });
    if (walk.kind !== "found" || !walk.stat.isDirectory()) continue;
    try {
      rmdirSync(walk.host);
    } catch {
      break;
    }
  }
  if (lstatSync(host, { throwIfNoEntry: false })?.isDirectory())
    throw new SutureError(
      "PATCH_FAILED",
      `cannot install ${s.item.entry.name} ${s.item.entry.version}: /${path} is a directory with files in the image, where the package has a file; remove it from the image or use --engine sandbox`,
    );
}

/** apk's `apk_dep_is_materialized`: whether `pkg` (name, version) is what `dep` names. */
function materializes(dep: ApkDependency, pkg: { name: string; version: string }): boolean {
  if (dep.name !== pkg.name) return dep.conflict;
  if (!dep.op || !dep.version || dep.op === "><") return !dep.conflict;
  const fuzzy = dep.op.includes("~");
  const c = fuzzy
    ? compareApkVersionsFuzzy(pkg.version, dep.version)
    : compareApkVersions(pkg.version, dep.version);
  const ok =
    (c < 0 && dep.op.includes("<")) || (c > 0 && dep.op.includes(">")) || (c === 0 && /[=~]/.test(dep.op));
  return ok !== dep.conflict;
}

/**
 * Decide which of a staged package's files it takes over from other installed packages, as apk
 * does: its own old version, a package of the same origin, or one it replaces (`r:`) it takes;
 * a package that replaces it with a higher replaces priority (`q:`) keeps its file (the new one
 * is left out); anything else is a conflict (PATCH_FAILED naming both packages and the path).
 */
function claimFiles(s: StagedPackage, owners: Map<string, Owner>): void {
  const { entry, pkg } = s.item;
  const conflicts: string[] = [];
  for (const f of s.files) {
    const path = joinPath(f.dir, f.name);
    const owner = owners.get(path);
    if (owner && owner.pkg !== s.old && owner.pkg.info.name !== entry.name) {
      const other = owner.pkg.info;
      const sameOrigin = entry.origin !== undefined && other.origin === entry.origin;
      if (!sameOrigin) {
        const theirs = other.replaces.some((d) => materializes(d, entry))
          ? (other.replacesPriority ?? 0)
          : -1;
        const ours = pkg.info.replaces.some((d) => materializes(d, other))
          ? (pkg.info.replacesPriority ?? 0)
          : -1;
        if (theirs > ours) {
          f.skip = true;
          continue;
        }
        if (ours < 0) {
          conflicts.push(`/${path} (owned by ${other.name} ${other.version})`);
          continue;
        }
      }
    }
    if (owner) {
      if (owner.file.checksum !== undefined) f.recordedBefore = owner.file.checksum;
      // The path changes hands: apk drops it from the other package's record.
      if (owner.pkg !== s.old) owner.dir.files = owner.dir.files.filter((x) => x !== owner.file);
    }
    owners.set(path, { pkg: s.record, dir: s.record.dirs.find((d) => d.path === f.dir)!, file: f.record });
  }
  if (conflicts.length)
    throw new SutureError(
      "PATCH_FAILED",
      `cannot install ${entry.name} ${entry.version}: it would overwrite ${conflicts.slice(0, 5).join(", ")}${conflicts.length > 5 ? ` and ${conflicts.length - 5} more` : ""}, and neither package replaces the other; leave it out of the update or use --ignore-errors`,
    );
  for (const f of s.files) {
    if (!f.skip) continue;
    const d = s.record.dirs.find((x) => x.path === f.dir)!;
    d.files = d.files.filter((x) => x !== f.record);
  }
  // Files of the old version that the new one does not have are no longer owned by anybody.
  if (s.old) for (const [path, o] of owners) if (o.pkg === s.old) owners.delete(path);
}

/** The host path of a package path's directory, inside the root; undefined when it is missing. */
function hostDir(root: string, dir: string): string | undefined {
  const walk = walkInRoot(root, `/${dir}`, { followFinal: true });
  return walk.kind === "found" && walk.stat.isDirectory() ? walk.host : undefined;
}

/** The checksum of what is at `host` (a file's content, a symlink's target) in the form of `like`. */
function checksumAt(host: string, like: string | undefined): string | undefined {
  let st: Stats | undefined;
  try {
    st = lstatSync(host);
  } catch {
    return undefined;
  }
  const algorithm = like?.startsWith("Q2")
    ? "sha256"
    : like?.startsWith("Q1")
      ? "sha1"
      : like
        ? "md5"
        : "sha1";
  let data: Buffer;
  if (st.isSymbolicLink()) data = Buffer.from(readlinkSync(host));
  else if (st.isFile()) data = readFileSync(host);
  else return undefined;
  return formatApkChecksum(algorithm, createHash(algorithm).update(data).digest());
}

/**
 * Phase 2 for one package: its directories (created where missing, with the archive's owner,
 * mode and xattrs; existing ones and symlinks to directories left as they are), then its files
 * renamed into place, apk's `apk_db_migrate_files`: in a protected directory, an existing file
 * that is not what the db recorded for it (modified by the image, or unknown to apk) stays; the
 * new version is dropped when identical, else written as `NAME.apk-new`. Owners are resolved by
 * name now, after the package's pre-install script, as apk does.
 */
async function placePackage(
  root: string,
  s: StagedPackage,
  packages: readonly InstalledPackage[],
  permissionUpdates: Set<string>,
  accounts: ImageAccounts,
  protectedPaths: ProtectedPaths,
  modifiedDirs: Set<string>,
  warnings: string[],
): Promise<void> {
  const { entry } = s.item;
  for (const d of s.dirs) {
    const acl = await resolveAcl(accounts, d.acl, d.owner);
    if (sameAcl(acl, DIR_ACL_DEFAULT)) delete d.record.acl;
    else d.record.acl = acl;
    const walk = walkInRoot(root, `/${d.path}`, {
      followFinal: false,
      keepDirlinks: true,
      create: "parents",
    });
    if (walk.kind === "found") {
      // apk_db_dir_prepare: a directory as the db expects it may be brought to the new owners'
      // permissions; one the image changed (or a symlink standing in for it) is left alone.
      const st = lstatSync(walk.host, { throwIfNoEntry: false });
      const expected = combinedDirAcl(d.path, packages);
      if (st?.isDirectory() && expected && matchesAcl(st, expected)) permissionUpdates.add(d.path);
      continue;
    }
    if (walk.kind !== "missing")
      throw new SutureError("PATCH_FAILED", `/${d.path} is not a directory in the image`);
    permissionUpdates.add(d.path);
    mkdirSync(walk.host, { mode: 0o700 });
    chownSync(walk.host, acl.uid, acl.gid);
    chmodSync(walk.host, acl.mode);
    applyXattrs(walk.host, d.xattrs, { isSymlink: false, what: `/${d.path}` });
  }
  for (const d of s.record.dirs) modifiedDirs.add(d.path);
  for (const f of s.files) {
    const path = joinPath(f.dir, f.name);
    if (f.skip) {
      rmSync(f.staged, { force: true });
      continue;
    }
    const acl = await resolveAcl(accounts, f.acl, f.owner);
    if (sameAcl(acl, FILE_ACL_DEFAULT)) delete f.record.acl;
    else f.record.acl = acl;
    if (acl.uid !== f.acl.uid || acl.gid !== f.acl.gid) {
      lchownSync(f.staged, acl.uid, acl.gid);
      // chown clears setuid and setgid.
      if (!f.symlink && acl.mode & 0o7000) chmodSync(f.staged, acl.mode);
    }
    const dir = hostDir(root, f.dir);
    if (!dir)
      throw new SutureError(
        "PATCH_FAILED",
        `cannot install ${entry.name} ${entry.version}: /${f.dir} is not a directory in the image`,
      );
    const host = childPath(dir, f.name, "package file name");
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (st?.isDirectory()) clearOldDirectory(root, s, path, host);
    const recorded = f.recordedBefore;
    if (
      protectedPaths.protects(f.dir) &&
      st !== undefined &&
      !st.isDirectory() &&
      (recorded === undefined || checksumAt(host, recorded) !== recorded)
    ) {
      if (f.record.checksum !== undefined && checksumAt(host, f.record.checksum) === f.record.checksum) {
        rmSync(f.staged, { force: true });
      } else {
        renameInto(f.staged, childPath(dir, `${f.name}.apk-new`, "package file name"), s);
        warnings.push(
          `${entry.name} ${entry.version}: kept /${path}, which the image changed; the package's version is /${path}.apk-new`,
        );
      }
      continue;
    }
    renameInto(f.staged, host, s);
  }
}

/**
 * What apk makes of the owners of a directory listed by several packages: the lowest uid (then
 * gid) among their `M:` acls wins, and the modes of the acls with that owner are and-ed.
 */
function combinedDirAcl(path: string, packages: Iterable<InstalledPackage>): ApkAcl | undefined {
  let acl: ApkAcl | undefined;
  for (const pkg of packages)
    for (const d of pkg.dirs) {
      if (d.path !== path) continue;
      const a = d.acl ?? DIR_ACL_DEFAULT;
      if (!acl || a.uid < acl.uid || (a.uid === acl.uid && a.gid < acl.gid)) acl = { ...a };
      else if (a.uid === acl.uid && a.gid === acl.gid) acl.mode &= a.mode;
    }
  return acl;
}

function matchesAcl(st: Stats, acl: ApkAcl): boolean {
  return (st.mode & 0o7777) === (acl.mode & 0o7777) && st.uid === acl.uid && st.gid === acl.gid;
}

/**
 * apk_db_update_directory_permissions: the directories created now or found as the db expected
 * get the owner and mode their owners (after the commit) combine to.
 */
function updateDirectoryPermissions(
  root: string,
  dirs: Set<string>,
  packages: Iterable<InstalledPackage>,
): void {
  const all = [...packages];
  for (const path of dirs) {
    const acl = combinedDirAcl(path, all);
    if (!acl) continue;
    const walk = walkInRoot(root, `/${path}`, { followFinal: false });
    if (walk.kind !== "found" || !walk.stat.isDirectory() || matchesAcl(walk.stat, acl)) continue;
    chownSync(walk.host, acl.uid, acl.gid);
    chmodSync(walk.host, acl.mode);
  }
}

function renameInto(staged: string, host: string, s: StagedPackage): void {
  try {
    renameSync(staged, host);
  } catch (e) {
    throw new SutureError(
      "PATCH_FAILED",
      `cannot install ${s.item.entry.name} ${s.item.entry.version}: ${host} cannot be replaced (${describeCause(e)}); the image has something else at that path`,
      { cause: e },
    );
  }
}

/**
 * Remove what an old (or removed) package owned and nobody owns now, apk's `apk_db_purge_pkg`:
 * its files (in a protected directory only when unmodified: the image's changes stay), then its
 * directories no installed package lists, when empty, deepest first.
 */
function purge(
  root: string,
  old: InstalledPackage,
  state: ApkState,
  protectedPaths: ProtectedPaths,
  modifiedDirs: Set<string>,
): void {
  const owned = ownersOf([...state.byName.values()]);
  for (const d of old.dirs) {
    modifiedDirs.add(d.path);
    const dir = hostDir(root, d.path);
    for (const f of d.files) {
      const path = joinPath(d.path, f.name);
      const owner = owned.get(path);
      if (owner && owner.pkg !== old) continue;
      if (!dir) continue;
      const host = childPath(dir, f.name, "installed file name");
      const st = lstatSync(host, { throwIfNoEntry: false });
      if (!st || st.isDirectory()) continue;
      if (
        protectedPaths.protects(d.path) &&
        (f.checksum === undefined || checksumAt(host, f.checksum) !== f.checksum)
      )
        continue;
      unlinkSync(host);
    }
  }
  const referenced = new Set<string>();
  for (const pkg of state.byName.values()) {
    if (pkg === old) continue;
    for (const d of pkg.dirs) {
      const parts = d.path.split("/");
      for (let i = 1; i <= parts.length; i++) referenced.add(parts.slice(0, i).join("/"));
    }
  }
  const gone = old.dirs
    .map((d) => d.path)
    .filter((p) => p !== "" && !referenced.has(p))
    .sort((a, b) => b.split("/").length - a.split("/").length);
  for (const path of gone) {
    const walk = walkInRoot(root, `/${path}`, { followFinal: false });
    if (walk.kind !== "found" || !walk.stat.isDirectory()) continue;
    try {
      rmdirSync(walk.host);
    } catch (e) {
      if (isSutureError(e)) throw e;
      // Not empty: something the image or another package put there stays, as with apk.
    }
  }
}

interface TriggerPackage {
  pkg: InstalledPackage;
  globs: string[];
  /** Installed now: its globs fire on every directory, not only the changed ones. */
  runAll: boolean;
  scripts: ReadonlyMap<ApkScriptName, Buffer>;
}

/**
 * The packages with triggers after the commit, in the order apk keeps them: those of the
 * `triggers` db still installed and unchanged, then the packages installed now, in order.
 */
function triggerPackages(
  state: ApkState,
  staged: readonly StagedPackage[],
  changed: Set<string>,
): TriggerPackage[] {
  const out: TriggerPackage[] = [];
  const byChecksum = new Map([...state.byName.values()].map((p) => [p.info.checksum, p]));
  for (const line of state.triggers) {
    const pkg = byChecksum.get(line.checksum);
    if (!pkg || changed.has(pkg.info.name) || out.some((t) => t.pkg === pkg)) continue;
    out.push({
      pkg,
      globs: line.globs,
      runAll: false,
      scripts: state.scripts.get(line.checksum) ?? new Map(),
    });
  }
  for (const s of staged)
    if (s.item.pkg.triggers.length)
      out.push({ pkg: s.record, globs: s.item.pkg.triggers, runAll: true, scripts: s.item.pkg.scripts });
  return out;
}

/** The directories (rooted, sorted) a package's trigger globs fire on: among `only` when given. */
function firedDirs(state: ApkState, globs: readonly string[], only: Set<string> | undefined): string[] {
  const dirs = new Set<string>();
  for (const pkg of state.byName.values())
    for (const d of pkg.dirs) {
      const parts = d.path.split("/");
      for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
    }
  for (const d of only ?? []) dirs.add(d);
  const out: string[] = [];
  for (const dir of [...dirs].sort()) {
    if (dir === "" || (only && !only.has(dir))) continue;
    if (globs.some((g) => g.startsWith("/") && matchesPathname(g, `/${dir}`))) out.push(`/${dir}`);
  }
  return out;
}

/** apk's display order of names: case-insensitive, then byte order. */
function compareNames(a: string, b: string): number {
  const la = a.toLowerCase();
  const lb = b.toLowerCase();
  if (la !== lb) return la < lb ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The host path of one of apk's database files (its directory resolved inside the root). */
function dbFile(root: string, path: string): string {
  const slash = path.lastIndexOf("/");
  const walk = walkInRoot(root, path.slice(0, slash), { followFinal: true, create: "all" });
  if (walk.kind !== "found" || !walk.stat.isDirectory())
    throw new SutureError(
      "PATCH_FAILED",
      `${walk.path} is not a directory in the image, but apk keeps its database there`,
    );
  return childPath(walk.host, path.slice(slash + 1), "apk database file");
}

async function writeApkState(
  root: string,
  state: ApkState,
  staged: readonly StagedPackage[],
  triggers: readonly TriggerPackage[],
): Promise<void> {
  const installed = [...state.byName.values()].sort((a, b) => compareNames(a.info.name, b.info.name));
  const changed = new Set(staged.map((s) => s.record));
  // apk keeps packages in the order it read them (the db's, by name) and appends those it installs.
  const scriptOwners: ScriptsOwner[] = [];
  for (const pkg of installed) {
    if (changed.has(pkg)) continue;
    const scripts = state.scripts.get(pkg.info.checksum ?? "");
    if (scripts) scriptOwners.push(ownerOf(pkg, scripts));
  }
  for (const s of staged)
    if (s.item.pkg.scripts.size) scriptOwners.push(ownerOf(s.record, s.item.pkg.scripts));
  const write = (path: string, data: string | Buffer) =>
    writeFileAtomic(dbFile(root, path), data, {
      mode: 0o644,
      exactMode: true,
      failure: `cannot write the image's ${path}`,
    });
  await write(SCRIPTS_DB_PATH, serializeScriptsTar(scriptOwners));
  await write(
    TRIGGERS_DB_PATH,
    serializeTriggersDb(triggers.map((t) => ({ checksum: t.pkg.info.checksum ?? "", globs: t.globs }))),
  );
  // Last: the installed db is what says the new versions are there.
  await write(INSTALLED_DB_PATH, serializeInstalledDb(installed));
}

function ownerOf(pkg: InstalledPackage, scripts: ReadonlyMap<ApkScriptName, Buffer>): ScriptsOwner {
  return {
    name: pkg.info.name,
    version: pkg.info.version,
    checksum: pkg.info.checksum ?? "",
    ...(pkg.info.buildTime === undefined ? {} : { buildTime: pkg.info.buildTime }),
    scripts,
  };
}
