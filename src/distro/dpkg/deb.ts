import { type ArMember, listArMembers, openArMember } from "../../archive/ar.ts";
import { type DecodeFormat, decompress } from "../../archive/compression.ts";
import { ReadAhead } from "../../archive/read-ahead.ts";
import { readTar, type TarMember } from "../../archive/tar/read.ts";
import { describeCause, isSutureError, quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { readAll } from "../../image/image.ts";
import { checkPackageFields } from "../package-syntax.ts";
import { type ControlParagraph, field, parseControl } from "./control.ts";
import { cachedDataPieces, type DebDataCache } from "./deb-data-cache.ts";

/**
 * An opened binary package (.deb, deb(5) format 2.0): its control metadata read eagerly (it is
 * small), its data archive streamed on demand.
 */
export interface DebPackage {
  /** The .deb on disk, for messages. */
  path: string;
  /** The `control` file's paragraph (field names looked up case-insensitively via `field`). */
  control: ControlParagraph;
  /** The `control` file exactly as shipped: the status stanza is built from it. */
  controlText: string;
  name: string;
  version: string;
  architecture: string;
  /** `same`, `foreign`, `allowed` or `no`. */
  multiArch: string;
  /**
   * Every regular file of control.tar by name (`control`, `conffiles`, `md5sums`, `preinst`,
   * `postinst`, `prerm`, `postrm`, `triggers`, `shlibs`, `symbols`, `templates`, `config`, …).
   */
  controlMembers: ReadonlyMap<string, Buffer>;
  /** Conffiles the package declares (absolute paths), without `remove-on-upgrade` entries. */
  conffiles: string[];
  /** Conffiles flagged `remove-on-upgrade` in the conffiles member. */
  removeOnUpgrade: string[];
  /**
   * The data.tar members in archive order. Each call reads the archive afresh; consume each
   * entry's body before asking for the next (see readTar). With `readAhead`, the first call
   * reads what was decompressed ahead.
   */
  dataEntries(): AsyncGenerator<TarMember>;
  /** Stop a read-ahead that will not be consumed (see OpenDebOptions); harmless otherwise. */
  close(): Promise<void>;
}

export interface OpenDebOptions {
  /**
   * Start decompressing the data archive at once, holding up to this many bytes, so that it
   * overlaps with unpacking the package before this one.
   */
  readAhead?: number;
  /**
   * Keep the decompressed data archive by the .deb's SHA-256 and read it from there next time
   * (deb-data-cache.ts). The caller vouches that the file at `path` is the one with that digest
   * (the package store proved it).
   */
  dataCache?: DebDataCache;
}

/** Largest control.tar we accept uncompressed (tzdata's, with its templates, is ~400 kB). */
const MAX_CONTROL_BYTES = 64 * 1024 * 1024;
/** The remedy for a .deb that is malformed, oversized or hostile. */
const DEB_FIX = "the package is malformed or hostile; remove it from the repository or use another mirror";

/**
 * openDeb's own refusals: they already name the file, so the catch-alls that wrap a reader's
 * error with the file name let them through (decided by type, never by the message).
 */
class InvalidDebError extends SutureError {}

/** deb-control(5): the values Multi-Arch may take. */
const MULTI_ARCH_VALUES = new Set(["same", "foreign", "allowed", "no"]);

const CONTROL_MEMBER_NAME = /^[a-z0-9_-]+$/;
const CONTROL_MEMBER = /^control\.tar(\.gz|\.xz|\.zst)?$/;
const DATA_MEMBER = /^data\.tar(\.gz|\.xz|\.zst|\.bz2|\.lzma)?$/;

/**
 * Open a .deb: check its ar layout as dpkg-deb does (`debian-binary` first with a 2.x version,
 * then `control.tar[.gz|.xz|.zst]`, then `data.tar[.gz|.xz|.zst]`; members named `_…` are
 * ignored), read and parse the control archive, and return a handle whose data entries can be
 * streamed. Any malformation is INVALID_ARCHIVE naming the file. The file must not change while
 * the handle is in use (callers open verified, content-addressed files).
 */
export async function openDeb(path: string, options: OpenDebOptions = {}): Promise<DebPackage> {
  const bad = (why: string, cause?: unknown) =>
    new InvalidDebError(
      "INVALID_ARCHIVE",
      `${path} is not a valid Debian package: ${why}; download it again from a trusted mirror`,
      cause === undefined ? {} : { cause },
    );
  const members = await listArMembers(path);
  const [first, ...rest] = members;
  if (first?.name !== "debian-binary") throw bad("its first member is not debian-binary");
  // Checked here: readAll's own limit error names no file and carries INVALID_MANIFEST.
  if (first.size > 64) throw bad(`its debian-binary member is ${first.size} bytes, not a format version`);
  const formatText = (await readAll(openArMember(path, first), 64)).toString("latin1");
  if (!/^2\.\d+\n/.test(formatText))
    throw bad(`unsupported format version ${quoteUntrusted(formatText.trim())}`);
  const meaningful = rest.filter((m) => !m.name.startsWith("_"));
  const controlMember = meaningful[0];
  const dataMember = meaningful[1];
  if (!controlMember || !CONTROL_MEMBER.test(controlMember.name))
    throw bad(
      `expected a control.tar member after debian-binary, found ${controlMember ? quoteUntrusted(controlMember.name) : "nothing"}`,
    );
  if (!dataMember || !DATA_MEMBER.test(dataMember.name))
    throw bad(
      `expected a data.tar member after ${controlMember.name}, found ${dataMember ? quoteUntrusted(dataMember.name) : "nothing"}`,
    );

  const controlMembers = new Map<string, Buffer>();
  try {
    for await (const entry of readTar([await controlArchiveBytes(path, controlMember)])) {
      const name = entry.header.path.replace(/^\.\//, "").replace(/\/$/, "");
      if (entry.header.type === "directory" && name === ".") continue;
      if (entry.header.type === "directory" && name === "") continue;
      if (entry.header.type !== "file" || name.includes("/") || name === "" || name === "..")
        throw bad(
          `control archive member ${quoteUntrusted(entry.header.path)} is not a plain top-level file`,
        );
      // Each member becomes `info/<package>.<member>` in the database: only dpkg's info-file names.
      if (!CONTROL_MEMBER_NAME.test(name))
        throw bad(
          `control archive member ${quoteUntrusted(name)} is not a dpkg control file name (a-z, 0-9, _ and -)`,
        );
      const chunks: Buffer[] = [];
      for await (const c of entry.body) chunks.push(c);
      controlMembers.set(name, Buffer.concat(chunks));
    }
  } catch (e) {
    if (namesTheFile(e)) throw e;
    throw bad(`its control archive cannot be read (${describeCause(e)})`, e);
  }
  const controlBytes = controlMembers.get("control");
  if (!controlBytes) throw bad("its control archive has no control file");
  const controlText = controlBytes.toString("utf8");
  const paragraphs = parseControl(controlText);
  if (paragraphs.length !== 1) throw bad(`its control file has ${paragraphs.length} paragraphs, expected 1`);
  const control = paragraphs[0]!;
  const name = field(control, "Package");
  const version = field(control, "Version");
  const architecture = field(control, "Architecture");
  if (!name) throw bad("its control file has no Package");
  if (!version) throw bad("its control file has no Version");
  if (!architecture) throw bad("its control file has no Architecture");
  // Name, version and architecture become dpkg database file names (`info/<name>:<arch>.list`,
  // `status.d/<name>`) and words of maintainer-script command lines: nothing outside the policy
  // syntax (a `/`, `..`, a newline) may get that far.
  checkPackageFields(
    "deb",
    { name, version, architecture },
    `package ${quoteUntrusted(name)} (${path})`,
    "it is not a valid Debian package (malformed or hostile); remove it from the repository or use another mirror",
  );
  const multiArch = field(control, "Multi-Arch") ?? "no";
  if (!MULTI_ARCH_VALUES.has(multiArch))
    throw bad(`its Multi-Arch field ${quoteUntrusted(multiArch)} is not one of same, foreign, allowed, no`);

  const conffiles: string[] = [];
  const removeOnUpgrade: string[] = [];
  for (const raw of (controlMembers.get("conffiles")?.toString("utf8") ?? "").split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    // deb-conffiles(5): an optional flag word before an absolute path.
    const m = /^(?:(remove-on-upgrade)\s+)?(\/.*)$/.exec(line);
    if (!m) throw bad(`conffiles line ${quoteUntrusted(line)} is not an absolute path`);
    (m[1] ? removeOnUpgrade : conffiles).push(m[2]!);
  }

  let ahead = options.readAhead
    ? new ReadAhead(dataBytes(path, dataMember, bad, options.dataCache), options.readAhead)
    : undefined;
  return {
    path,
    control,
    controlText,
    name,
    version,
    architecture,
    multiArch,
    controlMembers,
    conffiles,
    removeOnUpgrade,
    dataEntries: () => {
      const source = ahead ?? dataBytes(path, dataMember, bad, options.dataCache);
      ahead = undefined;
      return readDataEntries(source, bad);
    },
    close: async () => {
      await ahead?.close();
      ahead = undefined;
    },
  };
}

/** What a downloaded package must be: the index entry it was resolved from. */
export interface DebIdentity {
  name: string;
  version: string;
  architecture: string;
}

/**
 * Refuse a package that is not the one its signed index entry describes (UNTRUSTED). The
 * download was checked against the entry's SHA-256, so a mismatch means the repository signed an
 * index whose entry points at a different package: installing it would record (and name database
 * files after) an identity nobody resolved or verified.
 */
export function checkDebIdentity(deb: DebPackage, expected: DebIdentity): void {
  for (const [field, got, want] of [
    ["Package", deb.name, expected.name],
    ["Version", deb.version, expected.version],
    ["Architecture", deb.architecture, expected.architecture],
  ] as const) {
    if (got === want) continue;
    throw new SutureError(
      "UNTRUSTED",
      `package ${quoteUntrusted(expected.name)} ${quoteUntrusted(expected.version)} downloaded from the repository says ${field} ${quoteUntrusted(got)} where its signed index says ${quoteUntrusted(want)}: the repository serves a package that is not the one its signed index describes; remove that repository or use another mirror`,
    );
  }
}

/** The data archive's tar bytes, decompressed. */
async function* dataBytes(
  path: string,
  member: ArMember,
  bad: (why: string, cause?: unknown) => SutureError,
  cache: DebDataCache | undefined,
): AsyncGenerator<Buffer> {
  if (member.name.endsWith(".bz2"))
    throw bad("bzip2-compressed data archives are not supported (dpkg-deb no longer builds them)");
  // xz streams through the host's xz where there is one (perl-modules' data.tar is tens of MB,
  // and patches unpack several such packages).
  if (cache) yield* cachedDataPieces(cache, () => memberPieces(path, member));
  else yield* memberPieces(path, member);
}

/** A member's compression, by its name as dpkg-deb decides it (checked against CONTROL_MEMBER/DATA_MEMBER). */
const MEMBER_FORMATS: Record<string, DecodeFormat> = {
  gz: "gzip",
  zst: "zstd",
  xz: "xz",
  lzma: "lzma",
  tar: "none",
};

/** A member's decompressed pieces. */
function memberPieces(path: string, member: ArMember, maxBytes?: number): AsyncGenerator<Buffer> {
  const format = MEMBER_FORMATS[member.name.slice(member.name.lastIndexOf(".") + 1)] ?? "none";
  return decompress(openArMember(path, member), format, {
    what: `the ${member.name} member of ${path}`,
    fix: DEB_FIX,
    inputSize: member.size,
    ...(maxBytes === undefined ? {} : { maxBytes }),
  });
}

/** The small control archive, decompressed whole (at most MAX_CONTROL_BYTES: more is TOO_LARGE). */
async function controlArchiveBytes(path: string, member: ArMember): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const piece of memberPieces(path, member, MAX_CONTROL_BYTES)) pieces.push(piece);
  return Buffer.concat(pieces);
}

/** Errors that already name the .deb: its own refusals, and a member over its size limit. */
function namesTheFile(e: unknown): boolean {
  return e instanceof InvalidDebError || isSutureError(e, "TOO_LARGE");
}

async function* readDataEntries(
  source: AsyncIterable<Buffer>,
  bad: (why: string, cause?: unknown) => SutureError,
): AsyncGenerator<TarMember> {
  try {
    yield* readTar(source);
  } catch (e) {
    if (namesTheFile(e)) throw e;
    throw bad(`its data archive cannot be read (${describeCause(e)})`, e);
  }
}
