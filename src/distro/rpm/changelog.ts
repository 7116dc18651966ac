import { cveIdsIn } from "../changelog-ids.ts";
import type { RpmHeader } from "./header.ts";

/** rpmtag.h: a package's %changelog, three parallel arrays, newest entry first. */
export const RpmChangelogTag = { TIME: 1080, NAME: 1081, TEXT: 1082 } as const;

/** One %changelog entry: when (seconds since the epoch, the day rpmbuild read), who (often "… - version-release"), what. */
export interface RpmChangelogEntry {
  time: number;
  name: string;
  text: string;
}

/**
 * The %changelog of a header (a package file's or an installed package's). Entries the three
 * arrays do not all hold are dropped: a header whose arrays disagree is damaged or hostile, and
 * the entries cannot be matched up.
 */
export function rpmChangelog(header: RpmHeader): RpmChangelogEntry[] {
  let times: number[];
  let names: string[];
  let texts: string[];
  try {
    times = header.numberArray(RpmChangelogTag.TIME);
    names = header.stringArray(RpmChangelogTag.NAME);
    texts = header.stringArray(RpmChangelogTag.TEXT);
  } catch {
    // A tag of the wrong type: no changelog can be read from it, and none is claimed.
    return [];
  }
  if (times.length !== names.length || times.length !== texts.length) return [];
  return times.map((time, i) => ({ time, name: names[i]!, text: texts[i]! }));
}

/**
 * The CVE IDs of the new package's entries newer than the installed package's newest entry: what
 * the upgrade brings, as `rpm -q --changelog` of the two would differ. rpm dates entries by day,
 * so two uploads on one day cannot be told apart by time: an entry of the installed package's
 * newest day counts as new only when the installed package does not have it (same name and text).
 * Without an installed changelog (a new package, or an image whose database keeps none) nothing
 * is claimed.
 */
export function rpmCvesSince(
  updated: readonly RpmChangelogEntry[],
  installed: readonly RpmChangelogEntry[],
): string[] {
  if (installed.length === 0) return [];
  const newest = Math.max(...installed.map((e) => e.time));
  const had = new Set(installed.map((e) => `${e.time}\0${e.name}\0${e.text}`));
  const text = updated
    .filter((e) => e.time > newest || (e.time === newest && !had.has(`${e.time}\0${e.name}\0${e.text}`)))
    .map((e) => e.text)
    .join("\n");
  return cveIdsIn(text);
}
