import { createReadStream } from "node:fs";
import { join } from "node:path";
import zlib from "node:zlib";
import { readTar } from "../../src/archive/tar/read.ts";

/** Alpine's minirootfs tarballs in the shared fixtures (see its README). */
export const ALPINE_FIXTURES = join(import.meta.dirname, "../../../shared/fixtures/alpine");

export function minirootfs(release: "3.20.3" | "20240923", arch: "x86_64" | "aarch64"): string {
  return join(ALPINE_FIXTURES, `alpine-minirootfs-${release}-${arch}.tar.gz`);
}

/**
 * The regular files of a rootfs tarball whose paths (without the leading `./`) `wanted` accepts,
 * read with suture's own tar reader (no host tar).
 */
export async function readRootfsFiles(
  tarball: string,
  wanted: (path: string) => boolean,
): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const entry of readTar(createReadStream(tarball).pipe(zlib.createGunzip()))) {
    const path = entry.header.path.replace(/^\.\//, "");
    if (entry.header.type !== "file" || !wanted(path)) continue;
    const chunks: Buffer[] = [];
    for await (const c of entry.body) chunks.push(c);
    out.set(path, Buffer.concat(chunks));
  }
  return out;
}

/** One member of a rootfs tarball: a file's bytes, a symlink's target, a directory. */
export interface RootfsEntry {
  type: "file" | "directory" | "symlink" | "hardlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  /** A file's content. */
  data?: Buffer;
  /** A symlink's target or a hard link's first member (without `./`). */
  linkname?: string;
}

/** Every member of a rootfs tarball by path (without the leading `./`; the root itself is ""). */
export async function readRootfsEntries(tarball: string): Promise<Map<string, RootfsEntry>> {
  const out = new Map<string, RootfsEntry>();
  for await (const entry of readTar(createReadStream(tarball).pipe(zlib.createGunzip()))) {
    const h = entry.header;
    const path = h.path.replace(/^\.\//, "").replace(/\/$/, "").replace(/^\.$/, "");
    const type =
      h.type === "file" || h.type === "directory" || h.type === "symlink" || h.type === "hardlink"
        ? h.type
        : "other";
    const e: RootfsEntry = { type, mode: h.mode, uid: h.uid, gid: h.gid };
    if (h.type === "file") {
      const chunks: Buffer[] = [];
      for await (const c of entry.body) chunks.push(c);
      e.data = Buffer.concat(chunks);
    }
    if (h.type === "symlink") e.linkname = h.linkname;
    if (h.type === "hardlink") e.linkname = h.linkname.replace(/^\.\//, "");
    out.set(path, e);
  }
  return out;
}
