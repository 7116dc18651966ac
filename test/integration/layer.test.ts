/**
 * buildPatchLayer against a real overlayfs mount (needs root): changes are made through the
 * merged dir exactly as a container would, then the layer built from the upper dir is parsed back,
 * applied over the lowers by an independent applier (umoci), and compared with the merged dir.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { getAttribute, listAttributes, setAttribute } from "@napi-rs/xattr";
import { defaultExclude } from "../../src/layer/excludes.ts";
import { isOverlayPrivateXattr } from "../../src/layer/overlay.ts";
import { buildPatchLayer, type PatchLayer } from "../../src/layer/patch-layer.ts";
import { requiring } from "../lab/requirements.ts";
import { type ListedMember, listTar, tarOf } from "../lab/tar.ts";

const { test } = await requiring("root", "tool:umoci");

const run = promisify(execFile);
const sh = (script: string, env: Record<string, string> = {}) =>
  run("bash", ["-euo", "pipefail", "-c", script], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });

const longDir = "new/a-directory-whose-name-is-long-enough-to-matter";
const longName = `${longDir}/and-a-file-name-that-pushes-the-whole-path-past-one-hundred-bytes.conf`;
const longTarget = `/${"x".repeat(150)}/target`;
const unicodeName = "etc/naïve-名前";

const LOWER0 = `
mkdir -p etc/dirmode usr/bin opt/replaced-dir opt/l1-opaque share var/lib/dpkg var/lib/apt/lists var/log tmp srv/owned
printf 'original config\\n' > etc/config
printf 'same\\n' > etc/same-bytes
printf 'dpkg\\n' > etc/dpkg-style
printf 'mode\\n' > etc/chmod-me
printf 'owner\\n' > etc/chown-me
printf 'bye\\n' > etc/delete-me
printf 'touch\\n' > etc/touched
printf 'plain\\n' > etc/becomes-symlink
printf 'l0 gone\\n' > etc/gone-in-l1
head -c 300000 /dev/zero | tr '\\0' s > usr/bin/suid; chmod 4755 usr/bin/suid
head -c 1000 /usr/bin/ls > usr/bin/suid2; chmod 4755 usr/bin/suid2
head -c 2000 /usr/bin/ls > usr/bin/capped; chmod 755 usr/bin/capped
head -c 3000 /usr/bin/ls > usr/bin/capped2; chmod 755 usr/bin/capped2
setcap cap_net_bind_service+ep usr/bin/capped; setcap cap_net_bind_service+ep usr/bin/capped2
printf a > opt/replaced-dir/a; printf b > opt/replaced-dir/b
printf 'l0 x\\n' > opt/l1-opaque/x
printf 'l0 y\\n' > opt/l1-opaque/y
printf 'hl\\n' > share/hl-lower-a
printf 'status1\\n' > var/lib/dpkg/status
printf 'kept\\n' > srv/owned/file; chown -R 1000:1000 srv/owned; chmod 750 srv/owned
chmod 1777 tmp
find . -exec touch -h -d 2020-01-01T00:00:00Z {} +
`;

/** What a container does: every change goes through the merged dir. */
const MUTATE = `
cd "$M"
printf 'same\\n' > etc/same-bytes
printf 'dpkg\\n' > etc/dpkg-style.dpkg-new; chmod 644 etc/dpkg-style.dpkg-new; mv etc/dpkg-style.dpkg-new etc/dpkg-style
printf 'changed\\n' > etc/config
chmod 600 etc/chmod-me
chown 1000:1000 etc/chown-me
rm etc/delete-me
touch -m -d 2030-01-01T00:00:00Z etc/touched
rm etc/becomes-symlink; ln -s config etc/becomes-symlink
head -c 300000 /dev/zero | tr '\\0' s > usr/bin/suid
chmod u-s usr/bin/suid2
cp usr/bin/capped usr/bin/capped.new; mv usr/bin/capped.new usr/bin/capped
cp usr/bin/capped2 usr/bin/capped2.new; setcap cap_net_bind_service+ep usr/bin/capped2.new; mv usr/bin/capped2.new usr/bin/capped2
rm -rf opt/replaced-dir; mkdir opt/replaced-dir; printf c > opt/replaced-dir/c
chmod 700 etc/dirmode
printf 'l0 gone\\n' > etc/gone-in-l1
printf 'l0 x\\n' > opt/l1-opaque/x
rm opt/l1-opaque/y
printf 'status2\\n' > var/lib/dpkg/status
printf 'changed\\n' > srv/owned/file
printf 'lists\\n' > var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease
printf 'log\\n' > var/log/dpkg.log
printf 'junk\\n' > tmp/junk
: > etc/resolv.conf
ln share/hl-lower-a share/hl-new-b
mkdir -p "${longDir}"; printf 'hl\\n' > new/hl1; ln new/hl1 new/hl2
printf 'long\\n' > "${longName}"
printf 'u\\n' > "${unicodeName}"
ln -s "${longTarget}" new/long-link
`;

