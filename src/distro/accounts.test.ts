import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";
import { ImageAccounts, imageIds } from "./accounts.ts";

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

test("package owners by name: unknown names are undefined; the tables are read again after forget()", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-accounts-"));
  try {
    await mkdir(join(root, "etc"));
    await writeFile(join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    await writeFile(join(root, "etc/group"), "root:x:0:\n");
    const accounts = new ImageAccounts(root);
    assert.deepEqual(await accounts.ids({ user: "root", group: "root" }), { uid: 0, gid: 0 });
    assert.deepEqual(await accounts.ids({ user: "svc", group: "svc" }), { uid: undefined, gid: undefined });
    // A pre-install script adds the package's user: seen only once the caller forgets the tables.
    await writeFile(join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nsvc:x:101:101::/:/bin/false\n");
    await writeFile(join(root, "etc/group"), "root:x:0:\nsvc:x:101:\n");
    assert.equal((await accounts.ids({ user: "svc" })).uid, undefined, "kept until forgotten");
    accounts.forget();
    assert.deepEqual(await accounts.ids({ user: "svc", group: "svc" }), { uid: 101, gid: 101 });
    assert.deepEqual(await accounts.ids({}), { uid: undefined, gid: undefined });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
