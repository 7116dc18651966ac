/**
 * RPM version ordering as rpm ≥ 4.16's rpmverCmp (the Lua `rpm.vercmp`): `rpmvercmp` on each of
 * epoch, version and release of an `[epoch:]version[-release]` string. Tested against real rpm.
 */

export interface RpmEvr {
  /** Absent epoch means 0. */
  epoch?: string;
  version: string;
  /** Absent release sorts before any release, as in rpm's rpmverCmp. */
  release?: string;
}

/** Split `[epoch:]version[-release]` the way rpm does: epoch is leading digits before ':'. */
export function parseRpmEvr(evr: string): RpmEvr {
  const m = /^(\d*):/.exec(evr);
  const rest = m ? evr.slice(m[0].length) : evr;
  const dash = rest.lastIndexOf("-");
  return {
    epoch: m ? m[1] || "0" : undefined,
    version: dash >= 0 ? rest.slice(0, dash) : rest,
    release: dash >= 0 ? rest.slice(dash + 1) : undefined,
  };
}

/** Whether `v` can be compared as an RPM EVR (rpm itself accepts any string; we refuse blanks). */
export function isValidRpmVersion(v: string): boolean {
  return v !== "" && !/\s/.test(v) && parseRpmEvr(v).version !== "";
}

/** Compare two `[epoch:]version[-release]` strings: -1, 0 or 1. */
export function compareRpmVersions(a: string, b: string): -1 | 0 | 1 {
  const x = parseRpmEvr(a);
  const y = parseRpmEvr(b);
  const byEpoch = rpmvercmp(x.epoch ?? "0", y.epoch ?? "0");
  if (byEpoch) return byEpoch;
  const byVersion = rpmvercmp(x.version, y.version);
  if (byVersion) return byVersion;
  // rpm's rpmverCmp: a release beats no release; two absent releases are equal.
  if (x.release === undefined || y.release === undefined) {
    return x.release === y.release ? 0 : x.release === undefined ? -1 : 1;
  }
  return rpmvercmp(x.release, y.release);
}

const isDigit = (c: string | undefined) => c !== undefined && c >= "0" && c <= "9";
const isAlpha = (c: string | undefined) =>
  c !== undefined && ((c >= "a" && c <= "z") || (c >= "A" && c <= "Z"));
const isAlnum = (c: string | undefined) => isDigit(c) || isAlpha(c);

/**
 * rpm's segment comparison of one version or release string: separators are ignored, digit
 * segments compare numerically and beat alpha segments, `~` sorts before everything (even the
 * end) and `^` sorts after the end but before any further segment.
 */
export function rpmvercmp(a: string, b: string): -1 | 0 | 1 {
  if (a === b) return 0;
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    while (i < a.length && !isAlnum(a[i]) && a[i] !== "~" && a[i] !== "^") i++;
    while (j < b.length && !isAlnum(b[j]) && b[j] !== "~" && b[j] !== "^") j++;
    if (a[i] === "~" || b[j] === "~") {
      if (a[i] !== "~") return 1;
      if (b[j] !== "~") return -1;
      i++;
      j++;
      continue;
    }
    if (a[i] === "^" || b[j] === "^") {
      if (i >= a.length) return -1;
      if (j >= b.length) return 1;
      if (a[i] !== "^") return 1;
      if (b[j] !== "^") return -1;
      i++;
      j++;
      continue;
    }
    if (i >= a.length || j >= b.length) break;
    const numeric = isDigit(a[i]);
    const inSegment = numeric ? isDigit : isAlpha;
    let ei = i;
    let ej = j;
    while (ei < a.length && inSegment(a[ei])) ei++;
    while (ej < b.length && inSegment(b[ej])) ej++;
    // Segments of different kinds: a number is newer than letters.
    if (ej === j) return numeric ? 1 : -1;
    let sa = a.slice(i, ei);
    let sb = b.slice(j, ej);
    if (numeric) {
      sa = sa.replace(/^0+/, "");
      sb = sb.replace(/^0+/, "");
      if (sa.length !== sb.length) return sa.length > sb.length ? 1 : -1;
    }
    if (sa !== sb) return sa < sb ? -1 : 1;
    i = ei;
    j = ej;
  }
  if (i >= a.length && j >= b.length) return 0;
  return i >= a.length ? -1 : 1;
}
