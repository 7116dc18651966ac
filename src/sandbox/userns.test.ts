import assert from "node:assert/strict";
import { test } from "node:test";
import { describePatchMode, parseIdMap, parseInUserNamespace, USERNS_ENV, unshareArgs } from "./userns.ts";

test("the initial namespace maps every id onto itself; anything else is a user namespace", () => {
  assert.equal(parseInUserNamespace("         0          0 4294967295\n"), false);
  assert.equal(
    parseInUserNamespace("         0        999          1\n         1     400000      65535\n"),
    true,
  );
  assert.equal(parseInUserNamespace("0 1000 1\n"), true);
});

test("uid_map lines parse into ranges; a single-id mapping counts one id", () => {
  assert.deepEqual(parseIdMap("0 999 1\n1 400000 65535\n"), [
    { inside: 0, outside: 999, count: 1 },
    { inside: 1, outside: 400000, count: 65535 },
  ]);
  assert.deepEqual(parseIdMap("garbage\n"), []);
});

test("subordinate ranges map through newuidmap (--map-auto); without them only the caller's id", () => {
  assert.ok(unshareArgs(true).includes("--map-auto"));
  assert.ok(!unshareArgs(false).includes("--map-auto"));
  for (const a of [unshareArgs(true), unshareArgs(false)]) {
    for (const f of ["--map-root-user", "--mount", "--pid", "--fork"]) assert.ok(a.includes(f), f);
  }
});

test("where no /proc of its own can be mounted (a container's masked paths), no pid namespace either", () => {
  const a = unshareArgs(true, false);
  for (const f of ["--pid", "--mount-proc"]) assert.ok(!a.includes(f), f);
  for (const f of ["--map-auto", "--map-root-user", "--mount", "--fork"]) assert.ok(a.includes(f), f);
});

test("the mode line names the mapping the user got", () => {
  // This test process runs in whatever namespace it was started in; both lines are well-formed.
  const line = describePatchMode({ [USERNS_ENV]: "single" });
  assert.match(
    line,
    /^mode: (root|user-namespace \(a single-id mapping: no range for you in \/etc\/subuid\))/,
  );
});
