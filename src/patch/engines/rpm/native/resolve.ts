import { RpmSense, RpmTag } from "../../../../distro/rpm/header.ts";
import {
  type RpmDependency,
  rpmHeaderDependencies,
  rpmHeaderFiles,
} from "../../../../distro/rpm/header-contents.ts";
import { type InstalledRpm, isRpmPublicKey } from "../../../../distro/rpm/installed.ts";
import type { RepoDependency, RepoPackage } from "../../../../distro/rpm/primary.ts";
import type { RpmRepo } from "../../../../distro/rpm/repo-config.ts";
import { compareRpmVersions, parseRpmEvr, type RpmEvr, rpmvercmp } from "../../../../distro/rpm/version.ts";
import { isSutureError, quoteUntrusted, SutureError } from "../../../../errors/errors.ts";
import type { PackageFailure, Targets } from "../../engine.ts";
import { dependencyOrder } from "../../shared/install-order.ts";
import { resolveKeepingBack } from "../../shared/keep-back.ts";

/**
 * What the native rpm engine installs, decided as `dnf upgrade NAME…` (report) and `dnf upgrade`
 * (update-all) decide with `install_weak_deps=False`, without a SAT solver: the closure of what
 * the chosen packages need, grown until nothing changes. Pure: no I/O.
 *
 * dnf's and rpm's rules followed here:
 * - a package is raised to the newest version (rpm's order: epoch, version, release) any enabled
 *   repository offers for its name and architecture; a noarch package may become an arch one of
 *   the image's architecture and the other way round, as dnf allows; the first repository wins
 *   between equal versions;
 * - Requires are met by a package's own name, its Provides (versioned ones compared as rpm's
 *   rpmdsCompare does: a release left out matches any release, an epoch left out is 0) or, for a
 *   path, its files (an installed package's header lists all of them; primary.xml only those
 *   under /etc and the bin directories; for other paths the filelists, see `unknownFiles`);
 *   `rpmlib(…)` Requires are met by rpm's own features (RPMLIB_FEATURES), never by a package;
 *   `config(…)` ones by the package's own provide, as rpm generates both;
 * - a Requires the post-change set does not meet pulls the newest provider, an installed
 *   package's own name raised first; an installed package whose Requires the change breaks
 *   (`openssl-libs = 1:3.0.7-27` of openssl) is raised too, or the change is refused;
 * - Obsoletes of a new package erase the installed packages of that name and version range
 *   (rpm matches Obsoletes by name only), which the installer is told (`obsoleted`);
 * - Conflicts, either way, are refused unless raising the other, installed side ends them;
 * - rich dependencies `(a and b)`, `(a or b)`, `(a if b [else c])`, `(a unless b [else c])` are
 *   evaluated against the post-change set and, when they fail, met by pulling what makes them
 *   hold; `with`/`without` (build-time only) are refused cleanly.
 *
 * suture's own rules: only installed packages are targets (as copa, which only upgrades what the
 * image has), nothing is downgraded; gpg-pubkey pseudo-packages and install-only packages (the
 * kernel, what provides `installonlypkg(…)`/`multiversion(kernel)`: dnf installs a new one
 * beside the old, which a container image has no use for) are never upgraded in place; a
 * Requires the installed version had too and the image went without (a distroless image without
 * /bin/sh) is not added, with a warning; a target that cannot be made is left out whole, with its
 * reason (`--ignore-errors` patches the rest); update-all keeps such a package at its installed
 * version with a warning, as dnf's `--skip-broken` would. Repository `priority=`, `exclude=` and
 * modularity filters are not applied.
 */

/** rpm's comparison of a dependency: EQ, LT, LE, GT, GE. */
export type RpmDepOp = "EQ" | "LT" | "LE" | "GT" | "GE";

/** A Requires/Provides/Obsoletes/Conflicts entry, from a header or from primary.xml. */
export interface RpmCapability {
  /** A name, a path (`/bin/sh`) or a rich dependency `(a or b)`. */
  name: string;
  op?: RpmDepOp;
  evr?: RpmEvr;
  /** The header's RPMSENSE_RPMLIB bit, or a name starting `rpmlib(`. */
  rpmlib?: boolean;
}

/** A package as the resolver sees it: installed (from its header) or offered (from primary.xml). */
export interface RpmResolvePackage {
  name: string;
  arch: string;
  /** `[epoch:]version-release`, epoch left out when 0 (what compareRpmVersions orders). */
  evr: string;
  provides: readonly RpmCapability[];
  requires: readonly RpmCapability[];
  obsoletes: readonly RpmCapability[];
  conflicts: readonly RpmCapability[];
  files: ReadonlySet<string>;
}

/** One repository's verified primary.xml, in the image's repository order. */
export interface RpmResolveRepository {
  repo: RpmRepo;
  packages: readonly RepoPackage[];
}

export type RpmInstallReason = "target" | "dependency" | "new-dependency" | "reverse-dependency";

/** A package to install or upgrade. */
export interface RpmInstallChoice {
  pkg: RepoPackage;
  repo: RpmRepo;
  /** The installed package (same name; same arch, or noarch either side) it upgrades. */
  replaces?: InstalledRpm;
  /** Installed version it replaces (`replaces`' EVR). */
  from?: string;
  reason: RpmInstallReason;
  /** Why, in words: "needed by openssl 1:3.0.7-28 (openssl-libs = 1:3.0.7-28)". "target" for targets. */
  why: string;
}

