import { compareDebVersions } from "../../../distro/dpkg/version.ts";
import type { PackageTarget } from "../engine.ts";

/**
 * Which available version fixes a target, for both dpkg engines: the highest one at or above the
 * fixed version, but never a new upstream major the report did not ask for (copa#1441).
 */

/** A package's installed version and the versions its repositories offer. */
export interface AvailableVersions {
  installed?: string;
  versions: readonly string[];
}

/** Pick the version to install for a target from what apt offers; undefined when nothing fixes it. */
export function chooseVersion(
  t: PackageTarget,
  p: AvailableVersions,
): { version: string; note?: string } | undefined {
  const usable = p.versions
    .filter((v) => compareDebVersions(v, t.fixedVersion) >= 0)
    .sort((a, b) => compareDebVersions(b, a));
  if (!usable.length) return undefined;
  const best = usable[0]!;
  const installedMajor = p.installed ? upstreamMajor(p.installed) : undefined;
  const fixedMajor = upstreamMajor(t.fixedVersion);
  if (
    installedMajor !== undefined &&
    upstreamMajor(best) !== installedMajor &&
    upstreamMajor(best) !== fixedMajor
  ) {
    const sameMajor = usable.find((v) => upstreamMajor(v) === fixedMajor);
    if (sameMajor) {
      return {
        version: sameMajor,
        note: `${t.name}: ${best} is a new major version; installing ${sameMajor}, the report's fix line`,
      };
    }
    return undefined;
  }
  return { version: best };
}

function upstreamMajor(v: string): string {
  const noEpoch = v.includes(":") ? v.slice(v.indexOf(":") + 1) : v;
  return noEpoch.split(/[.+~-]/)[0]!;
}
