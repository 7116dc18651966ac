import { createHash } from "node:crypto";
import {
  closeSync,
  fchmodSync,
  fchownSync,
  constants as fsConstants,
  fstatSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readlinkSync,
  readSync,
  renameSync,
  rmdirSync,
  rmSync,
  type Stats,
  symlinkSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, join } from "node:path";
import { ImageAccounts } from "../../../../distro/accounts.ts";
import { writeRpmDatabase } from "../../../../distro/rpm/database/write.ts";
import {
  formatRpmEvr,
  formatRpmNevra,
  RpmDigestAlgo,
  RpmFileFlag,
  RpmTag,
} from "../../../../distro/rpm/header.ts";
import { type RpmFileEntry, rpmHeaderFiles } from "../../../../distro/rpm/header-contents.ts";
import type { InstalledRpm, RpmDatabaseLocation } from "../../../../distro/rpm/installed.ts";
import {
  installedRpmHeader,
  type RpmFileState,
  type RpmInstallStamp,
  rpmTransactionColor,
} from "../../../../distro/rpm/installed-header.ts";
import { type RpmPackage, rpmPayloadEntries } from "../../../../distro/rpm/package.ts";
import { parseIni } from "../../../../distro/rpm/repo-config.ts";
import { compareRpmVersions } from "../../../../distro/rpm/version.ts";
import { describeCause, isSutureError, quoteUntrusted, SutureError } from "../../../../errors/errors.ts";
import { capabilityXattr } from "../../../../fs/capabilities.ts";
import { childPath, listDirInRoot, readFileInRoot, walkInRoot } from "../../../../fs/in-root.ts";
import { applyXattrs } from "../../../../fs/xattrs.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import type { EngineSandbox } from "../../engine.ts";
import { imageHasProgram } from "../../shared/script-files.ts";
import {
  DEFAULT_TRIGGER_PRIORITY,
  type RpmFileTrigger,
  type RpmScript,
  RpmScriptFlag,
  RpmScriptRunner,
  type RpmTrigger,
  RpmTriggerSense,
  rpmHeaderFileTriggers,
  rpmHeaderTriggers,
  scriptletOf,
  scriptNeed,
} from "./scripts.ts";

/**
 * Installing verified .rpm packages into an image's root with rpm's semantics (rpm 4.18's
 * lib/transaction.cc, fsm.cc, psm.cc, rpmfi.cc), without rpm:
 *
 * 1. Checked and staged before the image is touched: every scriptlet that would run can run
 *    (`<lua>` and install-time macro bodies only rpm can run: refused naming `--engine sandbox`;
 *    without a shell, see below), no file conflicts with an installed package that stays or
 *    between the new ones (rpm's rpmfilesCompare: mode, size, owner, digest or link target;
 *    identical shared files are fine), no directory in the image where a package has a file,
 *    no file below the package's own symlink; then each payload is streamed (`rpmPayloadEntries`
 *    checks every file digest) into a staging directory inside the root: regular files,
 *    symlinks, hard links (the set's content comes with one member). Any failure removes the
 *    staging directory: the root is as it was.
 * 2. As rpm runs a transaction: `%pretrans` of the new packages; each file's fate decided once
 *    against the image (rpm's rpmfilesDecideFate and rpmfilesConfigConflict: an edited
 *    `%config(noreplace)` is kept and the new one written as `.rpmnew`, an edited plain `%config`
 *    saved as `.rpmsave`, an unowned config file in the way kept as `.rpmorig`, an unedited
 *    config replaced, one identical in both versions left alone); `%preuntrans` and
 *    `%transfiletriggerun` of what is erased; per package `%triggerprein`, `%pre` (`$1` =
 *    instances after: 2 on upgrade, 1 on install), its files moved into place with owners
 *    resolved by name in the image after `%pre` (unknown → root, as rpm warns), modes, mtimes
 *    and capabilities (`security.capability`), `%filetriggerin`, `%post`, `%triggerin`; then the
 *    version it replaces is erased: `%filetriggerun`, `%triggerun`, `%preun` (`$1` = 1), its
 *    files the new version and no other installed package has removed (an edited config saved
 *    as `.rpmsave`), `%filetriggerpostun`, `%postun`, `%triggerpostun`. Packages the new ones
 *    obsolete are erased the same way (`$1` = 0), after them.
 * 3. The rpm database written once (`writeRpmDatabase`, with `installedRpmHeader` and the file
 *    states decided here), then `%posttrans`, `%postuntrans`, `%transfiletriggerin`,
 *    `%transfiletriggerpostun`. File triggers get `$1` = 0 and their files on standard input,
 *    as rpm 4.14-4.19 run them; the order and arguments of all of it are held to `rpm -U`'s.
 *
 * Failures of `%pretrans`, `%pre`, `%preun` (rpm's critical scriptlets) stop the install; the
 * others are warnings, as rpm reports them. Without a shell (`runScripts` false) a package whose
 * scriptlets would run is refused, unless all they do is `/sbin/ldconfig`: that program runs
 * directly in runc (it needs no shell), or, when the image has none, is skipped with a warning
 * (without a linker cache the dynamic linker still searches its default directories).
 *
 * Docs are left out when the image's rpm macros set `%_excludedocs` or its dnf/yum `tsflags` say
 * `nodocs` (zypper: `rpm.install.excludedocs`); language files outside `%_install_langs`; both
 * recorded as not installed, as rpm records them. Not done: `%_netsharedpath` (such files are
 * installed), multilib file colors (a differing file of the other architecture is a conflict),
 * device nodes, FIFOs and sockets (refused naming `--engine sandbox`). Every path goes through
 * the in-root resolver: nothing is written or followed outside the root.
 */

export interface RpmInstallItem {
  /** openRpm'd from `file`, checked against its repo checksum, signature verified. */
  pkg: RpmPackage;
  /** The verified .rpm on disk. */
  file: string;
  /** Repo id as the image names it, for messages. */
  repository: string;
  /** The installed package of the same name and arch it upgrades. */
  replaces?: InstalledRpm;
}

export interface RpmInstallOptions {
  /** `mergedDir` is the image root; `run()` runs scriptlets in runc. */
  sandbox: EngineSandbox;
  database: RpmDatabaseLocation;
  /** The database as read before the change (other owners of files). */
  installed: readonly InstalledRpm[];
  /** Packages erased because a new one obsoletes them. */
  obsoleted: readonly InstalledRpm[];
  /** False when the image has no shell: scriptlets are refused, ldconfig ones skipped or run directly. */
  runScripts: boolean;
  progress: ProgressSink;
  signal?: AbortSignal;
  /** Per script. */
  timeoutMs?: number;
}

/** What happened: warnings, time in scripts, and the file states each new package's header records. */
export interface RpmInstallOutcome {
  warnings: string[];
  scriptsMs: number;
  fileStates: Map<RpmPackage, RpmFileState[]>;
}

/** A file's fate (rpm's rpmFileAction). */
type Action = "create" | "touch" | "skip" | "altname" | "save" | "backup" | "erase" | "notinstalled";

type FileType = "file" | "directory" | "symlink" | "other";

/** A file as the installer compares it: a new package's or an installed one's. */
interface FileRef {
  entry: RpmFileEntry;
  type: FileType;
  digestAlgorithm: string;
}

interface NewFile extends FileRef {
  index: number;
  path: string;
  /** Path with its directory resolved in the image (rpm's fingerprint). */
  fp: string;
  action: Action;
  /** Where the payload's content waits, in the staging directory. */
  staged?: string;
  /** Key of its hard link set (inode:device), when it has more than one name. */
  linkSet?: string;
  /** Another new package has the same file first (identical): left to it. */
  sharedWith?: string;
}

interface NewPackage {
  item: RpmInstallItem;
  label: string;
  files: NewFile[];
}

