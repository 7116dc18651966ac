import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import zlib from "node:zlib";
import { minirootfs } from "../../test/lab/alpine-rootfs.ts";
import { buildRandomImage, imageOfLayers, memorySource } from "../../test/lab/random-image.ts";
import { tarOf } from "../../test/lab/tar.ts";
import { renderInspect } from "../cli/commands/inspect.ts";
import { isSutureError } from "../errors/errors.ts";
import { sha256Digest } from "../image/digest.ts";
import { inspectSource } from "./inspect.ts";

test("inspect shows the config's Env, WorkingDir and ExposedPorts", async () => {
  const base = await buildRandomImage({ layers: 1 });
  // The same image with a config that sets what a user checks before running it.
  const config = JSON.parse(base.config.toString("utf8"));
  config.config = {
    ...config.config,
    Env: ["PATH=/usr/bin:/bin", "APP_MODE=production"],
    WorkingDir: "/srv/app",
    ExposedPorts: { "8443/tcp": {}, "80/tcp": {} },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const manifest = JSON.parse(Buffer.from(base.manifest.bytes).toString("utf8"));
  manifest.config = { ...manifest.config, digest: sha256Digest(configBytes), size: configBytes.length };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const blobs = new Map(base.blobs);
  blobs.set(manifest.config.digest, configBytes);
  const source = memorySource(
    "oci:app:1",
    { bytes: manifestBytes, mediaType: base.manifest.mediaType, digest: sha256Digest(manifestBytes) },
    blobs,
  );
  const result = await inspectSource(source, { noLayers: true });
  assert.deepEqual(result.images[0]!.config.exposedPorts, ["80/tcp", "8443/tcp"]);
  const text = renderInspect(result);
  assert.match(text, /^ {2}WorkingDir: +\/srv\/app$/m);
  assert.match(text, /^ {2}ExposedPorts: +80\/tcp, 8443\/tcp$/m);
  assert.match(text, /^ {2}Env:\n {4}PATH=\/usr\/bin:\/bin\n {4}APP_MODE=production$/m);
});

/** Alpine 3.20.3's own minirootfs (x86_64) as an uncompressed layer tar. */
function alpineLayer(): Buffer {
  return zlib.gunzipSync(readFileSync(minirootfs("3.20.3", "x86_64")));
}

/** An in-memory image of these layer tars, as a source inspect reads. */
function sourceOf(name: string, tars: Buffer[]) {
  const image = imageOfLayers(tars, { compression: "none" });
  return memorySource(name, image.manifest, image.blobs);
}

const ALPINE_REPOSITORIES = [
  "https://dl-cdn.alpinelinux.org/alpine/v3.20/main",
  "https://dl-cdn.alpinelinux.org/alpine/v3.20/community",
];

test("inspect shows an Alpine image like a dpkg one: OS, apk, its packages, repositories and arch", async () => {
  const result = await inspectSource(sourceOf("oci:alpine:3.20.3", [alpineLayer()]));
  const img = result.images[0]!;
  assert.deepEqual(img.os, {
    id: "alpine",
    version: "3.20.3",
    codename: undefined,
    prettyName: "Alpine Linux v3.20",
  });
  assert.equal(img.packageDb, "apk");
  assert.equal(img.packageManager, "apk");
  assert.equal(img.packageCount, 14);
  assert.equal(img.packages?.length, 14);
  assert.deepEqual(
    img.packages?.filter((p) => p.name.startsWith("musl")),
    [
      { name: "musl", version: "1.2.5-r0" },
      { name: "musl-utils", version: "1.2.5-r0" },
    ],
  );
  assert.deepEqual(img.repositories, ALPINE_REPOSITORIES);
  assert.equal(img.packageArch, "x86_64");
  // JSON output carries the same (what `suture inspect --format json` prints).
  const json = JSON.parse(JSON.stringify(result));
  assert.deepEqual(json.images[0].packages[0], { name: "alpine-baselayout", version: "3.6.5-r0" });

  const text = renderInspect(result);
  assert.match(text, /^ {2}OS: +Alpine Linux v3\.20$/m);
  assert.match(text, /^ {2}Package db: +apk \(14 packages\)$/m);
  assert.match(text, /^ {2}Package tool: +apk$/m);
  assert.match(text, /^ {2}Package arch: +x86_64$/m);
  assert.match(
    text,
    /^ {2}Repositories \(2\):\n {4}https:\/\/dl-cdn\.alpinelinux\.org\/alpine\/v3\.20\/main\n {4}https:\/\/dl-cdn\.alpinelinux\.org\/alpine\/v3\.20\/community$/m,
  );
  assert.match(text, /^ {2}Packages \(14\):$/m);
  assert.match(text, /^ {4}libcrypto3 +3\.3\.2-r0$/m);
  assert.match(text, /^ {4}zlib +1\.3\.1-r1$/m);
});

test("inspect: an apk image with no os-release and no apk (distroless) still shows its packages and repositories", async () => {
  // The Alpine rootfs with os-release and apk itself deleted by a second layer, and a tagged
  // repository added in repositories.d (apk reads *.list there, nothing else).
  const distroless = await tarOf([
    { name: "etc/.wh.os-release" },
    { name: "sbin/.wh.apk" },
    { name: "etc/apk/repositories.d/", type: "directory" },
    {
      name: "etc/apk/repositories.d/testing.list",
      content:
        "# edge testing\n@testing https://mirror.test/alpine/edge/testing/\nhttps://mirror.test/\u001b[2Jcleared\n",
    },
    { name: "etc/apk/repositories.d/README.txt", content: "not a repository list\n" },
  ]);
  const result = await inspectSource(sourceOf("oci:static:1", [alpineLayer(), distroless]));
  const img = result.images[0]!;
  assert.equal(img.os, undefined);
  assert.equal(img.packageDb, "apk");
  assert.equal(img.packageManager, "none");
  assert.equal(img.packageCount, 14);
  assert.deepEqual(img.repositories, [
    ...ALPINE_REPOSITORIES,
    "@testing https://mirror.test/alpine/edge/testing",
    "https://mirror.test/\u001b[2Jcleared",
  ]);
  const text = renderInspect(result);
  assert.doesNotMatch(text, /^ {2}OS:/m);
  assert.match(text, /^ {2}Package db: +apk \(14 packages\)$/m);
  assert.match(text, /^ {2}Package tool: +none$/m);
  // The image's text cannot clear the terminal: quoted with its escape shown.
  assert.match(text, /^ {4}"https:\/\/mirror\.test\/\\u001b\[2Jcleared"$/m);
  assert.doesNotMatch(text, /\u001b/);
});

test("inspect: a damaged apk database is one INVALID_MANIFEST line naming it", async () => {
  const damaged = await tarOf([
    { name: "lib/apk/db/installed", content: "P:musl\nV:1.2.5-r0\nthis line is not an apk field\n\n" },
  ]);
  await assert.rejects(inspectSource(sourceOf("oci:broken:1", [alpineLayer(), damaged])), (e: unknown) => {
    assert.ok(isSutureError(e, "INVALID_MANIFEST"), String(e));
    assert.match(e.message, /\/lib\/apk\/db\/installed line 3 .*is not an apk field/);
    assert.doesNotMatch(e.message, /\n/);
    return true;
  });
});

// rpm images: one-layer images holding a real rpm database where the distribution keeps it.
const RPM_FIXTURES = join(import.meta.dirname, "../../../shared/fixtures/rpmdb");

test("inspect shows a CBL-Mariner image (rpmdb.sqlite, tdnf) like a dpkg one: OS, database, tool, packages", async () => {
  const layer = await tarOf([
    {
      name: "etc/os-release",
      content:
        'NAME="Common Base Linux Mariner"\nVERSION="2.0.20230126"\nID=mariner\nVERSION_ID="2.0"\nPRETTY_NAME="CBL-Mariner/Linux"\n',
    },
    { name: "usr/bin/tdnf", content: "\x7fELF", mode: 0o755 },
    { name: "usr/bin/rpm", content: "\x7fELF", mode: 0o755 },
    {
      name: "var/lib/rpm/rpmdb.sqlite",
      content: readFileSync(join(RPM_FIXTURES, "cbl-mariner-2.0/rpmdb.sqlite")),
    },
  ]);
  const result = await inspectSource(sourceOf("oci:mariner:2.0", [layer]));
  const img = result.images[0]!;
  assert.equal(img.os?.id, "mariner");
  assert.equal(img.packageDb, "rpm");
  assert.deepEqual(img.packageDbFile, { path: "/var/lib/rpm/rpmdb.sqlite", format: "sqlite" });
  assert.equal(img.packageManager, "tdnf");
  assert.equal(img.packageCount, 129);
  assert.deepEqual(
    img.packages?.filter((p) => p.name.startsWith("ca-certificates-b") || p.name === "openssl"),
    [
      { name: "ca-certificates-base", version: "1:2.0.0-1.cm2" },
      { name: "openssl", version: "1.1.1k-7.cm2" },
    ],
  );
  const text = renderInspect(result);
  assert.match(text, /^ {2}OS: +CBL-Mariner\/Linux$/m);
  assert.match(text, /^ {2}Package db: +rpm \(129 packages\)$/m);
  assert.match(text, /^ {2}Package file: +\/var\/lib\/rpm\/rpmdb\.sqlite \(sqlite\)$/m);
  assert.match(text, /^ {2}Package tool: +tdnf$/m);
  assert.match(text, /^ {4}glibc +2\.34-2\.cm2$/m);
});

test("inspect: a SUSE image (ndb under /usr/lib/sysimage/rpm, /var/lib/rpm a symlink to it) and a Berkeley DB one", async () => {
  const suse = await tarOf([
    { name: "usr/lib/sysimage/rpm/", type: "directory" },
    {
      name: "usr/lib/sysimage/rpm/Packages.db",
      content: readFileSync(join(RPM_FIXTURES, "sle15-bci/Packages.db")),
    },
    { name: "var/lib/rpm", type: "symlink", linkname: "../../usr/lib/sysimage/rpm" },
    { name: "usr/bin/zypper", content: "\x7fELF", mode: 0o755 },
  ]);
  const sle = (await inspectSource(sourceOf("oci:bci:15.3", [suse]))).images[0]!;
  assert.deepEqual(
    [sle.packageDb, sle.packageDbFile?.format, sle.packageManager, sle.packageCount],
    ["rpm", "ndb", "zypper", 35],
  );
  assert.ok(sle.packages?.some((p) => p.name === "coreutils" && p.version === "8.32-3.2.1"));

  const bdb = await tarOf([
    {
      name: "var/lib/rpm/Packages",
      content: readFileSync(join(import.meta.dirname, "../distro/rpm/testdata/Packages-be-512")),
    },
    { name: "usr/bin/yum", content: "#!/usr/bin/python\n", mode: 0o755 },
  ]);
  const old = (await inspectSource(sourceOf("oci:centos:7", [bdb]))).images[0]!;
  assert.deepEqual([old.packageDb, old.packageDbFile?.format, old.packageManager], ["rpm", "bdb", "yum"]);
  assert.deepEqual(
    old.packages?.map((p) => `${p.name} ${p.version}`),
    ["popt-devel 1.16-7.cm2", "zstd-devel 1.5.0-1.cm2", "zstd-libs 1.5.0-1.cm2"],
  );
});

test("inspect: an Azure Linux distroless image (the rpm manifest only) and a damaged rpm database", async () => {
  const manifest = await tarOf([
    {
      name: "var/lib/rpmmanifest/container-manifest-2",
      content:
        "distroless-packages-minimal\t0.1-5.azl3\t1700000000\t1690000000\tMicrosoft Corporation\t(none)\t0\tx86_64\t0\tdistroless-packages-0.1-5.azl3.src.rpm\n" +
        "glibc\t2.38-8.azl3\t1700000000\t1690000000\tMicrosoft Corporation\t(none)\t9000000\tx86_64\t0\tglibc-2.38-8.azl3.src.rpm\n",
    },
  ]);
  const img = (await inspectSource(sourceOf("oci:distroless:3.0", [manifest]))).images[0]!;
  assert.deepEqual(
    [img.packageDb, img.packageDbFile?.format, img.packageManager, img.packageCount],
    ["rpm", "manifest", "none", 2],
  );
  assert.match(
    renderInspect({ name: "x", digest: "d", mediaType: "m", platforms: [], images: [img] }),
    /^ {2}Package file: +\/var\/lib\/rpmmanifest\/container-manifest-2 \(manifest\)$/m,
  );

  const truncated = readFileSync(join(RPM_FIXTURES, "sle15-bci/Packages.db")).subarray(0, 100_000);
  const damaged = await tarOf([{ name: "usr/lib/sysimage/rpm/Packages.db", content: truncated }]);
  await assert.rejects(inspectSource(sourceOf("oci:broken:1", [damaged])), (e: unknown) => {
    assert.ok(isSutureError(e, "INVALID_MANIFEST"), String(e));
    assert.match(
      e.message,
      /^the rpm database \/usr\/lib\/sysimage\/rpm\/Packages\.db is damaged: .*rebuild it in the image/,
    );
    assert.doesNotMatch(e.message, /\n/);
    return true;
  });
});

test("inspect names the rpm front end through the image's symlinks: dnf5 behind /usr/bin/dnf, dnf 4 behind dnf and yum", async () => {
  const db = readFileSync(join(RPM_FIXTURES, "cbl-mariner-2.0/rpmdb.sqlite"));
  const fedora = await tarOf([
    { name: "usr/lib/sysimage/rpm/rpmdb.sqlite", content: db },
    { name: "var/lib/rpm", type: "symlink", linkname: "../../usr/lib/sysimage/rpm" },
    { name: "usr/bin/dnf5", content: "\x7fELF", mode: 0o755 },
    { name: "usr/bin/dnf", type: "symlink", linkname: "dnf5" },
  ]);
  const f41 = (await inspectSource(sourceOf("oci:fedora:41", [fedora]))).images[0]!;
  assert.deepEqual(
    [f41.packageDbFile?.path, f41.packageManager],
    ["/usr/lib/sysimage/rpm/rpmdb.sqlite", "dnf5"],
  );
  const rhel = await tarOf([
    { name: "var/lib/rpm/rpmdb.sqlite", content: db },
    { name: "usr/bin/dnf-3", content: "#!/usr/libexec/platform-python\nimport dnf.cli.main\n", mode: 0o755 },
    { name: "usr/bin/dnf", type: "symlink", linkname: "dnf-3" },
    { name: "usr/bin/yum", type: "symlink", linkname: "dnf-3" },
  ]);
  const ubi = (await inspectSource(sourceOf("oci:ubi:9", [rhel]))).images[0]!;
  assert.deepEqual([ubi.packageDbFile?.path, ubi.packageManager], ["/var/lib/rpm/rpmdb.sqlite", "dnf"]);
});
