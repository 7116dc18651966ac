import type { InstalledRpm, RpmDatabaseLocation } from "../installed.ts";
import type { RpmPackage } from "../package.ts";

/**
 * PLACEHOLDER (wt-rpminstall): the real module is wt-rpmdbwrite's; on merge, take its version of
 * this file whole. Only the contract's signatures are here so the installer type-checks.
 */

export interface RpmDatabaseChange {
  add: readonly { pkg: RpmPackage; header: Uint8Array }[];
  /** As readInstalledRpmsInRoot returned them. */
  remove: readonly InstalledRpm[];
}

/**
 * Applies `change` to the database at `location` inside `root` (the overlay's merged dir), in the
 * same backend, so the image's own `rpm -qa`/`rpm -V`/`rpm -q --whatprovides` agree.
 */
export async function writeRpmDatabase(
  _root: string,
  _location: RpmDatabaseLocation,
  _change: RpmDatabaseChange,
): Promise<void> {
  throw new Error("not merged yet");
}