export interface RpmResolution {
  /** Dependencies before what needs them. */
  install: RpmInstallChoice[];
  /** Installed packages a new one obsoletes: erased by the change. */
  obsoleted: { installed: InstalledRpm; by: string; why: string }[];
  failed: PackageFailure[];
  warnings: string[];
  /**
   * Paths a Requires names that no package is known to have, and that primary.xml does not list
   * files like (it carries /etc and the bin directories only): the repositories' filelists may
   * name their providers (native.ts loads them and resolves again).
   */
  unknownFiles: string[];
}

export interface RpmResolveInput {
  /** The image's database as read (readInstalledRpmsInRoot); gpg-pubkey entries are ignored. */
  installed: readonly InstalledRpm[];
  repositories: readonly RpmResolveRepository[];
  targets: Targets;
  /** The image's rpm architecture (`x86_64`, `aarch64`): what new packages may be besides noarch. */
  arch: string;
  /** The repositories' filelists were read for `unknownFiles` of an earlier resolution: offered packages list those paths too. */
  filelistsRead?: boolean;
}

/**
 * The `rpmlib(…)` features rpm 4.14–4.20 provides (`rpm --showrc`'s "Features supported by
 * rpmlib"), the ones suture's installer honours. A package needing another is refused: it was
 * built for a newer rpm than the images suture patches.
 */
export const RPMLIB_FEATURES: ReadonlySet<string> = new Set([
  "BuiltinLuaScripts",
  "CaretInVersions",
  "CompressedFileNames",
  "ConcurrentAccess",
  "DynamicBuildRequires",
  "ExplicitPackageProvide",
  "FileCaps",
  "FileDigests",
  "HeaderLoadSortsTags",
  "LargeFiles",
  "PartialHardlinkSets",
  "PayloadFilesHavePrefix",
  "PayloadIsBzip2",
  "PayloadIsLzma",
  "PayloadIsXz",
  "PayloadIsZstd",
  "RichDependencies",
  "ScriptletExpandArgs",
  "ScriptletInterpreterArgs",
  "TildeInVersions",
  "VersionedDependencies",
]);

/** dnf's default `installonlypkgs` and zypp's `multiversion`: what is installed beside, never upgraded. */
const INSTALLONLY_NAMES = new Set([
  "kernel",
  "kernel-PAE",
  "kernel-core",
  "kernel-modules",
  "kernel-default",
]);
const INSTALLONLY_PROVIDES = [
  "installonlypkg(kernel)",
  "installonlypkg(kernel-module)",
  "installonlypkg(vm)",
  "multiversion(kernel)",
];

export function isInstallOnly(p: Pick<RpmResolvePackage, "name" | "provides">): boolean {
  return INSTALLONLY_NAMES.has(p.name) || p.provides.some((c) => INSTALLONLY_PROVIDES.includes(c.name));
}

/** primary.xml lists a package's files only where dnf's file requires usually point (createrepo_c's rule). */
export function primaryListsFile(path: string): boolean {
  return /^\/etc\//.test(path) || /^(\/usr)?\/s?bin\//.test(path) || path === "/usr/lib/sendmail";
}

const OPS: Record<number, RpmDepOp | undefined> = {
  [RpmSense.EQUAL]: "EQ",
  [RpmSense.LESS]: "LT",
  [RpmSense.LESS | RpmSense.EQUAL]: "LE",
  [RpmSense.GREATER]: "GT",
  [RpmSense.GREATER | RpmSense.EQUAL]: "GE",
};

/** A header's dependency entry as a capability. */
export function headerCapability(d: RpmDependency): RpmCapability {
  const op = OPS[d.flags & (RpmSense.LESS | RpmSense.GREATER | RpmSense.EQUAL)];
  const cap: RpmCapability = { name: d.name };
  if (op && d.version !== "") {
    cap.op = op;
    cap.evr = parseRpmEvr(d.version);
  }
  if (d.flags & RpmSense.RPMLIB || d.name.startsWith("rpmlib(")) cap.rpmlib = true;
  return cap;
}

/** A primary.xml dependency entry as a capability. */
export function repoCapability(d: RepoDependency): RpmCapability {
  const cap: RpmCapability = { name: d.name };
  if (d.flags && d.version !== undefined) {
    cap.op = d.flags;
    cap.evr = {
      ...(d.epoch === undefined ? {} : { epoch: d.epoch }),
      version: d.version,
      ...(d.release === undefined ? {} : { release: d.release }),
    };
  }
  if (d.name.startsWith("rpmlib(")) cap.rpmlib = true;
  return cap;
}

const evrString = (p: { epoch?: number; version: string; release: string }) =>
  `${p.epoch ? `${p.epoch}:` : ""}${p.version}-${p.release}`;

/** The package's own `name = evr`, which rpm adds to every package's Provides. */
function selfProvide(name: string, evr: string): RpmCapability {
  return { name, op: "EQ", evr: parseRpmEvr(evr) };
}

/** An offered package as the resolver sees it. */
export function repoResolvePackage(p: RepoPackage): RpmResolvePackage {
  const evr = evrString(p);
  return {
    name: p.name,
    arch: p.arch,
    evr,
    provides: [selfProvide(p.name, evr), ...p.provides.map(repoCapability)],
    requires: p.requires.map(repoCapability),
    obsoletes: p.obsoletes.map(repoCapability),
    conflicts: p.conflicts.map(repoCapability),
    files: new Set(p.files.map((f) => f.path)),
  };
}

/**
 * An installed package as the resolver sees it: from its header (every file, every dependency),
 * or, for a manifest entry (no header), from the repository's entry of the same build when one is
 * offered, else its name alone.
 */
