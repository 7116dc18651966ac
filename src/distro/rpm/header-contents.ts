import { SutureError } from "../../errors/errors.ts";
import { type RpmHeader, RpmTag } from "./header.ts";

/**
 * What a header says about a package's files, dependencies and scriptlets, assembled from rpm's
 * parallel arrays (rpmfiles, rpmds and rpmscript in rpm's lib/). Arrays that must be parallel are
 * checked to be, so a hostile header cannot make an index point past an array.
 */

export interface RpmFileEntry {
  /** Absolute path as rpm records it (DIRNAMES[DIRINDEXES[i]] + BASENAMES[i]). */
  path: string;
  /** The path's bytes, for names that are not UTF-8. */
  pathBytes: Uint8Array;
  mode: number;
  /** LONGFILESIZES when the header has it (files of 4 GiB and more), FILESIZES otherwise. */
  size: number;
  /** RpmFileFlag bits: config, noreplace, ghost, doc, license, … */
  flags: number;
  /** Hex digest of a regular file's content, in FILEDIGESTALGO's algorithm; "" for others. */
  digest: string;
  /** A symlink's target; "" for others. */
  linkTo: string;
  user: string;
  group: string;
  mtime: number;
  rdev: number;
  /** `getcap`-style capabilities text; "" when none. */
  caps: string;
  /** FILESTATES of an installed package (RPMFILE_STATE_*: 0 normal, 1 replaced, 2 not installed, 3 net-shared, 4 wrong color); undefined in a package file. */
  state?: number;
}

const FIX = "the package header is damaged or hostile; use an intact package or rebuild the rpm database";

function invalid(what: string, detail: string): SutureError {
  return new SutureError("INVALID_ARCHIVE", `the rpm header of ${what} is inconsistent: ${detail}; ${FIX}`);
}

/** Every file a header lists, in its order. `what` names the header in errors. */
export function rpmHeaderFiles(header: RpmHeader, what: string): RpmFileEntry[] {
  let paths: Uint8Array[];
  if (header.has(RpmTag.BASENAMES)) {
    const base = header.stringArrayBytes(RpmTag.BASENAMES);
    const dirs = header.stringArrayBytes(RpmTag.DIRNAMES);
    const index = header.numberArray(RpmTag.DIRINDEXES);
    if (index.length !== base.length) {
      throw invalid(what, `${base.length} BASENAMES but ${index.length} DIRINDEXES`);
    }
    paths = base.map((b, i) => {
      const dir = dirs[index[i]!];
      if (dir === undefined) throw invalid(what, `file ${i} names directory ${index[i]} of ${dirs.length}`);
      const joined = new Uint8Array(dir.length + b.length);
      joined.set(dir);
      joined.set(b, dir.length);
      return joined;
    });
  } else {
    // Headers before rpm 4.0 list whole paths.
    paths = header.stringArrayBytes(RpmTag.OLDFILENAMES);
  }
  const n = paths.length;
  const numbers = (tag: number, name: string): number[] => {
    const values = header.numberArray(tag);
    if (values.length !== 0 && values.length !== n)
      throw invalid(what, `${n} files but ${values.length} ${name}`);
    return values;
  };
  const strings = (tag: number, name: string): string[] => {
    const values = header.stringArray(tag);
    if (values.length !== 0 && values.length !== n)
      throw invalid(what, `${n} files but ${values.length} ${name}`);
    return values;
  };
  const modes = numbers(RpmTag.FILEMODES, "FILEMODES");
  const sizes = header.has(RpmTag.LONGFILESIZES)
    ? numbers(RpmTag.LONGFILESIZES, "LONGFILESIZES")
    : numbers(RpmTag.FILESIZES, "FILESIZES");
  const flags = numbers(RpmTag.FILEFLAGS, "FILEFLAGS");
  const mtimes = numbers(RpmTag.FILEMTIMES, "FILEMTIMES");
  const rdevs = numbers(RpmTag.FILERDEVS, "FILERDEVS");
  const states = numbers(RpmTag.FILESTATES, "FILESTATES");
  const digests = strings(RpmTag.FILEDIGESTS, "FILEDIGESTS");
  const links = strings(RpmTag.FILELINKTOS, "FILELINKTOS");
  const users = strings(RpmTag.FILEUSERNAME, "FILEUSERNAME");
  const groups = strings(RpmTag.FILEGROUPNAME, "FILEGROUPNAME");
  const caps = strings(RpmTag.FILECAPS, "FILECAPS");
  const utf8 = new TextDecoder("utf-8", { fatal: false });
  return paths.map((pathBytes, i) => ({
    path: utf8.decode(pathBytes),
    pathBytes,
    mode: modes[i] ?? 0,
    size: sizes[i] ?? 0,
    flags: flags[i] ?? 0,
    digest: digests[i] ?? "",
    linkTo: links[i] ?? "",
    user: users[i] ?? "",
    group: groups[i] ?? "",
    mtime: mtimes[i] ?? 0,
    rdev: rdevs[i] ?? 0,
    caps: caps[i] ?? "",
    ...(states.length === 0 ? {} : { state: states[i]! }),
  }));
}

export type RpmDependencyKind =
  | "require"
  | "provide"
  | "conflict"
  | "obsolete"
  | "recommend"
  | "suggest"
  | "supplement"
  | "enhance";

