/** The kinds of tar member suture reads and writes (see header.ts for the typeflags behind them). */
export type TarEntryType = "file" | "directory" | "symlink" | "hardlink" | "char" | "block" | "fifo";

/**
 * One tar member's metadata, with PAX records and GNU long names already applied: what the
 * streaming reader yields, the extractor applies, the random-access index keeps and the writer
 * writes (the writer takes a subset, see TarWriteEntry in write.ts).
 */
export interface TarEntry {
  /**
   * The member name. The reader gives it exactly as recorded (not normalised: `./a/`); the index
   * keys and gives it normalised (member-path.ts); the writer takes it relative, without `./` or
   * a trailing `/` (it adds that to directories).
   */
  path: string;
  type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (& 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data that follow the header: a regular file's length, 0 for every other type. */
  size: number;
  /** Seconds since the epoch; fractional when a PAX record carries sub-second precision. */
  mtime: number;
  /** Target of a symlink (as written) or of a hardlink (the archive name of its first member). */
  linkname: string;
  devmajor: number;
  devminor: number;
  /**
   * Owner and group names (ustar `uname`/`gname` or PAX), when the archive has them: apk resolves
   * a package file's owner by name in the image's /etc/passwd and /etc/group before its ids.
   */
  uname?: string;
  gname?: string;
  /** Extended attributes from `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*` records, values as raw bytes. */
  xattrs: Map<string, Buffer>;
  /**
   * PAX records the decoder does not interpret (e.g. apk's `APK-TOOLS.checksum.SHA1`), raw bytes
   * by key; absent when there are none.
   */
  otherPax?: Map<string, Buffer>;
}
