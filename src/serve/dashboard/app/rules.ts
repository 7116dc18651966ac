/// <reference lib="dom" />
/**
 * The rule editor: list, create, edit, delete and poll rules through the API. A rule's scanner
 * command is shown but not editable (the API runs no commands on the host; only the rules file
 * sets one), and an edit sends the stored scanner back unchanged so it is kept.
 */
import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { ApiError, getJson, type Rule, segment, send } from "./api.ts";
import { ErrorText, useData } from "./ui.ts";

type Strategy = Rule["tags"]["strategy"];

const list = (s: string) =>
  s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

function describeTags(t: Rule["tags"]): string {
  if (t.strategy === "list") return `list: ${t.list.join(", ")}`;
  if (t.strategy === "pattern")
    return `pattern ${t.pattern}${t.maxTags ? `, newest ${t.maxTags}` : ""}${t.exclude?.length ? `, except ${t.exclude.join(", ")}` : ""}`;
  return `latest${t.exclude?.length ? `, except ${t.exclude.join(", ")}` : ""}`;
}

/** The rule the form describes (`editing`'s scanner kept as it was). */
function ruleFrom(form: HTMLFormElement, editing?: Rule): Record<string, unknown> {
  const v = (name: string) =>
    ((form.elements.namedItem(name) as HTMLInputElement | null)?.value ?? "").trim();
  const strategy = v("strategy") as Strategy;
  const tags =
    strategy === "list"
      ? { strategy, list: list(v("list")) }
      : strategy === "pattern"
        ? {
            strategy,
            pattern: v("pattern"),
            ...(v("maxTags") ? { maxTags: Number(v("maxTags")) } : {}),
            ...(v("exclude") ? { exclude: list(v("exclude")) } : {}),
          }
        : { strategy, ...(v("exclude") ? { exclude: list(v("exclude")) } : {}) };
  const target = {
    ...(v("targetRegistry") ? { registry: v("targetRegistry") } : {}),
    ...(v("targetTag") ? { tag: v("targetTag") } : {}),
  };
  return {
    id: editing?.id ?? v("id"),
    image: v("image"),
    tags,
    ...(Object.keys(target).length ? { target } : {}),
    ...(v("platforms") ? { platforms: list(v("platforms")) } : {}),
    ...(v("interval") ? { intervalSeconds: Number(v("interval")) } : {}),
    ...(editing?.scanner ? { scanner: editing.scanner } : {}),
  };
}

function Field(props: {
  name: string;
  label: string;
  hint?: string;
  value?: string | number;
  required?: boolean;
  type?: string;
}) {
  const hintId = props.hint ? `${props.name}-hint` : undefined;
  return html`<div class="field">
    <label for=${`rule-${props.name}`}>${props.label}</label>
    <input
      id=${`rule-${props.name}`}
      name=${props.name}
      type=${props.type ?? "text"}
      defaultValue=${props.value ?? ""}
      required=${props.required}
      aria-describedby=${hintId}
    />
    ${props.hint && html`<span id=${hintId} class="hint">${props.hint}</span>`}
  </div>`;
}

