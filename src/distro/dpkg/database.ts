import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { describeCause, SutureError } from "../../errors/errors.ts";
import { writeFileAtomic } from "../../fs/atomic.ts";
import { childPath, listDirInRoot, readFileInRoot, resolveInRoot } from "../../fs/in-root.ts";
import { checkPackageFields } from "../package-syntax.ts";
import { type ControlField, type ControlParagraph, paragraphOf, parseFields } from "./control.ts";

/**
 * An image's dpkg database, read into memory and written back the way dpkg writes it. Two layouts:
 * - classic: `/var/lib/dpkg/status` (one stanza per package) and `/var/lib/dpkg/info/<pkg>[:<arch>].<file>`
 *   (`list`, `md5sums`, `conffiles`, maintainer scripts, `triggers`, `shlibs`, …);
 * - status.d (distroless): `/var/lib/dpkg/status.d/<name>` holding one package's control stanza
 *   (often without a Status field) and `status.d/<name>.md5sums`; no info directory.
 * The root is an untrusted image tree: every path is resolved inside it (fs/in-root.ts) and files
 * are replaced by writing a fresh temporary file and renaming it, so a symlink planted in the
 * image is replaced, never written through.
 */

export type DatabaseLayout = "classic" | "status.d";

/** One `Field: value` of a stanza, spelled as written (control.ts's field view). */
export type StanzaField = ControlField;

export interface ConffileRecord {
  /** Absolute path as the package names it. */
  path: string;
  /** MD5 hex, or dpkg's `newconffile` placeholder. */
  hash: string;
  obsolete: boolean;
  removeOnUpgrade: boolean;
}

export interface DatabasePackage {
  name: string;
  architecture: string;
  /** `same`, `foreign`, `allowed` or `no`. */
  multiArch: string;
  version: string;
  /** `want eflag state` (`install ok installed`); undefined for status.d stanzas that carry none. */
  status: string | undefined;
  fields: readonly StanzaField[];
  conffiles: readonly ConffileRecord[];
  /** status.d layout: the stanza's file name in status.d. */
  statusFile?: string;
}

/** A `dpkg-divert` record: `path` is redirected to `divertTo` for every package but `package`. */
export interface Diversion {
  path: string;
  divertTo: string;
  /** The package allowed to write `path` itself; undefined for a local diversion (`:`). */
  package: string | undefined;
}

/** A `dpkg-statoverride` record. `user`/`group` are names or `#<id>`. */
export interface StatOverride {
  user: string;
  group: string;
  mode: number;
  path: string;
}

/** Who is interested in a trigger: package name (with `:arch` when written so) and whether it lets activators go on. */
export interface TriggerInterest {
  package: string;
  noawait: boolean;
}

const DPKG_DIR = "/var/lib/dpkg";
const IMAGE_DATABASE_FIX =
  "the image's dpkg database is malformed or hostile, so nothing was written; rebuild the image from a trusted base";
/** dpkg's info-file kinds (`list`, `md5sums`, `postinst`, `shlibs`, …): the suffix of an info file name. */
const INFO_KIND = /^[a-z0-9_-]+$/;

/**
 * The field order dpkg writes status stanzas in (lib/dpkg/parse.c's table); fields it does not
 * know follow in the order the package's control file has them.
 */
const DPKG_FIELD_ORDER = [
  "Package",
  "Essential",
  "Protected",
  "Status",
  "Priority",
  "Section",
  "Installed-Size",
  "Origin",
  "Maintainer",
  "Bugs",
  "Architecture",
  "Multi-Arch",
  "Source",
  "Version",
  "Revision",
  "Config-Version",
  "Replaces",
  "Provides",
  "Depends",
  "Pre-Depends",
  "Recommends",
  "Suggests",
  "Breaks",
  "Conflicts",
  "Enhances",
  "Conffiles",
  "Filename",
  "Size",
  "MD5sum",
  "MSDOS-Filename",
  "Description",
  "Triggers-Pending",
  "Triggers-Awaited",
];
const FIELD_RANK = new Map(DPKG_FIELD_ORDER.map((f, i) => [f.toLowerCase(), i]));