interface Lab {
  root: string;
  lower0: string;
  lower1: string;
  upper: string;
  merged: string;
}

/**
 * Lay out two lower dirs, mount the overlay (as root) and register one cleanup that unmounts
 * before it deletes: deleting through a still-mounted merged dir would only churn the upper dir,
 * but unmount-then-delete keeps the order obvious.
 */
async function mountLab(t: import("node:test").TestContext, mountOptions = ""): Promise<Lab> {
  const root = await fs.mkdtemp(join(tmpdir(), "suture-layer-"));
  const lab: Lab = {
    root,
    lower0: join(root, "lower0"),
    lower1: join(root, "lower1"),
    upper: join(root, "upper"),
    merged: join(root, "merged"),
  };
  let mounted = false;
  t.after(async () => {
    if (mounted) await run("umount", [lab.merged]);
    await fs.rm(root, { recursive: true, force: true });
  });
  for (const d of [lab.lower0, lab.lower1, lab.upper, lab.merged, join(root, "work")]) await fs.mkdir(d);
  await sh(`cd "${lab.lower0}"; ${LOWER0}`);
  // The top lower is itself an overlay lower dir: it deletes etc/gone-in-l1 and replaces opt/l1-opaque.
  await sh(
    `cd "${lab.lower1}"; mkdir -p etc opt/l1-opaque; mknod etc/gone-in-l1 c 0 0; printf 'l1 y\\n' > opt/l1-opaque/y`,
  );
  await setAttribute(join(lab.lower1, "opt/l1-opaque"), "trusted.overlay.opaque", "y");
  // A whiteout of something no lower has: overlay never makes one, but a stale upper dir can hold it.
  await sh(`mkdir "${lab.upper}/etc"; mknod "${lab.upper}/etc/phantom" c 0 0`);
  const options = `lowerdir=${lab.lower1}:${lab.lower0},upperdir=${lab.upper},workdir=${join(root, "work")}`;
  await run("mount", [
    "-t",
    "overlay",
    "overlay",
    "-o",
    mountOptions ? `${options},${mountOptions}` : options,
    lab.merged,
  ]);
  mounted = true;
  return lab;
}

/** The layer as Python's tarfile (an independent reader) sees it, bodies included. */
async function readLayer(file: string): Promise<ListedMember[]> {
  const { stdout } = await run("bash", ["-c", `zcat -f "${file}" | base64 -w0`], { maxBuffer: 256 << 20 });
  return listTar(Buffer.from(stdout, "base64"), { bodies: true });
}

