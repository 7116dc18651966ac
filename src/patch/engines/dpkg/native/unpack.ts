import { createHash } from "node:crypto";
import {
  type BigIntStats,
  chmodSync,
  closeSync,
  fchmodSync,
  constants as fsConstants,
  futimesSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeSync,
} from "node:fs";
import { chmod, lstat, readFile, rename, rm, rmdir, unlink } from "node:fs/promises";
import { posix } from "node:path";
import { normaliseEntryPath } from "../../../../archive/tar/member-path.ts";
import { imageIds } from "../../../../distro/accounts.ts";
import { parseFields } from "../../../../distro/dpkg/control.ts";
import {
  type ConffileRecord,
  type DatabasePackage,
  type DpkgDatabase,
  fieldValue,
  formatConffilesField,
  infoName,
  orderStatusFields,
  type StanzaField,
  withField,
} from "../../../../distro/dpkg/database.ts";
import { checkDebIdentity, type DebIdentity, type DebPackage, openDeb } from "../../../../distro/dpkg/deb.ts";
import type { FilteredEntryType, PathFilter } from "../../../../distro/dpkg/dpkg-config.ts";
import { quoteUntrusted } from "../../../../distro/package-syntax.ts";
import { describeCause, isSutureError, SutureError } from "../../../../errors/errors.ts";
import { childPath, walkInRoot } from "../../../../fs/in-root.ts";
import { chownOrRecord, effectiveStat, fchownOrRecord, lchownOrRecord } from "../../../../fs/owners.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import {
  decideConffile,
  droppedConffileFate,
  excludedConffileHash,
  NONEXISTENT,
} from "./conffile-decision.ts";

export interface UnpackOptions {
  /**
   * `unpacked` (default): record the package as `dpkg --unpack` leaves it (`install ok unpacked`,
   * `Config-Version` = the old version) so `dpkg --configure --pending` in the image finishes the
   * job. `installed`: record it configured, for images where no maintainer script can run.
   */
  state?: "unpacked" | "installed";
  progress?: ProgressSink;
  /**
   * The identity the package was resolved as (its index entry): a .deb that says otherwise is
   * refused (UNTRUSTED) before anything is written.
   */
  expected?: DebIdentity;
  /**
   * The image's `path-exclude`/`path-include` rules (distro/dpkg/dpkg-config.ts), read once per
   * patch. Skipped paths are handled as dpkg handles them: not written, still in the `.list` file,
   * absent from generated md5sums, and an old copy on disk is removed like a dropped file.
   */
  pathFilter?: PathFilter;
}

export interface KeptConffile {
  path: string;
  /** Where the package's new version was put (`<path>.dpkg-dist`); undefined when it was not needed. */
  newVersionAt: string | undefined;
}

export interface UnpackSummary {
  package: string;
  architecture: string;
  /** The version replaced; undefined for a fresh install. */
  fromVersion: string | undefined;
  toVersion: string;
  /** Regular files, symlinks and hardlinks written. */
  filesWritten: number;
  /** Regular files and symlinks left as they were because the image already had them as shipped. */
  filesUnchanged: number;
  bytesWritten: number;
  /** Conffiles whose image copy stayed (edited by the image's author, as --force-confold keeps them). */
  conffilesKept: KeptConffile[];
  /** Conffiles replaced by the package's new version. */
  conffilesInstalled: string[];
  /** Paths the old version had and the new one does not, removed from the tree. */
  removed: string[];
  /**
   * Maintainer script invocations dpkg would make for this step that were not run, in order
   * (`libfoo prerm upgrade 1.2-2`, …, `libfoo postinst configure 1.2-1`).
   */
  scripts: string[];
  /** The SHA-256 of the script text each call of `scripts` runs (the old version's for prerm/postrm). */
  scriptSha256: string[];
  /** Triggers this unpack activated (explicit names and file-trigger paths). */
  triggers: string[];
}

interface PendingConffile {
  path: string;
  /** Host path of the installed conffile (symlinks followed inside the root). */
  target: string;
  /** Host path of the extracted new version (`<target>.dpkg-new`). */
  staged: string;
  hash: string;
  /** Excluded by the image's dpkg configuration: nothing was extracted. */
  filtered?: boolean;
}