interface OldPackage {
  pkg: InstalledRpm;
  label: string;
  files: (FileRef & { path: string; fp: string; state: number; action: Action })[];
}

/** What rpm 4.14 to 4.19 pass file triggers as `$1` (rpmtriggers.c: runScript(…, 0, -1)). */
const FILE_TRIGGER_ARG = 0;
const MALFORMED = "the package is malformed or hostile, so nothing was installed";
const SANDBOX_FIX = "use --engine sandbox, which runs the image's own rpm";

const DIGESTS: Record<number, string> = {
  [RpmDigestAlgo.MD5]: "md5",
  [RpmDigestAlgo.SHA1]: "sha1",
  [RpmDigestAlgo.SHA256]: "sha256",
  [RpmDigestAlgo.SHA384]: "sha384",
  [RpmDigestAlgo.SHA512]: "sha512",
};

export async function installRpmPackages(
  items: readonly RpmInstallItem[],
  options: RpmInstallOptions,
): Promise<RpmInstallOutcome> {
  try {
    return await install(items, options);
  } catch (e) {
    // A file operation the host refused (EPERM on chown or an xattr, ENOSPC, EROFS): one line
    // with its errno text, not an internal error.
    if (isSutureError(e) || typeof (e as NodeJS.ErrnoException).code !== "string") throw e;
    throw new SutureError(
      "IO",
      `cannot install the rpm packages into the image: ${describeCause(e)}; check the space and permissions of --cache-dir`,
      { cause: e },
    );
  }
}

/**
 * INSTALLTIME and INSTALLTID: now, or SOURCE_DATE_EPOCH when the build sets one (reproducible
 * layers); INSTALLCOLOR as the image's rpm would use it.
 */
function installStamp(installed: readonly InstalledRpm[]): RpmInstallStamp {
  const env = process.env.SOURCE_DATE_EPOCH;
  const time = env && /^\d{1,12}$/.test(env) ? Number(env) : Math.floor(Date.now() / 1000);
  // The image's architecture: the one most of its packages are built for.
  const arches = new Map<string, number>();
  for (const p of installed)
    if (p.nevra.arch && p.nevra.arch !== "noarch")
      arches.set(p.nevra.arch, (arches.get(p.nevra.arch) ?? 0) + 1);
  const arch =
    [...arches].sort((a, b) => b[1] - a[1])[0]?.[0] ??
    process.arch.replace("x64", "x86_64").replace("arm64", "aarch64");
  return { time, tid: time, color: rpmTransactionColor(installed, arch) };
}

/** The database write, where rpm's database has every change of the transaction (before %posttrans). */
async function writeDatabase(
  items: readonly RpmInstallItem[],
  options: RpmInstallOptions,
  fileStates: Map<RpmPackage, RpmFileState[]>,
): Promise<void> {
  const stamp = installStamp(options.installed);
  await writeRpmDatabase(options.sandbox.mergedDir, options.database, {
    add: items.map((item) => ({
      pkg: item.pkg,
      header: installedRpmHeader(item.pkg, stamp, fileStates.get(item.pkg) ?? []),
    })),
    remove: [...items.flatMap((i) => (i.replaces ? [i.replaces] : [])), ...options.obsoleted],
  });
}

