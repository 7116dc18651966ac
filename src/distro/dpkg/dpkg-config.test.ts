import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { fnmatchRegExp } from "../../fs/fnmatch.ts";
import { configFileOrder, PathFilter, parseDpkgConfig, readDpkgConfig } from "./dpkg-config.ts";

/**
 * The shape of /etc/dpkg/dpkg.cfg.d/docker in Docker's official debian:*-slim images (written by
 * debuerreotype): every exclude, each after a comment listing the packages that own such paths,
 * then every include. The includes come last, so they win over the excludes.
 */
const DOCKER_SLIM = `# This is the "slim" variant of the Debian base image.
# Many files which are normally unnecessary in containers are excluded,
# and this configuration file keeps them that way.

# dpkg -S '/usr/share/doc/*'
#  apt base-files bash coreutils dpkg tar
path-exclude /usr/share/doc/*

# dpkg -S '/usr/share/groff/*'
#  dpkg-query: no path found matching pattern /usr/share/groff/*
path-exclude /usr/share/groff/*

# dpkg -S '/usr/share/info/*'
#  gzip sed
path-exclude /usr/share/info/*

# dpkg -S '/usr/share/linda/*'
#  dpkg-query: no path found matching pattern /usr/share/linda/*
path-exclude /usr/share/linda/*

# dpkg -S '/usr/share/lintian/overrides/*'
#  bash libc6 login
path-exclude /usr/share/lintian/overrides/*

# dpkg -S '/usr/share/locale/*'
#  apt bash coreutils libc-bin tar
path-exclude /usr/share/locale/*

# dpkg -S '/usr/share/man/*'
#  apt bash coreutils dpkg tar
path-exclude /usr/share/man/*

path-include /usr/share/doc/*/copyright
path-include /usr/share/doc/kde/HTML/C/*
path-include /usr/share/gnome/help/*/C/*
path-include /usr/share/locale/all_languages
path-include /usr/share/locale/currency/*
path-include /usr/share/locale/l10n/*
path-include /usr/share/locale/languages
path-include /usr/share/locale/locale.alias
path-include /usr/share/omf/*/*-C.emf
`;

const slim = () => parseDpkgConfig([{ name: "/etc/dpkg/dpkg.cfg.d/docker", text: DOCKER_SLIM }]).pathFilter;

test("dpkg(1)'s example: docs excluded, copyright files kept, their directories created", () => {
  const filter = parseDpkgConfig([
    {
      name: "/etc/dpkg/dpkg.cfg.d/excludedocs",
      text: "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n",
    },
  ]).pathFilter;
  assert.equal(filter.skips("/usr/share/doc/libssl3/changelog.Debian.gz", "other"), true);
  assert.equal(filter.skips("/usr/share/doc/libssl3/copyright", "other"), false);
  assert.equal(filter.skips("/usr/share/doc/libssl3", "directory"), false, "leads to a copyright file");
  assert.equal(
    filter.skips("/usr/share/doc", "directory"),
    false,
    "the pattern does not match the dir itself",
  );
  assert.equal(filter.skips("/usr/bin/openssl", "other"), false);
  // dpkg keeps every excluded directory or symlink whose path starts with an include's literal part.
  assert.equal(filter.skips("/usr/share/doc/libssl3/examples", "directory"), false);
  assert.equal(filter.skips("/usr/share/doc/libssl3/NEWS.gz", "symlink"), false);
  assert.equal(filter.skips("/usr/share/doc/libssl3/NEWS.gz", "other"), true);
});

