import { posix } from "node:path";
import { SutureError } from "../../errors/errors.ts";
import { fnmatchRegExp } from "../../fs/fnmatch.ts";
import { listDirInRoot, readFileInRoot } from "../../fs/in-root.ts";

/**
 * The image's dpkg configuration (`/etc/dpkg/dpkg.cfg.d/*`, then `/etc/dpkg/dpkg.cfg`), as far as
 * it changes what an unpack leaves in the tree. dpkg reads these files before its command line on
 * every run, so the image's own dpkg (and apt, in the sandbox engine) honours them; the native
 * unpacker has to as well, or it brings back the docs, man pages and locales that slim images
 * exclude.
 */
export interface DpkgConfig {
  /** `path-exclude`/`path-include` rules in the order dpkg applies them (the last match wins). */
  readonly pathFilter: PathFilter;
  /** `force-…` options in effect after `refuse-…`/`no-force-…` (dpkg's names, `all` included). */
  readonly force: ReadonlySet<string>;
  /**
   * Options that would change the result but that the native unpacker does not apply
   * (`file:line option`), e.g. `force-confnew` or `instdir`: callers say so to the user.
   */
  readonly unhonoured: readonly string[];
}

export interface PathRule {
  readonly pattern: string;
  readonly include: boolean;
}

export const CONFIG_DIR = "/etc/dpkg/dpkg.cfg.d";
export const CONFIG_FILE = "/etc/dpkg/dpkg.cfg";

/**
 * Options that change what dpkg leaves on disk or records, beyond the path filters: the native
 * engine always unpacks into `/` with `/var/lib/dpkg` and takes conffile decisions as
 * `--force-confold --force-confdef`, so an image configured otherwise is told.
 */
const UNHONOURED_OPTIONS = new Set(["root", "instdir", "admindir"]);
const UNHONOURED_FORCE = new Set(["confnew", "confmiss", "confask", "all"]);

/** dpkg's rule for names in dpkg.cfg.d: no leading dot, only [A-Za-z0-9_-] (editor backups and `.dpkg-dist` are skipped). */
export function isConfigFileName(name: string): boolean {
  return /^[A-Za-z0-9_-]+$/.test(name);
}

/**
 * The configuration files dpkg reads, in its order: the valid names of dpkg.cfg.d sorted bytewise
 * (alphasort in the C locale images run dpkg in), then dpkg.cfg. `$HOME/.dpkg.cfg` is not read:
 * it depends on the environment dpkg is run in, and images do not carry one.
 */
export function configFileOrder(dirEntries: readonly string[]): string[] {
  const names = dirEntries.filter(isConfigFileName).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return [...names.map((n) => posix.join(CONFIG_DIR, n)), CONFIG_FILE];
}

/** Read the image's dpkg configuration below `root` (paths resolved inside the root). */
export async function readDpkgConfig(root: string): Promise<DpkgConfig> {
  const files: { name: string; text: string }[] = [];
  for (const path of configFileOrder(await listDirInRoot(root, CONFIG_DIR))) {
    const bytes = await readFileInRoot(root, path);
    if (bytes) files.push({ name: path, text: bytes.toString("utf8") });
  }
  return parseDpkgConfig(files);
}

/**
 * Parse configuration files in the order given, as dpkg's option loader does: one long option a
 * line without `--`, `name value`, `name=value` or `name = value`, the value optionally in matching
 * quotes; trailing blanks are dropped, and lines starting with `#` and empty lines are skipped
 * (a `#` later in the line is part of the value). Lines dpkg itself would stop on (a path option
 * without a value, unbalanced quotes) are PATCH_FAILED naming the file and line: the image's dpkg
 * cannot run with them either. Options suture does not know are left to dpkg.
 */
