import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
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
/** Per path: where each policy lands (an image path below the root), undefined, or a loop error. */
const table: { path: string; why: string; expect: Record<keyof typeof policies, Expect> }[] = [
  {
    path: "/abs-etc/passwd",
    why: "an absolute link is taken from the image's root, not the host's",
    expect: { read: "/etc/passwd", mount: "/etc/passwd", entry: "/etc/passwd", keepDirlinks: "/etc/passwd" },
  },
  {
    path: "/etc/dotdot",
    why: "a `..` chain stops at the root",
    expect: { read: "/etc/passwd", mount: "/etc/passwd", entry: "/etc/dotdot", keepDirlinks: "/etc/dotdot" },
  },
  {
    path: "/../../../etc/passwd",
    why: "`..` in the asked path stops at the root",
    expect: { read: "/etc/passwd", mount: "/etc/passwd", entry: "/etc/passwd", keepDirlinks: "/etc/passwd" },
  },
  {
    path: "/up/etc/passwd",
    why: "a link to /../../.. is the root",
    expect: { read: "/etc/passwd", mount: "/etc/passwd", entry: "/etc/passwd", keepDirlinks: "/etc/passwd" },
  },
  {
    path: "/loop-a",
    why: "a loop ends in an error, not a hang (unless the final link is kept as it is)",
    expect: { read: "loop", mount: "loop", entry: "/loop-a", keepDirlinks: "loop" },
  },
  {
    path: "/loop-a/x",
    why: "a loop in a parent always ends in an error",
    expect: { read: "loop", mount: "loop", entry: "loop", keepDirlinks: "loop" },
  },
  {
    path: "/lib/os-release",
    why: "a symlinked directory is followed for what lies below it",
    expect: {
      read: "/usr/lib/os-release",
      mount: "/usr/lib/os-release",
      entry: "/usr/lib/os-release",
      keepDirlinks: "/usr/lib/os-release",
    },
  },
  {
    path: "/lib",
    why: "a final link to a directory: kept with keepDirlinks, the link itself for an entry",
    expect: { read: "/usr/lib", mount: "/usr/lib", entry: "/lib", keepDirlinks: "/usr/lib" },
  },
  {
    path: "/file-link",
    why: "keepDirlinks follows a final link only to a directory",
    expect: { read: "/etc/passwd", mount: "/etc/passwd", entry: "/file-link", keepDirlinks: "/file-link" },
  },
  {
    path: "/file-link/x",
    why: "a link to a file used as a directory leads nowhere",
    expect: { read: undefined, mount: undefined, entry: undefined, keepDirlinks: undefined },
  },
  {
    path: "/etc/passwd/x",
    why: "a file used as a directory leads nowhere",
    expect: { read: undefined, mount: undefined, entry: undefined, keepDirlinks: undefined },
  },
  {
    path: "/dangling",
    why: "a dangling absolute link points inside the root, where it would be created",
    expect: { read: undefined, mount: "/nowhere/at/all", entry: "/dangling", keepDirlinks: "/dangling" },
  },
  {
    path: "/to-root",
    why: "a link to / is the root",
    expect: { read: "/", mount: "/", entry: "/to-root", keepDirlinks: "/" },
  },
  {
    path: "/hop-1",
    why: `${MAX_SYMLINK_HOPS} links in a row are followed (Linux's limit)`,
    expect: { read: "/etc/passwd", mount: "/etc/passwd", entry: "/hop-1", keepDirlinks: "/hop-1" },
  },
  {
    path: "/hop-0",
    why: `${MAX_SYMLINK_HOPS + 1} links in a row are too many`,
    expect: { read: "loop", mount: "loop", entry: "/hop-0", keepDirlinks: "loop" },
  },
];

for (const row of table) {
  test(`in-root resolution of ${row.path}: ${row.why}`, async () => {
    for (const [name, policy] of Object.entries(policies)) {
      const want = row.expect[name as keyof typeof policies];
      const got = resolveInRoot(root, row.path, policy);
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
});
