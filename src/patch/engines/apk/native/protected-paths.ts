import { fnmatchRegExp } from "../../../../fs/fnmatch.ts";
import { listDirInRoot, readFileInRoot } from "../../../../fs/in-root.ts";

/**
 * apk's protected paths: directories whose files apk treats as configuration. On an upgrade, a
 * file in a protected directory that the image changed (its content no longer matches the
 * installed db's `Z:`) is kept and the package's version written beside it as `NAME.apk-new`;
 * an unchanged one is replaced. The rules are apk's built-in ones (`+etc`, `@etc/init.d`,
 * `!etc/apk`) followed by the `*.list` files of `/etc/apk/protected_paths.d/`; a rule names a
 * directory (glob per component) and later rules win.
 */

/**
 * How apk treats a directory: `none` and `ignore` install over anything; the others (`changed`,
 * `symlinks`, `all`, which differ only for `apk audit`) protect modified files.
 */
export type ProtectMode = "none" | "ignore" | "changed" | "symlinks" | "all";

interface ProtectRule {
  /** The pattern's components, relative to the root. */
  components: string[];
  mode: ProtectMode;
}

const BUILT_IN_RULES = "+etc\n@etc/init.d\n!etc/apk\n";
export const PROTECTED_PATHS_DIR = "/etc/apk/protected_paths.d";

const MODE_BY_MARK: Record<string, ProtectMode> = {
  "-": "ignore",
  "+": "changed",
  "@": "symlinks",
  "!": "all",
};

/** Parse one protected-paths list, as apk reads it: `#` comments, a mode mark, the path. */
export function parseProtectedPaths(text: string): ProtectRule[] {
  const rules: ProtectRule[] = [];
  for (const raw of text.split("\n")) {
    if (raw === "" || raw.startsWith("#")) continue;
    const mark = MODE_BY_MARK[raw[0]!];
    const path = (mark ? raw.slice(1) : raw).replace(/^\/+/, "").replace(/\/+$/, "");
    rules.push({ components: path.split("/"), mode: mark ?? "changed" });
  }
  return rules;
}

export class ProtectedPaths {
  readonly #rules: readonly ProtectRule[];
  readonly #cache = new Map<string, ProtectMode>();

  constructor(rules: readonly ProtectRule[]) {
    this.#rules = rules;
  }

  /**
   * The protection of a package directory (`etc/ssl`, relative, as the package names it): the
   * last rule whose components match the directory's path, or its nearest matched parent's mode
   * (a rule covers everything below the directory it names). The root itself is never protected.
   */
  modeOf(dir: string): ProtectMode {
    if (dir === "") return "none";
    const cached = this.#cache.get(dir);
    if (cached) return cached;
    const parts = dir.split("/");
    let mode: ProtectMode = parts.length > 1 ? this.modeOf(parts.slice(0, -1).join("/")) : "none";
    for (const rule of this.#rules) {
      if (rule.components.length !== parts.length) continue;
      if (rule.components.every((c, i) => fnmatchRegExp(c).test(parts[i]!))) mode = rule.mode;
    }
    this.#cache.set(dir, mode);
    return mode;
  }

  /** Whether files in `dir` are configuration apk keeps when the image changed them. */
  protects(dir: string): boolean {
    const mode = this.modeOf(dir);
    return mode !== "none" && mode !== "ignore";
  }
}

/** The image's protected paths: apk's built-in rules, then its `protected_paths.d/*.list` in name order. */
export async function readProtectedPaths(root: string): Promise<ProtectedPaths> {
  const rules = parseProtectedPaths(BUILT_IN_RULES);
  for (const name of await listDirInRoot(root, PROTECTED_PATHS_DIR)) {
    if (!name.endsWith(".list")) continue;
    const text = await readFileInRoot(root, `${PROTECTED_PATHS_DIR}/${name}`);
    if (text) rules.push(...parseProtectedPaths(text.toString("utf8")));
  }
  return new ProtectedPaths(rules);
}

/**
 * fnmatch(3) with FNM_PATHNAME, as apk matches trigger globs against directories: wildcards
 * never match a `/`, so the pattern and the path must have the same number of components.
 */
export function matchesPathname(pattern: string, path: string): boolean {
  const want = pattern.split("/");
  const have = path.split("/");
  return want.length === have.length && want.every((p, i) => fnmatchRegExp(p).test(have[i]!));
}
