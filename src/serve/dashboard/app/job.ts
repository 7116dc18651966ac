/// <reference lib="dom" />
/**
 * One job, live: its state (announced to screen readers as it changes), its log as progress
 * events arrive over the API's event stream, cancel and retry, and once it ends, what it did.
 */
import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import {
  ApiError,
  downloadVex,
  followJob,
  getJson,
  type JobEvent,
  type JobRecord,
  segment,
  send,
} from "./api.ts";
import { ErrorText, eventLine, href, StateBadge, when } from "./ui.ts";

const ENDED = new Set(["succeeded", "failed", "cancelled"]);

/** Transfer progress is noise in a log: only a finished transfer is a line. */
const worthALine = (e: JobEvent) => e.type !== "blob" || e.bytes >= e.total;

export function JobView({ id }: { id: string }) {
  const [job, setJob] = useState<JobRecord>();
  const [log, setLog] = useState<string[]>([]);
  const [error, setError] = useState<string>();
  const [tick, setTick] = useState(0);

  useEffect(() => {
    const abort = new AbortController();
    let live = true;
    setLog([]);
    setError(undefined);
    const refresh = () => getJson<JobRecord>(`jobs/${segment(id)}`).then((j) => live && setJob(j));
    (async () => {
      await refresh();
      // The stream starts with the job's state, then live events. The recorded log is fetched
      // once the stream is open, so nothing falls between the two; events it already holds are
      // not repeated.
      let history: JobEvent[] | undefined;
      const early: JobEvent[] = [];
      const add = (events: JobEvent[]) =>
        live && setLog((l) => [...l, ...events.filter(worthALine).map(eventLine)]);
      const streamed = followJob(
        id,
        (e) => {
          if (e.type === "job-state") setJob((j) => (j ? { ...j, state: e.state } : j));
          if (!history) {
            early.push(e);
            if (early.length === 1)
              void getJson<JobEvent[]>(`jobs/${segment(id)}/logs`).then((h) => {
                history = h;
                const tail = new Set(h.slice(-early.length - 50).map((x) => JSON.stringify(x)));
                add([...h, ...early.slice(1).filter((x) => !tail.has(JSON.stringify(x)))]);
              });
            return;
          }
          add([e]);
          if (e.type === "job-state" && ENDED.has(e.state)) void refresh();
        },
        abort.signal,
      );
      await streamed;
      await refresh();
    })().catch((e: Error) => live && setError(e.message));
    return () => {
      live = false;
      abort.abort();
    };
  }, [id, tick]);

  const act = async (what: "cancel" | "retry") => {
    setError(undefined);
    try {
      const res = await send<JobRecord | { cancelled: boolean }>("POST", `jobs/${segment(id)}/${what}`);
      if (what === "retry" && res && "id" in res) location.hash = href("job", res.id);
      else setTick((t) => t + 1);
    } catch (e) {
      setError(e instanceof ApiError ? `${e.code}: ${e.message}` : (e as Error).message);
    }
  };

  const ended = job && ENDED.has(job.state);
  const repository = job?.spec.source.replace(/:[^:/@]+@sha256:[0-9a-f]+$/, "");
  return html`
    <h1 tabindex="-1">Job <span class="mono">${id.slice(0, 8)}</span></h1>
    <${ErrorText} error=${error} />
    ${
      job &&
      html`
        <dl class="facts">
          <dt>State</dt>
          <dd role="status" aria-live="polite" data-testid="job-state"><${StateBadge} state=${job.state} /></dd>
          <dt>Source</dt>
          <dd class="mono">${job.spec.source}</dd>
          <dt>Target</dt>
          <dd class="mono">${job.spec.target}</dd>
          <dt>Image</dt>
          <dd><a href=${href("image", repository ?? "")}>${repository}</a></dd>
          <dt>Reason</dt>
          <dd>${job.spec.reason} (rule <a href="#/rules">${job.spec.ruleId}</a>)</dd>
          <dt>Attempts</dt>
          <dd>${job.attempts}</dd>
          <dt>Started</dt>
          <dd>${when(job.startedAt)}</dd>
          ${job.finishedAt && html`<dt>Finished</dt><dd>${when(job.finishedAt)}</dd>`}
          ${job.error && html`<dt>Error</dt><dd class="error">${job.error.code}: ${job.error.message}</dd>`}
        </dl>
        <div class="actions">
          ${!ended && html`<button type="button" onClick=${() => act("cancel")}>Cancel job</button>`}
          ${(job.state === "failed" || job.state === "cancelled") && html`<button type="button" onClick=${() => act("retry")}>Retry job</button>`}
          ${job.result?.status === "patched" && html`<button type="button" onClick=${() => downloadVex(id).catch((e: Error) => setError(e.message))}>Download VEX</button>`}
        </div>
        ${
          job.result &&
          html`<section aria-labelledby="result-h">
            <h2 id="result-h">Result: <${StateBadge} state=${job.result.status} /></h2>
            ${job.result.digest && html`<p class="mono">${job.result.target ?? ""} ${job.result.digest}</p>`}
            <p>CVEs fixed: ${job.result.cves.length ? html`<span class="mono">${job.result.cves.join(", ")}</span>` : "none"}</p>
            ${
              job.result.changed.length > 0 &&
              html`<table>
                <caption class="muted">Packages updated</caption>
                <thead><tr><th scope="col">Package</th><th scope="col">From</th><th scope="col">To</th></tr></thead>
                <tbody>
                  ${job.result.changed.map((c) => html`<tr><td class="mono">${c.name}</td><td class="mono">${c.from ?? ""}</td><td class="mono">${c.to}</td></tr>`)}
                </tbody>
              </table>`
            }
          </section>`
        }
      `
    }
    <section aria-labelledby="log-h">
      <h2 id="log-h">Log</h2>
      <ol class="log" aria-label="Job log" tabindex="0">
        ${log.map((line) => html`<li>${line}</li>`)}
      </ol>
    </section>
  `;
}
