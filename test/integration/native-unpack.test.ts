/**
 * The native deb unpack against real things: the lab's bookwormNginx image over overlayfs, the real
 * newer libssl3/openssl/libexpat1/tzdata from bookworm-security (verified download), and the
 * image's own dpkg run by runc as the judge. The same debs are also unpacked by `dpkg --unpack` in
 * a second sandbox: after `dpkg --configure --pending` both trees and databases must agree.
 * Also: a hostile image whose symlinks point out of the root cannot make the unpack write outside it.
 * Needs root, runc and the Debian archive. About 1-2 minutes (two sandboxes, tzdata's postinst twice).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { copyFile, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { readDpkgDatabase } from "../../src/distro/dpkg/database.ts";
import { parseDpkgConfig, readDpkgConfig } from "../../src/distro/dpkg/dpkg-config.ts";
import { type Image, openImage } from "../../src/image/image.ts";
import type { ImageSource } from "../../src/image/source.ts";
import { type UnpackSummary, unpackDeb } from "../../src/patch/engines/dpkg/native/unpack.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { openLayoutSource } from "../../src/transports/layout/layout.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { labImage } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";
import { newerSecurityDebs } from "../lab/security-debs.ts";

const { after, before, test } = await requiring("root", "runc", "tool:dpkg-deb", "tool:mmdebstrap");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const PACKAGES = ["libssl3", "libexpat1", "openssl", "tzdata"];
const OLD_OPENSSL_CNF_HASH = "fe1993ec22f6b8a46cb9706acd8fc68f";

let work: string;
let source: ImageSource;
let image: Image;
let debs: { name: string; version: string; path: string }[];

before(async () => {
  work = mkdtempSync("/var/tmp/suture-native-unpack-");
  const lab = await labImage("bookwormNginx");
  source = await openLayoutSource(lab.layoutDir, lab.tag, {});
  image = await openImage(source, { os: "linux", architecture: "amd64" });
  debs = await newerSecurityDebs(PACKAGES, lab, join(work, "apt"));
});
after(async () => {
  await source?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function sandboxOptions() {
  return { cacheDir: join(work, "layers"), workRoot: join(work, "sandboxes") };
}

async function run(sb: Sandbox, args: string[]): Promise<string> {
  const r = await sb.run(args, { timeoutMs: 300_000 });
  assert.equal(r.exitCode, 0, `${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** What a user would compare between two installs: the db stanzas, info files and the packages' files. */
interface InstallSnapshot {
  stanzas: Map<string, string>;
  infoFiles: Map<string, string>;
  files: Map<string, string>;
}

function snapshotInstall(root: string, packages: readonly string[] = PACKAGES): InstallSnapshot {
  const status = readFileSync(join(root, "var/lib/dpkg/status"), "utf8");
  const stanzas = new Map<string, string>();
  for (const stanza of status.split("\n\n")) {
    const name = /^Package: (.+)$/m.exec(stanza)?.[1];
    if (name && [...packages, "libc-bin"].includes(name)) stanzas.set(name, stanza.trim());
  }
  const infoFiles = new Map<string, string>();
  for (const f of readdirSync(join(root, "var/lib/dpkg/info"))) {
    if (packages.some((p) => f.startsWith(`${p}.`) || f.startsWith(`${p}:`)))
      infoFiles.set(f, sha(readFileSync(join(root, "var/lib/dpkg/info", f))));
  }
  const files = new Map<string, string>();
  for (const name of infoFiles.keys()) {
    if (!name.endsWith(".list")) continue;
    for (const p of readFileSync(join(root, "var/lib/dpkg/info", name), "utf8").split("\n")) {
      if (!p || p === "/.") continue;
      files.set(p, describe(join(root, p)));
    }
  }
  for (const extra of ["/etc/ssl/openssl.cnf.dpkg-dist", "/etc/ssl/openssl.cnf.dpkg-new"])
    files.set(extra, describe(join(root, extra)));
  return { stanzas, infoFiles, files };
}

