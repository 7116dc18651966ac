/**
 * Real Debian packages for tests, built by dpkg's own builder, and hostile variants of them that
 * no honest builder produces.
 */
import { execFile } from "node:child_process";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { type TarWriteEntry, writeTar } from "../../src/archive/tar/write.ts";

const run = promisify(execFile);

/** One file of a package tree: content, mode. */
export type DebTreeFile = { path: string; content: string | Buffer; mode?: number };

/**
 * Build a .deb with the host's `dpkg-deb --build --nocheck` (dpkg's own builder; --nocheck lets a
 * test write control fields dpkg-deb would refuse, as a hostile repository can). `control` is the
 * control file's text; `controlFiles` go to DEBIAN/ (maintainer scripts get mode 0755).
 */
export async function buildDeb(
  out: string,
  control: string,
  files: DebTreeFile[],
  controlFiles: DebTreeFile[] = [],
  compression: "xz" | "gzip" | "zstd" | "none" = "gzip",
): Promise<string> {
  const tree = await mkdtemp(join(tmpdir(), "suture-deb-tree-"));
  try {
    await mkdir(join(tree, "DEBIAN"));
    await writeFile(join(tree, "DEBIAN/control"), control.endsWith("\n") ? control : `${control}\n`);
    for (const f of controlFiles) {
      await writeFile(join(tree, "DEBIAN", f.path), f.content);
      await chmod(join(tree, "DEBIAN", f.path), f.mode ?? 0o755);
    }
    for (const f of files) {
      const p = join(tree, f.path);
      await mkdir(join(p, ".."), { recursive: true });
      await writeFile(p, f.content);
      await chmod(p, f.mode ?? 0o644);
    }
    await run("dpkg-deb", ["--nocheck", "--root-owner-group", `-Z${compression}`, "--build", tree, out]);
    return out;
  } finally {
    await rm(tree, { recursive: true, force: true });
  }
}

/**
 * Replace the data archive of a .deb built by `buildDeb` with a tar of exactly `entries` (names
 * written as given: `../x`, absolute link targets — what no honest builder produces), keeping its
 * debian-binary and control members. Uses the host's `ar`, as dpkg-deb's format is plain ar.
 */
export async function withDataEntries(
  deb: string,
  entries: (Omit<TarWriteEntry, "uid" | "gid" | "mtime" | "mode"> & { content?: string; mode?: number })[],
): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "suture-deb-ar-"));
  try {
    await run("ar", ["x", deb], { cwd: dir });
    const members = await readdir(dir);
    const control = members.find((m) => m.startsWith("control.tar"));
    if (!control || !members.includes("debian-binary")) throw new Error(`${deb} is not a .deb`);
    for (const m of members) if (m.startsWith("data.tar")) await rm(join(dir, m));
    const chunks: Buffer[] = [];
    const tarEntries: TarWriteEntry[] = entries.map((e) => {
      const body = e.content === undefined ? undefined : Buffer.from(e.content);
      return {
        ...e,
        uid: 0,
        gid: 0,
        mtime: 1767225600,
        mode: e.mode ?? (e.type === "directory" ? 0o755 : 0o644),
        ...(body ? { size: body.length, body: () => Readable.from([body]) } : {}),
      };
    });
    for await (const c of writeTar(tarEntries)) chunks.push(c);
    await writeFile(join(dir, "data.tar"), Buffer.concat(chunks));
    await rm(deb);
    await run("ar", ["rc", deb, "debian-binary", control, "data.tar"], { cwd: dir });
    return deb;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
