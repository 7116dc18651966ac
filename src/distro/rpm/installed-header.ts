import { SutureError } from "../../errors/errors.ts";
import {
  exportRpmHeader,
  formatRpmNevra,
  type RpmHeader,
  type RpmHeaderAddition,
  RpmSigTag,
  RpmTag,
  RpmType,
  rpmCharAddition,
  rpmHeaderRawEntry,
  rpmInt32Addition,
  rpmStringAddition,
} from "./header.ts";
import type { InstalledRpm } from "./installed.ts";
import type { RpmPackage } from "./package.ts";

/**
 * The header rpm stores in its database for an installed package, built as rpm 4.18 builds it
 * (facts from lib/package.c rpmReadPackageFile, headerMergeLegacySigs and applyRetrofits,
 * lib/relocation.c addPrefixes, lib/psm.c dbAdd, lib/header.c doExport):
 *
 * 1. the package's main header, its immutable region kept byte for byte;
 * 2. the signature header's digests and signatures copied in under main-header tags
 *    (SIGSIZE, SIGMD5, SHA1HEADER, SHA256HEADER, RSAHEADER, …: xlateTags below), which is what
 *    `rpm -qi` shows as "Signature" and what the Sigmd5/Sha1header indexes are keyed by;
 * 3. SOURCERPM "(none)" for a binary package built without one (applyRetrofits);
 * 4. INSTPREFIXES, a copy of PREFIXES, for a relocatable package installed where it was built for;
 * 5. at the end of the transaction: FILESTATES (one state per file), INSTALLTID, INSTALLTIME and
 *    INSTALLCOLOR.
 *
 * All of them are "dribbles" after the region, sorted by tag: rpm's headerExport orders them so.
 */

/** When a package was installed. */
export interface RpmInstallStamp {
  /** INSTALLTIME: unix seconds. */
  time: number;
  /** INSTALLTID: the transaction id; rpm uses the transaction's start time. */
  tid: number;
  /**
   * INSTALLCOLOR: the transaction color (`%_transaction_color`: 3 on 64-bit multilib
   * architectures, 0 elsewhere); default 0. `rpmTransactionColor` says what the image's rpm uses.
   */
  color?: number;
}

/** A file's state once the transaction is done (RPMFILE_STATE_* in include/rpm/rpmfi.h). */
export type RpmFileState = "normal" | "replaced" | "notinstalled" | "netshared" | "wrongcolor";

const FILE_STATE_VALUES: Readonly<Record<RpmFileState, number>> = {
  normal: 0,
  replaced: 1,
  notinstalled: 2,
  netshared: 3,
  wrongcolor: 4,
};

/** The FILESTATES value of each state (what `rpm -q --qf '[%{FILESTATES}\n]'` prints). */
export function rpmFileStateValue(state: RpmFileState): number {
  return FILE_STATE_VALUES[state];
}

/** A signature header tag rpm copies into the main header, under the main header's tag (xlateTags). */
interface MergedSignatureTag {
  sigTag: number;
  tag: number;
  /** The type rpm's tag table gives `tag`; another type makes rpm refuse the package. */
  type: number;
  /** The element count the tag must have; 0 for any. */
  count: number;
  /** A tag that may be in either header (never both): the main header's one is kept. */
  quirk: boolean;
}

const RPMTAG_FILESIGNATURES = 5090;
const RPMTAG_FILESIGNATURELENGTH = 5091;
const RPMTAG_SOURCEPACKAGE = 1106;