function describe(host: string): string {
  if (!existsSync(host) && !lstatIs(host)) return "absent";
  const st = lstatSync(host);
  const meta = `${(st.mode & 0o177777).toString(8)} ${st.uid}:${st.gid}`;
  if (st.isSymbolicLink()) return `${meta} -> ${readlinkSync(host)}`;
  if (st.isDirectory()) return `${meta} dir`;
  // No mtime: files the upgrade did not change are left untouched by the native engine (dpkg gives
  // them the new package's mtime); the patch layer drops such files either way.
  return `${meta} ${sha(readFileSync(host))}`;
}

function lstatIs(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

let native: InstallSnapshot | undefined;
let nativeMs = 0;

test("native unpack of the bookworm-security fixes: dpkg in the image agrees, the local conffile edit survives", async () => {
  native = await withSandbox(image, sandboxOptions(), async (sb) => {
    const started = performance.now();
    const db = await readDpkgDatabase(sb.mergedDir);
    assert.equal(db.layout, "classic");
    const summaries: UnpackSummary[] = [];
    for (const deb of debs) summaries.push(await unpackDeb(sb.mergedDir, deb.path, db));
    nativeMs = performance.now() - started;

    const openssl = summaries.find((s) => s.package === "openssl")!;
    const newCnf = join(sb.mergedDir, "etc/ssl/openssl.cnf.dpkg-dist");
    const cnf = readFileSync(join(sb.mergedDir, "etc/ssl/openssl.cnf"), "utf8");
    assert.match(cnf, /# suture-lab: local edit/, "the image's edited openssl.cnf is kept");
    const distShipped = existsSync(newCnf);
    if (distShipped) {
      assert.notEqual(createHash("md5").update(readFileSync(newCnf)).digest("hex"), OLD_OPENSSL_CNF_HASH);
      assert.deepEqual(openssl.conffilesKept, [
        { path: "/etc/ssl/openssl.cnf", newVersionAt: "/etc/ssl/openssl.cnf.dpkg-dist" },
      ]);
    } else {
      assert.deepEqual(openssl.conffilesKept, [{ path: "/etc/ssl/openssl.cnf", newVersionAt: undefined }]);
    }
    assert.ok(summaries.find((s) => s.package === "libssl3")!.triggers.includes("ldconfig"));
    assert.ok(
      summaries
        .find((s) => s.package === "tzdata")!
        .scripts.includes(
          `tzdata postinst configure ${summaries.find((s) => s.package === "tzdata")!.fromVersion}`,
        ),
    );

    const query = await run(sb, ["dpkg-query", "-W", "-f=${Package} ${Version} ${Status}\\n", ...PACKAGES]);
    for (const deb of debs)
      assert.match(query, new RegExp(`^${deb.name} ${escapeRegExp(deb.version)} install ok unpacked$`, "m"));

    const configure = performance.now();
    await run(sb, ["dpkg", "--configure", "--pending", "--force-confold", "--force-confdef"]);
    console.log(
      `native: unpack ${Math.round(nativeMs)} ms, dpkg --configure --pending ${Math.round(performance.now() - configure)} ms`,
    );
    assert.equal(await run(sb, ["dpkg", "--audit"]), "", "dpkg --audit finds nothing wrong");
    const verify = (await sb.run(["dpkg", "--verify", ...PACKAGES])).stdout;
    // The lab's own edit of openssl.cnf is the only difference dpkg may see.
    assert.deepEqual(
      verify.split("\n").filter((l) => l && !/ c \/etc\/ssl\/openssl\.cnf$/.test(l)),
      [],
      `dpkg --verify: ${verify}`,
    );
    const after = await run(sb, [
      "dpkg-query",
      "-W",
      "-f=${Package} ${Version} ${Status}\\n",
      ...PACKAGES,
      "libc-bin",
    ]);
    for (const deb of debs)
      assert.match(after, new RegExp(`^${deb.name} ${escapeRegExp(deb.version)} install ok installed$`, "m"));
    assert.match(after, /^libc-bin \S+ install ok installed$/m);
    const version = await run(sb, ["openssl", "version"]);
    const upstream = debs.find((d) => d.name === "openssl")!.version.replace(/-[^-]+$/, "");
    assert.match(version, new RegExp(`^OpenSSL ${escapeRegExp(upstream)} `), version);
    return snapshotInstall(sb.mergedDir);
  });
});

test("dpkg --unpack of the same debs in the image gives the same files and database", async () => {
  assert.ok(native, "the native install ran");
  const viaDpkg = await withSandbox(image, sandboxOptions(), async (sb) => {
    await mkdir(join(sb.mergedDir, "srv/suture-debs"), { recursive: true });
    const inImage: string[] = [];
    for (const deb of debs) {
      const p = `/srv/suture-debs/${deb.name}.deb`;
      await copyFile(deb.path, join(sb.mergedDir, p));
      inImage.push(p);
    }
    const started = performance.now();
    await run(sb, ["dpkg", "--unpack", "--force-confold", "--force-confdef", ...inImage]);
    const unpackMs = performance.now() - started;
    await run(sb, ["dpkg", "--configure", "--pending", "--force-confold", "--force-confdef"]);
    console.log(
      `dpkg --unpack in runc: ${Math.round(unpackMs)} ms; native unpack: ${Math.round(nativeMs)} ms`,
    );
    return snapshotInstall(sb.mergedDir);
  });
  assert.deepEqual(native.stanzas, viaDpkg.stanzas);
  assert.deepEqual(native.infoFiles, viaDpkg.infoFiles);
  assert.deepEqual(native.files, viaDpkg.files);
});

/** The rules of Docker's debian:*-slim /etc/dpkg/dpkg.cfg.d/docker (debuerreotype writes the includes last). */
const SLIM_DPKG_CFG = `# This is the "slim" variant of the Debian base image.
path-exclude /usr/share/doc/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*

path-include /usr/share/doc/*/copyright
path-include /usr/share/locale/locale.alias
`;

/** A package with files on both sides of the slim rules and no md5sums (dpkg generates them). */
function buildDocsDemo(): string {
  const tree = join(work, "docs-demo");
  const files: Record<string, string> = {
    "usr/bin/docs-demo": "binary\n",
    "usr/share/doc/docs-demo/README": "readme\n",
    "usr/share/doc/docs-demo/copyright": "copyright\n",
    "usr/share/doc/docs-demo/examples/sample.conf": "sample\n",
    "usr/share/man/man1/docs-demo.1": ".TH docs-demo\n",
    "usr/share/locale/de/LC_MESSAGES/docs-demo.mo": "mo\n",
    "usr/share/lintian/overrides/docs-demo": "docs-demo: some-tag\n",
    "usr/share/info/docs-demo.info": "info\n",
  };
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(tree, path, ".."), { recursive: true });
    writeFileSync(join(tree, path), content);
  }
  // Symlinks below an excluded tree: dpkg keeps every symlink there that an include's prefix covers.
  symlinkSync("README", join(tree, "usr/share/doc/docs-demo/README.link"));
  symlinkSync("docs-demo.1", join(tree, "usr/share/man/man1/docs-demo-alias.1"));
  mkdirSync(join(tree, "DEBIAN"), { recursive: true });
  writeFileSync(
    join(tree, "DEBIAN/control"),
    "Package: docs-demo\nVersion: 1\nArchitecture: all\nMaintainer: T <t@example.org>\nDescription: docs demo\n",
  );
  const out = join(work, "docs-demo_1.deb");
  execFileSync("dpkg-deb", ["--root-owner-group", "-b", tree, out], { stdio: "pipe" });
  return out;
}

