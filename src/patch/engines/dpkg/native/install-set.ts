import type { InstalledPackage } from "../../../../distro/dpkg/database.ts";
import type { PackageEntry, PackagesIndex, Relation } from "../../../../distro/dpkg/packages-index.ts";
import { entryParagraph, parseRelations } from "../../../../distro/dpkg/packages-index.ts";
import { compareDebVersions } from "../../../../distro/dpkg/version.ts";
import type { PackageTarget } from "../../engine.ts";
import { chooseVersion } from "../fix-version.ts";
import { CandidatePolicy, describeVersion, pickCandidate } from "./policy.ts";

export interface InstallItem {
  entry: PackageEntry;
  /** The installed version it replaces; undefined for a new package. */
  from?: string;
  /** Why it is installed: asked for, needed by something installed with it, or needed to keep an installed package working. */
  reason: "target" | "dependency" | "reverse-dependency" | "new-dependency";
}

export interface InstallSet {
  /** In installation order: dependencies before the packages that need them. */
  install: InstallItem[];
  failed: { name: string; reason: string }[];
  warnings: string[];
}

export interface InstallSetInput {
  installed: readonly InstalledPackage[];
  indexes: readonly PackagesIndex[];
  /** dpkg architecture of the image. */
  arch: string;
  targets: readonly PackageTarget[] | "all";
  /**
   * apt's candidate rule for the image (Release flags, apt preferences, APT::Default-Release).
   * Default: every index an ordinary source of priority 500, no pins.
   */
  policy?: CandidatePolicy;
  /** apt.conf's `APT::Get::Upgrade-Allow-New`: update-all may install new packages (`upgrade --with-new-pkgs`). */
  upgradeAllowsNew?: boolean;
  /**
   * apt.conf's `APT::Install-Recommends` (default true): apt-get upgrade then keeps back an upgrade
   * whose Recommends would no longer be met (libapt-pkg6.0 recommending a newer apt that is held).
   */
  recommendsMatter?: boolean;
}

/** What the post-install system has under a name: its version and what it provides. */
interface Present {
  version: string;
  provides: Relation[];
  depends: Relation[][];
  breaks: Relation[];
  held: boolean;
  installed: boolean;
}

/**
 * Decide what to install, as `apt-get install --only-upgrade PKG=VER…` (report) or `apt-get upgrade`
 * (update-all) would, with suture's rules: never a new top-level package, never an unasked major
 * version (chooseVersion), held packages left alone, no removals, no downgrades. Versions are the
 * image's apt's candidates (policy.ts: backports and pins as its apt ranks them), for targets and
 * dependencies alike; a target may take a lower version of the candidate's priority when the
 * candidate is an unasked major version. Update-all keeps back, with a warning, an upgrade that
 * needs a package not installed yet or that cannot be made without breaking another, as
 * `apt-get upgrade` does, and everything whose upgrade needs a kept-back one. Dependencies of what is installed
 * must hold afterwards: an installed alternative is upgraded when its version no longer satisfies
 * (`Depends`, `Pre-Depends`), an installed package another one `Breaks` is upgraded past the break,
 * and installed packages whose own dependencies the upgrade breaks (exact `=` pins between binaries
 * of one source) are upgraded too. A missing dependency is installed only when it is not Essential.
 * Whatever cannot be satisfied is a failure naming the package and the relation, and the target it
 * came from is left out whole (with --ignore-errors the others still go in, never half of its set).
 */