export function installedResolvePackage(p: InstalledRpm, sameBuild?: RepoPackage): RpmResolvePackage {
  const evr = evrString(p.nevra);
  const arch = p.nevra.arch ?? "noarch";
  if (!p.header) {
    if (sameBuild) return { ...repoResolvePackage(sameBuild), arch };
    return {
      name: p.nevra.name,
      arch,
      evr,
      provides: [selfProvide(p.nevra.name, evr)],
      requires: [],
      obsoletes: [],
      conflicts: [],
      files: new Set(),
    };
  }
  const what = `${p.nevra.name}-${evr}.${arch} (installed)`;
  const deps = (kind: "provide" | "require" | "obsolete" | "conflict") =>
    rpmHeaderDependencies(p.header!, kind, what).map(headerCapability);
  const files =
    p.header.has(RpmTag.BASENAMES) || p.header.has(RpmTag.OLDFILENAMES)
      ? rpmHeaderFiles(p.header, what).map((f) => f.path)
      : [];
  return {
    name: p.nevra.name,
    arch,
    evr,
    provides: [selfProvide(p.nevra.name, evr), ...deps("provide")],
    requires: deps("require"),
    obsoletes: deps("obsolete"),
    conflicts: deps("conflict"),
    files: new Set(files),
  };
}

/** rpm's rpmverCmp for ranges: epochs default to 0, releases compared only when both sides have one. */
function compareRangeEvr(a: RpmEvr, b: RpmEvr): number {
  const byEpoch = rpmvercmp(a.epoch || "0", b.epoch || "0");
  if (byEpoch) return byEpoch;
  const byVersion = rpmvercmp(a.version, b.version);
  if (byVersion) return byVersion;
  if (a.release && b.release) return rpmvercmp(a.release, b.release);
  return 0;
}

const hasLess = (op: RpmDepOp) => op === "LT" || op === "LE";
const hasGreater = (op: RpmDepOp) => op === "GT" || op === "GE";
const hasEqual = (op: RpmDepOp) => op === "EQ" || op === "LE" || op === "GE";

/** Whether two ranges of the same name overlap (rpm's rpmdsCompare/rpmverOverlap); unversioned overlaps all. */
export function rangesOverlap(a: RpmCapability, b: RpmCapability): boolean {
  if (!a.op || !b.op || !a.evr || !b.evr) return true;
  const sense = compareRangeEvr(a.evr, b.evr);
  if (sense < 0) return hasGreater(a.op) || hasLess(b.op);
  if (sense > 0) return hasLess(a.op) || hasGreater(b.op);
  return (
    (hasEqual(a.op) && hasEqual(b.op)) ||
    (hasLess(a.op) && hasLess(b.op)) ||
    (hasGreater(a.op) && hasGreater(b.op))
  );
}

/** Whether package `p` meets the simple (not rich) capability `need`, by a provide or, for a path, a file. */
export function rpmProvides(p: RpmResolvePackage, need: RpmCapability): boolean {
  if (need.name.startsWith("/") && p.files.has(need.name)) return true;
  return p.provides.some((c) => c.name === need.name && rangesOverlap(c, need));
}

/** Whether `p`'s own name and version fall in `range` (how rpm matches Obsoletes). */
function nameInRange(p: RpmResolvePackage, range: RpmCapability): boolean {
  return p.name === range.name && rangesOverlap(selfProvide(p.name, p.evr), range);
}

export function formatCapability(c: RpmCapability): string {
  if (!c.op || !c.evr) return c.name;
  const sign = { EQ: "=", LT: "<", LE: "<=", GT: ">", GE: ">=" }[c.op];
  const e = c.evr;
  return `${c.name} ${sign} ${e.epoch && e.epoch !== "0" ? `${e.epoch}:` : ""}${e.version}${e.release ? `-${e.release}` : ""}`;
}

// ---------------------------------------------------------------------------------------------
// Rich (boolean) dependencies.

export type RichDep =
  | { kind: "cap"; cap: RpmCapability }
  | { kind: "and" | "or" | "with" | "without"; items: RichDep[] }
  | { kind: "if" | "unless"; body: RichDep; cond: RichDep; else?: RichDep };

const RICH_OPS = new Set(["and", "or", "if", "unless", "else", "with", "without"]);
const COMPARISONS: Record<string, RpmDepOp> = {
  "=": "EQ",
  "==": "EQ",
  "<": "LT",
  "<=": "LE",
  ">": "GT",
  ">=": "GE",
};

/**
 * Parse a rich dependency `(…)` as rpm's rpmrichParse does. Malformed text is PATCH_FAILED naming
 * `where`: a package whose dependencies suture cannot read is refused, never guessed at.
 */
