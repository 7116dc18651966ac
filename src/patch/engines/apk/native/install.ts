import type { ApkIndexEntry } from "../../../../distro/apk/apkindex.ts";
import type { ApkPackage } from "../../../../distro/apk/package.ts";
import { SutureError } from "../../../../errors/errors.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import type { EngineSandbox } from "../../engine.ts";

/*
 * PLACEHOLDER (branch wt-apk-plan): the contract of the installer that branch wt-apk-install
 * writes. Its real file replaces this one at merge.
 */

export interface ApkInstallItem {
  /** openApk'd and already verified (control vs index C:, datahash). */
  pkg: ApkPackage;
  /** The index entry it was resolved from. */
  entry: ApkIndexEntry;
  /** The repository URL as the image lists it (not the mirror), for messages. */
  repository: string;
}

export interface ApkInstallOptions {
  /** mergedDir is the root; run() for scripts. */
  sandbox: EngineSandbox;
  progress: ProgressSink;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Install/upgrade `items` (and remove `remove`) in sandbox.mergedDir exactly as apk would; returns warnings and time in scripts. */
export async function installApkPackages(
  _items: readonly ApkInstallItem[],
  _remove: readonly string[],
  _options: ApkInstallOptions,
): Promise<{ warnings: string[]; scriptsMs: number }> {
  throw new SutureError("USAGE", "suture's native apk installer is not finished yet: use --engine sandbox");
}