/**
 * Unpack a .deb (a path, or one opened with openDeb) into the image tree at `root` and record it in `db` as dpkg does for
 * `dpkg --unpack --force-confold --force-confdef` of an upgrade or a fresh install, with the
 * conffile decisions of the following `--configure` taken at once:
 * - files, symlinks and hardlinks are extracted next to their destination as `<path>.dpkg-new`
 *   (O_EXCL|O_NOFOLLOW) and renamed into place after the whole archive was read; ownership, mode
 *   bits and mtimes come from the archive, overridden by `dpkg-statoverride` records;
 * - missing directories are created; existing ones, and symlinks to directories, are left as they are;
 * - a path diverted by another package (or locally) goes to its divert-to name;
 * - conffiles: unchanged by the image → replaced; edited in the image and changed in the package →
 *   kept, new version beside it as `<path>.dpkg-dist`; edited but unchanged in the package → kept;
 *   conffiles dropped by the new version stay on disk, recorded `obsolete`;
 * - paths the old version listed and the new one does not are removed unless another package owns
 *   them (directories only when empty);
 * - the info files and the status stanza are rewritten, and explicit and file triggers activated on
 *   the interested packages (`unpacked` only: nothing processes them in an `installed`-only image).
 * Every path is resolved inside `root` (symlinks in the image are followed as the image would see
 * them, never out of it). Maintainer scripts are not run: the summary lists the invocations dpkg
 * would have made. Errors: INVALID_ARCHIVE (bad .deb), PATCH_FAILED (the tree conflicts with the
 * package, e.g. a directory where it ships a file), UNSAFE_LAYER (symlink loops), IO.
 */
