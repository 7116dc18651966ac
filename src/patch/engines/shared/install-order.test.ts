import assert from "node:assert/strict";
import test from "node:test";
import { dependencyOrder } from "./install-order.ts";

const order = (graph: Record<string, string[]>) => dependencyOrder(Object.keys(graph), (k) => graph[k] ?? []);

test("what a package needs goes before it; ties by key, whatever order the repositories gave", () => {
  assert.deepEqual(order({ openssl: ["libssl3", "libcrypto3"], libssl3: ["libcrypto3"], libcrypto3: [] }), [
    "libcrypto3",
    "libssl3",
    "openssl",
  ]);
  assert.deepEqual(order({ zlib: [], curl: [], bash: [] }), ["bash", "curl", "zlib"]);
  // A package freed by another goes in key order among the ready ones, not behind them all.
  assert.deepEqual(order({ c: [], b: ["a"], a: [] }), ["a", "b", "c"]);
});

test("a cycle is broken at its first key; itself and names outside the transaction do not count", () => {
  assert.deepEqual(order({ "busybox-binsh": ["busybox"], busybox: ["busybox-binsh"], musl: [] }), [
    "musl",
    "busybox",
    "busybox-binsh",
  ]);
  assert.deepEqual(order({ a: ["a", "glibc"], b: ["a"] }), ["a", "b"]);
});
