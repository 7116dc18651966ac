import { setTimeout as delay } from "node:timers/promises";
import { SutureError } from "../errors/errors.ts";
import { cancelledError, HttpError } from "./errors.ts";

/** How often and how patiently to repeat a request that failed in a way a retry can fix. */
export interface RetryPolicy {
  /** Total attempts including the first. */
  attempts: number;
  /** Delay before the first retry; doubles each time, with jitter. */
  baseDelayMs: number;
  /** Upper bound for one computed backoff delay. */
  maxDelayMs: number;
  /** Longest `Retry-After` we wait for; a server asking for more fails at once. */
  maxRetryAfterMs: number;
}

export const defaultRetryPolicy: RetryPolicy = {
  attempts: 5,
  baseDelayMs: 250,
  maxDelayMs: 8_000,
  maxRetryAfterMs: 30_000,
};

/**
 * Delay before retry number `retry` (0-based): exponential, with "equal jitter" (half fixed, half
 * random) so clients that failed together do not come back together.
 */
export function backoffDelay(retry: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
  return Math.round(exp / 2 + random() * (exp / 2));
}

/**
 * `Retry-After` as milliseconds from now: delta-seconds or an HTTP date. Undefined when absent or
 * unparseable (the caller then uses its own backoff).
 */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** Sleep that ends early, rejecting with CANCELLED (`cancelled` as its message), when the signal aborts. */
export async function sleep(
  ms: number,
  signal?: AbortSignal,
  cancelled = "operation cancelled",
): Promise<void> {
  try {
    await delay(ms, undefined, { signal });
  } catch (e) {
    if (signal?.aborted) throw cancelledError(cancelled, signal.reason);
    throw e;
  }
}

export interface RetryOptions {
  signal?: AbortSignal;
  /** Message of the CANCELLED error when the signal aborts a wait. */
  cancelled?: string;
  onRetry?: (error: unknown, delayMs: number) => void;
}

/**
 * Run `attempt` until it succeeds, fails with an error that is not a retryable SutureError, or the
 * policy's attempts are used up (the last error is thrown). Waits the server's Retry-After when an
 * HttpError carries one, else the backoff; a Retry-After longer than the policy allows ends the
 * loop at once, since waiting that long inside one command helps nobody.
 */
export async function withRetries<T>(
  attempt: (n: number) => Promise<T>,
  policy: RetryPolicy,
  options: RetryOptions = {},
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (e) {
      if (!(e instanceof SutureError) || !e.retryable || n + 1 >= policy.attempts) throw e;
      let wait = backoffDelay(n, policy);
      const retryAfterMs = e instanceof HttpError ? e.retryAfterMs : undefined;
      if (retryAfterMs !== undefined) {
        if (retryAfterMs > policy.maxRetryAfterMs) throw e;
        wait = retryAfterMs;
      }
      options.onRetry?.(e, wait);
      await sleep(wait, options.signal, options.cancelled);
    }
  }
}