/** Render fields as a stanza (no trailing blank line). */
export function formatStanza(fields: readonly StanzaField[]): string {
  return fields
    .map((f) =>
      f.value.startsWith("\n") || f.value === "" ? `${f.name}:${f.value}` : `${f.name}: ${f.value}`,
    )
    .join("\n");
}

/** Sort fields into dpkg's status order; unknown fields keep their relative order after the known ones. */
export function orderStatusFields(fields: readonly StanzaField[]): StanzaField[] {
  const rank = (f: StanzaField) => FIELD_RANK.get(f.name.toLowerCase()) ?? DPKG_FIELD_ORDER.length;
  return fields
    .map((f, i) => ({ f, i }))
    .sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i)
    .map((x) => x.f);
}

export function fieldValue(fields: readonly StanzaField[], name: string): string | undefined {
  const lower = name.toLowerCase();
  return fields.find((f) => f.name.toLowerCase() === lower)?.value;
}

/** Replace (or add, or with undefined remove) a field, keeping the others in place. */
export function withField(
  fields: readonly StanzaField[],
  name: string,
  value: string | undefined,
): StanzaField[] {
  const lower = name.toLowerCase();
  const out = fields.filter((f) => f.name.toLowerCase() !== lower || value !== undefined);
  const at = out.findIndex((f) => f.name.toLowerCase() === lower);
  if (value === undefined) return out;
  if (at >= 0) out[at] = { name: out[at]!.name, value };
  else out.push({ name, value });
  return out;
}

export function parseConffilesField(value: string | undefined): ConffileRecord[] {
  const out: ConffileRecord[] = [];
  for (const line of (value ?? "").split("\n")) {
    const words = line.trim().split(/\s+/);
    if (!words[0]?.startsWith("/") || !words[1]) continue;
    out.push({
      path: words[0],
      hash: words[1],
      obsolete: words.slice(2).includes("obsolete"),
      removeOnUpgrade: words.slice(2).includes("remove-on-upgrade"),
    });
  }
  return out;
}

export function formatConffilesField(records: readonly ConffileRecord[]): string | undefined {
  if (records.length === 0) return undefined;
  return records
    .map(
      (c) =>
        `\n ${c.path} ${c.hash}${c.obsolete ? " obsolete" : ""}${c.removeOnUpgrade ? " remove-on-upgrade" : ""}`,
    )
    .join("");
}

/** Parse `/var/lib/dpkg/diversions`: records of three lines (path, divert-to, package or `:`). */
export function parseDiversions(text: string): Diversion[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  if (lines.length % 3 !== 0)
    throw new SutureError(
      "INVALID_MANIFEST",
      `the image's ${DPKG_DIR}/diversions has ${lines.length} lines, not a multiple of 3: repair it with dpkg-divert in the image`,
    );
  const out: Diversion[] = [];
  for (let i = 0; i < lines.length; i += 3) {
    out.push({
      path: lines[i]!,
      divertTo: lines[i + 1]!,
      package: lines[i + 2] === ":" ? undefined : lines[i + 2],
    });
  }
  return out;
}

export function parseStatOverrides(text: string): StatOverride[] {
  const out: StatOverride[] = [];
  for (const line of text.split("\n")) {
    const m = /^(\S+)\s+(\S+)\s+([0-7]+)\s+(\/.*)$/.exec(line.trim());
    if (m) out.push({ user: m[1]!, group: m[2]!, mode: Number.parseInt(m[3]!, 8), path: m[4]! });
  }
  return out;
}

/** `<pkg>:<arch>` for Multi-Arch: same packages (dpkg's multiarch info layout), else `<pkg>`. */
export function infoName(pkg: { name: string; architecture: string; multiArch: string }): string {
  return pkg.multiArch === "same" ? `${pkg.name}:${pkg.architecture}` : pkg.name;
}

