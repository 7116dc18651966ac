import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { buildApi } from "./api.ts";
import { MemoryQueue } from "./memory-queue.ts";
import { openSqliteStore } from "./sqlite-store.ts";
import { Watcher } from "./watcher.ts";

const TOKEN = "0123456789abcdef0123456789abcdef";

function api() {
  const store = openSqliteStore(":memory:");
  const queue = new MemoryQueue();
  return {
    app: buildApi({ store, queue, watcher: new Watcher({ store, queue }), token: TOKEN }),
    store,
    queue,
  };
}

test("openapi.yaml describes every route the API has, and no other", () => {
  const doc = parse(readFileSync(join(import.meta.dirname, "openapi.yaml"), "utf8")) as {
    paths: Record<string, Record<string, unknown>>;
  };
  const documented = Object.entries(doc.paths)
    .flatMap(([path, ops]) =>
      Object.keys(ops)
        .filter((k) => k !== "parameters")
        .map((m) => `${m.toUpperCase()} ${path}`),
    )
    .sort();
  const routes = [
    ...new Set(
      api()
        .app.routes.filter((r) => r.method !== "ALL")
        .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, "{$1}")}`),
    ),
  ].sort();
  assert.deepEqual(routes, documented);
});

test("rules CRUD through the API: a bad rule is a 400 naming the field; the store keeps what was accepted", async () => {
  const { app, store } = api();
  const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
  const bad = await app.request("/api/v1/rules", {
    method: "POST",
    headers: auth,
    body: JSON.stringify({ id: "x", image: "r.example/app", tags: { strategy: "pattern", pattern: "(" } }),
  });
  assert.equal(bad.status, 400);
  assert.match(
    ((await bad.json()) as { error: { message: string } }).error.message,
    /tags\.pattern: not a valid regular expression/,
  );
  const rule = {
    id: "web",
    image: "127.0.0.1:1/team/web",
    tags: { strategy: "latest" },
    intervalSeconds: 3600,
  };
  assert.equal(
    (await app.request("/api/v1/rules", { method: "POST", headers: auth, body: JSON.stringify(rule) }))
      .status,
    201,
  );
  assert.equal(
    (await app.request("/api/v1/rules", { method: "POST", headers: auth, body: JSON.stringify(rule) }))
      .status,
    400,
  );
  assert.deepEqual(await store.rules.get("web"), rule);
  assert.equal((await app.request("/api/v1/rules/web", { method: "DELETE", headers: auth })).status, 204);
  assert.equal((await app.request("/api/v1/rules/web", { headers: auth })).status, 404);
  assert.equal(
    (await app.request("/api/v1/rules", { headers: { authorization: "Bearer nope" } })).status,
    401,
  );
});
