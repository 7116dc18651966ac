import {
  type AptPin,
  NEVER_PIN,
  PinMatcher,
  type PinnableFile,
  pinNamesPackage,
} from "../../../../distro/dpkg/apt-preferences.ts";
import { type PackageEntry, type PackagesIndex, sourceOf } from "../../../../distro/dpkg/packages-index.ts";
import type { ReleaseInfo } from "../../../../distro/dpkg/repository.ts";
import { compareDebVersions } from "../../../../distro/dpkg/version.ts";
import { SutureError } from "../../../../errors/errors.ts";

/** One package file (a `Packages` index) as the policy sees it: what pins match and its Release flags. */
export interface PolicyFile extends PinnableFile {
  /** `NotAutomatic: yes` in its Release (experimental, backports). */
  notAutomatic?: boolean;
  /** `ButAutomaticUpgrades: yes` with NotAutomatic (backports): priority 100 instead of 1. */
  butAutomaticUpgrades?: boolean;
  /** For messages: `http://deb.debian.org/debian bookworm-backports/main`. */
  name: string;
}

export interface PolicyIndex {
  index: PackagesIndex;
  file: PolicyFile;
}

/** A version of a package with the priority apt gives it. */
export interface RankedVersion {
  version: string;
  priority: number;
  /** The entries that offer it, from the highest-priority file first; empty for an installed version no index has. */
  entries: PackageEntry[];
  files: PolicyFile[];
  installed: boolean;
}

export interface PolicyInput {
  /** Indexes with their Release facts; a bare index counts as an ordinary source (priority 500). */
  indexes: readonly (PolicyIndex | PackagesIndex)[];
  /** apt_preferences records, in the order apt read them. */
  pins?: readonly AptPin[];
  /** `APT::Default-Release`. */
  defaultRelease?: string;
  /** dpkg architecture of the image. */
  arch: string;
}

const STATUS_FILE: PolicyFile = { status: true, archive: "now", name: "/var/lib/dpkg/status" };

/**
 * apt's candidate rule (apt_preferences(5), apt's pkgPolicy): every package file gets a priority
 * (500; 1 for `NotAutomatic`, 100 with `ButAutomaticUpgrades` and for the dpkg status file; then
 * the first matching `Package: *` pin, after `APT::Default-Release` at 990); a version takes the
 * first package-specific pin that matches it, else the highest priority of the files that offer
 * it. The candidate is the highest version of the highest priority, never below the installed
 * version unless a priority of 1000 or more says so; priorities ≤ 0 are never candidates.
 */
export class CandidatePolicy {
  readonly #files: { index: PackagesIndex; file: PolicyFile; priority: number }[];
  readonly #statusPriority: number;
  readonly #specific: { pin: AptPin; matcher: PinMatcher }[];
  readonly #arch: string;
  readonly #memo = new Map<string, RankedVersion[]>();

