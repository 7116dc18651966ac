import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { checkPackageFields } from "../package-syntax.ts";
import { type ControlParagraph, paragraphOf, parseControl, parseFields } from "./control.ts";
import { compareDebVersions } from "./version.ts";

/**
 * One binary package from a verified `Packages` index. Only the fields a resolver and a
 * downloader need are lifted out; `paragraph` keeps the whole stanza for anything else.
 * Relationship fields are kept as written (see `parseRelations`).
 */
export interface PackageEntry {
  package: string;
  version: string;
  architecture: string;
  /** Path of the .deb relative to `repoUri` (`pool/main/o/openssl/libssl3_….deb`). */
  filename: string;
  size: number;
  /** Lower-case hex SHA-256 of the .deb, from the verified index. */
  sha256: string;
  /** `Source` as written: `openssl` or `openssl (3.0.15-1~deb12u1)`; absent = same as package. */
  source?: string;
  depends?: string;
  preDepends?: string;
  provides?: string;
  conflicts?: string;
  breaks?: string;
  replaces?: string;
  essential: boolean;
  multiArch?: string;
  /** The stanza's text exactly as in the index. */
  paragraph: string;
  /** Repository base URI the .deb is fetched from: `${repoUri}/${filename}`. */
  repoUri: string;
}

/** Lookup of an index's entries by package name. */
export interface PackagesByName {
  get(name: string): readonly PackageEntry[] | undefined;
  has(name: string): boolean;
}

/** One verified `Packages` index of a repository (one component × architecture). */
export interface PackagesIndex {
  uri: string;
  suite: string;
  component: string;
  arch: string;
  /** URL of the (compressed) index as listed in the signed Release file. */
  url: string;
  /** SHA-256 of the index file as downloaded, from the signed Release file. */
  sha256: string;
  /**
   * Every usable entry. A cached index (packages-cache.ts) reads and parses every stanza for it:
   * listings and tests only, never a patch's hot path (which asks byName and byProvides).
   */
  readonly entries: PackageEntry[];
  /** Entries by package name, in index order. */
  byName: PackagesByName;
  /** Entries whose `Provides` names a virtual package, in index order (any version; check it). */
  byProvides: PackagesByName;
  /**
   * Frees what the index holds now (a cached index's open file and name table) instead of when it
   * is collected. Entries already handed out stay valid; asking for an entry not read before is
   * then an INTERNAL error.
   */
  release?(): void;
}

const WANTED: Record<string, keyof PackageEntry | "size" | "essential"> = {
  package: "package",
  version: "version",
  architecture: "architecture",
  filename: "filename",
  size: "size",
  sha256: "sha256",
  source: "source",
  depends: "depends",
  "pre-depends": "preDepends",
  provides: "provides",
  conflicts: "conflicts",
  breaks: "breaks",
  replaces: "replaces",
  essential: "essential",
  "multi-arch": "multiArch",
};

/**
 * Parse a decompressed `Packages` index. Stanzas lacking Package, Version, Architecture, Filename,
 * a numeric Size or a SHA256 are skipped: nothing without a verifiable checksum may be installed.
 * Throws INVALID_MANIFEST when the text has stanzas but none is usable (not a Packages file).
 */