/** Every entry below the trees the slim rules exclude, described as `describe` does. */
function slimTrees(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    const host = join(root, rel);
    out.set(rel, describe(host));
    if (lstatSync(host).isDirectory()) for (const name of readdirSync(host).sort()) walk(`${rel}/${name}`);
  };
  for (const top of [
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/info",
  ])
    if (lstatIs(join(root, top))) walk(top);
  return out;
}

test("path-exclude/path-include in dpkg.cfg.d: the native unpack leaves the files and database dpkg leaves", async () => {
  const docsDeb = buildDocsDemo();
  const packages = [...PACKAGES, "docs-demo"];
  const install = (how: "native" | "dpkg") =>
    withSandbox(image, sandboxOptions(), async (sb) => {
      assert.ok(
        existsSync(join(sb.mergedDir, "usr/share/doc/libssl3/changelog.Debian.gz")),
        "the lab image has the old version's docs",
      );
      await mkdir(join(sb.mergedDir, "etc/dpkg/dpkg.cfg.d"), { recursive: true });
      await writeFile(join(sb.mergedDir, "etc/dpkg/dpkg.cfg.d/docker"), SLIM_DPKG_CFG);
      const all = [...debs.map((d) => d.path), docsDeb];
      if (how === "native") {
        const db = await readDpkgDatabase(sb.mergedDir);
        const { pathFilter } = await readDpkgConfig(sb.mergedDir);
        for (const deb of all) await unpackDeb(sb.mergedDir, deb, db, { pathFilter });
      } else {
        await mkdir(join(sb.mergedDir, "srv/suture-debs"), { recursive: true });
        const inImage: string[] = [];
        for (const [i, deb] of all.entries()) {
          inImage.push(`/srv/suture-debs/${i}.deb`);
          await copyFile(deb, join(sb.mergedDir, inImage.at(-1)!));
        }
        await run(sb, ["dpkg", "--unpack", "--force-confold", "--force-confdef", ...inImage]);
      }
      await run(sb, ["dpkg", "--configure", "--pending", "--force-confold", "--force-confdef"]);
      const infoText = (name: string) => readFileSync(join(sb.mergedDir, "var/lib/dpkg/info", name), "utf8");
      return {
        snapshot: snapshotInstall(sb.mergedDir, packages),
        trees: slimTrees(sb.mergedDir),
        list: infoText("docs-demo.list"),
        md5sums: infoText("docs-demo.md5sums"),
      };
    });
  const native = await install("native");
  const viaDpkg = await install("dpkg");

  // What a user of a slim image sees: no docs, man pages or translations came back; copyrights did.
  const { files } = native.snapshot;
  assert.equal(files.get("/usr/share/doc/docs-demo/README"), "absent");
  assert.equal(files.get("/usr/share/doc/docs-demo/examples/sample.conf"), "absent");
  assert.notEqual(files.get("/usr/share/doc/docs-demo/copyright"), "absent");
  assert.match(files.get("/usr/share/doc/docs-demo/README.link")!, / -> README$/);
  assert.equal(files.get("/usr/share/man/man1/docs-demo.1"), "absent");
  assert.equal(files.get("/usr/share/locale/de/LC_MESSAGES/docs-demo.mo"), "absent");
  assert.equal(files.get("/usr/share/lintian/overrides/docs-demo"), "absent");
  assert.equal(files.get("/usr/share/info/docs-demo.info"), "absent");
  // The upgraded packages' old docs and man pages are gone, their copyright stays.
  assert.equal(files.get("/usr/share/doc/libssl3/changelog.Debian.gz"), "absent");
  assert.equal(files.get("/usr/share/man/man1/openssl.1ssl.gz"), "absent");
  assert.notEqual(files.get("/usr/share/doc/libssl3/copyright"), "absent");

  // dpkg still lists excluded paths, and generates md5sums only for what it extracted.
  assert.match(native.list, /^\/usr\/share\/doc\/docs-demo\/README$/m);
  assert.match(native.list, /^\/usr\/share\/man\/man1\/docs-demo\.1$/m);
  assert.deepEqual(
    native.md5sums
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split("  ")[1])
      .sort(),
    ["usr/bin/docs-demo", "usr/share/doc/docs-demo/copyright"],
  );
  assert.equal(native.list, viaDpkg.list);
  assert.equal(native.md5sums, viaDpkg.md5sums);
  assert.deepEqual(native.snapshot.stanzas, viaDpkg.snapshot.stanzas);
  assert.deepEqual(native.snapshot.infoFiles, viaDpkg.snapshot.infoFiles);
  assert.deepEqual(native.snapshot.files, viaDpkg.snapshot.files);
  assert.deepEqual(native.trees, viaDpkg.trees);
});

