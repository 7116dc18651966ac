/**
 * Which tags of a repository a bulk config means (copa's tag discovery): `list` as written (each
 * checked to exist), `pattern` the stable-semver tags matching a regular expression, newest
 * `maxTags`, `latest` the highest stable-semver tag.
 */
import semver from "semver";
import { quoteUntrusted } from "../errors/errors.ts";
import { formatReference, type ImageReference } from "../ref/reference.ts";
import { listTags, type RegistryOptions, resolveManifest } from "../transports/registry/registry.ts";
import type { TagStrategy } from "./config.ts";

export interface DiscoveredTags {
  tags: string[];
  /** Tags left out and why (not semver, a prerelease, missing), for the user to see. */
  warnings: string[];
}

/**
 * Masterminds/semver's lenient form, which copa parses tags with: an optional `v`, one to three
 * numeric parts, then semver's prerelease and build parts. `1.25`, `v2` and `1.25.3` are versions;
 * `1.25.3-alpine` is a prerelease (so not stable), `bookworm` is not a version.
 */
const LENIENT_SEMVER =
  /^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;

/** A tag's version as copa reads it, or undefined when the tag is not one. */
export function tagVersion(tag: string): semver.SemVer | undefined {
  const m = LENIENT_SEMVER.exec(tag);
  if (!m) return undefined;
  const [, major, minor = "0", patch = "0", pre, build] = m;
  return (
    semver.parse(`${major}.${minor}.${patch}${pre ? `-${pre}` : ""}${build ? `+${build}` : ""}`) ?? undefined
  );
}

/**
 * Stable semver tags only, oldest first; the others come back as warnings. Equal versions
 * (`1.25` and `1.25.0`) keep a fixed order by name, so runs agree.
 */
function stableSemverAscending(candidates: readonly string[], warnings: string[]): string[] {
  const versioned: { tag: string; version: semver.SemVer }[] = [];
  for (const tag of candidates) {
    const version = tagVersion(tag);
    if (!version) warnings.push(`tag ${quoteUntrusted(tag)} is not a semantic version: skipped`);
    else if (version.prerelease.length)
      warnings.push(`tag ${quoteUntrusted(tag)} is a prerelease, not a stable version: skipped`);
    else versioned.push({ tag, version });
  }
  versioned.sort(
    (a, b) => semver.compare(a.version, b.version) || (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0),
  );
  return versioned.map((v) => v.tag);
}

/** The tags a `pattern` or `latest` strategy picks from a repository's tags (pure: no registry). */
export function selectTags(
  strategy: Exclude<TagStrategy, { strategy: "list" }>,
  repositoryTags: readonly string[],
): DiscoveredTags {
  const warnings: string[] = [];
  const excluded = new Set(strategy.exclude);
  if (strategy.strategy === "pattern") {
    const matching = repositoryTags.filter((t) => strategy.pattern.test(t) && !excluded.has(t));
    const sorted = stableSemverAscending(matching, warnings);
    const tags = strategy.maxTags ? sorted.slice(-strategy.maxTags) : sorted;
    return { tags, warnings };
  }
  // latest: copa ignores tags that are no stable version without a word; among hundreds of tags
  // (`bookworm`, `1-alpine`, …) a warning each would drown the one line that matters.
  const sorted = stableSemverAscending(
    repositoryTags.filter((t) => !excluded.has(t)),
    [],
  );
  const newest = sorted.at(-1);
  if (!newest) warnings.push("no tag is a stable semantic version: nothing to patch");
  return { tags: newest ? [newest] : [], warnings };
}

/**
 * `fn` over `items`, at most `limit` at once, results in order. A config of hundreds of images (or
 * a list of hundreds of tags) must not open hundreds of registry requests at the same moment.
 */
export async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Registry requests a discovery makes at once. */
export const DISCOVERY_CONCURRENCY = 8;

/** Ask the registry which tags a strategy picks (credentials as every registry call has them). */
export async function discoverTags(
  repository: ImageReference,
  strategy: TagStrategy,
  options: RegistryOptions,
): Promise<DiscoveredTags> {
  if (strategy.strategy !== "list") {
    return selectTags(strategy, await listTags(repository, options));
  }
  // copa's documentation promises that a listed tag that does not exist is a warning; a HEAD each
  // says so before a job is made of it.
  const warnings: string[] = [];
  const present = await Promise.all(
    strategy.list.map(async (tag) => (await resolveManifest({ ...repository, tag }, options)) !== undefined),
  );
  const tags = strategy.list.filter((tag, i) => {
    if (!present[i]) warnings.push(`${formatReference({ ...repository, tag })} does not exist: skipped`);
    return present[i];
  });
  return { tags, warnings };
}