/** rpm 4.18's xlateTags (lib/package.c), in its order. */
const MERGED_SIGNATURE_TAGS: readonly MergedSignatureTag[] = [
  { sigTag: RpmSigTag.SIZE, tag: RpmTag.SIGSIZE, type: RpmType.INT32, count: 1, quirk: false },
  { sigTag: RpmSigTag.PGP, tag: RpmTag.SIGPGP, type: RpmType.BIN, count: 0, quirk: false },
  { sigTag: RpmSigTag.MD5, tag: RpmTag.SIGMD5, type: RpmType.BIN, count: 16, quirk: false },
  { sigTag: RpmSigTag.GPG, tag: RpmTag.SIGGPG, type: RpmType.BIN, count: 0, quirk: false },
  { sigTag: RpmSigTag.PAYLOADSIZE, tag: RpmTag.ARCHIVESIZE, type: RpmType.INT32, count: 1, quirk: true },
  {
    sigTag: RpmSigTag.FILESIGNATURES,
    tag: RPMTAG_FILESIGNATURES,
    type: RpmType.STRING_ARRAY,
    count: 0,
    quirk: true,
  },
  {
    sigTag: RpmSigTag.FILESIGNATURELENGTH,
    tag: RPMTAG_FILESIGNATURELENGTH,
    type: RpmType.INT32,
    count: 1,
    quirk: true,
  },
  {
    sigTag: RpmSigTag.VERITYSIGNATURES,
    tag: RpmTag.VERITYSIGNATURES,
    type: RpmType.STRING_ARRAY,
    count: 0,
    quirk: false,
  },
  {
    sigTag: RpmSigTag.VERITYSIGNATUREALGO,
    tag: RpmTag.VERITYSIGNATUREALGO,
    type: RpmType.INT32,
    count: 1,
    quirk: false,
  },
  { sigTag: RpmSigTag.SHA1, tag: RpmTag.SHA1HEADER, type: RpmType.STRING, count: 1, quirk: false },
  { sigTag: RpmSigTag.SHA256, tag: RpmTag.SHA256HEADER, type: RpmType.STRING, count: 1, quirk: false },
  { sigTag: RpmSigTag.DSA, tag: RpmTag.DSAHEADER, type: RpmType.BIN, count: 0, quirk: false },
  { sigTag: RpmSigTag.RSA, tag: RpmTag.RSAHEADER, type: RpmType.BIN, count: 0, quirk: false },
  { sigTag: RpmSigTag.LONGSIZE, tag: RpmTag.LONGSIGSIZE, type: RpmType.INT64, count: 1, quirk: false },
  {
    sigTag: RpmSigTag.LONGARCHIVESIZE,
    tag: RpmTag.LONGARCHIVESIZE,
    type: RpmType.INT64,
    count: 1,
    quirk: false,
  },
];

/** Tags rpm adds at install time: a package that carries them already is not one rpm built. */
const INSTALL_TIME_TAGS = [
  RpmTag.INSTALLTIME,
  RpmTag.INSTALLTID,
  RpmTag.INSTALLCOLOR,
  RpmTag.FILESTATES,
  RpmTag.INSTPREFIXES,
];

const FIX = "the package was not built by rpm or was altered; use the distribution's own package";

/**
 * The header blob rpm's database stores for `pkg` once installed: its immutable region as in
 * the .rpm, plus the tags rpm adds (the signature header's digests, INSTPREFIXES, FILESTATES,
 * INSTALLTID, INSTALLTIME, INSTALLCOLOR). `fileStates` has one state per file of the header,
 * in its order. A package rpm itself would refuse to install (a signature tag of the wrong type,
 * one in both headers, install-time tags in the package) is an INVALID_ARCHIVE naming it.
 */
