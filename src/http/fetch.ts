import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Dispatcher } from "undici";
import { describeCause, isSutureError, redact, SutureError } from "../errors/errors.ts";
import { ChecksumStream, type ExpectedChecksum } from "../stream/checksum.ts";
import type { VerifyingStream } from "../stream/verifying-stream.ts";
import { createDispatcher } from "./dispatchers.ts";
import { HttpError, networkError as toSutureNetworkError } from "./errors.ts";
import { discard, type HttpResponse, header, readCapped, send } from "./request.ts";
import { defaultRetryPolicy, parseRetryAfter, type RetryPolicy, withRetries } from "./retry.ts";

export type { HttpResponse } from "./request.ts";

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
  /** Send requests through this dispatcher (tests: an in-process fake) instead of a new proxy-aware pool. */
  dispatcher?: Dispatcher;
}

const USER_AGENT = "suture (apt repository client)";
const redirectStatuses = new Set([301, 302, 303, 307, 308]);
/** As many redirects as a browser's fetch follows. */
const MAX_REDIRECTS = 20;

/**
 * HTTP GET with HTTP_PROXY/HTTPS_PROXY/NO_PROXY honoured (read now: the pool connects directly
 * when no proxy is configured), redirects followed, and the given timeouts.
 */
export function createHttpFetch(options: HttpFetchOptions = {}): HttpFetch {
  const timeouts = {
    connectMs: options.connectTimeoutMs ?? 30_000,
    headersMs: options.headersTimeoutMs ?? 60_000,
    bodyMs: options.bodyTimeoutMs ?? 60_000,
  };
  const dispatcher =
    options.dispatcher ??
    // Plain-http archives go through an HTTP proxy as absolute-form requests, as apt and curl
    // send them; https still tunnels with CONNECT.
    createDispatcher({ route: { kind: "env-proxy", tunnelPlainHttp: false }, timeouts });
  return async (url, init) => {
    let current = url;
    for (let hop = 0; ; hop++) {
      const res = await send({
        method: "GET",
        url: current,
        headers: { "user-agent": USER_AGENT, ...init.headers },
        signal: init.signal,
        dispatcher,
        headersDeadlineMs: timeouts.connectMs + timeouts.headersMs,
      });
      const location = header(res, "location");
      if (!redirectStatuses.has(res.status) || !location) return res;
      await discard(res);
      if (hop >= MAX_REDIRECTS) {
        throw new SutureError(
          "NETWORK",
          `${redact(url)} redirected more than ${MAX_REDIRECTS} times: check the mirror URI`,
        );
      }
      current = new URL(location, current).href;
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
  /** First back-off delay; doubling, with jitter (default 300 ms). */
  baseDelayMs?: number;
  signal?: AbortSignal;
}

const CANCELLED = "download cancelled";

/** Run `fn` again while it throws a retryable SutureError, per the one retry policy (`http/retry.ts`). */
function retrying<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  const policy: RetryPolicy = {
    ...defaultRetryPolicy,
    attempts: (options.retries ?? 3) + 1,
    baseDelayMs: options.baseDelayMs ?? 300,
  };
  return withRetries(fn, policy, { signal: options.signal, cancelled: CANCELLED });
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
  const { status } = res;
  if ((status >= 200 && status < 300) || (status === 304 && options.allowNotModified)) return res;
  const retryAfterMs = parseRetryAfter(header(res, "retry-after"));
  await discard(res);
  if (status === 404 || status === 410) {
    throw new HttpError("NOT_FOUND", `${shown} does not exist (HTTP ${status})`, { status });
  }
  const retryable = status >= 500 || status === 408 || status === 429;
  throw new HttpError(
    "NETWORK",
    `GET ${shown} failed with HTTP ${status}${retryable ? ": the server is having trouble, try again later" : ": check the URI and any proxy settings"}`,
    { retryable, status, retryAfterMs },
  );
}

/**
 * Map a thrown transport or stream failure to CANCELLED or a retryable NETWORK error (an archive
 * mirror that refused or failed once may well answer the next time, as apt's retries assume).
 */
export function networkError(e: unknown, shownUrl: string, signal?: AbortSignal): SutureError {
  return toSutureNetworkError(e, {
    signal,
    cancelled: CANCELLED,
    message: (f) =>
      `cannot fetch ${shownUrl}: ${f.detail}; check the network, the mirror URI and HTTP(S)_PROXY`,
    retryable: () => true,
  });
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
  try {
    return await readCapped(
      res,
      maxBytes,
      () => new SutureError("UNTRUSTED", `${redact(url)} is larger than ${maxBytes} bytes: refusing it`),
    );
  } catch (e) {
    throw networkError(e, redact(url), signal);
  }
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
  return retrying(async () => {
    const res = await httpGet(fetch, url, options);
    let bytes: Buffer = Buffer.alloc(0);
    if (res.status === 304) await discard(res);
    else bytes = await readBody(res, url, options.maxBytes, options.signal);
    return {
      status: res.status,
      bytes,
      etag: header(res, "etag"),
      lastModified: header(res, "last-modified"),
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
 * What a download must turn out to be: a size and SHA-256 from signed metadata, or, where the
 * metadata vouches for something else (an apk index signs a package's control segment, rpm-md
 * may list SHA-512), a factory of the caller's own verifying stream (one per attempt) whose
 * errors say what the caller's metadata promised.
 */
export type DownloadExpectation = ExpectedChecksum | (() => VerifyingStream);

/**
 * Stream `url` into `dest`, verifying it against `expected` as it flows (too many bytes stop the
 * transfer at once). Retries connection failures and 5xx; a verification failure is a
 * SutureError (UNTRUSTED) and never retried. `onBytes` may throw a SutureError to stop the
 * transfer. On any failure `dest` is removed, so only verified files remain.
 */
export async function fetchToFile(
  fetch: HttpFetch,
  url: string,
  dest: string,
  expected: DownloadExpectation,
  options: FetchToFileOptions,
): Promise<void> {
  try {
    await retrying(async () => {
      const res = await httpGet(fetch, url, { signal: options.signal });
      let seen = 0;
      const tap = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          seen += chunk.length;
          try {
            options.onBytes?.(seen);
          } catch (e) {
            cb(e as Error);
            return;
          }
          cb(null, chunk);
        },
      });
      try {
        await pipeline(
          res.body,
          typeof expected === "function"
            ? expected()
            : new ChecksumStream(expected, `${options.what} from ${redact(url)}`, options.fix),
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

/**
 * Run `transfer` over `items`, at most `concurrency` at once, and return the results in the order
 * of `items`. The first failure stops the rest: transfers not started are skipped, the running
 * ones see the signal they were given abort (it also aborts with `options.signal`), and that
 * failure is thrown (CANCELLED, saying `options.cancelled`, when `options.signal` was aborted).
 */
export async function transferAll<T, R>(
  items: readonly T[],
  transfer: (item: T, signal: AbortSignal) => Promise<R>,
  options: { concurrency: number; signal?: AbortSignal; cancelled: string },
): Promise<R[]> {
  const { concurrency, signal: outer } = options;
  const abort = new AbortController();
  const signal = outer ? AbortSignal.any([outer, abort.signal]) : abort.signal;
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !failure) {
      const i = next++;
      try {
        results[i] = await transfer(items[i]!, signal);
      } catch (error) {
        if (!failure) {
          failure = { error };
          abort.abort();
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  if (failure) {
    if (outer?.aborted) throw new SutureError("CANCELLED", options.cancelled);
    throw failure.error;
  }
  return results;
}
