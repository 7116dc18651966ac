import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import {
  type InRootPolicy,
  MAX_SYMLINK_HOPS,
  MOUNT_POLICY,
  READ_POLICY,
  readFileInRoot,
  readFileInRootSync,
  resolveInRoot,
  walkInRoot,
} from "./in-root.ts";

const work = mkdtempSync(join(tmpdir(), "suture-in-root-"));
after(() => rmSync(work, { recursive: true, force: true }));

/**
 * An image root built to escape: absolute links to host directories, `..` chains, loops, a
 * symlinked directory (usrmerge), a link to a file used as a directory, chains of 40 and 41 links.
 */
const root = join(work, "root");
mkdirSync(join(root, "etc"), { recursive: true });
mkdirSync(join(root, "usr/lib"), { recursive: true });
writeFileSync(join(root, "etc/passwd"), "image passwd\n");
writeFileSync(join(root, "usr/lib/os-release"), "ID=debian\n");
symlinkSync("/etc", join(root, "abs-etc"));
symlinkSync("../../../../../../etc/passwd", join(root, "etc/dotdot"));
symlinkSync("/../../..", join(root, "up"));
symlinkSync("loop-b", join(root, "loop-a"));
symlinkSync("loop-a", join(root, "loop-b"));
symlinkSync("usr/lib", join(root, "lib"));
symlinkSync("../usr/lib/os-release", join(root, "etc/os-release"));
symlinkSync("/etc/passwd", join(root, "file-link"));
symlinkSync("/nowhere/at/all", join(root, "dangling"));
symlinkSync("/", join(root, "to-root"));
// hop-0 -> hop-1 -> … -> hop-N -> /etc/passwd: resolving hop-0 follows N+1 links.
for (let i = 0; i < MAX_SYMLINK_HOPS; i++) symlinkSync(`hop-${i + 1}`, join(root, `hop-${i}`));
symlinkSync("/etc/passwd", join(root, `hop-${MAX_SYMLINK_HOPS}`));

const ENTRY: InRootPolicy = { followFinal: false, mustExist: true };
const KEEP_DIRLINKS: InRootPolicy = { followFinal: false, keepDirlinks: true, mustExist: true };
const policies = { read: READ_POLICY, mount: MOUNT_POLICY, entry: ENTRY, keepDirlinks: KEEP_DIRLINKS };

type Expect = string | undefined | "loop";
/**
 * Per path: where each policy lands (an image path below the root), undefined, or a loop error,
 * in the order read, mount, entry, keepDirlinks; then why.
 */
// biome-ignore format: a table reads best one row a line
const table: [path: string, read: Expect, mount: Expect, entry: Expect, keepDirlinks: Expect, why: string][] = [
  ["/abs-etc/passwd", "/etc/passwd", "/etc/passwd", "/etc/passwd", "/etc/passwd", "an absolute link is taken from the image's root, not the host's"],
  ["/etc/dotdot", "/etc/passwd", "/etc/passwd", "/etc/dotdot", "/etc/dotdot", "a `..` chain stops at the root"],
  ["/../../../etc/passwd", "/etc/passwd", "/etc/passwd", "/etc/passwd", "/etc/passwd", "`..` in the asked path stops at the root"],
  ["/up/etc/passwd", "/etc/passwd", "/etc/passwd", "/etc/passwd", "/etc/passwd", "a link to /../../.. is the root"],
  ["/loop-a", "loop", "loop", "/loop-a", "loop", "a loop ends in an error, not a hang (unless the final link is kept as it is)"],
  ["/loop-a/x", "loop", "loop", "loop", "loop", "a loop in a parent always ends in an error"],
  ["/lib/os-release", "/usr/lib/os-release", "/usr/lib/os-release", "/usr/lib/os-release", "/usr/lib/os-release", "a symlinked directory is followed for what lies below it"],
  ["/lib", "/usr/lib", "/usr/lib", "/lib", "/usr/lib", "a final link to a directory: kept with keepDirlinks, the link itself for an entry"],
  ["/file-link", "/etc/passwd", "/etc/passwd", "/file-link", "/file-link", "keepDirlinks follows a final link only to a directory"],
  ["/file-link/x", undefined, undefined, undefined, undefined, "a link to a file used as a directory leads nowhere"],
  ["/etc/passwd/x", undefined, undefined, undefined, undefined, "a file used as a directory leads nowhere"],
  ["/dangling", undefined, "/nowhere/at/all", "/dangling", "/dangling", "a dangling absolute link points inside the root, where it would be created"],
  ["/to-root", "/", "/", "/to-root", "/", "a link to / is the root"],
  ["/hop-1", "/etc/passwd", "/etc/passwd", "/hop-1", "/hop-1", `${MAX_SYMLINK_HOPS} links in a row are followed (Linux's limit)`],
  ["/hop-0", "loop", "loop", "/hop-0", "loop", `${MAX_SYMLINK_HOPS + 1} links in a row are too many`],
];

