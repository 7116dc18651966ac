/**
 * Alpine package version ordering as current apk-tools implements it:
 * `digits{.digits}[letter]{_suffix[digits]}[~hexhash][-rN]`, where a component with a leading
 * zero compares as a string. Written from apk-tools' grammar and checked against its own test
 * vectors (../shared/fixtures/vectors/apk-version.data); no apk binary is needed.
 */

// Token kinds in the order the grammar allows them; the order itself is used by the comparison.
const INITIAL_DIGIT = 0;
const DIGIT = 1;
const LETTER = 2;
const SUFFIX = 3;
const SUFFIX_NO = 4;
const COMMIT_HASH = 5;
const REVISION_NO = 6;
const END = 7;
const INVALID = 8;

// Pre-release suffixes sort below "no suffix" (NONE), post-release ones above.
const SUFFIX_NONE = 5;
const SUFFIXES: Record<string, number> = {
  alpha: 1,
  beta: 2,
  pre: 3,
  rc: 4,
  cvs: 6,
  svn: 7,
  git: 8,
  hg: 9,
  p: 10,
};

interface Token {
  kind: number;
  /** The token's text: digits, the letter, the suffix name or the hash. */
  text: string;
  number: bigint;
  suffix: number;
}

class Tokenizer {
  private pos = 0;
  readonly token: Token = { kind: INITIAL_DIGIT, text: "", number: 0n, suffix: 0 };
  private readonly s: string;

  constructor(s: string) {
    this.s = s;
    this.token.kind = this.digits() ? INITIAL_DIGIT : INVALID;
  }

  /** Consume a digit run into the token; false when there is none. */
  private digits(): boolean {
    const text = this.span(isDigit);
    if (text === "") return false;
    this.token.text = text;
    this.token.number = BigInt(text);
    return true;
  }

  private span(accept: (c: string) => boolean): string {
    const start = this.pos;
    while (this.pos < this.s.length && accept(this.s[this.pos]!)) this.pos++;
    return this.s.slice(start, this.pos);
  }

  /** Advance to the next token (INVALID where the grammar does not allow what follows). */
  next(): void {
    this.token.kind = this.scan(this.token.kind);
  }

  private scan(prev: number): number {
    const t = this.token;
    if (this.pos >= this.s.length) return END;
    const c = this.s[this.pos]!;
    if (c >= "a" && c <= "z") {
      if (prev > DIGIT) return INVALID;
      t.text = c;
      this.pos++;
      return LETTER;
    }
    if (c === "." || isDigit(c)) {
      if (c === ".") {
        if (prev > DIGIT) return INVALID;
        this.pos++;
      }
      const kind = prev === INITIAL_DIGIT || prev === DIGIT ? DIGIT : prev === SUFFIX ? SUFFIX_NO : INVALID;
      return kind !== INVALID && this.digits() ? kind : INVALID;
    }
    if (c === "_") {
      if (prev > SUFFIX_NO) return INVALID;
      this.pos++;
      t.text = this.span((x) => x >= "a" && x <= "z");
      // Own keys only: "_constructor" must not find Object.prototype's members.
      const value = Object.hasOwn(SUFFIXES, t.text) ? SUFFIXES[t.text] : undefined;
      if (value === undefined) return INVALID;
      t.suffix = value;
      return SUFFIX;
    }
    if (c === "~") {
      if (prev >= COMMIT_HASH) return INVALID;
      this.pos++;
      t.text = this.span((x) => /[0-9a-fA-F]/.test(x));
      return t.text === "" ? INVALID : COMMIT_HASH;
    }
    if (c === "-") {
      if (prev >= REVISION_NO || this.s[this.pos + 1] !== "r") return INVALID;
      this.pos += 2;
      return this.digits() ? REVISION_NO : INVALID;
    }
    return INVALID;
  }
}

function isDigit(c: string): boolean {
  return c >= "0" && c <= "9";
}

/** Byte-wise comparison where a proper prefix sorts first. */
function stringOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareTokens(a: Token, b: Token): number {
  switch (a.kind) {
    case DIGIT:
      // A component with a leading zero is a fraction-like string (Gentoo rule): "001" > "0".
      if (a.text.startsWith("0") || b.text.startsWith("0")) return stringOrder(a.text, b.text);
      return a.number < b.number ? -1 : a.number > b.number ? 1 : 0;
    case INITIAL_DIGIT:
    case SUFFIX_NO:
    case REVISION_NO:
      return a.number < b.number ? -1 : a.number > b.number ? 1 : 0;
    case LETTER:
      return stringOrder(a.text, b.text);
    case SUFFIX:
      return a.suffix - b.suffix;
    default:
      return stringOrder(a.text, b.text);
  }
}

function compare(a: string, b: string, fuzzy: boolean): -1 | 0 | 1 {
  const ta = new Tokenizer(a);
  const tb = new Tokenizer(b);
  while (ta.token.kind === tb.token.kind && ta.token.kind < END) {
    const r = compareTokens(ta.token, tb.token);
    if (r !== 0) return r < 0 ? -1 : 1;
    ta.next();
    tb.next();
  }
  const ka = ta.token.kind;
  const kb = tb.token.kind;
  if (ka === kb) return 0;
  if (kb === END && fuzzy) return 0;
  // Equal so far: the longer version is newer, unless what it has more of is a pre-release suffix.
  if (ka === SUFFIX && ta.token.suffix < SUFFIX_NONE) return -1;
  if (kb === SUFFIX && tb.token.suffix < SUFFIX_NONE) return 1;
  return ka > kb ? -1 : 1;
}

/** Whether apk accepts `v` as a package version. */
export function isValidApkVersion(v: string): boolean {
  const t = new Tokenizer(v);
  while (t.token.kind < END) t.next();
  return t.token.kind === END;
}

/**
 * apk's ordering of two versions: -1, 0 or 1. Like apk itself it also orders invalid versions
 * (by their valid prefix); callers that must not guess check isValidApkVersion first.
 */
export function compareApkVersions(a: string, b: string): -1 | 0 | 1 {
  return compare(a, b, false);
}

/**
 * apk's fuzzy match (`pkg~1.2` dependencies): `v` matches `prefix` when it equals it or extends it
 * by further components.
 */
export function apkVersionFuzzyMatches(v: string, prefix: string): boolean {
  return compare(v, prefix, true) === 0;
}

/** The fuzzy comparison behind apk's `<~` and `>~` operators. */
export function compareApkVersionsFuzzy(a: string, b: string): -1 | 0 | 1 {
  return compare(a, b, true);
}