test("symlinks in a hostile image cannot make the unpack write outside the root", async () => {
  const root = join(work, "hostile");
  const tag = `suture-escape-${process.pid}-${Date.now()}`;
  const outside = mkdtempSync("/tmp/suture-outside-");
  await mkdir(join(root, "var/lib/dpkg/info"), { recursive: true });
  await mkdir(join(root, "usr/share"), { recursive: true });
  await mkdir(join(root, "etc/ssl"), { recursive: true });
  await writeFile(
    join(root, "var/lib/dpkg/status"),
    "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n\n",
  );
  // Relative climbing, absolute, and a conffile that is a symlink to an absolute host path.
  await symlink(`/../../../../tmp/${tag}`, join(root, "usr/lib"));
  await symlink(outside, join(root, "usr/share/doc"));
  await symlink(join(outside, "openssl.cnf"), join(root, "etc/ssl/openssl.cnf"));
  const db = await readDpkgDatabase(root);
  for (const name of ["libexpat1", "openssl"])
    await unpackDeb(root, debs.find((d) => d.name === name)!.path, db);

  assert.equal(existsSync(`/tmp/${tag}`), false, "nothing was created in the host's /tmp");
  assert.deepEqual(readdirSync(outside), [], "nothing was written through the absolute symlinks");
  assert.ok(
    existsSync(join(root, "tmp", tag, "x86_64-linux-gnu/libexpatw.so.1.8.10")),
    "the library landed inside the root",
  );
  assert.ok(existsSync(join(root, outside, "openssl.cnf")), "the conffile was followed inside the root");
  const status = readFileSync(join(root, "var/lib/dpkg/status"), "utf8");
  assert.match(
    status,
    /^Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n\nPackage: libexpat1\n/,
  );
  rmSync(outside, { recursive: true, force: true });
});

