/**
 * The no-namespaces mode's layer (issue 16, mode 3) against root mode's, on layers with what a
 * non-root extraction cannot make (device nodes, a fifo, whiteouts, an opaque dir, owners other
 * than the caller, setuid bits, a file capability, hardlinks) and the changes an engine makes
 * (new, replaced, removed and re-owned files, a removed directory). Root mode is the oracle: the
 * same changes in an overlay sandbox. One process: root mode runs first, then the process
 * switches to recording owners (mode 3 is process-wide) and does it again in a working tree.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  closeSync,
  fchmodSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { readTar } from "../../src/archive/tar/read.ts";
import { chownOrRecord, fchownOrRecord, recordOwnersInstead } from "../../src/fs/owners.ts";
import { buildPatchLayer } from "../../src/layer/patch-layer.ts";
import { withPlainTree } from "../../src/sandbox/plain-tree.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { requiring } from "../lab/requirements.ts";
import { imageOf, tarOf } from "./sandbox-fixtures.ts";

const { after, before, test } = await requiring("root");

let work: string;
before(() => {
  // /var/tmp: overlay upper dirs need a real filesystem (not tmpfs/overlay).
  work = mkdtempSync("/var/tmp/suture-plain-tree-");
});
after(() => rmSync(work, { recursive: true, force: true }));

const CAPABILITY = Buffer.from("0100000200100000000000000000000000000000", "hex"); // cap_net_bind_service

async function testImage() {
  const base = await tarOf([
    { name: "etc/", type: "directory" },
    { name: "etc/conf", content: "old\n" },
    { name: "etc/shadow", content: "secret\n", mode: 0o640, gid: 42 },
    { name: "dev/", type: "directory" },
    { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
    { name: "dev/sda", type: "block", devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
    { name: "run/", type: "directory", mode: 0o755 },
    { name: "run/fifo", type: "fifo", mode: 0o600 },
    { name: "usr/", type: "directory" },
    { name: "usr/bin/", type: "directory" },
    { name: "usr/bin/ping", content: "ping", mode: 0o755, xattrs: { "security.capability": CAPABILITY } },
    { name: "usr/bin/su", content: "su", mode: 0o4755 },
    { name: "usr/bin/a", content: "linked", mode: 0o755 },
    { name: "usr/bin/b", type: "hardlink", linkname: "usr/bin/a" },
    { name: "srv/", type: "directory", uid: 1000, gid: 1000 },
    { name: "srv/data.txt", content: "data", uid: 1000, gid: 1000, mode: 0o600 },
    { name: "srv/gone/", type: "directory" },
    { name: "srv/gone/x", content: "x" },
    { name: "opt/", type: "directory" },
    { name: "opt/old/", type: "directory" },
    { name: "opt/old/f", content: "hidden later" },
    { name: "var/", type: "directory" },
    { name: "var/lib/", type: "directory", mode: 0o555 },
    { name: "var/lib/state", content: "s" },
  ]);
  const top = await tarOf([
    { name: "etc/.wh.shadow" },
    { name: "opt/old/", type: "directory" },
    { name: "opt/old/.wh..wh..opq" },
    { name: "opt/old/g", content: "new in top", uid: 7, gid: 7 },
  ]);
  return (await imageOf([base, top])).image;
}

/** What a package engine does: the same calls in both modes (owners through the recording API). */
function engineChanges(root: string): void {
  const write = (rel: string, content: string, uid: number, gid: number, mode: number) => {
    const staged = join(root, `${rel}.dpkg-new`);
    const fd = openSync(staged, "wx", 0o600);
    writeSync(fd, content);
    fchownOrRecord(fd, uid, gid);
    fchmodSync(fd, mode);
    closeSync(fd);
    renameSync(staged, join(root, rel));
  };
  write("etc/conf", "new\n", 0, 0, 0o644);
  write("usr/bin/newuid", "suid", 0, 0, 0o4755);
  write("usr/bin/ping", "ping", 0, 0, 0o755); // same bytes and owner, but the capability is gone
  mkdirSync(join(root, "usr/lib"), { mode: 0o755 });
  chownOrRecord(join(root, "usr/lib"), 0, 0);
  write("usr/lib/libnew.so", "lib", 0, 0, 0o644);
  chownOrRecord(join(root, "srv/data.txt"), 0, 0);
  rmSync(join(root, "srv/gone"), { recursive: true });
  rmSync(join(root, "run/fifo"));
  write("var/lib/state", "s2", 0, 0, 0o644);
}

async function layerOf(sb: Sandbox, out: string) {
  const built = await buildPatchLayer({
    upperDir: sb.upperDir,
    lowerDirs: sb.lowerDirs,
    outFile: out,
    compression: "none",
    times: { writtenSince: Math.floor(Date.now() / 1000) - 1, epoch: 1_700_000_000 },
    plainTree: sb.plainTree,
  });
  const entries: string[] = [];
  for await (const { header, body } of readTar((await import("node:fs")).createReadStream(out))) {
    const h = createHash("sha256");
    for await (const c of body) h.update(c);
    const xattrs = [...header.xattrs].map(([k, v]) => `${k}=${v.toString("hex")}`).join(",");
    entries.push(
      [
        header.path,
        header.type,
        `${header.uid}:${header.gid}`,
        header.mode.toString(8),
        header.linkname,
        `${header.devmajor},${header.devminor}`,
        h.digest("hex").slice(0, 12),
        xattrs,
        header.mtime,
      ].join(" "),
    );
  }
  return { entries, stats: built.stats };
}

test("a working tree's layer is root mode's overlay layer, entry for entry, owners and devices from the record", async () => {
  const image = await testImage();
  const rootMode = await withSandbox(
    image,
    { cacheDir: join(work, "cache"), workRoot: join(work, "root-work") },
    async (sb) => {
      engineChanges(sb.mergedDir);
      return layerOf(sb, join(work, "root.tar"));
    },
  );
  recordOwnersInstead();
  const plain = await withPlainTree(
    image,
    { cacheDir: join(work, "cache"), workRoot: join(work, "plain-work") },
    async (sb) => {
      assert.ok(sb.plainTree, "a working tree, not an overlay");
      engineChanges(sb.mergedDir);
      return layerOf(sb, join(work, "plain.tar"));
    },
  );
  assert.ok(rootMode.entries.some((e) => e.startsWith("srv/.wh.gone ")));
  assert.ok(rootMode.entries.some((e) => e.startsWith("usr/bin/newuid file 0:0 4755 ")));
  assert.ok(rootMode.entries.some((e) => e.startsWith("srv/data.txt file 0:0 600 ")));
  assert.deepEqual(plain.entries, rootMode.entries);
  assert.equal(plain.stats.whiteouts, rootMode.stats.whiteouts);
});
