import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";
import { imageIds } from "./accounts.ts";

test("an image's ids by name: the first entry wins, as getpwnam finds it; bad lines skipped", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-accounts-"));
  try {
    await mkdir(join(root, "etc"));
    await writeFile(
      join(root, "etc/passwd"),
      "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\napp:x:2000:2000::/:/bin/sh\nbroken\nneg:x:-1:0::/:\n",
    );
    assert.deepEqual(
      [...(await imageIds(root, "/etc/passwd"))],
      [
        ["root", 0],
        ["app", 1000],
      ],
    );
    assert.deepEqual([...(await imageIds(root, "/etc/group"))], [], "a missing file is an empty table");
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