/**
 * A stanza's Package and Architecture name database files (`info/<name>:<arch>.list`,
 * `status.d/<name>`): refuse (UNSAFE_LAYER) any that breaks the policy syntax before it becomes a
 * path. Stanzas come from the image (untrusted) or from an opened package (already checked).
 */
function checkRecordIdentity(pkg: { name: string; architecture: string }, where: string): void {
  checkPackageFields(
    "deb",
    { name: pkg.name, architecture: pkg.architecture },
    where,
    IMAGE_DATABASE_FIX,
    "UNSAFE_LAYER",
  );
}

/** Where a stanza lives, for messages. */
function stanzaWhere(pkg: { statusFile?: string }): string {
  return pkg.statusFile === undefined
    ? `the image's ${DPKG_DIR}/status`
    : `the image's ${DPKG_DIR}/status.d/${JSON.stringify(pkg.statusFile.slice(0, 80))}`;
}

function toPackage(fields: StanzaField[], statusFile?: string): DatabasePackage | undefined {
  const name = fieldValue(fields, "Package");
  if (!name) return undefined;
  return {
    name,
    architecture: fieldValue(fields, "Architecture") ?? "all",
    multiArch: fieldValue(fields, "Multi-Arch") ?? "no",
    version: fieldValue(fields, "Version") ?? "",
    status: fieldValue(fields, "Status"),
    fields,
    conffiles: parseConffilesField(fieldValue(fields, "Conffiles")),
    ...(statusFile === undefined ? {} : { statusFile }),
  };
}

/** Installed in dpkg's sense: files on disk (unpacked or further). status.d stanzas without Status count. */
export function isInstalled(pkg: DatabasePackage): boolean {
  if (pkg.status === undefined) return true;
  const state = pkg.status.split(/\s+/)[2];
  return state !== undefined && state !== "not-installed" && state !== "config-files";
}

/** A slot in the status file: a stanza's raw text, kept byte for byte unless replaced. */
interface StatusSlot {
  raw: string;
  pkg: DatabasePackage | undefined;
  /** The separator (blank lines) that followed it in the file. */
  after: string;
}

/** A classic status file cut into stanzas, each kept byte for byte with the blank lines after it. */
function statusSlots(text: string): { slots: StatusSlot[]; leading: string } {
  const tokens = text.split(/(\n(?:[ \t]*\n)+)/);
  const slots: StatusSlot[] = [];
  let leading = "";
  for (let i = 0; i < tokens.length; i += 2) {
    const raw = tokens[i]!;
    const after = tokens[i + 1] ?? "";
    if (raw.trim() === "") {
      if (slots.length) slots[slots.length - 1]!.after += raw + after;
      else leading += raw + after;
      continue;
    }
    slots.push({ raw, pkg: toPackage(parseFields(raw)), after });
  }
  return { slots, leading };
}

/** A status.d file that holds a package's stanza (not the md5sums, list or conffiles beside it). */
function isStatusDStanza(name: string): boolean {
  return !(name.includes(".") && /\.(md5sums|list|conffiles)$/.test(name));
}

/**
 * Which layout a database is in, from its status file's text and status.d's file names: the
 * classic status file when it has any content, else status.d when it has files.
 */
function layoutOf(
  statusText: string | undefined,
  statusDNames: readonly string[],
): DatabaseLayout | undefined {
  if (statusText !== undefined && statusText.trim() !== "") return "classic";
  return statusDNames.length ? "status.d" : undefined;
}

/** A file of the image's dpkg directory, read inside the root; undefined when it is not a file there. */
async function readDatabaseFile(root: string, name: string): Promise<string | undefined> {
  try {
    const p = await resolveInRoot(root, `${DPKG_DIR}/${name}`);
    return p ? await readFile(p, "utf8") : undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EISDIR" || code === "ENOTDIR") return undefined;
    throw new SutureError("IO", `cannot read the image's ${DPKG_DIR}/${name}: ${describeCause(e)}`, {
      cause: e,
    });
  }
}

