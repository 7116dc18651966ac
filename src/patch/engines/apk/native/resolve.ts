import type { ApkIndexEntry } from "../../../../distro/apk/apkindex.ts";
import type { ApkRepository } from "../../../../distro/apk/config.ts";
import {
  type ApkDependency,
  type ApkPackageInfo,
  formatApkDependency,
  parseApkDependency,
} from "../../../../distro/apk/records.ts";
import { apkVersionFuzzyMatches, compareApkVersions } from "../../../../distro/apk/version.ts";
import { isSutureError } from "../../../../errors/errors.ts";
import type { PackageFailure, Targets } from "../../engine.ts";
import { dependencyOrder } from "../../shared/install-order.ts";
import { resolveKeepingBack } from "../../shared/keep-back.ts";

/**
 * What the native apk engine installs, decided as apk-tools 2.x's solver decides `apk upgrade
 * NAME…` (report) and `apk upgrade` (update-all), without a SAT solver: the closure of what the
 * chosen packages need, grown until nothing changes. Pure: no I/O.
 *
 * apk's rules followed here:
 * - a package is raised to the newest version any repository offers (compareApkVersions), the
 *   first repository winning between equal versions, as apk's repository order does;
 * - dependencies (`D:`) by name or by what packages provide (`p:`, so `so:`, `cmd:`, `pc:` names
 *   too); a versioned dependency (`>=`, `<`, `=`, `~`, …) is met only by a name or a versioned
 *   provide in range; an unversioned provide meets only an unversioned dependency and is chosen
 *   among several providers by provider priority (`k:`), as apk refuses to guess otherwise;
 * - an installed package whose dependencies the change breaks (libssl3 pinning libcrypto3 with
 *   `=`, busybox-binsh pinning busybox) is raised too, or the change is refused;
 * - conflicts (`!name`) are refused unless raising the installed side ends them;
 * - `i:` install_if: a package whose install_if holds after the change because of it is pulled in
 *   (ssl_client follows busybox); an installed one whose install_if no longer holds and that
 *   nothing needs is removed, as apk removes it, unless the image's world names it;
 * - `r:` replaces decides who may overwrite whose files, not what is chosen: install.ts applies it.
 *
 * suture's own rules: a dependency the installed version had and the image went without (a
 * static image's alpine-baselayout needing the /bin/sh it was built without) is not added, with a
 * warning; only installed packages are targets (as copa, which only upgrades what the
 * image has), nothing is downgraded, and a target that cannot be made is left out whole, with its
 * reason, so the rest can go in (`--ignore-errors`); update-all keeps such a package at its
 * installed version with a warning, as apk's solver would keep it rather than fail.
 */

/** One repository's verified index, in the image's repository order. */
export interface ApkResolveIndex {
  repository: ApkRepository;
  entries: readonly ApkIndexEntry[];
}

export type ApkInstallReason =
  | "target"
  | "dependency"
  | "new-dependency"
  | "reverse-dependency"
  | "install-if";

/** A package to install or upgrade. */
export interface ApkInstallChoice {
  entry: ApkIndexEntry;
  repository: ApkRepository;
  /** The installed version it replaces; undefined for a new package. */
  from?: string;
  reason: ApkInstallReason;
  /** Why, in words: "needed by libssl3 3.3.2-r1 (libcrypto3=3.3.2-r1)". "target" for targets. */
  why: string;
}

export interface ApkResolution {
  /** In installation order: what a package needs before it. */
  install: ApkInstallChoice[];
  /** Installed packages apk would remove (install_if no longer met, nothing needs them). */
  remove: { name: string; version: string; why: string }[];
  failed: PackageFailure[];
  warnings: string[];
}

export interface ApkResolveInput {
  /** The installed db's packages (`parseInstalledDb(…).map((p) => p.info)`). */
  installed: readonly ApkPackageInfo[];
  indexes: readonly ApkResolveIndex[];
  targets: Targets;
  /** `/etc/apk/world`: what the image asked for explicitly is never removed. */
  world?: readonly string[];
}

interface Candidate {
  entry: ApkIndexEntry;
  repository: ApkRepository;
  /** Position of its repository (lower wins between equal versions). */
  order: number;
}