for (const [path, ...row] of table) {
  const why = row[4];
  test(`in-root resolution of ${path}: ${why}`, async () => {
    for (const [i, [name, policy]] of Object.entries(policies).entries()) {
      const want = row[i] as Expect;
      const got = resolveInRoot(root, path, policy);
      if (want === "loop") {
        await assert.rejects(
          got,
          (e: unknown) =>
            isSutureError(e, "UNSAFE_LAYER") && /too many symlinks resolving .* in the image/.test(e.message),
          `${name}: a loop error`,
        );
        continue;
      }
      const host = await got;
      const expected = want === undefined ? undefined : want === "/" ? root : join(root, want);
      assert.equal(host, expected, `${name} policy`);
      // Whatever a policy answers, it is below the root.
      if (host !== undefined) assert.ok(host === root || host.startsWith(`${root}/`), `${name}: ${host}`);
    }
  });
}

test("the resolver reports what is missing, and what is not a directory", () => {
  const missing = walkInRoot(root, "/abs-etc/ssl/certs/ca.pem", MOUNT_POLICY);
  assert.equal(missing.kind, "missing");
  assert.equal(missing.host, join(root, "etc/ssl/certs/ca.pem"));
  assert.deepEqual(missing.kind === "missing" && missing.missing, [
    "/etc/ssl",
    "/etc/ssl/certs",
    "/etc/ssl/certs/ca.pem",
  ]);
  const file = walkInRoot(root, "/file-link/x/y", MOUNT_POLICY);
  assert.equal(file.kind, "not-directory");
  assert.equal(file.path, "/etc/passwd");
});

test("create makes the missing directories inside the root, through absolute links, never on the host", () => {
  const root = join(work, "create-root");
  mkdirSync(join(root, "etc"), { recursive: true });
  symlinkSync("/etc", join(root, "abs-etc"));
  symlinkSync("/nowhere/at/all", join(root, "dangling"));
  const made = walkInRoot(root, "/abs-etc/new-dir/sub/file", { followFinal: false, create: "parents" });
  assert.equal(made.kind, "missing", "the last component is not created with create: parents");
  assert.ok(existsSync(join(root, "etc/new-dir/sub")));
  assert.ok(!existsSync("/etc/new-dir"), "nothing was created on the host");
  const dir = walkInRoot(root, "/dangling", { followFinal: true, create: "all" });
  assert.equal(dir.kind, "found");
  assert.ok(dir.kind === "found" && dir.stat.isDirectory());
  assert.equal(dir.host, join(root, "nowhere/at/all"));
});

test("file reads follow the image's links inside the root only", async () => {
  assert.equal((await readFileInRoot(root, "/etc/os-release"))?.toString(), "ID=debian\n");
  assert.equal((await readFileInRoot(root, "/abs-etc/passwd"))?.toString(), "image passwd\n");
  assert.equal(await readFileInRoot(root, "/to-root"), undefined, "a directory is no file");
  assert.equal(await readFileInRoot(root, "/file-link/x"), undefined);
  assert.equal(readFileInRootSync(root, "/abs-etc/passwd")?.toString(), "image passwd\n");
  assert.equal(readFileInRootSync(root, "/to-root"), undefined, "a directory is no file");
});

test("readFileInRoot (and its synchronous twin) reads regular files only, up to a limit", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-in-root-read-"));
  try {
    await writeFile(join(root, "conf"), "0123456789");
    // A FIFO where a file belongs would hang a plain read: it is not a file the image has.
    execFileSync("mkfifo", [join(root, "fifo")]);
    assert.equal(await readFileInRoot(root, "/fifo"), undefined);
    assert.equal((await readFileInRoot(root, "/conf"))?.toString(), "0123456789");
    await assert.rejects(readFileInRoot(root, "/conf", { limit: 4 }), (e: unknown) =>
      isSutureError(e, "TOO_LARGE"),
    );
    assert.equal(readFileInRootSync(root, "/fifo"), undefined);
    assert.equal(readFileInRootSync(root, "/missing"), undefined);
    assert.equal(readFileInRootSync(root, "/conf")?.toString(), "0123456789");
    assert.throws(
      () => readFileInRootSync(root, "/conf", { limit: 4 }),
      (e: unknown) => isSutureError(e, "TOO_LARGE"),
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