/** The stanzas of status.d's files, by file name (files that are not stanzas, or unreadable, left out). */
async function readStatusD(root: string, names: readonly string[]): Promise<Map<string, DatabasePackage>> {
  const statusD = new Map<string, DatabasePackage>();
  for (const name of names) {
    if (!isStatusDStanza(name)) continue;
    const text = await readDatabaseFile(root, `status.d/${name}`);
    if (text === undefined) continue;
    const pkg = toPackage(parseFields(text), name);
    if (pkg) statusD.set(name, pkg);
  }
  return statusD;
}

/**
 * Read the dpkg database under `root`. Throws UNSUPPORTED_OS when there is none, and PATCH_FAILED
 * when dpkg left journal entries in `updates/` (the status file alone would be stale).
 */
export async function readDpkgDatabase(root: string): Promise<DpkgDatabase> {
  const dir = await resolveInRoot(root, DPKG_DIR);
  if (!dir)
    throw new SutureError("UNSUPPORTED_OS", `the image has no ${DPKG_DIR}: it is not a dpkg-based image`);
  const updates = await listDirInRoot(root, `${DPKG_DIR}/updates`);
  if (updates.some((n) => /^\d+$/.test(n)))
    throw new SutureError(
      "PATCH_FAILED",
      `the image's dpkg journal (${DPKG_DIR}/updates) has unapplied entries: run any dpkg command in the image (e.g. dpkg --configure -a) and rebuild it`,
    );
  const diversions = parseDiversions((await readDatabaseFile(root, "diversions")) ?? "");
  const statOverrides = parseStatOverrides((await readDatabaseFile(root, "statoverride")) ?? "");
  const statusText = await readDatabaseFile(root, "status");
  const statusDNames = await listDirInRoot(root, `${DPKG_DIR}/status.d`);
  const layout = layoutOf(statusText, statusDNames);
  if (layout === "classic") {
    const { slots, leading } = statusSlots(statusText!);
    const infoFiles = new Set(await listDirInRoot(root, `${DPKG_DIR}/info`));
    return new DpkgDatabase(root, "classic", { slots, leading, infoFiles, diversions, statOverrides });
  }
  if (layout === "status.d") {
    return new DpkgDatabase(root, "status.d", {
      statusD: await readStatusD(root, statusDNames),
      statusDNames: new Set(statusDNames),
      diversions,
      statOverrides,
    });
  }
  throw new SutureError(
    "UNSUPPORTED_OS",
    `the image has neither ${DPKG_DIR}/status nor ${DPKG_DIR}/status.d: no dpkg database to update`,
  );
}

/**
 * An installed package as resolvers, plans and version checks read it: its identity (values
 * trimmed), its source package, and its whole stanza as a lookup.
 */
export interface InstalledPackage {
  name: string;
  version: string;
  architecture: string;
  /** Source package name (defaults to the binary name). */
  source: string;
  /** `want eflag state`; `install ok installed` for status.d stanzas that carry none. */
  status: string;
  paragraph: ControlParagraph;
}

/** The installed view (isInstalled, with a version) of database stanzas. */
export function installedPackages(packages: Iterable<DatabasePackage>): InstalledPackage[] {
  const out: InstalledPackage[] = [];
  for (const pkg of packages) {
    if (!isInstalled(pkg)) continue;
    const paragraph = paragraphOf(pkg.fields);
    const name = paragraph.get("package");
    const version = paragraph.get("version");
    if (!name || !version) continue;
    const source = paragraph.get("source");
    out.push({
      name,
      version,
      architecture: paragraph.get("architecture") ?? "all",
      source: source ? source.split(" ")[0]! : name,
      status: paragraph.get("status") ?? "install ok installed",
      paragraph,
    });
  }
  return out;
}

/** Installed packages by name → version (the last stanza of a name wins). */
export function installedVersions(packages: readonly InstalledPackage[]): Map<string, string> {
  return new Map(packages.map((p) => [p.name, p.version]));
}

