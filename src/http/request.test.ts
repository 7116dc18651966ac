import assert from "node:assert/strict";
import { test } from "node:test";
import { mockAgent } from "../../test/fakes/http-faults.ts";
import { isSutureError, SutureError } from "../errors/errors.ts";
import { NoResponseError, readCapped, readPrefix, send } from "./request.ts";

const ORIGIN = "http://server.test";

test("a server that never answers is cut off at the headers deadline with NoResponseError", async () => {
  const agent = mockAgent();
  agent.get(ORIGIN).intercept({ path: "/slow" }).reply(200, "late").delay(60_000);
  const started = Date.now();
  await assert.rejects(
    send({ method: "GET", url: `${ORIGIN}/slow`, dispatcher: agent, headersDeadlineMs: 100 }),
    (e: unknown) => e instanceof NoResponseError && e.code === "UND_ERR_HEADERS_TIMEOUT",
  );
  assert.ok(Date.now() - started < 5_000);
});

test("the caller's abort wins over the deadline", async () => {
  const agent = mockAgent();
  agent.get(ORIGIN).intercept({ path: "/slow" }).reply(200, "late").delay(60_000);
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 20);
  await assert.rejects(
    send({
      method: "GET",
      url: `${ORIGIN}/slow`,
      dispatcher: agent,
      headersDeadlineMs: 60_000,
      signal: controller.signal,
    }),
    (e: unknown) => !(e instanceof NoResponseError),
  );
});

test("capped reads refuse an announced or an actual excess; prefix reads keep the head and never throw", async () => {
  const agent = mockAgent();
  const pool = agent.get(ORIGIN);
  const big = Buffer.alloc(300, 0x61);
  pool.intercept({ path: "/a" }).reply(200, big, { headers: { "content-length": "300" } });
  pool.intercept({ path: "/b" }).reply(200, big);
  pool.intercept({ path: "/c" }).reply(500, big);
  const tooLarge = (announced?: number) => new SutureError("TOO_LARGE", `announced ${announced}`);
  const get = (path: string) => send({ method: "GET", url: `${ORIGIN}${path}`, dispatcher: agent });
  await assert.rejects(
    readCapped(await get("/a"), 100, tooLarge),
    (e: unknown) => isSutureError(e, "TOO_LARGE") && e.message === "announced 300",
  );
  await assert.rejects(
    readCapped(await get("/b"), 100, tooLarge),
    (e: unknown) => isSutureError(e, "TOO_LARGE") && e.message === "announced undefined",
  );
  assert.deepEqual(await readPrefix(await get("/c"), 10), big.subarray(0, 10));
});
