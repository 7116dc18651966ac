/**
 * Patching without root (issue 16, mode 2): an unprivileged user runs `suture patch`, which re-runs
 * itself as root of a user namespace mapped from the user's subordinate ids. The patch layer must
 * be the one root mode writes: same entries, owners, modes and content.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, readdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { distrolessLabImage } from "../lab/distroless.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";
import { leftIn, startUnprivilegedLab, type UnprivilegedLab } from "../lab/unprivileged.ts";

const { after, before, test } = await requiring("root", "loopback", "tool:runuser", "tool:unshare");

before(useArchiveMirror);

const run = promisify(execFile);

// The libraries of the bench's "lib" workload: a report the native engine patches without scripts.
const LIB_PACKAGES = ["libssl3", "openssl", "libexpat1", "liblzma5", "libpcre2-8-0"];

let ulab: UnprivilegedLab;
before(async () => {
  ulab = await startUnprivilegedLab({ prefix: "suture-rootless-" });
});
after(() => ulab?.close());

// ldconfig's aux-cache records the inode numbers and ctimes of the libraries it scanned: it
// differs between any two runs, root or not. Its presence, owner, mode and size still count.
const auxCache = (path: string) => path.endsWith("var/cache/ldconfig/aux-cache");

test("nginx with a library report: the unprivileged user's patch layer is root mode's, entry for entry", async () => {
  const nginx = await labImage("bookwormNginx");
  const report = await trivyReportFor("bookwormNginx", {
    only: LIB_PACKAGES,
    outFile: join(ulab.work, "lib.json"),
  });
  await chmod(report.path, 0o644);
  const src = await ulab.pushLab(nginx.reference, "lab/nginx");
  const { userStderr, user, root } = await ulab.patchAsUserAndRoot(src, "lab/nginx", ["-r", report.path], {
    contentIgnored: auxCache,
  });
  assert.match(userStderr, /mode: user-namespace \(ids mapped from your subordinate ranges\)/);
  // Every script and trigger here has a native equivalent: configured without runc, as in root mode.
  assert.match(userStderr, /configuring natively/);
  assert.ok(root.length > 10, `root mode wrote a real layer (${root.length} entries)`);
  assert.deepEqual(user, root);
  assert.ok(
    user.some((l) => / 0:0 /.test(l)),
    "owners are the image's real ids (root), not the user's mapped ids",
  );
});

test("distroless: the unprivileged user's patch layer is root mode's, entry for entry", async () => {
  const lab = await distrolessLabImage();
  const src = await ulab.pushLab(lab.reference, "lab/distroless");
  const { userStderr, user, root } = await ulab.patchAsUserAndRoot(src, "lab/distroless", [], {
    contentIgnored: auxCache,
  });
  assert.match(userStderr, /mode: user-namespace/);
  assert.ok(root.length > 5);
  assert.deepEqual(user, root);
});

test("SIGINT mid-patch leaves no mount, process or temp dir of the user behind", async () => {
  const nginx = await labImage("bookwormNginx");
  const src = `docker://${ulab.registry.host}/lab/nginx:1`;
  await ulab.pushLab(nginx.reference, "lab/nginx");
  // Interrupted once the layers are being extracted (the namespace is up and the work dir exists).
  const { code, stderr, cache, tmp, processesLeft } = await ulab.interruptedPatch({
    src,
    target: `${ulab.registry.host}/lab/nginx:int`,
    when: /extract|layer/i,
  });
  assert.equal(code, 130, stderr);
  assert.equal(processesLeft, "", "no process of this patch is left");
  assert.equal((await run("findmnt", ["-rn", "-o", "TARGET"])).stdout.includes(cache), false);
  assert.deepEqual(await leftIn(tmp), [], "no temp file of the user is left");
  const left = (await readdir(cache).catch(() => [] as string[])).filter((n) => n.startsWith("patch-"));
  assert.deepEqual(left, [], "no patch work dir is left in the cache");
});
