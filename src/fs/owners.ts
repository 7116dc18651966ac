import { type BigIntStats, chownSync, fchownSync, fstatSync, lchownSync, lstatSync, statSync } from "node:fs";

/**
 * What a file "really" is when the process that wrote it could not make it so: the no-namespaces
 * patch mode (issue 16, mode 3) runs as an ordinary user with no user namespace, so chown(2),
 * mknod(2) and security.* xattrs are refused. Instead of failing, the few places that set owners
 * (the layer extractor, the package unpackers, the working tree copy) record the intended facts
 * here, and the patch layer builder reads them back instead of the filesystem's. It is a
 * process-wide table, like fakeroot's, because mode 3 is a property of the process (`suture patch`
 * in a locked-down pod), not of one call.
 *
 * Entries are keyed by the inode (device, inode number and birth time, so an inode number reused
 * after a delete is not mistaken for the old file). A rename keeps the inode, so the unpackers'
 * `chown(staged)` then `rename(staged, final)` keeps its record. An inode nobody recorded was
 * created by this process, and root mode would have created it as 0:0.
 */
export interface RecordedFacts {
  uid: number;
  gid: number;
  /** The whole st_mode (file type included: a device node is stored as an empty regular file). */
  mode?: number;
  /** Device number of a character or block device (Linux dev_t layout). */
  rdev?: bigint;
  /** Content xattrs (security.capability, ACLs): the filesystem has none of them. */
  xattrs?: ReadonlyMap<string, Buffer>;
}

let table: Map<string, RecordedFacts> | undefined;

/** Switch recording on (mode 3) for the rest of the process. */
export function recordOwnersInstead(): void {
  table ??= new Map();
}

/** Whether owners are recorded rather than set (mode 3). */
export function ownersRecorded(): boolean {
  return table !== undefined;
}

/** An inode's identity for the table: device, inode number, birth time. */
export function inodeKey(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.birthtimeNs}`;
}

/** Inodes re-owned through the *OrRecord calls: changed, though their change time is not. */
const reowned = new Set<string>();

/** Whether this inode was chowned (recorded) by this process: a change the filesystem does not show. */
export function reownedByRecord(st: BigIntStats): boolean {
  return reowned.has(inodeKey(st));
}

function merge(st: BigIntStats, facts: Partial<RecordedFacts> & { uid: number; gid: number }): void {
  const k = inodeKey(st);
  reowned.add(k);
  // chown(2) by root leaves a regular file's or directory's mode to the chmod that follows it:
  // a recorded full mode (a copy of a lower entry) no longer describes it once it is chowned again.
  table!.set(k, { ...table!.get(k), mode: undefined, ...facts });
}

/** fchown(2), or its record in mode 3. */
export function fchownOrRecord(fd: number, uid: number, gid: number): void {
  if (!table) fchownSync(fd, uid, gid);
  else merge(fstatSync(fd, { bigint: true }), { uid, gid });
}

/** lchown(2) (the link itself), or its record in mode 3. */
export function lchownOrRecord(path: string, uid: number, gid: number): void {
  if (!table) lchownSync(path, uid, gid);
  else merge(lstatSync(path, { bigint: true }), { uid, gid });
}

/** chown(2) (following a final symlink), or its record in mode 3. */
export function chownOrRecord(path: string, uid: number, gid: number): void {
  if (!table) chownSync(path, uid, gid);
  else merge(statSync(path, { bigint: true }), { uid, gid });
}

/** Record every fact of an inode at once (a copied or extracted entry). Mode 3 only. */
export function recordFacts(st: BigIntStats, facts: RecordedFacts): void {
  table?.set(inodeKey(st), facts);
}

/** What was recorded for this inode, if anything. */
export function recordedFacts(st: BigIntStats): RecordedFacts | undefined {
  return table?.get(inodeKey(st));
}

/** Drop the records of inodes that are being removed with a tree (keeps the table small). */
export function forgetFacts(st: BigIntStats): void {
  table?.delete(inodeKey(st));
}

/**
 * `st` as a BigIntStats whose mode, owner, group and device number are the recorded ones (or
 * `facts`): the type predicates (`isFile()`, `isCharacterDevice()`) read `mode`, so a device
 * stored as an empty file answers as the device it stands for.
 */
export function withFacts(st: BigIntStats, facts: RecordedFacts): BigIntStats {
  const out = Object.create(Object.getPrototypeOf(st)) as BigIntStats;
  Object.assign(out, st, {
    mode: facts.mode !== undefined ? BigInt(facts.mode) : st.mode,
    uid: BigInt(facts.uid),
    gid: BigInt(facts.gid),
    rdev: facts.rdev ?? 0n,
  });
  return out;
}

/**
 * The facts an entry of a mode-3 tree has: its record, else (created by this process, as root
 * would have created it) owner 0:0 with the mode the filesystem shows.
 */
export function effectiveStat(st: BigIntStats): BigIntStats {
  if (!table) return st;
  return withFacts(st, recordedFacts(st) ?? { uid: 0, gid: 0 });
}

/** A layer entry's facts as the archive gave them (mode 3's per-layer record, keyed by path). */
export interface PathFacts extends RecordedFacts {
  /** The whole st_mode: type and permission bits. */
  mode: number;
  /** The layer marks this directory opaque (`.wh..wh..opq`): nothing below shows through. */
  opaque?: boolean;
}

/** st_mode's file type bits. */
export const S_IFMT_BITS = {
  fifo: 0o010000,
  char: 0o020000,
  dir: 0o040000,
  block: 0o060000,
  file: 0o100000,
  symlink: 0o120000,
} as const;

/**
 * A layer's record as one JSON document (`owners.json` beside a mode-3 cached layer):
 * `[path, mode, uid, gid, rdev?, xattrs?, opaque?]` rows, xattr values in base64.
 */
export function serializePathFacts(record: ReadonlyMap<string, PathFacts>): string {
  const rows = [...record].map(([path, f]) => [
    path,
    f.mode,
    f.uid,
    f.gid,
    f.rdev === undefined ? null : f.rdev.toString(),
    f.xattrs ? Object.fromEntries([...f.xattrs].map(([k, v]) => [k, v.toString("base64")])) : null,
    f.opaque ? 1 : 0,
  ]);
  return JSON.stringify(rows);
}

/** The inverse of {@link serializePathFacts}; the document was written by suture into its own cache. */
export function parsePathFacts(text: string): Map<string, PathFacts> {
  const out = new Map<string, PathFacts>();
  const rows = JSON.parse(text) as [
    string,
    number,
    number,
    number,
    string | null,
    Record<string, string> | null,
    number,
  ][];
  for (const [path, mode, uid, gid, rdev, xattrs, opaque] of rows) {
    out.set(path, {
      mode,
      uid,
      gid,
      ...(rdev !== null ? { rdev: BigInt(rdev) } : {}),
      ...(xattrs
        ? { xattrs: new Map(Object.entries(xattrs).map(([k, v]) => [k, Buffer.from(v, "base64")])) }
        : {}),
      ...(opaque ? { opaque: true } : {}),
    });
  }
  return out;
}
