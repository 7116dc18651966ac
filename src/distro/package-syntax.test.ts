import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import { isSutureError } from "../errors/errors.ts";
import { childPath } from "../fs/in-root.ts";
import {
  checkPackageFields,
  isValidPackageArchitecture,
  isValidPackageName,
  isValidPackageVersion,
  quoteUntrusted,
} from "./package-syntax.ts";

test("deb: names, versions and architectures of the real archive pass; path and line tricks do not", () => {
  for (const name of ["libssl3", "g++-12", "libstdc++6", "perl-modules-5.36", "0ad", "xz-utils"])
    assert.ok(isValidPackageName("deb", name), name);
  for (const name of [
    "",
    "a",
    "../x",
    "a/b",
    "Libssl",
    "-x",
    ".x",
    "a b",
    "a\nb",
    "a:amd64",
    "x".repeat(257),
  ])
    assert.ok(!isValidPackageName("deb", name), JSON.stringify(name));
  for (const v of ["1.0-1", "1:3.0.15-1~deb12u1", "2.36-9+deb12u9", "20230311+deb12u1", "1.2.3"])
    assert.ok(isValidPackageVersion("deb", v), v);
  for (const v of ["", "1.0/../x", "1.0 x", "1.0\n", "a:1.0", "1.0_x", "1.0$(id)", "-1"])
    assert.ok(!isValidPackageVersion("deb", v), JSON.stringify(v));
  for (const a of ["amd64", "arm64", "all", "ppc64el", "linux-any", "i386"])
    assert.ok(isValidPackageArchitecture("deb", a), a);
  for (const a of [
    "",
    "amd64/../../../../tmp/x",
    "AMD64",
    "amd64\n",
    "../x",
    "amd64 ",
    "-any",
    "x".repeat(65),
  ])
    assert.ok(!isValidPackageArchitecture("deb", a), JSON.stringify(a));
});

test("apk and rpm: their own syntax, never a path separator", () => {
  assert.ok(isValidPackageName("apk", "py3-pip"));
  assert.ok(isValidPackageVersion("apk", "1.2.3-r0"));
  assert.ok(isValidPackageArchitecture("apk", "x86_64"));
  assert.ok(isValidPackageName("rpm", "openssl-libs"));
  assert.ok(isValidPackageVersion("rpm", "1:3.0.7-27.el9"));
  assert.ok(isValidPackageArchitecture("rpm", "x86_64"));
  for (const format of ["apk", "rpm"] as const) {
    assert.ok(!isValidPackageName(format, "../x"), format);
    assert.ok(!isValidPackageName(format, "a/b"), format);
    assert.ok(!isValidPackageVersion(format, "1/../2"), format);
    assert.ok(!isValidPackageArchitecture(format, "x86_64/.."), format);
  }
});

test("checkPackageFields throws the caller's code naming the field, the quoted value and the fix, on one line", () => {
  assert.doesNotThrow(() =>
    checkPackageFields("deb", { name: "libssl3", version: "3.0.15-1", architecture: "amd64" }, "x", "fix"),
  );
  const hostile = `amd64/${"../".repeat(80)}tmp/x\nerror: fake second line`;
  assert.throws(
    () =>
      checkPackageFields(
        "deb",
        { name: "libssl3", version: "1", architecture: hostile },
        'package "libssl3" (x.deb)',
        "remove it from the repository",
        "UNTRUSTED",
      ),
    (e: unknown) => {
      assert.ok(isSutureError(e, "UNTRUSTED"));
      assert.equal(e.message.includes("\n"), false, "one line");
      assert.match(
        e.message,
        /^package "libssl3" \(x\.deb\) has a package architecture "amd64\/\.\.\/.*…" that breaks Debian Policy §5\.6; remove it from the repository$/,
      );
      return true;
    },
  );
  assert.throws(
    () => checkPackageFields("deb", { name: "ok-name", version: "1 2" }, "where", "fix"),
    (e: unknown) => isSutureError(e, "INVALID_ARCHIVE") && /package version "1 2"/.test(e.message),
  );
  assert.equal(quoteUntrusted("a\nb"), '"a\\nb"');
  assert.equal(quoteUntrusted("y".repeat(300)), `"${"y".repeat(200)}…"`);
});

test("childPath keeps a name one entry of its directory and refuses everything else", () => {
  assert.equal(childPath("/db/info", "libssl3:amd64.list", "info file"), "/db/info/libssl3:amd64.list");
  assert.equal(childPath("/db/info", "...", "info file"), "/db/info/...");
  assert.equal(childPath("/db/info", ".hidden", "info file"), "/db/info/.hidden");
  for (const bad of ["", ".", "..", "a/b", "../x", "/etc/passwd", "x\0y", "x/"]) {
    assert.throws(
      () => childPath("/db/info", bad, "info file"),
      (e: unknown) =>
        isSutureError(e, "UNSAFE_LAYER") && /^info file ".*" is not a plain file name;/.test(e.message),
      JSON.stringify(bad),
    );
  }
});

test("property: any name and architecture that pass the deb syntax make an info file name inside info/", () => {
  const chars = fc.constantFrom(..."abz019+-.:/_ \n\0~A".split(""));
  const word = fc.string({ unit: chars, minLength: 0, maxLength: 12 });
  fc.assert(
    fc.property(word, word, word, (name, arch, kind) => {
      if (!isValidPackageName("deb", name) || !isValidPackageArchitecture("deb", arch)) return;
      const file = `${name}:${arch}.${kind}`;
      let path: string;
      try {
        path = childPath("/db/info", file, "info file");
      } catch (e) {
        // Only a kind can still break the name; the validated identity never does.
        assert.ok(isSutureError(e, "UNSAFE_LAYER") && /[/\0]/.test(kind), file);
        return;
      }
      assert.equal(dirname(path), "/db/info", file);
      assert.equal(path, join("/db/info", file));
    }),
    { numRuns: 3000 },
  );
});
