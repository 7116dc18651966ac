/**
 * The rules of `suture serve`: which repositories it watches, which of their tags (the strategies
 * of `suture bulk`, copa's PatchConfig), where patched images go, how often it looks, and which
 * scanner (if any) says what to fix. A rules file (YAML) seeds the store; the API edits rules one
 * at a time. Both go through `checkRule`, so a rule the service holds is always valid.
 */
import { LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { type BulkImageSpec, ImageEntry, imageSpecOf, type Path } from "../bulk/config.ts";
import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import { readConfigText } from "../fs/read-capped.ts";
import type { Rule } from "./store.ts";

export const RULES_API_VERSION = "suture.dev/v1alpha1";
export const RULES_KIND = "ServeRules";
const MAX_RULES_BYTES = 1024 * 1024;
/** A poll more often than this hammers a registry for nothing. */
const MIN_INTERVAL_SECONDS = 5;
const DEFAULT_INTERVAL_SECONDS = 300;

const RULE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

const Scanner = z.strictObject({
  command: z
    .array(z.string().min(1))
    .min(1, 'give the command and its arguments, e.g. ["trivy", "image", "-f", "json", "{image}"]'),
  format: z.string().min(1).optional(),
});

/** A rule as the API takes it (and the store holds it). */
const RuleSchema = z.strictObject({
  id: z.string(),
  image: ImageEntry.shape.image,
  tags: ImageEntry.shape.tags,
  platforms: ImageEntry.shape.platforms,
  target: ImageEntry.shape.target,
  intervalSeconds: z.number().int("intervalSeconds must be a whole number").optional(),
  scanner: Scanner.optional(),
});

/** A rule as the file writes it: `interval: 30s | 5m | 1h | <seconds>`. */
const FileRule = RuleSchema.omit({ intervalSeconds: true }).extend({
  interval: z.union([z.string(), z.number()]).optional(),
});

const RulesDocument = z.strictObject({
  apiVersion: z.string(),
  kind: z.string(),
  rules: z.array(z.unknown()).min(1, "list at least one rule"),
});

/** `30s`, `5m`, `1h` or a number of seconds. */
function intervalSeconds(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "number") return value;
  const m = /^(\d{1,7})(s|m|h)?$/.exec(value.trim());
  if (!m) return Number.NaN;
  return Number(m[1]) * (m[2] === "h" ? 3600 : m[2] === "m" ? 60 : 1);
}

function fieldName(path: Path): string {
  return path.reduce<string>(
    (out, p) => (typeof p === "number" ? `${out}[${p}]` : out ? `${out}.${p}` : p),
    "",
  );
}

/**
 * Check a rule (from the API or the file) and resolve it: the stored form and the bulk spec its
 * jobs are made with. `fail` receives the path of the offending field.
 */
export function checkRule(
  raw: unknown,
  fail: (path: Path, why: string) => never,
): { rule: Rule; spec: BulkImageSpec } {
  const parsed = RuleSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path.filter((p): p is string | number => typeof p !== "symbol");
    if (issue.code === "unrecognized_keys")
      fail([...path, issue.keys[0]!], "unknown field: remove it or check its spelling");
    if (issue.code === "invalid_type" && issue.input === undefined) fail(path, "is required");
    fail(path, issue.message);
  }
  const data = parsed.data!;
  if (!RULE_ID.test(data.id))
    fail(
      ["id"],
      `${quoteUntrusted(data.id)} is not a rule id: use lower-case letters, digits, . _ - (at most 63)`,
    );
  const interval = data.intervalSeconds ?? DEFAULT_INTERVAL_SECONDS;
  if (!(interval >= MIN_INTERVAL_SECONDS))
    fail(["intervalSeconds"], `the interval must be at least ${MIN_INTERVAL_SECONDS} seconds`);
  const spec = imageSpecOf({ ...data, name: data.id }, undefined, (path, why) => fail(path, why));
  const rule: Rule = {
    id: data.id,
    image: `${spec.repository.registry}/${spec.repository.repository}`,
    tags: data.tags as Rule["tags"],
    ...(data.target ? { target: data.target } : {}),
    ...(data.platforms ? { platforms: data.platforms } : {}),
    intervalSeconds: interval,
    ...(data.scanner ? { scanner: data.scanner as Rule["scanner"] } : {}),
  };
  return { rule, spec };
}

