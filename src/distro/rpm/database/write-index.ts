import { SutureError } from "../../../errors/errors.ts";
import { type RpmHeader, RpmSense, RpmTag, RpmType, rpmHeaderRawEntry } from "../header.ts";

/**
 * rpm's secondary indexes: for each, the rows (key, idx) rpm 4.18 files a header under, as its
 * lib/rpmdb.c tag2index and updateRichDep compute them. The sqlite backend keeps each index as a
 * table `(key, hnum, idx)` (lib/backend/sqlite.c); lookups such as `rpm -q NAME`, `-qf FILE` and
 * `--whatprovides` read them, so a header written without its rows is invisible to them.
 */

/** One index of rpm's database (rpmdb.c's dbiTags, in its order). */
export interface RpmIndex {
  /** The table's name (rpmTagGetName of the tag, without RPMTAG_). */
  table: string;
  tag: number;
  /** Keys of string tags are TEXT, of the others (INSTALLTID, SIGMD5) BLOB. */
  keyType: "TEXT" | "BLOB";
  /** Whether rpm indexes the key column (string tags) and the hnum column (array tags). */
  keyIndex: boolean;
  hnumIndex: boolean;
}

const FILETRIGGERNAME = 5069;
const FILETRIGGERINDEX = 5070;
const TRANSFILETRIGGERNAME = 5079;
const TRANSFILETRIGGERINDEX = 5080;

const index = (table: string, tag: number, keyType: "TEXT" | "BLOB", array: boolean): RpmIndex => ({
  table,
  tag,
  keyType,
  keyIndex: keyType === "TEXT",
  hnumIndex: array,
});

export const RPM_INDEXES: readonly RpmIndex[] = [
  index("Name", RpmTag.NAME, "TEXT", false),
  index("Basenames", RpmTag.BASENAMES, "TEXT", true),
  index("Group", RpmTag.GROUP, "TEXT", false),
  index("Requirename", RpmTag.REQUIRENAME, "TEXT", true),
  index("Providename", RpmTag.PROVIDENAME, "TEXT", true),
  index("Conflictname", RpmTag.CONFLICTNAME, "TEXT", true),
  index("Obsoletename", RpmTag.OBSOLETENAME, "TEXT", true),
  index("Triggername", RpmTag.TRIGGERNAME, "TEXT", true),
  index("Dirnames", RpmTag.DIRNAMES, "TEXT", true),
  index("Installtid", RpmTag.INSTALLTID, "BLOB", false),
  index("Sigmd5", RpmTag.SIGMD5, "BLOB", false),
  index("Sha1header", RpmTag.SHA1HEADER, "TEXT", false),
  index("Filetriggername", FILETRIGGERNAME, "TEXT", true),
  index("Transfiletriggername", TRANSFILETRIGGERNAME, "TEXT", true),
  index("Recommendname", RpmTag.RECOMMENDNAME, "TEXT", true),
  index("Suggestname", RpmTag.SUGGESTNAME, "TEXT", true),
  index("Supplementname", RpmTag.SUPPLEMENTNAME, "TEXT", true),
  index("Enhancename", RpmTag.ENHANCENAME, "TEXT", true),
];

/** One row of an index: its key (bytes, as rpm binds them) and the element's position. */
export interface RpmIndexRow {
  key: Uint8Array;
  idx: number;
}

/** Dependencies whose rich (boolean) forms rpm also files under the names inside them. */
const RICH_INDEXED = new Set<number>([
  RpmTag.REQUIRENAME,
  RpmTag.CONFLICTNAME,
  RpmTag.SUGGESTNAME,
  RpmTag.SUPPLEMENTNAME,
  RpmTag.RECOMMENDNAME,
  RpmTag.ENHANCENAME,
]);

/**
 * Requirements only the install needs (scriptlet, rpmlib and pre/post-transaction ones), which
 * rpm leaves out of Requirename (isTransientReq in include/rpm/rpmds.h).
 */
function isTransientRequirement(flags: number): boolean {
  const installOnly =
    (RpmSense.SCRIPT_PRE |
      RpmSense.SCRIPT_POST |
      RpmSense.RPMLIB |
      KEYRING |
      RpmSense.PRETRANS |
      RpmSense.POSTTRANS) &
    ~RpmSense.PREREQ;
  const eraseOnly = (RpmSense.SCRIPT_PREUN | RpmSense.SCRIPT_POSTUN) & ~RpmSense.PREREQ;
  return (flags & installOnly) !== 0 && (flags & eraseOnly) === 0 && (flags & META) === 0;
}
const KEYRING = 1 << 26;
const META = 1 << 29;

/** A string's bytes without its NUL, as rpm keys it (strlen). */
function splitStrings(data: Uint8Array, count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const end = data.indexOf(0, at);
    out.push(data.subarray(at, end));
    at = end + 1;
  }
  return out;
}

