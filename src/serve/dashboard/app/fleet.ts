/// <reference lib="dom" />
/**
 * The fleet at a glance: what is queued or running, which images failed last time, every image
 * with its last patch and the CVEs fixed. Refreshed every few seconds.
 */
import { html } from "htm/preact";
import { getJson, type ImageSummary, type JobRecord, type Rule } from "./api.ts";
import { ErrorText, href, StateBadge, useData, when } from "./ui.ts";

const REFRESH_MS = 3000;

const count = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export function JobsTable({ jobs, caption }: { jobs: JobRecord[]; caption: string }) {
  return html`
    <table>
      <caption class="muted">${caption}</caption>
      <thead>
        <tr><th scope="col">Job</th><th scope="col">Source</th><th scope="col">State</th><th scope="col">Reason</th><th scope="col">Created</th></tr>
      </thead>
      <tbody>
        ${jobs.map(
          (j) => html`
            <tr key=${j.id}>
              <td><a class="mono" href=${href("job", j.id)} aria-label=${`job ${j.id.slice(0, 8)} (${j.state})`}>${j.id.slice(0, 8)}</a></td>
              <td class="mono">${j.spec.source}</td>
              <td><${StateBadge} state=${j.state} /></td>
              <td>${j.spec.reason}</td>
              <td>${when(j.createdAt)}</td>
            </tr>
          `,
        )}
      </tbody>
    </table>
  `;
}

// One string: htm drops whitespace that holds a line break, so a sentence is not split over lines.
const summary = (rules: Rule[], images: ImageSummary[]) =>
  `Watching ${count(new Set(rules.map((r) => r.image)).size, "repository", "repositories")} with ${count(rules.length, "rule")}; ${count(images.length, "image")} with results.`;

export function FleetView() {
  const { data, error } = useData(
    async () => {
      const [images, jobs, rules] = await Promise.all([
        getJson<ImageSummary[]>("images"),
        getJson<JobRecord[]>("jobs?limit=50"),
        getJson<Rule[]>("rules"),
      ]);
      return { images, jobs, rules };
    },
    [],
    REFRESH_MS,
  );
  const pending = data?.jobs.filter((j) => j.state === "queued" || j.state === "running") ?? [];
  const failing = data?.images.filter((i) => i.last?.state === "failed") ?? [];
  const finished = data?.jobs.filter((j) => j.state !== "queued" && j.state !== "running").slice(0, 10) ?? [];
  return html`
    <h1 tabindex="-1">Fleet</h1>
    <${ErrorText} error=${error} />
    ${
      data &&
      html`
        <p class="muted">
          ${summary(data.rules, data.images)}
        </p>
        <section aria-labelledby="pending-h">
          <h2 id="pending-h">Pending and running</h2>
          ${pending.length ? html`<${JobsTable} jobs=${pending} caption="Jobs queued or running now" />` : html`<p>Nothing is pending.</p>`}
        </section>
        <section aria-labelledby="failing-h">
          <h2 id="failing-h">Failing</h2>
          ${
            failing.length
              ? html`<ul>
                  ${failing.map(
                    (i) => html`<li>
                      <a href=${href("image", i.repository)}>${i.repository}</a>${": "}
                      <span class="error">${i.last?.error?.code}: ${i.last?.error?.message}</span>
                    </li>`,
                  )}
                </ul>`
              : html`<p>No image failed its last patch.</p>`
          }
        </section>
        <section aria-labelledby="images-h">
          <h2 id="images-h">Images</h2>
          ${
            data.images.length
              ? html`<table>
                  <thead>
                    <tr>
                      <th scope="col">Image</th><th scope="col">Last patch</th><th scope="col">Result</th>
                      <th scope="col">Patched</th><th scope="col">Failed</th><th scope="col">CVEs fixed</th>
                    </tr>
                  </thead>
                  <tbody>
                    ${data.images.map(
                      (i) => html`<tr key=${i.repository}>
                        <td><a class="mono" href=${href("image", i.repository)}>${i.repository}</a></td>
                        <td>${when(i.last?.finishedAt)} <span class="muted">${i.last ? `(tag ${i.last.tag})` : ""}</span></td>
                        <td><${StateBadge} state=${i.last?.outcome?.status ?? i.last?.state ?? "none"} /></td>
                        <td>${i.patched}</td>
                        <td>${i.failed}</td>
                        <td>${i.cvesFixed}</td>
                      </tr>`,
                    )}
                  </tbody>
                </table>`
              : html`<p>No image has been patched yet.</p>`
          }
        </section>
        <section aria-labelledby="recent-h">
          <h2 id="recent-h">Recent jobs</h2>
          ${finished.length ? html`<${JobsTable} jobs=${finished} caption="The last jobs that ended" />` : html`<p>No job has ended yet.</p>`}
        </section>
      `
    }
  `;
}
