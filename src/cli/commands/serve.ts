import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { type Command, Option } from "@commander-js/extra-typings";
import { asSutureError, SutureError } from "../../errors/errors.ts";
import { runSandboxCleanups } from "../../sandbox/cleanup.ts";
import { reexecOrSettleMode } from "../../sandbox/no-namespaces.ts";
import type { JobQueue } from "../../serve/queue.ts";
import type { WatchEvent } from "../../serve/watcher.ts";
import { cancelOnSignals } from "../cancel.ts";
import { addTransportOptions, parseDuration } from "../options.ts";
import { addJobOptions, addQueueOptions, jobContextFrom, queueChoiceFrom } from "../service-options.ts";

/** A shorter token is guessable: the API patches and pushes images. */
const MIN_TOKEN_LENGTH = 16;

function defaultStateDir(): string {
  return join(process.env.XDG_STATE_HOME ?? join(homedir(), ".local", "state"), "suture", "serve");
}

function parseListen(value: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+):(\d{1,5})$/.exec(value);
  const port = Number(m?.[2]);
  if (!m || port > 65535)
    throw new SutureError(
      "USAGE",
      `invalid --listen ${JSON.stringify(value)}: give host:port, e.g. 127.0.0.1:8470`,
    );
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port };
}

/** The API token: --token-file, else SUTURE_TOKEN; never echoed. */
async function readToken(file: string | undefined): Promise<string> {
  let token: string | undefined;
  if (file !== undefined) {
    try {
      token = (await readFile(file, "utf8")).trim();
    } catch (e) {
      throw asSutureError(e, "USAGE", `cannot read --token-file ${file}: check the path`);
    }
  } else token = process.env.SUTURE_TOKEN?.trim();
  if (!token)
    throw new SutureError(
      "USAGE",
      "suture serve needs an API token: pass --token-file FILE or set SUTURE_TOKEN (e.g. from openssl rand -hex 32)",
    );
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token))
    throw new SutureError(
      "USAGE",
      `the API token must be at least ${MIN_TOKEN_LENGTH} characters without spaces: generate one with openssl rand -hex 32`,
    );
  return token;
}

function describe(e: WatchEvent): string {
  switch (e.type) {
    case "poll":
      return `rule ${e.ruleId}: polled ${e.tags} tags, ${e.queued} new jobs`;
    case "queued":
      return `rule ${e.ruleId}: ${e.duplicate ? "already queued" : "queued"} job ${e.jobId} (${e.reason}) for ${e.source}`;
    case "hook":
      return `hook: push of ${e.reference}: ${e.outcome}${e.ruleId ? ` (rule ${e.ruleId})` : ""}`;
    case "warning":
      return `warning: ${e.ruleId ? `rule ${e.ruleId}: ` : ""}${e.message}`;
    case "fixes":
      return `new-fixes check: ${e.checked} patched images dry-run, ${e.queued} new jobs`;
  }
}

export function registerServe(program: Command): void {
  addTransportOptions(
    addJobOptions(
      addQueueOptions(
        program
          .command("serve")
          .description(
            "keep a registry patched: watch the rules' repositories (polling and registry push notifications), patch new or moved tags, push them with their VEX, and serve the HTTP API",
          )
          .requiredOption(
            "--rules <file>",
            "the rules file (apiVersion: suture.dev/v1alpha1, kind: ServeRules)",
          )
          .option("--listen <host:port>", "where the HTTP API listens", "127.0.0.1:8470")
          .option("--token-file <file>", "file holding the API's bearer token (default: $SUTURE_TOKEN)")
          .option(
            "--state-dir <dir>",
            "where rules, results and VEX are kept without --database (default $XDG_STATE_HOME/suture/serve)",
          )
          .option(
            "--concurrency <n>",
            "jobs this process runs at once (0: only suture workers run them)",
            "1",
          )
          .option(
            "--fixes-interval <duration>",
            "how often patched images are checked for new fixes (0: never)",
            "6h",
          ),
      ),
    ),
  ).action(async (flags) => {
    // The service and the patch pipeline are loaded by this command only (other commands start faster).
    const [{ startService }, { defaultCacheDir }, { openServiceQueue, openServiceStore }, { readRulesFile }] =
      await Promise.all([
        import("../../serve/service.ts"),
        import("../../patch/patch.ts"),
        import("../../serve/backends.ts"),
        import("../../serve/rules.ts"),
      ]);
    const rules = await readRulesFile(flags.rules);
    const token = await readToken(flags.tokenFile);
    const listen = parseListen(flags.listen);
    if (!/^\d{1,3}$/.test(flags.concurrency) || (Number(flags.concurrency) < 1 && flags.redis === undefined))
      throw new SutureError(
        "USAGE",
        `invalid --concurrency ${JSON.stringify(flags.concurrency)}: give 1 or more (0 only with --redis, where suture workers run the jobs)`,
      );
    const fixesMs = flags.fixesInterval === "0" ? 0 : parseDuration(flags.fixesInterval);
    const choice = queueChoiceFrom(flags);
    // Not root and patching here: the whole service runs again as root of a user namespace, as
    // `suture patch` does (issue 16, mode 2); its listener and files are the caller's.
    const reran = Number(flags.concurrency) > 0 ? await reexecOrSettleMode() : undefined;
    if (reran !== undefined) {
      process.exitCode = reran;
      return;
    }
    const stateDir = flags.stateDir ?? defaultStateDir();
    const cacheDir = flags.cacheDir ?? defaultCacheDir();
    const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    const store = await openServiceStore({ database: flags.database, stateDir });
    let queue: JobQueue | undefined;
    const service = await (async () => {
      queue = await openServiceQueue(choice);
      const context = jobContextFrom({ ...flags, cacheDir }, store);
      return startService({
        ...context,
        workDir: flags.workDir ?? cacheDir,
        queue,
        rules,
        token,
        listen,
        concurrency: Number(flags.concurrency),
        fixesIntervalSeconds: fixesMs / 1000,
        onEvent: (e) => log(describe(e)),
        log,
      });
    })().catch(async (e) => {
      await queue?.close().catch(() => {});
      await store.close();
      throw e;
    });
    process.stdout.write(
      `suture serve: listening on ${service.url} (${rules.length} rules from ${flags.rules}; queue ${choice.redis ? "on Redis" : "in process"}, state ${flags.database ? "in Postgres" : `in ${stateDir}`})\n`,
    );
    const controller = new AbortController();
    const release = cancelOnSignals(controller, "running jobs");
    await new Promise<void>((resolve) =>
      controller.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
    log("shutting down: running jobs are cancelled");
    try {
      await service.close();
    } finally {
      release();
      await runSandboxCleanups();
    }
  });
}