export async function unpackDeb(
  root: string,
  debOrPath: string | DebPackage,
  db: DpkgDatabase,
  options: UnpackOptions = {},
): Promise<UnpackSummary> {
  const deb = typeof debOrPath === "string" ? await openDeb(debOrPath) : debOrPath;
  if (options.expected) checkDebIdentity(deb, options.expected);
  const debPath = deb.path;
  const state = options.state ?? "unpacked";
  const explicitTriggers = packageTriggers(deb);
  const old = installedVersionOf(db, deb);
  const oldInfo = old ? infoName(old) : undefined;
  const overrides = await statOverrideIds(root, db);
  const resolver = new RootResolver(root);

  const summary: UnpackSummary = {
    package: deb.name,
    architecture: deb.architecture,
    fromVersion: old?.version,
    toVersion: deb.version,
    filesWritten: 0,
    filesUnchanged: 0,
    bytesWritten: 0,
    conffilesKept: [],
    conffilesInstalled: [],
    removed: [],
    scripts: [],
    scriptSha256: [],
    triggers: [],
  };
  const hasScript = (kind: string) => deb.controlMembers.has(kind);
  const script = (call: string, text: Buffer) => {
    summary.scripts.push(call);
    summary.scriptSha256.push(createHash("sha256").update(text).digest("hex"));
  };
  const oldPrerm = old ? await db.readInfoFile(old, "prerm") : undefined;
  const oldPostrm = old ? await db.readInfoFile(old, "postrm") : undefined;
  if (old && oldPrerm) script(`${old.name} prerm upgrade ${deb.version}`, oldPrerm);
  if (hasScript("preinst"))
    script(
      old ? `${deb.name} preinst upgrade ${old.version}` : `${deb.name} preinst install`,
      deb.controlMembers.get("preinst")!,
    );
  if (old && oldPostrm) script(`${old.name} postrm upgrade ${deb.version}`, oldPostrm);

  const conffileSet = new Set(deb.conffiles);
  // Files' MD5s are wanted for conffiles and for packages that ship no md5sums (dpkg generates
  // them); otherwise the shipped md5sums are recorded as they are and hashing would be wasted.
  const hashAll = !deb.controlMembers.has("md5sums");
  const listed: string[] = [];
  const listedSet = new Set<string>();
  const fileHashes = new Map<string, string>();
  /** Staged path → final path, renamed in archive order once everything is extracted. */
  const renames: { staged: string; final: string }[] = [];
  /** Package path → host path of its staged copy, for hardlinks. */
  const stagedByPath = new Map<string, string>();
  const written = new Set<string>();
  const conffiles: PendingConffile[] = [];
  /** Package paths the path filter skipped. */
  const filtered = new Set<string>();
  /** Host directories of symlinks left as they were. */
  const linkDirs = new Set<string>();
  const leftovers = new LeftoverStaged();

  try {
    for await (const entry of deb.dataEntries()) {
      const h = entry.header;
      const parts = packageMemberPath(deb, h.path, "member");
      const pkgPath = parts.length ? `/${parts.join("/")}` : "/.";
      if (!listedSet.has(pkgPath)) {
        listed.push(pkgPath);
        listedSet.add(pkgPath);
      }
      if (!parts.length) continue;
      if (options.pathFilter?.skips(pkgPath, filterType(h.type))) {
        filtered.add(pkgPath);
        // dpkg keeps an excluded conffile in the Conffiles field but never has a new version of it.
        if (h.type === "file" && conffileSet.has(pkgPath))
          conffiles.push({ path: pkgPath, target: "", staged: "", hash: "", filtered: true });
        continue;
      }
      const destPath = db.diversionFor(pkgPath, deb.name)?.divertTo ?? pkgPath;
      const override = overrides.get(pkgPath);
      const uid = override?.uid ?? h.uid;
      const gid = override?.gid ?? h.gid;
      const mode = override?.mode ?? h.mode;

      if (h.type === "directory") {
        await resolver.ensureDirectory(destPath, { uid, gid, mode, mtime: h.mtime });
        continue;
      }
      if (h.type !== "file" && h.type !== "symlink" && h.type !== "hardlink")
        throw new SutureError(
          "INVALID_ARCHIVE",
          `${debPath} ships ${h.type} device ${pkgPath}: packages with device nodes or fifos cannot be unpacked natively; use the sandbox engine`,
        );

      const isConffile = h.type === "file" && conffileSet.has(pkgPath);
      const final = isConffile ? await resolver.resolveFile(destPath) : await resolver.resolveEntry(destPath);
      const staged = `${final}.dpkg-new`;
      // Sync calls: thousands of small files, where a thread-pool round trip per call dominates.
      if (h.type === "file") {
        const md5 = isConffile || hashAll ? createHash("md5") : undefined;
        // Most files of an upgraded package are byte-identical to the installed ones: read along
        // the installed copy and only start writing at the first difference. An identical file is
        // left as it is (only its mtime would differ, which the patch layer ignores anyway), so
        // it costs no write, no overlay copy-up and no comparison in the layer builder.
        const same = isConffile ? undefined : sameFileReader(final, h.size, uid, gid, mode);
        const pending: Buffer[] = [];
        let fd: number | undefined;
        const startWriting = () => {
          fd = createStaged(staged, () => openSync(staged, CREATE_FLAGS, 0o600));
          for (const p of pending.splice(0)) {
            writeFully(fd, p);
            summary.bytesWritten += p.length;
          }
        };
        try {
          if (!same) startWriting();
          for await (const chunk of entry.body as AsyncIterable<Buffer>) {
            md5?.update(chunk);
            if (fd === undefined && same?.matches(chunk)) {
              pending.push(chunk);
              continue;
            }
            if (fd === undefined) startWriting();
            writeFully(fd!, chunk);
            summary.bytesWritten += chunk.length;
          }
          if (fd === undefined && !same?.atEnd()) startWriting();
          if (fd !== undefined) {
            fchownOrRecord(fd, uid, gid);
            fchmodSync(fd, mode & 0o7777);
            futimesSync(fd, h.mtime, h.mtime);
          }
        } finally {
          if (fd !== undefined) closeSync(fd);
          same?.close();
        }
        const hash = md5?.digest("hex") ?? "";
        if (md5) fileHashes.set(pkgPath, hash);
        if (fd === undefined) {
          // Identical: later hardlinks of the package link to the installed file.
          leftovers.remove(staged);
          stagedByPath.set(pkgPath, final);
          written.add(final);
          summary.filesUnchanged++;
          continue;
        }
        if (isConffile) {
          conffiles.push({ path: pkgPath, target: final, staged, hash });
          continue;
        }
      } else if (h.type === "symlink") {
        if (isRealDirectory(final)) {
          // dpkg refuses to turn a directory into a symlink; the image's directory stays.
          options.progress?.({
            type: "warning",
            message: `${deb.name}: ${pkgPath} is a directory in the image; the package's symlink to ${h.linkname} was not installed`,
          });
          continue;
        }
        if (sameSymlink(final, h.linkname, uid, gid)) {
          // As for identical files: left as it is, so no overlay copy-up and nothing to compare.
          // dpkg would have renamed a new link into its directory, giving that directory the run's
          // time, which the patch layer keeps (as its epoch): the directory is touched instead.
          linkDirs.add(posix.dirname(final));
          leftovers.remove(staged);
          stagedByPath.set(pkgPath, final);
          written.add(final);
          summary.filesUnchanged++;
          continue;
        }
        createStaged(staged, () => symlinkSync(h.linkname, staged));
        lchownOrRecord(staged, uid, gid);
        lutimesSync(staged, h.mtime, h.mtime);
      } else {
        const targetParts = packageMemberPath(deb, h.linkname, `hardlink ${pkgPath} target`);
        const source = stagedByPath.get(`/${targetParts.join("/")}`);
        if (!source && filtered.has(`/${targetParts.join("/")}`))
          throw new SutureError(
            "PATCH_FAILED",
            `${deb.name} ${deb.version} has a hardlink ${pkgPath} to ${h.linkname}, which the image's dpkg configuration excludes (dpkg fails on it too): add a path-include for ${h.linkname} in the image's /etc/dpkg/dpkg.cfg.d`,
          );
        if (!source)
          throw new SutureError(
            "INVALID_ARCHIVE",
            `${debPath} has a hardlink ${pkgPath} to ${h.linkname}, which is not an earlier file of the package`,
          );
        createStaged(staged, () => linkSync(source, staged));
        const hash = fileHashes.get(`/${targetParts.join("/")}`);
        if (hash) fileHashes.set(pkgPath, hash);
      }
      stagedByPath.set(pkgPath, staged);
      renames.push({ staged, final });
      written.add(final);
      summary.filesWritten++;
    }
    const now = Date.now() / 1000;
    for (const dir of linkDirs) lutimesSync(dir, now, now);
    for (const { staged, final } of renames) {
      try {
        renameSync(staged, final);
      } catch (e) {
        throw new SutureError(
          "PATCH_FAILED",
          `cannot install ${final.slice(root.length)} from ${deb.name} ${deb.version}: ${describeCause(e)}; the image has something else at that path`,
          { cause: e },
        );
      }
    }
  } catch (e) {
    await Promise.all(
      [...renames.map((r) => r.staged), ...conffiles.filter((c) => !c.filtered).map((c) => c.staged)].map(
        (p) => rm(p, { force: true }),
      ),
    );
    throw e;
  }

  // Conffiles: what `dpkg --configure` decides with --force-confdef --force-confold.
  const oldConffiles = new Map((old?.conffiles ?? []).map((c) => [c.path, c]));
  const records: ConffileRecord[] = [];
  for (const c of conffiles) {
    if (c.filtered) {
      const kept = excludedConffileHash(oldConffiles.get(c.path)?.hash);
      records.push({ path: c.path, hash: kept, obsolete: false, removeOnUpgrade: false });
      continue;
    }
    const current = await md5OfFile(c.target);
    const action = decideConffile({ recorded: oldConffiles.get(c.path)?.hash, current, incoming: c.hash });
    if (action === "install") {
      await rename(c.staged, c.target);
      written.add(c.target);
      summary.conffilesInstalled.push(c.path);
      summary.filesWritten++;
    } else if (action === "keep" || action === "identical") {
      await rm(c.staged, { force: true });
      if (action === "keep") summary.conffilesKept.push({ path: c.path, newVersionAt: undefined });
    } else {
      const dist = `${c.target}.dpkg-dist`;
      await copyOwnershipAndMode(c.target, c.staged);
      await rename(c.staged, dist);
      summary.conffilesKept.push({ path: c.path, newVersionAt: `${c.path}.dpkg-dist` });
      summary.filesWritten++;
    }
    records.push({ path: c.path, hash: c.hash, obsolete: false, removeOnUpgrade: false });
  }
  // Conffiles the new version dropped stay where they are, as dpkg keeps them, unless flagged for removal.
  const removeOnUpgrade = new Set(deb.removeOnUpgrade);
  for (const c of old?.conffiles ?? []) {
    if (conffileSet.has(c.path)) continue;
    const flagged = removeOnUpgrade.has(c.path);
    const fate = droppedConffileFate(flagged, !flagged && (await db.ownersOf(c.path, oldInfo)).length > 0);
    if (fate === "remove") {
      const host = await resolver.resolveExisting(c.path);
      if (host) await rm(host, { force: true });
      summary.removed.push(c.path);
    } else if (fate === "obsolete") records.push({ ...c, obsolete: true });
  }

  // Paths of the old version the new one does not ship, deepest first. A path the new version
  // ships but the filter excluded counts as not shipped (dpkg drops it from the archive's set),
  // so an old copy of an excluded doc goes; conffiles stay either way.
  if (old) {
    const oldConffilePaths = new Set((old.conffiles ?? []).map((c) => c.path));
    const gone = ((await db.fileList(old)) ?? [])
      .filter(
        (p) =>
          p !== "/." &&
          (!listedSet.has(p) || filtered.has(p)) &&
          !oldConffilePaths.has(p) &&
          !conffileSet.has(p),
      )
      .sort()
      .reverse();
    for (const path of gone) {
      if ((await db.ownersOf(path, oldInfo)).length) continue;
      const dest = db.diversionFor(path, deb.name)?.divertTo ?? path;
      const host = await resolver.resolveExisting(dest, { followFinal: false });
      // Through a usrmerge alias the old path can be a file the new version just wrote.
      if (!host || written.has(host)) continue;
      const st = await lstat(host).catch(() => undefined);
      if (!st) continue;
      if (st.isDirectory()) {
        const emptied = await rmdir(host).then(
          () => true,
          () => false,
        );
        if (emptied) summary.removed.push(path);
      } else {
        await unlink(host);
        summary.removed.push(path);
      }
    }
  }

  // The database, as dpkg leaves it after the unpack.
  const infoFiles = new Map<string, Buffer>();
  for (const [kind, data] of deb.controlMembers) if (kind !== "control") infoFiles.set(kind, data);
  if (!infoFiles.has("md5sums")) {
    // dpkg records hashes for packages that ship none (conffiles excepted).
    const lines = [...fileHashes]
      .filter(([p]) => !conffileSet.has(p))
      .map(([p, hash]) => `${hash}  ${p.slice(1)}\n`);
    if (lines.length) infoFiles.set("md5sums", Buffer.from(lines.join("")));
  }
  infoFiles.set("list", Buffer.from(listed.map((p) => `${p}\n`).join("")));

  const fields = newStanza(deb, old, db, state, records);
  const record = db.setPackage(fields);
  await db.writeInfoFiles(record, infoFiles, old);
  // Installed outright (nothing will configure it), the triggers are only named: what a
  // configure would have run, for the caller to report or refuse.
  summary.triggers = await activateTriggers(db, explicitTriggers, [...listed, ...summary.removed], {
    record: state === "unpacked",
  });
  if (hasScript("postinst"))
    script(
      `${deb.name} postinst configure ${old ? old.version : ""}`.trimEnd(),
      deb.controlMembers.get("postinst")!,
    );
  await db.commit();
  return summary;
}

