import assert from "node:assert/strict";
import { needs, requiring } from "./requirements.ts";

const { test, before, describe } = await requiring("tool:no-such-tool-xyz");
before(() => {
  throw new Error("hook ran");
});
test("skipped one", () => assert.fail("ran"));
test("skipped two", { timeout: 5 }, () => assert.fail("ran"));
describe("suite", () => {
  test("inner", () => assert.fail("ran"));
});
const real = await requiring("tool:sh");
real.test("runs", async () => assert.deepEqual(await needs("tool:sh"), {}));
real.test("root as seen", async () =>
  console.log(JSON.stringify(await needs("root", "loopback", "network", "runc"))),
);