async function install(
  items: readonly RpmInstallItem[],
  options: RpmInstallOptions,
): Promise<RpmInstallOutcome> {
  const root = options.sandbox.mergedDir;
  const warnings: string[] = [];
  const policy = await readInstallPolicy(root);
  const fingerprints = new Fingerprints(root);

  // Phase 1a: what the transaction is, checked before anything is read from the payloads.
  const removing = new Set<InstalledRpm>();
  const seen = new Set<string>();
  for (const item of items) {
    const key = `${item.pkg.nevra.name}.${item.pkg.nevra.arch ?? ""}`;
    if (seen.has(key))
      throw new SutureError("INTERNAL", `package ${key} is to be installed twice in one transaction`);
    seen.add(key);
    if (item.replaces) {
      if (!options.installed.includes(item.replaces))
        throw new SutureError(
          "INTERNAL",
          `${formatRpmNevra(item.replaces.nevra)} is to be replaced but is not among the installed packages`,
        );
      removing.add(item.replaces);
    }
  }
  for (const o of options.obsoleted) {
    if (!options.installed.includes(o))
      throw new SutureError(
        "INTERNAL",
        `${formatRpmNevra(o.nevra)} is to be erased but is not among the installed packages`,
      );
    removing.add(o);
  }
  const newPackages = items.map((item) => newPackage(item, policy, fingerprints));
  const oldPackages = [...removing].map((pkg) => oldPackage(pkg, fingerprints));
  const staying = options.installed.filter((p) => !removing.has(p) && p.header);
  const stayingFiles = ownersOf(staying, fingerprints);

  const runner = new RpmScriptRunner(options.sandbox, options.timeoutMs);
  const plan = new ScriptPlan(root, options, runner, warnings);
  for (const n of newPackages) {
    for (const kind of ["pretrans", "pre", "post", "posttrans"] as const) {
      const s = scriptletOf(n.item.pkg.header, kind);
      if (s) plan.check(n.label, s);
    }
  }
  for (const o of oldPackages)
    for (const kind of ["preuntrans", "preun", "postun", "postuntrans"] as const) {
      const s = o.pkg.header ? scriptletOf(o.pkg.header, kind) : undefined;
      if (s) plan.check(o.label, s);
    }
  checkConflicts(root, newPackages, oldPackages, stayingFiles);

  // Phase 1b: stage every payload (nothing visible in the image yet).
  const staging = mkdtempSync(join(root, ".suture-rpm-"));
  runner.hide(`/${basename(staging)}`);
  try {
    for (const [i, n] of newPackages.entries()) {
      options.signal?.throwIfAborted();
      await stagePayload(n, join(staging, String(i)), options.signal);
    }
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }

  // Phase 2: the transaction, as rpm runs it.
  const counts = new Map<string, number>();
  for (const p of options.installed) counts.set(p.nevra.name, (counts.get(p.nevra.name) ?? 0) + 1);
  const count = (name: string) => counts.get(name) ?? 0;
  const accounts = new ImageAccounts(root);
  const db = new LiveDb(options.installed);
  const fileStates = new Map<RpmPackage, RpmFileState[]>();
  const postunTrans: { owner: DbPackage; trigger: RpmFileTrigger }[] = [];
  try {
    for (const n of newPackages) {
      options.signal?.throwIfAborted();
      const s = scriptletOf(n.item.pkg.header, "pretrans");
      if (s) await plan.run(n.label, s, [count(n.item.pkg.nevra.name) + 1], { critical: true });
    }
    // rpm decides every file's fate once, before the first package (rpmtsPrepare).
    for (const n of newPackages) decideNewFates(root, n, oldPackages, stayingFiles);
    // Files left out (docs, languages) are not in rpm's fingerprint cache: they keep nothing.
    const newFps = new Set(
      newPackages.flatMap((n) => n.files.filter((f) => f.action !== "notinstalled").map((f) => f.fp)),
    );
    decideEraseFates(root, oldPackages, newFps, stayingFiles);
    // rpm ≥ 4.20's %preuntrans of the packages erased, then %transfiletriggerun.
    for (const o of oldPackages) {
      const s = o.pkg.header && scriptletOf(o.pkg.header, "preuntrans");
      if (s) await plan.run(o.label, s, [count(o.pkg.nevra.name)], { critical: true });
    }
    await plan.transFileTriggers(
      db,
      RpmTriggerSense.UN,
      oldPackages.flatMap((o) => {
        const me = db.byPackage(o.pkg);
        return me ? db.filesOf(me) : [];
      }),
      oldPackages.flatMap((o) => {
        const me = db.byPackage(o.pkg);
        return me ? [me] : [];
      }),
    );

    for (const n of newPackages) {
      options.signal?.throwIfAborted();
      const { pkg } = n.item;
      const name = pkg.nevra.name;
      const arg = count(name) + 1;
      const me: DbPackage = {
        name,
        label: n.label,
        header: pkg.header,
        nevra: pkg.nevra,
        files: installedPaths(n),
      };
      await plan.triggers(db, me, RpmTriggerSense.PREIN, count, 0);
      const pre = scriptletOf(pkg.header, "pre");
      if (pre) await plan.run(n.label, pre, [arg], { critical: true });
      await placePackage(root, n, accounts, warnings);
      fileStates.set(pkg, n.files.map(stateOf));
      counts.set(name, arg);
      db.add(me);
      await plan.fileTriggers(db, me, RpmTriggerSense.IN, "high");
      const post = scriptletOf(pkg.header, "post");
      if (post) await plan.run(n.label, post, [arg], { critical: false });
      await plan.triggers(db, me, RpmTriggerSense.IN, count, 0);
      await plan.fileTriggers(db, me, RpmTriggerSense.IN, "low");
      const old = n.item.replaces && oldPackages.find((o) => o.pkg === n.item.replaces);
      if (old) await erase(old);
    }
    for (const o of oldPackages) if (!newPackages.some((n) => n.item.replaces === o.pkg)) await erase(o);
  } finally {
    rmSync(staging, { recursive: true, force: true });
    runner.unhide(`/${basename(staging)}`);
    // The staging directory's removal changed the root's mtime, which a `%dir /` had set.
    const rootDir = newPackages
      .flatMap((n) => n.files)
      .findLast(
        (f) => f.path === "/" && f.type === "directory" && f.action !== "skip" && f.action !== "notinstalled",
      );
    if (rootDir) lutimesSync(root, rootDir.entry.mtime, rootDir.entry.mtime);
  }

  await writeDatabase(items, options, fileStates);

  try {
    for (const n of newPackages) {
      options.signal?.throwIfAborted();
      const s = scriptletOf(n.item.pkg.header, "posttrans");
      const name = n.item.pkg.nevra.name;
      if (s) await plan.run(n.label, s, [count(name) + (n.item.replaces ? 1 : 0)], { critical: false });
    }
    for (const o of oldPackages) {
      const s = o.pkg.header && scriptletOf(o.pkg.header, "postuntrans");
      if (s) await plan.run(o.label, s, [count(o.pkg.nevra.name)], { critical: false });
    }
    const news = db.all.filter((p) => newPackages.some((n) => n.item.pkg.header === p.header));
    await plan.transFileTriggers(
      db,
      RpmTriggerSense.IN,
      newPackages.flatMap((n) => installedPaths(n)),
      news,
    );
    for (const t of postunTrans.sort((a, b) => b.trigger.priority - a.trigger.priority)) {
      if (!db.has(t.owner)) continue;
      await plan.run(t.owner.label, t.trigger.script, [FILE_TRIGGER_ARG], { critical: false });
    }
  } finally {
    runner.finish();
  }
  plan.report();
  return { warnings, scriptsMs: runner.ms, fileStates };

  async function erase(o: OldPackage): Promise<void> {
    options.signal?.throwIfAborted();
    const name = o.pkg.nevra.name;
    const arg = count(name) - 1;
    const me = db.byPackage(o.pkg);
    // What its erase file triggers match: the files it leaves (not those the new version keeps).
    const erased = o.files.filter((f) => f.action === "erase" || f.action === "save").map((f) => f.path);
    if (me) {
      await plan.fileTriggers(db, me, RpmTriggerSense.UN, "high", erased);
      await plan.triggers(db, me, RpmTriggerSense.UN, count, -1);
      const preun = scriptletOf(me.header, "preun");
      if (preun) await plan.run(o.label, preun, [arg], { critical: true });
      await plan.fileTriggers(db, me, RpmTriggerSense.UN, "low", erased);
    }
    removeFiles(root, o, warnings);
    if (me) {
      await plan.fileTriggers(db, me, RpmTriggerSense.POSTUN, "high", erased);
      const postun = scriptletOf(me.header, "postun");
      if (postun) await plan.run(o.label, postun, [arg], { critical: false });
      await plan.triggers(db, me, RpmTriggerSense.POSTUN, count, -1);
      await plan.fileTriggers(db, me, RpmTriggerSense.POSTUN, "low", erased);
      // rpmtriggersPrepPostUnTransFileTrigs: the database's %transfiletriggerpostun whose prefix
      // a file it had installed matches; each runs once, after the transaction.
      const had = db.filesOf(me);
      for (const owner of db.all)
        for (const t of fileTriggersOf(owner.header, true, owner.label)) {
          if (!(t.flags & RpmTriggerSense.POSTUN)) continue;
          if (postunTrans.some((x) => x.owner === owner && x.trigger.index === t.index)) continue;
          if (had.some((p) => p.startsWith(t.prefix))) postunTrans.push({ owner, trigger: t });
        }
      db.remove(me);
    }
    counts.set(name, arg);
  }
}

// ---------------------------------------------------------------------------------------------
// What the image asks of installs: docs and languages.

interface InstallPolicy {
  excludeDocs: boolean;
  /** `%_install_langs` split at `:`; undefined: all. */
  langs?: string[];
}

/** rpm's macro files, in the order rpm reads them (later definitions win). */
const MACRO_FILES = ["/usr/lib/rpm/macros", "/usr/lib/rpm/macros.d", "/etc/rpm/macros.*", "/etc/rpm/macros"];

async function readInstallPolicy(root: string): Promise<InstallPolicy> {
  const macros = new Map<string, string>();
  const readMacros = (text: string) => {
    for (const m of text.matchAll(/^%(_excludedocs|_install_langs)[ \t]+(.*)$/gm))
      macros.set(m[1]!, m[2]!.trim());
  };
  for (const spec of MACRO_FILES) {
    if (spec.endsWith(".*") || spec.endsWith("macros.d")) {
      const dir = spec.endsWith(".*") ? spec.slice(0, spec.lastIndexOf("/")) : spec;
      for (const name of await listDirInRoot(root, dir)) {
        if (!name.startsWith("macros.")) continue;
        const text = await readFileInRoot(root, `${dir}/${name}`, { limit: 4 * 1024 * 1024 });
        if (text) readMacros(text.toString("utf8"));
      }
    } else {
      const text = await readFileInRoot(root, spec, { limit: 4 * 1024 * 1024 });
      if (text) readMacros(text.toString("utf8"));
    }
  }
  let excludeDocs = /^[1-9]/.test(macros.get("_excludedocs") ?? "0");
  for (const file of ["/etc/dnf/dnf.conf", "/etc/yum.conf"]) {
    const text = await readFileInRoot(root, file, { limit: 4 * 1024 * 1024 });
    if (!text) continue;
    try {
      const main = parseIni(text.toString("utf8"), file).find((s) => s.name === "main");
      const flags = main?.values.get("tsflags") ?? "";
      if (flags.split(/[\s,]+/).includes("nodocs")) excludeDocs = true;
    } catch {
      // A configuration the image's dnf could not read either; the docs are installed.
    }
    break;
  }
  const zypp = await readFileInRoot(root, "/etc/zypp/zypp.conf", { limit: 4 * 1024 * 1024 });
  if (zypp && /^\s*rpm\.install\.excludedocs\s*=\s*(yes|true|1)\s*$/im.test(zypp.toString("utf8")))
    excludeDocs = true;
  const langs = macros.get("_install_langs");
  const policy: InstallPolicy = { excludeDocs };
  // A value with macros in it is left alone (rpm would expand it): every language is installed.
  if (langs && langs !== "all" && !langs.includes("%")) policy.langs = langs.split(":").filter(Boolean);
  return policy;
}

