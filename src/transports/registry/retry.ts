import { SutureError } from "../../errors/errors.ts";

/** How often and how patiently to repeat a request that failed in a way a retry can fix. */
export interface RetryPolicy {
  /** Total attempts including the first (default 5). */
  attempts: number;
  /** Delay before the first retry; doubles each time, with jitter (default 250 ms). */
  baseDelayMs: number;
  /** Upper bound for one computed backoff delay (default 8 s). */
  maxDelayMs: number;
  /** Longest `Retry-After` we wait for; a registry asking for more fails at once (default 30 s). */
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

/** An error a retry might fix, carrying the server's `Retry-After` if it sent one. */
export interface RetryHint {
  retryable: boolean;
  retryAfterMs?: number;
}

/** Sleep that ends early (rejecting with CANCELLED) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new SutureError("CANCELLED", "operation cancelled", { cause: signal.reason }));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new SutureError("CANCELLED", "operation cancelled", { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Run `attempt` until it succeeds, fails with a non-retryable error, or the policy's attempts are
 * used up (the last error is thrown). Waits the server's Retry-After when given, else backoff; a
 * Retry-After longer than the policy allows ends the loop at once, since waiting that long inside
 * one command helps nobody.
 */
export async function withRetries<T>(
  attempt: (n: number) => Promise<T>,
  policy: RetryPolicy,
  options: { signal?: AbortSignal; onRetry?: (error: unknown, delayMs: number) => void } = {},
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (e) {
      const hint = e as Partial<RetryHint>;
      if (hint?.retryable !== true || n + 1 >= policy.attempts) throw e;
      let delay = backoffDelay(n, policy);
      if (hint.retryAfterMs !== undefined) {
        if (hint.retryAfterMs > policy.maxRetryAfterMs) throw e;
        delay = hint.retryAfterMs;
      }
      options.onRetry?.(e, delay);
      await sleep(delay, options.signal);
    }
  }
}
