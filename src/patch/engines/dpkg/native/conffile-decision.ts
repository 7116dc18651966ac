/**
 * What `dpkg --configure` does with a conffile, as a pure function of three hashes and the
 * `--force-conf*` options (dpkg's own decision table, in its configure.c). The unpacker computes
 * the hashes and carries the decision out; this file only decides, so every row is a table test.
 *
 * suture always behaves as `dpkg --force-confdef --force-confold`: a conffile the image's author
 * edited is never overwritten, and the package's new version lands beside it as `.dpkg-dist`.
 */

/** dpkg's placeholder hash of a conffile absent from disk. */
export const NONEXISTENT = "nonexistent";
/** dpkg's placeholder hash of a conffile unpacked but never configured (no known old version). */
export const NEWCONFFILE = "newconffile";

export interface ConffilePolicy {
  /** --force-confdef: take the default answer (keep the edited file) without asking. */
  confdef: boolean;
  /** --force-confold: keep the edited file when there is no default. */
  confold: boolean;
  /** --force-confnew: install the package's version (old one as `.dpkg-old`) when there is no default. */
  confnew: boolean;
  /** --force-confmiss: install a conffile that is missing on disk. */
  confmiss: boolean;
}

/** The options suture runs with: the image's edits always win, nothing ever asks. */
export const SUTURE_CONFFILE_POLICY: ConffilePolicy = {
  confdef: true,
  confold: true,
  confnew: false,
  confmiss: false,
};

export interface ConffileHashes {
  /** MD5 the dpkg database records for the old version; undefined or NEWCONFFILE when there is none. */
  recorded: string | undefined;
  /** MD5 of the file on disk now, NONEXISTENT when it is missing. */
  current: string;
  /** MD5 of the new package's version. */
  incoming: string;
}

/**
 * - `identical`: the file on disk already is the new version: nothing to do.
 * - `install`: the new version replaces the file (or creates it).
 * - `install-backup`: the new version replaces the file; the edited one is kept as `.dpkg-old`.
 * - `keep`: the file on disk (or its absence) stays; the new version is dropped, since it did not change.
 * - `keep-dist`: the file on disk (or its absence) stays; the new version is written as `.dpkg-dist`.
 * - `ask`: dpkg would prompt; no forcing option answers (never with suture's policy).
 */
export type ConffileAction = "identical" | "install" | "install-backup" | "keep" | "keep-dist" | "ask";

/** What suture's policy can decide: it never asks, never overwrites an edit. */
export type SutureConffileAction = Exclude<ConffileAction, "install-backup" | "ask">;

export function decideConffile(hashes: ConffileHashes): SutureConffileAction;
export function decideConffile(hashes: ConffileHashes, policy: ConffilePolicy): ConffileAction;
export function decideConffile(
  { recorded, current, incoming }: ConffileHashes,
  policy: ConffilePolicy = SUTURE_CONFFILE_POLICY,
): ConffileAction {
  if (current === incoming) return "identical";
  if (current === NONEXISTENT && policy.confmiss) return "install";
  if (recorded === undefined || recorded === NEWCONFFILE) {
    // No old version to compare with: a missing file is simply installed; an existing one counts
    // as edited by the user and by the distributor alike (dpkg's "new conffile" prompt).
    return current === NONEXISTENT ? "install" : resolvePrompt(policy);
  }
  // A deleted conffile counts as edited by the user: it stays deleted unless the package changed it,
  // and then only the forcing options decide whether it comes back.
  const userEdited = recorded !== current;
  const distributorEdited = recorded !== incoming;
  if (!userEdited) return "install";
  if (!distributorEdited) return "keep";
  return resolvePrompt(policy);
}

/** dpkg's answer to its "keep your version or install the package's?" prompt (default: keep). */
function resolvePrompt(policy: ConffilePolicy): ConffileAction {
  if (policy.confdef) return "keep-dist";
  if (policy.confnew) return "install-backup";
  if (policy.confold) return "keep-dist";
  return "ask";
}

/**
 * The hash recorded for a conffile the image's dpkg configuration excludes (path-exclude): no new
 * version was unpacked, so configure leaves the hash it had.
 */
export function excludedConffileHash(recorded: string | undefined): string {
  return recorded ?? NEWCONFFILE;
}

/**
 * A conffile the old version had and the new one does not:
 * - `remove`: the package flagged it remove-on-upgrade; dpkg deletes it;
 * - `forget`: another package owns it now; its record goes with the old version;
 * - `obsolete`: it stays on disk, recorded obsolete (dpkg never deletes an edited config file).
 */
export type DroppedConffileFate = "remove" | "forget" | "obsolete";

export function droppedConffileFate(removeOnUpgrade: boolean, ownedByAnother: boolean): DroppedConffileFate {
  if (removeOnUpgrade) return "remove";
  return ownedByAnother ? "forget" : "obsolete";
}