function filterType(type: string): FilteredEntryType {
  return type === "directory" ? "directory" : type === "symlink" ? "symlink" : "other";
}

function installedVersionOf(db: DpkgDatabase, deb: DebPackage): DatabasePackage | undefined {
  const found = db.find(deb.name, deb.architecture);
  if (!found || found.status === undefined) return found;
  const state = found.status.split(/\s+/)[2];
  return state === "not-installed" ? undefined : found;
}

function newStanza(
  deb: DebPackage,
  old: DatabasePackage | undefined,
  db: DpkgDatabase,
  state: "unpacked" | "installed",
  conffiles: ConffileRecord[],
): StanzaField[] {
  let fields = parseFields(deb.controlText);
  const want = old?.status?.split(/\s+/)[0] ?? "install";
  if (db.layout === "status.d") {
    // Distroless stanzas are the control file itself; keep a Status only where the image had one.
    if (old?.status !== undefined)
      fields = orderStatusFields(withField(fields, "Status", `${want} ok installed`));
    return fields;
  }
  fields = withField(fields, "Status", `${want} ok ${state}`);
  if (state === "unpacked" && old) {
    const oldState = old.status?.split(/\s+/)[2];
    const configured =
      oldState === "installed" || oldState === "triggers-pending" || oldState === "triggers-awaited"
        ? old.version
        : fieldValue(old.fields, "Config-Version");
    if (configured) fields = withField(fields, "Config-Version", configured);
  }
  fields = withField(fields, "Conffiles", formatConffilesField(conffiles));
  return orderStatusFields(fields);
}