/** The installed packages of a classic status file's text. */
export function installedFromStatus(text: string): InstalledPackage[] {
  return installedPackages(statusSlots(text).slots.flatMap((s) => (s.pkg ? [s.pkg] : [])));
}

/**
 * The installed packages of a database given as file contents (detection reads them from the
 * image's layers): `status`'s text and status.d's files by name. Undefined when there is no database.
 */
export function installedFromFiles(
  statusText: string | undefined,
  statusD: ReadonlyMap<string, string>,
): { layout: DatabaseLayout; packages: InstalledPackage[] } | undefined {
  const layout = layoutOf(statusText, [...statusD.keys()]);
  if (layout === "classic") return { layout, packages: installedFromStatus(statusText!) };
  if (layout === undefined) return undefined;
  const stanzas = [...statusD]
    .filter(([name]) => isStatusDStanza(name))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .flatMap(([name, text]) => toPackage(parseFields(text), name) ?? []);
  return { layout, packages: installedPackages(stanzas) };
}

/**
 * The installed packages under `root`, read as readDpkgDatabase reads them (inside the root,
 * classic or status.d) but without the rest of the database: the cheap view for version checks.
 * Undefined when the root has no dpkg database.
 */
export async function readInstalledPackages(root: string): Promise<InstalledPackage[] | undefined> {
  const statusText = await readDatabaseFile(root, "status");
  const statusDNames = await listDirInRoot(root, `${DPKG_DIR}/status.d`);
  const layout = layoutOf(statusText, statusDNames);
  if (layout === "classic") return installedFromStatus(statusText!);
  if (layout === "status.d") return installedPackages((await readStatusD(root, statusDNames)).values());
  return undefined;
}

interface ClassicState {
  slots: StatusSlot[];
  leading: string;
  infoFiles: Set<string>;
  diversions: Diversion[];
  statOverrides: StatOverride[];
}
interface StatusDState {
  statusD: Map<string, DatabasePackage>;
  statusDNames: Set<string>;
  diversions: Diversion[];
  statOverrides: StatOverride[];
}

/**
 * The database of one root. Changes are made in memory with `setPackage` and written by
 * `commit`; info files are written at once by `writeInfoFiles` (as dpkg does before it records
 * the new status). Not safe for concurrent use; one process edits a root at a time.
 */
export class DpkgDatabase {
  readonly root: string;
  readonly layout: DatabaseLayout;
  readonly diversions: readonly Diversion[];
  readonly statOverrides: readonly StatOverride[];
  readonly #classic: ClassicState | undefined;
  readonly #statusD: StatusDState | undefined;
  readonly #dirtyStatusD = new Set<string>();
  #statusDirty = false;
  #owners: Map<string, Set<string>> | undefined;
  /**
   * File lists read so far, by the info file they come from (`info/<name>.list`,
   * `status.d/<file>.md5sums`); an entry is dropped when writeInfoFiles writes or removes that
   * file. The ownership map is rebuilt after every unpacked package: without this, each rebuild
   * read every installed package's list again (0.1-0.3 s per package of a 26-package patch).
   */
  readonly #fileLists = new Map<string, string[] | undefined>();

  constructor(root: string, layout: DatabaseLayout, state: ClassicState | StatusDState) {
    this.root = root;
    this.layout = layout;
    this.diversions = state.diversions;
    this.statOverrides = state.statOverrides;
    if ("slots" in state) this.#classic = state;
    else this.#statusD = state;
  }

