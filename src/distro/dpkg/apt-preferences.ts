import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { type AptLocations, aptReadsPart } from "./apt-conf.ts";
import { field, parseControl } from "./control.ts";
import type { ImageFileAccess } from "./sources.ts";

/** apt's "never" priority (`Pin-Priority: never`, and the floor of the range). */
export const NEVER_PIN = -32768;

/** One record of apt_preferences(5). */
export interface AptPin {
  /**
   * The `Package:` words (names, `src:NAME`, `NAME:ARCH`, globs, `/regex/`); undefined for
   * `Package: *`, which makes the pin apply to whole package files (a "default" pin).
   */
  packages?: string[];
  type: "version" | "source-version" | "release" | "origin";
  /** What follows the type word in `Pin:` (`2.6.1*`, `a=bookworm-backports,c=main`, `deb.debian.org`). */
  data: string;
  priority: number;
  /** File it came from, for messages. */
  file: string;
}

/**
 * Parse one preferences file as apt's ReadPinFile does: records with `Package`, `Pin` and
 * `Pin-Priority`; `#` comment lines; a record without `Pin` is ignored; an unknown pin type
 * (and `version` with `Package: *`) is ignored with a warning, as apt warns and goes on.
 * Throws INVALID_MANIFEST for what apt refuses (and then runs no command at all): a record without
 * `Package`, a zero or missing priority, one outside −32768…32767, `never` on a named package.
 */
export function parseAptPreferences(
  text: string,
  file = "preferences",
  warn?: (message: string) => void,
): AptPin[] {
  const out: AptPin[] = [];
  const refuse = (what: string) =>
    new SutureError(
      "INVALID_MANIFEST",
      `${file}: ${what}; apt refuses this file too: fix the image's apt preferences`,
    );
  for (const record of parseControl(text)) {
    const name = field(record, "Package")?.trim();
    if (!name) throw refuse("a record has no Package field");
    const pin = field(record, "Pin")?.trim();
    if (pin === undefined) continue;
    const m = /^(\S+)\s*([\s\S]*)$/.exec(pin);
    const typeWord = (m?.[1] ?? "").toLowerCase();
    const data = (m?.[2] ?? "").trim();
    const all = name === "*";
    let type: AptPin["type"];
    if ((typeWord === "version" || typeWord === "source-version") && !all) type = typeWord;
    else if (typeWord === "release" || typeWord === "origin") type = typeWord;
    else {
      warn?.(`${file}: apt does not understand pin type "${m?.[1] ?? ""}"; the record is ignored`);
      continue;
    }
    const raw = field(record, "Pin-Priority")?.trim() ?? "";
    let priority: number;
    if (raw === "never") {
      if (!all) throw refuse(`"Pin-Priority: never" is only allowed with "Package: *" (found with ${name})`);
      priority = NEVER_PIN;
    } else if (/^[+-]?\d+$/.test(raw)) {
      priority = Number(raw);
      if (priority < NEVER_PIN || priority > 32767) {
        throw refuse(`Pin-Priority ${raw} is outside the valid range (-32768 to 32767)`);
      }
      // Only the word "never" means never; a number at the floor is one above it, as in apt.
      if (priority === NEVER_PIN) priority = NEVER_PIN + 1;
    } else if (raw === "") priority = 0;
    else throw refuse(`Pin-Priority "${raw}" is not a number`);
    if (priority === 0) throw refuse(`the pin for ${name} has no priority (or zero)`);
    out.push({
      ...(all ? {} : { packages: name.split(/\s+/).filter(Boolean) }),
      type,
      data,
      priority,
      file,
    });
  }
  return out;
}

/**
 * The image's pins, in apt's order: `Dir::Etc::Preferences` (/etc/apt/preferences), then the
 * accepted files of `Dir::Etc::PreferencesParts` (/etc/apt/preferences.d: `*.pref` or no
 * extension) by name.
 */
export async function readAptPreferences(
  files: ImageFileAccess,
  locations: Pick<AptLocations, "preferences" | "preferencesParts">,
  warn?: (message: string) => void,
): Promise<AptPin[]> {
  const out: AptPin[] = [];
  const read = async (path: string) => {
    const bytes = await files.readFile(path);
    if (bytes) out.push(...parseAptPreferences(Buffer.from(bytes).toString("utf8"), path, warn));
  };
  await read(locations.preferences);
  for (const name of await files.listDir(locations.preferencesParts)) {
    if (aptReadsPart(name, ["pref", ""])) await read(`${locations.preferencesParts}/${name}`);
  }
  return out;
}