export function resolveInstallSet(input: InstallSetInput): InstallSet {
  const policy = input.policy ?? new CandidatePolicy({ indexes: input.indexes, arch: input.arch });
  const keptBack = new Map<string, string>();
  let targets = input.targets;
  const failedBefore: InstallSet["failed"] = [];
  for (;;) {
    const attempt = resolveOnce({ ...input, targets }, policy, keptBack);
    if (attempt.keepBack) {
      keptBack.set(attempt.keepBack.name, attempt.keepBack.reason);
      continue;
    }
    const failing = targets === "all" ? [] : targets.filter((t) => attempt.failedTargets.has(t.name));
    if (targets !== "all" && failing.length) {
      failedBefore.push(...attempt.result.failed);
      targets = targets.filter((t) => !failing.includes(t));
      continue;
    }
    const warnings = [...keptBack].map(
      ([name, why]) => `${name} is kept back at its installed version, as apt-get upgrade keeps it: ${why}`,
    );
    const failed = [...failedBefore, ...attempt.result.failed].filter(
      (f, i, all) => all.findIndex((g) => g.name === f.name && g.reason === f.reason) === i,
    );
    return { ...attempt.result, failed, warnings: [...attempt.result.warnings, ...warnings] };
  }
}

function resolveOnce(
  input: InstallSetInput,
  policy: CandidatePolicy,
  keptBack: ReadonlyMap<string, string>,
): { result: InstallSet; keepBack?: { name: string; reason: string }; failedTargets: Set<string> } {
  const { arch } = input;
  const upgradeAll = input.targets === "all";
  const sourceOf = new Map(input.installed.map((p) => [p.name, p.source]));
  const present = new Map<string, Present>();
  for (const p of input.installed) {
    if (p.architecture !== arch && p.architecture !== "all") continue;
    present.set(p.name, {
      version: p.version,
      provides: parseRelations(p.paragraph.get("provides")).flat(),
      depends: [
        ...parseRelations(p.paragraph.get("pre-depends")),
        ...parseRelations(p.paragraph.get("depends")),
      ],
      breaks: [
        ...parseRelations(p.paragraph.get("breaks")).flat(),
        ...parseRelations(p.paragraph.get("conflicts")).flat(),
      ],
      held: /^hold /.test(p.status),
      installed: true,
    });
  }
  const original = new Map([...present].map(([n, p]) => [n, p.version]));
  const originalDepends = new Map([...present].map(([n, p]) => [n, p.depends]));
  const omitted = new Set<string>();
  const installedRef = (name: string) => {
    const version = original.get(name);
    return version === undefined ? undefined : { version, source: sourceOf.get(name) };
  };
  /** apt's candidate of a package, when it is a version an index offers. */
  const candidate = (name: string): PackageEntry | undefined =>
    policy.candidate(name, installedRef(name))?.entries[0];

  const picked = new Map<string, InstallItem>();
  const failed: InstallSet["failed"] = [];
  const warnings: string[] = [];
  const queue: PackageEntry[] = [];
  /** The target each picked package is installed for (the first one that pulled it). */
  const origin = new Map<string, string>();
  let pulledFor: string | undefined;
  const failedTargets = new Set<string>();
  const pick = (entry: PackageEntry, reason: InstallItem["reason"]) => {
    if (!origin.has(entry.package)) origin.set(entry.package, pulledFor ?? entry.package);
    const current = picked.get(entry.package);
    if (current && compareDebVersions(current.entry.version, entry.version) >= 0) return;
    picked.set(entry.package, {
      entry,
      from: original.get(entry.package),
      reason: current?.reason ?? reason,
    });
    present.set(entry.package, {
      version: entry.version,
      provides: parseRelations(entry.provides).flat(),
      depends: [...parseRelations(entry.preDepends), ...parseRelations(entry.depends)],
      breaks: [...parseRelations(entry.breaks).flat(), ...parseRelations(entry.conflicts).flat()],
      held: false,
      installed: true,
    });
    queue.push(entry);
  };
  let keepBack: { name: string; reason: string } | undefined;
  const fail = (name: string, reason: string) => {
    // apt-get upgrade does not fail on an upgrade it cannot make: it keeps the package back.
    if (upgradeAll && !keepBack && !keptBack.has(name)) keepBack = { name, reason };
    if (!failed.some((f) => f.name === name && f.reason === reason)) failed.push({ name, reason });
    failedTargets.add(origin.get(name) ?? name);
  };
  const frozen = (name: string) => present.get(name)?.held || keptBack.has(name);

  if (input.targets === "all") {
    for (const [name, p] of present) {
      if (keptBack.has(name)) continue;
      const best = policy.candidate(name, installedRef(name));
      if (!best || best.version === p.version) continue;
      if (compareDebVersions(best.version, p.version) < 0) {
        warnings.push(
          `${name} is pinned to ${describeVersion(best)}, older than the installed ${p.version}: apt would downgrade it, suture never downgrades; left at ${p.version}`,
        );
        continue;
      }
      if (!best.entries[0]) continue;
      if (p.held) {
        warnings.push(
          `${name} is held (apt-mark hold): left at ${p.version} although ${best.version} is available`,
        );
        continue;
      }
      pick(best.entries[0], "target");
    }
  } else {
    for (const t of input.targets) {
      const p = present.get(t.name);
      if (!p) {
        fail(t.name, "not installed in the image (suture never adds a new top-level package)");
        continue;
      }
      if (p.held) {
        fail(
          t.name,
          `held with apt-mark hold in the image (run \`apt-mark unhold ${t.name}\` in the image to allow it)`,
        );
        continue;
      }
      // As `apt-get install --only-upgrade`: the candidate, or (for an unasked major version) a
      // lower version apt ranks as high; never one its pins or Release flags rank lower.
      const all = policy.versions(t.name, installedRef(t.name));
      const best = pickCandidate(all, p.version);
      const eligible = all.filter((v) => v.entries.length && best && v.priority >= best.priority);
      const choice = chooseVersion(t, { installed: p.version, versions: eligible.map((v) => v.version) });
      if (!choice) {
        const lower = all.find((v) => v.entries.length && compareDebVersions(v.version, t.fixedVersion) >= 0);
        fail(
          t.name,
          lower
            ? `no version ≥ ${t.fixedVersion} that the image's apt would install (its candidate: ${best ? describeVersion(best) : "none"}); ${describeVersion(lower)} ranks lower by the image's apt preferences or Release flags: pin it in the image's /etc/apt/preferences.d to use it`
            : `no version ≥ ${t.fixedVersion} in the image's apt sources (best: ${best?.version ?? "none"})`,
        );
        continue;
      }
      if (choice.note) warnings.push(choice.note);
      if (compareDebVersions(choice.version, p.version) <= 0) continue;
      pick(eligible.find((v) => v.version === choice.version)!.entries[0]!, "target");
    }
  }

  const satisfies = (r: Relation): boolean => {
    if (r.arch && r.arch !== "any" && r.arch !== "native" && r.arch !== arch) return false;
    const p = present.get(r.name);
    if (p && versionMatches(p.version, r)) return true;
    for (const q of present.values()) {
      for (const prov of q.provides) {
        if (prov.name !== r.name) continue;
        if (!r.op) return true;
        if (prov.version && versionMatches(prov.version, r)) return true;
      }
    }
    return false;
  };
  /** Installed packages that provide the virtual package `name`. */
  const providersOf = (name: string): string[] =>
    [...present].filter(([, p]) => p.provides.some((prov) => prov.name === name)).map(([n]) => n);
  /** The candidate of an installed package, when it is newer than what is present and `ok` with it. */
  const upgradeSatisfying = (name: string, ok: (e: PackageEntry) => boolean): PackageEntry | undefined => {
    const e = candidate(name);
    return e && ok(e) && compareDebVersions(e.version, present.get(name)?.version ?? "0") > 0 ? e : undefined;
  };

  for (let guard = 0; queue.length && !keepBack; guard++) {
    if (guard > 10_000) throw new Error("dependency resolution did not converge");
    const entry = queue.shift()!;
    pulledFor = origin.get(entry.package);
    const mine = present.get(entry.package)!;
    // What the new version needs.
    for (const group of mine.depends) {
      if (group.some(satisfies)) continue;
      let done = false;
      for (const alt of group) {
        // The package of that name, or (a virtual name) the installed packages providing it.
        const holders = present.has(alt.name) ? [alt.name] : providersOf(alt.name);
        for (const name of holders) {
          const up = upgradeSatisfying(name, (e) =>
            name === alt.name ? versionMatches(e.version, alt) : providesMatching(e, alt),
          );
          if (up && !frozen(name)) {
            pick(up, "dependency");
            done = true;
            break;
          }
        }
        if (done) break;
      }
      if (done) continue;
      // A dependency the installed version already lacked was left out by the image's author
      // (distroless images carry no debconf, no perl): the upgrade does not add it either.
      const before = originalDepends.get(entry.package);
      if (
        !group.some((alt) => present.has(alt.name) || providersOf(alt.name).length) &&
        before?.some((g) => g.some((r) => group.some((alt) => alt.name === r.name)))
      ) {
        if (!omitted.has(`${entry.package}>${formatGroup(group)}`)) {
          omitted.add(`${entry.package}>${formatGroup(group)}`);
          warnings.push(
            `${entry.package} depends on ${formatGroup(group)}, which the image never had: left out, as before`,
          );
        }
        continue;
      }
      // Only a package not installed yet is new; a held or kept-back one is not upgraded here.
      const fresh = group
        .filter((alt) => !present.has(alt.name))
        .map((alt) => {
          const e = candidate(alt.name);
          return e && versionMatches(e.version, alt) ? e : undefined;
        })
        .find((e): e is PackageEntry => e !== undefined);
      if (fresh && upgradeAll && !input.upgradeAllowsNew) {
        fail(
          entry.package,
          `${entry.version} needs ${fresh.package}, which is not installed (apt-get upgrade installs no new packages)`,
        );
        continue;
      }
      if (fresh && !fresh.essential) {
        pick(fresh, "new-dependency");
        warnings.push(
          `${entry.package} ${entry.version} needs ${fresh.package}, which is not installed: installing it`,
        );
        continue;
      }
      fail(
        entry.package,
        fresh
          ? `needs ${fresh.package}, a new Essential package suture will not add`
          : `needs ${formatGroup(group)}, which no installed package or apt source satisfies`,
      );
    }
    // What the new version breaks, and who breaks it.
    for (const [name, p] of present) {
      if (name === entry.package) continue;
      const brokenByNew = mine.breaks.find((r) => r.name === name && versionMatches(p.version, r));
      const breaksNew = p.breaks.find((r) => r.name === entry.package && versionMatches(entry.version, r));
      const depBroken = p.depends.find(
        (group) => group.some((r) => r.name === entry.package) && !group.some(satisfies),
      );
      if (!brokenByNew && !breaksNew && !depBroken) continue;
      const up = upgradeSatisfying(name, (e) => {
        const eBreaks = [...parseRelations(e.breaks).flat(), ...parseRelations(e.conflicts).flat()];
        const eDeps = [...parseRelations(e.preDepends), ...parseRelations(e.depends)];
        return (
          !(brokenByNew && versionMatches(e.version, brokenByNew)) &&
          !eBreaks.some((r) => r.name === entry.package && versionMatches(entry.version, r)) &&
          eDeps.every(
            (group) =>
              !group.some((r) => r.name === entry.package) ||
              group.some((r) => (r.name !== entry.package ? satisfies(r) : versionMatches(entry.version, r))),
          )
        );
      });
      if (up && !frozen(name)) pick(up, "reverse-dependency");
      else {
        const rel = brokenByNew ?? breaksNew ?? depBroken?.[0];
        fail(
          entry.package,
          `${entry.version} conflicts with the installed ${name} ${p.version} (${rel ? formatRelation(rel) : "relation"}) and no version of ${name} fixes that${p.held ? " (it is held)" : keptBack.has(name) ? " (it is kept back)" : ""}`,
        );
      }
    }
  }

  // apt-get upgrade's "policy" check: an upgrade must not leave a Recommends unmet that the
  // installed version had met (apt keeps such a package back rather than install the recommended).
  if (upgradeAll && !keepBack && input.recommendsMatter !== false) {
    const before = new Map(
      input.installed
        .filter((p) => p.architecture === arch || p.architecture === "all")
        .map((p) => [p.name, p] as const),
    );
    const metBefore = (r: Relation): boolean => {
      const p = before.get(r.name);
      if (p && versionMatches(p.version, r)) return true;
      for (const q of before.values()) {
        for (const prov of parseRelations(q.paragraph.get("provides")).flat()) {
          if (prov.name === r.name && (!r.op || (prov.version && versionMatches(prov.version, r))))
            return true;
        }
      }
      return false;
    };
    for (const item of picked.values()) {
      const old = before.get(item.entry.package);
      if (!old) continue;
      const oldRecommends = parseRelations(old.paragraph.get("recommends"));
      if (!oldRecommends.every((g) => g.some(metBefore))) continue; // already unmet before: apt lets it be
      const unmet = parseRelations(entryParagraph(item.entry).get("recommends")).find(
        (g) => !g.some(satisfies),
      );
      if (unmet) {
        fail(
          item.entry.package,
          `${item.entry.version} recommends ${formatGroup(unmet)}, which the upgrade would leave unmet${unmet.some((r) => frozen(r.name)) ? " (held or kept back)" : ""}`,
        );
        break;
      }
    }
  }
  if (keepBack) return { result: { install: [], failed: [], warnings: [] }, keepBack, failedTargets };
  return { result: { install: installOrder([...picked.values()]), failed, warnings }, failedTargets };
}

