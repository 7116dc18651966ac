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
}

/**
 * Applies `change` to the database at `location` inside `root` (the overlay's merged dir), in the
 * same backend, so the image's own `rpm -qa`/`rpm -V`/`rpm -q --whatprovides` agree. sqlite and
 * Azure Linux's manifest are written; bdb/ndb are refused (UNSUPPORTED_OS naming
 * `--engine sandbox`) before anything is written. Paths are resolved inside `root`
 * (src/fs/in-root.ts): the image's symlinks are followed there and never out of it.
 */
export async function writeRpmDatabase(
  root: string,
  location: RpmDatabaseLocation,
  change: RpmDatabaseChange,
): Promise<void> {
  switch (location.backend) {
    case "sqlite":
      return writeSqliteRpmDatabase(root, location, change);
    case "manifest":
      return writeRpmManifest(root, location, change);
    case "bdb":
    case "ndb":
      throw new SutureError(
        "UNSUPPORTED_OS",
        `the native engine writes rpm's sqlite database and Azure Linux's manifest; ${location.path} is ${location.backend === "bdb" ? "a Berkeley DB" : "an ndb"} database: patch with --engine sandbox`,
      );
  }
}
