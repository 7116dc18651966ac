import { SutureError } from "../../errors/errors.ts";

/**
 * A Debian package version, `[epoch:]upstream[-revision]` (Debian Policy §5.6.12).
 * `revision` is "" when the version has no hyphen; dpkg treats that exactly like "0".
 */
export interface DebVersion {
  epoch: number;
  upstream: string;
  revision: string;
}

const MAX_EPOCH = 2147483647; // dpkg stores the epoch in a C int

/**
 * Parse a Debian version the way dpkg's parseversion does, but reject everything dpkg only
 * warns about (upstream not starting with a digit, characters outside Policy's sets), so a
 * version that passes here is one dpkg accepts without complaint. Surrounding whitespace is
 * ignored, as in dpkg. Throws SutureError INVALID_VERSION naming the defect.
 */
export function parseDebVersion(text: string): DebVersion {
  const problem = debVersionProblem(text);
  if (typeof problem === "string") {
    throw new SutureError("INVALID_VERSION", `invalid Debian version ${JSON.stringify(text)}: ${problem}`);
  }
  return problem;
}

/** Whether `text` is a Debian version dpkg accepts without warnings. */
export function isValidDebVersion(text: string): boolean {
  return typeof debVersionProblem(text) !== "string";
}

function debVersionProblem(text: string): DebVersion | string {
  const v = text.trim();
  if (v === "") return "version string is empty";
  if (/\s/.test(v)) return "version string has embedded spaces";
  let epoch = 0;
  let rest = v;
  const colon = v.indexOf(":");
  if (colon >= 0) {
    const epochText = v.slice(0, colon);
    if (epochText === "") return "epoch in version is empty";
    // dpkg's strtol would also take a sign; Policy says the epoch is an unsigned integer.
    if (!/^[0-9]+$/.test(epochText)) return "epoch in version is not number";
    epoch = Number(epochText);
    if (epoch > MAX_EPOCH) return "epoch in version is too big";
    rest = v.slice(colon + 1);
    if (rest === "") return "nothing after colon in version number";
  }
  let upstream = rest;
  let revision = "";
  const hyphen = rest.lastIndexOf("-");
  if (hyphen >= 0) {
    upstream = rest.slice(0, hyphen);
    revision = rest.slice(hyphen + 1);
    if (revision === "") return "revision number is empty";
  }
  if (upstream === "") return "version number is empty";
  if (!isDigit(upstream.charCodeAt(0))) return "version number does not start with digit";
  // ':' may appear in upstream only when an epoch was split off; '-' only because the revision
  // was split at the last hyphen.
  for (const ch of upstream) {
    if (!isAlnum(ch.charCodeAt(0)) && !".-+~:".includes(ch)) return "invalid character in version number";
  }
  for (const ch of revision) {
    if (!isAlnum(ch.charCodeAt(0)) && !".+~".includes(ch)) return "invalid character in revision number";
  }
  return { epoch, upstream, revision };
}

/**
 * Compare two Debian versions with dpkg's ordering: epochs numerically, then upstream, then
 * revision, each by alternating non-digit runs (`~` before everything including the end,
 * then the end, then letters, then other characters) and digit runs compared as numbers.
 * Returns -1, 0 or 1. Throws SutureError INVALID_VERSION when either version is invalid.
 */
export function compareDebVersions(a: string | DebVersion, b: string | DebVersion): -1 | 0 | 1 {
  const va = typeof a === "string" ? parseDebVersion(a) : a;
  const vb = typeof b === "string" ? parseDebVersion(b) : b;
  if (va.epoch !== vb.epoch) return va.epoch < vb.epoch ? -1 : 1;
  return sign(compareFragment(va.upstream, vb.upstream)) || sign(compareFragment(va.revision, vb.revision));
}

/** The canonical text of a parsed version (epoch shown only when non-zero). */
export function formatDebVersion(v: DebVersion): string {
  return `${v.epoch ? `${v.epoch}:` : ""}${v.upstream}${v.revision ? `-${v.revision}` : ""}`;
}

function sign(n: number): -1 | 0 | 1 {
  return n < 0 ? -1 : n > 0 ? 1 : 0;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

function isAlpha(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

function isAlnum(c: number): boolean {
  return isDigit(c) || isAlpha(c);
}

/** Sort weight of one character in a non-digit run; NaN (past the end) weighs like a digit. */
function weight(c: number): number {
  if (Number.isNaN(c) || isDigit(c)) return 0;
  if (isAlpha(c)) return c;
  if (c === 126 /* ~ */) return -1;
  return c + 256;
}

function compareFragment(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    // Non-digit run: compare character weights pairwise until both sides reach a digit.
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const wa = weight(a.charCodeAt(i));
      const wb = weight(b.charCodeAt(j));
      if (wa !== wb) return wa - wb;
      i++;
      j++;
    }
    // Digit run: numeric value, compared without parsing so arbitrarily long runs work.
    while (a.charCodeAt(i) === 48) i++;
    while (b.charCodeAt(j) === 48) j++;
    let firstDiff = 0;
    while (isDigit(a.charCodeAt(i)) && isDigit(b.charCodeAt(j))) {
      if (!firstDiff) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (isDigit(a.charCodeAt(i))) return 1;
    if (isDigit(b.charCodeAt(j))) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}
