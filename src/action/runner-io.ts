import { randomUUID } from "node:crypto";
import { appendFileSync } from "node:fs";
import { SutureError } from "../errors/errors.ts";

/**
 * The few file and environment conventions a JavaScript action talks to its runner through, as
 * GitHub documents them ("Workflow commands for GitHub Actions"): inputs arrive as `INPUT_<NAME>`
 * variables, outputs and the job summary are appended to the files `GITHUB_OUTPUT` and
 * `GITHUB_STEP_SUMMARY` name, and annotations are `::error::` lines on stdout. They are small
 * enough that a dependency (and its bundle weight) would buy nothing.
 */

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * An input as the runner passes it: `INPUT_` + the name upper-cased with spaces as underscores
 * (dashes stay), trimmed; "" when not given. The runner fills in `default:` from action.yml itself.
 */
export function getInput(env: Env, name: string): string {
  return (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] ?? "").trim();
}

/** A boolean input, by the YAML 1.2 core schema's spellings as @actions/core reads them; "" is `fallback`. */
export function getBooleanInput(env: Env, name: string, fallback = false): boolean {
  const value = getInput(env, name);
  if (value === "") return fallback;
  if (["true", "True", "TRUE"].includes(value)) return true;
  if (["false", "False", "FALSE"].includes(value)) return false;
  throw new SutureError("USAGE", `input ${name} is ${JSON.stringify(value)}: use true or false`);
}

/** A list input: one item per line (commas separate too), blanks dropped. */
export function getListInput(env: Env, name: string): string[] {
  return getInput(env, name)
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * One `name=value` record for the GITHUB_OUTPUT file. A value with a line break takes the heredoc
 * form `name<<DELIM` … `DELIM`, with a delimiter that occurs in neither name nor value (else the
 * value could end the record early and set outputs of its own).
 */
export function outputRecord(name: string, value: string): string {
  if (!/^[A-Za-z_][\w-]*$/.test(name)) throw new SutureError("INTERNAL", `bad output name ${name}`);
  if (!/[\r\n]/.test(value)) return `${name}=${value}\n`;
  const delimiter = `ghadelimiter_${randomUUID()}`;
  if (value.includes(delimiter)) throw new SutureError("INTERNAL", "output value contains its delimiter");
  return `${name}<<${delimiter}\n${value}\n${delimiter}\n`;
}

/** Append outputs to the runner's GITHUB_OUTPUT file (no file outside a runner: nothing to do). */
export function setOutputs(env: Env, outputs: Readonly<Record<string, string>>): void {
  const file = env.GITHUB_OUTPUT;
  if (!file) return;
  appendFileSync(
    file,
    Object.entries(outputs)
      .map(([k, v]) => outputRecord(k, v))
      .join(""),
  );
}

/** Append Markdown to the job summary (GITHUB_STEP_SUMMARY), when the runner gave the file. */
export function appendSummary(env: Env, markdown: string): void {
  const file = env.GITHUB_STEP_SUMMARY;
  if (!file) return;
  appendFileSync(file, markdown.endsWith("\n") ? markdown : `${markdown}\n`);
}

/** An `::error::` annotation line; `%`, CR and LF escaped as the runner expects, so it stays one command. */
export function errorCommand(message: string): string {
  return `::error::${message.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A")}\n`;
}

/** A `::warning::` annotation line, escaped as errorCommand's. */
export function warningCommand(message: string): string {
  return `::warning::${message.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A")}\n`;
}

/** Text with no line the runner would take for a workflow command (`::name::`): `::` at a line's start becomes `: :`. */
export function neutraliseCommands(text: string): string {
  return text.replace(/^(\s*)::/gm, "$1: :");
}
