import assert from "node:assert/strict";
import test from "node:test";
import { scriptsNeedRuntime } from "./native.ts";

test("scriptsNeedRuntime: libc-bin's ldconfig trigger alone needs no runtime; any script or other trigger does", () => {
  assert.equal(scriptsNeedRuntime([]), false);
  // Library packages: debhelper's `activate-noawait ldconfig` and nothing else.
  assert.equal(
    scriptsNeedRuntime([
      { scripts: [], triggers: ["ldconfig"] },
      { scripts: [], triggers: [] },
    ]),
    false,
  );
  assert.equal(
    scriptsNeedRuntime([{ scripts: ["openssl postinst configure 3.0.17-1~deb12u2"], triggers: [] }]),
    true,
  );
  assert.equal(
    scriptsNeedRuntime([{ scripts: [], triggers: ["ldconfig", "/usr/share/mime/packages"] }]),
    true,
  );
  assert.equal(scriptsNeedRuntime([{ scripts: [], triggers: ["ldconfig"] }], new Set()), true);
});
