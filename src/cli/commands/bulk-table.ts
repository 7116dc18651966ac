import type { BulkEvent, BulkJob, BulkJobResult } from "../../bulk/run.ts";
import { jobCvesFixed } from "../../bulk/summary.ts";
import { printable, table } from "../../report/render.ts";
import type { ProgressMode } from "../progress-render.ts";

/** One line of the table: a job, or one platform of a job that patched an index. */
interface Row {
  image: string;
  source: string;
  platform: string;
  state: string;
  packages: string;
  cves: string;
  time: string;
  detail: string;
}

const HEADER = ["IMAGE", "SOURCE", "PLATFORM", "STATE", "PACKAGES", "CVES FIXED", "TIME", "DETAILS"];

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** The rows of a finished job: one per platform considered, or one for the job when none was. */
export function resultRows(r: BulkJobResult): Row[] {
  const detail =
    r.status === "failed" || r.status === "skipped"
      ? (r.reason ?? "")
      : r.target
        ? `→ ${r.target}`
        : r.status === "up-to-date"
          ? "nothing to update, nothing written"
          : "";
  const considered = r.platforms.filter((p) => p.status !== "skipped");
  if (considered.length === 0) {
    const cves = jobCvesFixed(r);
    return [
      {
        image: r.name,
        source: r.source,
        platform: r.requestedPlatforms?.join(",") ?? "-",
        state: r.status,
        packages: "-",
        cves: cves ? String(cves.length) : "-",
        time: seconds(r.durationMs),
        detail,
      },
    ];
  }
  return considered.map((p, i) => ({
    image: i === 0 ? r.name : "",
    source: i === 0 ? r.source : "",
    platform: p.platform,
    state: p.status === "failed" ? "failed" : r.status,
    packages: `${p.packages.length}${p.failedPackages.length ? ` (+${p.failedPackages.length} failed)` : ""}`,
    cves: p.cvesFixed ? String(p.cvesFixed.length) : "-",
    time: i === 0 ? seconds(r.durationMs) : "",
    detail: i === 0 ? detail : p.status === "failed" ? (p.reason ?? "") : "",
  }));
}

/** The final table, on stdout. */
export function formatResultTable(results: readonly BulkJobResult[]): string {
  const rows = results.flatMap(resultRows);
  if (rows.length === 0) return "";
  return `${table(
    HEADER,
    rows.map((r) => [
      r.image,
      r.source,
      r.platform,
      r.state,
      r.packages,
      r.cves,
      r.time,
      printable(r.detail),
    ]),
  ).join("\n")}\n`;
}

interface LiveJob {
  job: BulkJob;
  state: string;
  started?: number;
  /** Platforms seen in the job's progress, with what each is doing. */
  platforms: Map<string, string>;
  result?: BulkJobResult;
}

/**
 * Renders bulk events on stderr. On a terminal: a table redrawn in place (a row per job, or per
 * platform of a job patching an index) with each job's state and time. Otherwise: one plain line
 * per thing that happened, prefixed with the job's source. `json`: every event as a JSON line.
 */