/** The bulk spec of a stored rule (checked when it was stored). */
export function ruleSpec(rule: Rule): BulkImageSpec {
  return checkRule(rule, (path, why) => {
    throw new SutureError("USAGE", `rule ${rule.id}: ${fieldName(path)}: ${why}`);
  }).spec;
}

/** An API body as a rule: one-line USAGE errors naming the field. */
export function ruleFromJson(body: unknown, id?: string): { rule: Rule; spec: BulkImageSpec } {
  const raw = id !== undefined && body && typeof body === "object" ? { ...body, id } : body;
  return checkRule(raw, (path, why) => {
    throw new SutureError("USAGE", `rule${path.length ? ` ${fieldName(path)}` : ""}: ${why}`);
  });
}

/** Read and check a rules file. */
export async function readRulesFile(file: string): Promise<Rule[]> {
  return parseRules(await readConfigText(file, MAX_RULES_BYTES, `rules file ${file}`), file);
}

/** Check a rules file's text; `file` names it in messages (`file:line: rules[1].tags: …`). */
export function parseRules(text: string, file: string): Rule[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const fail = (path: Path, why: string): never => {
    let range: [number, number, number] | undefined;
    for (let n = path.length; n >= 0 && !range; n--) {
      const node = n ? doc.getIn(path.slice(0, n), true) : doc.contents;
      range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    }
    const where = fieldName(path);
    const line = range ? `:${lines.linePos(range[0]).line}` : "";
    throw new SutureError("USAGE", `${file}${line}: ${where ? `${where}: ` : ""}${why}`);
  };
  const yamlError = doc.errors[0];
  if (yamlError) {
    throw new SutureError(
      "USAGE",
      `${file}:${lines.linePos(yamlError.pos[0]).line}: not valid YAML (${yamlError.message.split("\n")[0]}): fix the syntax`,
    );
  }
  const raw: unknown = doc.toJS({ maxAliasCount: 100 });
  const head = (raw ?? {}) as { apiVersion?: unknown; kind?: unknown };
  if (head.apiVersion !== RULES_API_VERSION || head.kind !== RULES_KIND)
    fail([], `not a rules file: want apiVersion: ${RULES_API_VERSION} and kind: ${RULES_KIND}`);
  const parsed = RulesDocument.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path.filter((p): p is string | number => typeof p !== "symbol");
    if (issue.code === "unrecognized_keys")
      fail([...path, issue.keys[0]!], "unknown field: remove it or check its spelling");
    fail(path, issue.message);
  }
  const seen = new Set<string>();
  return parsed.data!.rules.map((entry, i) => {
    const at = (path: Path, why: string) => fail(["rules", i, ...path], why);
    const file = FileRule.safeParse(entry);
    if (!file.success) {
      // The API's schema words the same mistakes the same way (`interval` is the file's own).
      const { interval: _, ...apiShaped } = (entry ?? {}) as Record<string, unknown>;
      if (entry && typeof entry === "object") checkRule(apiShaped, at);
      return at([], file.error.issues[0]!.message);
    }
    const { interval, ...rest } = file.data;
    const seconds = intervalSeconds(interval);
    if (Number.isNaN(seconds))
      at(["interval"], `${quoteUntrusted(String(interval))} is not an interval: write 30s, 5m or 1h`);
    const { rule } = checkRule(
      { ...rest, ...(seconds !== undefined ? { intervalSeconds: seconds } : {}) },
      (path, why) => at(path[0] === "intervalSeconds" ? ["interval"] : path, why),
    );
    if (seen.has(rule.id)) at(["id"], `rule id ${rule.id} is used twice: give each rule its own id`);
    seen.add(rule.id);
    return rule;
  });
}
