import assert from "node:assert/strict";
import test from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { transferAll } from "./fetch.ts";

const tick = () => new Promise((r) => setTimeout(r, 5));

test("results in the order of the items, never more than `concurrency` at once", async () => {
  let running = 0;
  let most = 0;
  const out = await transferAll(
    [5, 1, 4, 2, 3],
    async (n) => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, n * 3));
      running--;
      return n * 10;
    },
    { concurrency: 2, cancelled: "cancelled" },
  );
  assert.deepEqual(out, [50, 10, 40, 20, 30]);
  assert.equal(most, 2);
});

test("the first failure aborts the running transfers, skips the rest and is thrown", async () => {
  const started: number[] = [];
  let abortedSeen = false;
  await assert.rejects(
    transferAll(
      [0, 1, 2, 3, 4],
      async (n, signal) => {
        started.push(n);
        if (n === 1) throw new Error("boom");
        await new Promise((r) => setTimeout(r, 30));
        if (signal.aborted) abortedSeen = true;
      },
      { concurrency: 2, cancelled: "cancelled" },
    ),
    /boom/,
  );
  assert.deepEqual(started, [0, 1], "nothing started after the failure");
  assert.ok(abortedSeen, "the running transfer saw its signal abort");
});

test("an outer abort is CANCELLED", async () => {
  const outer = new AbortController();
  await assert.rejects(
    transferAll(
      [1, 2],
      async (_n, signal) => {
        outer.abort();
        await tick();
        signal.throwIfAborted();
      },
      { concurrency: 2, signal: outer.signal, cancelled: "package download cancelled" },
    ),
    (e: unknown) => isSutureError(e, "CANCELLED") && /package download cancelled/.test((e as Error).message),
  );
});