export function parseRichDep(text: string, where: string): RichDep {
  const bad = (why: string) =>
    new SutureError("PATCH_FAILED", `${where} has dependency ${quoteUntrusted(text)} that ${why}`);
  const tokens = text.match(/\(|\)|[^\s()]+/g) ?? [];
  let i = 0;
  const group = (): RichDep => {
    if (tokens[i] !== "(") throw bad("is not a rich dependency");
    i++;
    const terms: RichDep[] = [term()];
    const ops: string[] = [];
    while (tokens[i] !== ")") {
      const op = tokens[i];
      if (op === undefined) throw bad("is not closed");
      if (!RICH_OPS.has(op))
        throw bad(`has ${quoteUntrusted(op)} where and/or/if/unless/else/with/without belongs`);
      i++;
      ops.push(op);
      terms.push(term());
    }
    i++;
    if (ops.length === 0) return terms[0]!;
    const first = ops[0]!;
    if (first === "if" || first === "unless") {
      if (ops.length === 1) return { kind: first, body: terms[0]!, cond: terms[1]! };
      if (ops.length === 2 && ops[1] === "else")
        return { kind: first, body: terms[0]!, cond: terms[1]!, else: terms[2]! };
      throw bad(`chains ${first} with other operators without parentheses`);
    }
    if (first === "else" || ops.some((o) => o !== first)) throw bad("mixes operators without parentheses");
    return { kind: first as "and" | "or" | "with" | "without", items: terms };
  };
  const term = (): RichDep => {
    if (tokens[i] === "(") return group();
    const name = tokens[i++];
    if (name === undefined || name === ")" || RICH_OPS.has(name)) throw bad("lacks a name where one belongs");
    const cap: RpmCapability = { name };
    const op = tokens[i] === undefined ? undefined : COMPARISONS[tokens[i]!];
    if (op) {
      const version = tokens[i + 1];
      if (version === undefined || version === "(" || version === ")")
        throw bad("lacks a version after a comparison");
      cap.op = op;
      cap.evr = parseRpmEvr(version);
      i += 2;
    }
    if (name.startsWith("rpmlib(")) cap.rpmlib = true;
    return { kind: "cap", cap };
  };
  const out = group();
  if (i !== tokens.length) throw bad("goes on after its closing parenthesis");
  return out;
}

/** Whether a rich dependency holds, given whether each simple capability does. */
export function richHolds(dep: RichDep, holds: (cap: RpmCapability) => boolean): boolean {
  switch (dep.kind) {
    case "cap":
      return holds(dep.cap);
    case "and":
      return dep.items.every((d) => richHolds(d, holds));
    case "or":
      return dep.items.some((d) => richHolds(d, holds));
    case "if":
      return richHolds(dep.cond, holds)
        ? richHolds(dep.body, holds)
        : dep.else
          ? richHolds(dep.else, holds)
          : true;
    case "unless":
      return !richHolds(dep.cond, holds)
        ? richHolds(dep.body, holds)
        : dep.else
          ? richHolds(dep.else, holds)
          : true;
    case "with":
    case "without":
      throw new SutureError(
        "PATCH_FAILED",
        `a rich dependency with ${dep.kind} (a build-time constraint on one package) cannot be evaluated by suture's rpm engine: use --engine sandbox`,
      );
  }
}

// ---------------------------------------------------------------------------------------------
// The resolver.

interface Candidate {
  pkg: RepoPackage;
  view: RpmResolvePackage;
  repo: RpmRepo;
  /** Position of its repository (lower wins between equal versions). */
  order: number;
}

/** What the system has in one slot (an installed package, or a new one) after the change so far. */
interface Present {
  view: RpmResolvePackage;
  installed?: InstalledRpm;
  choice?: RpmInstallChoice;
}

class CandidateIndex {
  readonly byName = new Map<string, Candidate[]>();
  readonly byProvide = new Map<string, Candidate[]>();
  readonly byFile = new Map<string, Candidate[]>();
  /** `name-epoch:version-release.arch` → the offered package of exactly that build. */
  readonly byBuild = new Map<string, RepoPackage>();

  constructor(repositories: readonly RpmResolveRepository[], archOk: (arch: string) => boolean) {
    repositories.forEach(({ repo, packages }, order) => {
      for (const pkg of packages) {
        this.byBuild.set(`${pkg.name}-${pkg.epoch}:${pkg.version}-${pkg.release}.${pkg.arch}`, pkg);
        if (!archOk(pkg.arch)) continue;
        const c: Candidate = { pkg, view: repoResolvePackage(pkg), repo, order };
        push(this.byName, pkg.name, c);
        for (const p of c.view.provides) push(this.byProvide, p.name, c);
        for (const f of c.view.files) push(this.byFile, f, c);
      }
    });
  }

  /** The newest candidate among `list` accepted by `accept` (the first repository between equal versions). */
  static newest(
    list: readonly Candidate[],
    accept: (c: Candidate) => boolean = () => true,
  ): Candidate | undefined {
    let best: Candidate | undefined;
    for (const c of list) {
      if (!accept(c)) continue;
      if (!best || compareRpmVersions(c.view.evr, best.view.evr) > 0) best = c;
    }
    return best;
  }