/**
 * Activate the package's explicit triggers (its `triggers` control file) and the file triggers
 * its paths match, as `Triggers-Pending` on the interested installed packages (only named, not
 * recorded, without `record`).
 */
async function activateTriggers(
  db: DpkgDatabase,
  explicit: readonly string[],
  paths: string[],
  options: { record: boolean },
): Promise<string[]> {
  if (db.layout !== "classic") return [];
  const activated = new Map<string, { package: string }[]>();
  for (const name of explicit) activated.set(name, await db.triggerInterests(name));
  const fileInterests = await db.fileTriggerInterests();
  for (const { path } of fileInterests) {
    if (activated.has(path) || !paths.some((p) => p === path || p.startsWith(`${path}/`))) continue;
    activated.set(
      path,
      fileInterests.filter((f) => f.path === path).map((f) => f.interest),
    );
  }
  // Only named: a trigger no installed package is interested in would run nothing.
  if (!options.record) return [...activated].filter(([, i]) => i.length > 0).map(([name]) => name);
  for (const [trigger, interests] of activated) {
    for (const interest of interests) {
      const [name, arch] = interest.package.split(":");
      const pkg = db.find(name!, arch);
      if (!pkg?.status) continue;
      const [want, eflag, pkgState] = pkg.status.split(/\s+/);
      if (pkgState === "not-installed" || pkgState === "config-files") continue;
      const pending = (fieldValue(pkg.fields, "Triggers-Pending") ?? "").split(/\s+/).filter(Boolean);
      if (!pending.includes(trigger)) pending.push(trigger);
      let fields = withField(pkg.fields, "Triggers-Pending", pending.join(" "));
      if (pkgState === "installed" || pkgState === "triggers-awaited")
        fields = withField(fields, "Status", `${want} ${eflag} triggers-pending`);
      db.setPackage(orderStatusFields(fields));
    }
  }
  return [...activated.keys()];
}

