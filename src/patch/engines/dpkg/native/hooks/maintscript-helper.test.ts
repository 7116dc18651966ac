import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";
import { MAINTSCRIPT_HELPER } from "./maintscript-helper.ts";

/**
 * The stand-in's decision, run by `sh` over a scratch tree: "recorded" when it lets the call be
 * recorded (it does nothing), "real" when it hands it to the real helper. The tree's paths are
 * absolute host paths here, as the image's are inside it.
 */
function decide(args: string[], env: Record<string, string> = {}): "recorded" | "real" {
  const script = `${MAINTSCRIPT_HELPER.decides!("echo real")}\necho recorded\n`;
  const r = spawnSync("sh", ["-c", script, "dpkg-maintscript-helper", ...args], {
    encoding: "utf8",
    env: {
      PATH: "/usr/bin:/bin",
      DPKG_MAINTSCRIPT_NAME: "postinst",
      DPKG_MAINTSCRIPT_PACKAGE: "tzdata",
      ...env,
    },
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.startsWith("real") ? "real" : "recorded";
}

test("dpkg-maintscript-helper's stand-in records only postinst calls that do nothing", {
  skip: !existsSync("/usr/share/dpkg/sh/dpkg-error.sh") && "the real helper's library is not on this host",
}, async (t) => {
  const root = await mkdtemp(join(tmpdir(), "suture-maintscript-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  const dir = join(root, "zoneinfo/posix/US");
  await mkdir(join(root, "zoneinfo/US"), { recursive: true });
  await mkdir(join(root, "zoneinfo/posix"), { recursive: true });
  await symlink("../US", dir);
  const upgrade = ["--", "configure", "2026b-0+deb12u1"];

  // tzdata's own call, after the switch was finished long ago.
  assert.equal(decide(["dir_to_symlink", dir, "../US", "2022g-1~", ...upgrade]), "recorded");
  assert.equal(
    decide(["dir_to_symlink", `${dir}/`, "../US", "--", ...upgrade]),
    "recorded",
    "no last version",
  );
  assert.equal(decide(["dir_to_symlink", dir, "../US", "2022g-1~", "--", "abort-upgrade", "1"]), "recorded");
  // A switch left half done: the staging directory and its backup.
  await rm(dir);
  await mkdir(dir);
  await writeFile(join(dir, ".dpkg-staging-dir"), "");
  await mkdir(`${dir}.dpkg-backup`);
  assert.equal(decide(["dir_to_symlink", dir, "../US", "2022g-1~", ...upgrade]), "real");

  // Anything the helper would refuse, or that another setting changes, goes to the real one.
  const call = ["dir_to_symlink", join(root, "zoneinfo/posix/Asia"), "../Asia", "2022g-1~", ...upgrade];
  assert.equal(decide(call), "recorded");
  assert.equal(decide(call, { DPKG_MAINTSCRIPT_NAME: "preinst" }), "real");
  assert.equal(decide(call, { DPKG_MAINTSCRIPT_PACKAGE: "" }), "real");
  assert.equal(decide(call, { DPKG_ROOT: "/srv/chroot" }), "real");
  assert.equal(decide(call, { DPKG_ROOT: "/" }), "recorded");
  assert.equal(decide(call, { DPKG_DEBUG: "1" }), "real");
  for (const bad of ["x1", "1:2.0", "1.0-", "2022g 1", "", "1.0_beta"])
    assert.equal(
      decide(["dir_to_symlink", "/a", "../a", bad, ...upgrade]),
      bad === "" ? "recorded" : "real",
      bad,
    );
  assert.equal(decide(["dir_to_symlink", "a/b", "../b", "1.0", ...upgrade]), "real", "a relative path");
  assert.equal(decide(["dir_to_symlink", "/a", "../a", "1.0", "configure", "1"]), "real", "no --");
  assert.equal(decide(["dir_to_symlink", "/a", "../a", "1.0", "--"]), "real", "no script arguments");
  assert.equal(decide(["frobnicate", "/a", "--", "configure", "1"]), "real", "an unknown command");
  assert.equal(decide(["supports", "dir_to_symlink"]), "real");

  // Conffiles: only leftovers of the preinst's half make the postinst act.
  const conf = join(root, "etc/old.conf");
  await mkdir(join(root, "etc"), { recursive: true });
  const rmConf = ["rm_conffile", conf, "1.2-1", ...upgrade];
  assert.equal(decide(rmConf), "recorded");
  assert.equal(decide(["rm_conffile", conf, "1.2-1", "--", "configure", ""]), "recorded", "a first install");
  await writeFile(`${conf}.dpkg-remove`, "");
  assert.equal(decide(rmConf), "real");
  const mvConf = ["mv_conffile", conf, join(root, "etc/new.conf"), "1.2-1", "tzdata", ...upgrade];
  assert.equal(decide(mvConf), "real", "a .dpkg-remove left to delete");
  await rm(`${conf}.dpkg-remove`);
  assert.equal(decide(mvConf), "recorded");
  await writeFile(conf, "");
  assert.equal(decide(mvConf), "real", "the old conffile still there");
  assert.equal(decide(["mv_conffile", conf, "new.conf", "1.2-1", ...upgrade]), "real", "a relative new name");

  const link = join(root, "doc/perl-base");
  assert.equal(decide(["symlink_to_dir", link, "perl", "5.36.0-1", "perl-base", ...upgrade]), "recorded");
  await mkdir(join(root, "doc"), { recursive: true });
  await symlink("perl", `${link}.dpkg-backup`);
  assert.equal(decide(["symlink_to_dir", link, "perl", "5.36.0-1", "perl-base", ...upgrade]), "real");
});
