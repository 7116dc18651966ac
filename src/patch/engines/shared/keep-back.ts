import type { PackageFailure, Targets } from "../engine.ts";

/** What one resolution pass reports to the keep-back driver. */
export interface ResolutionAttempt {
  failed: PackageFailure[];
  /** Failure → the target (or installed package) it is blamed on: the one that pulled what failed. */
  blame: Map<PackageFailure, string>;
  /** Targets with a failure blamed on them. */
  failedTargets: Set<string>;
}

/**
 * The retry loop the native resolvers share, as the package managers' own upgrade commands behave
 * when part of an upgrade cannot be made:
 * - update-all: every installed package whose upgrade failed (or the upgrade that pulled what
 *   failed) is kept at its installed version and the rest resolved again; failures no kept-back
 *   package explains are kept back too (said, not fatal);
 * - named targets: a failing target is left out whole (never half of what it pulls), the rest
 *   resolved again.
 * `resolveOnce` is one pass given the targets still wanted and what is kept back (name → why).
 * Returns the last pass, every failure once, and what was kept back.
 */
export function resolveKeepingBack<A extends ResolutionAttempt>(
  targets: Targets,
  installedNames: ReadonlySet<string>,
  resolveOnce: (targets: Targets, keptBack: ReadonlyMap<string, string>) => A,
): { attempt: A; failed: PackageFailure[]; keptBack: Map<string, string> } {
  const keptBack = new Map<string, string>();
  const failedBefore: PackageFailure[] = [];
  let wanted = targets;
  for (;;) {
    const attempt = resolveOnce(wanted, keptBack);
    if (attempt.failed.length && wanted === "all") {
      const fresh = new Map<string, PackageFailure>();
      for (const f of attempt.failed) {
        const root = installedNames.has(f.name) ? f.name : attempt.blame.get(f)!;
        if (!keptBack.has(root) && !fresh.has(root)) fresh.set(root, f);
      }
      for (const [root, f] of fresh)
        keptBack.set(root, root === f.name ? f.reason : `${f.name}: ${f.reason}`);
      if (fresh.size) continue;
      for (const f of attempt.failed) keptBack.set(f.name, f.reason);
      attempt.failed.length = 0;
    }
    const failing = wanted === "all" ? [] : wanted.filter((t) => attempt.failedTargets.has(t.name));
    if (wanted !== "all" && failing.length) {
      failedBefore.push(
        ...attempt.failed.filter((f) => failing.some((t) => attempt.blame.get(f) === t.name)),
      );
      wanted = wanted.filter((t) => !failing.includes(t));
      continue;
    }
    const failed = [...failedBefore, ...attempt.failed].filter(
      (f, i, all) => all.findIndex((g) => g.name === f.name && g.reason === f.reason) === i,
    );
    return { attempt, failed, keptBack };
  }
}