/**
 * The triggers a package's `triggers` control file activates. A name is a file path (file
 * trigger) or one file of `/var/lib/dpkg/triggers/`; anything else (`../x`, `a/b`) is refused
 * before the package is unpacked, since it would name a path outside that directory.
 */
function packageTriggers(deb: DebPackage): string[] {
  const out: string[] = [];
  for (const line of (deb.controlMembers.get("triggers")?.toString("utf8") ?? "").split("\n")) {
    const m = /^\s*(activate|activate-await|activate-noawait)\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    const name = m[2]!;
    if (!name.startsWith("/") && (name === "." || name === ".." || name.includes("/")))
      throw new SutureError(
        "INVALID_ARCHIVE",
        `package ${deb.name} ${deb.version} (${deb.path}) activates trigger ${quoteUntrusted(name)}, which is neither a file path nor a plain trigger name; the package is malformed or hostile, so it is not installed`,
      );
    out.push(name);
  }
  return out;
}

/**
 * A data.tar member name (or hardlink target) as path components inside the image. An absolute
 * name or one that climbs with `..` is the package's fault, not a layer's: it is reported as
 * INVALID_ARCHIVE naming the package (the shared tar code calls it UNSAFE_LAYER).
 */
function packageMemberPath(deb: DebPackage, raw: string, what: string): string[] {
  // One line per path in `info/<pkg>.list` and md5sums: a newline would let a package claim (and a
  // later upgrade remove) a path it never shipped. dpkg refuses such names as well.
  if (/[\n\0]/.test(raw))
    throw new SutureError(
      "INVALID_ARCHIVE",
      `package ${deb.name} ${deb.version} (${deb.path}) has a data.tar ${what} ${quoteUntrusted(raw)} with a newline or NUL in it; the package is malformed or hostile, so it is not installed`,
    );
  try {
    return normaliseEntryPath(raw);
  } catch (e) {
    if (!isSutureError(e, "UNSAFE_LAYER")) throw e;
    throw new SutureError(
      "INVALID_ARCHIVE",
      `package ${deb.name} ${deb.version} (${deb.path}) has a data.tar ${what} ${quoteUntrusted(raw)} that is absolute or climbs out of the root with '..'; the package is malformed or hostile, so it is not installed`,
      { cause: e },
    );
  }
}

/**
 * `create()` makes `staged` (it fails with EEXIST when something is there); a leftover `.dpkg-new`
 * (an interrupted run's, or the image's own) is removed, whole tree and all as dpkg's
 * path_remove_tree does, and the creation tried again. Creating first: the path almost never
 * exists, and an lstat of every staged path cost 55 ms of unpacking the python report's packages.
 * The staged path's parent was resolved inside the root, and rmSync does not follow links.
 */
function createStaged<T>(staged: string, create: () => T): T {
  try {
    return create();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    rmSync(staged, { recursive: true, force: true });
    return create();
  }
}

/**
 * dpkg removes a member's leftover `.dpkg-new` whether or not it then writes the member; members
 * left as they are (identical files and links) create nothing that would meet one. Their
 * directories are listed once each, instead of an lstat per member: most members of an upgrade
 * are identical, and a directory holds many of them.
 */
class LeftoverStaged {
  readonly #byDir = new Map<string, Set<string>>();

  remove(staged: string): void {
    const dir = posix.dirname(staged);
    let names = this.#byDir.get(dir);
    if (!names) {
      names = new Set();
      for (const name of readdirSync(dir)) if (name.endsWith(".dpkg-new")) names.add(name);
      this.#byDir.set(dir, names);
    }
    const name = posix.basename(staged);
    if (!names.delete(name)) return;
    rmSync(staged, { recursive: true, force: true });
  }
}

