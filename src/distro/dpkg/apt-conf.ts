import { SutureError } from "../../errors/errors.ts";
import type { ImageFileAccess } from "./sources.ts";

/**
 * An image's apt configuration (apt.conf(5)): the tree apt builds from `/etc/apt/apt.conf.d/*` and
 * `/etc/apt/apt.conf`. Keys are `::`-separated and case-insensitive, as in apt; a key written with
 * a trailing `::` (or a bare value inside a `{ }` block) appends a list item.
 */
export class AptConfig {
  readonly #root: ConfigNode = newNode();

  /** Set `key` to `value`; `A::B::` appends an item to the list `A::B`. */
  set(key: string, value: string): void {
    const parts = key.split("::");
    let node = this.#root;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (part === "" && i === parts.length - 1 && i > 0) {
        const item = newNode();
        item.value = value;
        node.items.push(item);
        return;
      }
      node = child(node, part, true)!;
    }
    node.value = value;
  }

  /** `#clear KEY`: forget the key, its list and everything under it. */
  clear(key: string): void {
    const parts = key.split("::").filter((p, i, all) => p !== "" || i < all.length - 1);
    const last = parts.pop();
    if (last === undefined) return;
    let node: ConfigNode | undefined = this.#root;
    for (const p of parts) node = node && child(node, p, false);
    if (!node) return;
    node.children.delete(last.toLowerCase());
  }

  /** The value set for `key`, or `fallback`. */
  get(key: string, fallback?: string): string | undefined {
    return this.#find(key)?.value ?? fallback;
  }

  has(key: string): boolean {
    return this.#find(key)?.value !== undefined;
  }

  /** A boolean as apt reads one (`yes`/`true`/`with`/`on`/`enable`, a non-zero number; else false). */
  getBool(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    return v === undefined ? fallback : parseAptBool(v, fallback);
  }

  /** The list items of `key` (`A::B { "x"; "y"; };`), in order. */
  getList(key: string): string[] {
    const node = this.#find(key);
    if (!node) return [];
    return [...node.items, ...node.children.values()].flatMap((n) =>
      n.value !== undefined ? [n.value] : [],
    );
  }

  /**
   * A path as apt's FindFile resolves it: a relative value is taken relative to its parent key's
   * path (`Dir::Etc::SourceList` under `Dir::Etc` under `Dir`), an absolute one stands alone.
   */
  findFile(key: string, fallback: string): string {
    const parts = key.split("::");
    let path = this.get(key) ?? fallback;
    for (let i = parts.length - 1; i > 0 && !path.startsWith("/"); i--) {
      const parentKey = parts.slice(0, i).join("::");
      const parent = this.get(parentKey) ?? DIR_DEFAULTS.get(parentKey.toLowerCase()) ?? "";
      if (!parent) continue;
      path = `${parent.replace(/\/+$/, "")}/${path}`;
    }
    if (!path.startsWith("/")) path = `/${path}`;
    return path.replace(/\/{2,}/g, "/");
  }

  /** Every key with a value, in `A::B::C` form (list items as `A::B::`), for messages and tests. */
  entries(): [string, string][] {
    const out: [string, string][] = [];
    const walk = (node: ConfigNode, prefix: string) => {
      for (const item of node.items) if (item.value !== undefined) out.push([`${prefix}::`, item.value]);
      for (const n of node.children.values()) {
        const key = prefix ? `${prefix}::${n.name}` : n.name;
        if (n.value !== undefined) out.push([key, n.value]);
        walk(n, key);
      }
    };
    walk(this.#root, "");
    return out;
  }

  #find(key: string): ConfigNode | undefined {
    let node: ConfigNode | undefined = this.#root;
    for (const p of key.split("::")) node = node && child(node, p, false);
    return node;
  }
}

interface ConfigNode {
  name: string;
  value?: string;
  children: Map<string, ConfigNode>;
  /** Anonymous list items (`A::B::` or bare values in a block). */
  items: ConfigNode[];
}

function newNode(name = ""): ConfigNode {
  return { name, children: new Map(), items: [] };
}

function child(node: ConfigNode, name: string, create: boolean): ConfigNode | undefined {
  const key = name.toLowerCase();
  let c = node.children.get(key);
  if (!c && create) {
    c = newNode(name);
    node.children.set(key, c);
  }
  return c;
}

