import assert from "node:assert/strict";
import { test } from "node:test";
import { type RpmScript, RpmScriptFlag, scriptNeed } from "./scripts.ts";

const script = (interpreter: string[], body?: string, flags = 0): RpmScript => ({
  label: "%post",
  interpreter,
  flags,
  ...(body === undefined ? {} : { body }),
});

test("what a scriptlet needs to run: the image's interpreter, a program, only ldconfig, or rpm itself", () => {
  assert.deepEqual(scriptNeed(script(["/bin/sh"], "useradd x\n")), {
    kind: "interpreter",
    program: "/bin/sh",
  });
  assert.deepEqual(scriptNeed(script(["/usr/bin/python3"], "print(1)")), {
    kind: "interpreter",
    program: "/usr/bin/python3",
  });
  // `%post -p /sbin/ldconfig` and a shell body of only that command run without a shell.
  assert.deepEqual(scriptNeed(script(["/sbin/ldconfig"])), { kind: "ldconfig", program: "/sbin/ldconfig" });
  assert.deepEqual(scriptNeed(script(["/bin/sh"], "\n/sbin/ldconfig\n")), {
    kind: "ldconfig",
    program: "/sbin/ldconfig",
  });
  assert.deepEqual(scriptNeed(script(["/bin/sh"], "ldconfig")), {
    kind: "ldconfig",
    program: "/sbin/ldconfig",
  });
  assert.deepEqual(scriptNeed(script(["/bin/sh"], "/sbin/ldconfig -X")).kind, "interpreter");
  assert.deepEqual(scriptNeed(script(["/usr/sbin/update-alternatives", "--auto", "x"])), {
    kind: "program",
    program: "/usr/sbin/update-alternatives",
  });
  // Only rpm runs Lua, and expands macros or query formats in a body at install time.
  assert.equal(scriptNeed(script(["<lua>"], "print(1)")).kind, "rpm-only");
  assert.equal(scriptNeed(script(["/bin/sh"], "echo %{name}", RpmScriptFlag.EXPAND)).kind, "rpm-only");
  assert.equal(scriptNeed(script(["/bin/sh"], "echo %{VERSION}", RpmScriptFlag.QFORMAT)).kind, "rpm-only");
  // A critical flag alone changes nothing about what runs it.
  assert.equal(scriptNeed(script(["/bin/sh"], "true", RpmScriptFlag.CRITICAL)).kind, "interpreter");
});