const CREATE_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/**
 * Compares a stream of chunks with the file at `path`, when that file could be left as it is: a
 * regular file (not a symlink) of the same size, mode and owner. Undefined otherwise.
 */
function sameFileReader(path: string, size: number, uid: number, gid: number, mode: number) {
  let st: BigIntStats | undefined;
  try {
    // The owner and mode the image has (in no-namespaces mode, the recorded ones).
    // A new path (no exception for it: a thrown ENOENT per new file is not free).
    const found = lstatSync(path, { bigint: true, throwIfNoEntry: false });
    st = found && effectiveStat(found);
  } catch {
    return undefined;
  }
  if (
    !st?.isFile() ||
    st.size !== BigInt(size) ||
    st.uid !== BigInt(uid) ||
    st.gid !== BigInt(gid) ||
    (st.mode & 0o7777n) !== BigInt(mode & 0o7777)
  )
    return undefined;
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  let offset = 0;
  let equal = true;
  return {
    matches(chunk: Buffer): boolean {
      if (!equal) return false;
      const theirs = Buffer.allocUnsafe(chunk.length);
      let got = 0;
      while (got < chunk.length) {
        const n = readSync(fd, theirs, got, chunk.length - got, offset + got);
        if (n === 0) break;
        got += n;
      }
      equal = got === chunk.length && theirs.equals(chunk);
      offset += chunk.length;
      return equal;
    },
    atEnd: () => equal && offset === size,
    close: () => closeSync(fd),
  };
}

/** Whether `path` is already the symlink a package ships: same target bytes, same owner. */
function sameSymlink(path: string, target: string, uid: number, gid: number): boolean {
  let st: BigIntStats | undefined;
  try {
    st = effectiveStat(lstatSync(path, { bigint: true }));
  } catch {
    return false;
  }
  if (!st?.isSymbolicLink() || st.uid !== BigInt(uid) || st.gid !== BigInt(gid)) return false;
  try {
    return readlinkSync(path, { encoding: "buffer" }).equals(Buffer.from(target));
  } catch {
    return false;
  }
}

function writeFully(fd: number, chunk: Buffer): void {
  let off = 0;
  while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
}