export function createBulkRenderer(
  mode: ProgressMode,
  stream: NodeJS.WriteStream = process.stderr,
): ((event: BulkEvent) => void) & { finish(): void } {
  const resolved = mode === "auto" ? (stream.isTTY && process.env.CI !== "true" ? "tty" : "plain") : mode;
  const jobs = new Map<string, LiveJob>();
  const notes: string[] = [];
  let drawnLines = 0;
  let finished = false;
  let ticker: NodeJS.Timeout | undefined;
  let pending: NodeJS.Timeout | undefined;

  const liveRows = (): string[][] => {
    const rows: string[][] = [];
    const now = performance.now();
    for (const j of jobs.values()) {
      if (j.result) {
        for (const r of resultRows(j.result))
          rows.push([r.image, r.source, r.platform, r.state, r.packages, r.cves, r.time, r.detail]);
        continue;
      }
      const time = j.started === undefined ? "" : seconds(now - j.started);
      const platforms = [...j.platforms];
      if (platforms.length === 0)
        rows.push([
          j.job.name,
          j.job.source,
          j.job.requestedPlatforms?.join(",") ?? "-",
          j.state,
          "",
          "",
          time,
          "",
        ]);
      else
        for (const [i, [platform, doing]] of platforms.entries())
          rows.push([
            i === 0 ? j.job.name : "",
            i === 0 ? j.job.source : "",
            platform,
            doing,
            "",
            "",
            i === 0 ? time : "",
            "",
          ]);
    }
    return rows;
  };

  const draw = () => {
    pending = undefined;
    if (finished) return;
    // Table lines are cut to the terminal's width: a wrapped line would break the count of lines
    // to go back up over. Notes above the table are written once and stay as they are.
    const width = stream.columns ?? 160;
    const tableLines = table(HEADER, liveRows()).map((l) =>
      l.length > width ? `${l.slice(0, width - 1)}…` : l,
    );
    let out = drawnLines ? `\x1b[${drawnLines}F\x1b[J` : "";
    for (const note of notes.splice(0)) out += `${note}\n`;
    out += tableLines.map((l) => `${l}\n`).join("");
    stream.write(out);
    drawnLines = tableLines.length;
  };
  const schedule = () => {
    if (resolved !== "tty" || pending || finished) return;
    pending = setTimeout(draw, 100);
  };

  const prefix = (job: string) => `[${jobs.get(job)?.job.source ?? job}]`;
  const plain = (text: string) => stream.write(`${printable(text)}\n`);

  const sink = (event: BulkEvent) => {
    if (resolved === "quiet" || finished) return;
    if (resolved === "json") {
      stream.write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
      return;
    }
    switch (event.type) {
      case "discovered":
        for (const job of event.jobs) jobs.set(job.id, { job, state: "queued", platforms: new Map() });
        if (resolved === "plain")
          plain(
            `${event.jobs.length} ${event.jobs.length === 1 ? "job" : "jobs"}: ${event.jobs.map((j) => j.source).join(", ")}`,
          );
        else if (!ticker) {
          // The time column moves while jobs run.
          ticker = setInterval(schedule, 1000);
          ticker.unref();
        }
        break;
      case "warning": {
        const text = `warning: ${event.image ? `${event.image}: ` : ""}${event.message}`;
        if (resolved === "plain") plain(text);
        else notes.push(printable(text));
        break;
      }
      case "job-state": {
        const j = jobs.get(event.job);
        if (!j) break;
        j.started ??= performance.now();
        j.state = event.state;
        if (resolved === "plain")
          plain(`${prefix(event.job)} ${event.state}${event.target ? ` → ${event.target}` : ""}`);
        break;
      }
      case "job-progress": {
        const j = jobs.get(event.job);
        const e = event.event;
        if (j && e.platform && e.type === "step") j.platforms.set(e.platform, `patching: ${e.step}`);
        else if (j && e.type === "step") j.state = e.step === "write" ? "writing" : `patching: ${e.step}`;
        if (resolved === "plain") {
          const who = `${prefix(event.job)}${e.platform ? ` [${e.platform}]` : ""}`;
          if (e.type === "step") plain(`${who} » ${e.message}`);
          else if (e.type === "warning") plain(`${who} warning: ${e.message}`);
          else if (e.type === "info") plain(`${who} ${e.message}`);
          else if (e.type === "package" && (e.status === "updated" || e.status === "failed"))
            plain(
              `${who} ${e.status} ${e.name} ${e.from ?? "?"} → ${e.to}${e.detail ? ` (${e.detail})` : ""}`,
            );
        } else if (e.type === "warning")
          notes.push(printable(`warning: ${j?.job.source ?? event.job}: ${e.message}`));
        break;
      }
      case "job-done": {
        const j = jobs.get(event.job);
        if (j) j.result = event.result;
        else
          jobs.set(event.job, {
            job: event.result,
            state: event.result.status,
            platforms: new Map(),
            result: event.result,
          });
        if (resolved === "plain") {
          const r = event.result;
          const packages = r.platforms.reduce((n, p) => n + p.packages.length, 0);
          const cves = jobCvesFixed(r);
          plain(
            `${prefix(event.job)} ${r.status}${r.target ? ` ${r.target}` : ""}${r.status === "patched" || r.status === "up-to-date" ? `: ${packages} ${packages === 1 ? "package" : "packages"}${cves ? `, ${cves.length} CVEs fixed` : ""}` : ""}${r.reason ? `: ${r.reason}` : ""} (${seconds(r.durationMs)})`,
          );
        }
        break;
      }
    }
    schedule();
  };
  return Object.assign(sink, {
    finish: () => {
      if (ticker) clearInterval(ticker);
      if (pending) clearTimeout(pending);
      if (resolved === "tty") {
        draw();
        // The live table gives way to the final one when that goes to the same terminal.
        if (drawnLines && process.stdout.isTTY) stream.write(`\x1b[${drawnLines}F\x1b[J`);
      }
      finished = true;
    },
  });
}
