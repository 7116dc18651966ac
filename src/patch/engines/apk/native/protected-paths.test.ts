import assert from "node:assert/strict";
import { test } from "node:test";
import { matchesPathname, ProtectedPaths, parseProtectedPaths } from "./protected-paths.ts";

const BUILT_IN = "+etc\n@etc/init.d\n!etc/apk\n";

test("apk's built-in rules: etc protected, etc/init.d for symlinks, etc/apk entirely; the rest not", () => {
  const p = new ProtectedPaths(parseProtectedPaths(BUILT_IN));
  assert.equal(p.modeOf("etc"), "changed");
  assert.equal(p.modeOf("etc/ssl/certs"), "changed");
  assert.equal(p.modeOf("etc/init.d"), "symlinks");
  assert.equal(p.modeOf("etc/apk/keys"), "all");
  assert.equal(p.modeOf("usr/etc"), "none");
  assert.equal(p.modeOf(""), "none");
  assert.equal(p.protects("etc/apk/keys"), true);
  assert.equal(p.protects("usr/share"), false);
});

test("protected_paths.d rules: later rules win, '-' ignores, globs match one component", () => {
  const p = new ProtectedPaths(
    parseProtectedPaths(`${BUILT_IN}# comment\n-etc/ssl\n/usr/share/*-conf/\nopt/*/etc\n`),
  );
  assert.equal(p.modeOf("etc/ssl"), "ignore");
  assert.equal(p.protects("etc/ssl/certs"), false);
  assert.equal(p.modeOf("usr/share/app-conf"), "changed");
  assert.equal(p.modeOf("usr/share/app-conf/sub"), "changed");
  assert.equal(p.modeOf("usr/share/app"), "none");
  assert.equal(p.modeOf("opt/app/etc"), "changed");
  assert.equal(p.modeOf("opt/app/x/etc"), "none");
});

test("trigger globs match as fnmatch with FNM_PATHNAME", () => {
  assert.equal(matchesPathname("/lib/modules/*", "/lib/modules/6.6.1"), true);
  assert.equal(matchesPathname("/lib/modules/*", "/lib/modules/6.6.1/kernel"), false);
  assert.equal(matchesPathname("/usr/bin", "/usr/bin"), true);
  assert.equal(matchesPathname("/usr/bin", "/usr/sbin"), false);
  assert.equal(matchesPathname("/usr/*bin", "/usr/sbin"), true);
});
