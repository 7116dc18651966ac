import type { RpmPackage } from "./package.ts";

/**
 * PLACEHOLDER (wt-rpminstall): the real module is wt-rpmdbwrite's; on merge, take its version of
 * this file whole. Only the contract's signatures are here so the installer type-checks.
 */

export interface RpmInstallStamp {
  /** Unix seconds. */
  time: number;
  /** Transaction id: rpm uses the time. */
  tid: number;
}

export type RpmFileState = "normal" | "replaced" | "notinstalled" | "netshared" | "wrongcolor";

/**
 * The header blob rpm's database stores for `pkg` once installed: its immutable region as in the
 * .rpm, plus the install-time tags rpm adds (INSTALLTIME, INSTALLTID, FILESTATES, …).
 */
export function installedRpmHeader(
  _pkg: RpmPackage,
  _stamp: RpmInstallStamp,
  _fileStates: readonly RpmFileState[],
): Uint8Array {
  throw new Error("not merged yet");
}
