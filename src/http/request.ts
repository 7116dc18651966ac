import type { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import type { SutureError } from "../errors/errors.ts";
import { request } from "./undici.ts";

/** What one HTTP exchange answered; the caller must consume or discard `body`. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Dispatcher.ResponseData["body"];
  /** The URL that answered. */
  readonly url: string;
}

export type RequestBody = Buffer | Uint8Array | string | Readable;

export interface SendOptions {
  method: string;
  url: string;
  headers?: Record<string, string>;
  /** A stream is sent chunked; it is consumed, so a retry needs a fresh one. */
  body?: RequestBody;
  signal?: AbortSignal;
  /** The connection pool (`dispatchers.ts`), or a test's in-process fake. */
  dispatcher: Dispatcher;
  /**
   * Our own bound on the wait for the response headers, on top of the pool's timeouts: undici can
   * leave a request pending with no timer alive (a proxy that drops CONNECT), which would silently
   * end the process; and a server that assembles its answer first (the Docker Engine API's image
   * export) needs the pool's header timeout off while a quick request still wants one.
   */
  headersDeadlineMs?: number;
}

/** No response headers within SendOptions.headersDeadlineMs. Transient: a retry may get through. */
export class NoResponseError extends Error {
  readonly code = "UND_ERR_HEADERS_TIMEOUT";
  readonly deadlineMs: number;

  constructor(deadlineMs: number) {
    super(`no response within ${Math.round(deadlineMs / 1000)} s`);
    this.deadlineMs = deadlineMs;
  }
}

/**
 * One HTTP request: no redirects, no retries, no auth (clients layer those on top). Resolves once
 * the headers arrived; throws undici's or Node's error (map it with `errors.ts`'s networkError),
 * or a NoResponseError.
 */
export async function send(options: SendOptions): Promise<HttpResponse> {
  const deadlineMs = options.headersDeadlineMs;
  const deadline = deadlineMs ? new AbortController() : undefined;
  const timer = deadline
    ? setTimeout(() => deadline.abort(new NoResponseError(deadlineMs!)), deadlineMs)
    : undefined;
  const signal =
    deadline && options.signal
      ? AbortSignal.any([options.signal, deadline.signal])
      : (deadline?.signal ?? options.signal);
  try {
    const res = await request(options.url, {
      method: options.method as Dispatcher.HttpMethod,
      headers: options.headers,
      body: options.body,
      signal,
      dispatcher: options.dispatcher,
    });
    return { status: res.statusCode, headers: res.headers, body: res.body, url: options.url };
  } catch (e) {
    if (deadline?.signal.aborted && !options.signal?.aborted) throw deadline.signal.reason;
    throw e;
  } finally {
    clearTimeout(timer);
  }
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

/**
 * Read a whole body that must not exceed `cap` bytes: a Content-Length above it is refused before
 * any byte is read, and the transfer is cut as soon as more arrive. `tooLarge` words the error
 * (given the announced length when that was the reason). Transport errors are thrown as they come.
 */
export async function readCapped(
  res: HttpResponse,
  cap: number,
  tooLarge: (announced?: number) => SutureError,
): Promise<Buffer> {
  const announced = Number(header(res, "content-length"));
  if (Number.isFinite(announced) && announced > cap) {
    res.body.destroy();
    throw tooLarge(announced);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += (chunk as Buffer).length;
    if (total > cap) {
      res.body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * The first `cap` bytes of a body, for an error answer's text; never throws (an error body is best
 * effort: the status already says what went wrong). The rest is not read.
 */
export async function readPrefix(res: Pick<HttpResponse, "body">, cap: number): Promise<Buffer> {
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
    // Keep what arrived.
  } finally {
    if (!res.body.destroyed) res.body.destroy();
  }
  return Buffer.concat(chunks);
}