/** Whether `e` provides the virtual package `r` names, in a version `r` accepts. */
function providesMatching(e: PackageEntry, r: Relation): boolean {
  return parseRelations(e.provides)
    .flat()
    .some(
      (prov) =>
        prov.name === r.name && (!r.op || (prov.version !== undefined && versionMatches(prov.version, r))),
    );
}

function versionMatches(version: string, r: Relation): boolean {
  if (!r.op || !r.version) return true;
  const c = compareDebVersions(version, r.version);
  switch (r.op) {
    case "<<":
      return c < 0;
    case "<=":
      return c <= 0;
    case "=":
      return c === 0;
    case ">=":
      return c >= 0;
    case ">>":
      return c > 0;
  }
}

function formatRelation(r: Relation): string {
  return `${r.name}${r.arch ? `:${r.arch}` : ""}${r.op ? ` (${r.op} ${r.version})` : ""}`;
}

function formatGroup(group: Relation[]): string {
  return group.map(formatRelation).join(" | ");
}

/** Dependencies first (Pre-Depends and Depends within the set), ties and cycles by name. */
function installOrder(items: InstallItem[]): InstallItem[] {
  const byName = new Map(items.map((i) => [i.entry.package, i]));
  // A dependency on a virtual package orders after the items that provide it.
  const providers = new Map<string, string[]>();
  for (const i of items)
    for (const prov of parseRelations(i.entry.provides).flat())
      providers.set(prov.name, [...(providers.get(prov.name) ?? []), i.entry.package]);
  const needs = new Map<string, Set<string>>();
  for (const i of items) {
    const deps = [...parseRelations(i.entry.preDepends), ...parseRelations(i.entry.depends)]
      .flat()
      .flatMap((r) => (byName.has(r.name) ? [r.name] : (providers.get(r.name) ?? [])))
      .filter((n) => n !== i.entry.package);
    needs.set(i.entry.package, new Set(deps));
  }
  const out: InstallItem[] = [];
  const remaining = new Set(byName.keys());
  while (remaining.size) {
    const ready = [...remaining].filter((n) => [...needs.get(n)!].every((d) => !remaining.has(d))).sort();
    // A cycle (libc6 ↔ libgcc-s1): take the first by name and go on, as dpkg's ordering does.
    const next = ready.length ? ready : [[...remaining].sort()[0]!];
    for (const n of next) {
      out.push(byName.get(n)!);
      remaining.delete(n);
    }
  }
  return out;
}