export function installedRpmHeader(
  pkg: RpmPackage,
  stamp: RpmInstallStamp,
  fileStates: readonly RpmFileState[],
): Uint8Array {
  const header = pkg.header;
  const what = `${formatRpmNevra(pkg.nevra)} (${pkg.path})`;
  if (fileStates.length !== pkg.files.length) {
    throw new SutureError(
      "INTERNAL",
      `${what}: ${fileStates.length} file states for ${pkg.files.length} files`,
    );
  }
  for (const tag of INSTALL_TIME_TAGS) {
    if (header.has(tag))
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${what} carries install-time tag ${tag} in its header; ${FIX}`,
      );
  }
  if (header.has(RpmTag.OLDFILENAMES)) {
    // rpm rewrites such a file list on the fly (HEADERCONV_COMPRESSFILELIST); no rpm of this
    // century builds one, so suture does not.
    throw new SutureError(
      "UNSUPPORTED_OS",
      `${what} lists its files as rpm 3 did (OLDFILENAMES); the native engine installs packages built by rpm 4 or later: use --engine sandbox`,
    );
  }

  const additions: RpmHeaderAddition[] = [...mergedSignatureTags(header, pkg.signatureHeader, what)];
  if (!header.has(RpmTag.SOURCERPM) && !header.has(RPMTAG_SOURCEPACKAGE)) {
    additions.push(rpmStringAddition(RpmTag.SOURCERPM, "(none)"));
  }
  const prefixes = rpmHeaderRawEntry(header, RpmTag.PREFIXES);
  if (prefixes !== undefined) additions.push({ tag: RpmTag.INSTPREFIXES, ...prefixes });
  if (fileStates.length > 0) {
    additions.push(rpmCharAddition(RpmTag.FILESTATES, fileStates.map(rpmFileStateValue)));
  }
  additions.push(rpmInt32Addition(RpmTag.INSTALLTID, [stamp.tid]));
  additions.push(rpmInt32Addition(RpmTag.INSTALLTIME, [stamp.time]));
  additions.push(rpmInt32Addition(RpmTag.INSTALLCOLOR, [stamp.color ?? 0]));
  return exportRpmHeader(header, additions);
}

/** headerMergeLegacySigs: the signature header's tags rpm copies into the main header. */
function mergedSignatureTags(header: RpmHeader, sig: RpmHeader, what: string): RpmHeaderAddition[] {
  const refuse = (tag: number, detail: string) =>
    new SutureError("INVALID_ARCHIVE", `${what} has an invalid signature tag ${tag} (${detail}); ${FIX}`);
  for (const m of MERGED_SIGNATURE_TAGS) {
    if (!header.has(m.tag)) continue;
    if (m.quirk && !sig.has(m.sigTag)) continue;
    throw refuse(m.tag, "it is in both the signature header and the main header");
  }
  const out: RpmHeaderAddition[] = [];
  for (const m of MERGED_SIGNATURE_TAGS) {
    const raw = rpmHeaderRawEntry(sig, m.sigTag);
    if (raw === undefined) continue;
    if (raw.type !== m.type) throw refuse(m.tag, `type ${raw.type}, not ${m.type}`);
    if (raw.count < 1 || raw.count > 16 * 1024 * 1024 || (m.count !== 0 && raw.count !== m.count))
      throw refuse(m.tag, `${raw.count} elements`);
    out.push({ tag: m.tag, ...raw });
  }
  return out;
}

/**
 * The transaction color the image's rpm installs with: the INSTALLCOLOR of its most recently
 * installed package, or, in a database without one, what rpm's platform macros set for `arch`
 * (3 on 64-bit architectures with multilib, 0 elsewhere).
 */
export function rpmTransactionColor(installed: readonly InstalledRpm[], arch: string): number {
  let newest: { tid: number; color: number } | undefined;
  for (const pkg of installed) {
    const color = pkg.header?.number(RpmTag.INSTALLCOLOR);
    const tid = pkg.header?.number(RpmTag.INSTALLTID) ?? 0;
    if (color !== undefined && (newest === undefined || tid >= newest.tid)) newest = { tid, color };
  }
  if (newest !== undefined) return newest.color;
  return MULTILIB_ARCHES.has(arch) ? 3 : 0;
}

const MULTILIB_ARCHES = new Set([
  "x86_64",
  "amd64",
  "ia32e",
  "aarch64",
  "ppc64",
  "ppc64le",
  "s390x",
  "riscv64",
  "loongarch64",
  "mips64",
  "mips64el",
]);

/**
 * An installed package's header with some of its files' states changed (index in the header's
 * file list → new state), as rpm's markReplacedFiles (lib/psm.c) rewrites the header of a package
 * that keeps its place in the database while a package installed after it took over some of its
 * files (the FILESTATES bytes change in place; nothing else does). A header without FILESTATES
 * is returned as it is, as rpm leaves it.
 */
export function rpmHeaderWithFileStates(
  header: RpmHeader,
  states: ReadonlyMap<number, RpmFileState>,
): Uint8Array {
  const blob = Uint8Array.from(header.blob);
  const raw = rpmHeaderRawEntry(header, RpmTag.FILESTATES);
  if (raw === undefined) return blob;
  if (raw.type !== RpmType.CHAR && raw.type !== RpmType.INT8) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `an installed package's FILESTATES has type ${raw.type}, not CHAR; rebuild the rpm database in the image (rpmdb --rebuilddb)`,
    );
  }
  const at = raw.data.byteOffset - header.blob.byteOffset;
  for (const [index, state] of states) {
    if (!Number.isInteger(index) || index < 0 || index >= raw.count) {
      throw new SutureError("INTERNAL", `file ${index} is not one of the package's ${raw.count} files`);
    }
    blob[at + index] = rpmFileStateValue(state);
  }
  return blob;
}
