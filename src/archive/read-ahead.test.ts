import assert from "node:assert/strict";
import { test } from "node:test";
import { ReadAhead } from "./read-ahead.ts";

async function* numbered(count: number, log: string[], failAt?: number): AsyncGenerator<Buffer> {
  try {
    for (let i = 0; i < count; i++) {
      if (i === failAt) throw new Error(`source failed at ${i}`);
      log.push(`produced ${i}`);
      yield Buffer.from([i]);
    }
  } finally {
    log.push("source closed");
  }
}

/**
 * The read-ahead runs on its own: wait until the source has logged `n` events (not a fixed delay,
 * which a busy machine outlasts), then let a few more turns of the event loop pass, so reading on
 * past its limit would show in the log.
 */
async function untilLogged(log: string[], n: number): Promise<void> {
  while (log.length < n) await new Promise((r) => setImmediate(r));
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

async function collect(source: AsyncIterable<Buffer>): Promise<number[]> {
  const out: number[] = [];
  for await (const b of source) out.push(...b);
  return out;
}

test("reads ahead up to its limit before anyone asks, then delivers every byte in order", async () => {
  const log: string[] = [];
  const ahead = new ReadAhead(numbered(10, log), 3);
  await untilLogged(log, 3);
  assert.deepEqual(log, ["produced 0", "produced 1", "produced 2"], "stops at the limit");
  assert.deepEqual(await collect(ahead), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(log.at(-1), "source closed");
});

test("a source error reaches the consumer after the bytes before it", async () => {
  const got: number[] = [];
  await assert.rejects(
    (async () => {
      for await (const b of new ReadAhead(numbered(10, [], 4), 100)) got.push(...b);
    })(),
    /source failed at 4/,
  );
  assert.deepEqual(got, [0, 1, 2, 3]);
});

test("close() releases a source nobody consumed", async () => {
  const log: string[] = [];
  const ahead = new ReadAhead(numbered(1000, log), 2);
  await untilLogged(log, 2);
  await ahead.close();
  assert.equal(log.at(-1), "source closed");
  assert.ok(log.length < 10, "it did not read on after the limit");
});