  constructor(input: PolicyInput) {
    this.#arch = input.arch;
    const pins = input.pins ?? [];
    const files = input.indexes.map((i) =>
      "index" in i ? i : { index: i, file: { name: `${i.uri} ${i.suite}/${i.component}` } },
    );
    const defaults: { matcher: PinMatcher; priority: number }[] = [];
    if (input.defaultRelease) {
      const rel = input.defaultRelease;
      const known =
        files.some(
          ({ file }) =>
            [file.archive, file.codename, file.version].some((v) => v !== undefined && globMatches(rel, v)) ||
            (rel.length > 2 && rel[1] === "="),
        ) || globMatches(rel, "now");
      if (!known) {
        throw new SutureError(
          "INVALID_MANIFEST",
          `APT::Default-Release "${rel}" names no release of the image's apt sources (apt refuses it too): fix the image's apt configuration`,
        );
      }
      defaults.push({ matcher: new PinMatcher("release", rel), priority: 990 });
    }
    for (const pin of pins) {
      if (!pin.packages)
        defaults.push({ matcher: new PinMatcher(pin.type, pin.data), priority: pin.priority });
    }
    const priorityOf = (file: PolicyFile, base: number) => {
      let priority = base;
      let fixed = false;
      for (const d of defaults) {
        if ((!fixed || d.priority === NEVER_PIN) && priority !== NEVER_PIN && d.matcher.fileMatches(file)) {
          priority = d.priority;
          fixed = true;
        }
      }
      return priority;
    };
    this.#files = files.map(({ index, file }) => ({
      index,
      file,
      priority: priorityOf(
        file,
        file.butAutomaticUpgrades && file.notAutomatic ? 100 : file.notAutomatic ? 1 : 500,
      ),
    }));
    this.#statusPriority = priorityOf(STATUS_FILE, 100);
    this.#specific = pins
      .filter((p) => p.packages)
      .map((pin) => ({ pin, matcher: new PinMatcher(pin.type, pin.data) }));
  }

  /** The priority of a package file (for `apt-cache policy`-like messages). */
  filePriority(index: PackagesIndex): number | undefined {
    return this.#files.find((f) => f.index === index)?.priority;
  }

  /**
   * Every version of `name` for the image's architecture, highest first, with its priority;
   * `installed` adds the installed version (the status file) when given.
   */
  versions(name: string, installed?: { version: string; source?: string }): RankedVersion[] {
    // The resolver asks for the same packages again and again while it walks relations.
    const key = `${name}\0${installed?.version ?? ""}\0${installed?.source ?? ""}`;
    let out = this.#memo.get(key);
    if (!out) {
      out = this.#rank(name, installed);
      this.#memo.set(key, out);
    }
    return out;
  }

  #rank(name: string, installed?: { version: string; source?: string }): RankedVersion[] {
    const byVersion = new Map<
      string,
      { entries: { entry: PackageEntry; priority: number }[]; files: PolicyFile[]; filePriorities: number[] }
    >();
    const at = (version: string) => {
      let v = byVersion.get(version);
      if (!v) {
        v = { entries: [], files: [], filePriorities: [] };
        byVersion.set(version, v);
      }
      return v;
    };
    for (const f of this.#files) {
      for (const e of f.index.byName.get(name) ?? []) {
        if (e.architecture !== this.#arch && e.architecture !== "all") continue;
        const v = at(e.version);
        v.entries.push({ entry: e, priority: f.priority });
        v.files.push(f.file);
        v.filePriorities.push(f.priority);
      }
    }
    if (installed) {
      const v = at(installed.version);
      v.files.push(STATUS_FILE);
      v.filePriorities.push(this.#statusPriority);
    }
    const source =
      installed?.source ??
      [...byVersion.values()].flatMap((v) => v.entries.map((e) => sourceOf(e.entry).name))[0] ??
      name;
    const out: RankedVersion[] = [];
    for (const [version, v] of byVersion) {
      out.push({
        version,
        priority: this.#versionPriority(
          name,
          source,
          version,
          v.entries[0]?.entry,
          v.files,
          v.filePriorities,
        ),
        entries: v.entries.sort((a, b) => b.priority - a.priority).map((e) => e.entry),
        files: v.files,
        installed: installed?.version === version,
      });
    }
    return out.sort((a, b) => compareDebVersions(b.version, a.version));
  }

  /** apt's candidate version of `name` (undefined: none, e.g. every version pinned below 1). */
  candidate(name: string, installed?: { version: string; source?: string }): RankedVersion | undefined {
    return pickCandidate(this.versions(name, installed), installed?.version);
  }

  #versionPriority(
    name: string,
    source: string,
    version: string,
    entry: PackageEntry | undefined,
    files: PolicyFile[],
    filePriorities: number[],
  ): number {
    const pkg = { name, source: entry ? sourceOf(entry).name : source, arch: this.#arch };
    for (const { pin, matcher } of this.#specific) {
      if (!pin.packages!.some((w) => pinNamesPackage(w, pkg))) continue;
      const matches =
        pin.type === "version"
          ? matcher.versionMatches(version)
          : pin.type === "source-version"
            ? matcher.versionMatches(entry ? sourceOf(entry).version : version)
            : files.some((f) => matcher.fileMatches(f));
      if (!matches) continue;
      // A pin does not lift a version that only never-pinned files offer.
      if (filePriorities.some((p) => p !== NEVER_PIN)) return pin.priority;
      break;
    }
    return filePriorities.length ? Math.max(...filePriorities) : 0;
  }
}

/** apt's GetCandidateVer over versions sorted highest first. */
export function pickCandidate(
  versions: readonly RankedVersion[],
  installed?: string,
): RankedVersion | undefined {
  let candidate: RankedVersion | undefined;
  let candidatePriority = -1;
  for (const v of versions) {
    if (v.priority === 0 || v.priority <= candidatePriority) continue;
    if (installed !== undefined && v.priority < 1000 && compareDebVersions(v.version, installed) < 0)
      continue;
    candidatePriority = v.priority;
    candidate = v;
  }
  return candidate;
}

function globMatches(pattern: string, value: string): boolean {
  return new PinMatcher("release", pattern).fileMatches({ archive: value });
}

/** A policy file from a verified suite's Release and one of its indexes. */
export function policyFile(release: ReleaseInfo | undefined, index: PackagesIndex): PolicyFile {
  const yes = (name: string) => /^yes$/i.test(release?.paragraph.get(name.toLowerCase())?.trim() ?? "");
  let site = "";
  try {
    site = new URL(index.uri).hostname;
  } catch {
    site = "";
  }
  const file: PolicyFile = {
    name: `${index.uri} ${index.suite}${index.component ? `/${index.component}` : ""}`,
    component: index.component,
    architecture: index.arch,
    site,
    notAutomatic: yes("NotAutomatic"),
    butAutomaticUpgrades: yes("ButAutomaticUpgrades"),
  };
  if (release?.suite !== undefined) file.archive = release.suite;
  if (release?.codename !== undefined) file.codename = release.codename;
  if (release?.origin !== undefined) file.origin = release.origin;
  if (release?.label !== undefined) file.label = release.label;
  if (release?.version !== undefined) file.version = release.version;
  return file;
}

/** `500 http://deb.debian.org/debian bookworm/main` lines for a version, as apt-cache policy shows them. */
export function describeVersion(v: RankedVersion): string {
  const where = v.files.map((f) => f.archive ?? f.name);
  return `${v.version} (priority ${v.priority}, from ${[...new Set(where)].join(", ")})`;
}
