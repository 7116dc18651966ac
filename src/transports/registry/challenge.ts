/**
 * `WWW-Authenticate` parsing (RFC 7235) for the two schemes registries use:
 * `Basic realm="…"` and `Bearer realm="…",service="…",scope="…"`.
 */

/** One authentication challenge: the scheme in lower case and its parameters (names lower-cased). */
export interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

const tokenChar = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

/**
 * Parse one or more `WWW-Authenticate` header values into challenges, in order. A header may hold
 * several challenges separated by commas (`Bearer realm="a",service="b", Basic realm="c"`), and a
 * quoted value may contain commas and escaped quotes. Malformed trailing text is ignored rather
 * than thrown: a registry's odd header must not hide the status code that came with it.
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const values = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const value of values) out.push(...parseOne(value));
  return out;
}

function parseOne(text: string): Challenge[] {
  const challenges: Challenge[] = [];
  let i = 0;
  const n = text.length;
  const skipSpace = () => {
    while (i < n && (text[i] === " " || text[i] === "\t")) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && tokenChar.test(text[i]!)) i++;
    return text.slice(start, i);
  };
  const readQuoted = (): string => {
    // Caller has checked text[i] === '"'.
    i++;
    let value = "";
    while (i < n && text[i] !== '"') {
      if (text[i] === "\\" && i + 1 < n) i++;
      value += text[i];
      i++;
    }
    i++; // closing quote (or end of input)
    return value;
  };

  let current: { scheme: string; params: Record<string, string> } | undefined;
  while (i < n) {
    skipSpace();
    while (i < n && text[i] === ",") {
      i++;
      skipSpace();
    }
    if (i >= n) break;
    const word = readToken();
    if (!word) {
      // Not a token: skip one character so a stray symbol cannot loop forever.
      i++;
      continue;
    }
    skipSpace();
    if (current && text[i] === "=") {
      // A parameter of the current challenge (`name=value`), unless it is a token68 (`abc==`).
      i++;
      skipSpace();
      const value = text[i] === '"' ? readQuoted() : readToken();
      current.params[word.toLowerCase()] = value;
      continue;
    }
    current = { scheme: word.toLowerCase(), params: {} };
    challenges.push(current);
  }
  return challenges;
}

/** The first challenge of a scheme we can answer: Bearer wins over Basic when both are offered. */
export function pickChallenge(challenges: Challenge[]): Challenge | undefined {
  return (
    challenges.find((c) => c.scheme === "bearer" && c.params.realm) ??
    challenges.find((c) => c.scheme === "basic")
  );
}
