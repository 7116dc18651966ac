/**
 * Support for the property-based fuzz tests (`src/**\/*.fuzz.test.ts`): bounded, reproducible
 * fast-check settings, the one assertion every parser of untrusted bytes must satisfy, and
 * mutators that turn real seed documents into hostile variants.
 *
 * Runs are fixed by default so CI is reproducible. Locally:
 *   SUTURE_FUZZ_RUNS=5000 node --test src/archive/tar/tar.fuzz.test.ts   (more runs per property)
 *   SUTURE_FUZZ_SEED=12345 node --test ...                            (another seed)
 * A failure prints fast-check's seed (and the shrunk counterexample): SUTURE_FUZZ_SEED=<seed> with
 * the same SUTURE_FUZZ_RUNS replays it exactly.
 */
import assert from "node:assert/strict";
import { after } from "node:test";
import fc from "fast-check";
import { type ErrorCode, SutureError } from "../../src/errors/errors.ts";

const DEFAULT_SEED = 20261201;

export const FUZZ_SEED = numberFromEnv("SUTURE_FUZZ_SEED") ?? DEFAULT_SEED;
const RUNS_OVERRIDE = numberFromEnv("SUTURE_FUZZ_RUNS");

function numberFromEnv(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(text)}`);
  return n;
}

/**
 * fast-check parameters for one property: `runs` by default (SUTURE_FUZZ_RUNS replaces it), the
 * fixed seed, and `perRunMs` as the budget of one run of an async property (a run that takes
 * longer fails as a hang). Synchronous properties check their budget with `withinBudget`.
 */
export function fuzzParameters<T>(runs: number, perRunMs = 10_000): fc.Parameters<T> {
  return { numRuns: RUNS_OVERRIDE ?? runs, seed: FUZZ_SEED, timeout: perRunMs };
}

/**
 * Budget of one synchronous parse of a fuzzed document (at most ~100 kB). Generous, because CI
 * cores are shared and busy; a quadratic or exponential parser on such input takes far longer.
 */
export const PARSE_BUDGET_MS = 2000;

/** Run a synchronous parse and fail when it takes longer than `budgetMs` (super-linear blow-up). */
export function withinBudget<T>(budgetMs: number, run: () => T): T {
  const start = performance.now();
  try {
    return run();
  } finally {
    const took = performance.now() - start;
    assert.ok(took < budgetMs, `one parse took ${took.toFixed(0)} ms, budget ${budgetMs} ms`);
  }
}

/**
 * The contract for bad input: the only thing a parser may throw is a SutureError with one of
 * `codes`, and its message is one line (it is printed as `error: … [CODE]`).
 */
export function assertCleanFailure(e: unknown, codes: readonly ErrorCode[]): void {
  if (!(e instanceof SutureError)) {
    const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
    assert.fail(`expected a SutureError (${codes.join("|")}), got: ${detail}`);
  }
  assert.ok(codes.includes(e.code), `unexpected code ${e.code} (want ${codes.join("|")}): ${e.message}`);
  assert.ok(!/[\r\n]/.test(e.message), `error message is not one line: ${JSON.stringify(e.message)}`);
  assert.ok(e.message.length > 0, "error message is empty");
}

/**
 * For `assert.throws`/`assert.rejects`: the error is a clean failure (see assertCleanFailure)
 * with `code` whose message matches `pattern`.
 */
export function cleanFailure(code: ErrorCode, pattern: RegExp): (e: unknown) => true {
  return (e) => {
    assertCleanFailure(e, [code]);
    assert.match((e as Error).message, pattern);
    return true;
  };
}

/** Either the parse succeeds (its result is returned) or it fails cleanly (undefined). */
export function parsesOrFailsCleanly<T>(codes: readonly ErrorCode[], run: () => T): T | undefined {
  try {
    return run();
  } catch (e) {
    assertCleanFailure(e, codes);
    return undefined;
  }
}

export async function parsesOrFailsCleanlyAsync<T>(
  codes: readonly ErrorCode[],
  run: () => Promise<T>,
): Promise<T | undefined> {
  try {
    return await run();
  } catch (e) {
    assertCleanFailure(e, codes);
    return undefined;
  }
}

// Rejections nobody awaited (a stream error without a listener, a forgotten promise) would
// otherwise only surface as a warning long after the run that caused them.
const unhandled: unknown[] = [];
process.on("unhandledRejection", (reason) => {
  unhandled.push(reason);
});

/** Fail when any promise was rejected without a handler since the last call. */
export async function assertNoUnhandledRejections(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  const seen = unhandled.splice(0);
  assert.equal(seen.length, 0, `unhandled rejection: ${seen.map((r) => String(r)).join("; ")}`);
}

// The listener above replaces Node's own report, so check once more when the file's tests end.
after(() => assertNoUnhandledRejections());

// ---------------------------------------------------------------------------------------------
// Mutators
// ---------------------------------------------------------------------------------------------

/** Byte strings that tend to break parsers: traversal, NUL, line breaks, huge and signed numbers. */
export const HOSTILE_TOKENS: readonly string[] = [
  "../",
  "../../../../etc/passwd",
  "/",
  "\0",
  "\n",
  "\r\n",
  "\n\n",
  "\n x", // a deb822 continuation line: the value now spans two lines
  " ",
  "\t",
  ":",
  "=",
  "#",
  '"',
  "\\",
  "%",
  "%zz",
  "-",
  "~",
  "99999999999999999999999",
  "77777777777",
  "-1",
  "1e308",
  "NaN",
  "0x10",
  "\u0080",
  "\uffff",
  "\ud800",
  // Keys of Object.prototype: a lookup table indexed by untrusted text must not find them.
  "__proto__",
  "constructor",
  "toString",
  "hasOwnProperty",
];

/** One edit of a byte string; positions are taken modulo its length when applied. */
export type Mutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "set"; at: number; value: number }
  | { kind: "truncate"; at: number }
  | { kind: "delete"; at: number; length: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "overwrite"; at: number; bytes: Uint8Array }
  | { kind: "duplicate"; at: number; length: number }
  | { kind: "repeat"; at: number; length: number; times: number };

const tokenBytes = fc.constantFrom(...HOSTILE_TOKENS).map((t) => new Uint8Array(Buffer.from(t, "utf8")));
const someBytes = fc.oneof(tokenBytes, fc.uint8Array({ minLength: 1, maxLength: 16 }));

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: someBytes }),
  fc.record({ kind: fc.constant("overwrite" as const), at: fc.nat(), bytes: someBytes }),
  fc.record({
    kind: fc.constant("duplicate" as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 4096 }),
  }),
  // Inflates a small piece (a size limit, a record count, a line length) far past its usual size.
  fc.record({
    kind: fc.constant("repeat" as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 16 }),
    times: fc.integer({ min: 2, max: 3000 }),
  }),
);

export function applyMutation(input: Buffer, m: Mutation): Buffer {
  return mutate(input, m) as Buffer;
}

function mutate(input: Buffer, m: Mutation): Buffer {
  const n = input.length;
  const at = n === 0 ? 0 : m.at % (n + 1);
  switch (m.kind) {
    case "flip":
    case "set": {
      if (n === 0) return input;
      const out = Buffer.from(input);
      const i = m.at % n;
      out[i] = m.kind === "flip" ? out[i]! ^ (1 << m.bit) : m.value;
      return out;
    }
    case "truncate":
      return input.subarray(0, at);
    case "delete":
      return Buffer.concat([input.subarray(0, at), input.subarray(at + m.length)]);
    case "insert":
      return Buffer.concat([input.subarray(0, at), m.bytes, input.subarray(at)]);
    case "overwrite": {
      const out = Buffer.from(input);
      out.set(m.bytes.subarray(0, Math.max(0, n - at)), at);
      return out;
    }
    case "duplicate":
      return Buffer.concat([input.subarray(0, at + m.length), input.subarray(at)]);
    case "repeat": {
      const piece = input.subarray(at, at + m.length);
      return Buffer.concat([input.subarray(0, at), ...Array(m.times).fill(piece), input.subarray(at)]);
    }
  }
}

/** Between one and `max` mutations applied to `seed`. */
export function mutatedBytes(seed: Buffer, max = 4): fc.Arbitrary<Buffer> {
  return fc
    .array(mutationArb, { minLength: 1, maxLength: max })
    .map((ms) => ms.reduce((acc, m) => applyMutation(acc, m), seed));
}

/** Like mutatedBytes, for text documents (mutated as UTF-8 bytes, decoded leniently). */
export function mutatedText(seed: string, max = 4): fc.Arbitrary<string> {
  return mutatedBytes(Buffer.from(seed, "utf8"), max).map((b) => b.toString("utf8"));
}

/** Mutated seeds, arbitrary text and arbitrary bytes-as-text, most weight on the seeds. */
export function hostileText(seeds: readonly string[], max = 4): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.oneof(...seeds.map((s) => mutatedText(s, max))) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 300 }) },
    {
      weight: 1,
      arbitrary: fc
        .array(fc.constantFrom(...HOSTILE_TOKENS, "a", "1", "Package", "Version"), {
          maxLength: 40,
        })
        .map((parts) => parts.join("")),
    },
  );
}

/**
 * Arbitrary JSON-shaped values, including deep nesting: a parser of JSON documents must neither
 * recurse without bound nor assume a field's type.
 */
export const hostileJsonValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 500, max: 3000 }).map((depth) => {
      let v: unknown = "x";
      for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { a: v };
      return v;
    }),
  },
);

/**
 * Structural mutations of a parsed JSON document: a value somewhere inside it is replaced with an
 * arbitrary one (wrong type, hostile string, deep nesting) or removed.
 */
export function mutatedJson(seed: unknown): fc.Arbitrary<unknown> {
  const paths = jsonPaths(seed);
  const replacement = fc.oneof(
    hostileJsonValue,
    fc.constantFrom<unknown>(...HOSTILE_TOKENS, null, -1, 1e308, 2 ** 53 + 2, true, {}, []),
    fc.constant(undefined), // removes the field
  );
  return fc
    .array(fc.tuple(fc.constantFrom(...paths), replacement), { minLength: 1, maxLength: 3 })
    .map((edits) => {
      let doc = structuredClone(seed);
      for (const [path, value] of edits) doc = replaceAt(doc, path, value);
      return doc;
    });
}

type JsonPath = readonly (string | number)[];

function jsonPaths(value: unknown, prefix: JsonPath = [], out: JsonPath[] = []): JsonPath[] {
  out.push(prefix);
  if (out.length > 5000) return out;
  if (Array.isArray(value)) for (const [i, v] of value.entries()) jsonPaths(v, [...prefix, i], out);
  else if (value && typeof value === "object")
    for (const [k, v] of Object.entries(value)) jsonPaths(v, [...prefix, k], out);
  return out;
}

function replaceAt(doc: unknown, path: JsonPath, value: unknown): unknown {
  if (path.length === 0) return value;
  if (!doc || typeof doc !== "object") return doc; // an earlier edit replaced the whole document
  let parent = doc as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) {
    const next = parent[key];
    if (!next || typeof next !== "object") return doc; // an earlier edit changed the shape
    parent = next as Record<string | number, unknown>;
  }
  const last = path.at(-1)!;
  if (value === undefined) {
    if (Array.isArray(parent) && typeof last === "number") parent.splice(last, 1);
    else delete parent[last];
  } else parent[last] = value;
  return doc;
}