/** What the system has under a name after the change so far. */
interface Present {
  info: ApkPackageInfo;
  /** Set when it is (being) installed from a repository. */
  choice?: ApkInstallChoice;
}

/** Whether `version` (of a package, or of a versioned provide) meets `dep`'s constraint. */
export function apkVersionSatisfies(version: string, dep: ApkDependency, checksum?: string): boolean {
  if (!dep.op || dep.version === undefined) return true;
  if (dep.op === "><") return checksum === dep.version;
  if (dep.op === "~" || dep.op === "~=") return apkVersionFuzzyMatches(version, dep.version);
  const c = compareApkVersions(version, dep.version);
  switch (dep.op) {
    case "<":
      return c < 0;
    case "<=":
      return c <= 0;
    case ">":
      return c > 0;
    case ">=":
      return c >= 0;
    case "=":
      return c === 0;
  }
  return false;
}

/** Whether package `p` meets `dep` by its name or one of its provides (the conflict mark ignored). */
export function apkProvides(p: ApkPackageInfo, dep: ApkDependency): boolean {
  if (p.name === dep.name) return apkVersionSatisfies(p.version, dep, p.checksum);
  for (const provide of p.provides) {
    if (provide.name !== dep.name) continue;
    // An unversioned provide (`p:/bin/sh`) meets only a dependency without a version.
    if (!dep.op) return true;
    if (provide.version !== undefined && apkVersionSatisfies(provide.version, dep)) return true;
  }
  return false;
}

const worldName = (w: string) => w.split(/[<>=~@]/, 1)[0]!;

export function resolveApkUpgrade(input: ApkResolveInput): ApkResolution {
  const worldWarnings: string[] = [];
  const world = parseWorld(input.world ?? [], worldWarnings);
  const candidates = new CandidateIndex(input.indexes, world.constraints, world.tags);
  const installedNames = new Set(input.installed.map((p) => p.name));
  // apk's solver keeps a package at its installed version rather than fail the upgrade.
  const { attempt, failed, keptBack } = resolveKeepingBack(input.targets, installedNames, (targets, kept) =>
    resolveOnce(input, targets, candidates, kept),
  );
  const warnings = [
    ...worldWarnings,
    ...attempt.result.warnings,
    ...[...keptBack].map(
      ([name, why]) => `${name} is kept at its installed version, as apk upgrade would keep it: ${why}`,
    ),
  ];
  return { ...attempt.result, install: installOrder(attempt.result.install), failed, warnings };
}

/**
 * Index entries by name and by what they provide, in repository order; entries the image's world
 * rules out (`zlib<1.3.1-r2`, `!foo`: what `apk add` was told) are set aside, as apk's solver never
 * picks them. A tagged repository's (`@edge https://…`) entries are candidates only for the names
 * the world pins to that tag (`zlib@edge`). apk also lets a pinned package's dependencies come
 * from its tag; that inheritance is not followed here: such a dependency must be in an untagged
 * repository, or the target is refused (the sandbox engine's apk follows it).
 */
class CandidateIndex {
  readonly byName = new Map<string, Candidate[]>();
  readonly byProvide = new Map<string, Candidate[]>();
  readonly withInstallIf: Candidate[] = [];
  /** Name → the world constraints that ruled out some of its versions. */
  readonly worldRuledOut = new Map<string, string>();

  constructor(
    indexes: readonly ApkResolveIndex[],
    world: readonly ApkDependency[],
    pinnedTags: ReadonlyMap<string, string> = new Map(),
  ) {
    indexes.forEach((index, order) => {
      const tag = index.repository.tag;
      for (const entry of index.entries) {
        if (tag !== undefined && pinnedTags.get(entry.name) !== tag) continue;
        const rules = world.filter((w) => w.name === entry.name);
        const ruledOut = rules.find((w) =>
          w.conflict ? true : !apkVersionSatisfies(entry.version, w, entry.checksum),
        );
        if (ruledOut) {
          this.worldRuledOut.set(entry.name, formatApkDependency(ruledOut));
          continue;
        }
        const c = { entry, repository: index.repository, order };
        push(this.byName, entry.name, c);
        for (const p of entry.provides) push(this.byProvide, p.name, c);
        if (entry.installIf.length) this.withInstallIf.push(c);
      }
    });
  }