/**
 * apt's ExpressionMatches: `/regex/` is an extended regular expression, anything else a glob
 * (fnmatch without FNM_PATHNAME); both ignore case.
 */
export function aptExpressionMatches(pattern: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  if (pattern.length >= 2 && pattern.startsWith("/") && pattern.endsWith("/")) {
    const source = pattern.slice(1, -1);
    checkRegexCost(source, pattern);
    try {
      return new RegExp(source, "i").test(value);
    } catch {
      return false;
    }
  }
  return globToRegExp(pattern).test(value);
}

/**
 * The image writes these patterns, and JavaScript's regex engine backtracks: a nested repetition
 * (`(a+)+`), a backreference or a very long pattern can make one match take hours. apt's POSIX
 * engine does not have that problem, so rather than hang, such a pin is refused in one line.
 */
function checkRegexCost(source: string, pattern: string): void {
  const nestedRepetition = /\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)\s*[*+{?]/;
  if (source.length > 256 || nestedRepetition.test(source) || /\\[1-9]/.test(source))
    throw new SutureError(
      "UNSUPPORTED_OS",
      `the image's apt preferences use the pattern ${quoteUntrusted(pattern)}, which suture does not evaluate (nested repetition, a backreference or over 256 characters can take exponential time): simplify the pin, or patch with --engine sandbox`,
    );
}

const globCache = new Map<string, RegExp>();

