import { SutureError } from "../../../errors/errors.ts";
import type { InstalledRpm, RpmDatabaseLocation } from "../installed.ts";
import type { RpmPackage } from "../package.ts";
import { writeRpmManifest } from "./write-manifest.ts";
import { writeSqliteRpmDatabase } from "./write-sqlite.ts";

/**
 * Recording an rpm transaction in the image: the packages installed (with the header rpm would
 * store for each, installed-header.ts) and the packages removed, in whatever the image records
 * them with. One writer per backend: write-sqlite.ts (rpm's sqlite database), write-manifest.ts
 * (Azure Linux distroless's manifest). The Berkeley DB and ndb backends are read but not written.
 */

export interface RpmDatabaseChange {
  /** Packages installed, each with its installed header blob (installedRpmHeader). */
  add: readonly { pkg: RpmPackage; header: Uint8Array }[];
  /** Packages removed (upgraded or obsoleted), as readInstalledRpmsInRoot returned them. */
  remove: readonly InstalledRpm[];
  /**
   * Packages that stay, with a new header (rpmHeaderWithFileStates: files another package took
   * over marked "replaced"); they keep their record number. Not recorded in a manifest, which has
   * no file states.
   */
  update?: readonly { pkg: InstalledRpm; header: Uint8Array }[];
}

/**
 * Applies `change` to the database at `location` inside `root` (the overlay's merged dir), in the
 * same backend, so the image's own `rpm -qa`/`rpm -V`/`rpm -q --whatprovides` agree. sqlite and
 * Azure Linux's manifest are written; bdb/ndb are refused (UNSUPPORTED_OS naming
 * `--engine sandbox`) before anything is written. An empty change writes nothing. Paths are
 * resolved inside `root` (src/fs/in-root.ts): the image's symlinks are followed there and never
 * out of it.
 */
export async function writeRpmDatabase(
  root: string,
  location: RpmDatabaseLocation,
  change: RpmDatabaseChange,
): Promise<void> {
  assertRpmDatabaseWritable(location);
  if (change.add.length === 0 && change.remove.length === 0 && (change.update ?? []).length === 0) return;
  if (location.backend === "sqlite") await writeSqliteRpmDatabase(root, location, change);
  else await writeRpmManifest(root, location, change);
}

/**
 * Refuses (UNSUPPORTED_OS, one line naming `--engine sandbox`) a database the native engine
 * cannot write: an engine calls it while planning, before it changes anything in the image.
 */
export function assertRpmDatabaseWritable(
  location: RpmDatabaseLocation,
): asserts location is RpmDatabaseLocation & { backend: "sqlite" | "manifest" } {
  if (location.backend === "sqlite" || location.backend === "manifest") return;
  throw new SutureError(
    "UNSUPPORTED_OS",
    `the native engine writes rpm's sqlite database and Azure Linux's manifest; ${location.path} is ${location.backend === "bdb" ? "a Berkeley DB" : "an ndb"} database: patch with --engine sandbox`,
  );
}