test("Docker's slim configuration: docs, man pages, locales, lintian overrides go; copyright and locale.alias stay", () => {
  const filter = slim();
  const skipped = (p: string) => filter.skips(p, "other");
  assert.equal(skipped("/usr/share/man/man1/openssl.1ssl.gz"), true);
  assert.equal(skipped("/usr/share/locale/de/LC_MESSAGES/tar.mo"), true);
  assert.equal(skipped("/usr/share/locale/locale.alias"), false);
  assert.equal(skipped("/usr/share/lintian/overrides/libssl3"), true);
  assert.equal(skipped("/usr/share/info/tar.info.gz"), true);
  assert.equal(skipped("/usr/share/doc/tar/copyright"), false);
  assert.equal(skipped("/usr/share/doc/tar/NEWS.gz"), true);
  // Directories below an excluded tree with no include under them are not created.
  assert.equal(filter.skips("/usr/share/man/man1", "directory"), true);
  assert.equal(filter.skips("/usr/share/man", "directory"), false);
  // An include without a wildcard reincludes only directories its whole path is a prefix of.
  assert.equal(filter.skips("/usr/share/locale/de/LC_MESSAGES", "directory"), true);
  assert.equal(filter.skips("/usr/share/locale/currency", "directory"), false);
  assert.equal(filter.skips("/.", "directory"), false);
});

test("the last matching rule wins, across files in dpkg's order", () => {
  const config = parseDpkgConfig([
    { name: "/etc/dpkg/dpkg.cfg.d/10-keep", text: "path-include /usr/share/doc/*\n" },
    { name: "/etc/dpkg/dpkg.cfg.d/20-drop", text: "path-exclude /usr/share/doc/*\n" },
  ]);
  assert.equal(config.pathFilter.skips("/usr/share/doc/a/README", "other"), true);
  const reversed = parseDpkgConfig([
    { name: "/etc/dpkg/dpkg.cfg.d/10-drop", text: "path-exclude /usr/share/doc/*\n" },
    { name: "/etc/dpkg/dpkg.cfg", text: "path-include /usr/share/doc/a/*\n" },
  ]);
  assert.equal(reversed.pathFilter.skips("/usr/share/doc/a/README", "other"), false);
  assert.equal(reversed.pathFilter.skips("/usr/share/doc/b/README", "other"), true);
  assert.equal(new PathFilter([]).active, false);
  assert.equal(config.pathFilter.active, true);
});

test("dpkg.cfg.d is read in bytewise order, names with other characters skipped, dpkg.cfg last", () => {
  assert.deepEqual(
    configFileOrder([
      "docker",
      "B-upper",
      "10_apt",
      "a.dpkg-dist",
      ".hidden",
      "x~",
      "docker-apt-speedup",
      "é",
    ]),
    [
      "/etc/dpkg/dpkg.cfg.d/10_apt",
      "/etc/dpkg/dpkg.cfg.d/B-upper",
      "/etc/dpkg/dpkg.cfg.d/docker",
      "/etc/dpkg/dpkg.cfg.d/docker-apt-speedup",
      "/etc/dpkg/dpkg.cfg",
    ],
  );
});

test("line syntax as dpkg's loader reads it: separators, quotes, comments, trailing blanks", () => {
  const config = parseDpkgConfig([
    {
      name: "/etc/dpkg/dpkg.cfg",
      text: [
        "# comment",
        "",
        "path-exclude=/a/*   ",
        "path-exclude = /b/*",
        "path-exclude\t/c/*",
        "path-exclude '/d d/*'",
        'path-exclude "/e/*"',
        "path-exclude /f/#not-a-comment",
        "force-unsafe-io",
        "force-confnew",
        "no-force-unsafe-io",
        "force confmiss,overwrite,confask",
        "refuse-confask",
        "no-debsig",
        "log /var/log/dpkg.log",
        "some-future-option",
        "admindir /srv/dpkg",
      ].join("\n"),
    },
  ]);
  assert.deepEqual(
    config.pathFilter.rules.map((r) => r.pattern),
    ["/a/*", "/b/*", "/c/*", "/d d/*", "/e/*", "/f/#not-a-comment"],
  );
  assert.deepEqual([...config.force].sort(), ["confmiss", "confnew", "overwrite"]);
  assert.deepEqual(config.unhonoured, [
    "/etc/dpkg/dpkg.cfg:17 admindir",
    "/etc/dpkg/dpkg.cfg:10 force-confnew",
    "/etc/dpkg/dpkg.cfg:12 force-confmiss",
  ]);
});