function globToRegExp(glob: string): RegExp {
  let re = globCache.get(glob);
  if (re) return re;
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") out += ".*";
    else if (c === "?") out += ".";
    else if (c === "\\" && i + 1 < glob.length) out += escapeRegExp(glob[++i]!);
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) out += "\\[";
      else {
        let set = glob.slice(i + 1, end);
        if (set.startsWith("!")) set = `^${set.slice(1)}`;
        out += `[${set.replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else out += escapeRegExp(c);
  }
  re = new RegExp(`^${out}$`, "is");
  globCache.set(glob, re);
  return re;
}

function escapeRegExp(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** What a pin of type `release` or `origin` is matched against: one package file (index) of a suite. */
export interface PinnableFile {
  /** `Suite` (apt's "archive", `a=`); `now` for the dpkg status file. */
  archive?: string;
  codename?: string;
  origin?: string;
  label?: string;
  version?: string;
  component?: string;
  architecture?: string;
  /** Host of the repository URI (`Pin: origin`); empty for local files. */
  site?: string;
  /** The dpkg status file, which has no Release file. */
  status?: boolean;
}

/** A parsed `Pin: release …` / `Pin: origin …` / `Pin: version …` specification (apt's pkgVersionMatch). */
export class PinMatcher {
  readonly #type: AptPin["type"];
  #matchAll = false;
  #verStr = "";
  #verPrefix = false;
  #rel: {
    version?: string;
    versionPrefix?: boolean;
    origin?: string;
    archive?: string;
    codename?: string;
    release?: string;
    label?: string;
    component?: string;
    architecture?: string;
  } = {};
  #site?: string;

  constructor(type: AptPin["type"], data: string) {
    this.#type = type;
    if (!data) return;
    if (type === "version" || type === "source-version") {
      this.#verPrefix = data.endsWith("*");
      this.#verStr = this.#verPrefix ? data.slice(0, -1) : data;
      return;
    }
    if (type === "origin") {
      this.#site = data.length >= 2 && data.startsWith('"') && data.endsWith('"') ? data.slice(1, -1) : data;
      return;
    }
    if (data === "*") {
      this.#matchAll = true;
      return;
    }
    if (!data.includes("=")) {
      // The short form: a version number (`12*`) or a suite/codename.
      if (/^\d/.test(data)) this.#rel.version = data;
      else this.#rel.release = data;
    } else {
      for (const fragment of data.split(",").map((f) => f.trim())) {
        if (fragment.length < 3 || fragment[1] !== "=") continue;
        const v = fragment.slice(2);
        switch (fragment[0]!.toLowerCase()) {
          case "v":
            this.#rel.version = v;
            break;
          case "o":
            this.#rel.origin = v;
            break;
          case "a":
            this.#rel.archive = v;
            break;
          case "n":
            this.#rel.codename = v;
            break;
          case "l":
            this.#rel.label = v;
            break;
          case "c":
            this.#rel.component = v;
            break;
          case "b":
            this.#rel.architecture = v;
            break;
        }
      }
    }
    if (this.#rel.version?.endsWith("*")) {
      this.#rel.versionPrefix = true;
      this.#rel.version = this.#rel.version.slice(0, -1);
    }
  }

  get type(): AptPin["type"] {
    return this.#type;
  }

  /** Whether a version string matches a `version` pin: a (prefix) string match or an expression. */
  versionMatches(version: string): boolean {
    return matchVer(version, this.#verStr, this.#verPrefix) || aptExpressionMatches(this.#verStr, version);
  }

  /** Whether a package file matches a `release` or `origin` pin (apt's FileMatch). */
  fileMatches(f: PinnableFile): boolean {
    const r = this.#rel;
    if (this.#type === "origin") {
      if (f.status) return false;
      return aptExpressionMatches(this.#site ?? "", f.site ?? "");
    }
    if (this.#type !== "release") return false;
    if (f.status) {
      // The status file has no Release: only `a=now`/`now` (and `*`) can name it.
      if (this.#matchAll) return true;
      if (r.archive !== undefined && !aptExpressionMatches(r.archive, "now")) return false;
      if (r.release !== undefined && !aptExpressionMatches(r.release, "now")) return false;
      if (
        r.origin !== undefined ||
        r.label !== undefined ||
        r.version !== undefined ||
        r.codename !== undefined
      )
        return false;
      if (r.component !== undefined && !aptExpressionMatches(r.component, "now")) return false;
      return r.architecture === undefined;
    }
    if (this.#matchAll) return true;
    if (Object.values(r).every((v) => v === undefined || typeof v === "boolean")) return false;
    if (
      r.version !== undefined &&
      !(f.version !== undefined && matchVer(f.version, r.version, r.versionPrefix ?? false)) &&
      !aptExpressionMatches(r.version, f.version)
    )
      return false;
    if (r.origin !== undefined && !aptExpressionMatches(r.origin, f.origin)) return false;
    if (r.archive !== undefined && !aptExpressionMatches(r.archive, f.archive)) return false;
    if (r.codename !== undefined && !aptExpressionMatches(r.codename, f.codename)) return false;
    if (
      r.release !== undefined &&
      !aptExpressionMatches(r.release, f.archive) &&
      !aptExpressionMatches(r.release, f.codename)
    )
      return false;
    if (r.label !== undefined && !aptExpressionMatches(r.label, f.label)) return false;
    if (r.component !== undefined && !aptExpressionMatches(r.component, f.component)) return false;
    if (r.architecture !== undefined && !aptExpressionMatches(r.architecture, f.architecture)) return false;
    return true;
  }
}

/** apt's MatchVer: equal, or (with a trailing `*`) a prefix, ignoring case. */
function matchVer(value: string, wanted: string, prefix: boolean): boolean {
  if (prefix ? value.length < wanted.length : value.length !== wanted.length) return false;
  return value.slice(0, wanted.length).toLowerCase() === wanted.toLowerCase();
}

/**
 * Whether a `Package:` word of a pin names this binary package (`source`: its source package's
 * name; `arch`: the native architecture for `all` packages, as apt files them). Words: `NAME`,
 * `NAME:ARCH`, `src:NAME`, globs and `/regex/` (matched against names).
 */
export function pinNamesPackage(word: string, pkg: { name: string; source: string; arch: string }): boolean {
  let w = word;
  const sourcePin = w.startsWith("src:");
  if (sourcePin) w = w.slice(4);
  const colon = w.lastIndexOf(":");
  if (colon >= 0) {
    const arch = w.slice(colon + 1);
    w = w.slice(0, colon);
    if (arch !== pkg.arch && arch !== "any") return false;
  }
  const target = sourcePin ? pkg.source : pkg.name;
  if (w.length >= 2 && w.startsWith("/") && w.endsWith("/")) return aptExpressionMatches(w, target);
  if (/[*[?]/.test(w)) return aptExpressionMatches(w, target);
  return w === target;
}
