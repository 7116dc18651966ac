import assert from "node:assert/strict";
import { test } from "node:test";
import { SutureError } from "../errors/errors.ts";
import { HttpError } from "./errors.ts";
import { backoffDelay, defaultRetryPolicy, parseRetryAfter, withRetries } from "./retry.ts";

const fast = { ...defaultRetryPolicy, baseDelayMs: 1, maxDelayMs: 4 };

test("backoff doubles per retry, stays within [half, full] of the step, and is capped", () => {
  const p = { ...defaultRetryPolicy, baseDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(
    backoffDelay(0, p, () => 0),
    50,
  );
  assert.equal(
    backoffDelay(0, p, () => 1),
    100,
  );
  assert.equal(
    backoffDelay(2, p, () => 1),
    400,
  );
  assert.equal(
    backoffDelay(10, p, () => 1),
    1000,
  );
  for (let i = 0; i < 50; i++) {
    const d = backoffDelay(1, p);
    assert.ok(d >= 100 && d <= 200, `${d} within [100, 200]`);
  }
});

test("Retry-After is read as seconds or as an HTTP date; junk is ignored", () => {
  assert.equal(parseRetryAfter("3"), 3000);
  const now = Date.parse("2025-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Wed, 01 Jan 2025 00:00:05 GMT", now), 5000);
  assert.equal(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", now), 0);
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.equal(parseRetryAfter(undefined), undefined);
});

test("retryable failures are retried until success; others fail at once", async () => {
  let calls = 0;
  const result = await withRetries(async () => {
    calls++;
    if (calls < 3) throw new SutureError("REGISTRY", "503", { retryable: true });
    return "ok";
  }, fast);
  assert.equal(result, "ok");
  assert.equal(calls, 3);

  calls = 0;
  await assert.rejects(
    withRetries(async () => {
      calls++;
      throw new SutureError("UNAUTHORIZED", "no");
    }, fast),
    { code: "UNAUTHORIZED" },
  );
  assert.equal(calls, 1);
});

test("attempts are bounded, and a Retry-After beyond the limit ends the loop immediately", async () => {
  let calls = 0;
  await assert.rejects(
    withRetries(
      async () => {
        calls++;
        throw new SutureError("NETWORK", "reset", { retryable: true });
      },
      { ...fast, attempts: 4 },
    ),
    { code: "NETWORK" },
  );
  assert.equal(calls, 4);

  calls = 0;
  const started = Date.now();
  await assert.rejects(
    withRetries(async () => {
      calls++;
      throw new HttpError("REGISTRY", "429", { retryable: true, retryAfterMs: 3_600_000 });
    }, fast),
  );
  assert.equal(calls, 1);
  assert.ok(Date.now() - started < 1000);
});

test("a server's short Retry-After is waited for instead of the backoff", async () => {
  let calls = 0;
  const started = Date.now();
  await withRetries(async () => {
    if (calls++ === 0) throw new HttpError("REGISTRY", "429", { retryable: true, retryAfterMs: 300 });
  }, fast);
  assert.ok(Date.now() - started >= 290, "waited the Retry-After");
});

test("an aborted signal cancels the wait", async () => {
  const controller = new AbortController();
  const started = Date.now();
  await assert.rejects(
    withRetries(
      async () => {
        throw new SutureError("REGISTRY", "503", { retryable: true });
      },
      { ...defaultRetryPolicy, baseDelayMs: 10_000 },
      // Abort once the wait is about to begin (the event itself, not a guess at its timing).
      { signal: controller.signal, onRetry: () => queueMicrotask(() => controller.abort()) },
    ),
    { code: "CANCELLED" },
  );
  assert.ok(Date.now() - started < 5000, "the 10 s wait was cut short");
});