export function parseDpkgConfig(files: readonly { name: string; text: string }[]): DpkgConfig {
  const rules: PathRule[] = [];
  /** Forced things in effect, with the line that last set them. */
  const force = new Map<string, string>();
  const unhonoured: string[] = [];
  for (const file of files) {
    const lines = file.text.split("\n");
    // A final newline does not start another line.
    if (lines.at(-1) === "") lines.pop();
    for (const [i, raw] of lines.entries()) {
      const where = `${file.name}:${i + 1}`;
      const fail = (why: string) =>
        new SutureError(
          "PATCH_FAILED",
          `the image's dpkg configuration is invalid at ${where}: ${why}; dpkg in the image stops on it too, so fix or remove that line in the image`,
        );
      const line = raw.replace(/[ \t\n\v\f\r]+$/, "");
      if (line === "" || line.startsWith("#")) continue;
      const name = /^[A-Za-z0-9-]*/.exec(line)![0];
      let value: string | undefined;
      if (name.length < line.length) {
        // dpkg ends the name at the first other character, drops it, then an `=` and blanks.
        let rest = line.slice(name.length + 1);
        if (rest.startsWith("=")) rest = rest.slice(1);
        rest = rest.replace(/^[ \t\n\v\f\r]+/, "");
        if (rest.startsWith('"') || rest.startsWith("'")) {
          if (rest.at(-1) !== rest[0]) throw fail(`unbalanced quotes in ${JSON.stringify(line)}`);
          rest = rest.slice(1, -1);
        }
        value = rest;
      }
      if (name === "path-exclude" || name === "path-include") {
        if (value === undefined) throw fail(`'${name}' needs a value`);
        rules.push({ pattern: value, include: name === "path-include" });
        continue;
      }
      const forceMatch = /^(force|refuse|no-force)-(.+)$/.exec(name);
      if (forceMatch && value === undefined) {
        // `force-confold` is `force` with its value glued on by `-`; dpkg only takes that form
        // without a separate value (`force-confold,confdef` stops at the comma and is an error).
        applyForce(force, forceMatch[1] === "force", forceMatch[2]!, where);
        continue;
      }
      if ((name === "force" || name === "refuse" || name === "no-force") && value !== undefined)
        applyForce(force, name === "force", value, where);
      else if (UNHONOURED_OPTIONS.has(name)) unhonoured.push(`${where} ${name}`);
    }
  }
  for (const [thing, where] of force)
    if (UNHONOURED_FORCE.has(thing)) unhonoured.push(`${where} force-${thing}`);
  return { pathFilter: new PathFilter(rules), force: new Set(force.keys()), unhonoured };
}

/** `force-a,b` adds a and b (from `where`); `refuse-`/`no-force-` takes them away again. */
function applyForce(force: Map<string, string>, set: boolean, list: string, where: string): void {
  for (const thing of list.split(",")) {
    force.delete(thing);
    if (set) force.set(thing, where);
  }
}

/** What kind of archive entry a path is, as far as the filters care. */
export type FilteredEntryType = "directory" | "symlink" | "other";

/**
 * dpkg's `--path-exclude`/`--path-include` filter. Every rule is matched against the entry's
 * absolute path with fnmatch(3) without flags (`*` also matches `/`), and the last matching rule
 * decides. An excluded directory or symlink is still unpacked when some include rule's leading
 * literal part (up to its first wildcard, trailing slashes dropped) is a prefix of its path: it may
 * lead to an included file. dpkg compares plain prefixes there, so it keeps a few more directories
 * (and symlinks) than strictly needed; so does this.
 */
export class PathFilter {
  readonly rules: readonly PathRule[];
  readonly #compiled: { regexp: RegExp; include: boolean }[];
  readonly #includePrefixes: string[];

  constructor(rules: readonly PathRule[]) {
    this.rules = rules;
    this.#compiled = rules.map((r) => ({ regexp: fnmatchRegExp(r.pattern), include: r.include }));
    this.#includePrefixes = rules
      .filter((r) => r.include)
      .map((r) => {
        const wildcard = r.pattern.search(/[*?[\\]/);
        return (wildcard < 0 ? r.pattern : r.pattern.slice(0, wildcard)).replace(/\/+$/, "");
      });
  }

  /** Whether any rule is configured (an empty filter keeps everything). */
  get active(): boolean {
    return this.rules.length > 0;
  }

  /**
   * Whether dpkg skips this entry. `path` is the package path as recorded in the `.list` file
   * (`/usr/share/doc/x`; the archive's root is `/.`, which dpkg matches as the empty string).
   */
  skips(path: string, type: FilteredEntryType): boolean {
    if (!this.#compiled.length) return false;
    const name = path === "/." ? "" : path;
    let skip = false;
    for (const rule of this.#compiled) if (rule.regexp.test(name)) skip = !rule.include;
    if (skip && (type === "directory" || type === "symlink"))
      if (this.#includePrefixes.some((prefix) => name.startsWith(prefix))) return false;
    return skip;
  }
}