/** rpm's skipInstallFiles: a language file whose languages are none of `%_install_langs`. */
function langExcluded(fileLangs: string, langs: readonly string[] | undefined): boolean {
  if (!langs || fileLangs === "") return false;
  // rpm compares each file language with the start of each install language ("en" fits "en_US").
  return !langs.some((lang) => fileLangs.split("|").some((l) => l !== "" && lang.startsWith(l)));
}

// ---------------------------------------------------------------------------------------------
// The transaction's packages and their files.

function typeOf(mode: number): FileType {
  switch (mode & 0o170000) {
    case 0o100000:
      return "file";
    case 0o040000:
      return "directory";
    case 0o120000:
      return "symlink";
    default:
      return "other";
  }
}

function typeOfStat(st: Stats): FileType {
  return st.isFile() ? "file" : st.isDirectory() ? "directory" : st.isSymbolicLink() ? "symlink" : "other";
}

/** rpm's fingerprints: a path with its directory resolved through the image's symlinks (/lib → usr/lib). */
class Fingerprints {
  readonly #root: string;
  readonly #dirs = new Map<string, string>();

  constructor(root: string) {
    this.#root = root;
  }

  of(path: string): string {
    const slash = path.lastIndexOf("/");
    const dir = slash <= 0 ? "/" : path.slice(0, slash);
    let resolved = this.#dirs.get(dir);
    if (resolved === undefined) {
      resolved = dir === "/" ? "/" : walkInRoot(this.#root, dir, { followFinal: true }).path;
      this.#dirs.set(dir, resolved);
    }
    return `${resolved === "/" ? "" : resolved}/${path.slice(slash + 1)}`;
  }
}

function newPackage(item: RpmInstallItem, policy: InstallPolicy, fingerprints: Fingerprints): NewPackage {
  const { pkg } = item;
  const label = `${formatRpmNevra(pkg.nevra)} from ${item.repository}`;
  const langs = pkg.header.stringArray(RpmTag.FILELANGS);
  const links = new Map<string, number>();
  for (const f of pkg.files)
    if (f.type === "file" && !f.ghost && f.inode !== 0) {
      const key = `${f.inode}:${f.device}`;
      links.set(key, (links.get(key) ?? 0) + 1);
    }
  const files: NewFile[] = pkg.files.map((f) => {
    if (f.type !== "file" && f.type !== "directory" && f.type !== "symlink" && !f.ghost)
      throw new SutureError(
        "PATCH_FAILED",
        `cannot install ${label} natively: it ships ${f.type} ${quoteUntrusted(f.path)}, and suture creates no device nodes, FIFOs or sockets; ${SANDBOX_FIX}`,
      );
    // Refused here, before the image is touched: placing it would replace the root itself.
    if (f.path === "/" && f.type !== "directory" && !f.ghost)
      throw new SutureError(
        "UNSAFE_LAYER",
        `${label} has a ${f.type} at / instead of a directory; ${MALFORMED}`,
      );
    const key = `${f.inode}:${f.device}`;
    const excluded =
      (policy.excludeDocs && (f.flags & RpmFileFlag.DOC) !== 0 && (f.flags & RpmFileFlag.LICENSE) === 0) ||
      ((f.flags & RpmFileFlag.LICENSE) === 0 && langExcluded(langs[f.index] ?? "", policy.langs));
    return {
      entry: f,
      type: typeOf(f.mode),
      digestAlgorithm: pkg.fileDigestAlgorithm,
      index: f.index,
      path: f.path,
      fp: fingerprints.of(f.path),
      action: f.ghost ? "skip" : excluded ? "notinstalled" : "create",
      ...(f.type === "file" && (links.get(key) ?? 0) > 1 ? { linkSet: key } : {}),
    };
  });
  // A path below one of the package's own symlinks would be written through it, past the
  // ownership and conflict checks that name the path as the package does.
  const symlinks = new Set(files.filter((f) => f.type === "symlink").map((f) => f.path));
  for (const f of files)
    for (let i = f.path.indexOf("/", 1); i > 0; i = f.path.indexOf("/", i + 1))
      if (symlinks.has(f.path.slice(0, i)))
        throw new SutureError(
          "UNSAFE_LAYER",
          `${label} has ${quoteUntrusted(f.path)} below its own symlink ${quoteUntrusted(f.path.slice(0, i))}; ${MALFORMED}`,
        );
  // rpm's skipInstallFiles: a directory whose files were all left out is left out too.
  const kept = new Map<string, boolean>();
  for (const f of files) {
    const dir = f.path.slice(0, f.path.lastIndexOf("/")) || "/";
    if (f.action !== "notinstalled") kept.set(dir, true);
    else if (!kept.has(dir)) kept.set(dir, false);
  }
  for (const f of files) if (f.type === "directory" && kept.get(f.path) === false) f.action = "notinstalled";
  return { item, label, files };
}

function digestAlgorithmOf(header: { number(tag: number): number | undefined }): string {
  return DIGESTS[header.number(RpmTag.FILEDIGESTALGO) ?? RpmDigestAlgo.MD5] ?? "md5";
}

function oldPackage(pkg: InstalledRpm, fingerprints: Fingerprints): OldPackage {
  const label = formatRpmNevra(pkg.nevra);
  if (!pkg.header) return { pkg, label, files: [] };
  const algorithm = digestAlgorithmOf(pkg.header);
  const entries = rpmHeaderFiles(pkg.header, `installed package ${label}`);
  // Erasing goes by these paths: refused now, before the image is touched, rather than halfway.
  const odd = entries.find(
    (e) => !e.path.startsWith("/") || (e.path !== "/" && /(^|\/)(\.\.?)?(\/|$)/.test(e.path.slice(1))),
  );
  if (odd)
    throw new SutureError(
      "UNSAFE_LAYER",
      `the image's rpm database lists ${quoteUntrusted(odd.path)} for ${label}, which is not a plain absolute path; the database is malformed or hostile, so nothing was written`,
    );
  return {
    pkg,
    label,
    files: entries.map((entry) => ({
      entry,
      type: typeOf(entry.mode),
      digestAlgorithm: algorithm,
      path: entry.path,
      fp: fingerprints.of(entry.path),
      state: entry.state ?? 0,
      action: "skip" as Action,
    })),
  };
}

interface Owned {
  owner: InstalledRpm;
  file: FileRef & { state: number };
}

/** Fingerprint → the files installed packages have there. */
function ownersOf(packages: readonly InstalledRpm[], fingerprints: Fingerprints): Map<string, Owned[]> {
  const owners = new Map<string, Owned[]>();
  for (const owner of packages) {
    if (!owner.header) continue;
    const algorithm = digestAlgorithmOf(owner.header);
    for (const entry of rpmHeaderFiles(owner.header, `installed package ${formatRpmNevra(owner.nevra)}`)) {
      const fp = fingerprints.of(entry.path);
      const list = owners.get(fp) ?? [];
      list.push({
        owner,
        file: { entry, type: typeOf(entry.mode), digestAlgorithm: algorithm, state: entry.state ?? 0 },
      });
      owners.set(fp, list);
    }
  }
  return owners;
}

/** rpm's rpmfilesCompare: whether two packages' entries for one path differ (0: the same). */
function filesDiffer(a: FileRef, b: FileRef): boolean {
  if (a.entry.flags & RpmFileFlag.GHOST || b.entry.flags & RpmFileFlag.GHOST) return false;
  if (!(a.type === "symlink" && b.type === "symlink") && a.entry.mode !== b.entry.mode) return true;
  if ((a.type === "symlink" || a.type === "file") && a.entry.size !== b.entry.size) return true;
  if (a.entry.user !== b.entry.user || a.entry.group !== b.entry.group) return true;
  if (a.type === "symlink") return a.entry.linkTo !== b.entry.linkTo;
  if (a.type === "file") return a.digestAlgorithm !== b.digestAlgorithm || a.entry.digest !== b.entry.digest;
  if (a.type === "other") return a.entry.rdev !== b.entry.rdev;
  return false;
}

/**
 * File conflicts, refused as rpm refuses them: a new file that differs from the same path of an
 * installed package that stays (or of another new package); a directory of a replaced version
 * becoming something else while the image still has a directory there; a directory in the
 * image where a new package has anything else.
 */
function checkConflicts(
  root: string,
  newPackages: readonly NewPackage[],
  oldPackages: readonly OldPackage[],
  staying: Map<string, Owned[]>,
): void {
  const added = new Map<string, { n: NewPackage; f: NewFile }>();
  for (const n of newPackages) {
    const conflicts: string[] = [];
    for (const f of n.files) {
      for (const o of staying.get(f.fp) ?? []) {
        if (o.file.state === 2) continue;
        if (filesDiffer(o.file, f))
          conflicts.push(`${f.path} conflicts with the file of installed ${formatRpmNevra(o.owner.nevra)}`);
      }
      const other = added.get(f.fp);
      if (other) {
        if (filesDiffer(other.f, f)) conflicts.push(`${f.path} conflicts with the file of ${other.n.label}`);
        // rpm creates a shared file once, from the first package that really writes it (a
        // ghost or a left-out file there writes nothing).
        else if (other.f.action === "create" && f.action === "create") f.sharedWith = other.n.label;
      } else added.set(f.fp, { n, f });
      if (f.action === "skip" || f.action === "notinstalled" || f.type === "directory") continue;
      const disk = walkInRoot(root, f.path, { followFinal: false });
      if (disk.kind === "not-directory") conflicts.push(`${disk.path} is not a directory in the image`);
      else if (disk.kind === "found" && disk.stat.isDirectory()) {
        const wasDir = oldPackages.some((o) => o.files.some((x) => x.fp === f.fp && x.type === "directory"));
        conflicts.push(
          wasDir
            ? `${f.path} is a directory of the installed version and a ${f.type} of the new one`
            : `${f.path} is a directory in the image, where the package has a ${f.type}`,
        );
      }
    }
    if (conflicts.length)
      throw new SutureError(
        "PATCH_FAILED",
        `cannot install ${n.label}: ${conflicts.slice(0, 3).join("; ")}${conflicts.length > 3 ? ` and ${conflicts.length - 3} more` : ""}; rpm refuses such file conflicts too: leave the package out of the update or use --ignore-errors`,
      );
  }
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the payload, staged.

const CREATE = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

async function stagePayload(n: NewPackage, dir: string, signal: AbortSignal | undefined): Promise<void> {
  mkdirSync(dir);
  const byIndex = new Map(n.files.map((f) => [f.index, f]));
  const sets = new Map<string, string>();
  const setPath = (key: string) => {
    let p = sets.get(key);
    if (!p) {
      p = join(dir, `link-${sets.size}`);
      sets.set(key, p);
    }
    return p;
  };
  for await (const e of rpmPayloadEntries(n.item.pkg, signal ? { signal } : {})) {
    const f = byIndex.get(e.file.index)!;
    const wanted = f.action !== "notinstalled" && f.action !== "skip";
    if (!wanted || f.type === "directory") {
      for await (const _ of e.body);
      continue;
    }
    if (f.type === "symlink") {
      for await (const _ of e.body);
      f.staged = join(dir, `f${f.index}`);
      symlinkSync(f.entry.linkTo, f.staged);
      continue;
    }
    const target = f.linkSet ? setPath(f.linkSet) : join(dir, `f${f.index}`);
    if (!f.linkSet || e.size > 0) {
      const fd = openSync(target, CREATE, 0o600);
      try {
        for await (const chunk of e.body) {
          let off = 0;
          while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
        }
      } finally {
        closeSync(fd);
      }
    } else for await (const _ of e.body);
    if (!f.linkSet) f.staged = target;
  }
  // The payload was read to its end: every digest matched. Now each name of a hard link set
  // becomes a name of the one staged inode.
  for (const f of n.files) {
    if (!f.linkSet || f.action === "notinstalled" || f.action === "skip") continue;
    const shared = setPath(f.linkSet);
    if (!lstatSync(shared, { throwIfNoEntry: false })) closeSync(openSync(shared, CREATE, 0o600));
    f.staged = join(dir, `f${f.index}`);
    linkSync(shared, f.staged);
  }
}

// ---------------------------------------------------------------------------------------------
// Phase 2: fates, then files moved into place and removed.

/** The digest of the image's file at `host` (a regular file), read in pieces: it may be large. */
function fileDigest(host: string, algorithm: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(host, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const hash = createHash(algorithm);
    const buf = Buffer.allocUnsafe(1024 * 1024);
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
    return hash.digest("hex");
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function diskOf(root: string, path: string): { host: string; st: Stats } | undefined {
  const walk = walkInRoot(root, path, { followFinal: false });
  if (walk.kind !== "found") return undefined;
  return { host: walk.host, st: walk.stat };
}

/** rpm's rpmfilesConfigConflict: a config file of `f` is in the image and is not what `f` says. */
function configConflict(root: string, f: FileRef & { path: string }): boolean {
  if (!(f.entry.flags & RpmFileFlag.CONFIG)) return false;
  if (f.type !== "file" && f.type !== "symlink") return false;
  const disk = diskOf(root, f.path);
  if (!disk) return false;
  if (f.entry.flags & RpmFileFlag.GHOST) return true;
  if (typeOfStat(disk.st) !== f.type) return true;
  if (disk.st.size !== f.entry.size) return true;
  if (f.type === "file") return fileDigest(disk.host, f.digestAlgorithm) !== f.entry.digest;
  return readlinkSync(disk.host) !== f.entry.linkTo;
}

/** rpm's rpmfilesDecideFate: a config file's fate given the old package's entry and the image. */
function decideFate(root: string, old: FileRef, f: NewFile): Action {
  const noreplace = (f.entry.flags & RpmFileFlag.NOREPLACE) !== 0;
  const save: Action = noreplace ? "altname" : "save";
  if (f.entry.flags & RpmFileFlag.GHOST) return "skip";
  const disk = diskOf(root, f.path);
  if (!disk) return f.entry.flags & RpmFileFlag.MISSINGOK ? "skip" : "create";
  const diskType = typeOfStat(disk.st);
  if (old.type === "file") {
    let onDisk: string | undefined;
    if (diskType === "file" && f.type === "file") {
      onDisk = fileDigest(disk.host, f.digestAlgorithm);
      if (onDisk === undefined) return "create";
      if (onDisk === f.entry.digest) return "touch";
    }
    if (diskType === "file") {
      if (old.digestAlgorithm !== f.digestAlgorithm || f.type !== "file")
        onDisk = fileDigest(disk.host, old.digestAlgorithm);
      if (onDisk === undefined) return "create";
      if (onDisk === old.entry.digest) return "create";
    }
    if (!(f.entry.flags & RpmFileFlag.CONFIG)) return "save";
    if (f.type === "file" && old.digestAlgorithm === f.digestAlgorithm && old.entry.digest === f.entry.digest)
      return "skip";
    return save;
  }
  if (old.type === "symlink") {
    const onDisk = diskType === "symlink" ? readlinkSync(disk.host) : undefined;
    if (onDisk !== undefined && f.type === "symlink" && onDisk === f.entry.linkTo) return "touch";
    if (onDisk !== undefined && onDisk === old.entry.linkTo) return "create";
    if (!(f.entry.flags & RpmFileFlag.CONFIG)) return "save";
    if (f.type === "symlink" && old.entry.linkTo === f.entry.linkTo) return "skip";
    return save;
  }
  return "create";
}

/**
 * rpm's handleInstInstalledFile and handleOverlappedFiles for a new package's files: config
 * files against the version they replace (or another installed owner), unowned config files in
 * the way kept aside, a file another new package has first left to it.
 */
function decideNewFates(
  root: string,
  n: NewPackage,
  oldPackages: readonly OldPackage[],
  staying: Map<string, Owned[]>,
): void {
  // The removed packages' files by fingerprint (and by package and fingerprint).
  const oldFiles = new Map<string, OldPackage["files"][number]>();
  for (const o of oldPackages)
    for (const x of o.files) {
      oldFiles.set(`${o.pkg.recordNumber}\0${x.fp}`, x);
      if (!oldFiles.has(x.fp)) oldFiles.set(x.fp, x);
    }
  for (const f of n.files) {
    if (f.action !== "create") continue;
    if (f.sharedWith) {
      f.action = "skip";
      continue;
    }
    const replaced =
      oldFiles.get(`${n.item.replaces?.recordNumber}\0${f.fp}`) ??
      oldFiles.get(f.fp) ??
      staying.get(f.fp)?.find((o) => o.file.state !== 2)?.file;
    const config = ((replaced?.entry.flags ?? 0) | f.entry.flags) & RpmFileFlag.CONFIG;
    if (replaced && config && replaced.state !== 2) f.action = decideFate(root, replaced, f);
    else if (configConflict(root, f)) f.action = f.entry.flags & RpmFileFlag.NOREPLACE ? "altname" : "backup";
  }
}

/**
 * The erase side (handleOverlappedFiles for TR_REMOVED, checkInstalledFiles): a file the new
 * packages have, or another installed package keeps, stays; one not installed normally stays;
 * an edited config is saved as `.rpmsave`; the rest is erased.
 */
function decideEraseFates(
  root: string,
  oldPackages: readonly OldPackage[],
  newFps: Set<string>,
  staying: Map<string, Owned[]>,
): void {
  const erased = new Set<string>();
  for (const o of [...oldPackages].reverse())
    for (const f of o.files) {
      if (newFps.has(f.fp) || erased.has(f.fp)) f.action = "skip";
      else if (staying.get(f.fp)?.some((x) => x.file.state === 0)) f.action = "skip";
      else if (f.state !== 0) f.action = "skip";
      else if (configConflict(root, f)) f.action = "save";
      else f.action = "erase";
      if (f.action !== "skip") erased.add(f.fp);
    }
}

function stateOf(f: NewFile): RpmFileState {
  return f.action === "notinstalled" ? "notinstalled" : "normal";
}

/** The paths a new package leaves installed (what file triggers match). */
function installedPaths(n: NewPackage): string[] {
  return n.files.filter((f) => f.action !== "notinstalled").map((f) => f.path);
}

/**
 * The owner rpm gives a package file (`rpmugUid`, `rpmugGid`): the header's names looked up in the
 * image, a name it does not know being root, with rpm's warning (once a name).
 */
async function ownerIds(
  accounts: ImageAccounts,
  user: string,
  group: string,
  warnings: string[],
): Promise<{ uid: number; gid: number }> {
  const named = (name: string) => (name === "root" || name === "" ? undefined : name);
  const ids = await accounts.ids({ user: named(user), group: named(group) });
  const id = (name: string, value: number | undefined, what: string) => {
    if (value !== undefined || named(name) === undefined) return value ?? 0;
    const warning = `${what} ${quoteUntrusted(name)} does not exist in the image - using root (as rpm does)`;
    if (!warnings.includes(warning)) warnings.push(warning);
    return 0;
  };
  return { uid: id(user, ids.uid, "user"), gid: id(group, ids.gid, "group") };
}

/** The host directory of a package path's parent, created (root-owned, 0755) where missing. */
function parentDir(root: string, path: string, label: string): string {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  const walk = walkInRoot(root, dir, { followFinal: true, create: "all" });
  if (walk.kind !== "found" || !walk.stat.isDirectory())
    throw new SutureError(
      "PATCH_FAILED",
      `cannot install ${label}: ${walk.path} is not a directory in the image; remove it from the image or ${SANDBOX_FIX}`,
    );
  return walk.host;
}

function renameOrFail(from: string, to: string, label: string, path: string): void {
  try {
    renameSync(from, to);
  } catch (e) {
    throw new SutureError(
      "PATCH_FAILED",
      `cannot install ${label}: ${path} cannot be replaced (${describeCause(e)}); the image has something else at that path`,
      { cause: e },
    );
  }
}

/** Opens a placed file or directory for its metadata: never through a symlink, never blocking on a FIFO. */
const META_OPEN = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;

/**
 * Owner, mode, capabilities and mtime of a placed path, in rpm's order (fsmSetmeta). A file or
 * directory is changed through a descriptor opened O_NOFOLLOW and checked to be of the package's
 * type: the image's scriptlets ran since the path was looked at, and chmod(2) on a path follows a
 * symlink one of them put there, out of the root onto a host file.
 */
function setMeta(host: string, f: NewFile, ids: { uid: number; gid: number }, label: string): void {
  if (f.type === "symlink") {
    // lchown and lutimes change the link itself; a symlink has no mode of its own.
    lchownSync(host, ids.uid, ids.gid);
    lutimesSync(host, f.entry.mtime, f.entry.mtime);
    return;
  }
  const changed = (what: string) =>
    new SutureError(
      "PATCH_FAILED",
      `cannot install ${label}: ${quoteUntrusted(f.path)} became ${what} while the image's scriptlets ran, where the package has a ${f.type}; fix the image's scriptlets or ${SANDBOX_FIX}`,
    );
  let fd: number;
  try {
    fd = openSync(host, META_OPEN | (f.type === "directory" ? fsConstants.O_DIRECTORY : 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ELOOP") throw changed("a symlink");
    if (code === "ENOTDIR") throw changed("something else");
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (typeOfStat(st) !== f.type) throw changed(`a ${typeOfStat(st)}`);
    fchownSync(fd, ids.uid, ids.gid);
    fchmodSync(fd, f.entry.mode & 0o7777);
    if (f.type === "file" && f.entry.caps !== "") {
      const caps = capabilityXattr(f.entry.caps);
      // The path was just checked through fd to be this regular file; the setter does not follow links.
      if (caps)
        applyXattrs(host, new Map([["security.capability", caps]]), { isSymlink: false, what: f.path });
    }
    futimesSync(fd, f.entry.mtime, f.entry.mtime);
  } finally {
    closeSync(fd);
  }
}

/**
 * Whether the image's entry at `host` (lstat'd as `st`) is still the package's file a "touch"
 * fate was decided for: scriptlets and triggers ran since, and may have replaced it.
 */
function stillTheFile(host: string, st: Stats, f: NewFile): boolean {
  if (typeOfStat(st) !== f.type) return false;
  if (f.type === "file")
    return st.size === f.entry.size && fileDigest(host, f.digestAlgorithm) === f.entry.digest;
  if (f.type === "symlink") return readlinkSync(host) === f.entry.linkTo;
  return false;
}

async function placePackage(
  root: string,
  n: NewPackage,
  accounts: ImageAccounts,
  warnings: string[],
): Promise<void> {
  // Read again: the package's %pre (or an earlier package's scriptlet) may have added its users.
  accounts.forget();
  const metaDone = new Set<string>();
  for (const f of n.files) {
    if (f.action === "skip" || f.action === "notinstalled") continue;
    const owner = await ownerIds(accounts, f.entry.user, f.entry.group, warnings);
    if (f.path === "/") {
      // `%dir /` (the filesystem package of RHEL, Fedora, Amazon Linux): as rpm does, the root
      // keeps being the root and takes the package's owner, mode and mtime (newPackage refused
      // anything but a directory there).
      setMeta(root, f, owner, n.label);
      continue;
    }
    const dir = parentDir(root, f.path, n.label);
    const name = f.path.slice(f.path.lastIndexOf("/") + 1);
    const host = childPath(dir, name, "package file name");
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (f.type === "directory") {
      if (st?.isSymbolicLink()) {
        // fsmVerify: the image's symlink to a directory stands for it (usrmerge's /lib ->
        // usr/lib) and stays; the directory it leads to keeps its own owner and mode.
        const through = walkInRoot(root, f.path, { followFinal: true });
        if (through.kind === "found" && through.stat.isDirectory()) continue;
      }
      if (st && !st.isDirectory()) {
        // fsmVerify: something else where the package has a directory is removed first.
        if (f.action === "save" || f.action === "backup") {
          const suffix = f.action === "save" ? ".rpmsave" : ".rpmorig";
          renameOrFail(host, childPath(dir, `${name}${suffix}`, "package file name"), n.label, f.path);
          warnings.push(`${f.path} saved as ${f.path}${suffix}`);
        } else unlinkSync(host);
      }
      if (!st?.isDirectory()) mkdirSync(host, { mode: 0o700 });
      setMeta(host, f, owner, n.label);
      continue;
    }
    if (f.action === "touch") {
      // Decided before %pretrans, %pre and the triggers ran: only the same file, still with the
      // package's content, is kept; anything a scriptlet put there instead is replaced by rename.
      if (st && stillTheFile(host, st, f)) {
        if (!f.linkSet || !metaDone.has(f.linkSet)) setMeta(host, f, owner, n.label);
        continue;
      }
      f.action = "create";
    }
    const staged = f.staged;
    if (!staged)
      throw new SutureError("INTERNAL", `${f.path} of ${n.label} was not staged but is to be installed`);
    if (!f.linkSet || !metaDone.has(f.linkSet)) {
      setMeta(staged, f, owner, n.label);
      if (f.linkSet) metaDone.add(f.linkSet);
    }
    if (f.action === "altname") {
      renameOrFail(staged, childPath(dir, `${name}.rpmnew`, "package file name"), n.label, f.path);
      warnings.push(`${f.path} created as ${f.path}.rpmnew`);
      continue;
    }
    if ((f.action === "save" || f.action === "backup") && st) {
      const suffix = f.action === "save" ? ".rpmsave" : ".rpmorig";
      renameOrFail(host, childPath(dir, `${name}${suffix}`, "package file name"), n.label, f.path);
      warnings.push(`${f.path} saved as ${f.path}${suffix}`);
    }
    renameOrFail(staged, host, n.label, f.path);
  }
}

/** rpmPackageFilesRemove: the old package's files, last first (a directory after its contents). */
function removeFiles(root: string, o: OldPackage, warnings: string[]): void {
  for (const f of [...o.files].reverse()) {
    if (f.action !== "erase" && f.action !== "save") continue;
    // An erased `%dir /` leaves the root, as rpm leaves it.
    if (f.path === "/") continue;
    const walk = walkInRoot(root, f.path, { followFinal: false });
    if (walk.kind !== "found") continue;
    if (f.action === "save") {
      if (f.entry.flags & RpmFileFlag.GHOST) continue;
      const dir = walkInRoot(root, f.path.slice(0, f.path.lastIndexOf("/")) || "/", { followFinal: true });
      if (dir.kind !== "found") continue;
      const name = f.path.slice(f.path.lastIndexOf("/") + 1);
      renameSync(
        childPath(dir.host, name, "installed file name"),
        childPath(dir.host, `${name}.rpmsave`, "installed file name"),
      );
      warnings.push(`${f.path} saved as ${f.path}.rpmsave`);
      continue;
    }
    try {
      if (f.type === "directory") {
        if (walk.stat.isDirectory()) rmdirSync(walk.host);
      } else if (!walk.stat.isDirectory()) unlinkSync(walk.host);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Not empty: what the image or another package keeps there stays, as with rpm.
      if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT")
        warnings.push(`${o.label}: ${f.path}: remove failed: ${describeCause(e)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Scripts and triggers.

/** A package in the database as the transaction goes on: what triggers look at. */
interface DbPackage {
  name: string;
  label: string;
  header: NonNullable<InstalledRpm["header"]> | RpmPackage["header"];
  nevra: InstalledRpm["nevra"];
  files: string[];
  installed?: InstalledRpm;
}

class LiveDb {
  readonly #packages: DbPackage[] = [];

  constructor(installed: readonly InstalledRpm[]) {
    for (const p of installed)
      if (p.header)
        this.#packages.push({
          name: p.nevra.name,
          label: formatRpmNevra(p.nevra),
          header: p.header,
          nevra: p.nevra,
          files: [],
          installed: p,
        });
  }

  get all(): readonly DbPackage[] {
    return this.#packages;
  }

  add(p: DbPackage): void {
    this.#packages.push(p);
  }

  remove(p: DbPackage): void {
    const i = this.#packages.indexOf(p);
    if (i >= 0) this.#packages.splice(i, 1);
  }

  has(p: DbPackage): boolean {
    return this.#packages.includes(p);
  }

  byPackage(p: InstalledRpm): DbPackage | undefined {
    return this.#packages.find((x) => x.installed === p);
  }

  /** Files of a database package (read from its header once). */
  filesOf(p: DbPackage): string[] {
    if (p.files.length === 0 && p.installed?.header)
      p.files = rpmHeaderFiles(p.installed.header, p.label)
        .filter((f) => (f.state ?? 0) === 0 || f.state === 3)
        .map((f) => f.path);
    return p.files;
  }
}

const triggerCache = new WeakMap<
  object,
  { classic?: RpmTrigger[]; file?: RpmFileTrigger[]; trans?: RpmFileTrigger[] }
>();

/** A header's triggers, read once per header. */
function triggersOf(header: DbPackage["header"], label: string): RpmTrigger[] {
  const c = triggerCache.get(header) ?? {};
  triggerCache.set(header, c);
  c.classic ??= rpmHeaderTriggers(header, label);
  return c.classic;
}

function fileTriggersOf(header: DbPackage["header"], trans: boolean, label: string): RpmFileTrigger[] {
  const c = triggerCache.get(header) ?? {};
  triggerCache.set(header, c);
  if (trans) {
    c.trans ??= rpmHeaderFileTriggers(header, true, label);
    return c.trans;
  }
  c.file ??= rpmHeaderFileTriggers(header, false, label);
  return c.file;
}

/** Whether a source package's EVR satisfies a trigger's version condition. */
function triggerMatches(flags: number, version: string, source: DbPackage["nevra"]): boolean {
  const sense = flags & 0b1110;
  if (version === "" || sense === 0) return true;
  const evr = version.includes("-")
    ? formatRpmEvr(source)
    : `${source.epoch ? `${source.epoch}:` : ""}${source.version}`;
  const c = compareRpmVersions(evr, version);
  return (c < 0 && (sense & 2) !== 0) || (c > 0 && (sense & 4) !== 0) || (c === 0 && (sense & 8) !== 0);
}

/**
 * Checks that the transaction's scriptlets can run, runs them, and collects what was skipped.
 * Failures of `%pretrans`, `%pre` and `%preun` stop the install (rpm's critical scriptlets);
 * the others are warnings, as rpm reports them.
 */
class ScriptPlan {
  readonly #root: string;
  readonly #options: RpmInstallOptions;
  readonly #runner: RpmScriptRunner;
  readonly #warnings: string[];
  readonly #skipped: string[] = [];

  constructor(root: string, options: RpmInstallOptions, runner: RpmScriptRunner, warnings: string[]) {
    this.#root = root;
    this.#options = options;
    this.#runner = runner;
    this.#warnings = warnings;
  }

  /** Refuse, before anything is touched, a scriptlet that cannot run here. */
  check(label: string, script: RpmScript): void {
    const need = scriptNeed(script);
    if (need.kind === "rpm-only")
      throw new SutureError(
        "PATCH_FAILED",
        `cannot install ${label} natively: its ${script.label} scriptlet ${need.why}, which only rpm can run; ${SANDBOX_FIX}`,
      );
    if (need.kind === "ldconfig") return;
    if (!this.#options.runScripts || !imageHasProgram(this.#root, need.program))
      throw new SutureError(
        "PATCH_FAILED",
        `cannot install ${label}: its ${script.label} scriptlet needs ${need.program}, which the image does not have; leave the package out of the update or use --ignore-errors`,
      );
  }

  async run(
    label: string,
    script: RpmScript,
    args: number[],
    how: { critical: boolean; stdin?: readonly string[] },
  ): Promise<void> {
    this.#options.signal?.throwIfAborted();
    const need = scriptNeed(script);
    if (need.kind === "rpm-only") {
      // A trigger of an installed package (the scriptlets of the transaction were checked first).
      this.#warnings.push(`${label}: its ${script.label} ${need.why} and was not run (only rpm can run it)`);
      return;
    }
    let run = script;
    let stdin = how.stdin;
    if (need.kind === "ldconfig") {
      // Run as the program itself, as `-p /sbin/ldconfig` does: it needs no shell and no input.
      const program = [need.program, "/sbin/ldconfig", "/usr/sbin/ldconfig"].find((p) =>
        imageHasProgram(this.#root, p),
      );
      if (!program) {
        this.#skipped.push(`${label} ${script.label}`);
        return;
      }
      run = { label: script.label, interpreter: [program], flags: 0 };
      stdin = undefined;
    } else if (
      !this.#options.runScripts ||
      !imageHasProgram(this.#root, need.program) ||
      (stdin !== undefined && run.body !== undefined && !imageHasProgram(this.#root, "/bin/sh"))
    ) {
      // Triggers of installed packages the image cannot run (its scriptlets were checked first).
      this.#skipped.push(`${label} ${script.label}`);
      return;
    }
    if (run.body === undefined) stdin = undefined;
    this.#options.progress({
      type: "info",
      message:
        need.kind === "ldconfig"
          ? `running ${run.interpreter[0]} for the ${script.label} of ${label} (no shell needed)`
          : `running ${script.label} of ${label}`,
    });
    const r = await this.#runner.run(run, args, stdin);
    if (r.exitCode === 0) return;
    const critical = how.critical || (script.flags & RpmScriptFlag.CRITICAL) !== 0;
    const what = `${script.label} scriptlet of ${label} failed with exit code ${r.exitCode}${r.last ? ` (${r.last})` : ""}`;
    if (critical)
      throw new SutureError(
        "PATCH_FAILED",
        `the ${what}; nothing was written: fix the script's cause in the image, or ${SANDBOX_FIX} to see its whole output`,
      );
    this.#warnings.push(`the ${what}`);
  }

  /**
   * rpm's runTriggers and runImmedTriggers for a package being installed or erased: the other
   * packages' triggers on its name (one per package), then its own triggers on the names in the
   * database. `correction` is rpm's countCorrection (-1 on erase, whose database entry goes last).
   */
  async triggers(
    db: LiveDb,
    source: DbPackage,
    sense: number,
    count: (name: string) => number,
    correction: number,
  ): Promise<void> {
    for (const target of [...db.all]) {
      if (target === source) continue;
      const t = triggersOf(target.header, target.label).find(
        (x) => x.flags & sense && x.name === source.name && triggerMatches(x.flags, x.version, source.nevra),
      );
      if (t)
        await this.run(target.label, t.script, [count(target.name), count(source.name) + correction], {
          critical: false,
        });
    }
    const ran = new Set<number>();
    for (const t of triggersOf(source.header, source.label)) {
      if (!(t.flags & sense) || ran.has(t.index)) continue;
      const sources = db.all.filter(
        (p) => p !== source && p.name === t.name && triggerMatches(t.flags, t.version, p.nevra),
      );
      if (sources.length === 0) continue;
      ran.add(t.index);
      await this.run(source.label, t.script, [count(source.name) + correction, sources.length], {
        critical: false,
      });
    }
  }

  /**
   * rpm's runFileTriggers and runImmedFileTriggers: the other packages' `%filetrigger*` whose
   * prefix the package's paths match (its installed files, or `erased` on erase), run once each
   * with the matching paths on standard input; `high`: priorities at or above rpm's default
   * (before %post or %preun), `low`: the rest. On install, the package's own triggers fire on
   * the matching files of the whole database too.
   */
  async fileTriggers(
    db: LiveDb,
    source: DbPackage,
    sense: number,
    band: "high" | "low",
    erased?: readonly string[],
  ): Promise<void> {
    const paths = erased ?? source.files;
    const inBand = (t: RpmFileTrigger) =>
      (t.flags & sense) !== 0 && (band === "high") === t.priority >= DEFAULT_TRIGGER_PRIORITY;
    const runs: { owner: DbPackage; t: RpmFileTrigger; files: string[] }[] = [];
    for (const owner of db.all) {
      if (owner === source) continue;
      for (const t of fileTriggersOf(owner.header, false, owner.label).filter(inBand)) {
        const files = paths.filter((p) => p.startsWith(t.prefix));
        if (files.length) runs.push({ owner, t, files });
      }
    }
    if (sense === RpmTriggerSense.IN)
      for (const t of fileTriggersOf(source.header, false, source.label).filter(inBand)) {
        const files = db.all.flatMap((p) => db.filesOf(p)).filter((p) => p.startsWith(t.prefix));
        if (files.length) runs.push({ owner: source, t, files });
      }
    runs.sort((a, b) => b.t.priority - a.t.priority);
    const done = new Set<string>();
    for (const r of runs) {
      const key = `${r.owner.label}#${r.t.index}`;
      if (done.has(key)) continue;
      done.add(key);
      // rpm 4.14 to 4.19 (what RPM distributions ship) give every file trigger `$1` = 0.
      await this.run(r.owner.label, r.t.script, [FILE_TRIGGER_ARG], { critical: false, stdin: r.files });
    }
  }

  /**
   * `%transfiletriggerin` after the transaction (`sense` IN) or `%transfiletriggerun` before it
   * (UN): each database package's trigger whose prefix one of `paths` (the files installed, or
   * those of the packages erased) matches runs once with those paths on standard input; the
   * trigger of a package in `own` (installed or erased now) runs with every file of the
   * database under its prefix, as rpm's runImmedFileTriggers gives it.
   */
  async transFileTriggers(
    db: LiveDb,
    sense: number,
    paths: readonly string[],
    own: readonly DbPackage[],
  ): Promise<void> {
    const runs: { owner: DbPackage; t: RpmFileTrigger; files: string[] }[] = [];
    let everything: string[] | undefined;
    const allFiles = () => {
      everything ??= db.all.flatMap((p) => db.filesOf(p));
      return everything;
    };
    for (const owner of db.all)
      for (const t of fileTriggersOf(owner.header, true, owner.label)) {
        if (!(t.flags & sense)) continue;
        const pool = own.includes(owner) ? allFiles() : paths;
        const files = pool.filter((p) => p.startsWith(t.prefix));
        if (files.length) runs.push({ owner, t, files });
      }
    runs.sort((a, b) => b.t.priority - a.t.priority);
    const done = new Set<string>();
    for (const r of runs) {
      const key = `${r.owner.label}#${r.t.index}`;
      if (done.has(key)) continue;
      done.add(key);
      await this.run(r.owner.label, r.t.script, [FILE_TRIGGER_ARG], { critical: false, stdin: r.files });
    }
  }

  /** The warning naming what could not run (no shell, no program). */
  report(): void {
    if (this.#skipped.length)
      this.#warnings.push(
        `the image cannot run these rpm scriptlets (no shell or no ldconfig), so they were not run: ${this.#skipped.join(", ")}`,
      );
  }
}
