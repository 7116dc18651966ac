/**
 * `suture serve` assembled: the store, the queue, the job code working it, the watcher and the
 * HTTP API on one listener. The CLI (and tests, and the scaled-out mode with its own queue and
 * store) start it with `startService`.
 */
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { SutureError } from "../errors/errors.ts";
import { buildApi } from "./api.ts";
import { type JobContext, patchJobHandler } from "./job.ts";
import type { JobQueue } from "./queue.ts";
import type { Rule, ServiceStore } from "./store.ts";
import { type WatchEvent, Watcher } from "./watcher.ts";

export interface ServiceOptions extends Omit<JobContext, "store"> {
  store: ServiceStore;
  queue: JobQueue;
  /** Rules from the rules file: stored (replacing a stored rule of the same id) before polling starts. */
  rules: Rule[];
  token: string;
  /** `host:port`; port 0 picks a free one. */
  listen: { host: string; port: number };
  /** Jobs this process runs at once; 0 = none (workers elsewhere consume the queue). */
  concurrency: number;
  fixesIntervalSeconds?: number;
  onEvent?: (e: WatchEvent) => void;
  log?: (line: string) => void;
}

export interface RunningService {
  /** `http://host:port` the API answers on. */
  url: string;
  watcher: Watcher;
  close(): Promise<void>;
}

export async function startService(options: ServiceOptions): Promise<RunningService> {
  const { store, queue } = options;
  for (const rule of options.rules) await store.rules.put(rule);
  if (options.concurrency > 0)
    queue.work(patchJobHandler({ ...options, store }), { concurrency: options.concurrency });
  const watcher = new Watcher({
    store,
    queue,
    transport: options.transport,
    cacheDir: options.cacheDir,
    patch: {
      mirrors: options.mirrors,
      keyringFiles: options.keyringFiles,
      allowInsecureRepositories: options.allowInsecureRepositories,
      engine: options.engine,
    },
    fixesIntervalSeconds: options.fixesIntervalSeconds,
    onEvent: options.onEvent,
  });
  const app = buildApi({ store, queue, watcher, token: options.token, log: options.log });
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: options.listen.host, port: options.listen.port }, () =>
      resolve(s),
    );
    s.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        new SutureError(
          "USAGE",
          `cannot listen on ${options.listen.host}:${options.listen.port} (${e.code ?? e.message}): choose another --listen`,
        ),
      ),
    );
  });
  const address = server.address() as AddressInfo;
  await watcher.start();
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    watcher,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open SSE streams would hold close() forever.
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
      await watcher.stop();
      await queue.close();
      await store.close();
    },
  };
}
