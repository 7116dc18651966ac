/**
 * The HTTP API of `suture serve` (hono; described in openapi.yaml beside this file): rules, images
 * and their history, jobs with live progress (server-sent events), VEX, the registry hook,
 * health and Prometheus metrics, and the web dashboard's static files (`dashboard/`). Every route
 * but /healthz and the dashboard's files needs the bearer token, compared in constant time; the
 * token never appears in a response or a log line.
 */
import { timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { streamSSE } from "hono/streaming";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { isSutureError, SutureError } from "../errors/errors.ts";
import { dashboardRoutes } from "./dashboard/server.ts";
import type { JobEvent, JobQueue, JobState } from "./queue.ts";
import { ruleFromJson } from "./rules.ts";
import type { PatchRecord, Rule, ServiceStore } from "./store.ts";
import { RegistryEnvelope, type Watcher } from "./watcher.ts";

export interface ApiOptions {
  store: ServiceStore;
  queue: JobQueue;
  watcher: Watcher;
  token: string;
  /** Where unexpected errors are told (the library never prints). */
  log?: (line: string) => void;
}

const MAX_BODY_BYTES = 1024 * 1024;
const JOB_STATES: JobState[] = ["queued", "running", "succeeded", "failed", "cancelled"];
const STATUS: Partial<Record<string, ContentfulStatusCode>> = {
  USAGE: 400,
  INVALID_REFERENCE: 400,
  NOT_FOUND: 404,
  UNAUTHORIZED: 401,
  TOO_LARGE: 413,
};

function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function buildApi(options: ApiOptions): Hono {
  const { store, queue, watcher } = options;
  const app = new Hono();

  app.onError((e, c) => {
    const code = isSutureError(e) ? e.code : "INTERNAL";
    const message = isSutureError(e) ? e.message : "internal error: see the service's log";
    if (!isSutureError(e))
      console.error(`suture serve: ${c.req.method} ${c.req.path}: ${e instanceof Error ? e.message : e}`);
    return c.json({ error: { code, message } }, STATUS[code] ?? 500);
  });
  app.notFound((c) =>
    c.json({ error: { code: "NOT_FOUND", message: `no route ${c.req.method} ${c.req.path}` } }, 404),
  );

  app.get("/healthz", (c) => c.json({ ok: true }));
  // The web dashboard's static files (no data in them; the browser sends the token to the API).
  app.route("/", dashboardRoutes());

  app.use("*", async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m || !sameToken(m[1]!, options.token)) {
      c.header("WWW-Authenticate", 'Bearer realm="suture"');
      return c.json(
        {
          error: {
            code: "UNAUTHORIZED",
            message: "a valid bearer token is required: send Authorization: Bearer <token>",
          },
        },
        401,
      );
    }
    await next();
  });
  app.use(
    "*",
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) =>
        c.json(
          { error: { code: "TOO_LARGE", message: `the request body is over ${MAX_BODY_BYTES} bytes` } },
          413,
        ),
    }),
  );

  const json = async (c: { req: { json(): Promise<unknown> } }): Promise<unknown> => {
    try {
      return await c.req.json();
    } catch {
      throw new SutureError("USAGE", "the request body is not JSON: send application/json");
    }
  };

  // --- registry notifications ---------------------------------------------------------------
  app.post("/hooks/registry", async (c) => {
    const parsed = RegistryEnvelope.safeParse(await json(c));
    if (!parsed.success)
      throw new SutureError(
        "USAGE",
        'not a registry notification envelope: want {"events": [...]} as Docker distribution sends',
      );
    return c.json(await watcher.notify(parsed.data), 202);
  });

  // --- rules ------------------------------------------------------------------------------------
  app.get("/api/v1/rules", async (c) => c.json(await store.rules.list()));
  // A scanner is a command run on this host: only the rules file (the operator) may set one, so the
  // API token cannot be turned into running commands here.
  const sameScanner = (a: Rule["scanner"], b: Rule["scanner"]) => JSON.stringify(a) === JSON.stringify(b);
  const refuseNewScanner = (rule: Rule, stored: Rule | undefined) => {
    if (rule.scanner && !sameScanner(rule.scanner, stored?.scanner))
      throw new SutureError(
        "USAGE",
        `rule ${rule.id}: scanner: a scanner command is set in the rules file only (the API does not run commands on the host): leave scanner out, or edit the rules file and restart`,
      );
  };
  app.post("/api/v1/rules", async (c) => {
    const { rule } = ruleFromJson(await json(c));
    refuseNewScanner(rule, undefined);
    if (await store.rules.get(rule.id))
      throw new SutureError("USAGE", `rule ${rule.id} exists: PUT /api/v1/rules/${rule.id} to change it`);
    await store.rules.put(rule);
    watcher.schedule(rule);
    return c.json(rule, 201);
  });
  app.get("/api/v1/rules/:id", async (c) => {
    const rule = await store.rules.get(c.req.param("id"));
    if (!rule) throw new SutureError("NOT_FOUND", `no rule ${c.req.param("id")}`);
    return c.json(rule);
  });
  app.put("/api/v1/rules/:id", async (c) => {
    const { rule } = ruleFromJson(await json(c), c.req.param("id"));
    refuseNewScanner(rule, await store.rules.get(rule.id));
    await store.rules.put(rule);
    watcher.schedule(rule);
    return c.json(rule);
  });
  app.delete("/api/v1/rules/:id", async (c) => {
    const id = c.req.param("id");
    watcher.unschedule(id);
    if (!(await store.rules.delete(id))) throw new SutureError("NOT_FOUND", `no rule ${id}`);
    return c.body(null, 204);
  });
  app.post("/api/v1/rules/:id/poll", async (c) => {
    const id = c.req.param("id");
    if (!(await store.rules.get(id))) throw new SutureError("NOT_FOUND", `no rule ${id}`);
    void watcher.poll(id);
    return c.json({ polling: id }, 202);
  });

  // --- images -----------------------------------------------------------------------------------
  app.get("/api/v1/images", async (c) => {
    const byImage = new Map<string, PatchRecord[]>();
    for (const r of await store.results.recent(5000)) {
      const list = byImage.get(r.repository) ?? [];
      list.push(r);
      byImage.set(r.repository, list);
    }
    return c.json(
      [...byImage].map(([repository, records]) => ({
        repository,
        last: records[0],
        patched: records.filter((r) => r.outcome?.status === "patched").length,
        failed: records.filter((r) => r.state === "failed").length,
        cvesFixed: new Set(records.flatMap((r) => r.outcome?.cves ?? [])).size,
      })),
    );
  });
  app.get("/api/v1/images/history", async (c) => {
    const repository = c.req.query("repository");
    if (!repository) throw new SutureError("USAGE", "give ?repository=registry/repo");
    return c.json(await store.results.forImage(repository));
  });

  // --- jobs -------------------------------------------------------------------------------------
  app.get("/api/v1/jobs", async (c) => {
    const state = c.req.query("state");
    if (state !== undefined && !JOB_STATES.includes(state as JobState))
      throw new SutureError("USAGE", `state must be one of ${JOB_STATES.join(", ")}`);
    const limit = Number(c.req.query("limit") ?? 100);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new SutureError("USAGE", "limit must be 1 to 1000");
    return c.json(
      await queue.list({ state: state as JobState | undefined, ruleId: c.req.query("rule"), limit }),
    );
  });
  const job = async (id: string) => {
    const j = await queue.get(id);
    if (!j) throw new SutureError("NOT_FOUND", `no job ${id}`);
    return j;
  };
  app.get("/api/v1/jobs/:id", async (c) => {
    const { result, ...rest } = await job(c.req.param("id"));
    // The VEX document has its own route; the job view stays small.
    return c.json(result ? { ...rest, result: { ...result, vex: undefined } } : rest);
  });
  app.get("/api/v1/jobs/:id/logs", async (c) => {
    await job(c.req.param("id"));
    return c.json(await queue.events(c.req.param("id")));
  });
  app.get("/api/v1/jobs/:id/events", async (c) => {
    const id = c.req.param("id");
    const current = await job(id);
    return streamSSE(c, async (stream) => {
      const ended = (s: JobState) => s === "succeeded" || s === "failed" || s === "cancelled";
      const pending: JobEvent[] = [];
      let wake: (() => void) | undefined;
      const unsubscribe = queue.subscribe(id, (e) => {
        pending.push(e);
        wake?.();
      });
      stream.onAbort(() => {
        unsubscribe();
        wake?.();
      });
      try {
        await stream.writeSSE({
          event: "job-state",
          data: JSON.stringify({ type: "job-state", state: current.state }),
        });
        let done = ended(current.state);
        while (!done && !stream.aborted) {
          if (!pending.length) await new Promise<void>((r) => (wake = r));
          wake = undefined;
          for (const e of pending.splice(0)) {
            await stream.writeSSE({ event: e.type, data: JSON.stringify(e) });
            if (e.type === "job-state" && ended(e.state)) done = true;
          }
        }
      } finally {
        unsubscribe();
      }
    });
  });
  app.post("/api/v1/jobs/:id/cancel", async (c) => {
    const id = c.req.param("id");
    await job(id);
    return c.json({ cancelled: await queue.cancel(id) });
  });
  app.post("/api/v1/jobs/:id/retry", async (c) => {
    const id = c.req.param("id");
    const original = await job(id);
    const again = await queue.retry(id);
    if (!again)
      throw new SutureError(
        "USAGE",
        `job ${id} is ${original.state}: only a failed or cancelled job is retried`,
      );
    return c.json(again, 201);
  });
  app.get("/api/v1/jobs/:id/vex", async (c) => {
    const id = c.req.param("id");
    const doc = await store.vex.get(id);
    if (!doc)
      throw new SutureError("NOT_FOUND", `job ${id} has no VEX document (it patched nothing, or is unknown)`);
    c.header("Content-Disposition", `attachment; filename="${id}.openvex.json"`);
    return c.body(doc, 200, { "Content-Type": "application/json" });
  });

  // --- metrics ----------------------------------------------------------------------------------
  app.get("/metrics", async (c) => {
    const jobs = await queue.list({ limit: 100_000 });
    const results = await store.results.recent(100_000);
    const lines: string[] = [];
    lines.push("# HELP suture_jobs Jobs the queue holds, by state.", "# TYPE suture_jobs gauge");
    for (const s of JOB_STATES)
      lines.push(`suture_jobs{state="${s}"} ${jobs.filter((j) => j.state === s).length}`);
    lines.push(
      "# HELP suture_job_results_total Finished job runs recorded, by state.",
      "# TYPE suture_job_results_total counter",
    );
    for (const s of ["succeeded", "failed"] as const)
      lines.push(`suture_job_results_total{state="${s}"} ${results.filter((r) => r.state === s).length}`);
    const done = results.filter((r) => r.state === "succeeded");
    lines.push(
      "# HELP suture_job_duration_seconds Duration of succeeded job runs.",
      "# TYPE suture_job_duration_seconds summary",
      `suture_job_duration_seconds_sum ${done.reduce((s, r) => s + r.durationMs, 0) / 1000}`,
      `suture_job_duration_seconds_count ${done.length}`,
      "# HELP suture_images_patched_total Patched images pushed.",
      "# TYPE suture_images_patched_total counter",
      `suture_images_patched_total ${done.filter((r) => r.outcome?.status === "patched").length}`,
      "# HELP suture_cves_fixed_total Vulnerabilities fixed, summed over patched images.",
      "# TYPE suture_cves_fixed_total counter",
      `suture_cves_fixed_total ${done.reduce((s, r) => s + (r.outcome?.cves.length ?? 0), 0)}`,
    );
    return c.text(`${lines.join("\n")}\n`, 200, { "Content-Type": "text/plain; version=0.0.4" });
  });

  return app;
}