test("a layer from a real overlay upper dir holds exactly the changes, and umoci applies it to the merged tree", async (t) => {
  const lab = await mountLab(t);
  const root = lab.root;
  await sh(MUTATE, { M: lab.merged });

  const outFile = join(root, "layer.tar.gz");
  const layer = await buildPatchLayer({
    upperDir: lab.upper,
    lowerDirs: [lab.lower0, lab.lower1],
    outFile,
    compression: "gzip",
  });
  const entries = await readLayer(outFile);
  const byName = new Map(entries.map((e) => [e.name, e]));

  assert.deepEqual(
    entries.map((e) => `${e.type} ${e.name}`),
    [
      "directory etc/",
      "file etc/.wh.delete-me",
      "symlink etc/becomes-symlink",
      "file etc/chmod-me",
      "file etc/chown-me",
      "file etc/config",
      "directory etc/dirmode/",
      "file etc/gone-in-l1",
      `file ${unicodeName}`,
      "directory new/",
      `directory ${longDir}/`,
      `file ${longName}`,
      "file new/hl1",
      "hardlink new/hl2",
      "symlink new/long-link",
      "directory opt/",
      "directory opt/l1-opaque/",
      "file opt/l1-opaque/.wh.y",
      "file opt/l1-opaque/x",
      "directory opt/replaced-dir/",
      "file opt/replaced-dir/.wh..wh..opq",
      "file opt/replaced-dir/c",
      "directory share/",
      "file share/hl-lower-a",
      "hardlink share/hl-new-b",
      "directory srv/",
      "directory srv/owned/",
      "file srv/owned/file",
      "directory usr/",
      "directory usr/bin/",
      "file usr/bin/capped",
      "file usr/bin/suid2",
      "directory var/",
      "directory var/lib/",
      "directory var/lib/dpkg/",
      "file var/lib/dpkg/status",
    ],
    "identical rewrites (same-bytes, dpkg-style, suid, capped2), touch -m and excluded paths are absent",
  );
  assert.equal(byName.get("etc/chmod-me")!.mode, 0o600);
  assert.equal(byName.get("etc/chown-me")!.uid, 1000);
  assert.equal(byName.get("etc/becomes-symlink")!.linkname, "config");
  assert.equal(byName.get("new/long-link")!.linkname, longTarget);
  assert.equal(byName.get("new/hl2")!.linkname, "new/hl1");
  assert.equal(
    byName.get("share/hl-new-b")!.linkname,
    "share/hl-lower-a",
    "a hardlink to a lower file carries the file",
  );
  assert.equal(byName.get("share/hl-lower-a")!.body.toString(), "hl\n");
  assert.equal(byName.get("usr/bin/suid2")!.mode, 0o755);
  assert.equal(byName.get("usr/bin/capped")!.pax.get("SCHILY.xattr.security.capability"), undefined);
  assert.equal(byName.get("srv/owned/")!.uid, 1000, "an unchanged parent keeps its owner and mode");
  assert.equal(byName.get("srv/owned/")!.mode, 0o750);
  assert.equal(byName.get("etc/dirmode/")!.mode, 0o700);
  for (const e of entries) {
    assert.ok(![...e.pax.keys()].some((k) => k.includes("overlay")), `${e.name} carries no overlay xattrs`);
    assert.ok(![...e.pax.keys()].some((k) => /atime|ctime/.test(k)), `${e.name} has no atime/ctime`);
  }
  assert.deepEqual(layer.stats, {
    files: 18,
    whiteouts: 2,
    opaqueDirs: 1,
    // same-bytes, dpkg-style, touched, suid, capped2, and the phantom whiteout
    droppedUnchanged: 6,
    droppedUnchangedBytes: 5 + 5 + 6 + 300000 + 3000,
    // lists file, dpkg.log, tmp/junk, resolv.conf
    excluded: 4,
    // no LayerTimes given: every time is the file's own
    clampedTimes: 0,
    pycTimesKept: 0,
  });
  assert.equal(layer.entries, entries.length);

  // umoci applies lower0 (GNU tar), lower1 (whiteout + opaque dir) and our layer; the tree must
  // equal the merged dir in everything but mtimes and the excluded paths.
  const rootfs = await unpackWithUmoci(lab, outFile, layer, root);
  const [expected, actual] = await Promise.all([snapshot(lab.merged), snapshot(rootfs)]);
  assert.deepEqual(actual, expected);
  assert.match(actual.get("/usr/bin/capped2") ?? "", /security\.capability=/, "capabilities survive");
  assert.ok(!actual.has("/etc/resolv.conf"));
});

