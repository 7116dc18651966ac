import { readFileInRoot } from "../../fs/in-root.ts";
import { readBdbPackages } from "./database/bdb.ts";
import { parseRpmManifest, RPM_MANIFEST_PATH } from "./database/manifest.ts";
import { readNdbPackages } from "./database/ndb.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import {
  formatRpmEvr,
  parseRpmHeader,
  type RpmHeader,
  type RpmNevra,
  RpmTag,
  rpmHeaderNevra,
} from "./header.ts";
import { compareRpmVersions } from "./version.ts";

/**
 * An image's installed rpm packages, whichever way it records them: rpm's database in one of its
 * three backends (sqlite, ndb, Berkeley DB), or Azure Linux distroless's manifest. One reader per
 * format (`database/`), one result: each package's identity and, from a database, its header.
 */

export type RpmDbBackend = "sqlite" | "ndb" | "bdb" | "manifest";

export interface RpmDatabaseLocation {
  /** The file in the image (`/var/lib/rpm/rpmdb.sqlite`, …). */
  path: string;
  backend: RpmDbBackend;
}

export interface InstalledRpm {
  /** The package's key in its database (sqlite hnum, BDB key, ndb pkgidx); a manifest's line number. */
  recordNumber: number;
  nevra: RpmNevra;
  /**
   * The header as the database stores it, its blob byte for byte (an installed package's
   * immutable region is what rpm writes back unchanged). Absent for a manifest, which lists
   * identities only.
   */
  header?: RpmHeader;
  sourceRpm?: string;
}

/**
 * Where rpm keeps its database: `/usr/lib/sysimage/rpm` (Fedora 36+, openSUSE and SLE, with
 * `/var/lib/rpm` a symlink to it), `/var/lib/rpm` (RHEL, CentOS, Amazon Linux, Azure Linux), or
 * `/usr/share/rpm` (older rpm-ostree images: Fedora CoreOS, bootc). A real database in the first
 * is the one an image's rpm uses when more exist: rpm moved there and left a symlink behind,
 * never the other way.
 */
export const RPM_DB_DIRS = ["/usr/lib/sysimage/rpm", "/var/lib/rpm", "/usr/share/rpm"] as const;

/** Each backend's file, newest backend first: a converted database may leave the old one behind. */
const BACKEND_FILES: readonly (readonly [string, Exclude<RpmDbBackend, "manifest">])[] = [
  ["rpmdb.sqlite", "sqlite"],
  ["Packages.db", "ndb"],
  ["Packages", "bdb"],
];

/** sqlite's write-ahead log beside rpmdb.sqlite: committed transactions not yet checkpointed. */
const WAL_SUFFIX = "-wal";

/** Every file that may hold an image's installed rpms (databases, their logs, the manifest). */
export const RPM_DATABASE_FILES: readonly string[] = [
  ...RPM_DB_DIRS.flatMap((dir) =>
    BACKEND_FILES.flatMap(([name, backend]) =>
      backend === "sqlite" ? [`${dir}/${name}`, `${dir}/${name}${WAL_SUFFIX}`] : [`${dir}/${name}`],
    ),
  ),
  RPM_MANIFEST_PATH,
];

export { RPM_MANIFEST_PATH };

/** The database an image's rpm reads, given which files it has; undefined when none. */
export function findRpmDatabase(has: (path: string) => boolean): RpmDatabaseLocation | undefined {
  for (const dir of RPM_DB_DIRS) {
    for (const [name, backend] of BACKEND_FILES) {
      if (has(`${dir}/${name}`)) return { path: `${dir}/${name}`, backend };
    }
  }
  return has(RPM_MANIFEST_PATH) ? { path: RPM_MANIFEST_PATH, backend: "manifest" } : undefined;
}

const HEADER_FIX =
  "the image's rpm database holds a damaged or hostile package header; rebuild it in the image (rpmdb --rebuilddb) or use an intact image";

/**
 * The installed packages recorded at `location`, reading files with `read` (image paths; the
 * sqlite backend's `-wal` is read too). A database or header that is damaged is a one-line
 * INVALID_ARCHIVE naming the file and the fault.
 */
export function readInstalledRpms(
  location: RpmDatabaseLocation,
  read: (path: string) => Uint8Array | undefined,
): InstalledRpm[] {
  const bytes = read(location.path);
  if (bytes === undefined) return [];
  const what = location.path;
  if (location.backend === "manifest") {
    return parseRpmManifest(Buffer.from(bytes).toString("utf8"), what).map((e) => ({
      recordNumber: e.line,
      nevra: e.nevra,
      ...(e.sourceRpm === undefined ? {} : { sourceRpm: e.sourceRpm }),
    }));
  }
  const records =
    location.backend === "sqlite"
      ? readSqlitePackages(bytes, read(`${location.path}${WAL_SUFFIX}`), what)
      : location.backend === "ndb"
        ? readNdbPackages(bytes, what)
        : readBdbPackages(bytes, what);
  return records.map(({ recordNumber, blob }) => {
    const where = `package record ${recordNumber} of ${what}`;
    const header = parseRpmHeader(blob, where);
    const sourceRpm = header.string(RpmTag.SOURCERPM);
    return {
      recordNumber,
      nevra: rpmHeaderNevra(header, where, HEADER_FIX),
      header,
      ...(sourceRpm === undefined ? {} : { sourceRpm }),
    };
  });
}

/**
 * The installed packages of an unpacked or mounted root (the patch sandbox), paths resolved by the
 * in-root resolver (the image's own symlinks, e.g. `/var/lib/rpm` → `../../usr/lib/sysimage/rpm`,
 * followed inside the root); undefined when the image records none.
 */
export async function readInstalledRpmsInRoot(
  root: string,
): Promise<{ location: RpmDatabaseLocation; packages: InstalledRpm[] } | undefined> {
  const files = new Map<string, Buffer>();
  for (const path of RPM_DATABASE_FILES) {
    const content = await readFileInRoot(root, path);
    if (content !== undefined) files.set(path, content);
  }
  const location = findRpmDatabase((p) => files.has(p));
  if (location === undefined) return undefined;
  return { location, packages: readInstalledRpms(location, (p) => files.get(p)) };
}

/** The pseudo-package rpm records each imported OpenPGP key as (no files, no architecture). */
export function isRpmPublicKey(pkg: InstalledRpm): boolean {
  return pkg.nevra.name === "gpg-pubkey";
}

/**
 * Name → installed version (`[epoch:]version-release`, the form Trivy reports and
 * compareRpmVersions orders), without rpm's gpg-pubkey entries. A name installed more than once
 * (install-only packages such as kernels, multilib pairs) maps to its newest version: what a fix
 * must reach for the image to count as patched.
 */
export function installedRpmVersions(packages: readonly InstalledRpm[]): Map<string, string> {
  const versions = new Map<string, string>();
  for (const pkg of packages) {
    if (isRpmPublicKey(pkg)) continue;
    const evr = formatRpmEvr(pkg.nevra);
    const seen = versions.get(pkg.nevra.name);
    if (seen === undefined || compareRpmVersions(evr, seen) > 0) versions.set(pkg.nevra.name, evr);
  }
  return versions;
}