/** A fixture package built by dpkg-deb: version 1 and 2 differ in every way an upgrade has to handle. */
function buildDemo(version: 1 | 2): string {
  const tree = join(work, `demo-${version}`);
  const files: Record<string, string> =
    version === 1
      ? {
          "etc/demo.conf": "a=1\n",
          "etc/keep.conf": "k=1\n",
          "usr/bin/demo": "v1\n",
          "usr/bin/diverted": "v1\n",
          "usr/share/demo/old.txt": "old\n",
        }
      : {
          "etc/demo.conf": "a=2\n",
          "etc/keep.conf": "k=1\n",
          "usr/bin/demo": "v2\n",
          "usr/bin/diverted": "v2\n",
          "usr/share/demo/new.txt": "new\n",
        };
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(tree, path, ".."), { recursive: true });
    writeFileSync(join(tree, path), content);
  }
  if (version === 1) mkdirSync(join(tree, "usr/share/demo/dir-only"), { recursive: true });
  else linkSync(join(tree, "usr/bin/demo"), join(tree, "usr/bin/demo-link"));
  mkdirSync(join(tree, "DEBIAN"), { recursive: true });
  writeFileSync(
    join(tree, "DEBIAN/control"),
    `Package: demo\nVersion: ${version}\nArchitecture: all\nMaintainer: T <t@example.org>\nDescription: demo\n`,
  );
  writeFileSync(join(tree, "DEBIAN/conffiles"), "/etc/demo.conf\n/etc/keep.conf\n");
  const out = join(work, `demo_${version}.deb`);
  execFileSync("dpkg-deb", ["--root-owner-group", "-b", tree, out], { stdio: "pipe" });
  return out;
}