function RuleForm({ editing, onDone }: { editing?: Rule; onDone: (message: string) => void }) {
  const [strategy, setStrategy] = useState<Strategy>(editing?.tags.strategy ?? "list");
  const [error, setError] = useState<string>();
  const t = editing?.tags;
  const submit = async (e: SubmitEvent) => {
    e.preventDefault();
    setError(undefined);
    const rule = ruleFrom(e.currentTarget as HTMLFormElement, editing);
    try {
      if (editing) await send("PUT", `rules/${segment(editing.id)}`, rule);
      else await send("POST", "rules", rule);
      onDone(`Rule ${String(rule.id)} ${editing ? "saved" : "created"}.`);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : (err as Error).message);
    }
  };
  return html`
    <form class="card" onSubmit=${submit} aria-labelledby="rule-form-h">
      <h2 id="rule-form-h">${editing ? `Edit rule ${editing.id}` : "New rule"}</h2>
      ${!editing && html`<${Field} name="id" label="Rule id" hint="Lower-case letters, digits, . _ -" required=${true} />`}
      <${Field} name="image" label="Repository" hint="registry/repository, without a tag" value=${editing?.image} required=${true} />
      <div class="field">
        <label for="rule-strategy">Tags to watch</label>
        <select id="rule-strategy" name="strategy" value=${strategy} onChange=${(e: Event) => setStrategy((e.currentTarget as HTMLSelectElement).value as Strategy)}>
          <option value="list">A list of tags</option>
          <option value="pattern">Tags matching a pattern</option>
          <option value="latest">The newest tag</option>
        </select>
      </div>
      ${strategy === "list" && html`<${Field} name="list" label="Tags" hint="Comma-separated" value=${t?.strategy === "list" ? t.list.join(", ") : ""} required=${true} />`}
      ${
        strategy === "pattern" &&
        html`<${Field} name="pattern" label="Tag pattern" hint="A regular expression, e.g. ^1\\.[0-9]+$" value=${t?.strategy === "pattern" ? t.pattern : ""} required=${true} />
        <${Field} name="maxTags" label="Newest tags at most" type="number" value=${t?.strategy === "pattern" ? t.maxTags : undefined} />`
      }
      ${strategy !== "list" && html`<${Field} name="exclude" label="Tags to leave out" hint="Comma-separated" value=${t && t.strategy !== "list" ? (t.exclude ?? []).join(", ") : ""} />`}
      <${Field} name="targetTag" label="Patched tag" hint="Template, default {{ .SourceTag }}-patched" value=${editing?.target?.tag} />
      <${Field} name="targetRegistry" label="Target registry" hint="Default: the source's registry" value=${editing?.target?.registry} />
      <${Field} name="platforms" label="Platforms" hint="Comma-separated, e.g. linux/amd64; default every linux platform" value=${editing?.platforms?.join(", ")} />
      <${Field} name="interval" label="Poll interval (seconds)" type="number" value=${editing?.intervalSeconds ?? 300} />
      ${editing?.scanner && html`<p class="muted">Scanner: <code>${editing.scanner.command.join(" ")}</code> (set in the rules file; kept)</p>`}
      <div role="alert">${error ?? ""}</div>
      <div class="actions">
        <button class="primary" type="submit">${editing ? "Save rule" : "Create rule"}</button>
        <button type="button" onClick=${() => onDone("")}>Cancel</button>
      </div>
    </form>
  `;
}

export function RulesView() {
  const { data, error, reload } = useData(() => getJson<Rule[]>("rules"), []);
  const [editing, setEditing] = useState<Rule | "new">();
  const [message, setMessage] = useState("");
  const done = (m: string) => {
    setEditing(undefined);
    setMessage(m);
    reload();
  };
  const act = async (what: string, run: () => Promise<unknown>) => {
    try {
      await run();
      done(what);
    } catch (e) {
      setMessage(e instanceof ApiError ? `${e.code}: ${e.message}` : (e as Error).message);
    }
  };
  return html`
    <h1 tabindex="-1">Rules</h1>
    <${ErrorText} error=${error} />
    <p role="status">${message}</p>
    ${
      editing
        ? html`<${RuleForm} key=${editing === "new" ? "new" : editing.id} editing=${editing === "new" ? undefined : editing} onDone=${done} />`
        : html`<button class="primary" type="button" onClick=${() => setEditing("new")}>New rule</button>`
    }
    ${
      data &&
      html`<table>
        <caption class="muted">What the service watches</caption>
        <thead>
          <tr>
            <th scope="col">Rule</th><th scope="col">Repository</th><th scope="col">Tags</th>
            <th scope="col">Patched tag</th><th scope="col">Every</th><th scope="col">Scanner</th><th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          ${data.map(
            (r) => html`<tr key=${r.id}>
              <th scope="row" class="mono">${r.id}</th>
              <td class="mono">${r.image}</td>
              <td>${describeTags(r.tags)}</td>
              <td class="mono">${r.target?.tag ?? "{{ .SourceTag }}-patched"}</td>
              <td>${r.intervalSeconds} s</td>
              <td>${r.scanner ? html`<code>${r.scanner.command[0]}</code>` : "update all"}</td>
              <td>
                <div class="actions">
                <button type="button" aria-label=${`Poll ${r.id} now`} onClick=${() => act(`Polling ${r.id}.`, () => send("POST", `rules/${segment(r.id)}/poll`))}>Poll now</button>
                <button type="button" aria-label=${`Edit ${r.id}`} onClick=${() => setEditing(r)}>Edit</button>
                <button type="button" aria-label=${`Delete ${r.id}`} onClick=${() => confirm(`Delete rule ${r.id}? Its history stays.`) && act(`Rule ${r.id} deleted.`, () => send("DELETE", `rules/${segment(r.id)}`))}>Delete</button>
                </div>
              </td>
            </tr>`,
          )}
        </tbody>
      </table>`
    }
  `;
}