  /** Every package stanza, in file order (classic) or file-name order (status.d). */
  get packages(): DatabasePackage[] {
    if (this.#classic) return this.#classic.slots.flatMap((s) => (s.pkg ? [s.pkg] : []));
    return [...this.#statusD!.statusD.values()];
  }

  /** The stanza of `name` (for `arch`, or the only one when arch is omitted). */
  find(name: string, arch?: string): DatabasePackage | undefined {
    const matches = this.packages.filter((p) => p.name === name);
    if (arch === undefined) return matches[0];
    return (
      matches.find((p) => p.architecture === arch) ??
      (arch === "all" ? undefined : matches.find((p) => p.architecture === "all"))
    );
  }

  /** The diversion that applies to `path` when `pkg` writes it, if any. */
  diversionFor(path: string, pkg: string): Diversion | undefined {
    const d = this.diversions.find((x) => x.path === path);
    return d && d.package !== pkg ? d : undefined;
  }

  /** `<infoName>.<kind>`, once the stanza's identity and the kind are known to be plain names. */
  #infoFileName(pkg: DatabasePackage, kind: string): string {
    checkRecordIdentity(pkg, stanzaWhere(pkg));
    if (!INFO_KIND.test(kind))
      throw new SutureError(
        "INVALID_ARCHIVE",
        `package ${pkg.name} has a control file named ${JSON.stringify(kind.slice(0, 80))}, which is not a dpkg info file name; the package is malformed or hostile`,
      );
    return `${infoName(pkg)}.${kind}`;
  }

  /** A control/info file of an installed package (`list`, `md5sums`, `postinst`, …). */
  async readInfoFile(pkg: DatabasePackage, kind: string): Promise<Buffer | undefined> {
    const path =
      this.layout === "classic"
        ? childPath(`${DPKG_DIR}/info`, this.#infoFileName(pkg, kind), "dpkg info file")
        : kind === "md5sums" && pkg.statusFile
          ? childPath(`${DPKG_DIR}/status.d`, `${pkg.statusFile}.md5sums`, "dpkg status.d file")
          : undefined;
    if (!path) return undefined;
    // In-root resolution: a symlink planted at the info file is followed inside the image only.
    return readFileInRoot(this.root, path);
  }

  /**
   * The paths a package owns: its `.list` (classic), or for status.d the files of its md5sums
   * (directories are not recorded there). Undefined when the database has no record.
   */
  async fileList(pkg: DatabasePackage): Promise<string[] | undefined> {
    return (await this.#fileList(pkg))?.slice();
  }

  async #fileList(pkg: DatabasePackage): Promise<readonly string[] | undefined> {
    const key =
      this.layout === "classic"
        ? `info/${this.#infoFileName(pkg, "list")}`
        : `status.d/${pkg.statusFile}.md5sums`;
    if (this.#fileLists.has(key)) return this.#fileLists.get(key);
    let paths: string[] | undefined;
    if (this.layout === "classic") {
      const list = await this.readInfoFile(pkg, "list");
      paths = list
        ?.toString("utf8")
        .split("\n")
        .filter((l) => l !== "");
    } else {
      const sums = await this.readInfoFile(pkg, "md5sums");
      paths = sums ? md5sumsPaths(sums.toString("utf8")) : undefined;
    }
    this.#fileLists.set(key, paths);
    return paths;
  }

  /** Packages (by info name) whose file lists contain `path`, except `except`. */
  async ownersOf(path: string, except?: string): Promise<string[]> {
    if (!this.#owners) {
      const owners = new Map<string, Set<string>>();
      for (const pkg of this.packages) {
        if (!isInstalled(pkg)) continue;
        for (const p of (await this.#fileList(pkg)) ?? []) {
          const set = owners.get(p) ?? new Set<string>();
          set.add(infoName(pkg));
          owners.set(p, set);
        }
      }
      this.#owners = owners;
    }
    return [...(this.#owners.get(path) ?? [])].filter((o) => o !== except);
  }

  /** Forget cached ownership after a package's file list changed. */
  #ownershipChanged(): void {
    this.#owners = undefined;
  }

  /** Packages interested in trigger `name` (`/var/lib/dpkg/triggers/<name>`). */
  async triggerInterests(name: string): Promise<TriggerInterest[]> {
    // A name starting with `/` is a file trigger (triggers/File); any other is one file of triggers/.
    if (this.layout !== "classic" || name.startsWith("/")) return [];
    const host = await resolveInRoot(this.root, childPath(`${DPKG_DIR}/triggers`, name, "trigger name"));
    const text = host ? await readFile(host, "utf8").catch(() => "") : "";
    return text
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => ({ package: l.replace(/\/noawait$/, ""), noawait: l.endsWith("/noawait") }));
  }

  /** File-trigger interests (`triggers/File`): path prefix → interested package. */
  async fileTriggerInterests(): Promise<{ path: string; interest: TriggerInterest }[]> {
    if (this.layout !== "classic") return [];
    const host = await resolveInRoot(this.root, `${DPKG_DIR}/triggers/File`);
    const text = host ? await readFile(host, "utf8").catch(() => "") : "";
    return text.split("\n").flatMap((l) => {
      const m = /^(\/\S*)\s+(\S+)$/.exec(l.trim());
      if (!m) return [];
      const pkg = m[2]!;
      return [
        {
          path: m[1]!,
          interest: { package: pkg.replace(/\/noawait$/, ""), noawait: pkg.endsWith("/noawait") },
        },
      ];
    });
  }

  /**
   * Set a package's stanza (in memory until `commit`): replaces the stanza of the same name and
   * architecture in place, or adds a new one where dpkg would put it (name order). For status.d,
   * the stanza goes to the package's existing file or to `status.d/<name>`.
   */
  setPackage(fields: readonly StanzaField[]): DatabasePackage {
    const name = fieldValue(fields, "Package");
    if (!name) throw new SutureError("INTERNAL", "setPackage: stanza without a Package field");
    const arch = fieldValue(fields, "Architecture") ?? "all";
    checkRecordIdentity(
      { name, architecture: arch },
      `the dpkg status stanza of ${JSON.stringify(name.slice(0, 80))}`,
    );
    const sameSlot = (p: DatabasePackage | undefined) =>
      p !== undefined && p.name === name && (p.architecture === arch || p.multiArch !== "same");
    if (this.#classic) {
      const pkg = toPackage([...fields])!;
      const slots = this.#classic.slots;
      const at = slots.findIndex((s) => sameSlot(s.pkg));
      const raw = formatStanza(fields);
      if (at >= 0) slots[at] = { raw, pkg, after: slots[at]!.after };
      else {
        let before = slots.findIndex((s) => s.pkg !== undefined && s.pkg.name > name);
        if (before < 0) before = slots.length;
        // The last slot's separator is the file's tail; a new last stanza takes it over.
        if (before === slots.length && slots.length) {
          const last = slots[slots.length - 1]!;
          slots.push({ raw, pkg, after: last.after || "\n" });
          last.after = "\n\n";
        } else slots.splice(before, 0, { raw, pkg, after: "\n\n" });
      }
      this.#statusDirty = true;
      this.#ownershipChanged();
      return pkg;
    }
    const state = this.#statusD!;
    const existing = [...state.statusD.values()].find(sameSlot);
    let file = existing?.statusFile ?? name;
    if (!existing && state.statusDNames.has(file)) file = `${name}:${arch}`;
    const pkg = toPackage([...fields], file)!;
    state.statusD.set(file, pkg);
    state.statusDNames.add(file);
    this.#dirtyStatusD.add(file);
    this.#ownershipChanged();
    return pkg;
  }

  /**
   * Write a package's info files as dpkg does after an unpack: `files` maps a kind (`list`,
   * `md5sums`, `conffiles`, `postinst`, …) to its content; any other info file of the package
   * (under its old or new info name) is removed. For status.d only `md5sums` is kept, as
   * `status.d/<file>.md5sums`.
   */
  async writeInfoFiles(
    pkg: DatabasePackage,
    files: ReadonlyMap<string, Buffer>,
    previous?: DatabasePackage,
  ): Promise<void> {
    if (this.layout === "status.d") {
      const sums = files.get("md5sums");
      if (pkg.statusFile === undefined)
        throw new SutureError("INTERNAL", `writeInfoFiles: ${pkg.name} has no status.d file`);
      const dir = await this.#dbDir("status.d");
      this.#fileLists.delete(`status.d/${pkg.statusFile}.md5sums`);
      if (sums)
        await writeFileReplacing(
          childPath(dir, `${pkg.statusFile}.md5sums`, "dpkg status.d file"),
          sums,
          0o644,
        );
      this.#ownershipChanged();
      return;
    }
    const infoFiles = this.#classic!.infoFiles;
    const dir = await this.#dbDir("info");
    const newBase = infoName(pkg);
    // Every name is checked before the first file is written: a bad one leaves the directory as it was.
    const named = [...files].map(([kind, data]) => ({ kind, data, file: this.#infoFileName(pkg, kind) }));
    if (previous) checkRecordIdentity(previous, stanzaWhere(previous));
    for (const { kind, data, file } of named) {
      const mode = ["preinst", "postinst", "prerm", "postrm", "config"].includes(kind) ? 0o755 : 0o644;
      this.#fileLists.delete(`info/${file}`);
      await writeFileReplacing(childPath(dir, file, "dpkg info file"), data, mode);
      infoFiles.add(file);
    }
    // A Multi-Arch change renames the package's info files: remove the old name's too.
    const bases = new Set([newBase, ...(previous ? [infoName(previous)] : [])]);
    for (const file of [...infoFiles]) {
      for (const base of bases) {
        if (!file.startsWith(`${base}.`)) continue;
        const kind = file.slice(base.length + 1);
        // A dot in the rest means another package whose name merely starts with `base.`.
        if (!INFO_KIND.test(kind) || (base === newBase && files.has(kind))) continue;
        this.#fileLists.delete(`info/${file}`);
        await rm(childPath(dir, file, "dpkg info file"), { force: true });
        infoFiles.delete(file);
      }
    }
    this.#ownershipChanged();
  }

  /** Write the status file (classic) or the changed status.d stanzas. */
  async commit(): Promise<void> {
    if (this.#classic && this.#statusDirty) {
      const { slots, leading } = this.#classic;
      const text = leading + slots.map((s) => s.raw + s.after).join("");
      const dir = await this.#dbDir("");
      await writeFileReplacing(join(dir, "status"), Buffer.from(text, "utf8"), 0o644);
      this.#statusDirty = false;
    }
    if (this.#statusD) {
      const dir = await this.#dbDir("status.d");
      for (const file of this.#dirtyStatusD) {
        const pkg = this.#statusD.statusD.get(file)!;
        await writeFileReplacing(
          childPath(dir, file, "dpkg status.d file"),
          Buffer.from(`${formatStanza(pkg.fields)}\n`, "utf8"),
          0o644,
        );
      }
      this.#dirtyStatusD.clear();
    }
  }

  async #dbDir(sub: string): Promise<string> {
    const path = sub ? `${DPKG_DIR}/${sub}` : DPKG_DIR;
    let host = await resolveInRoot(this.root, path);
    if (!host) {
      const parent = await resolveInRoot(this.root, DPKG_DIR);
      if (!parent)
        throw new SutureError("IO", `the image's ${DPKG_DIR} disappeared while it was being updated`);
      host = join(parent, sub);
      await mkdir(host, { mode: 0o755 });
    }
    return host;
  }
}

/** Paths (absolute) listed in an md5sums file (`<md5>  <path without leading slash>`). */
export function md5sumsPaths(text: string): string[] {
  return text.split("\n").flatMap((line) => {
    const m = /^[0-9a-f]{32} [ *]?(.+)$/.exec(line);
    return m ? [`/${m[1]!.replace(/^\/+/, "")}`] : [];
  });
}

/**
 * Replace `path` with `data`: written to a fresh sibling (O_EXCL|O_NOFOLLOW) and renamed over it,
 * so an existing symlink at `path` is replaced rather than followed.
 */
export async function writeFileReplacing(path: string, data: Buffer, mode: number): Promise<void> {
  await writeFileAtomic(path, data, {
    mode,
    exactMode: true,
    fsync: false,
    failure: `cannot replace ${path}`,
  });
}