test("upgrading a fixture package: edited conffiles, dropped files, hardlinks, diversions, both db layouts", async () => {
  const v1 = buildDemo(1);
  const v2 = buildDemo(2);
  const md5 = (s: string) => createHash("md5").update(s).digest("hex");
  for (const layout of ["classic", "status.d"] as const) {
    const root = join(work, `demo-root-${layout}`);
    const dpkg = join(root, "var/lib/dpkg");
    if (layout === "classic") {
      await mkdir(join(dpkg, "info"), { recursive: true });
      await writeFile(join(dpkg, "status"), "");
      await writeFile(
        join(dpkg, "status"),
        "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n",
      );
    } else {
      await mkdir(join(dpkg, "status.d"), { recursive: true });
      await writeFile(
        join(dpkg, "status.d/base-files"),
        "Package: base-files\nArchitecture: amd64\nVersion: 1\n",
      );
    }
    await unpackDeb(root, v1, await readDpkgDatabase(root), { state: "installed" });
    // The image's author edits one conffile the package changes and one it does not; another
    // package diverts a binary.
    await writeFile(join(root, "etc/demo.conf"), "a=local\n");
    await writeFile(join(root, "etc/keep.conf"), "k=local\n");
    await writeFile(join(dpkg, "diversions"), "/usr/bin/diverted\n/usr/bin/diverted.distrib\nother\n");
    const summary = await unpackDeb(root, v2, await readDpkgDatabase(root));

    assert.equal(readFileSync(join(root, "etc/demo.conf"), "utf8"), "a=local\n");
    assert.equal(readFileSync(join(root, "etc/demo.conf.dpkg-dist"), "utf8"), "a=2\n");
    assert.equal(readFileSync(join(root, "etc/keep.conf"), "utf8"), "k=local\n");
    // status.d records no conffile hashes: an edited conffile always gets the new version beside it.
    const keepDist = layout === "classic" ? undefined : "/etc/keep.conf.dpkg-dist";
    assert.equal(existsSync(join(root, "etc/keep.conf.dpkg-dist")), keepDist !== undefined);
    assert.deepEqual(summary.conffilesKept, [
      { path: "/etc/demo.conf", newVersionAt: "/etc/demo.conf.dpkg-dist" },
      { path: "/etc/keep.conf", newVersionAt: keepDist },
    ]);
    assert.equal(readFileSync(join(root, "usr/bin/diverted.distrib"), "utf8"), "v2\n");
    assert.equal(
      readFileSync(join(root, "usr/bin/diverted"), "utf8"),
      "v1\n",
      "the diverted path is not written",
    );
    assert.equal(lstatSync(join(root, "usr/bin/demo-link")).ino, lstatSync(join(root, "usr/bin/demo")).ino);
    assert.equal(readFileSync(join(root, "usr/bin/demo"), "utf8"), "v2\n");
    assert.equal(existsSync(join(root, "usr/share/demo/new.txt")), true);
    if (layout === "classic") {
      assert.equal(existsSync(join(root, "usr/share/demo/old.txt")), false);
      assert.equal(existsSync(join(root, "usr/share/demo/dir-only")), false);
      assert.deepEqual(summary.removed.sort(), ["/usr/share/demo/dir-only", "/usr/share/demo/old.txt"]);
      const status = readFileSync(join(dpkg, "status"), "utf8");
      assert.match(status, /^Package: demo\nStatus: install ok unpacked\n/m);
      assert.match(status, /^Version: 2\nConfig-Version: 1\n/m);
      assert.ok(
        status.includes(`Conffiles:\n /etc/demo.conf ${md5("a=2\n")}\n /etc/keep.conf ${md5("k=1\n")}\n`),
        status,
      );
      // dpkg-deb adds no md5sums; the database gets them as dpkg generates them (conffiles excluded).
      const sums = readFileSync(join(dpkg, "info/demo.md5sums"), "utf8");
      assert.ok(sums.includes(`${md5("v2\n")}  usr/bin/demo\n`), sums);
      assert.ok(!sums.includes("etc/demo.conf"), sums);
      assert.ok(readFileSync(join(dpkg, "info/demo.list"), "utf8").startsWith("/.\n/etc\n"));
    } else {
      // status.d records only files: the dropped file goes, an unrecorded directory stays.
      assert.equal(existsSync(join(root, "usr/share/demo/old.txt")), false);
      assert.equal(existsSync(join(dpkg, "info")), false, "no info directory appears in a distroless image");
      assert.equal(
        readFileSync(join(dpkg, "status.d/demo"), "utf8"),
        "Package: demo\nVersion: 2\nArchitecture: all\nMaintainer: T <t@example.org>\nDescription: demo\n",
      );
      assert.ok(readFileSync(join(dpkg, "status.d/demo.md5sums"), "utf8").includes("  usr/bin/demo-link\n"));
    }
  }
});

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Version 1 or 2 of a package with two conffiles and a doc, for upgrades under path-exclude. */
function buildConfDemo(version: 1 | 2): string {
  const tree = join(work, `conf-demo-${version}`);
  const files: Record<string, string> = {
    "etc/excluded.conf": `e=${version}\n`,
    "etc/kept.conf": `k=${version}\n`,
    "usr/share/doc/conf-demo/README": `readme ${version}\n`,
    "usr/bin/conf-demo": `v${version}\n`,
  };
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(tree, path, ".."), { recursive: true });
    writeFileSync(join(tree, path), content);
  }
  mkdirSync(join(tree, "DEBIAN"), { recursive: true });
  writeFileSync(
    join(tree, "DEBIAN/control"),
    `Package: conf-demo\nVersion: ${version}\nArchitecture: all\nMaintainer: T <t@example.org>\nDescription: demo\n`,
  );
  writeFileSync(join(tree, "DEBIAN/conffiles"), "/etc/excluded.conf\n/etc/kept.conf\n");
  const out = join(work, `conf-demo_${version}.deb`);
  execFileSync("dpkg-deb", ["--root-owner-group", "-b", tree, out], { stdio: "pipe" });
  return out;
}