/** The rows rpm files `header` under in `index`; `what` names the header in errors. */
export function rpmIndexRows(header: RpmHeader, index: RpmIndex, what: string): RpmIndexRow[] {
  const raw = rpmHeaderRawEntry(header, index.tag);
  if (raw === undefined) {
    // rpm files a package without a group as "Unknown" ("preserve legacy behavior").
    return index.tag === RpmTag.GROUP ? [{ key: Buffer.from("Unknown"), idx: 0 }] : [];
  }
  let keys: Uint8Array[];
  switch (raw.type) {
    case RpmType.STRING:
    case RpmType.STRING_ARRAY:
      keys = splitStrings(raw.data, raw.count);
      break;
    case RpmType.I18NSTRING:
      // headerGet without HEADERGET_RAW gives one string, the C locale's (the first).
      keys = splitStrings(raw.data, 1);
      break;
    case RpmType.BIN:
      keys = [raw.data];
      break;
    case RpmType.INT32:
      keys = [];
      for (let i = 0; i < raw.count; i++) {
        // rpm keys integers in its host's byte order: little-endian on every platform suture
        // patches (writeSqliteRpmDatabase checks the database agrees).
        keys.push(Uint8Array.from(raw.data.subarray(i * 4, i * 4 + 4)).reverse());
      }
      break;
    default:
      throw new SutureError(
        "INVALID_ARCHIVE",
        `the rpm header of ${what} has tag ${index.tag} of type ${raw.type}, which rpm does not index`,
      );
  }
  const idxOf = triggerIndexes(header, index, keys.length, what);
  const requireFlags = index.tag === RpmTag.REQUIRENAME ? header.numberArray(RpmTag.REQUIREFLAGS) : [];
  const rows: RpmIndexRow[] = [];
  const triggers = new Set<string>();
  for (const [i, key] of keys.entries()) {
    if (index.tag === RpmTag.REQUIRENAME && isTransientRequirement(requireFlags[i] ?? 0)) continue;
    if (index.tag === RpmTag.TRIGGERNAME) {
      // A trigger name is filed once, at its first position.
      const name = Buffer.from(key).toString("latin1");
      if (triggers.has(name)) continue;
      triggers.add(name);
    }
    const idx = idxOf ? idxOf[i]! : i;
    rows.push({ key, idx });
    if (key[0] === 0x28 /* ( */ && RICH_INDEXED.has(index.tag) && raw.type === RpmType.STRING_ARRAY) {
      for (const name of richDependencyKeys(Buffer.from(key).toString("latin1"))) {
        rows.push({ key: Buffer.from(name, "latin1"), idx });
      }
    }
  }
  return rows;
}

/** File triggers are filed under their trigger's number (FILETRIGGERINDEX), not their position. */
function triggerIndexes(
  header: RpmHeader,
  index: RpmIndex,
  count: number,
  what: string,
): number[] | undefined {
  const indexTag =
    index.tag === FILETRIGGERNAME
      ? FILETRIGGERINDEX
      : index.tag === TRANSFILETRIGGERNAME
        ? TRANSFILETRIGGERINDEX
        : undefined;
  if (indexTag === undefined) return undefined;
  const values = header.numberArray(indexTag);
  if (values.length < count) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `the rpm header of ${what} has ${count} file trigger names but ${values.length} trigger indexes; the package or database is damaged`,
    );
  }
  return values;
}

type RichOp = "single" | "and" | "or" | "if" | "unless" | "else" | "with" | "without";

const RICH_OPS: readonly RichOp[] = ["and", "or", "if", "unless", "else", "with", "without"];
const COMPARISONS = new Set(["<=", "=<", "<", "==", "=", ">=", "=>", ">"]);

/** Events of rpm's rich dependency parser (rpmrichParse's callback types). */
interface RichEvents {
  enter(): void;
  simple(name: string): void;
  op(op: RichOp): void;
  leave(op: RichOp): void;
}

const CHECK_NO_WITH = 1 << 1;
const CHECK_NO_AND = 1 << 2;
const CHECK_NO_OR = 1 << 3;

/** C's isspace in the C locale. */
function isSpace(c: string | undefined): boolean {
  return c === " " || c === "\t" || c === "\n" || c === "\v" || c === "\f" || c === "\r";
}

/** SKIPWHITE: spaces and commas. */
function skipWhite(s: string, p: number): number {
  while (p < s.length && (isSpace(s[p]) || s[p] === ",")) p++;
  return p;
}

/** SKIPNONWHITEX: a token, parentheses inside it balanced (`perl(Foo)`), up to a space, comma or unbalanced `)`. */
function skipToken(s: string, p: number): number {
  let depth = 0;
  while (p < s.length) {
    const c = s[p];
    if (isSpace(c) || c === ",") break;
    if (c === ")" && depth-- <= 0) break;
    p++;
    if (c === "(") depth++;
  }
  return p;
}