test("the layer is deterministic, and its digest and diffID are those of the bytes, for gzip, zstd and none", async (t) => {
  const lab = await mountLab(t);
  const root = lab.root;
  await sh(MUTATE, { M: lab.merged });
  const build = (compression: "gzip" | "zstd" | "none", name: string) =>
    buildPatchLayer({
      upperDir: lab.upper,
      lowerDirs: [lab.lower0, lab.lower1],
      outFile: join(root, name),
      compression,
    });
  const gzip = await build("gzip", "a.tar.gz");
  const gzipAgain = await build("gzip", "b.tar.gz");
  const zstd = await build("zstd", "c.tar.zst");
  const none = await build("none", "d.tar");
  assert.equal(gzipAgain.descriptorFields.digest, gzip.descriptorFields.digest);
  assert.ok((await fs.readFile(join(root, "a.tar.gz"))).equals(await fs.readFile(join(root, "b.tar.gz"))));

  for (const [layer, file, decompress] of [
    [gzip, "a.tar.gz", "zcat"],
    [zstd, "c.tar.zst", "zstd -dc"],
    [none, "d.tar", "cat"],
  ] as const) {
    const path = join(root, file);
    assert.equal(layer.descriptorFields.digest, `sha256:${await sha256File(path)}`, file);
    assert.equal(layer.descriptorFields.size, (await fs.stat(path)).size, file);
    const { stdout } = await sh(`${decompress} "${path}" | tee >(wc -c >&2) | sha256sum`);
    assert.equal(layer.diffID, `sha256:${stdout.split(" ")[0]}`, file);
  }
  assert.equal(zstd.diffID, gzip.diffID);
  assert.equal(none.diffID, none.descriptorFields.digest);
  assert.equal(none.uncompressedSize, none.descriptorFields.size);
  assert.equal(gzip.uncompressedSize, none.uncompressedSize);
  // GNU tar reads it too, without complaint.
  const { stdout, stderr } = await run("tar", ["-tvf", join(root, "d.tar")]);
  assert.equal(stderr, "");
  assert.match(stdout, /new\/hl2 link to new\/hl1/);
  // No temporary files are left beside the outputs.
  assert.deepEqual(
    (await fs.readdir(root)).filter((n) => n.endsWith(".tmp")),
    [],
  );
});

test("an upper dir written with metacopy or redirect_dir on is refused with the mount fix", async (t) => {
  const lab = await mountLab(t, "redirect_dir=on,metacopy=on");
  const root = lab.root;
  await sh(`cd "$M"; chown 1000:1000 etc/config`, { M: lab.merged });
  await assert.rejects(
    buildPatchLayer({
      upperDir: lab.upper,
      lowerDirs: [lab.lower0, lab.lower1],
      outFile: join(root, "x.tar"),
      compression: "none",
    }),
    (e: Error & { code?: string }) => e.code === "SANDBOX" && /metacopy=off/.test(e.message),
  );
  await assert.rejects(fs.stat(join(root, "x.tar")), { code: "ENOENT" });

  const lab2 = await mountLab(t, "redirect_dir=on");
  const root2 = lab2.root;
  await sh(`cd "$M"; mv opt/replaced-dir opt/renamed`, { M: lab2.merged });
  await assert.rejects(
    buildPatchLayer({
      upperDir: lab2.upper,
      lowerDirs: [lab2.lower0, lab2.lower1],
      outFile: join(root2, "x.tar"),
      compression: "none",
    }),
    (e: Error & { code?: string }) => e.code === "SANDBOX" && /redirect_dir/.test(e.message),
  );
});

