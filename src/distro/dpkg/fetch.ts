import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { EnvHttpProxyAgent, fetch as undiciFetch } from "undici";
import { describeCause, isSutureError, redact, SutureError } from "../../errors/errors.ts";
import { ChecksumStream, type ExpectedChecksum } from "../../trust/checksum.ts";

/** The part of a fetch Response the apt client uses (global fetch and undici's both fit). */
export interface HttpResponse {
  status: number;
  headers: { get(name: string): string | null };
  body: ReadableStream<Uint8Array> | null;
}

export interface HttpRequestInit {
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** A GET function; injectable so tests and callers can route or observe requests. */
export type HttpFetch = (url: string, init: HttpRequestInit) => Promise<HttpResponse>;

export interface HttpFetchOptions {
  /** TCP/TLS connect timeout (default 30 s); with headersTimeoutMs it bounds the wait for headers. */
  connectTimeoutMs?: number;
  /** Time to wait for response headers (default 60 s). */
  headersTimeoutMs?: number;
  /** Longest pause between two body chunks (default 60 s); a large download may take longer overall. */
  bodyTimeoutMs?: number;
}

const USER_AGENT = "suture (apt repository client)";

/**
 * HTTP GET over undici with HTTP_PROXY/HTTPS_PROXY/NO_PROXY honoured (EnvHttpProxyAgent, which
 * connects directly when no proxy is configured), redirects followed, and the given timeouts.
 */
export function createHttpFetch(options: HttpFetchOptions = {}): HttpFetch {
  const dispatcher = new EnvHttpProxyAgent({
    // Plain-http archives go through an HTTP proxy as absolute-form requests, as apt and curl
    // send them: many proxies refuse CONNECT to port 80. https still tunnels with CONNECT.
    proxyTunnel: false,
    connectTimeout: options.connectTimeoutMs ?? 30_000,
    headersTimeout: options.headersTimeoutMs ?? 60_000,
    bodyTimeout: options.bodyTimeoutMs ?? 60_000,
  });
  const headersDeadline = (options.connectTimeoutMs ?? 30_000) + (options.headersTimeoutMs ?? 60_000);
  return async (url, init) => {
    // Our own deadline until the headers arrive: undici can leave a request pending with no
    // timer alive (e.g. a proxy that drops CONNECT), which would silently end the process.
    const deadline = new AbortController();
    const timer = setTimeout(
      () => deadline.abort(new Error(`no response within ${Math.round(headersDeadline / 1000)} s`)),
      headersDeadline,
    );
    try {
      const res = await undiciFetch(url, {
        headers: { "user-agent": USER_AGENT, ...init.headers },
        signal: init.signal ? AbortSignal.any([init.signal, deadline.signal]) : deadline.signal,
        redirect: "follow",
        dispatcher,
      });
      return res as unknown as HttpResponse;
    } catch (e) {
      if (deadline.signal.aborted && !init.signal?.aborted) throw deadline.signal.reason;
      throw e;
    } finally {
      clearTimeout(timer);
    }
  };
}

let shared: HttpFetch | undefined;

/** One process-wide client, so connections to the archive are reused across calls. */
export function defaultHttpFetch(): HttpFetch {
  shared ??= createHttpFetch();
  return shared;
}

export interface RetryOptions {
  /** Further attempts after the first for retryable failures (default 3). */
  retries?: number;
  /** First back-off delay; each next one is three times longer (default 300 ms). */
  baseDelayMs?: number;
  signal?: AbortSignal;
}

/** Run `fn` again while it throws a retryable SutureError, with bounded exponential back-off. */
export async function withRetries<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const retries = options.retries ?? 3;
  const base = options.baseDelayMs ?? 300;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (!isSutureError(e) || !e.retryable || attempt >= retries || options.signal?.aborted) throw e;
      await sleep(base * 3 ** attempt, options.signal);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(cancelled());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function cancelled(): SutureError {
  return new SutureError("CANCELLED", "download cancelled");
}

export interface GetOptions {
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Accept 304 Not Modified (for conditional requests). */
  allowNotModified?: boolean;
}

/**
 * One GET, no retry. Resolves with a 2xx response (or 304 when allowed). Throws SutureError:
 * NOT_FOUND for 404/410; NETWORK marked retryable for 5xx, 408, 429 and connection failures;
 * NETWORK for any other status; CANCELLED when `signal` aborted.
 */
export async function httpGet(
  fetch: HttpFetch,
  url: string,
  options: GetOptions = {},
): Promise<HttpResponse> {
  const shown = redact(url);
  let res: HttpResponse;
  try {
    res = await fetch(url, { headers: options.headers, signal: options.signal });
  } catch (e) {
    throw networkError(e, shown, options.signal);
  }
  if ((res.status >= 200 && res.status < 300) || (res.status === 304 && options.allowNotModified)) return res;
  await res.body?.cancel().catch(() => {});
  if (res.status === 404 || res.status === 410) {
    throw new SutureError("NOT_FOUND", `${shown} does not exist (HTTP ${res.status})`);
  }
  const retryable = res.status >= 500 || res.status === 408 || res.status === 429;
  throw new SutureError(
    "NETWORK",
    `GET ${shown} failed with HTTP ${res.status}${retryable ? ": the server is having trouble, try again later" : ": check the URI and any proxy settings"}`,
    { retryable },
  );
}

/** Map a thrown fetch/stream failure to CANCELLED or a retryable NETWORK error. */
export function networkError(e: unknown, shownUrl: string, signal?: AbortSignal): SutureError {
  if (signal?.aborted) return cancelled();
  if (isSutureError(e)) return e;
  const cause = (e as { cause?: unknown }).cause ?? e;
  return new SutureError(
    "NETWORK",
    `cannot fetch ${shownUrl}: ${describeCause(cause)}; check the network, the mirror URI and HTTP(S)_PROXY`,
    { cause: e, retryable: true },
  );
}

/**
 * Read a whole (small) response body, refusing more than `maxBytes`. Stream failures become
 * retryable NETWORK errors.
 */
export async function readBody(
  res: HttpResponse,
  url: string,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<Buffer> {
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of Readable.fromWeb(
      res.body as import("node:stream/web").ReadableStream<Uint8Array>,
    )) {
      total += (chunk as Buffer).length;
      if (total > maxBytes) {
        throw new SutureError("UNTRUSTED", `${redact(url)} is larger than ${maxBytes} bytes: refusing it`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (e) {
    throw networkError(e, redact(url), signal);
  }
  return Buffer.concat(chunks);
}

export interface FetchBytesResult {
  status: number;
  bytes: Buffer;
  etag?: string;
  lastModified?: string;
}

/** GET a small file with retries; 304 resolves with empty bytes when `allowNotModified`. */
export async function fetchBytes(
  fetch: HttpFetch,
  url: string,
  options: GetOptions & RetryOptions & { maxBytes: number },
): Promise<FetchBytesResult> {
  return withRetries(async () => {
    const res = await httpGet(fetch, url, options);
    const bytes =
      res.status === 304 ? Buffer.alloc(0) : await readBody(res, url, options.maxBytes, options.signal);
    return {
      status: res.status,
      bytes,
      etag: res.headers.get("etag") ?? undefined,
      lastModified: res.headers.get("last-modified") ?? undefined,
    };
  }, options);
}

export interface FetchToFileOptions extends RetryOptions {
  signal?: AbortSignal;
  /** What the file is, for messages ("libssl3 3.0.15-1~deb12u1 (.deb)"). */
  what: string;
  /** What the user should do when the bytes do not match. */
  fix: string;
  /** Called with the bytes received so far in the current attempt. */
  onBytes?: (bytes: number) => void;
}

/**
 * Stream `url` into `dest`, verifying size and SHA-256 against `expected` as it flows (too many
 * bytes stop the transfer at once). Retries connection failures and 5xx; a checksum mismatch is
 * UNTRUSTED and never retried. On any failure `dest` is removed, so only verified files remain.
 */
export async function fetchToFile(
  fetch: HttpFetch,
  url: string,
  dest: string,
  expected: ExpectedChecksum,
  options: FetchToFileOptions,
): Promise<void> {
  try {
    await withRetries(async () => {
      const res = await httpGet(fetch, url, { signal: options.signal });
      if (!res.body)
        throw new SutureError("NETWORK", `${redact(url)} answered without a body`, { retryable: true });
      let seen = 0;
      const tap = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          seen += chunk.length;
          options.onBytes?.(seen);
          cb(null, chunk);
        },
      });
      try {
        await pipeline(
          Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>),
          new ChecksumStream(expected, `${options.what} from ${redact(url)}`, options.fix),
          tap,
          createWriteStream(dest),
          { signal: options.signal },
        );
      } catch (e) {
        if (isSutureError(e)) throw e;
        // fs errors carry the path: a local write failure (disk full) is not the network's fault.
        if ((e as NodeJS.ErrnoException).path) {
          throw new SutureError("IO", `cannot write ${dest}: ${describeCause(e)}`, { cause: e });
        }
        throw networkError(e, redact(url), options.signal);
      }
    }, options);
  } catch (e) {
    await rm(dest, { force: true });
    throw e;
  }
}