/** parseSimpleDep: `name [op evr]`; returns where it ended, or undefined when malformed. */
function parseSimple(s: string, p: number, events: RichEvents): number | undefined {
  const n = p;
  p = skipToken(s, p);
  if (p === n) return undefined;
  const name = s.slice(n, p);
  p = skipWhite(s, p);
  if (p < s.length) {
    const pe = skipToken(s, p);
    if (COMPARISONS.has(s.slice(p, pe))) {
      p = skipWhite(s, pe);
      const e = p;
      p = skipToken(s, p);
      if (p === e) return undefined;
    }
  }
  events.simple(name);
  return p;
}

const MAX_RICH_DEPTH = 100;

/** rpmrichParseInternal, with its checks of which operators may be combined. */
function parseRich(
  s: string,
  start: number,
  events: RichEvents,
  check: { value: number },
  depth = 0,
): number | undefined {
  // rpm recurses without a limit; a hostile header could nest a million parentheses and exhaust
  // the stack. Nesting deeper than any real package's is not parsed (no extra keys).
  if (depth > MAX_RICH_DEPTH) return undefined;
  let p = start;
  let op: RichOp = "single";
  let firstop: RichOp = "single";
  let chainop: RichOp | undefined;
  let flags = check.value;
  events.enter();
  if (s[p++] !== "(") return undefined;
  for (;;) {
    p = skipWhite(s, p);
    if (s[p] === ")") return undefined;
    if (s[p] === "(") {
      const sub = { value: flags & 1 };
      const end = parseRich(s, p, events, sub, depth + 1);
      if (end === undefined) return undefined;
      p = end;
      if (op === "if" || op === "unless") sub.value &= ~(CHECK_NO_AND | CHECK_NO_OR);
      flags |= sub.value;
    } else {
      const end = parseSimple(s, p, events);
      if (end === undefined) return undefined;
      p = end;
    }
    p = skipWhite(s, p);
    if (p >= s.length) return undefined;
    if (s[p] === ")") break;
    let pe = p;
    while (pe < s.length && !isSpace(s[pe]) && s[pe] !== ")") pe++;
    const token = s.slice(p, pe) as RichOp;
    if (!RICH_OPS.includes(token)) return undefined;
    op = token;
    if (firstop === "single") firstop = op;
    if (op === "else" && (chainop === "if" || chainop === "unless")) chainop = undefined;
    if (chainop !== undefined && op !== chainop) return undefined;
    if (chainop !== undefined && op !== "and" && op !== "or" && op !== "with") return undefined;
    events.op(op);
    chainop = op;
    p = pe;
  }
  if ((firstop === "with" || firstop === "without") && (flags & CHECK_NO_WITH) !== 0) return undefined;
  if (flags & 1) {
    if ((firstop === "and" || firstop === "if") && (flags & CHECK_NO_AND) !== 0) return undefined;
    if ((firstop === "or" || firstop === "unless") && (flags & CHECK_NO_OR) !== 0) return undefined;
  }
  if (firstop === "if") flags |= CHECK_NO_OR;
  if (firstop === "unless") flags |= CHECK_NO_AND;
  if (op === "and" || op === "or") flags &= ~(CHECK_NO_AND | CHECK_NO_OR);
  if (op !== "single" && op !== "with" && op !== "without" && op !== "or") flags |= CHECK_NO_WITH;
  p++;
  events.leave(op);
  check.value |= flags;
  return p;
}

/**
 * The extra keys rpm files a rich dependency under (updateRichDep): each simple name inside it,
 * `!`-prefixed where it sits in an `if`/`unless` condition (whose `else` branch repeats the
 * condition inverted), rpmlib() names left out, sorted bytewise and without repeats. A rich
 * dependency rpm cannot parse gets none, as in rpm.
 */
export function richDependencyKeys(dep: string): string[] {
  const names: string[] = [];
  let neg = false;
  const levelStart: number[] = [];
  const events: RichEvents = {
    enter: () => {
      levelStart.push(names.length);
    },
    simple: (name) => {
      if (name.length > 7 && name.startsWith("rpmlib(")) return;
      names.push(`${neg ? "!" : " "}${name}`);
    },
    op: (op) => {
      if (op === "if" || op === "unless") {
        levelStart[levelStart.length - 1] = names.length;
        neg = !neg;
      } else if (op === "else") {
        const end = names.length;
        for (let i = levelStart.at(-1)!; i < end; i++) {
          const name = names[i]!;
          names.push(`${name[0] === " " ? "!" : " "}${name.slice(1)}`);
        }
        neg = !neg;
      }
    },
    leave: (op) => {
      levelStart.pop();
      if (op === "if" || op === "unless") neg = !neg;
    },
  };
  if (parseRich(dep, 0, events, { value: 0 }) === undefined) return [];
  const sorted = names.sort((a, b) => Buffer.compare(Buffer.from(a, "latin1"), Buffer.from(b, "latin1")));
  return sorted.filter((n, i) => i === 0 || n !== sorted[i - 1]).map((n) => (n[0] === " " ? n.slice(1) : n));
}