  /** The newest version of `name` (first repository between equal ones), optionally within `accept`. */
  newest(name: string, accept: (c: Candidate) => boolean = () => true): Candidate | undefined {
    let best: Candidate | undefined;
    for (const c of this.byName.get(name) ?? []) {
      if (!accept(c)) continue;
      if (!best || compareApkVersions(c.entry.version, best.entry.version) > 0) best = c;
    }
    return best;
  }
}

/**
 * The image's world entries: constraints (`name[@tag][op version]`, `!name`) and the tags names
 * are pinned to (`name@edge`: where apk may take it from). An entry apk would not read either is
 * ignored, with a warning.
 */
function parseWorld(
  world: readonly string[],
  warnings: string[],
): { constraints: ApkDependency[]; tags: Map<string, string> } {
  const constraints: ApkDependency[] = [];
  const tags = new Map<string, string>();
  for (const word of world) {
    try {
      const dep = parseApkDependency(word.replace(/@[^<>=~]*/, ""), "the image's /etc/apk/world");
      constraints.push(dep);
      const tag = /@([^<>=~]+)/.exec(word)?.[1];
      if (tag !== undefined && !dep.conflict) tags.set(dep.name, tag);
    } catch (e) {
      if (!isSutureError(e)) throw e;
      warnings.push(`${e.message}: ignored`);
    }
  }
  return { constraints, tags };
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

const describe = (p: ApkPackageInfo) => `${p.name} ${p.version}`;

/** The dependency names a package answers to: its own and those it provides. */
function keysOf(info: ApkPackageInfo | undefined): string[] {
  return info ? [info.name, ...info.provides.map((p) => p.name)] : [];
}

function resolveOnce(
  input: ApkResolveInput,
  targets: Targets,
  candidates: CandidateIndex,
  keptBack: ReadonlyMap<string, string>,
): {
  result: ApkResolution;
  failed: PackageFailure[];
  /** Failure → the target it is blamed on (the one that pulled what failed). */
  blame: Map<PackageFailure, string>;
  failedTargets: Set<string>;
} {
  const present = new Map<string, Present>();
  /** Dependency name → the present packages with that name or provide (what providersOf scans). */
  const providing = new Map<string, Set<string>>();
  const setPresent = (name: string, value: Present | undefined) => {
    for (const key of keysOf(present.get(name)?.info)) providing.get(key)?.delete(name);
    if (!value) {
      present.delete(name);
      return;
    }
    present.set(name, value);
    for (const key of keysOf(value.info)) {
      const set = providing.get(key);
      if (set) set.add(name);
      else providing.set(key, new Set([name]));
    }
  };
  for (const info of input.installed) setPresent(info.name, { info });
  const installedInfo = new Map(input.installed.map((p) => [p.name, p]));
  const picked = new Map<string, ApkInstallChoice>();
  const queue: string[] = [];
  const failed: PackageFailure[] = [];
  const warnings: string[] = [];
  /** The target a picked package was pulled for (the first one). */
  const origin = new Map<string, string>();
  const blame = new Map<PackageFailure, string>();
  const failedTargets = new Set<string>();
  let pulledFor: string | undefined;

  const installedVersion = (name: string) => installedInfo.get(name)?.version;
  const pick = (c: Candidate, reason: ApkInstallReason, why: string) => {
    const name = c.entry.name;
    if (!origin.has(name)) origin.set(name, pulledFor ?? name);
    const from = installedVersion(name);
    const choice: ApkInstallChoice = {
      entry: c.entry,
      repository: c.repository,
      ...(from === undefined ? {} : { from }),
      reason: picked.get(name)?.reason ?? reason,
      why: picked.get(name)?.why ?? why,
    };
    picked.set(name, choice);
    setPresent(name, { info: c.entry, choice });
    queue.push(name);
  };
  const fail = (name: string, reason: string) => {
    if (failed.some((f) => f.name === name && f.reason === reason)) return;
    const failure = { name, reason };
    failed.push(failure);
    const root = origin.get(name) ?? pulledFor ?? name;
    blame.set(failure, root);
    failedTargets.add(root);
  };
  const providersOf = (dep: ApkDependency, except?: string): ApkPackageInfo[] => {
    const out: ApkPackageInfo[] = [];
    for (const name of providing.get(dep.name) ?? []) {
      const p = present.get(name)!;
      if (name !== except && apkProvides(p.info, dep)) out.push(p.info);
    }
    return out;
  };

  // 1. The targets.
  if (targets === "all") {
    for (const [name, p] of present) {
      if (keptBack.has(name)) continue;
      const best = candidates.newest(name);
      if (best && compareApkVersions(best.entry.version, p.info.version) > 0) {
        pulledFor = name;
        pick(best, "target", "target");
      }
    }
  } else {
    for (const t of targets) {
      pulledFor = t.name;
      const installed = installedInfo.get(t.name);
      if (!installed) {
        fail(t.name, "not installed in the image (suture upgrades installed packages only, as copa does)");
        continue;
      }
      const best = candidates.newest(t.name);
      const pin = candidates.worldRuledOut.get(t.name);
      if (!best) {
        fail(
          t.name,
          pin
            ? `the image's /etc/apk/world rules out every version the repositories offer (${pin}); change it in the image to allow the fix`
            : "no repository of the image offers it (check /etc/apk/repositories and --mirror)",
        );
        continue;
      }
      if (compareApkVersions(best.entry.version, t.fixedVersion) < 0) {
        fail(
          t.name,
          pin
            ? `the image's /etc/apk/world allows it only up to ${best.entry.version} (${pin}), lower than the fixed ${t.fixedVersion}; change it in the image to allow the fix`
            : `the image's repositories offer it up to ${best.entry.version}, lower than the fixed ${t.fixedVersion}`,
        );
        continue;
      }
      if (compareApkVersions(best.entry.version, installed.version) <= 0) continue; // already the newest
      pick(best, "target", "target");
    }
  }
  pulledFor = undefined;

  /** Make `dep` of `needer` hold, picking a provider from the repositories when none is present. */
  const unmetBefore = new Set<string>();
  const originallyAnswering = new Map<string, ApkPackageInfo[]>();
  for (const info of input.installed) for (const key of keysOf(info)) push(originallyAnswering, key, info);
  const ensure = (needer: ApkPackageInfo, dep: ApkDependency) => {
    if (providersOf(dep).length) return;
    // The installed version needed it too and the image went without it (a static image without
    // /bin/sh, its alpine-baselayout still asking for one): what the image was built to lack is
    // not added by a patch.
    const old = installedInfo.get(needer.name);
    const oldDeps = old?.depends.filter((d) => !d.conflict && d.name === dep.name) ?? [];
    if (
      old &&
      oldDeps.length &&
      !oldDeps.some((d) => (originallyAnswering.get(dep.name) ?? []).some((q) => apkProvides(q, d)))
    ) {
      const key = `${needer.name}\0${dep.name}`;
      if (!unmetBefore.has(key)) {
        unmetBefore.add(key);
        warnings.push(
          `${describe(needer)} needs ${formatApkDependency(dep)}, which the image lacks already (its installed ${old.version} needed it too): not added, as the image was built without it`,
        );
      }
      return;
    }
    const sameName = present.get(dep.name);
    if (sameName) {
      // apk installs one version of a name: the only way is to raise it, never to lower it.
      const up = candidates.newest(
        dep.name,
        (c) =>
          apkVersionSatisfies(c.entry.version, dep, c.entry.checksum) &&
          compareApkVersions(c.entry.version, sameName.info.version) >= 0,
      );
      if (!up) {
        fail(
          needer.name,
          `needs ${formatApkDependency(dep)}, but ${describe(sameName.info)} is installed and no repository offers a version that satisfies it`,
        );
        return;
      }
      pick(up, "dependency", `needed by ${describe(needer)} (${formatApkDependency(dep)})`);
      return;
    }
    const byName = candidates.newest(dep.name, (c) =>
      apkVersionSatisfies(c.entry.version, dep, c.entry.checksum),
    );
    if (byName) {
      pick(byName, "new-dependency", `new dependency of ${describe(needer)} (${formatApkDependency(dep)})`);
      return;
    }
    // Providers: an installed provider raised to a version that provides it is preferred, then
    // provider priority, then the newest, then repository order.
    const providers = (candidates.byProvide.get(dep.name) ?? []).filter((c) => {
      const have = present.get(c.entry.name);
      if (have && compareApkVersions(c.entry.version, have.info.version) < 0) return false;
      return apkProvides(c.entry, dep);
    });
    if (!providers.length) {
      fail(needer.name, `needs ${formatApkDependency(dep)}, which no repository of the image provides`);
      return;
    }
    const unversionedOnly = providers.every(
      (c) => !c.entry.provides.some((p) => p.name === dep.name && p.version !== undefined),
    );
    const names = [...new Set(providers.map((c) => c.entry.name))];
    if (
      unversionedOnly &&
      names.length > 1 &&
      !providers.some((c) => present.has(c.entry.name)) &&
      !providers.some((c) => c.entry.providerPriority !== undefined)
    ) {
      fail(
        needer.name,
        `needs ${formatApkDependency(dep)}, which ${names.join(", ")} provide; apk does not choose between them: install one in the image first`,
      );
      return;
    }
    providers.sort(
      (a, b) =>
        Number(present.has(b.entry.name)) - Number(present.has(a.entry.name)) ||
        (b.entry.providerPriority ?? 0) - (a.entry.providerPriority ?? 0) ||
        compareApkVersions(b.entry.version, a.entry.version) ||
        a.order - b.order,
    );
    const best = providers[0]!;
    pick(
      best,
      present.has(best.entry.name) ? "dependency" : "new-dependency",
      `${present.has(best.entry.name) ? "provides" : "new provider of"} ${formatApkDependency(dep)} for ${describe(needer)}`,
    );
  };

  /** A conflict `dep` (`!name…`) of `owner`: raise the other side when that ends it, else fail. */
  const resolveConflict = (owner: ApkPackageInfo, dep: ApkDependency) => {
    for (const other of providersOf(dep, owner.name)) {
      const otherPicked = picked.has(other.name);
      const ownerPicked = picked.has(owner.name);
      if (!otherPicked && !ownerPicked) continue; // the image had it so already: not ours to judge
      const ownerBefore = installedInfo.get(owner.name);
      const otherBefore = installedInfo.get(other.name);
      if (
        ownerBefore &&
        otherBefore &&
        ownerBefore.depends.some((d) => d.conflict && d.name === dep.name && apkProvides(otherBefore, d))
      )
        continue; // the two were installed in conflict already: the upgrade does not make it so
      if (!otherPicked) {
        const up = candidates.newest(
          other.name,
          (c) => compareApkVersions(c.entry.version, other.version) > 0 && !apkProvides(c.entry, dep),
        );
        if (up) {
          pulledFor = origin.get(owner.name);
          pick(
            up,
            "reverse-dependency",
            `${describe(owner)} conflicts with ${describe(other)} (!${formatApkDependency({ ...dep, conflict: false })})`,
          );
          continue;
        }
      }
      const blame = ownerPicked ? owner.name : other.name;
      pulledFor = origin.get(blame);
      fail(
        blame,
        `${describe(owner)} conflicts with ${describe(other)} (${formatApkDependency(dep)}), and apk refuses to install both`,
      );
    }
  };

  /** Whether install_if `dep`s all hold, and (when `requirePicked`) one of them because of the change. */
  const installIfHolds = (deps: readonly ApkDependency[], requirePicked: boolean) =>
    deps.every((d) =>
      d.conflict ? providersOf({ ...d, conflict: false }).length === 0 : providersOf(d).length > 0,
    ) &&
    (!requirePicked || deps.some((d) => !d.conflict && providersOf(d).some((p) => picked.has(p.name))));

  // 2. Grow the closure until nothing changes.
  for (let round = 0; round < 10_000; round++) {
    while (queue.length) {
      const name = queue.shift()!;
      const p = present.get(name)!;
      pulledFor = origin.get(name);
      for (const dep of p.info.depends) {
        if (dep.conflict) resolveConflict(p.info, dep);
        else ensure(p.info, dep);
      }
    }
    const before = picked.size + failed.length;
    // Installed packages the change broke: raise them to a version whose dependencies hold.
    for (const [name, p] of present) {
      if (p.choice) continue;
      for (const dep of p.info.depends) {
        if (dep.conflict) {
          resolveConflict(p.info, dep);
          continue;
        }
        if (providersOf(dep).length) continue;
        const broke = [...picked.values()].find((c) =>
          apkProvides(installedInfo.get(c.entry.name) ?? c.entry, dep),
        );
        pulledFor = broke ? origin.get(broke.entry.name) : undefined;
        const up = candidates.newest(name, (c) => compareApkVersions(c.entry.version, p.info.version) > 0);
        if (up) {
          pick(
            up,
            "reverse-dependency",
            `${describe(p.info)} needs ${formatApkDependency(dep)}, which the upgrade${broke ? ` of ${broke.entry.name}` : ""} no longer provides`,
          );
        } else {
          fail(
            broke?.entry.name ?? name,
            `installed ${describe(p.info)} needs ${formatApkDependency(dep)}, which the upgrade no longer provides, and no repository offers a newer ${name}`,
          );
        }
        break;
      }
    }
    // install_if: a package whose condition now holds because of the change comes along.
    for (const c of candidates.withInstallIf) {
      const name = c.entry.name;
      if (picked.has(name)) continue;
      const have = present.get(name);
      if (have && compareApkVersions(c.entry.version, have.info.version) <= 0) continue;
      if (candidates.newest(name) !== c) continue;
      if (!installIfHolds(c.entry.installIf, true)) continue;
      const trigger = c.entry.installIf
        .flatMap((d) => (d.conflict ? [] : providersOf(d)))
        .find((p) => picked.has(p.name));
      pulledFor = trigger ? origin.get(trigger.name) : undefined;
      pick(
        c,
        "install-if",
        `installed with ${c.entry.installIf.map(formatApkDependency).join(" ")} (install_if)`,
      );
    }
    if (!queue.length && picked.size + failed.length === before) break;
  }
  pulledFor = undefined;

  // 3. Installed install_if packages whose condition the change ended, that nothing needs.
  const world = new Set((input.world ?? []).map(worldName));
  const remove: ApkResolution["remove"] = [];
  for (const info of input.installed) {
    if (picked.has(info.name) || !info.installIf.length || world.has(info.name)) continue;
    if (installIfHolds(info.installIf, false)) continue;
    const wasHolding = info.installIf.every((d) =>
      d.conflict
        ? !input.installed.some((q) => q.name !== info.name && apkProvides(q, { ...d, conflict: false }))
        : input.installed.some((q) => apkProvides(q, d)),
    );
    if (!wasHolding) continue; // the image had it so already
    const neededBy = [...present.values()].find(
      (p) => p.info.name !== info.name && p.info.depends.some((d) => !d.conflict && apkProvides(info, d)),
    );
    if (neededBy) continue;
    remove.push({
      name: info.name,
      version: info.version,
      why: `its install_if ${info.installIf.map(formatApkDependency).join(" ")} no longer holds and nothing needs it, so apk removes it`,
    });
    setPresent(info.name, undefined);
  }

  return {
    // Ordered by the caller once the attempt is final (ordering every attempt is wasted work).
    result: { install: [...picked.values()], remove, failed: [...failed], warnings },
    failed,
    blame,
    failedTargets,
  };
}

/**
 * Dependencies before what needs them (by name or provide), ties by name; a cycle (busybox ↔
 * busybox-binsh through /bin/sh) is broken at its first package by name, as apk orders cycles.
 */
function installOrder(choices: readonly ApkInstallChoice[]): ApkInstallChoice[] {
  const picked = new Map(choices.map((c) => [c.entry.name, c]));
  const answering = new Map<string, string[]>();
  for (const [name, c] of picked)
    for (const key of keysOf(c.entry)) {
      const list = answering.get(key);
      if (list) list.push(name);
      else answering.set(key, [name]);
    }
  const needs = (name: string) =>
    picked
      .get(name)!
      .entry.depends.filter((dep) => !dep.conflict)
      .flatMap((dep) =>
        (answering.get(dep.name) ?? []).filter((other) => apkProvides(picked.get(other)!.entry, dep)),
      );
  return dependencyOrder(picked.keys(), needs).map((name) => picked.get(name)!);
}
