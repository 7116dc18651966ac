import type { InstalledRpm, RpmDatabaseLocation } from "../../../../distro/rpm/installed.ts";
import type { RpmPackage } from "../../../../distro/rpm/package.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import type { EngineSandbox } from "../../engine.ts";

/**
 * PLACEHOLDER until wt-rpminstall's branch lands (the contract of issue 14's session brief); its
 * owner's file replaces this one whole.
 */

export interface RpmInstallItem {
  /** openRpm'd from `file`, checked against its repo checksum, signature verified. */
  pkg: RpmPackage;
  /** The verified .rpm on disk (in the engine's store under the cache dir). */
  file: string;
  /** Repo id as the image names it, for messages. */
  repository: string;
  /** The installed package of the same name+arch it upgrades. */
  replaces?: InstalledRpm;
}

export interface RpmInstallOptions {
  /** sandbox.mergedDir is the image root; run() for scriptlets. */
  sandbox: EngineSandbox;
  database: RpmDatabaseLocation;
  /** The db as read before the change (other owners of files). */
  installed: readonly InstalledRpm[];
  /** Packages erased because a new one obsoletes them. */
  obsoleted: readonly InstalledRpm[];
  /** False when the image has no shell: scriptlets refused/skipped per rules. */
  runScripts: boolean;
  progress: ProgressSink;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export async function installRpmPackages(
  _items: readonly RpmInstallItem[],
  _options: RpmInstallOptions,
): Promise<{ warnings: string[]; scriptsMs: number }> {
  throw new Error("not merged yet");
}
