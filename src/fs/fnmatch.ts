/** fnmatch(3) patterns as RegExps: dpkg's path-exclude/include rules and apk's protected paths and trigger globs use the same matching. */

const NEVER = /(?!)/;

const CLASSES: Record<string, string> = {
  alpha: "a-zA-Z",
  digit: "0-9",
  alnum: "a-zA-Z0-9",
  upper: "A-Z",
  lower: "a-z",
  xdigit: "0-9a-fA-F",
  space: " \\t\\n\\v\\f\\r",
  blank: " \\t",
  punct: "!-\\/:-@\\[-`{-~",
  cntrl: "\\x00-\\x1f\\x7f",
  print: "\\x20-\\x7e",
  graph: "\\x21-\\x7e",
};

function classChar(c: string): string {
  return `\\u{${c.codePointAt(0)!.toString(16)}}`;
}

/**
 * An fnmatch(3) pattern (flags 0, as dpkg calls it) as an anchored RegExp: `*` and `?` match any
 * characters including `/` and a leading `.`, `[...]` brackets with `!`/`^` negation, ranges and
 * `[:class:]` (C locale), `\` quotes the next character. A `[` without its `]` is literal; a
 * pattern glibc never matches (a trailing lone `\`, an unknown class) never matches here.
 */
export function fnmatchRegExp(pattern: string): RegExp {
  const chars = [...pattern];
  let out = "";
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === "*") out += ".*";
    else if (c === "?") out += ".";
    else if (c === "\\") {
      if (i + 1 >= chars.length) return NEVER;
      out += classChar(chars[++i]!);
    } else if (c === "[") {
      const bracket = parseBracket(chars, i + 1);
      if (bracket === "never") return NEVER;
      if (bracket === undefined) out += classChar("[");
      else {
        out += bracket.regexp;
        i = bracket.end;
      }
    } else out += classChar(c);
  }
  return new RegExp(`^${out}$`, "su");
}

/** The bracket expression starting after `[` at `start`: its regexp and the index of its `]`. */
function parseBracket(chars: string[], start: number): { regexp: string; end: number } | "never" | undefined {
  let i = start;
  let negate = false;
  if (chars[i] === "!" || chars[i] === "^") {
    negate = true;
    i++;
  }
  const items: string[] = [];
  let first = true;
  for (; i < chars.length; i++) {
    let c = chars[i]!;
    if (c === "]" && !first) {
      const body = items.join("");
      // An empty set (only a reversed range) matches nothing, its negation anything.
      const regexp = body ? `[${negate ? "^" : ""}${body}]` : negate ? "." : "(?!)";
      return { regexp, end: i };
    }
    first = false;
    if (c === "[" && chars[i + 1] === ":") {
      const close = chars.indexOf(":", i + 2);
      if (close > 0 && chars[close + 1] === "]") {
        const cls = CLASSES[chars.slice(i + 2, close).join("")];
        if (cls === undefined) return "never";
        items.push(cls);
        i = close + 1;
        continue;
      }
    }
    if (c === "\\") {
      if (i + 1 >= chars.length) return undefined;
      c = chars[++i]!;
    }
    let hi: string | undefined;
    if (chars[i + 1] === "-" && chars[i + 2] !== undefined && chars[i + 2] !== "]") {
      let j = i + 2;
      if (chars[j] === "\\" && j + 1 < chars.length) j++;
      hi = chars[j]!;
      i = j;
    }
    if (hi === undefined) items.push(classChar(c));
    else if (c.codePointAt(0)! <= hi.codePointAt(0)!) items.push(`${classChar(c)}-${classChar(hi)}`);
  }
  return undefined;
}