test("an upgrade under path-exclude: old copies of excluded files go, an excluded conffile keeps its old hash, as with dpkg", async () => {
  const v1 = buildConfDemo(1);
  const v2 = buildConfDemo(2);
  const rules = ["/etc/excluded.conf", "/usr/share/doc/*"];
  const fresh = (name: string) => {
    const root = join(work, name);
    mkdirSync(join(root, "var/lib/dpkg/info"), { recursive: true });
    mkdirSync(join(root, "var/lib/dpkg/updates"), { recursive: true });
    writeFileSync(
      join(root, "var/lib/dpkg/status"),
      "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n",
    );
    return root;
  };
  // Version 1 installed without exclusions (its docs on disk), version 2 with them: real dpkg on
  // the host against a scratch root, and the native unpack with the same rules from a dpkg.cfg.d file.
  const viaDpkg = fresh("conf-demo-dpkg");
  const dpkg = (...args: string[]) =>
    execFileSync("dpkg", [`--root=${viaDpkg}`, "--force-script-chrootless", "--force-not-root", ...args], {
      stdio: "pipe",
    });
  dpkg("-i", v1);
  dpkg(...rules.map((r) => `--path-exclude=${r}`), "-i", v2);

  const native = fresh("conf-demo-native");
  await unpackDeb(native, v1, await readDpkgDatabase(native), { state: "installed" });
  const { pathFilter } = parseDpkgConfig([
    { name: "/etc/dpkg/dpkg.cfg.d/nodoc", text: rules.map((r) => `path-exclude=${r}\n`).join("") },
  ]);
  const summary = await unpackDeb(native, v2, await readDpkgDatabase(native), {
    state: "installed",
    pathFilter,
  });

  const view = (root: string) => ({
    conffiles: /^Conffiles:\n((?: .*\n)+)/m.exec(
      readFileSync(join(root, "var/lib/dpkg/status"), "utf8"),
    )?.[1],
    list: readFileSync(join(root, "var/lib/dpkg/info/conf-demo.list"), "utf8"),
    files: [
      "etc/excluded.conf",
      "etc/kept.conf",
      "usr/bin/conf-demo",
      "usr/share/doc/conf-demo/README",
      "usr/share/doc/conf-demo",
    ].map((p) => `${p}: ${existsSync(join(root, p)) ? describe(join(root, p)) : "absent"}`),
  });
  assert.equal(
    readFileSync(join(native, "etc/excluded.conf"), "utf8"),
    "e=1\n",
    "the excluded conffile is not replaced",
  );
  assert.equal(readFileSync(join(native, "etc/kept.conf"), "utf8"), "k=2\n");
  assert.equal(
    existsSync(join(native, "usr/share/doc/conf-demo")),
    false,
    "the old docs and their directory went",
  );
  assert.ok(summary.removed.includes("/usr/share/doc/conf-demo/README"));
  assert.deepEqual(view(native), view(viaDpkg));
});
