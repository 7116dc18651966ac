/// <reference lib="dom" />
/**
 * One image's patch history, newest first: per run its tag, reason, result per platform, the
 * CVEs fixed, the error of a failed run, and its OpenVEX document to download.
 */
import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { downloadVex, getJson, type PatchRecord, segment } from "./api.ts";
import { ErrorText, href, StateBadge, useData, when } from "./ui.ts";

function VexButton({ record }: { record: PatchRecord }) {
  const [error, setError] = useState<string>();
  if (record.outcome?.status !== "patched") return null;
  return html`
    <button type="button" onClick=${() => downloadVex(record.jobId).catch((e: Error) => setError(e.message))}>
      Download VEX<span class="visually-hidden"> of tag ${record.tag}</span>
    </button>
    <${ErrorText} error=${error} />
  `;
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;

function Platforms({ record }: { record: PatchRecord }) {
  const platforms = record.outcome?.platforms;
  if (!platforms?.length) return html`<span class="muted">—</span>`;
  return html`<ul class="platforms">
    ${platforms.map(
      (p) => html`<li>
        <span class="mono">${p.platform}</span>: <${StateBadge} state=${p.status} />
        ${p.changed ? ` ${plural(p.changed, "package")} updated` : ""}${p.failed ? `, ${p.failed} left out` : ""}
        ${p.reason ? html` <span class="muted">(${p.reason})</span>` : ""}
      </li>`,
    )}
  </ul>`;
}

export function ImageView({ repository }: { repository: string }) {
  const { data, error } = useData(
    () => getJson<PatchRecord[]>(`images/history?repository=${segment(repository)}`),
    [repository],
    5000,
  );
  return html`
    <h1 tabindex="-1">Image <span class="mono">${repository}</span></h1>
    <p><a href="#/fleet">Back to the fleet</a></p>
    <${ErrorText} error=${error} />
    ${
      data &&
      (data.length
        ? html`<table>
            <caption class="muted">Patch history, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Finished</th><th scope="col">Tag</th><th scope="col">Result</th>
                <th scope="col">Platforms</th><th scope="col">CVEs fixed</th><th scope="col">Details</th>
              </tr>
            </thead>
            <tbody>
              ${data.map(
                (r) => html`<tr key=${r.jobId}>
                  <td>${when(r.finishedAt)}<br /><span class="muted">${r.reason}</span></td>
                  <td class="mono">${r.tag}${r.outcome?.target ? html`<br />→ ${r.outcome.target}` : ""}</td>
                  <td><${StateBadge} state=${r.outcome?.status ?? r.state} />${r.error ? html`<br /><span class="error">${r.error.code}: ${r.error.message}</span>` : ""}</td>
                  <td><${Platforms} record=${r} /></td>
                  <td>${r.outcome?.cves.length ? html`<span class="mono">${r.outcome.cves.join(", ")}</span>` : "none"}</td>
                  <td>
                    <div class="actions">
                      <a href=${href("job", r.jobId)}>Job</a>
                      <${VexButton} record=${r} />
                    </div>
                  </td>
                </tr>`,
              )}
            </tbody>
          </table>`
        : html`<p>No results for this image yet.</p>`)
    }
  `;
}
