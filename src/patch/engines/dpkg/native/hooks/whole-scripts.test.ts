import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";
import { updateMimeIfPresent } from "./whole-scripts.ts";

test("updateMimeIfPresent: nothing to do without an executable update-mime on the script path; the real script runs with one", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-update-mime-"));
  try {
    await mkdir(join(root, "usr/bin"), { recursive: true });
    await symlink("usr/bin", join(root, "bin"));
    assert.equal(updateMimeIfPresent(root, ["configure", "6.0-28"], "configure").done, true);
    // Not executable: `which` skips it.
    await writeFile(join(root, "usr/bin/update-mime"), "#!/bin/sh\n", { mode: 0o644 });
    assert.equal(updateMimeIfPresent(root, ["upgrade", "6.0-28+deb12u1"]).done, true);
    await chmod(join(root, "usr/bin/update-mime"), 0o755);
    const found = updateMimeIfPresent(root, ["upgrade", "6.0-28+deb12u1"]);
    assert.equal(found.done, false);
    assert.match(!found.done ? found.unsupported : "", /update-mime/);
    // The postinst only calls it for `configure`.
    assert.equal(updateMimeIfPresent(root, ["abort-upgrade"], "configure").done, true);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
