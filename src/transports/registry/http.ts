import type { Readable } from "node:stream";
import { Agent, type Dispatcher, EnvHttpProxyAgent, request } from "undici";
import { SutureError } from "../../errors/errors.ts";

/** What one HTTP exchange answered; the caller must consume or discard `body`. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Dispatcher.ResponseData["body"];
  /** The URL that answered (after redirects). */
  readonly url: string;
}

export type RequestBody = Buffer | Uint8Array | string | Readable;

export interface SendOptions {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: RequestBody;
  signal?: AbortSignal;
  /** Skip HTTP_PROXY/HTTPS_PROXY (loopback registries: Docker never proxies those either). */
  direct: boolean;
  /** Accept any TLS certificate (insecure or loopback registries only). */
  insecureTls: boolean;
}

const USER_AGENT = "suture (registry client)";

const agents = new Map<string, Dispatcher>();

/**
 * Process-wide connection pools, one per (proxy, TLS) combination, so a copy between two
 * repositories of one registry reuses connections. Idle sockets are unref'd by undici and do not
 * keep the process alive.
 */
function dispatcherFor(direct: boolean, insecureTls: boolean): Dispatcher {
  const key = `${direct}:${insecureTls}`;
  let agent = agents.get(key);
  if (!agent) {
    const tls = { rejectUnauthorized: !insecureTls };
    const common = {
      connect: { ...tls, timeout: 30_000 },
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    };
    agent = direct ? new Agent(common) : new EnvHttpProxyAgent({ ...common, requestTls: tls });
    agents.set(key, agent);
  }
  return agent;
}

/** One HTTP request: no redirects, no retries, no auth logic (the client layers those on top). */
export async function send(options: SendOptions): Promise<HttpResponse> {
  const res = await request(options.url, {
    method: options.method as Dispatcher.HttpMethod,
    headers: { "user-agent": USER_AGENT, ...options.headers },
    body: options.body,
    signal: options.signal,
    dispatcher: dispatcherFor(options.direct, options.insecureTls),
  });
  return { status: res.statusCode, headers: res.headers, body: res.body, url: options.url };
}

/** First value of a response header (names are lower case). */
export function header(res: Pick<HttpResponse, "headers">, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Every value of a header, for headers that may repeat (`www-authenticate`, `link`). */
export function headerValues(res: Pick<HttpResponse, "headers">, name: string): string[] {
  const v = res.headers[name];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** Throw away a body we do not need, reading at most a little so the connection can be reused. */
export async function discard(res: HttpResponse): Promise<void> {
  await res.body.dump({ limit: 64 * 1024 }).catch(() => {});
}

/** Read a whole body that must not exceed `cap` bytes (manifests, token answers, tag lists). */
export async function readCapped(res: HttpResponse, cap: number, what: string): Promise<Buffer> {
  const declared = Number(header(res, "content-length"));
  if (Number.isFinite(declared) && declared > cap) {
    res.body.destroy();
    throw new SutureError("REGISTRY", `${what} is ${declared} bytes, more than the ${cap} allowed`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += (chunk as Buffer).length;
    if (total > cap) {
      res.body.destroy();
      throw new SutureError("REGISTRY", `${what} is more than the ${cap} bytes allowed`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Read an error body as text up to `cap` bytes; never throws (an error body is best effort). */
export async function readErrorText(res: HttpResponse, cap: number): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body) {
      const c = chunk as Buffer;
      chunks.push(c.subarray(0, Math.max(0, cap - total)));
      total += c.length;
      if (total >= cap) break;
    }
  } catch {
    // The status already says what went wrong.
  } finally {
    if (!res.body.destroyed) res.body.destroy();
  }
  return Buffer.concat(chunks).toString("utf8");
}