function isRealDirectory(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

async function md5OfFile(path: string): Promise<string> {
  try {
    return createHash("md5")
      .update(await readFile(path))
      .digest("hex");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return NONEXISTENT;
    throw new SutureError("IO", `cannot read conffile ${path}: ${describeCause(e)}`, { cause: e });
  }
}

async function copyOwnershipAndMode(from: string, to: string): Promise<void> {
  const raw = await lstat(from, { bigint: true }).catch(() => undefined);
  if (!raw?.isFile()) return;
  const st = effectiveStat(raw);
  chownOrRecord(to, Number(st.uid), Number(st.gid));
  await chmod(to, Number(st.mode & 0o7777n));
}

/**
 * Resolves image paths to host paths below `root` the way the image would see them: symlinked
 * directories (usrmerge's /lib -> usr/lib) are followed, absolute link targets and `..` are taken
 * relative to `root` and can never climb above it. Resolved directories are cached: during an
 * unpack only this code changes the tree.
 */
class RootResolver {
  readonly root: string;
  readonly #dirs = new Map<string, string>();

  constructor(root: string) {
    this.root = root;
  }

  /** Host path of the directory `path`, creating missing components (root-owned, 0755) when `create`. */
  async directory(path: string, create: boolean): Promise<string | undefined> {
    const key = posix.normalize(`/${path}`);
    const cached = this.#dirs.get(key);
    if (cached) return cached;
    const walk = walkInRoot(this.root, key, { followFinal: true, create: create ? "all" : undefined });
    if (walk.kind === "missing") return undefined;
    if (!walk.stat.isDirectory())
      throw new SutureError(
        "PATCH_FAILED",
        `${walk.path} is not a directory in the image, but a package needs ${path} below it`,
      );
    this.#dirs.set(key, walk.host);
    return walk.host;
  }

  /** Host path for a package entry: parent resolved (and created), last component not followed. */
  async resolveEntry(path: string): Promise<string> {
    const entry = parentAndName(path);
    if (!entry)
      throw new SutureError(
        "UNSAFE_LAYER",
        `the image's path ${quoteUntrusted(path)} names its root directory where a file is to be written; the image is malformed or hostile`,
      );
    const dir = await this.directory(entry.dir, true);
    return childPath(dir!, entry.name, "image path");
  }

  /** Host path of an existing entry, or undefined; `followFinal` also follows a final symlink. */
  async resolveExisting(path: string, options: { followFinal?: boolean } = {}): Promise<string | undefined> {
    // Paths come from the image's own records (file lists, conffiles, diversions): `..` in them is
    // resolved here, and the root itself is never an entry to remove.
    const entry = parentAndName(path);
    if (!entry) return undefined;
    const dir = await this.directory(entry.dir, false).catch(() => undefined);
    if (!dir) return undefined;
    const host = childPath(dir, entry.name, "image path");
    return options.followFinal === false ? host : this.#followFinal(path, host, false);
  }

  /** A conffile's host path, following a final symlink inside the root as dpkg does for conffiles. */
  async resolveFile(path: string): Promise<string> {
    return (await this.#followFinal(path, await this.resolveEntry(path), true))!;
  }

  async #followFinal(path: string, host: string, create: boolean): Promise<string | undefined> {
    // Most entries are no symlink: one lstat, and the cached parent stands.
    if (!lstatSync(host, { throwIfNoEntry: false })?.isSymbolicLink()) return host;
    const walk = walkInRoot(this.root, host.slice(this.root.length), {
      followFinal: true,
      create: create ? "parents" : undefined,
    });
    // A file written "through" a link to / would land beside the root (`<root>.dpkg-new`).
    if (walk.path === "/")
      throw new SutureError(
        "UNSAFE_LAYER",
        `${path} is a symlink to the image's root directory; the image is malformed or hostile`,
      );
    if (walk.kind === "not-directory")
      throw new SutureError(
        "PATCH_FAILED",
        `${walk.path} is not a directory in the image, but a package needs ${path} below it`,
      );
    // The link's target need not exist (it is what gets written), but its directory must.
    if (walk.kind === "missing" && walk.missing.length > 1) return undefined;
    return walk.host;
  }

  /** Make sure `path` is a directory: create it with the archive's metadata, leave an existing one alone. */
  async ensureDirectory(
    path: string,
    meta: { uid: number; gid: number; mode: number; mtime: number },
  ): Promise<void> {
    const key = posix.normalize(`/${path}`);
    const entry = parentAndName(key);
    if (!entry || this.#dirs.has(key)) return;
    const parent = await this.directory(entry.dir, true);
    const host = childPath(parent!, entry.name, "image path");
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (!st) {
      mkdirSync(host, { mode: 0o700 });
      chownOrRecord(host, meta.uid, meta.gid);
      chmodSync(host, meta.mode & 0o7777);
      utimesSync(host, meta.mtime, meta.mtime);
      this.#dirs.set(key, host);
      return;
    }
    if (st.isDirectory()) {
      this.#dirs.set(key, host);
      return;
    }
    if (st.isSymbolicLink()) {
      // A symlink to a directory stands in for it (usrmerge); resolving it checks that it is one.
      await this.directory(key, true);
      return;
    }
    throw new SutureError(
      "PATCH_FAILED",
      `${key} is a file in the image but a package ships it as a directory: remove it from the image or use the sandbox engine`,
    );
  }
}

/**
 * An image path as its parent directory and final name, `.` and `..` resolved (never above `/`);
 * undefined for the root itself, which is no entry.
 */
function parentAndName(path: string): { dir: string; name: string } | undefined {
  const normal = posix.normalize(`/${path}`);
  if (normal === "/") return undefined;
  return { dir: posix.dirname(normal), name: posix.basename(normal) };
}

/** dpkg-statoverride records as numeric ids, by package path. */
async function statOverrideIds(
  root: string,
  db: DpkgDatabase,
): Promise<Map<string, { uid: number; gid: number; mode: number }>> {
  const out = new Map<string, { uid: number; gid: number; mode: number }>();
  if (!db.statOverrides.length) return out;
  const users = await imageIds(root, "/etc/passwd");
  const groups = await imageIds(root, "/etc/group");
  const lookup = (spec: string, table: Map<string, number>) =>
    spec.startsWith("#") ? Number(spec.slice(1)) : table.get(spec);
  for (const o of db.statOverrides) {
    const uid = lookup(o.user, users);
    const gid = lookup(o.group, groups);
    if (uid === undefined || gid === undefined || Number.isNaN(uid) || Number.isNaN(gid)) continue;
    out.set(o.path, { uid, gid, mode: o.mode });
  }
  return out;
}