/** Where apt looks for its files when apt.conf says nothing (relative to their parent key). */
const DIR_DEFAULTS = new Map<string, string>([
  ["dir", "/"],
  ["dir::etc", "etc/apt/"],
]);

export function parseAptBool(value: string, fallback: boolean): boolean {
  const v = value.trim().toLowerCase();
  if (/^-?\d+$/.test(v)) return Number(v) !== 0;
  if (["no", "false", "without", "off", "disable"].includes(v)) return false;
  if (["yes", "true", "with", "on", "enable"].includes(v)) return true;
  return fallback;
}

/**
 * Parse one apt.conf file into `config`, as apt's ReadConfigFile does: `A::B "v";`, blocks
 * `A { B "v"; C { D "x"; }; };`, bare values in a block as list items, comments `//`, `#` and
 * `/* … *\/` outside quotes, `#clear KEY;`. `#include` is not followed (a file of the image naming
 * another path is not read on its word) and is reported through `warn`.
 * Throws INVALID_MANIFEST naming the file and line for what apt also refuses as a syntax error.
 */
export function parseAptConf(
  text: string,
  config: AptConfig,
  options: { file?: string; warn?: (message: string) => void } = {},
): AptConfig {
  const file = options.file ?? "apt.conf";
  const syntax = (line: number, what: string) =>
    new SutureError(
      "INVALID_MANIFEST",
      `${file}:${line}: ${what}, which apt refuses too: fix the image's apt configuration`,
    );
  const stack: string[] = [];
  let parent = "";
  let buffer = "";
  let inComment = false;
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const lineNo = n + 1;
    let line = lines[n]!.replaceAll("\t", "        ").trim();
    if (inComment) {
      const end = line.indexOf("*/");
      if (end < 0) continue;
      line = line.slice(end + 2);
      inComment = false;
    }
    line = stripLineComments(line);
    let fragment = "";
    for (;;) {
      const start = indexOutsideQuotes(line, "/*");
      if (start < 0) {
        fragment += line;
        break;
      }
      fragment += line.slice(0, start);
      const end = line.indexOf("*/", start + 2);
      if (end < 0) {
        inComment = true;
        break;
      }
      line = line.slice(end + 2);
    }
    if (!fragment) continue;

    let inQuote = false;
    let start = 0;
    for (let i = 0; i < fragment.length; i++) {
      const c = fragment[i]!;
      if (c === '"') inQuote = !inQuote;
      if (inQuote || (c !== "{" && c !== ";" && c !== "}")) continue;
      const piece = fragment.slice(start, i).trim();
      if (buffer && piece) buffer += " ";
      buffer += piece;
      start = i + 1;
      if (c === "{" && !buffer) throw syntax(lineNo, "a block starts with no name");
      if (!buffer) {
        if (c === "}") parent = stack.pop() ?? "";
        continue;
      }
      const words = splitWords(buffer);
      if (!words || words.length > 2) throw syntax(lineNo, `malformed entry "${buffer}"`);
      let tag = words[0]!;
      let word: string | undefined = words[1];
      if (word === undefined && c !== "{") {
        word = tag;
        tag = "";
      }
      if (c === "{") {
        stack.push(parent);
        parent = parent ? `${parent}::${tag}` : tag;
        tag = "";
      }
      const item = !parent ? tag : c !== "{" || tag ? `${parent}::${tag}` : parent;
      if (tag.startsWith("#")) {
        if (parent) throw syntax(lineNo, "a directive inside a block");
        const directive = tag.slice(1);
        if (directive === "clear") config.clear(word ?? "");
        else if (directive === "include") {
          options.warn?.(
            `${file}:${lineNo}: #include ${word ?? ""} is not followed by suture; settings in that file are not applied`,
          );
        } else if (directive !== "x-apt-configure-index") {
          throw syntax(lineNo, `unsupported directive "#${directive}"`);
        }
      } else if (tag === "" && word === "#clear") {
        throw syntax(lineNo, "#clear without the option tree to clear");
      } else if (word !== undefined && item) {
        config.set(item, word);
      }
      buffer = "";
      if (c === "}") parent = stack.pop() ?? "";
    }
    const rest = fragment.slice(start).trim();
    if (buffer && rest) buffer += " ";
    buffer += rest;
  }
  if (buffer) throw syntax(lines.length, `unterminated entry "${buffer}" at the end of the file`);
  return config;
}

