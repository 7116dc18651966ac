import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_EXCLUDES, defaultExclude, excludeMatcher, globToRegExp } from "./excludes.ts";

const file = (size = 10) => ({ type: "file" as const, size });
const dir = { type: "directory" as const, size: 0 };

test("glob: * stays within a segment, ** crosses segments, /dir/** excludes contents only", () => {
  assert.ok(globToRegExp("/var/cache/debconf/*-old").test("/var/cache/debconf/config.dat-old"));
  assert.ok(!globToRegExp("/var/cache/debconf/*-old").test("/var/cache/debconf/sub/x-old"));
  assert.ok(globToRegExp("/tmp/**").test("/tmp/a/b/c"));
  assert.ok(!globToRegExp("/tmp/**").test("/tmp"));
  assert.ok(!globToRegExp("/tmp/**").test("/tmpfoo"));
  assert.ok(globToRegExp("/a?c").test("/abc"));
  assert.ok(!globToRegExp("/a.c").test("/abc"), "regex metacharacters are literal");
});

test("default excludes leave out apt/dpkg/apk caches, logs, scratch space and runtime artefacts", () => {
  for (const path of [
    "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
    "/var/lib/apt/lists/partial",
    "/var/cache/apt/archives/libssl3_3.0.22-1~deb12u1_amd64.deb",
    "/var/cache/apt/pkgcache.bin",
    "/var/cache/debconf/templates.dat-old",
    "/var/cache/apk/APKINDEX.6d2de107.tar.gz",
    "/etc/apk/cache/busybox-1.36.1-r32.1a2b3c4d.apk",
    "/var/lib/dpkg/status-old",
    "/var/log/apt/history.log",
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/tmp/apt-key-gpghome.x",
    "/var/tmp/x",
    "/dev/null",
    "/proc",
    "/sys/fs",
    "/run/lock/x",
  ]) {
    assert.ok(defaultExclude(path, file()), path);
  }
  for (const path of [
    "/var/lib/dpkg/status",
    "/var/lib/dpkg/info/libssl3:amd64.list",
    "/var/cache/debconf/templates.dat",
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/etc/ld.so.cache",
    "/var/log/other.log",
    "/var/lib/apt/lists",
    "/tmp",
    "/run",
    "/var/lib/apt/extended_states",
    "/lib/apk/db/installed",
    "/etc/apk/world",
  ]) {
    assert.ok(!defaultExclude(path, path === "/tmp" || path === "/run" ? dir : file()), path);
  }
});

test("runtime mount points are excluded only as empty files", () => {
  assert.ok(defaultExclude("/etc/resolv.conf", file(0)));
  assert.ok(!defaultExclude("/etc/resolv.conf", file(40)), "a real resolv.conf a package wrote is kept");
  assert.ok(!defaultExclude("/etc/hosts", { type: "symlink", size: 0 }));
  assert.ok(defaultExclude("/etc/hostname", file(0)));
});

test("every default rule says why", () => {
  for (const rule of DEFAULT_EXCLUDES) {
    assert.ok(rule.pattern.startsWith("/"), rule.pattern);
    assert.ok(rule.why.length > 10, rule.pattern);
  }
  assert.ok(!excludeMatcher([])("/anything", file()));
});
