import { type ErrorCode, redact, SutureError } from "../errors/errors.ts";

/**
 * A failure that came with an HTTP answer: the status, and the server's `Retry-After` (as ms from
 * when it was read) so the one retry loop (`retry.ts`) can wait as long as the server asked.
 */
export class HttpError extends SutureError {
  readonly status?: number;
  readonly retryAfterMs?: number;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; retryable?: boolean; status?: number; retryAfterMs?: number } = {},
  ) {
    super(code, message, { cause: options.cause, retryable: options.retryable });
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** The error every HTTP client of suture raises when its caller's signal aborted. */
export function cancelledError(message: string, cause?: unknown): SutureError {
  return new SutureError("CANCELLED", message, { cause });
}

/**
 * Socket-level failures a second attempt can cure: the peer went away mid-exchange, a timeout,
 * a temporary DNS failure. A refused connection, an unknown host or a bad certificate is not here:
 * retrying those only delays the message.
 */
const transientCodes = new Set([
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ECONNABORTED",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
]);

/** The innermost errno-style code of an error chain (undici wraps socket errors in its own). */
export function networkCode(e: unknown): string | undefined {
  let cur: unknown = e;
  let found: string | undefined;
  for (let depth = 0; cur && typeof cur === "object" && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string") found = code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return found;
}

function innermostMessage(e: unknown): string {
  let cur: unknown = e;
  let msg = String(e);
  for (let depth = 0; cur && typeof cur === "object" && depth < 5; depth++) {
    if (cur instanceof Error && cur.message) msg = cur.message;
    cur = (cur as { cause?: unknown }).cause;
  }
  return msg;
}

/** How a request failed without an HTTP answer, for a client to word its one-line message. */
export interface NetworkFailure {
  /** The innermost errno-style code (`ECONNREFUSED`, `UND_ERR_SOCKET`), if any. */
  readonly code?: string;
  /** One line: the innermost message, prefixed with its code when it does not name it; redacted. */
  readonly detail: string;
  /** The host name did not resolve (a typo, not a hiccup). */
  readonly dns: boolean;
  /** TLS failed (certificate or protocol), as opposed to an unreachable host. */
  readonly tls: boolean;
  /** A repeat of the same request may succeed (see transientCodes). */
  readonly transient: boolean;
}

/** Classify a thrown transport error: the one place that reads undici's and Node's error codes. */
export function describeNetworkFailure(e: unknown): NetworkFailure {
  const code = networkCode(e);
  const message = redact(innermostMessage(e)).replace(/\r?\n|\r/g, "\\n");
  const detail = code && !message.includes(code) ? `${code}: ${message}` : message;
  const c = code ?? "";
  const tls =
    c.startsWith("ERR_SSL") ||
    c.startsWith("ERR_TLS") ||
    c === "EPROTO" ||
    /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO|HOSTNAME/.test(c);
  return { code, detail, dns: code === "ENOTFOUND", tls, transient: transientCodes.has(c) };
}

export interface NetworkErrorWording {
  /** The caller's signal: when it aborted, the failure is a cancellation, whatever undici said. */
  signal?: AbortSignal;
  /** Message of the CANCELLED error. */
  cancelled: string;
  /** Error code for a transport failure (NETWORK for servers, DAEMON for the Docker Engine API). */
  code?: ErrorCode;
  /** The one-line message naming what failed and the fix. */
  message: (failure: NetworkFailure) => string;
  /** Whether the loop above may repeat the request (default: the failure is transient). */
  retryable?: (failure: NetworkFailure) => boolean;
}

/**
 * Map a thrown transport failure to a SutureError: CANCELLED when the signal aborted, a
 * SutureError unchanged (our own checks raised it), else `code` with the client's wording.
 */
export function networkError(e: unknown, wording: NetworkErrorWording): SutureError {
  if (wording.signal?.aborted) return cancelledError(wording.cancelled, e);
  if (e instanceof SutureError) return e;
  const failure = describeNetworkFailure(e);
  return new HttpError(wording.code ?? "NETWORK", wording.message(failure), {
    cause: e,
    retryable: wording.retryable ? wording.retryable(failure) : failure.transient,
  });
}