  /** Candidates meeting the simple capability `need`. */
  providers(need: RpmCapability): Candidate[] {
    const out = new Set<Candidate>();
    if (need.name.startsWith("/")) for (const c of this.byFile.get(need.name) ?? []) out.add(c);
    for (const c of this.byProvide.get(need.name) ?? []) if (rpmProvides(c.view, need)) out.add(c);
    return [...out];
  }
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

const describe = (p: RpmResolvePackage) => `${p.name} ${p.evr}`;

/** Whether an upgrade from `installedArch` to `arch` is one dnf makes: same arch, or noarch either side. */
const archUpgrades = (installedArch: string, arch: string) =>
  installedArch === arch || installedArch === "noarch" || arch === "noarch";

export function resolveRpmUpgrade(input: RpmResolveInput): RpmResolution {
  const installedNames = new Set(input.installed.map((p) => p.nevra.name));
  const unknownFiles = new Set<string>();
  const arches = new Set([
    input.arch,
    "noarch",
    ...input.installed.flatMap((p) => (p.nevra.arch ? [p.nevra.arch] : [])),
  ]);
  const candidates = new CandidateIndex(input.repositories, (a) => arches.has(a));
  // dnf upgrade --skip-broken: what cannot be upgraded is kept at its installed version.
  const { attempt, failed, keptBack } = resolveKeepingBack(input.targets, installedNames, (targets, kept) => {
    const attempt = resolveOnce(input, targets, candidates, kept);
    for (const path of attempt.unknownFiles) unknownFiles.add(path);
    return attempt;
  });
  const warnings = [
    ...attempt.warnings,
    ...[...keptBack].map(
      ([name, why]) =>
        `${name} is kept at its installed version, as dnf upgrade --skip-broken would keep it: ${why}`,
    ),
  ];
  return {
    install: installOrder(attempt.install),
    obsoleted: attempt.obsoleted,
    failed,
    warnings,
    unknownFiles: [...unknownFiles].sort(),
  };
}

interface Attempt {
  install: RpmInstallChoice[];
  obsoleted: RpmResolution["obsoleted"];
  failed: PackageFailure[];
  warnings: string[];
  /** Failure → the target it is blamed on (the one that pulled what failed). */
  blame: Map<PackageFailure, string>;
  failedTargets: Set<string>;
  unknownFiles: Set<string>;
}

function resolveOnce(
  input: RpmResolveInput,
  targets: Targets,
  candidates: CandidateIndex,
  keptBack: ReadonlyMap<string, string>,
): Attempt {
  const present = new Map<string, Present>();
  /** Capability name or path → slots whose package has it (what providersOf scans). */
  const answering = new Map<string, Set<string>>();
  const keysOf = (v: RpmResolvePackage) => [...v.provides.map((p) => p.name), ...v.files];
  const setPresent = (slot: string, value: Present | undefined) => {
    const old = present.get(slot);
    if (old) for (const key of keysOf(old.view)) answering.get(key)?.delete(slot);
    if (!value) {
      present.delete(slot);
      return;
    }
    present.set(slot, value);
    for (const key of keysOf(value.view)) {
      const set = answering.get(key);
      if (set) set.add(slot);
      else answering.set(key, new Set([slot]));
    }
  };

  // The installed packages, each in its slot (`name.arch`; a name.arch installed more than once,
  // as install-only packages are, gets one slot per copy and is never upgraded).
  const installedSlots: { slot: string; installed: InstalledRpm; view: RpmResolvePackage }[] = [];
  const copies = new Map<string, number>();
  const warnings: string[] = [];
  for (const installed of input.installed) {
    if (isRpmPublicKey(installed)) continue;
    const n = installed.nevra;
    const sameBuild = installed.header
      ? undefined
      : candidates.byBuild.get(`${n.name}-${n.epoch ?? 0}:${n.version}-${n.release}.${n.arch ?? "noarch"}`);
    const view = installedResolvePackage(installed, sameBuild);
    const base = `${view.name}.${view.arch}`;
    const count = copies.get(base) ?? 0;
    copies.set(base, count + 1);
    const slot = count === 0 ? base : `${base}#${count}`;
    installedSlots.push({ slot, installed, view });
    setPresent(slot, { view, installed });
  }
  const headerless = installedSlots.some((s) => !s.installed.header);
  const beforeView = new Map(installedSlots.map((s) => [s.slot, s.view]));

  /** Slot → the package chosen for it. */
  const picked = new Map<string, RpmInstallChoice>();
  /** Slots whose new package's dependencies are still to be looked at. */
  const queue: string[] = [];
  const failed: PackageFailure[] = [];
  const obsoleted: RpmResolution["obsoleted"] = [];
  const origin = new Map<string, string>();
  const blame = new Map<PackageFailure, string>();
  const failedTargets = new Set<string>();
  const unknownFiles = new Set<string>();
  let pulledFor: string | undefined;

  const fail = (name: string, reason: string) => {
    if (failed.some((f) => f.name === name && f.reason === reason)) return;
    const failure = { name, reason };
    failed.push(failure);
    const root = origin.get(name) ?? pulledFor ?? name;
    blame.set(failure, root);
    failedTargets.add(root);
  };

  /** The slot a candidate goes into: the installed one it upgrades, or its own. */
  const slotFor = (
    c: Candidate,
  ): { slot: string; replaces?: { slot: string; installed: InstalledRpm; view: RpmResolvePackage } } => {
    for (const s of installedSlots) {
      if (s.view.name === c.pkg.name && archUpgrades(s.view.arch, c.pkg.arch) && present.has(s.slot)) {
        return { slot: s.slot, replaces: s };
      }
    }
    return { slot: `${c.pkg.name}.${c.pkg.arch}` };
  };

  const pick = (c: Candidate, reason: RpmInstallReason, why: string): boolean => {
    const { slot, replaces } = slotFor(c);
    const have = present.get(slot);
    if (have?.choice === undefined && have && compareRpmVersions(c.view.evr, have.view.evr) <= 0)
      return false;
    if (have?.choice && compareRpmVersions(c.view.evr, have.view.evr) <= 0) return true;
    const name = c.pkg.name;
    if (!origin.has(name)) origin.set(name, pulledFor ?? name);
    const earlier = have?.choice;
    const choice: RpmInstallChoice = {
      pkg: c.pkg,
      repo: c.repo,
      ...(replaces ? { replaces: replaces.installed, from: replaces.view.evr } : {}),
      reason: earlier?.reason ?? reason,
      why: earlier?.why ?? why,
    };
    picked.set(slot, choice);
    setPresent(slot, { view: c.view, ...(replaces ? { installed: replaces.installed } : {}), choice });
    queue.push(slot);
    return true;
  };

  /** Present slots meeting the simple capability `need`. */
  const presentProviders = (need: RpmCapability): string[] => {
    const out: string[] = [];
    for (const slot of answering.get(need.name) ?? []) {
      if (rpmProvides(present.get(slot)!.view, need)) out.push(slot);
    }
    return out;
  };
  const holdsNow = (need: RpmCapability): boolean =>
    need.rpmlib ? rpmlibHolds(need) : presentProviders(need).length > 0;

  /** Whether the image met `need` before the change (installed packages only). */
  const heldBefore = (need: RpmCapability): boolean => {
    if (need.rpmlib) return rpmlibHolds(need);
    return installedSlots.some((s) => rpmProvides(s.view, need));
  };
  const richHeldBefore = (dep: RichDep) => richHolds(dep, heldBefore);

  const parseRich = (need: RpmCapability, owner: RpmResolvePackage): RichDep | undefined => {
    try {
      return parseRichDep(need.name, describe(owner));
    } catch (e) {
      if (!isSutureError(e)) throw e;
      fail(owner.name, e.message);
      return undefined;
    }
  };
  const evalRich = (dep: RichDep, owner: RpmResolvePackage, holds: (c: RpmCapability) => boolean) => {
    try {
      return richHolds(dep, holds);
    } catch (e) {
      if (!isSutureError(e)) throw e;
      fail(owner.name, `${describe(owner)}: ${e.message}`);
      return true;
    }
  };

  // 1. The targets.
  const upgradable = (s: { installed: InstalledRpm; view: RpmResolvePackage; slot: string }) =>
    !isInstallOnly(s.view) && (copies.get(`${s.view.name}.${s.view.arch}`) ?? 0) === 1;
  const newestFor = (s: { view: RpmResolvePackage }) =>
    CandidateIndex.newest(candidates.byName.get(s.view.name) ?? [], (c) =>
      archUpgrades(s.view.arch, c.pkg.arch),
    );
  if (targets === "all") {
    for (const s of installedSlots) {
      if (keptBack.has(s.view.name) || !upgradable(s)) continue;
      const best = newestFor(s);
      if (best && compareRpmVersions(best.view.evr, s.view.evr) > 0) {
        pulledFor = s.view.name;
        pick(best, "target", "target");
      }
    }
    // dnf upgrade (obsoletes=True) also replaces an installed package by the newest build of a
    // package not installed that obsoletes it (a renamed package).
    const installedNames = new Set(installedSlots.map((s) => s.view.name));
    for (const [name, list] of candidates.byName) {
      if (installedNames.has(name) || keptBack.has(name)) continue;
      const best = CandidateIndex.newest(list, (c) => c.pkg.arch === input.arch || c.pkg.arch === "noarch");
      if (!best) continue;
      const replaced = installedSlots.find(
        (s) =>
          upgradable(s) &&
          !keptBack.has(s.view.name) &&
          !present.get(s.slot)?.choice &&
          best.view.obsoletes.some((range) => !range.name.startsWith("(") && nameInRange(s.view, range)),
      );
      if (!replaced) continue;
      pulledFor = replaced.view.name;
      pick(best, "target", `obsoletes installed ${describe(replaced.view)}`);
    }
  } else {
    for (const t of targets) {
      pulledFor = t.name;
      const slots = installedSlots.filter((s) => s.view.name === t.name);
      if (!slots.length) {
        fail(t.name, "not installed in the image (suture upgrades installed packages only, as copa does)");
        continue;
      }
      if (slots.some((s) => isInstallOnly(s.view))) {
        fail(
          t.name,
          "is an install-only package (dnf installs a new one beside the old rather than upgrading it); suture does not upgrade it in place: rebuild the image",
        );
        continue;
      }
      if (slots.some((s) => !upgradable(s))) {
        fail(
          t.name,
          `is installed more than once (${slots.map((s) => s.view.evr).join(", ")}); suture upgrades only a package installed once`,
        );
        continue;
      }
      for (const s of slots) {
        const best = newestFor(s);
        if (!best) {
          fail(
            t.name,
            `no enabled repository of the image offers it for ${s.view.arch} (check the repository files and --mirror)`,
          );
          break;
        }
        if (compareRpmVersions(best.view.evr, t.fixedVersion) < 0) {
          fail(
            t.name,
            `the image's repositories offer it up to ${best.view.evr}, lower than the fixed ${t.fixedVersion}`,
          );
          break;
        }
        if (compareRpmVersions(best.view.evr, s.view.evr) <= 0) continue; // already the newest
        pick(best, "target", "target");
      }
    }
  }
  pulledFor = undefined;

  /** Make the simple capability `need` of `needer` hold, picking a provider when none is present. */
  const unmetBefore = new Set<string>();
  const ensureSimple = (needer: Present, need: RpmCapability): boolean => {
    if (need.rpmlib) {
      if (!rpmlibHolds(need))
        fail(
          needer.view.name,
          `${describe(needer.view)} needs ${formatCapability(need)}, a feature of a newer rpm than suture installs for`,
        );
      return true;
    }
    if (presentProviders(need).length) return true;
    // The installed version needed it too and the image went without it: what the image was
    // built to lack is not added by a patch.
    const old = needer.installed ? beforeView.get(slotOfInstalled(needer.installed)) : undefined;
    if (
      old?.requires.some((r) => r.name === need.name) &&
      !old.requires.some((r) => r.name === need.name && heldBefore(r))
    ) {
      const key = `${needer.view.name}\0${need.name}`;
      if (!unmetBefore.has(key)) {
        unmetBefore.add(key);
        warnings.push(
          `${describe(needer.view)} needs ${formatCapability(need)}, which the image lacks already (its installed ${old.evr} needed it too): not added, as the image was built without it`,
        );
      }
      return true;
    }
    const options = candidates.providers(need).filter((c) => {
      const { slot } = slotFor(c);
      const have = present.get(slot);
      // Never a downgrade, and never the installed build again (only a newer one can change what it provides).
      if (!have) return true;
      const order = compareRpmVersions(c.view.evr, have.view.evr);
      return have.choice ? order >= 0 : order > 0;
    });
    if (!options.length) {
      if (need.name.startsWith("/") && !primaryListsFile(need.name) && !input.filelistsRead) {
        unknownFiles.add(need.name);
        fail(
          needer.view.name,
          `${describe(needer.view)} needs file ${quoteUntrusted(need.name)}, which only the repositories' filelists could name`,
        );
      } else
        fail(
          needer.view.name,
          `${describe(needer.view)} needs ${formatCapability(need)}, which no enabled repository of the image provides`,
        );
      return false;
    }
    // An installed name raised first, then a provider whose name is the capability, then the
    // image's own arch over another, then the shorter name, then the newest, then repository order.
    const installedName = (c: Candidate) => installedSlots.some((s) => s.view.name === c.pkg.name);
    options.sort(
      (a, b) =>
        Number(installedName(b)) - Number(installedName(a)) ||
        Number(b.pkg.name === need.name) - Number(a.pkg.name === need.name) ||
        Number(b.pkg.arch === input.arch || b.pkg.arch === "noarch") -
          Number(a.pkg.arch === input.arch || a.pkg.arch === "noarch") ||
        a.pkg.name.length - b.pkg.name.length ||
        (a.pkg.name < b.pkg.name ? -1 : a.pkg.name > b.pkg.name ? 1 : 0) ||
        compareRpmVersions(b.view.evr, a.view.evr) ||
        a.order - b.order,
    );
    // The newest of the chosen name that still provides it.
    const name = options[0]!.pkg.name;
    const best = CandidateIndex.newest(
      options,
      (c) => c.pkg.name === name && c.pkg.arch === options[0]!.pkg.arch,
    )!;
    const raising = installedName(best);
    pick(
      best,
      raising ? "dependency" : "new-dependency",
      `${raising ? "needed by" : "new dependency of"} ${describe(needer.view)} (${formatCapability(need)})`,
    );
    return true;
  };

  /** Make a rich Requires hold: what makes it hold is pulled, the first alternative that can be first. */
  const ensureRich = (needer: Present, dep: RichDep): boolean => {
    if (evalRich(dep, needer.view, holdsNow)) return true;
    switch (dep.kind) {
      case "cap":
        return ensureSimple(needer, dep.cap);
      case "and":
        return dep.items.every((d) => ensureRich(needer, d));
      case "or": {
        for (const d of dep.items) {
          if (canProvide(d)) return ensureRich(needer, d);
        }
        return ensureRich(needer, dep.items[0]!);
      }
      case "if":
        return evalRich(dep.cond, needer.view, holdsNow)
          ? ensureRich(needer, dep.body)
          : dep.else
            ? ensureRich(needer, dep.else)
            : true;
      case "unless":
        return !evalRich(dep.cond, needer.view, holdsNow)
          ? ensureRich(needer, dep.body)
          : dep.else
            ? ensureRich(needer, dep.else)
            : true;
      default:
        return true; // with/without already failed in evalRich
    }
  };
  /** Whether some repository or present package could make `dep` hold (for choosing an `or` branch). */
  const canProvide = (dep: RichDep): boolean => {
    if (dep.kind === "cap")
      return holdsNow(dep.cap) || (!dep.cap.rpmlib && candidates.providers(dep.cap).length > 0);
    if (dep.kind === "and") return dep.items.every(canProvide);
    if (dep.kind === "or") return dep.items.some(canProvide);
    return true;
  };

  const ensure = (needer: Present, need: RpmCapability) => {
    if (need.name.startsWith("(")) {
      const rich = parseRich(need, needer.view);
      if (!rich) return;
      // A rich Requires the installed version had and the image did not meet: not ours to mend.
      const old = needer.installed ? beforeView.get(slotOfInstalled(needer.installed)) : undefined;
      if (old?.requires.some((r) => r.name === need.name)) {
        let held = true;
        try {
          held = richHeldBefore(rich);
        } catch {
          held = true;
        }
        if (!held) return;
      }
      ensureRich(needer, rich);
      return;
    }
    ensureSimple(needer, need);
  };

  const slotOfInstalled = (installed: InstalledRpm): string =>
    installedSlots.find((s) => s.installed === installed)!.slot;

  /** A new package's Obsoletes: the installed packages of that name and range are erased. */
  const applyObsoletes = (slot: string) => {
    const p = present.get(slot)!;
    for (const range of p.view.obsoletes) {
      if (range.name.startsWith("(")) continue; // rpm ignores rich Obsoletes
      for (const s of installedSlots) {
        if (s.slot === slot || !present.has(s.slot) || present.get(s.slot)!.choice) continue;
        if (s.view.name === p.view.name) continue; // its own older version is upgraded, not obsoleted
        if (!nameInRange(s.view, range)) continue;
        obsoleted.push({
          installed: s.installed,
          by: describe(p.view),
          why: `${describe(p.view)} obsoletes ${formatCapability(range)}`,
        });
        setPresent(s.slot, undefined);
      }
    }
  };

  /** Conflicts between a new package and what is present, either way round: raise the installed side, or fail. */
  const checkConflicts = (slot: string) => {
    const p = present.get(slot)!;
    const clash = (owner: Present, other: Present, range: RpmCapability) => {
      if (other === owner) return;
      const ownerRaisable = !owner.choice && owner.installed;
      const otherRaisable = !other.choice && other.installed;
      const raised = otherRaisable ? other : ownerRaisable ? owner : undefined;
      if (raised) {
        const up = CandidateIndex.newest(
          candidates.byName.get(raised.view.name) ?? [],
          (c) =>
            archUpgrades(raised.view.arch, c.pkg.arch) &&
            compareRpmVersions(c.view.evr, raised.view.evr) > 0 &&
            (raised === other
              ? !rpmProvides(c.view, range)
              : !c.view.conflicts.some((r) => rpmProvides(other.view, r))),
        );
        if (up) {
          pulledFor = origin.get(p.view.name);
          pick(
            up,
            "reverse-dependency",
            `${describe(owner.view)} conflicts with ${describe(other.view)} (${formatCapability(range)})`,
          );
          return;
        }
      }
      pulledFor = origin.get(p.view.name);
      fail(
        p.view.name,
        `${describe(owner.view)} conflicts with ${describe(other.view)} (${formatCapability(range)}), and rpm refuses to install both`,
      );
    };
    for (const range of p.view.conflicts) {
      if (range.name.startsWith("(")) {
        const rich = parseRich(range, p.view);
        if (!rich) continue;
        if (evalRich(rich, p.view, (c) => presentProviders(c).some((s) => s !== slot)))
          fail(
            p.view.name,
            `${describe(p.view)} conflicts with ${quoteUntrusted(range.name)}, which the image would meet, and rpm refuses that`,
          );
        continue;
      }
      for (const other of presentProviders(range)) clash(p, present.get(other)!, range);
    }
    for (const [otherSlot, other] of present) {
      if (otherSlot === slot) continue;
      for (const range of other.view.conflicts) {
        if (range.name.startsWith("(")) continue;
        if (rpmProvides(p.view, range)) clash(other, p, range);
      }
    }
  };

  // 2. Grow the closure until nothing changes.
  for (let round = 0; round < 10_000; round++) {
    while (queue.length) {
      const slot = queue.shift()!;
      const p = present.get(slot);
      if (!p?.choice) continue;
      pulledFor = origin.get(p.view.name);
      applyObsoletes(slot);
      checkConflicts(slot);
      for (const need of p.view.requires) ensure(p, need);
    }
    const before = picked.size + failed.length;
    // Installed packages the change broke: a Requires they met before and no longer do.
    const lost = new Set<string>();
    for (const s of installedSlots) {
      const now = present.get(s.slot);
      if (now && !now.choice) continue;
      for (const key of keysOf(s.view)) lost.add(key);
    }
    for (const s of installedSlots) {
      const now = present.get(s.slot);
      if (!now || now.choice) continue;
      for (const need of s.view.requires) {
        if (need.rpmlib || need.name.startsWith("(") || !lost.has(need.name)) continue;
        if (holdsNow(need) || !heldBefore(need)) continue;
        const broke = [...picked.values()].find(
          (c) => c.replaces && rpmProvides(installedView(c.replaces), need),
        );
        pulledFor = broke ? origin.get(broke.pkg.name) : undefined;
        const up = CandidateIndex.newest(
          candidates.byName.get(s.view.name) ?? [],
          (c) => archUpgrades(s.view.arch, c.pkg.arch) && compareRpmVersions(c.view.evr, s.view.evr) > 0,
        );
        if (up && upgradable(s)) {
          pick(
            up,
            "reverse-dependency",
            `${describe(s.view)} needs ${formatCapability(need)}, which the upgrade${broke ? ` of ${broke.pkg.name}` : ""} no longer provides`,
          );
        } else {
          fail(
            broke?.pkg.name ?? s.view.name,
            `installed ${describe(s.view)} needs ${formatCapability(need)}, which the upgrade no longer provides, and no repository offers a newer ${s.view.name}`,
          );
        }
        break;
      }
    }
    if (!queue.length && picked.size + failed.length === before) break;
  }
  function installedView(installed: InstalledRpm): RpmResolvePackage {
    return beforeView.get(slotOfInstalled(installed))!;
  }
  if (headerless && picked.size)
    warnings.push(
      "the image records its packages without their headers (an rpm manifest), so the Requires of what is installed are known only where the repositories still offer the same builds",
    );
  return { install: [...picked.values()], obsoleted, failed, warnings, blame, failedTargets, unknownFiles };
}

/** Whether rpm itself meets an `rpmlib(Feature) <= version` Requires. */
function rpmlibHolds(need: RpmCapability): boolean {
  const m = /^rpmlib\(([A-Za-z0-9_-]+)\)$/.exec(need.name);
  return m !== null && RPMLIB_FEATURES.has(m[1]!);
}

/**
 * Dependencies before what needs them (simple Requires between the chosen packages), ties by
 * name; a cycle is broken at its first package by name, as rpm's ordering breaks one.
 */
function installOrder(choices: readonly RpmInstallChoice[]): RpmInstallChoice[] {
  const keyOf = (c: RpmInstallChoice) => `${c.pkg.name}.${c.pkg.arch}`;
  const byKey = new Map(choices.map((c) => [keyOf(c), c]));
  const views = new Map(choices.map((c) => [keyOf(c), repoResolvePackage(c.pkg)]));
  const needs = (key: string) =>
    views
      .get(key)!
      .requires.filter((need) => !need.rpmlib && !need.name.startsWith("("))
      .flatMap((need) => [...views.keys()].filter((other) => rpmProvides(views.get(other)!, need)));
  return dependencyOrder(byKey.keys(), needs).map((key) => byKey.get(key)!);
}