test("a caller's exclude predicate replaces the defaults", async (t) => {
  const lab = await mountLab(t);
  const root = lab.root;
  await sh(MUTATE, { M: lab.merged });
  const outFile = join(root, "l.tar");
  const layer = await buildPatchLayer({
    upperDir: lab.upper,
    lowerDirs: [lab.lower0, lab.lower1],
    outFile,
    compression: "none",
    exclude: (path, info) => path === "/new" || defaultExclude(path, info),
  });
  const names = (await readLayer(outFile)).map((e) => e.name);
  assert.ok(!names.some((n) => n.startsWith("new/")));
  assert.ok(names.includes("etc/config"));
  assert.equal(layer.stats.excluded, 5);
});

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Pack the lowers and our layer into an OCI layout and let umoci build the rootfs. */
async function unpackWithUmoci(
  lab: Lab,
  layerFile: string,
  layer: PatchLayer,
  root: string,
): Promise<string> {
  const layout = join(root, "oci");
  await fs.mkdir(join(layout, "blobs/sha256"), { recursive: true });
  const putBlob = async (bytes: Buffer) => {
    const hex = createHash("sha256").update(bytes).digest("hex");
    await fs.writeFile(join(layout, "blobs/sha256", hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const l0 = (
    await run(
      "tar",
      ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", lab.lower0, "-cf", "-", "."],
      {
        encoding: "buffer",
        maxBuffer: 64 << 20,
      },
    )
  ).stdout;
  const l1 = await packLower1();
  const ours = await fs.readFile(layerFile);
  const blobs = [await putBlob(l0), await putBlob(l1), await putBlob(ours)];
  assert.equal(blobs[2]!.digest, layer.descriptorFields.digest);
  const config = await putBlob(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: {},
        rootfs: { type: "layers", diff_ids: [blobs[0]!.digest, blobs[1]!.digest, layer.diffID] },
      }),
    ),
  );
  const manifest = await putBlob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: [
          { mediaType: "application/vnd.oci.image.layer.v1.tar", ...blobs[0] },
          { mediaType: "application/vnd.oci.image.layer.v1.tar", ...blobs[1] },
          { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...blobs[2] },
        ],
      }),
    ),
  );
  await fs.writeFile(join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await fs.writeFile(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...manifest,
          annotations: { "org.opencontainers.image.ref.name": "test" },
        },
      ],
    }),
  );
  const rootfs = join(root, "rootfs");
  await run("umoci", ["raw", "unpack", "--image", `${layout}:test`, rootfs]);
  return rootfs;
}

/** lower1 as an image layer: the OCI spelling of its whiteout and opaque directory. */
async function packLower1(): Promise<Buffer> {
  const base = { uid: 0, gid: 0, mtime: 1577836800 };
  return tarOf([
    { ...base, name: "etc/", type: "directory", mode: 0o755 },
    { ...base, name: "etc/.wh.gone-in-l1", mode: 0o644 },
    { ...base, name: "opt/", type: "directory", mode: 0o755 },
    { ...base, name: "opt/l1-opaque/", type: "directory", mode: 0o755 },
    { ...base, name: "opt/l1-opaque/.wh..wh..opq", mode: 0o644 },
    { ...base, name: "opt/l1-opaque/y", mode: 0o644, content: "l1 y\n" },
  ]);
}

/**
 * Everything a user of the tree can observe except times: type, mode, owner, size, content
 * hash, link target, content xattrs, and which paths share an inode. Default-excluded paths and
 * the root are left out.
 */
async function snapshot(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const inodes = new Map<string, string[]>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await fs.readdir(dir)).sort()) {
      const abs = join(dir, name);
      const path = `${rel}/${name}`;
      const st = await fs.lstat(abs);
      const kind = st.isDirectory()
        ? "directory"
        : st.isFile()
          ? "file"
          : st.isSymbolicLink()
            ? "symlink"
            : "other";
      if (defaultExclude(path, { type: kind, size: kind === "file" ? st.size : 0 })) continue;
      const xattrs: string[] = [];
      for (const x of (await listAttributes(abs)).sort()) {
        if (isOverlayPrivateXattr(x)) continue;
        xattrs.push(`${x}=${(await getAttribute(abs, x))?.toString("hex")}`);
      }
      let detail = "";
      if (st.isFile())
        detail = createHash("sha256")
          .update(await fs.readFile(abs))
          .digest("hex");
      if (st.isSymbolicLink()) detail = await fs.readlink(abs);
      out.set(
        path,
        `${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${kind === "file" ? st.size : ""} ${detail} ${xattrs.join(",")}`,
      );
      if (st.isFile() && st.nlink > 1)
        inodes.set(String(st.ino), [...(inodes.get(String(st.ino)) ?? []), path]);
      if (st.isDirectory()) await walk(abs, path);
    }
  };
  await walk(root, "");
  for (const paths of inodes.values()) for (const p of paths) out.set(`${p} links`, paths.join(" "));
  return out;
}
