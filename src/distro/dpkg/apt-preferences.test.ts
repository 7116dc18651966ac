import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import {
  aptExpressionMatches,
  NEVER_PIN,
  PinMatcher,
  parseAptPreferences,
  pinNamesPackage,
  readAptPreferences,
} from "./apt-preferences.ts";
import { fileAccessFromMap } from "./sources.ts";

test("preferences: records as apt_preferences(5) writes them, comments and Explanation lines included", () => {
  const warnings: string[] = [];
  const pins = parseAptPreferences(
    `# keep backports opt-in
Explanation: only what we ask for
Package: *
Pin: release a=bookworm-backports
Pin-Priority: 100

Package: tzdata libc6:amd64
Pin: version 2026b*
Pin-Priority: 1001

Package: *
Pin: origin "deb.example.org"
Pin-Priority: never

Package: curl
Pin: flavour chocolate
Pin-Priority: 10

Package: nothing-pinned
`,
    "/etc/apt/preferences",
    (m) => warnings.push(m),
  );
  assert.deepEqual(
    pins.map((p) => [p.packages, p.type, p.data, p.priority]),
    [
      [undefined, "release", "a=bookworm-backports", 100],
      [["tzdata", "libc6:amd64"], "version", "2026b*", 1001],
      [undefined, "origin", '"deb.example.org"', NEVER_PIN],
    ],
  );
  assert.match(warnings.join(), /does not understand pin type "flavour"/);
});

test("preferences apt refuses fail with one INVALID_MANIFEST line naming the file", () => {
  for (const bad of [
    "Pin: release a=x\nPin-Priority: 1\n",
    "Package: curl\nPin: release a=x\n",
    "Package: curl\nPin: release a=x\nPin-Priority: 0\n",
    "Package: curl\nPin: release a=x\nPin-Priority: 40000\n",
    "Package: curl\nPin: release a=x\nPin-Priority: never\n",
    "Package: curl\nPin: release a=x\nPin-Priority: high\n",
  ]) {
    assert.throws(
      () => parseAptPreferences(bad, "/etc/apt/preferences.d/bad"),
      (e: unknown) =>
        isSutureError(e, "INVALID_MANIFEST") &&
        e.message.startsWith("/etc/apt/preferences.d/bad: ") &&
        !e.message.includes("\n"),
      bad,
    );
  }
});

test("pin matching: globs and /regex/ ignore case; release fields; the status file is only `now`", () => {
  assert.equal(aptExpressionMatches("bookworm-*", "Bookworm-Backports"), true);
  assert.equal(aptExpressionMatches("/^book.*ports$/", "bookworm-backports"), true);
  assert.equal(aptExpressionMatches("/^book$/", "bookworm"), false);
  assert.equal(aptExpressionMatches("[ab]ookworm", "bookworm"), true);
  const file = {
    archive: "stable-security",
    codename: "bookworm-security",
    origin: "Debian",
    label: "Debian-Security",
    version: "12",
    component: "main",
    architecture: "amd64",
    site: "security.debian.org",
  };
  assert.equal(new PinMatcher("release", "o=Debian,n=bookworm-security,c=main").fileMatches(file), true);
  assert.equal(new PinMatcher("release", "o=Debian,n=bookworm").fileMatches(file), false);
  assert.equal(new PinMatcher("release", "l=Debian-Security").fileMatches(file), true);
  assert.equal(new PinMatcher("release", "v=12*").fileMatches(file), true);
  assert.equal(new PinMatcher("release", "12").fileMatches(file), true);
  assert.equal(new PinMatcher("release", "bookworm-security").fileMatches(file), true);
  assert.equal(new PinMatcher("origin", "security.debian.org").fileMatches(file), true);
  assert.equal(new PinMatcher("origin", "deb.debian.org").fileMatches(file), false);
  assert.equal(new PinMatcher("release", "a=now").fileMatches({ status: true, archive: "now" }), true);
  assert.equal(new PinMatcher("release", "o=Debian").fileMatches({ status: true, archive: "now" }), false);
  assert.equal(new PinMatcher("version", "2.6*").versionMatches("2.6.1"), true);
  assert.equal(new PinMatcher("version", "2.6").versionMatches("2.6.1"), false);
  assert.equal(new PinMatcher("version", "/deb12u[0-9]+$/").versionMatches("1.0-1+deb12u3"), true);
  const ssl = { name: "libssl3", source: "openssl", arch: "amd64" };
  assert.equal(pinNamesPackage("src:openssl", ssl), true);
  assert.equal(pinNamesPackage("libssl*", ssl), true);
  assert.equal(pinNamesPackage("libssl3:i386", ssl), false);
  assert.equal(pinNamesPackage("libssl3:amd64", ssl), true);
  assert.equal(pinNamesPackage("/^LIBSSL[0-9]$/", ssl), true);
});

test("preferences are read from the file, then preferences.d in name order, skipping names apt skips", async () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const pin = (n: number) => enc(`Package: p${n}\nPin: version 1\nPin-Priority: ${n}\n`);
  const files = fileAccessFromMap(
    new Map([
      ["/etc/apt/preferences", pin(1)],
      ["/etc/apt/preferences.d/20-b.pref", pin(3)],
      ["/etc/apt/preferences.d/10-a", pin(2)],
      ["/etc/apt/preferences.d/30-c.pref.dpkg-old", pin(4)],
      ["/etc/apt/preferences.d/40-d.list", pin(5)],
    ]),
  );
  const pins = await readAptPreferences(files, {
    preferences: "/etc/apt/preferences",
    preferencesParts: "/etc/apt/preferences.d",
  });
  assert.deepEqual(
    pins.map((p) => p.priority),
    [1, 2, 3],
  );
});

test("a regex pin that could backtrack for hours is refused in one line, not evaluated", () => {
  for (const pattern of ["/(a+)+$/", "/^(.*a){2,}x/", "/(x)\\1/", `/${"a".repeat(300)}/`]) {
    assert.throws(
      () => aptExpressionMatches(pattern, `${"a".repeat(40)}!`),
      (e) =>
        isSutureError(e, "UNSUPPORTED_OS") && !e.message.includes("\n") && /--engine sandbox/.test(e.message),
      pattern,
    );
  }
  assert.equal(aptExpressionMatches("/^lib(ssl|crypto)[0-9]+$/", "libssl3"), true);
  assert.equal(aptExpressionMatches("/^python3\\.[0-9]+-.*/", "python3.11-minimal"), true);
});