/** Drop `//` and `#` comments that are outside quotes (`#clear`/`#include` are directives, not comments). */
function stripLineComments(line: string): string {
  const slash = indexOutsideQuotes(line, "//");
  if (slash >= 0) line = line.slice(0, slash);
  let from = 0;
  for (;;) {
    const hash = indexOutsideQuotes(line, "#", from);
    if (hash < 0) return line;
    const after = line.slice(hash + 1);
    if (["clear", "include", "x-apt-configure-index"].some((d) => after.startsWith(d))) {
      from = hash + 1;
      continue;
    }
    return line.slice(0, hash);
  }
}

function indexOutsideQuotes(line: string, needle: string, from = 0): number {
  for (let i = line.indexOf(needle, from); i >= 0; i = line.indexOf(needle, i + 1)) {
    let quotes = 0;
    for (let j = 0; j < i; j++) if (line[j] === '"') quotes++;
    if (quotes % 2 === 0) return i;
  }
  return -1;
}

/** Words of an entry: runs of non-space characters, where a quoted part may hold spaces (quotes removed). */
function splitWords(text: string): string[] | undefined {
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i]!)) i++;
    if (i >= text.length) break;
    let word = "";
    while (i < text.length && !/\s/.test(text[i]!)) {
      if (text[i] === '"') {
        const end = text.indexOf('"', i + 1);
        if (end < 0) return undefined;
        word += text.slice(i + 1, end);
        i = end + 1;
      } else word += text[i++];
    }
    out.push(word);
  }
  return out;
}

/**
 * Whether apt reads a file of a `*.d` directory: not hidden, an accepted extension (`exts`; the
 * empty string admits names without one), and only run-parts characters, as apt's
 * GetListOfFilesInDir. Backup names (`.dpkg-old`, `.bak`, `~`) fail the extension test.
 */
export function aptReadsPart(name: string, exts: readonly string[]): boolean {
  if (name.startsWith(".")) return false;
  const dot = name.lastIndexOf(".");
  const ext = dot < 0 ? "" : name.slice(dot + 1);
  if (!exts.includes(ext)) return false;
  return /^[A-Za-z0-9_:.-]+$/.test(name);
}

/**
 * The image's apt configuration: every accepted file of `Dir::Etc::Parts` (default
 * /etc/apt/apt.conf.d) in name order, then `Dir::Etc::Main` (/etc/apt/apt.conf), as apt reads them.
 */
export async function readAptConfig(
  files: ImageFileAccess,
  options: { warn?: (message: string) => void } = {},
): Promise<AptConfig> {
  const config = new AptConfig();
  const partsDir = config.findFile("Dir::Etc::Parts", "apt.conf.d");
  for (const name of await files.listDir(partsDir)) {
    if (!aptReadsPart(name, ["conf", ""])) continue;
    const path = `${partsDir}/${name}`;
    const bytes = await files.readFile(path);
    if (bytes) parseAptConf(Buffer.from(bytes).toString("utf8"), config, { file: path, warn: options.warn });
  }
  const main = config.findFile("Dir::Etc::Main", "apt.conf");
  const bytes = await files.readFile(main);
  if (bytes) parseAptConf(Buffer.from(bytes).toString("utf8"), config, { file: main, warn: options.warn });
  return config;
}

/** The locations apt.conf may move (Dir::Etc::*), resolved as apt does. */
export interface AptLocations {
  sourceList: string;
  sourceParts: string;
  trusted: string;
  trustedParts: string;
  preferences: string;
  preferencesParts: string;
}

export function aptLocations(config: AptConfig): AptLocations {
  return {
    sourceList: config.findFile("Dir::Etc::SourceList", "sources.list"),
    sourceParts: config.findFile("Dir::Etc::SourceParts", "sources.list.d"),
    trusted: config.findFile("Dir::Etc::Trusted", "trusted.gpg"),
    trustedParts: config.findFile("Dir::Etc::TrustedParts", "trusted.gpg.d"),
    preferences: config.findFile("Dir::Etc::Preferences", "preferences"),
    preferencesParts: config.findFile("Dir::Etc::PreferencesParts", "preferences.d"),
  };
}