test("lines dpkg itself refuses are one clear error naming the file and line", () => {
  for (const text of ["path-exclude\n", "path-include '/usr/share/doc/*\n"]) {
    assert.throws(
      () => parseDpkgConfig([{ name: "/etc/dpkg/dpkg.cfg.d/broken", text: `# ok\n${text}` }]),
      (e: unknown) =>
        isSutureError(e, "PATCH_FAILED") &&
        e.message.includes("/etc/dpkg/dpkg.cfg.d/broken:2") &&
        !e.message.includes("\n"),
    );
  }
});

test("fnmatch without flags, as glibc answers it", () => {
  // Each expectation was checked against glibc's fnmatch(pattern, string, 0).
  const cases: [string, string, boolean][] = [
    ["/usr/share/doc/*", "/usr/share/doc/a/b/c", true],
    ["/usr/share/doc/*", "/usr/share/doc", false],
    ["/usr/share/doc/*", "/usr/share/doc/", true],
    ["/usr/share/doc/*/copyright", "/usr/share/doc/a/b/copyright", true],
    ["/usr/share/doc/*/copyright", "/usr/share/doc/a/copyright.gz", false],
    ["*.mo", "/usr/share/locale/de/LC_MESSAGES/x.mo", true],
    ["/x/?", "/x//", true],
    ["/x/*", "/x/.hidden", true],
    ["/l/[a-c]*", "/l/bz", true],
    ["/l/[!a-c]*", "/l/bz", false],
    ["/l/[^a-c]*", "/l/dz", true],
    ["/l/[]]", "/l/]", true],
    ["/l/[!]]", "/l/a", true],
    ["/l/[[:digit:]]", "/l/5", true],
    ["/l/[[:digit:]]", "/l/x", false],
    ["/l/[[:bogus:]]", "/l/x", false],
    ["/l/[a", "/l/[a", true],
    ["/l/\\*", "/l/*", true],
    ["/l/\\*", "/l/x", false],
    ["/l/x\\", "/l/x\\", false],
    ["/l/[a-]", "/l/-", true],
    ["/l/[z-a]", "/l/m", false],
    ["/l/[!z-a]", "/l/m", true],
    ["/l/[/]x", "/l//x", true],
    ["/l/[\\]]", "/l/]", true],
    ["/l/[[:alpha:]-z]", "/l/-", true],
    ["/l/a.b", "/l/aXb", false],
    ["/l/(x|y)+", "/l/(x|y)+", true],
    ["", "", true],
    ["*", "", true],
  ];
  for (const [pattern, path, expected] of cases)
    assert.equal(fnmatchRegExp(pattern).test(path), expected, `fnmatch(${pattern}, ${path})`);
});

test("the configuration is read from the image, symlinks resolved inside it", async () => {
  const root = mkdtempSync(join(tmpdir(), "suture-dpkg-config-"));
  try {
    mkdirSync(join(root, "etc/dpkg/dpkg.cfg.d"), { recursive: true });
    mkdirSync(join(root, "srv"), { recursive: true });
    writeFileSync(join(root, "srv/slim"), DOCKER_SLIM);
    // An absolute link is the image's path, not the host's.
    symlinkSync("/srv/slim", join(root, "etc/dpkg/dpkg.cfg.d/docker"));
    writeFileSync(join(root, "etc/dpkg/dpkg.cfg.d/docker.dpkg-old"), "path-include /usr/share/man/*\n");
    writeFileSync(join(root, "etc/dpkg/dpkg.cfg"), "path-include /usr/share/doc/tar/*\n");
    const config = await readDpkgConfig(root);
    assert.equal(config.pathFilter.skips("/usr/share/man/man1/tar.1.gz", "other"), true);
    assert.equal(config.pathFilter.skips("/usr/share/doc/tar/NEWS.gz", "other"), false);
    assert.equal(config.pathFilter.skips("/usr/share/doc/gzip/NEWS.gz", "other"), true);
    assert.equal((await readDpkgConfig(join(root, "srv"))).pathFilter.active, false, "no configuration");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