const DEPENDENCY_TAGS: Record<RpmDependencyKind, readonly [name: number, flags: number, version: number]> = {
  require: [RpmTag.REQUIRENAME, RpmTag.REQUIREFLAGS, RpmTag.REQUIREVERSION],
  provide: [RpmTag.PROVIDENAME, RpmTag.PROVIDEFLAGS, RpmTag.PROVIDEVERSION],
  conflict: [RpmTag.CONFLICTNAME, RpmTag.CONFLICTFLAGS, RpmTag.CONFLICTVERSION],
  obsolete: [RpmTag.OBSOLETENAME, RpmTag.OBSOLETEFLAGS, RpmTag.OBSOLETEVERSION],
  recommend: [RpmTag.RECOMMENDNAME, RpmTag.RECOMMENDFLAGS, RpmTag.RECOMMENDVERSION],
  suggest: [RpmTag.SUGGESTNAME, RpmTag.SUGGESTFLAGS, RpmTag.SUGGESTVERSION],
  supplement: [RpmTag.SUPPLEMENTNAME, RpmTag.SUPPLEMENTFLAGS, RpmTag.SUPPLEMENTVERSION],
  enhance: [RpmTag.ENHANCENAME, RpmTag.ENHANCEFLAGS, RpmTag.ENHANCEVERSION],
};

export interface RpmDependency {
  /** A package or capability name, a file path, or a rich dependency `(a or b)`. */
  name: string;
  /** RpmSense bits: LESS/GREATER/EQUAL (SENSEMASK) and the context (pre, rpmlib, …). */
  flags: number;
  /** `[epoch:]version[-release]`; "" when unversioned. */
  version: string;
}

/** A header's dependencies of one kind, in its order. */
export function rpmHeaderDependencies(
  header: RpmHeader,
  kind: RpmDependencyKind,
  what: string,
): RpmDependency[] {
  const [nameTag, flagsTag, versionTag] = DEPENDENCY_TAGS[kind];
  const names = header.stringArray(nameTag);
  const flags = header.numberArray(flagsTag);
  const versions = header.stringArray(versionTag);
  for (const [values, tag] of [
    [flags, "flags"],
    [versions, "versions"],
  ] as const) {
    if (values.length !== 0 && values.length !== names.length) {
      throw invalid(what, `${names.length} ${kind} names but ${values.length} ${tag}`);
    }
  }
  return names.map((name, i) => ({ name, flags: flags[i] ?? 0, version: versions[i] ?? "" }));
}

export type RpmScriptletKind =
  | "pretrans"
  | "pre"
  | "post"
  | "preun"
  | "postun"
  | "posttrans"
  | "preuntrans"
  | "postuntrans"
  | "verify";

const SCRIPTLET_TAGS: Record<
  RpmScriptletKind,
  readonly [body: number, prog: number, flags: number | undefined]
> = {
  pretrans: [RpmTag.PRETRANS, RpmTag.PRETRANSPROG, RpmTag.PRETRANSFLAGS],
  pre: [RpmTag.PREIN, RpmTag.PREINPROG, RpmTag.PREINFLAGS],
  post: [RpmTag.POSTIN, RpmTag.POSTINPROG, RpmTag.POSTINFLAGS],
  preun: [RpmTag.PREUN, RpmTag.PREUNPROG, RpmTag.PREUNFLAGS],
  postun: [RpmTag.POSTUN, RpmTag.POSTUNPROG, RpmTag.POSTUNFLAGS],
  posttrans: [RpmTag.POSTTRANS, RpmTag.POSTTRANSPROG, RpmTag.POSTTRANSFLAGS],
  preuntrans: [RpmTag.PREUNTRANS, RpmTag.PREUNTRANSPROG, RpmTag.PREUNTRANSFLAGS],
  postuntrans: [RpmTag.POSTUNTRANS, RpmTag.POSTUNTRANSPROG, RpmTag.POSTUNTRANSFLAGS],
  verify: [RpmTag.VERIFYSCRIPT, RpmTag.VERIFYSCRIPTPROG, undefined],
};

export interface RpmScriptlet {
  kind: RpmScriptletKind;
  /** The script text; undefined for a scriptlet that is only a program (`%post -p /sbin/ldconfig`). */
  body?: string;
  /** The interpreter and its arguments (`/bin/sh`, `<lua>`, `/sbin/ldconfig`). */
  interpreter: string[];
  /** RPMSCRIPT_FLAG_* bits (macro expansion, critical, …); 0 when absent. */
  flags: number;
}

/** The scriptlets a header carries, in the order rpm runs them in one transaction. */
export function rpmHeaderScriptlets(header: RpmHeader): RpmScriptlet[] {
  const out: RpmScriptlet[] = [];
  for (const [kind, [bodyTag, progTag, flagsTag]] of Object.entries(SCRIPTLET_TAGS) as [
    RpmScriptletKind,
    (typeof SCRIPTLET_TAGS)[RpmScriptletKind],
  ][]) {
    const body = header.string(bodyTag);
    const interpreter = header.stringArray(progTag);
    if (body === undefined && interpreter.length === 0) continue;
    out.push({
      kind,
      ...(body === undefined ? {} : { body }),
      // rpm runs a body without a recorded interpreter with /bin/sh.
      interpreter: interpreter.length > 0 ? interpreter : ["/bin/sh"],
      flags: flagsTag === undefined ? 0 : (header.number(flagsTag) ?? 0),
    });
  }
  return out;
}
