import { decompressAll } from "../../archive/compression.ts";
import { normaliseEntryPath } from "../../archive/tar/member-path.ts";
import { cveIdsIn } from "../changelog-ids.ts";
import { field } from "./control.ts";
import type { DebPackage } from "./deb.ts";
import { compareDebVersions, isValidDebVersion } from "./version.ts";

/** One entry of a Debian changelog (deb-changelog(5)): its heading's version and its text. */
export interface DebChangelogEntry {
  source: string;
  version: string;
  /** The entry's lines after the heading, up to and including its ` -- maintainer` trailer. */
  text: string;
}

// deb-changelog(5): `package (version) distributions; metadata`, starting in column 0.
const HEADING = /^(\w[-+0-9a-z.]*) \(([^()]*)\)(?:\s|;|$)/;

/**
 * The entries of a Debian changelog, newest first as written. Lines before the first heading and
 * headings whose version is not a valid Debian version are not entries (their text goes to no
 * entry: a CVE mentioned there cannot be dated). Emacs/vim local-variable trailers are ignored the
 * same way.
 */
export function parseDebChangelog(text: string): DebChangelogEntry[] {
  const entries: DebChangelogEntry[] = [];
  let current: { source: string; version: string; lines: string[] } | undefined;
  const close = () => {
    if (current)
      entries.push({ source: current.source, version: current.version, text: current.lines.join("\n") });
    current = undefined;
  };
  for (const line of text.split("\n")) {
    const m = HEADING.exec(line);
    if (m) {
      close();
      if (isValidDebVersion(m[2]!)) current = { source: m[1]!, version: m[2]!, lines: [] };
      continue;
    }
    current?.lines.push(line);
  }
  close();
  return entries;
}

/**
 * The CVE IDs of the entries strictly newer than `installed` and not newer than `updated`, by
 * dpkg's version order: what an upgrade from `installed` to `updated` brings. Without an installed
 * version (a new package) nothing is claimed: the package fixes nothing in this image.
 */
export function cvesBetween(
  entries: readonly DebChangelogEntry[],
  installed: string | undefined,
  updated: string,
): string[] {
  if (installed === undefined) return [];
  const text = entries
    .filter(
      (e) => compareDebVersions(e.version, installed) > 0 && compareDebVersions(e.version, updated) <= 0,
    )
    .map((e) => e.text)
    .join("\n");
  return cveIdsIn(text);
}

/** A package's changelogs as its .deb ships them. */
export interface DebChangelogs {
  /**
   * `usr/share/doc/<package>/changelog.Debian.gz`, decompressed: the source package's history (a
   * native package, whose version has no Debian revision, ships it as `changelog.gz`).
   */
  changelog?: string;
  /** `changelog.Debian.<arch>.gz` of a binNMU (a rebuild without a source change). */
  binNmu?: string;
  /**
   * The source package the .deb was built from and its version (`Source: name (version)`, else the
   * package's own name and version): packages whose doc directory is a symlink to a sibling's
   * (`dh_installdocs --link-doc`) ship no changelog of their own, and share the sibling's.
   */
  source: string;
  sourceVersion: string;
}

/** Most bytes a changelog may decompress to (glibc's changelog.Debian is about 1 MB). */
export const MAX_CHANGELOG_BYTES = 32 * 1024 * 1024;

/**
 * Read the Debian changelogs out of a .deb's data archive (the verified package file, not the
 * image: slim images path-exclude /usr/share/doc, so the image never has them). The whole data
 * archive is read once (dpkg-deb puts links after every other member, so no early stop); only the
 * changelog members are kept.
 */
export async function readDebChangelogs(
  deb: DebPackage,
  options: { maxBytes?: number } = {},
): Promise<DebChangelogs> {
  const dir = `usr/share/doc/${deb.name}/`;
  const main = `${dir}changelog.Debian.gz`;
  const binNmu = `${dir}changelog.Debian.${deb.architecture}.gz`;
  // Debian policy 12.7: a native package's changelog is `changelog.gz`; in any other package that
  // name is the upstream changelog, in whatever format upstream keeps.
  const native = deb.version.includes("-") ? undefined : `${dir}changelog.gz`;
  const found: { changelog?: string; binNmu?: string } = {};
  for await (const member of deb.dataEntries()) {
    if (member.header.type !== "file") continue;
    const path = memberPath(member.header.path);
    if (path !== main && path !== binNmu && path !== native) continue;
    const chunks: Buffer[] = [];
    for await (const c of member.body) chunks.push(c);
    const text = (
      await decompressAll(Buffer.concat(chunks), "gzip", {
        what: `${path} in ${deb.path}`,
        maxBytes: options.maxBytes ?? MAX_CHANGELOG_BYTES,
      })
    ).toString("utf8");
    if (path === binNmu) found.binNmu = text;
    else if (path === main || found.changelog === undefined) found.changelog = text;
  }
  const sourceField = field(deb.control, "Source")?.trim();
  const m = sourceField ? /^(\S+)(?:\s+\(([^()\s]+)\))?$/.exec(sourceField) : null;
  return {
    ...found,
    source: m?.[1] ?? deb.name,
    sourceVersion: m?.[2] ?? deb.version,
  };
}

/** One updated package whose new .deb the engine installed. */
export interface UpdatedDeb {
  name: string;
  /** The version installed before (undefined: newly installed). */
  from?: string;
  to: string;
  changelogs: DebChangelogs;
}

/**
 * Per updated package, the CVE IDs its changelogs list between the installed and the new version.
 * A package without a changelog of its own (its doc directory links to a sibling's) takes the
 * changelog of another updated package built from the same source at the same source version.
 * Packages whose changelog cannot be found are left out (nothing is claimed for them).
 */
export function debChangelogFixes(updated: readonly UpdatedDeb[]): Map<string, string[]> {
  const bySource = new Map<string, string>();
  for (const u of updated) {
    const key = `${u.changelogs.source} ${u.changelogs.sourceVersion}`;
    if (u.changelogs.changelog !== undefined && !bySource.has(key)) bySource.set(key, u.changelogs.changelog);
  }
  const out = new Map<string, string[]>();
  for (const u of updated) {
    const changelog =
      u.changelogs.changelog ?? bySource.get(`${u.changelogs.source} ${u.changelogs.sourceVersion}`);
    if (changelog === undefined && u.changelogs.binNmu === undefined) continue;
    const entries = [...parseDebChangelog(u.changelogs.binNmu ?? ""), ...parseDebChangelog(changelog ?? "")];
    out.set(u.name, cvesBetween(entries, u.from, u.to));
  }
  return out;
}

/** A data member's path relative to the root; undefined for one no unpacker would accept. */
function memberPath(raw: string): string | undefined {
  try {
    return normaliseEntryPath(raw).join("/");
  } catch {
    return undefined;
  }
}