export function parsePackagesIndex(
  text: string,
  options: { repoUri: string; what?: string },
): PackageEntry[] {
  const out: PackageEntry[] = [];
  let stanzas = 0;
  let pos = 0;
  const n = text.length;
  while (pos < n) {
    // Skip blank lines between stanzas.
    while (pos < n && (text[pos] === "\n" || text[pos] === "\r")) pos++;
    if (pos >= n) break;
    let end = text.indexOf("\n\n", pos);
    if (end < 0) end = n;
    const stanza = text.slice(pos, end);
    pos = end + 2;
    stanzas++;
    const entry = packageEntryOf(stanza, options.repoUri, options.what);
    if (entry) out.push(entry);
  }
  if (stanzas > 0 && out.length === 0) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${options.what ?? "Packages index"} has ${stanzas} stanzas but none with Package, Version, Filename, Size and SHA256`,
    );
  }
  return out;
}

/**
 * One stanza's entry, or undefined when it lacks what a verifiable install needs (see
 * parsePackagesIndex). Throws UNTRUSTED for an identity no dpkg could build.
 */
export function packageEntryOf(
  stanza: string,
  repoUri: string,
  what = "Packages index",
): PackageEntry | undefined {
  const fields: Record<string, string> = {};
  for (const [name, value] of paragraphOf(parseFields(stanza))) {
    // Own keys only: a field named `constructor` is not one of them.
    if (Object.hasOwn(WANTED, name)) fields[WANTED[name]!] = value;
  }
  const size = Number(fields.size);
  const sha256 = (fields.sha256 ?? "").toLowerCase();
  if (
    !fields.package ||
    !fields.version ||
    !fields.architecture ||
    !fields.filename ||
    !/^\d+$/.test(fields.size ?? "") ||
    !Number.isSafeInteger(size) ||
    !/^[0-9a-f]{64}$/.test(sha256)
  ) {
    return undefined;
  }
  // The entry's identity names the .deb that is installed and recorded; a signed index that
  // describes a package no dpkg could build (a `/` in its architecture, …) is refused, not skipped.
  checkPackageFields(
    "deb",
    { name: fields.package, version: fields.version, architecture: fields.architecture },
    `the signed index ${what} (package ${quoteUntrusted(fields.package)})`,
    "the repository is malformed or hostile; remove it from the image's apt sources or use another mirror",
    "UNTRUSTED",
  );
  const entry: PackageEntry = {
    package: fields.package,
    version: fields.version,
    architecture: fields.architecture,
    filename: fields.filename,
    size,
    sha256,
    essential: (fields.essential ?? "").toLowerCase() === "yes",
    paragraph: stanza,
    repoUri,
  };
  for (const k of [
    "source",
    "depends",
    "preDepends",
    "provides",
    "conflicts",
    "breaks",
    "replaces",
    "multiArch",
  ] as const) {
    if (fields[k] !== undefined) entry[k] = fields[k];
  }
  return entry;
}

/** The full stanza of an entry as a control paragraph (for fields not lifted into the entry). */
export function entryParagraph(entry: PackageEntry): ControlParagraph {
  return parseControl(entry.paragraph)[0] ?? new Map();
}

/**
 * Where the entry's .deb is downloaded from. Throws UNTRUSTED for a Filename that is absolute or
 * climbs with `..`, which no archive produces.
 */
export function debUrl(entry: PackageEntry): string {
  const f = entry.filename;
  if (
    f.startsWith("/") ||
    f.includes("\\") ||
    f.split("/").some((s) => s === ".." || s === "") ||
    /^[a-z]+:/i.test(f)
  ) {
    throw new SutureError(
      "UNTRUSTED",
      `package ${entry.package} ${entry.version} has an unsafe Filename ${quoteUntrusted(f)} in its index: the repository is malformed`,
    );
  }
  return `${entry.repoUri}/${f.split("/").map(encodeURIComponent).join("/")}`;
}

/** Source package name and version of an entry (`Source: name (version)` or the binary's own). */
export function sourceOf(entry: PackageEntry): { name: string; version: string } {
  const m = /^(\S+)(?:\s+\(([^)]+)\))?/.exec(entry.source ?? "");
  return { name: m?.[1] ?? entry.package, version: m?.[2]?.trim() ?? entry.version };
}

/**
 * An index over entries already in memory (tests, and lists built from parsePackagesIndex). A
 * repository's indexes are cached on disk instead (packages-cache.ts).
 */
export function makePackagesIndex(
  meta: Omit<PackagesIndex, "entries" | "byName" | "byProvides">,
  entries: PackageEntry[],
): PackagesIndex {
  const byName = new Map<string, PackageEntry[]>();
  const byProvides = new Map<string, PackageEntry[]>();
  const add = (map: Map<string, PackageEntry[]>, name: string, e: PackageEntry) => {
    const list = map.get(name);
    if (list) list.push(e);
    else map.set(name, [e]);
  };
  for (const e of entries) {
    add(byName, e.package, e);
    for (const name of new Set(parseRelations(e.provides).flatMap((g) => g.map((r) => r.name))))
      add(byProvides, name, e);
  }
  return { ...meta, entries, byName, byProvides };
}

/**
 * The highest version of `name` installable on `arch` across all `indexes` (every source and
 * suite): entries of architecture `arch` or `all`. `name` may carry an architecture qualifier
 * (`libssl3:arm64`), which then replaces `arch`. Among equal versions the first index wins, as
 * apt prefers the first source listed. `compare` defaults to dpkg's version order; entries with a
 * version dpkg would reject are ignored.
 */
export function newestCandidate(
  indexes: Iterable<PackagesIndex | { indexes: readonly PackagesIndex[] }>,
  name: string,
  arch: string,
  compare: (a: string, b: string) => number = compareDebVersions,
): PackageEntry | undefined {
  const colon = name.indexOf(":");
  const pkg = colon >= 0 ? name.slice(0, colon) : name;
  const wantArch = colon >= 0 ? name.slice(colon + 1) : arch;
  let best: PackageEntry | undefined;
  for (const item of indexes) {
    for (const index of "byName" in item ? [item] : item.indexes) {
      for (const e of index.byName.get(pkg) ?? []) {
        if (e.architecture !== wantArch && e.architecture !== "all") continue;
        try {
          if (!best || compare(e.version, best.version) > 0) best = e;
        } catch {
          // An unparsable version cannot be ordered; apt would not pick it either.
        }
      }
    }
  }
  return best;
}

/** One alternative of a dependency: `name[:arch] [(op version)]`. */
export interface Relation {
  name: string;
  arch?: string;
  op?: "<<" | "<=" | "=" | ">=" | ">>";
  version?: string;
}

/**
 * Parse a relationship field (Depends, Pre-Depends, Conflicts, Breaks, Replaces, Provides) into
 * an AND-list of OR-lists. Architecture restrictions (`[amd64]`) and build profiles (`<!nocheck>`)
 * only appear in source packages' build relations and are dropped. The obsolete `<` and `>`
 * operators mean `<=` and `>=`, as dpkg reads them.
 */
export function parseRelations(text: string | undefined): Relation[][] {
  if (!text?.trim()) return [];
  return text.split(",").map((group) =>
    group
      .split("|")
      .map((alt) => alt.replace(/\[[^\]]*\]|<[^<>()]*>/g, "").trim())
      .filter(Boolean)
      .map((alt) => {
        const m = /^([^\s(:]+)(?::(\S+))?\s*(?:\(\s*(<<|<=|>=|>>|=|<|>)\s*([^)\s]+)\s*\))?$/.exec(alt);
        if (!m)
          throw new SutureError("INVALID_MANIFEST", `malformed package relation ${quoteUntrusted(alt)}`);
        const r: Relation = { name: m[1]! };
        if (m[2]) r.arch = m[2];
        if (m[3]) {
          r.op = m[3] === "<" ? "<=" : m[3] === ">" ? ">=" : (m[3] as Relation["op"]);
          r.version = m[4]!;
        }
        return r;
      }),
  );
}
